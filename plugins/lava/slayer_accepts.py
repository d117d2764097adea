"""What slayer's blocks hold, declared per node type and field (``hub plugins --accepts
slayer``); the derivation is :class:`~hub_plugins.lava.slayer.SlayerFormat` and
``docs/lava.md``."""

from __future__ import annotations

import numpy as np

from hub.legalise import Accepts, equal, one_of, rule, uniform
from hub.node import Node
from hub_plugins.lava.slayer_common import BIAS_EXP, DECAY_UNITY, DEFAULT_SCALE

#: slayer's state scale of the sigma-delta neuron: ``s_scale = scale << 6``.
STATE_SCALE = DEFAULT_SCALE << 6
#: ``gain`` of a resonator: slayer's resonator states are at ``s_scale = 64 * w_scale``, its
#: synaptic input at ``w_scale``; Lava shifts the input by ``state_exp = 6``.
RF_GAIN = 1 << 6
_ALIF = "slayer's alif neuron"
_RF_FAMILIES = ("slayer's resonator blocks are rf (phase rule, no reset), rf_iz (imag rule, imag "
                "reset, no adaptation) and adrf (phase rule, no reset, adaptation); adrf_iz, "
                "the imag rule with adaptation, does not run in lava-dl 0.6")


def _bias_exp_ok(n: Node) -> bool:
    return not np.any(n.bias) or n.bias_exp == BIAS_EXP


def _multiple(field: str, of: int) -> object:
    def test(n: Node) -> bool:
        value = np.asarray(getattr(n, field), np.float64)
        return bool(np.all(value % of == 0) and np.all(value >= 0))
    return test


def _delta_threshold_ok(n: Node) -> bool:
    value = np.asarray(n.threshold, np.float64)
    on_grid = (value * DEFAULT_SCALE == np.round(value * DEFAULT_SCALE)) & (value > 0)
    return bool(np.all(on_grid | (value == 1 / STATE_SCALE)))


def _adaptive(n: Node) -> bool:
    return bool(np.any(n.threshold_step) or np.any(n.refractory_scale))


def _rf_reset_ok(n: Node) -> bool:
    return not (n.spike_rule == "imag" and n.reset == "none")


def _rf_family_ok(n: Node) -> bool:
    return (n.spike_rule, n.reset) == ("phase", "none") or (
        (n.spike_rule, n.reset) == ("imag", "imag") and not _adaptive(n))


def _imag_reset_ok(n: Node) -> bool:
    return n.reset != "imag" or bool(np.all(n.imag_reset == n.threshold - 1))


def _refractory_scale_ok(n: Node) -> bool:
    return not _adaptive(n) or bool(np.all(n.refractory_scale == 2))


def _rotation_ok(n: Node) -> bool:
    sin, cos = (np.asarray(v, np.float64) * DECAY_UNITY for v in (n.sin_decay, n.cos_decay))
    return bool(sin.min() >= 1 and cos.min() >= 0
                and np.sqrt(sin ** 2 + cos ** 2).max() <= DECAY_UNITY - 1)


#: What slayer's blocks hold (see :class:`~hub_plugins.lava.slayer.SlayerFormat`), per node
#: type and field.
ACCEPTS = Accepts({
    ("Input", "Output", "Linear", "Conv2d", "Flatten", "Delay", "Scale", "Bias", "Quantize",
     "Vote", "ConvTranspose2d"): (),
    "LoihiCUBA": (
        one_of("refractory", 0, why="slayer's CUBA neuron has no refractory period"),
        one_of("spike_mode", "binary", "voltage", why="slayer's CUBA neuron emits binary spikes "
               "(an Affine block its voltage)"),
        uniform("threshold", why="slayer's CUBA neuron has one threshold per block"),
        rule("bias_exp", f"{BIAS_EXP} where the bias is nonzero", _bias_exp_ok,
             why=f"slayer's bias (a norm's mean) has bias_exp={BIAS_EXP}"),
    ),
    "ALIF": (
        one_of("arithmetic", "fixed", why=f"{_ALIF} computes in Loihi's fixed point"),
        one_of("comparison", ">=", why=f"{_ALIF} spikes where v >= theta + r"),
        one_of("reset", "none", why=f"{_ALIF}'s voltage is not reset (r does that)"),
        one_of("current_order", "new", why=f"{_ALIF}'s voltage integrates this step's current"),
        equal("gain", 1, why=f"{_ALIF}'s voltage adds the current unscaled"),
        equal("current_gain", DEFAULT_SCALE, why=f"{_ALIF}'s current takes {DEFAULT_SCALE} "
              "times the synaptic sum (scale 1 << 6)"),
        equal("v_leak", 0, why=f"{_ALIF}'s voltage decays towards 0"),
        equal("v_init", 0, why=f"{_ALIF}'s voltage starts at 0"),
        equal("refractory_scale", 2, why=f"{_ALIF}'s refractory state grows by twice the "
              "threshold"),
        *(r for field in ("threshold", "threshold_step") for r in (
            uniform(field, why=f"{_ALIF} has one per block"),
            rule(field, f"a non-negative multiple of {DEFAULT_SCALE}",
                 _multiple(field, DEFAULT_SCALE),
                 why=f"{_ALIF} holds a mantissa of 1/{DEFAULT_SCALE} at the state scale "
                 f"{DEFAULT_SCALE * DEFAULT_SCALE}"))),
    ),
    ("SigmaDelta", "Delta", "Sigma"): (
        one_of("arithmetic", "float", why="slayer's sigma-delta blocks compute in float32; this "
               "node is in Lava's fixed point (a netx graph: write it with netx)"),
    ),
    ("SigmaDelta", "Delta"): (
        one_of("cum_error", "off", why="lava-dl 0.6's sigma-delta forward fails with it"),
        equal("resolution", 1 / STATE_SCALE, why=f"slayer floors the output to multiples of "
              f"1/{STATE_SCALE} (scale 1 << 6)"),
        uniform("threshold", why="slayer's sigma-delta block has one threshold"),
        rule("threshold", f"a positive multiple of 1/{DEFAULT_SCALE}, or 1/{STATE_SCALE}",
             _delta_threshold_ok, why=f"slayer keeps the threshold as a mantissa of "
             f"1/{DEFAULT_SCALE} (int(threshold * {DEFAULT_SCALE}) / {DEFAULT_SCALE}) and clamps "
             f"a threshold of 0 to 1/{STATE_SCALE}"),
    ),
    "Resonator": (
        one_of("arithmetic", "fixed", why="slayer's resonators compute in Loihi's fixed point"),
        rule("reset", "'imag' with spike_rule 'imag' (rf_iz), 'none' with 'phase' (rf, adrf)",
             _rf_reset_ok, why=_RF_FAMILIES),
        rule("spike_rule", "'phase' (rf, adrf: reset 'none'), 'imag' (rf_iz: reset 'imag', no "
             "adaptation)", _rf_family_ok, why=_RF_FAMILIES),
        one_of("comparison", ">=", why="slayer's resonators spike where the state reaches "
               "theta + r"),
        equal("gain", RF_GAIN, why=f"slayer's resonator state takes {RF_GAIN} times the "
              "synaptic sum (state scale 64 * 64)"),
        *(r for field in ("threshold", "threshold_step") for r in (
            uniform(field, why="slayer's resonator neurons have one per block"),
            rule(field, f"a non-negative multiple of {RF_GAIN}", _multiple(field, RF_GAIN),
                 why=f"slayer holds a mantissa of 1/64 at the state scale (multiples of "
                 f"{RF_GAIN})"))),
        rule("imag_reset", "threshold - 1 where reset='imag'", _imag_reset_ok,
             why="rf_iz's Izhikevich reset sets im to threshold - 1"),
        rule("refractory_scale", "0, or 2 with adaptation (adrf)", _refractory_scale_ok,
             why="adrf's refractory state grows by twice the threshold"),
        rule("sin_decay", "sin_decay >= 1/4096, cos_decay >= 0, their norm below 1",
             _rotation_ok, why="slayer keeps the rotation in the first quadrant inside the "
             "unit circle: its export would clamp these"),
    ),
}, topology="chain", name="slayer", notes=[
    "a chain of blocks, a Dense block with its own recurrence at most (Recurrent)",
    "checked by the exporter, where the network is laid out in blocks: weights (even integer "
    "mantissas in [-256, 254], slayer's quantize_8bit), a synapse's bias (none; a neuron's "
    "bias, a norm's mean, in Dense and Conv blocks only, one per neuron or channel, even "
    "mantissas), per-neuron decays (Dense blocks only), axonal delays (one per neuron or "
    "channel, 0 to 62 steps after delay_shift, none into the input), the Input block's scale "
    "and bias, and a sigma-delta network's input quantisation",
])
