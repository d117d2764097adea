"""What SpikingJelly's neurons compute, declared per node type and field (``hub plugins --accepts
spikingjelly``); the derivation is the package docstring and ``docs/spikingjelly.md``."""

from __future__ import annotations

import numpy as np

from hub.legalise import Accepts, equal, one_of, rule, uniform
from hub.node import Node
from hub_plugins.spikingjelly.neurons import lif_tau
from hub_plugins.torchnn.layers import EXPORTED

# -- what SpikingJelly accepts ------------------------------------------------------------------

_SPIKING = ("IF", "LIF", "CubaLIF")


def _leak_ok(n: Node) -> bool:
    rest = n.v_reset if n.reset == "zero" else 0.0
    return bool(np.all(n.v_leak == rest))


def _lif_gain_ok(n: Node) -> bool:
    flat_b, flat_g = np.ravel(n.beta), np.ravel(n.gain)
    if not (flat_b.size and flat_g.size and (flat_b == flat_b[0]).all()
            and (flat_g == flat_g[0]).all()):
        return True  # refused as per-neuron values by the 'uniform' rules
    return lif_tau(flat_b[0], flat_g[0]) is not None


#: What SpikingJelly's neurons compute (see the module docstring), per node type and field.
ACCEPTS = Accepts({
    tuple(sorted(EXPORTED)): (),
    _SPIKING: (
        one_of("comparison", ">=", why="SpikingJelly spikes where v - v_threshold >= 0"),
        one_of("reset_timing", "same", why="SpikingJelly resets in the spiking step"),
        one_of("spike_mode", "binary", why="SpikingJelly's nodes emit binary spikes"),
        equal("amplitude", 1, why="SpikingJelly's spikes are 1"),
        one_of("refractory", 0, why="SpikingJelly's IF/LIF nodes have no refractory period"),
        one_of("delay", 0, why="SpikingJelly's nodes have no axonal delay (a layer.Delay after "
               "the neuron would be a different graph)"),
        one_of("reset", "zero", "subtract", why="SpikingJelly's nodes always reset (v_reset a "
               "value, or None to subtract)"),
        uniform("threshold", why="SpikingJelly's neuron parameters are one value for all"),
        uniform("v_reset", why="SpikingJelly's neuron parameters are one value for all"),
        uniform("v_init", why="SpikingJelly's neuron parameters are one value for all"),
    ),
    "IF": (equal("gain", 1, why="IFNode adds its input unscaled"),),
    "LIF": (
        uniform("beta", why="LIFNode has one tau for all neurons"),
        uniform("gain", why="LIFNode has one tau for all neurons"),
        rule("beta", "in (0, 1): tau = 1/(1 - beta) > 1", lambda n: bool(
            np.all((n.beta > 0) & (n.beta < 1))), why="LIFNode decays by 1/tau"),
        rule("gain", "1 (decay_input=False) or 1/tau (decay_input=True)", _lif_gain_ok,
             why="LIFNode scales its input by one of these"),
        rule("v_leak", "v_reset (a hard reset) or 0 (a soft one)", _leak_ok,
             why="LIFNode decays toward v_reset"),
    ),
    "CubaLIF": (
        uniform("alpha", why="CUBALIFNode has one c_decay"),
        uniform("beta", why="CUBALIFNode has one v_decay"),
        equal("gain", 1, why="CUBALIFNode adds its current unscaled"),
        equal("current_gain", 1, why="CUBALIFNode adds its input unscaled"),
        equal("v_leak", 0, why="CUBALIFNode decays toward 0"),
        one_of("current_order", "new", why="CUBALIFNode's voltage sees this step's current"),
    ),
    # the families' exporters (spikingjelly_families) check their own fields
    ("QIF", "SynapseFilter", "EIF"): (),
}, topology="any", name="SpikingJelly", notes=[
    ("LIF is exported as LIFNode with the roundest tau that import reads back as the same beta "
     "and gain (SpikingJelly's own arithmetic); a gain no round tau gives, as a "
     "ParametricLIFNode")])
