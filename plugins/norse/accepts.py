"""What Norse's cells compute, declared per node type and field (``hub plugins --accepts
norse``); the derivation is the package docstring and ``docs/norse.md``."""

from __future__ import annotations

from hub.legalise import Accepts, equal, one_of
from hub_plugins.torchnn.layers import EXPORTED

_NEURONS = ("IF", "LIF", "CubaLIF", "LI", "CubaLI")
_SPIKING = ("IF", "LIF", "CubaLIF")

#: What Norse's cells compute (see the module docstring), per node type and field. Decays are
#: checked at export, against the ``dt`` used: ``beta`` must be ``1 - dt*tau_inv`` for a
#: float32 ``tau_inv``.
ACCEPTS = Accepts({
    tuple(sorted(EXPORTED | {"Add"})): (),
    _SPIKING: (
        one_of("comparison", ">", why="Norse spikes when v - v_th > 0"),
        one_of("reset_timing", "same", why="Norse resets in the spiking step only"),
        one_of("spike_mode", "binary", why="Norse emits binary spikes"),
        equal("amplitude", 1, why="Norse spikes are 1"),
        one_of("delay", 0, why="Norse's cells have no axonal delay"),
        one_of("reset", "zero", "subtract", why="Norse's cells always reset"),
    ),
    ("IF", "LIF"): (one_of("refractory", 0, why="Norse's refractory cell is LIFRefracCell, an "
                           "LIFCell (CubaLIF) with a refractory period; other cells have none"),),
    "IF": (one_of("reset", "zero", why="Norse's IAFCell resets to v_reset only"),),
    ("LI", "CubaLI"): (),
    # the families' exporters (norse_families) check their own fields
    ("ALIF", "Izhikevich", "AdExLIF"): (),
    "ALIF": (one_of("arithmetic", "float", why="Norse's LSNNCell computes in float, not in "
                    "Loihi's integers"),),
}, topology="any", name="Norse", notes=[
    ("gains, current order and a start voltage other than the cell's own are exported through "
     "NeuronCell, built from Norse's cells; per-neuron parameters as tensors"),
    "beta and alpha must be 1 - dt*tau_inv for a float32 tau_inv at the export's dt"])
