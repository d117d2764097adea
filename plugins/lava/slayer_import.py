"""slayer blocks to canonical nodes: each block's synapse, neuron and timing."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

import hub
from hub_plugins.lava import slayer_sigma_delta
from hub_plugins.lava.slayer_common import (BIAS_EXP, DECAY_UNITY, _integral, _is_bootstrap,
                                           expect_neuron)


def _decay(parameter: Any, field: str, p_scale: int) -> np.ndarray:
    """A slayer decay parameter (already scaled by ``p_scale``) as Loihi's 12-bit integer."""
    raw = parameter.detach().cpu().to(torch.float32)
    if raw.min() < 0 or raw.max() > p_scale:
        raise hub.UnsupportedError(
            f"{field} {raw.min().item() / p_scale}..{raw.max().item() / p_scale} is outside "
            "[0, 1]: slayer's forward would use it unclamped but its export clamps it",
            field=field)
    values = torch.round(raw).numpy().astype(np.int64)  # slayer's quantize(step=1)
    return values.reshape(()) if values.size == 1 else values


def _import_neuron(neuron: Any, channels_first: bool, recurrent: bool = False
                   ) -> hub.LoihiCUBA:
    expect_neuron(neuron, "cuba", "CUBA")
    if neuron.graded_spike:
        raise hub.UnsupportedError(
            "graded spikes: slayer's graded spike is v / 4096 of its own scale, truncated "
            "again by the next synapse, which the canonical Loihi neuron's graded output "
            "(v / 64, integer synaptic sums) does not express", field="graded_spike")
    bias = _norm_bias(neuron, channels_first)
    if neuron.persistent_state and not recurrent:
        raise hub.UnsupportedError("persistent_state carries the neuron's state (and slayer's "
                                   "delay buffer) from one forward call to the next; the hub's "
                                   "model starts each run at rest", field="persistent_state")
    # slayer keeps the threshold as int(threshold * scale) / scale, so this is the mantissa
    # its forward compares with (plus 0.01 / 4096: v >= vth + eps is Loihi's v > vth << 6)
    # and exactly what its export writes as vThMant
    scale = int(neuron.w_scale)
    mantissa = float(neuron.threshold) * scale
    if mantissa != round(mantissa) or not 0 <= mantissa <= (1 << 17) - 1:
        raise hub.UnsupportedError(
            f"threshold {float(neuron.threshold)} is not a mantissa of 1/{scale} in Loihi's "
            "unsigned 17-bit range", field="threshold")
    i_decay = _decay(neuron.current_decay, "current_decay", int(neuron.p_scale))
    v_decay = _decay(neuron.voltage_decay, "voltage_decay", int(neuron.p_scale))
    if channels_first and (i_decay.ndim or v_decay.ndim):
        raise hub.UnsupportedError(
            "per-channel decays (shared_param=False) in a convolution block: slayer broadcasts "
            "them over the last (width) axis, not over channels", field="shared_param")
    return hub.LoihiCUBA(i_decay=i_decay, v_decay=v_decay, threshold=np.int64(round(mantissa)),
                         bias=bias, bias_exp=BIAS_EXP)


def _import_alif(neuron: Any, channels_first: bool, recurrent: bool = False) -> hub.ALIF:
    """slayer's ``alif`` neuron as the canonical ALIF in fixed arithmetic.

    slayer's forward (``neuron/alif.py``, ``dynamics/leaky_integrator.py`` and
    ``dynamics/adaptive_threshold.py``) keeps every state as an integer at its state scale
    ``s_scale = 64 * w_scale``: the current takes ``s_scale * z`` (``64`` times the synaptic
    sum of weight mantissas), each decay is ``(y * (4096 - decay)) >> 12`` rounded toward zero,
    the threshold relaxes to ``th0 = threshold * s_scale`` and steps by ``threshold_step *
    s_scale`` per spike, the refractory state grows by twice the threshold, and it spikes where
    ``v >= threshold + refractory``; the voltage is not reset. Its states pass between stages as
    float32, so the equality holds while they stay below ``2**24`` (slayer's own range). Its
    ``MeanOnlyBatchNorm`` subtracts ``quantize_8bit(running_mean)`` from the synaptic input
    (before the current integrates it): a ``Bias`` node of ``-mean`` mantissas before the ALIF.
    """
    expect_neuron(neuron, "alif", "ALIF")
    if neuron.graded_spike:
        raise hub.UnsupportedError("graded spikes: slayer's alif emits v / s_scale of its own "
                                   "scale, which the canonical ALIF does not express",
                                   field="graded_spike")
    if neuron.persistent_state and not recurrent:
        raise hub.UnsupportedError("persistent_state carries the neuron's state from one "
                                   "forward call to the next; the hub's model starts each run "
                                   "at rest", field="persistent_state")
    if hasattr(neuron, "current_decay_min"):
        raise hub.UnsupportedError("per-channel decays (shared_param=False) are drawn at random "
                                   "on the block's first forward: run the network once first",
                                   field="shared_param")
    ratio = int(neuron.s_scale) // int(neuron.w_scale)
    state_scale = int(neuron.s_scale)
    fields = {}
    for field in ("threshold", "threshold_step"):
        value = float(getattr(neuron, field)) * state_scale  # slayer's int(value * s_scale)
        if value != round(value) or value < 0:
            raise hub.UnsupportedError(f"{field} {float(getattr(neuron, field))} is not a "
                                       f"non-negative mantissa of 1/{int(neuron.w_scale)}",
                                       field=field)
        fields[field] = np.float64(value)
    decays = {}
    for field, name in (("current_decay", "alpha"), ("voltage_decay", "beta"),
                        ("threshold_decay", "threshold_decay"),
                        ("refractory_decay", "refractory_decay")):
        value = _decay(getattr(neuron, field), field, int(neuron.p_scale))
        if channels_first and value.ndim:
            raise hub.UnsupportedError(
                "per-channel decays (shared_param=False) in a convolution block: slayer "
                "broadcasts them over the last (width) axis, not over channels", field=field)
        decays[name] = (DECAY_UNITY - value).astype(np.float64) / DECAY_UNITY
    return hub.ALIF(**decays, gain=1.0, current_gain=float(ratio), current_order="new",
                    refractory_scale=2.0, comparison=">=", reset="none", arithmetic="fixed",
                    **fields)


def _norm_bias(neuron: Any, channels_first: bool) -> np.ndarray:
    """The bias of slayer's CUBA neuron: its ``MeanOnlyBatchNorm`` in eval mode.

    The norm subtracts ``quantize_8bit(running_mean)`` from the current before the voltage
    integrates it, and the voltage takes ``int(current * s_scale)``: so the voltage gains
    ``-mean_mantissa << 6`` each step, Loihi's ``bias << 6``, with ``bias = -mean_mantissa``
    (the ``bias`` slayer's ``export_hdf5`` writes: ``norm.bias``). Eval mode is what the
    runner runs; in training mode the norm would update its running mean.
    """
    norm = neuron.norm
    if norm is None:
        return np.int64(0)
    if type(norm).__name__ != "MeanOnlyBatchNorm":
        raise hub.UnsupportedError(f"a {type(norm).__name__} norm is not mapped (slayer's "
                                   "MeanOnlyBatchNorm, a bias, is)", field="norm")
    with torch.no_grad():
        bias = norm.bias.detach().cpu().numpy().astype(np.float64)
    if not _integral(bias):
        raise hub.UnsupportedError("the norm's quantised mean is not an integer mantissa",
                                   field="norm")
    bias = bias.astype(np.int64)
    if bias.size == 1:
        return bias.reshape(())
    return bias.reshape(-1, 1, 1) if channels_first else bias


def _weights(synapse: Any, block: Any) -> np.ndarray:
    """A synapse's integer weight mantissas, as slayer's export_hdf5 computes them."""
    if getattr(synapse, "complex", False):
        raise hub.UnsupportedError("complex synapses are not mapped", field="synapse")
    if synapse.weight_norm_enabled:
        raise hub.UnsupportedError(
            "weight normalisation is on; its export switches it off in place (a change to the "
            "model): call block.synapse.disable_weight_norm() first", field="weight_norm")
    with torch.no_grad():
        weight = synapse.weight.detach()
        if getattr(block, "mask", None) is not None:
            weight = weight * block.mask
        mant = synapse.pre_hook_fx(weight, descale=True).cpu().numpy().astype(np.float64)
    if not _integral(mant):
        raise hub.UnsupportedError("the synapse's pre-hook gives non-integer weight mantissas",
                                   field="weight")
    return mant.astype(np.float32)


def _first_input_shape(blocks: list[Any]) -> tuple[int, ...] | None:
    """The network's input shape, from the first block that says it."""
    for block in blocks:
        kind = type(block).__name__
        if kind in ("Dense", "KWTA", "Output"):
            return (int(block.synapse.in_channels),)
        if kind == "Recurrent":
            return (int(block.input_synapse.in_channels),)
        if kind == "Conv":
            return _conv_input_shape(block, _weights(block.synapse, block))
        if kind == "Input" and getattr(block, "input_shape", None) is not None:
            return tuple(int(n) for n in block.input_shape)
        if kind != "Input":
            return None
    return None


Imported = tuple[list[tuple[str, hub.Node]], list[tuple[str, hub.Node, str]]]


def _import_block(block: Any, keep_shift: bool, shape: tuple[int, ...]) -> Imported:
    """The canonical nodes of one slayer block (``shape``: its input's), and its recurrent
    synapses as ``(part, node, neuron part)``."""
    kind = type(block).__name__
    family = type(block).__module__.rsplit(".", 1)[-1]
    if family == "sigma_delta":
        return slayer_sigma_delta.import_block(block, keep_shift, shape)
    if family not in ("cuba", "alif"):
        raise hub.UnsupportedError(f"slayer.block.{family}.{kind}: only the cuba, alif and "
                                   "sigma_delta blocks are mapped (to hub.LoihiCUBA, a "
                                   "fixed-point hub.ALIF and hub.SigmaDelta)")
    if kind == "Flatten":
        return [("flatten", hub.Flatten())], []
    if kind in UNMAPPED:
        raise hub.UnsupportedError(f"slayer.block.{family}.{kind} is not mapped: "
                                   f"{UNMAPPED[kind]}")
    if kind not in ("Input", "Dense", "Conv", "Pool", "Recurrent", "ConvT", "Unpool"):
        raise hub.UnsupportedError(f"slayer.block.{family}.{kind} is not mapped (Input, Dense, "
                                   "Conv, Pool, ConvT, Unpool, Recurrent and Flatten are)")
    nodes: list[tuple[str, hub.Node]] = []
    loops: list[tuple[str, hub.Node, str]] = []
    if kind == "Input":
        if block.neuron is not None:
            nodes = _input_transform(block)
    elif kind == "Recurrent":
        if block.bias is not None:
            raise hub.UnsupportedError("a Recurrent block's bias is not mapped", field="bias")
        weight = _weights(block.input_synapse, block)
        nodes = [("synapse", hub.Linear(weight=weight.reshape(weight.shape[:2])))]
        rec = _weights(block.recurrent_synapse, block)
        loops = [("recurrent", hub.Linear(weight=rec.reshape(rec.shape[:2])), "neuron")]
    elif kind == "Dense":
        weight = _weights(block.synapse, block)
        nodes = [("synapse", hub.Linear(weight=weight.reshape(weight.shape[:2])))]
    elif kind == "Conv":
        weight = _weights(block.synapse, block)
        synapse = block.synapse
        if synapse.kernel_size[2] != 1 or synapse.stride[2] != 1 or synapse.padding[2] != 0:
            raise hub.UnsupportedError("a convolution over time is not mapped", field="synapse")
        nodes = [("synapse", hub.Conv2d(weight=weight[..., 0], stride=synapse.stride[:2],
                                        padding=synapse.padding[:2],
                                        dilation=synapse.dilation[:2], groups=synapse.groups))]
    elif kind in ("ConvT", "Unpool"):
        from hub_plugins.lava import slayer_upsample

        nodes = [("synapse", slayer_upsample.synapse(block, shape))]
    else:
        nodes = [("synapse", _pool(block, shape))]
    if block.neuron is not None:
        try:
            read = _import_alif if family == "alif" else _import_neuron
            channels_first = kind in ("Conv", "Pool", "Input", "ConvT", "Unpool")
            neuron = read(block.neuron, channels_first, recurrent=kind == "Recurrent")
            if family == "alif" and block.neuron.norm is not None:
                if kind == "Input":
                    raise hub.UnsupportedError("a norm in an alif Input block is not mapped",
                                               field="norm")
                # alif's norm subtracts the quantised mean from the synaptic input
                bias = _norm_bias(block.neuron, channels_first)
                nodes.append(("bias", hub.Bias(bias=bias.astype(np.float32))))
        except hub.HubError as e:
            raise e.at(node="neuron") from None
        nodes.append(("neuron", neuron))
    conv = kind in ("Conv", "Pool", "ConvT", "Unpool") or len(shape) == 3
    delay = _block_delay(block, keep_shift, conv=conv,
                         axonal=not _is_bootstrap(block))
    if delay is not None:
        nodes.append(("delay", delay))
    return nodes, loops


#: Why the blocks that reach the generic import unmapped are not.
UNMAPPED = {
    "Affine": "only the cuba Affine is mapped (a LoihiCUBA voltage readout)",
    "KWTA": "its k-winners-take-all lateral inhibition has no canonical node",
    "TimeDecimation": "it averages bins of time steps, which changes the time axis (the hub's "
                      "graphs give one output step per input step)",
}


def _input_transform(block: Any) -> list[tuple[str, hub.Node]]:
    """An Input block's ``z = x * weight + bias`` before its neuron, in Loihi's units.

    slayer quantises the input, the weight and the bias with ``quantize_8bit`` (steps of
    ``2 / w_scale``, clamped to ``[-256, 254] / w_scale``) and its neuron takes ``z`` in units
    of ``1 / w_scale`` of the synaptic input: so Loihi's input is ``z * w_scale``, an integer
    for binary (and small integer) inputs. Inputs beyond ``254 / w_scale`` would be clamped by
    slayer, which the graph does not model: feed spikes or small graded values.
    """
    neuron = block.neuron
    scale = int(neuron.w_scale)
    nodes: list[tuple[str, hub.Node]] = []

    def mantissa(parameter: Any, field: str) -> float:
        value = neuron.quantize_8bit(parameter.detach().cpu(), descale=True).reshape(-1)
        if value.numel() != 1:
            raise hub.UnsupportedError("one value per block is mapped", field=field)
        return float(value[0])

    nodes.append(("weight", hub.Scale(
        scale=mantissa(block.weight, "weight") if block.weight is not None else float(scale))))
    if block.bias is not None:
        nodes.append(("bias", hub.Bias(bias=mantissa(block.bias, "bias"))))
    return nodes


def _pool(block: Any, shape: tuple[int, ...]) -> hub.Node:
    """A Pool block's synapse: a depthwise convolution of the quantised pool weight.

    slayer's ``synapse.Pool`` convolves ``[N, 1, C * H, W, T]`` with a ``[kh, kw, 1]`` kernel
    (so windows stay within a channel only where they tile ``H``), after padding ``H`` and ``W``
    with their remainders; what is mapped is the case where that is plain per-channel pooling.
    """
    s = block.synapse
    kernel, stride = tuple(s.kernel_size[:2]), tuple(s.stride[:2])
    if len(shape) != 3:
        raise hub.UnsupportedError(f"a Pool block needs a [C, H, W] input, got {list(shape)}")
    if (stride != kernel or tuple(s.padding[:2]) != (0, 0) or tuple(s.dilation[:2]) != (1, 1)
            or shape[1] % kernel[0] or shape[2] % kernel[1]):
        raise hub.UnsupportedError(
            f"slayer pools over channels merged with rows; it is per-channel pooling only with "
            f"stride = kernel, no padding or dilation, and a kernel {list(kernel)} that tiles "
            f"the input {list(shape[1:])}", field="synapse")
    weight = _weights(s, block)
    if weight.size and not (weight == weight.reshape(-1)[0]).all():
        raise hub.UnsupportedError("a pool kernel of different weights", field="weight")
    channels = int(shape[0])
    return hub.Conv2d(weight=np.full((channels, 1, *kernel), weight.reshape(-1)[0],
                                     dtype=np.float32), stride=stride, groups=channels)


def _block_delay(block: Any, keep_shift: bool, conv: bool, axonal: bool = True
                 ) -> hub.Delay | None:
    """The block's timing after its neuron: ``delay_shift`` (one step) plus its axonal delays.

    slayer's forward applies ``step_delay`` (a shift by one step) where ``delay_shift is True``,
    then ``axon.Delay``, which clamps its learnable delays to ``[0, max_delay]`` and shifts
    each channel by ``int(delay)`` steps (``utils.time.shift``: truncation, the same as the
    floor that ``export_hdf5`` writes for non-negative delays).
    """
    shift = 1 if keep_shift and getattr(block, "delay_shift", False) is True else 0
    # a bootstrap block's SNN forward applies delay_shift but never its axon.Delay
    axon = getattr(block, "delay", None) if axonal else None
    if axon is None:
        return hub.Delay(delay=shift) if shift else None
    if not axon.init:
        raise hub.UnsupportedError("the axonal delays (delay=True) are drawn at random on the "
                                   "block's first forward: run the network once (or set "
                                   "block.delay.delay and block.delay.init) first", field="delay")
    values = axon.delay.detach().cpu().to(torch.float64)
    low, high = 0.0, np.inf if axon.max_delay is None else float(axon.max_delay)
    steps = np.trunc(values.clamp(low, high).numpy() / axon.sampling_time).astype(np.int64)
    steps = steps.reshape(-1) + shift
    if (steps == steps[0]).all():
        return hub.Delay(delay=int(steps[0])) if steps[0] else None
    return hub.Delay(delay=steps.reshape(-1, 1, 1) if conv else steps)


def _conv_input_shape(block: Any, weight: np.ndarray) -> tuple[int, ...] | None:
    """A convolution's input (C, H, W) from its output shape, where stride 1 makes it unique."""
    channels = weight.shape[1] * block.synapse.groups
    out = getattr(block.neuron, "shape", None)
    s = block.synapse
    if out is None or len(out) != 3 or tuple(s.stride[:2]) != (1, 1):
        return (channels, None, None)  # type: ignore[return-value]
    return (channels, *(int(o) - 2 * p + d * (k - 1) for o, p, d, k in
                        zip(out[1:], s.padding[:2], s.dilation[:2], weight.shape[2:4])))

