"""Fused neuron kernels: the whole time loop of a neuron layer in one call.

``cpu`` runs compiled C++ on the CPU (``backend="fused"``), ``cupy`` runs CUDA kernels through
CuPy (``backend="cupy"``). Both give results bit-identical to :meth:`hub.Neuron.step`, which stays
the semantics; :class:`hub.Simulator` picks them with its ``backend`` option.
"""

from __future__ import annotations
