"""What snnTorch's neurons compute, declared per node type and field (``hub plugins --accepts
snntorch``); the derivation is the package docstring and ``docs/snntorch.md``."""

from __future__ import annotations

from hub.legalise import Accepts, at_least, between, equal, one_of, rule
from hub.node import Node
from hub_plugins.torchnn.layers import EXPORTED

# -- what snnTorch accepts --------------------------------------------------------------------

_NEURONS = ("IF", "LIF", "CubaLIF", "LI", "CubaLI", "Integrator")
_SPIKING = ("IF", "LIF", "CubaLIF")
#: Rules that ``strict=False`` lets through, converted approximately with a warning.
APPROXIMATED = ("reset_timing",)


def _timing_ok(n: Node) -> bool:
    if n.reset == "subtract":
        return n.reset_timing == "next"
    return not (n.type == "CubaLIF" and n.reset == "zero" and n.reset_timing == "next")


def _refractory_ok(n: Node) -> bool:
    if n.type == "CubaLIF" and n.reset == "zero":
        return n.refractory <= 1
    return n.refractory == 0


def _amplitude_ok(n: Node) -> bool:
    same_step = not _reset_delay(n) and n.reset != "none"
    return not (same_step and bool((n.amplitude == 0).any()))


#: What snnTorch's neurons compute (see the module docstring), per node type and field.
ACCEPTS = Accepts({
    tuple(sorted(EXPORTED)): (),
    "Delay": (),
    "Threshold": (
        one_of("comparison", ">", why="snnTorch spikes where the membrane exceeds the "
               "threshold"),
        at_least("threshold", 0, why="snnTorch's first reset signal H(0 - threshold) fires "
                 "where the threshold is negative"),
    ),
    _NEURONS: (
        equal("v_init", 0, why="its state starts at 0"),
        equal("v_leak", 0, why="its membrane decays towards 0"),
        equal("gain", 1, why="its input enters the membrane unscaled"),
        equal("current_gain", 1, why="its input enters the current unscaled"),
        between("alpha", 0, 1, why="snnTorch clamps alpha to [0, 1] in every step"),
        between("beta", 0, 1, why="snnTorch clamps beta to [0, 1] in every step"),
    ),
    _SPIKING: (
        one_of("comparison", ">", why="snnTorch spikes where the membrane exceeds the "
               "threshold"),
        one_of("spike_mode", "binary", why="snnTorch neurons emit one spike per step"),
        one_of("delay", 0, why="snnTorch neurons have no axonal delay; put a Delay node after "
               "the neuron"),
        equal("v_reset", 0, why="it resets to 0"),
        at_least("threshold", 0, why="snnTorch's first reset signal H(0 - threshold) fires "
                 "where the threshold is negative, before any spike"),
        rule("reset_timing", "'next' for reset='subtract' (reset_delay=True; the same-step "
             "one subtracts twice after a reset left the membrane above threshold); 'same' "
             "for CubaLIF's zero reset (Synaptic's delayed one is 'same' with refractory=1)",
             _timing_ok,
             why="snnTorch's reset_delay=False subtraction and Synaptic's zeroing after "
             "integration differ from these"),
        rule("refractory", "0; 1 for CubaLIF with reset='zero' (Synaptic's delayed zero "
             "reset)", _refractory_ok, why="snnTorch has no refractory period"),
        rule("amplitude", "nonzero where the reset is in the same step", _amplitude_ok,
             why="snnTorch's same-step reset divides by graded_spikes_factor"),
    ),
    # the families' exporter (snntorch_families) checks its own fields
    "AlphaLIF": (),
}, topology="any", name="snnTorch", notes=[
    ("per-neuron beta, alpha and threshold are exported as tensors (snnTorch broadcasts "
     "them)")])


def _reset_delay(node: Node) -> bool:
    """snnTorch's ``reset_delay`` for a spiking node: Synaptic zeroes the integrated membrane,
    so its delayed zero reset is the canonical same-step one with ``refractory=1``."""
    if node.type == "CubaLIF" and node.reset == "zero":
        return node.refractory == 1
    return node.reset_timing == "next"
