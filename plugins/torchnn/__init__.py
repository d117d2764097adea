"""The one torch.nn <-> canonical mapping the torch-based plugins share (snnTorch, Norse,
SpikingJelly, ANN): :mod:`.layers` (torch.nn layers and the small modules the hub adds, both
ways), :mod:`.trace` and :mod:`.ops` (reading a live model from what its forward computes) and
:mod:`.graph` (a graph of any topology as a torch module)."""
