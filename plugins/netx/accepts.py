"""What netx writes for Lava, declared per node type and field (``hub plugins --accepts netx``);
the derivation is the package docstring and ``docs/loihi.md``."""

from __future__ import annotations

import numpy as np

from hub.errors import UnsupportedError
from hub.legalise import Accepts, at_least, between, equal, one_of, rule, uniform
from hub.node import Node
from hub_plugins.netx import sigma_delta
from hub_plugins.netx.resonators import GAIN as RF_GAIN
from hub_plugins.netx.resonators import STATE_EXP as RF_STATE_EXP
from hub_plugins.netx.schema import MAX_DELAY, NETX_BIAS_EXP

#: The float neurons netx takes: an IF written exactly as Loihi's neuron, or any of them with
#: ``quantize=True`` (quantised to LoihiCUBA at export).
FLOAT_NEURONS = ("IF", "LIF", "CubaLIF")
_SIGMA_DELTA = ("SigmaDelta", "Delta", "Sigma")
_DELAY = f"netx's synaptic delays are 0 to {MAX_DELAY} steps (it clips larger ones)"
_ONE_PER_LAYER = "netx's LIF takes one value per layer"
_RF_ONE = "Lava's RF process takes one value per layer"
_ADAPTIVE = ("netx 0.6 builds no adaptive RF neuron (slayer's adrf): its threshold and "
             "refractory adaptation cannot be written for Lava")


def one_value(node: Node, name: str, field: str, why: str) -> None:
    """Refuse ``node`` (named ``name``) unless ``field`` holds one value for all neurons: the
    declaration's :func:`~hub.legalise.uniform` rule, for what the writer and ``quantize``
    check on nodes beyond the declaration (a ``Delay``, an exactly written ``IF``, the neuron
    ``quantize`` makes), with the error naming node and field."""
    if uniform(field)(node):
        return
    values = np.unique(np.asarray(getattr(node, field)))
    held = "no values" if not values.size else f"{values.size} different values (" + ", ".join(
        f"{v:g}" for v in values[:4].tolist()) + (", ...)" if values.size > 4 else ")")
    raise UnsupportedError(f"{why}; this {node.type} holds {held}", node=name, field=field)


def _bias_exp_ok(n: Node) -> bool:
    return not np.any(n.bias) or n.bias_exp == NETX_BIAS_EXP


def _rf_threshold_ok(n: Node) -> bool:
    th = np.asarray(n.threshold, np.float64)
    return bool(np.all(th >= 0) and np.all(th % RF_GAIN == 0))


def _rf_kind_ok(n: Node) -> bool:
    return (n.spike_rule, n.reset) in (("phase", "none"), ("imag", "imag"))


def _imag_reset_ok(n: Node) -> bool:
    return n.reset != "imag" or bool(np.all(n.imag_reset == n.threshold - 1))


#: What netx writes (see the package docstring), per node type and field.
ACCEPTS = Accepts({
    ("Input", "Linear", "Affine", "Conv2d", "SumPool2d", "Flatten", "Output", "Delay"): (),
    "LoihiCUBA": (
        uniform("i_decay", why=_ONE_PER_LAYER),
        uniform("v_decay", why=_ONE_PER_LAYER),
        uniform("threshold", why=_ONE_PER_LAYER),
        one_of("refractory", 0, why="netx's LIF has no refractory period"),
        between("delay", 0, MAX_DELAY, why=_DELAY),
        one_of("spike_mode", "binary", why="netx's LIF emits binary spikes only"),
        rule("bias_exp", f"{NETX_BIAS_EXP} where the bias is nonzero", _bias_exp_ok,
             why=f"netx gives every neuron bias_exp={NETX_BIAS_EXP}"),
    ),
    FLOAT_NEURONS: (
        one_of("reset", "zero", why="Loihi resets the voltage to zero"),
        one_of("reset_timing", "same", why="Loihi resets in the spiking step"),
        equal("v_reset", 0, why="Loihi resets the voltage to zero"),
        equal("v_init", 0, why="Loihi's voltage starts at zero"),
        one_of("spike_mode", "binary", why="netx's LIF emits binary spikes"),
        equal("amplitude", 1, why="netx's LIF emits unit spikes"),
        one_of("refractory", 0, why="netx's LIF has no refractory period"),
        between("delay", 0, MAX_DELAY, why=_DELAY),
        equal("gain", 1, why="Loihi adds the synaptic input unscaled"),
    ),
    ("LIF", "CubaLIF"): (equal("v_leak", 0, why="Loihi's voltage decays to zero"),),
    "CubaLIF": (one_of("current_order", "new", why="Loihi's voltage sees this step's current"),),
    _SIGMA_DELTA: (
        one_of("arithmetic", "fixed", why="netx runs Lava's fixed-point sigma-delta model; a "
               "float (slayer) graph is written by slayer's own export_hdf5 "
               "(hub.convert(graph, to='slayer'))"),
    ),
    ("SigmaDelta", "Delta"): (
        one_of("cum_error", "off", why="netx builds its processes without it"),
        one_of("spike_exp", sigma_delta.SPIKE_EXP,
               why=f"netx uses spike_exp={sigma_delta.SPIKE_EXP}"),
        one_of("state_exp", sigma_delta.STATE_EXP,
               why=f"netx uses state_exp={sigma_delta.STATE_EXP}"),
        uniform("threshold", why="netx takes one threshold mantissa per layer"),
    ),
    "SigmaDelta": (one_of("activation", "relu", why="netx builds Lava's SigmaDelta with its "
                          "default ReLU"),),
    "Resonator": (
        one_of("arithmetic", "fixed", why="Lava's RF computes in fixed point"),
        equal("threshold_step", 0, why=_ADAPTIVE),
        equal("refractory_scale", 0, why=_ADAPTIVE),
        rule("reset", "'none' with spike_rule 'phase' (RF_PHASE), 'imag' with 'imag' "
             "(RF_IZHIKEVICH)", _rf_kind_ok, why="Lava's RF spikes on the phase without a "
             "reset, its RF_IZ on the imaginary part with the Izhikevich reset"),
        one_of("comparison", ">=", why="Lava's RF spikes at vth and above"),
        *(uniform(f, why=_RF_ONE) for f in ("threshold", "gain", "sin_decay", "cos_decay",
                                            "imag_reset")),
        equal("gain", RF_GAIN, why=f"netx shifts the input by state_exp = {RF_STATE_EXP} "
              f"(gain {RF_GAIN})"),
        rule("threshold", f"a non-negative multiple of {RF_GAIN}", _rf_threshold_ok,
             why=f"netx's vth is vThMant << {RF_STATE_EXP}"),
        rule("imag_reset", "threshold - 1 where reset='imag'", _imag_reset_ok,
             why="Lava's RF_IZ resets im to vth - 1"),
        at_least("sin_decay", 1 / 4096, why="netx rebuilds the rotation from a period and a "
                 "decay in the first quadrant (sin_decay >= 1/4096, cos_decay >= 0)"),
        at_least("cos_decay", 0, why="netx rebuilds the rotation from a period and a decay in "
                 "the first quadrant (sin_decay >= 1/4096, cos_decay >= 0)"),
        one_of("input_rounding", "exact", why="Lava's RF takes integer synaptic sums (a rounded "
               "graded input is slayer's, at another scale)"),
    ),
}, topology="chain", name="netx", notes=[
    "a chain of layers, each dense layer with its own recurrence at most (dense_rec)",
    "IF, LIF and CubaLIF: written with quantize=True (quantised to LoihiCUBA), an IF also "
    "exactly as Loihi's neuron without it",
    "checked by the exporter, because quantize=True approximates them instead: an IF written "
    "exactly has comparison '>', one integer threshold 0 to 2**17 - 1 and no delay (the "
    "identity holds on Loihi's integer inputs, which no rewrite of the float graph expresses); "
    "LIF and CubaLIF need quantize=True",
    "checked by the exporter, where the network is laid out in layers: weights (integers that "
    "netx's 8-bit optimize_weight_bits keeps, one weight exponent shared by the layer), a "
    "synapse's bias (with i_decay=4096, not beside a neuron's bias, per channel in a conv "
    "layer), axonal delays (into a dense layer, not on the last layer, not at or after a "
    "biased layer), the input layer's neuron, and a resonator's synapse",
])
