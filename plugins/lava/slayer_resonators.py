"""slayer's resonate-and-fire block families (``rf``, ``rf_iz``, ``adrf``, ``adrf_iz``) and
:class:`hub.Resonator`, both ways.

A resonator block's synapse is complex: ``synapse.real`` and ``synapse.imag``, two weight sets
on the same input. It is one ``Linear`` (``Conv2d``) with the real weights' rows (output
channels) first and the imaginary ones after, and the Resonator takes that ``2C``-wide input
as its real and imaginary halves. The neuron's state is an integer at slayer's state scale
``s_scale = 64 * w_scale``: the synaptic sum of weight mantissas enters it times
``s_scale / w_scale = 64`` (``gain``), the threshold is the threshold mantissa times 64, and
the rotation factors are ``quantize(sin_decay) / 4096`` and ``quantize(cos_decay) / 4096``
(see :class:`hub.Resonator` for the update and ``docs/lava.md`` for the derivation).

What lava-dl 0.6 itself cannot run is refused, naming the block and why: in the resonator
families an ``Input`` block with a neuron, ``Recurrent``, ``KWTA`` and ``Affine`` blocks fail in
their own forward, and so does every ``adrf_iz`` neuron.
"""

from __future__ import annotations

import types
from typing import Any

import numpy as np
import torch

import hub
from hub_plugins.lava.slayer_accepts import ACCEPTS, RF_GAIN
from hub_plugins.lava.slayer_common import DECAY_UNITY, DEFAULT_SCALE, _slayer, expect_neuron
from hub_plugins.lava.slayer_export import _even_mantissas, _export_timing
from hub_plugins.lava.slayer_import import (
    UNMAPPED, _block_delay, _conv_input_shape, _decay, _pool, _weights)

#: The slayer block families whose neuron is a :class:`hub.Resonator`.
FAMILIES = ("rf", "rf_iz", "adrf", "adrf_iz")
#: ``gain``: slayer's resonator states are at ``s_scale = 64 * w_scale``, its synaptic input at
#: ``w_scale``; Lava shifts the input by ``state_exp = 6``.
GAIN = RF_GAIN
#: Blocks of the resonator families that do not run in lava-dl 0.6, and why.
BROKEN = {
    "Input": ("its neuron takes a (real, imaginary) pair of inputs and the block passes it one "
              "tensor (lava-dl 0.6 fails in the neuron's shape check)"),
    "Recurrent": ("its recurrent loop hands the neuron one tensor where it takes a (real, "
                  "imaginary) pair (lava-dl 0.6 fails with AttributeError)"),
    "KWTA": ("its lateral loop hands the neuron one tensor where it takes a (real, imaginary) "
             "pair (lava-dl 0.6 fails with TypeError)"),
    "Affine": "its constructor fails in lava-dl 0.6 (it sets the read-only neuron threshold)",
}
ADRF_IZ = ("lava-dl 0.6's adrf_iz neuron does not run: its forward calls spike() without the "
           "refractory argument (TypeError), so the block has no output to reproduce; "
           "hub.Resonator(spike_rule='imag', reset='none', refractory_scale=2) holds what its "
           "dynamics define")


def family_of(block: Any) -> str | None:
    """The resonator family of a slayer block (``"rf"``...), or ``None`` for other blocks."""
    module = type(block).__module__
    family = module.rsplit(".", 1)[-1]
    return family if module.startswith("lava.lib.dl.slayer.block") and family in FAMILIES \
        else None


def first_input_shape(blocks: list[Any]) -> tuple[int, ...] | None:
    """The network's input shape where its first block is a resonator Dense or Conv."""
    block = blocks[0]
    kind = type(block).__name__
    if family_of(block) is None or kind not in ("Dense", "Conv"):
        return None
    real = block.synapse.real
    if kind == "Dense":
        return (int(real.in_channels),)
    view = types.SimpleNamespace(synapse=real, neuron=block.neuron)
    return _conv_input_shape(view, _weights(real, block))  # type: ignore[arg-type]


# -- import ---------------------------------------------------------------------------------


def import_block(block: Any, keep_shift: bool, shape: tuple[int, ...]
                 ) -> list[tuple[str, hub.Node]]:
    """The canonical nodes of one resonator-family block (``shape``: its input's)."""
    kind = type(block).__name__
    family = family_of(block)
    where = f"slayer.block.{family}.{kind}"
    if kind == "Flatten":
        return [("flatten", hub.Flatten())]
    if kind in BROKEN and not (kind == "Input" and block.neuron is None):
        raise hub.UnsupportedError(f"{where} does not run in slayer: {BROKEN[kind]}")
    if kind in UNMAPPED:
        raise hub.UnsupportedError(f"{where} is not mapped: {UNMAPPED[kind]}")
    if family == "adrf_iz" and getattr(block, "neuron", None) is not None:
        raise hub.UnsupportedError(f"{where}: {ADRF_IZ}", node="neuron", field="neuron")
    nodes: list[tuple[str, hub.Node]] = []
    conv = len(shape) == 3
    if kind == "Dense":
        real, imag = (_weights(s, block) for s in (block.synapse.real, block.synapse.imag))
        weight = np.concatenate([real, imag]).reshape(2 * real.shape[0], real.shape[1])
        nodes.append(("synapse", hub.Linear(weight=weight)))
    elif kind == "Conv":
        synapse = block.synapse.real
        if synapse.kernel_size[2] != 1 or synapse.stride[2] != 1 or synapse.padding[2] != 0:
            raise hub.UnsupportedError("a convolution over time is not mapped", field="synapse")
        if synapse.groups != 1:
            raise hub.UnsupportedError("a grouped complex convolution is not mapped: the real "
                                       "and imaginary outputs of a group would not be the two "
                                       "halves of the Resonator's input", field="groups")
        real, imag = (_weights(s, block)[..., 0] for s in (block.synapse.real,
                                                            block.synapse.imag))
        nodes.append(("synapse", hub.Conv2d(
            weight=np.concatenate([real, imag]), stride=synapse.stride[:2],
            padding=synapse.padding[:2], dilation=synapse.dilation[:2])))
        conv = True
    elif kind == "Pool":
        nodes.append(("synapse", _complex_pool(block, shape)))
        conv = True
    elif kind in ("ConvT", "Unpool"):
        nodes.append(("synapse", _complex_upsample(block, shape)))
        conv = True
    elif kind != "Input":
        raise hub.UnsupportedError(f"{where} is not mapped (Dense, Conv, Pool, ConvT, Unpool, "
                                   "Flatten, Average and an Input block without a neuron are)")
    if kind != "Input":
        try:
            synapse = nodes[0][1]
            outputs = synapse.weight.shape[1] * synapse.groups if \
                isinstance(synapse, hub.ConvTranspose2d) else synapse.weight.shape[0]
            count = int(outputs) // 2
            bias = _norm_bias(block.neuron, conv, count)
            if bias is not None:
                nodes.append(("bias", hub.Bias(bias=bias)))
            nodes.append(("neuron", import_neuron(block.neuron, family, conv)))
        except hub.HubError as e:
            raise e.at(node="neuron") from None
    delay = _block_delay(block, keep_shift, conv=conv)
    if delay is not None:
        nodes.append(("delay", delay))
    return nodes


def _complex_pool(block: Any, shape: tuple[int, ...]) -> hub.Conv2d:
    """A resonator Pool block's synapse: per-channel pooling by the real and by the imaginary
    pool weight, as one ``Conv2d`` from ``C`` to ``2C`` channels (zero off the diagonal)."""
    parts = [_pool(types.SimpleNamespace(synapse=s, mask=None), shape)
             for s in (block.synapse.real, block.synapse.imag)]
    channels = int(shape[0])
    kernel = parts[0].weight.shape[2:]
    weight = np.zeros((2 * channels, channels, *kernel), dtype=np.float32)
    for half, part in enumerate(parts):
        for c in range(channels):
            weight[half * channels + c, c] = part.weight[c, 0]
    return hub.Conv2d(weight=weight, stride=parts[0].stride)


def _complex_upsample(block: Any, shape: tuple[int, ...]) -> hub.ConvTranspose2d:
    """A resonator ConvT or Unpool block's synapse: the real and the imaginary transposed
    convolution as one ``ConvTranspose2d`` whose outputs are the real channels, then the
    imaginary ones (an Unpool: ``C`` to ``2C`` channels, zero off the diagonal)."""
    from hub_plugins.lava import slayer_upsample

    real, imag = (slayer_upsample.synapse(block, shape, s)
                  for s in (block.synapse.real, block.synapse.imag))
    if type(block).__name__ == "Unpool":
        channels = int(shape[0])
        kernel = real.weight.shape[2:]
        weight = np.zeros((channels, 2 * channels, *kernel), dtype=np.float32)
        for half, part in enumerate((real, imag)):
            for c in range(channels):
                weight[c, half * channels + c] = part.weight[c, 0]
        return hub.ConvTranspose2d(weight=weight, stride=real.stride)
    if real.groups != 1:
        raise hub.UnsupportedError("a grouped complex transposed convolution is not mapped: the "
                                   "real and imaginary outputs of a group would not be the two "
                                   "halves of the Resonator's input", field="groups")
    return real.replace(weight=np.concatenate([real.weight, imag.weight], axis=1))


def _norm_bias(neuron: Any, conv: bool, count: int) -> np.ndarray | None:
    """The neuron's ``real_norm`` and ``imag_norm`` (``MeanOnlyBatchNorm``, eval mode) as one
    ``Bias`` on the ``2C`` synaptic input: each subtracts ``quantize_8bit(running_mean)`` from
    its half before the state integrates it (``norm.bias`` is minus that, in mantissas)."""
    if neuron.real_norm is None and neuron.imag_norm is None:
        return None
    halves = []
    for norm in (neuron.real_norm, neuron.imag_norm):
        if type(norm).__name__ != "MeanOnlyBatchNorm":
            raise hub.UnsupportedError(f"a {type(norm).__name__} norm is not mapped (slayer's "
                                       "MeanOnlyBatchNorm, a bias, is)", field="norm")
        with torch.no_grad():
            halves.append(norm.bias.detach().cpu().numpy().astype(np.float64).reshape(-1))
    if halves[0].size != halves[1].size or not np.all(np.concatenate(halves)
                                                      == np.round(np.concatenate(halves))):
        raise hub.UnsupportedError("the norms' quantised means are not integer mantissas, one "
                                   "per channel", field="norm")
    if any(h.size not in (1, count) for h in halves):
        raise hub.UnsupportedError("a norm's mean is one per channel", field="norm")
    bias = np.concatenate([np.broadcast_to(h, (count,)) for h in halves]).astype(np.float32)
    return bias.reshape(-1, 1, 1) if conv else bias


def _rotation(neuron: Any) -> tuple[np.ndarray, np.ndarray]:
    """The integer sine and cosine decays slayer's forward uses (clamped first, as its forward
    does when the decays are learnable), without changing the neuron."""
    from lava.lib.dl.slayer.utils import quantize

    with torch.no_grad():
        sin, cos = neuron.sin_decay.detach().clone(), neuron.cos_decay.detach().clone()
        if neuron.requires_grad:  # slayer's clamp(), on copies
            gain = torch.sqrt(sin ** 2 + cos ** 2)
            clamped = gain.clamp(0, neuron.p_scale - 1)
            sin, cos = sin * (clamped / gain), cos * (clamped / gain)
            sin, cos = sin.clamp(1), cos.clamp(0)
        return (_decay(quantize(sin), "sin_decay", DECAY_UNITY),
                _decay(quantize(cos), "cos_decay", DECAY_UNITY))


def import_neuron(neuron: Any, family: str, channels_first: bool) -> hub.Resonator:
    """slayer's ``rf``, ``rf_iz``, ``adrf`` or ``adrf_iz`` neuron as a :class:`hub.Resonator` in
    fixed arithmetic (the ``adrf_iz`` one as its dynamics define it: its forward fails)."""
    expect_neuron(neuron, family, family)
    if neuron.graded_spike:
        raise hub.UnsupportedError("graded spikes: slayer's graded resonator spike is the real "
                                   "state in its own scale, which the Resonator does not emit",
                                   field="graded_spike")
    if neuron.persistent_state:
        raise hub.UnsupportedError("persistent_state carries the neuron's state from one "
                                   "forward call to the next; the hub's model starts each run "
                                   "at rest", field="persistent_state")
    if hasattr(neuron, "period_min"):
        raise hub.UnsupportedError("per-channel decays (shared_param=False) are drawn at random "
                                   "on the block's first forward: run the network once first",
                                   field="shared_param")
    state_scale = int(neuron.s_scale)
    if state_scale != GAIN * int(neuron.w_scale):
        raise hub.UnsupportedError(f"a state scale of {state_scale} for a weight scale of "
                                   f"{int(neuron.w_scale)} is not slayer's 64-fold",
                                   field="scale")
    sin, cos = _rotation(neuron)
    fields: dict[str, Any] = {"sin_decay": sin / DECAY_UNITY, "cos_decay": cos / DECAY_UNITY}
    adaptive = family in ("adrf", "adrf_iz")
    for name in ("threshold", "threshold_step") if adaptive else ("threshold",):
        value = float(getattr(neuron, name)) * state_scale  # slayer's int(value * s_scale)
        if value != round(value) or value < 0:
            raise hub.UnsupportedError(f"{name} {float(getattr(neuron, name))} is not a "
                                       f"non-negative mantissa of 1/{int(neuron.w_scale)}",
                                       field=name)
        fields[name] = np.float64(value)
    if family == "rf_iz":
        fields.update(spike_rule="imag", reset="imag", imag_reset=fields["threshold"] - 1)
    if family == "adrf_iz":  # its dynamics; its blocks are refused in import_block
        fields["spike_rule"] = "imag"
    if adaptive:
        for name in ("threshold_decay", "refractory_decay"):
            kept = DECAY_UNITY - _decay(getattr(neuron, name), name, DECAY_UNITY)
            fields[name] = kept / DECAY_UNITY
        fields["refractory_scale"] = 2.0
    if channels_first and any(np.ndim(v) for v in fields.values()):
        raise hub.UnsupportedError(
            "per-channel decays (shared_param=False) in a convolution block: slayer broadcasts "
            "them over the last (width) axis, not over channels", field="shared_param")
    return hub.Resonator(gain=float(GAIN), arithmetic="fixed", **fields)


# -- export ---------------------------------------------------------------------------------


def _family(name: str, node: hub.Resonator) -> str:
    """The slayer family that computes ``node``, or a refusal naming the field that differs
    (the rules are :data:`~hub_plugins.lava.slayer_accepts.ACCEPTS`')."""
    ACCEPTS.check(node, name)
    if node.spike_rule == "imag":
        return "rf_iz"
    return "adrf" if np.any(node.threshold_step) or np.any(node.refractory_scale) else "rf"


def _norm_means(name: str, value: np.ndarray, count: int, conv: bool
                ) -> tuple[np.ndarray, np.ndarray] | None:
    """The running means of the real and imaginary norms that give the ``2C`` bias."""
    if not np.any(value):
        return None
    flat = np.asarray(value, np.float64)
    if conv and flat.ndim == 3 and flat.shape[1:] == (1, 1):
        flat = flat[:, 0, 0]
    flat = flat.reshape(-1)
    if flat.size != 2 * count:
        raise hub.UnsupportedError("slayer's norms give one bias per channel of the real and "
                                   "of the imaginary input", node=name, field="bias")
    low, high = -254, 256  # minus slayer's quantize_8bit range of the mean
    if not np.all(flat == np.round(flat)) or np.any(flat % 2) or flat.min() < low or \
            flat.max() > high:
        raise hub.UnsupportedError(f"slayer's bias is minus an even mantissa in [{-high}, "
                                   f"{-low}] (its norm's quantize_8bit)", node=name,
                                   field="bias")
    means = -flat / DEFAULT_SCALE
    return means[:count], means[count:]


def export_block(name: str, synapse: hub.Node, neuron_name: str, neuron: hub.Resonator,
                 shape: tuple[int, ...], out_shape: tuple[int, ...],
                 delay: tuple[str, hub.Delay] | None = None,
                 bias: tuple[str, hub.Bias] | None = None) -> Any:
    """The slayer block of ``synapse [-> bias] -> neuron [-> delay]``."""
    family = _family(neuron_name, neuron)
    module = getattr(_slayer().block, family)
    if isinstance(synapse, (hub.Affine, hub.Conv2d, hub.ConvTranspose2d)) and \
            np.any(synapse.bias != 0):
        raise hub.UnsupportedError("slayer's complex synapses have no bias", node=name,
                                   field="bias")
    upsample = isinstance(synapse, hub.ConvTranspose2d)
    conv = isinstance(synapse, (hub.Conv2d, hub.ConvTranspose2d))
    if conv and synapse.groups != 1:
        raise hub.UnsupportedError("a grouped convolution into a Resonator is not written",
                                   node=name, field="groups")
    if upsample and any(synapse.output_padding):
        raise hub.UnsupportedError("slayer's ConvT block has no output_padding", node=name,
                                   field="output_padding")
    weight = _even_mantissas(name, synapse.weight)
    out = int(out_shape[0])
    # a transposed convolution's weight is [in, out, kh, kw]: its outputs on the second axis
    real, imag = (weight[:, :out], weight[:, out:]) if upsample else (weight[:out], weight[out:])
    decays = [neuron.sin_decay, neuron.cos_decay]
    if family == "adrf":
        decays += [neuron.threshold_decay, neuron.refractory_decay]
    per_channel = any(np.size(d) > 1 for d in decays)
    if per_channel and (conv or len(shape) != 1):
        raise hub.UnsupportedError("per-channel decays map to slayer only in Dense blocks",
                                   node=neuron_name, field="sin_decay")
    state_scale = GAIN * DEFAULT_SCALE
    params: dict[str, Any] = {"threshold": float(neuron.threshold.reshape(-1)[0]) / state_scale,
                              "period": 8.0, "decay": 0.0}  # the decays are set below
    if family == "adrf":
        params.update(threshold_step=float(neuron.threshold_step.reshape(-1)[0]) / state_scale,
                      threshold_decay=0.0, refractory_decay=0.0)
    if per_channel:
        params["shared_param"] = False
    means = None if bias is None else _norm_means(bias[0], bias[1].bias, out, conv)
    if means is not None:
        params["norm"] = _slayer().neuron.norm.MeanOnlyBatchNorm
    shift, axonal = _export_timing(neuron_name, neuron, delay, conv, out)
    timing = {"delay": axonal is not None, "delay_shift": shift}
    if upsample:
        block = module.ConvT(params, int(weight.shape[0]), out,
                             tuple(int(k) for k in weight.shape[2:]),
                             stride=tuple(synapse.stride), padding=tuple(synapse.padding),
                             dilation=tuple(synapse.dilation), **timing)
        parts = [(block.synapse.real, real[..., None]), (block.synapse.imag, imag[..., None])]
    elif conv:
        block = module.Conv(params, int(weight.shape[1]), out, tuple(int(k) for k in
                                                                     weight.shape[2:]),
                            stride=tuple(synapse.stride), padding=tuple(synapse.padding),
                            dilation=tuple(synapse.dilation), **timing)
        parts = [(block.synapse.real, real[..., None]), (block.synapse.imag, imag[..., None])]
    else:
        block = module.Dense(params, int(weight.shape[1]), out, **timing)
        parts = [(block.synapse.real, real[..., None, None, None]),
                 (block.synapse.imag, imag[..., None, None, None])]
    n = block.neuron
    values = {"sin_decay": neuron.sin_decay, "cos_decay": neuron.cos_decay}
    if family == "adrf":  # slayer's decays are the fraction lost per step
        values.update(threshold_decay=1 - np.asarray(neuron.threshold_decay, np.float64),
                      refractory_decay=1 - np.asarray(neuron.refractory_decay, np.float64))
    with torch.no_grad():
        for target, value in parts:
            target.weight.copy_(torch.tensor(value / DEFAULT_SCALE, dtype=torch.float32))
        for attr, value in values.items():
            scaled = np.round(np.asarray(value, np.float64) * DECAY_UNITY).reshape(-1)
            if per_channel:
                scaled = np.broadcast_to(scaled, (out,))
            getattr(n, attr).data = torch.tensor(scaled.astype(np.float32))
    for attr in list(vars(n)):  # slayer would draw random per-channel decays otherwise
        if attr.endswith(("_min", "_max")):
            delattr(n, attr)
    if axonal is not None:  # whole steps: slayer's forward truncates them
        block.delay.delay.data = torch.tensor(axonal.astype(np.float32))
        block.delay.init = True
    if means is not None:
        for norm, mean in zip((n.real_norm, n.imag_norm), means):
            norm.num_features = out
            norm.running_mean = torch.tensor(mean, dtype=torch.float32)
    n.shape = torch.Size(out_shape)  # slayer learns it on the first forward
    n.num_neurons = int(np.prod(out_shape))
    return block
