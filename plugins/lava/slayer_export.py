"""Canonical graphs to slayer blocks: each synapse and neuron checked against what slayer holds."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

import hub
from hub_plugins.lava.slayer_accepts import ACCEPTS
from hub_plugins.lava.slayer_common import (
    AXON_MAX_DELAY, DECAY_UNITY, DEFAULT_SCALE, NEURONS, WEIGHT_RANGE, _integral,
    _slayer)


def _chain(graph: hub.Graph) -> tuple[list[tuple[str, hub.Node]], dict[str, hub.Linear]]:
    """The graph's nodes in order, if it is one chain from its input to its output, and the
    recurrent ``Linear`` of each neuron that has one (a Recurrent block)."""
    chain = graph.as_chain(loops=hub.Linear, what="slayer block networks")
    flat = dict(chain.nodes)
    for owner, (name, _) in chain.loops.items():
        if not isinstance(flat[owner], NEURONS):
            raise hub.UnsupportedError(f"a slayer Recurrent block feeds back a slayer neuron, "
                                       f"not a {flat[owner].type}", node=name)
    return chain.nodes, {owner: node for owner, (_, node) in chain.loops.items()}


def _export_input_delay(name: str, node: hub.Delay) -> Any:
    """A ``Delay`` before the first synapse: refused.

    The only slayer block that could hold it, an ``Input`` block without a neuron and with
    ``delay_shift=True``, does not run in lava-dl 0.6: its ``step_delay`` reads
    ``neuron.persistent_state`` of the missing neuron (AttributeError).
    """
    raise hub.UnsupportedError("slayer cannot delay the network's input: an Input block without "
                               "a neuron fails in its delay_shift (lava-dl 0.6 step_delay reads "
                               "the missing neuron); drop the Delay or put it after a neuron",
                               node=name, field="delay")


def _export_timing(neuron_name: str, neuron: hub.Node, delay: tuple[str, hub.Delay] | None,
                   conv: bool, count: int) -> tuple[bool, np.ndarray | None]:
    """A block's ``delay_shift`` and per-channel axonal delays (or ``None``) from the neuron's
    ``delay`` and the ``Delay`` node after it: one step of it is ``delay_shift`` where every
    channel is delayed at least that much."""
    name = delay[0] if delay else neuron_name
    steps = np.asarray(delay[1].delay if delay else 0, dtype=np.int64) + \
        int(getattr(neuron, "delay", 0))
    if conv:
        if steps.size > 1 and (steps.ndim != 3 or steps.shape[1:] != (1, 1)):
            raise hub.UnsupportedError("slayer's axonal delays in a convolution block are one per "
                                       "channel; this Delay varies over positions", node=name,
                                       field="delay")
    elif steps.ndim > 1:
        raise hub.UnsupportedError("a Dense block's axonal delays are one per neuron", node=name,
                                   field="delay")
    flat = np.broadcast_to(steps.reshape(-1), (count,)) if steps.size == 1 else steps.reshape(-1)
    shift = bool((flat >= 1).all())
    axonal = flat - 1 if shift else flat
    if axonal.max() > AXON_MAX_DELAY:
        raise hub.UnsupportedError(f"slayer's axonal delays are 0 to {AXON_MAX_DELAY} steps "
                                   "(its Delay clamps them)", node=name, field="delay")
    return shift, (axonal if axonal.any() else None)


def _export_input(chain: list[tuple[str, hub.Node]], i: int, shape: tuple[int, ...]
                  ) -> tuple[Any, int]:
    """An Input block with a neuron from ``[Scale] -> [Bias] -> LoihiCUBA -> [Delay]``."""
    factor, bias = float(DEFAULT_SCALE), None
    name, node = chain[i]
    if isinstance(node, hub.Scale):
        factor, i = _input_mantissa(name, node.scale, "scale"), i + 1
        name, node = chain[i]
    if isinstance(node, hub.Bias):
        bias, i = _input_mantissa(name, node.bias, "bias"), i + 1
        name, node = chain[i]
    if not isinstance(node, NEURONS):
        raise hub.UnsupportedError("slayer's Input block is a scale, a bias and a CUBA or ALIF "
                                   f"neuron; found {type(node).__name__}", node=name)
    alif = isinstance(node, hub.ALIF)
    decays = (node.alpha, node.beta, node.threshold_decay, node.refractory_decay) if alif \
        else (node.i_decay, node.v_decay)
    if any(d.size > 1 for d in decays):
        raise hub.UnsupportedError("per-neuron decays in an Input block are not written",
                                   node=name, field="alpha" if alif else "i_decay")
    after = chain[i + 1] if i + 1 < len(chain) else (None, None)
    delay = after if isinstance(after[1], hub.Delay) else None
    shift, axonal = _export_timing(name, node, delay, len(shape) == 3, int(shape[0]))
    if axonal is not None:
        raise hub.UnsupportedError("slayer's Input block has no axonal delays", node=name,
                                   field="delay")
    params = _neuron_params(name, node)
    family = _slayer().block.alif if alif else _slayer().block.cuba
    block = family.Input(
        params, weight=None if factor == DEFAULT_SCALE else factor / DEFAULT_SCALE,
        bias=None if bias is None else bias / DEFAULT_SCALE, delay_shift=shift)
    _set_decays(block.neuron, node, per_channel=False, count=1)
    return block, i + (2 if delay else 1)


def _input_mantissa(name: str, value: np.ndarray, field: str) -> float:
    value = np.asarray(value, dtype=np.float64).reshape(-1)
    low, high = WEIGHT_RANGE
    if value.size != 1 or value[0] != round(value[0]) or value[0] % 2 or not \
            low <= value[0] <= high:
        raise hub.UnsupportedError(f"slayer's Input block takes one {field} per block, an even "
                                   f"integer mantissa in [{low}, {high}] of 1/{DEFAULT_SCALE}",
                                   node=name, field=field)
    return float(value[0])


def _check_neuron_fields(neuron_name: str, neuron: hub.LoihiCUBA, bias: bool = False) -> None:
    """The neuron's fields against :data:`~hub_plugins.lava.slayer_accepts.ACCEPTS` (checked
    again here for graphs that reach the export directly), and its bias against the block."""
    ACCEPTS.check(neuron, neuron_name)
    if not bias and np.any(neuron.bias != 0):
        raise hub.UnsupportedError("slayer's CUBA neuron has a bias only in Dense and Conv "
                                   "blocks (its norm's mean)", node=neuron_name, field="bias")


def _set_decays(neuron: Any, node: hub.Node, per_channel: bool, count: int) -> None:
    if isinstance(node, hub.ALIF):
        pairs = [(attr, DECAY_UNITY - np.round(np.asarray(value, np.float64) * DECAY_UNITY))
                 for attr, value in (("current_decay", node.alpha), ("voltage_decay", node.beta),
                                     ("threshold_decay", node.threshold_decay),
                                     ("refractory_decay", node.refractory_decay))]
    else:
        pairs = [("current_decay", node.i_decay), ("voltage_decay", node.v_decay)]
    with torch.no_grad():
        for attr, value in pairs:
            # slayer holds decays scaled by p_scale = 4096: exactly Loihi's 12-bit integers
            values = np.broadcast_to(value, (count,)) if per_channel else value.reshape(1)
            getattr(neuron, attr).data = torch.tensor(values.astype(np.float32))
    if per_channel:  # slayer draws random decays on the first forward unless these are gone
        for attr, _ in pairs:
            for end in ("_min", "_max"):
                if hasattr(neuron, attr + end):
                    delattr(neuron, attr + end)


def _neuron_params(name: str, node: hub.Node, bias: bool = False) -> dict[str, Any]:
    """The slayer neuron parameters of ``node`` (decays set afterwards by ``_set_decays``)."""
    if not isinstance(node, hub.ALIF):
        _check_neuron_fields(name, node, bias=bias)
        return {"threshold": float(node.threshold.reshape(-1)[0]) / DEFAULT_SCALE,
                "current_decay": 0.0, "voltage_decay": 0.0}
    state_scale = DEFAULT_SCALE * DEFAULT_SCALE
    ACCEPTS.check(node, name)
    return {"threshold": float(node.threshold.reshape(-1)[0]) / state_scale,
            "threshold_step": float(node.threshold_step.reshape(-1)[0]) / state_scale,
            "current_decay": 0.0, "voltage_decay": 0.0, "threshold_decay": 0.0,
            "refractory_decay": 0.0}


def _export_block(name: str, synapse: hub.Node, neuron_name: str, neuron: hub.Node,
                  shape: tuple[int, ...], out_shape: tuple[int, ...],
                  delay: tuple[str, hub.Delay] | None = None,
                  recurrent: hub.Linear | None = None,
                  bias: tuple[str, hub.Bias] | None = None) -> Any:
    slayer = _slayer()
    if isinstance(synapse, (hub.Affine, hub.Conv2d, hub.ConvTranspose2d)) and \
            np.any(synapse.bias != 0):
        raise hub.UnsupportedError("slayer's CUBA synapses have no bias", node=name,
                                   field="bias")
    upsample = isinstance(synapse, hub.ConvTranspose2d)
    if upsample and any(synapse.output_padding):
        raise hub.UnsupportedError("slayer's ConvT block has no output_padding", node=name,
                                   field="output_padding")
    weight = _even_mantissas(name, synapse.weight)
    params = _neuron_params(neuron_name, neuron, bias=recurrent is None)
    alif = isinstance(neuron, hub.ALIF)
    family = slayer.block.alif if alif else slayer.block.cuba
    conv = isinstance(synapse, (hub.Conv2d, hub.ConvTranspose2d))
    if recurrent is not None and conv:
        raise hub.UnsupportedError("slayer's Recurrent block is dense: a convolution with a "
                                   "recurrent synapse is not written", node=neuron_name)
    shift, axonal = _export_timing(neuron_name, neuron, delay, conv, int(out_shape[0]))
    decays = (neuron.alpha, neuron.beta, neuron.threshold_decay, neuron.refractory_decay) \
        if alif else (neuron.i_decay, neuron.v_decay)
    per_channel = any(d.size > 1 for d in decays)
    if per_channel and (conv or len(shape) != 1):
        raise hub.UnsupportedError("per-channel decays map to slayer only in Dense blocks",
                                   node=neuron_name, field="alpha" if alif else "i_decay")
    if per_channel:
        params["shared_param"] = False
    if alif:
        mean = None if bias is None else _norm_mean(bias[0], bias[1].bias, int(out_shape[0]),
                                                    conv)
    else:
        mean = _norm_mean(neuron_name, neuron.bias, int(out_shape[0]), conv)
    if mean is not None:
        params["norm"] = slayer.neuron.norm.MeanOnlyBatchNorm
    timing = {"delay": axonal is not None, "delay_shift": shift}
    if upsample:  # a ConvT block (an Unpool imports as a grouped one)
        block = family.ConvT(
            params, int(weight.shape[0]), int(weight.shape[1] * synapse.groups),
            tuple(int(k) for k in weight.shape[2:]), stride=tuple(synapse.stride),
            padding=tuple(synapse.padding), dilation=tuple(synapse.dilation),
            groups=synapse.groups, **timing)
        weights = [(block.synapse, weight[..., None])]
    elif conv:
        block = family.Conv(
            params, int(weight.shape[1] * synapse.groups), int(weight.shape[0]),
            tuple(int(k) for k in weight.shape[2:]), stride=tuple(synapse.stride),
            padding=tuple(synapse.padding), dilation=tuple(synapse.dilation),
            groups=synapse.groups, **timing)
        weights = [(block.synapse, weight[..., None])]
    elif recurrent is not None:
        block = family.Recurrent(params, int(weight.shape[1]), int(weight.shape[0]),
                                 **timing)
        rec = _even_mantissas(neuron_name, recurrent.weight)
        weights = [(block.input_synapse, weight[..., None, None, None]),
                   (block.recurrent_synapse, rec[..., None, None, None])]
    else:
        block = family.Dense(params, int(weight.shape[1]), int(weight.shape[0]), **timing)
        weights = [(block.synapse, weight[..., None, None, None])]
    with torch.no_grad():
        for target, value in weights:
            target.weight.copy_(torch.tensor(value / DEFAULT_SCALE, dtype=torch.float32))
    _set_decays(block.neuron, neuron, per_channel, int(out_shape[0]))
    if mean is not None:
        block.neuron.norm.num_features = len(mean)
        block.neuron.norm.running_mean = torch.tensor(mean, dtype=torch.float32)
    if axonal is not None:  # whole steps: slayer's forward truncates them, its export floors
        block.delay.delay.data = torch.tensor(axonal.astype(np.float32))
        block.delay.init = True
    # slayer learns the neuron shape on the first forward; export_hdf5 needs it before that
    block.neuron.shape = torch.Size(out_shape)
    block.neuron.num_neurons = int(np.prod(out_shape))
    return block


def _norm_mean(name: str, value: np.ndarray, count: int, conv: bool) -> np.ndarray | None:
    """The running mean of the ``MeanOnlyBatchNorm`` that gives the neuron its bias."""
    if not np.any(value):
        return None
    if not _integral(np.asarray(value, dtype=np.float64)):
        raise hub.UnsupportedError("slayer's bias (a norm's mean) is an integer mantissa",
                                   node=name, field="bias")
    bias = np.asarray(value, dtype=np.int64)
    if conv and bias.size > 1:
        if bias.ndim != 3 or bias.shape[1:] != (1, 1):
            raise hub.UnsupportedError("a Conv block's bias is one per channel", node=name,
                                       field="bias")
    elif bias.ndim > 1:
        raise hub.UnsupportedError("a Dense block's bias is one per neuron", node=name,
                                   field="bias")
    mantissa = -np.broadcast_to(bias.reshape(-1) if bias.size > 1 else bias, (count,))
    low, high = WEIGHT_RANGE
    if np.any(mantissa % 2) or mantissa.min() < low or mantissa.max() > high:
        raise hub.UnsupportedError(f"slayer's bias is minus an even mantissa in [{low}, {high}] "
                                   "(its norm's quantize_8bit)", node=name, field="bias")
    return mantissa.astype(np.float64) / DEFAULT_SCALE


def _even_mantissas(name: str, value: np.ndarray) -> np.ndarray:
    weight = np.asarray(value, dtype=np.float64)
    low, high = WEIGHT_RANGE
    if not _integral(weight) or np.any(weight % 2) or weight.min() < low or weight.max() > high:
        raise hub.UnsupportedError(
            f"slayer's 8-bit weights are even integer mantissas in [{low}, {high}] (its "
            f"quantize_8bit keeps steps of 2/{DEFAULT_SCALE}); these are "
            f"{weight.min()}..{weight.max()}" + ("" if _integral(weight) else ", not integers"),
            node=name, field="weight")
    return weight
