"""slayer's ``block.sigma_delta`` blocks to canonical nodes and back, in slayer's float32.

The blocks and what they become (``arithmetic="float"``: slayer's own forward, operation by
operation; ``hub/sigma_delta.py`` states each update):

=========================  ===================================================================
block                      nodes
=========================  ===================================================================
``Input`` with a neuron    ``Quantize`` (its ``quantize_8bit`` of the input), ``Scale`` (its
                           quantised ``weight``), ``Bias`` (its quantised ``bias``), ``Delta``
``Input`` without one      nothing (the input passes)
``Dense`` / ``Conv``       ``Linear`` / ``Conv2d`` of the quantised weights, ``SigmaDelta``,
                           and a ``Delay`` for ``delay_shift`` (off by default in this family)
                           and the axonal delays (``delay=True``)
``Pool``                   a depthwise ``Conv2d`` (as ``cuba.Pool``), ``SigmaDelta``, ``Delay``
``ConvT`` / ``Unpool``      ``ConvTranspose2d`` (an Unpool's depthwise, as ``cuba.Unpool``),
                           ``SigmaDelta``, ``Delay``
``Output``                 ``Linear``, ``Sigma`` (a sigma decoder: its forward is
                           ``neuron.sigma(synapse(x))``)
``Flatten``                ``Flatten``
=========================  ===================================================================

The neuron's bias is its ``set_bias`` bias or its ``MeanOnlyBatchNorm`` (``-quantize_8bit(
running_mean)``, eval mode), whichever it has. The weights are ``quantize_8bit(w)`` (even
mantissas of ``1/64``) as the synapse's pre-hook gives them to ``conv3d``; their sums with
the graded inputs are dyadic and exact in float32 while they stay below about ``2**7``, which
is what makes the float graph equal slayer's forward whatever order the sums take.

Refused, naming block and field: an activation other than ReLU (the only one Lava's model and
netx build besides none), ``cum_error=True`` (lava-dl 0.6's forward raises on it: it subtracts
a bool tensor), ``persistent_state``, both a bias and a norm, a neuron ``scale`` other than
``1 << 6`` on export. ``Average`` is every family's one block (:mod:`.slayer_readout`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

import hub
from hub_plugins.lava.slayer_accepts import ACCEPTS, STATE_SCALE
from hub_plugins.lava.slayer_common import (DEFAULT_SCALE, WEIGHT_RANGE, _integral, _slayer,
                                           expect_neuron)

Imported = tuple[list[tuple[str, hub.Node]], list[tuple[str, hub.Node, str]]]
#: The nodes of this family (what marks a graph as a sigma-delta network on export).
NODES = (hub.SigmaDelta, hub.Delta, hub.Sigma, hub.Quantize)


def identity(x: torch.Tensor) -> torch.Tensor:
    """The activation of a sigma-delta neuron without one (Lava's ``ActivationMode.UNIT``)."""
    return x


# -- import ---------------------------------------------------------------------------------


def import_block(block: Any, keep_shift: bool, shape: tuple[int, ...]) -> Imported:
    """The canonical nodes of one ``block.sigma_delta`` block (``shape``: its input's)."""
    from hub_plugins.lava.slayer_import import _block_delay, _pool, _weights

    kind = type(block).__name__
    if kind == "Flatten":
        return [("flatten", hub.Flatten())], []
    if kind not in ("Input", "Dense", "Conv", "Pool", "ConvT", "Unpool", "Output"):
        raise hub.UnsupportedError(f"slayer.block.sigma_delta.{kind} is not mapped (Input, Dense, "
                                   "Conv, Pool, ConvT, Unpool, Output, Flatten and Average are)")
    neuron = block.neuron
    if kind == "Input":
        return (_input(block) if neuron is not None else []), []
    scale = float(neuron.w_scale)
    if kind in ("Pool", "ConvT", "Unpool"):
        from hub_plugins.lava import slayer_upsample

        mantissas = _pool(block, shape) if kind == "Pool" else slayer_upsample.synapse(block, shape)
        synapse: hub.Node = mantissas.replace(weight=np.asarray(mantissas.weight) / scale)
    else:
        weight = _weights(block.synapse, block) / np.float32(scale)
        if kind == "Conv":
            s = block.synapse
            if s.kernel_size[2] != 1 or s.stride[2] != 1 or s.padding[2] != 0:
                raise hub.UnsupportedError("a convolution over time is not mapped",
                                           field="synapse")
            synapse = hub.Conv2d(weight=weight[..., 0], stride=s.stride[:2], padding=s.padding[:2],
                                 dilation=s.dilation[:2], groups=s.groups)
        else:
            synapse = hub.Linear(weight=weight.reshape(weight.shape[:2]))
    nodes: list[tuple[str, hub.Node]] = [("synapse", synapse)]
    try:
        _common_checks(neuron)
        if kind == "Output":
            nodes.append(("neuron", hub.Sigma()))
            return nodes, []
        conv = kind in ("Conv", "Pool", "ConvT", "Unpool")
        nodes.append(("neuron", hub.SigmaDelta(
            threshold=_threshold(neuron, conv), bias=_bias(neuron, conv),
            activation=_activation(neuron), resolution=1.0 / float(neuron.delta.scale))))
    except hub.HubError as e:
        raise e.at(node="neuron") from None
    delay = _block_delay(block, keep_shift, conv=len(shape) == 3 or kind in (
        "Conv", "Pool", "ConvT", "Unpool"))
    if delay is not None:
        nodes.append(("delay", delay))
    return nodes, []


def _common_checks(neuron: Any) -> None:
    expect_neuron(neuron, "sigma_delta", "sigma-delta")
    if neuron.persistent_state:
        raise hub.UnsupportedError("persistent_state carries the sigma and delta states from one "
                                   "forward call to the next; the hub's model starts each run at "
                                   "rest", field="persistent_state")
    if neuron.delta.cum_error:
        raise hub.UnsupportedError("cum_error=True: lava-dl 0.6's Delta forward fails with it "
                                   "(it subtracts a bool tensor), so there is no output to match",
                                   field="cum_error")
    if neuron.drop is not None and not isinstance(neuron.drop, torch.nn.Dropout):
        raise hub.UnsupportedError(f"a {type(neuron.drop).__name__} dropout is not mapped (a "
                                   "torch Dropout, the identity in eval mode, is)", field="dropout")


def _threshold(neuron: Any, conv: bool) -> np.ndarray:
    """The delta threshold slayer's forward compares with: its parameter clamped to at least
    ``1 / s_scale`` (``Delta.clamp``, which the forward applies first)."""
    value = neuron.delta.threshold.detach().cpu().to(torch.float32)
    value = torch.clamp(value, min=1 / neuron.delta.scale).numpy()
    if value.size == 1:
        return value.reshape(())
    return value.reshape(-1, 1, 1) if conv else value.reshape(-1)


def _activation(neuron: Any) -> str:
    act = neuron.activation
    if act in (torch.nn.functional.relu, torch.relu) or isinstance(act, torch.nn.ReLU):
        return "relu"
    if act is identity:
        return "identity"
    raise hub.UnsupportedError(f"activation {getattr(act, '__name__', type(act).__name__)!r}: "
                               "Lava's sigma-delta model (and netx) compute ReLU or none; pass "
                               "torch.nn.functional.relu", field="activation")


def _bias(neuron: Any, conv: bool) -> np.ndarray:
    """``set_bias``'s bias or the norm's ``-quantize_8bit(running_mean)``: each is one float32
    addition to ``sigma`` before the activation, as :class:`hub.SigmaDelta` adds ``bias``."""
    norm = neuron.norm
    if norm is not None and neuron.bias_is_set:
        raise hub.UnsupportedError("both set_bias and a norm: slayer adds them one after the "
                                   "other, which one SigmaDelta bias does not round the same",
                                   field="norm")
    if norm is not None:
        if type(norm).__name__ != "MeanOnlyBatchNorm":
            raise hub.UnsupportedError(f"a {type(norm).__name__} norm is not mapped (slayer's "
                                       "MeanOnlyBatchNorm, a bias, is)", field="norm")
        with torch.no_grad():
            mean = norm.pre_hook_fx(norm.running_mean.detach().cpu()).to(torch.float32).numpy()
        bias = -mean.reshape(-1)
        if bias.size == 1:
            return bias.reshape(())
        return bias.reshape(-1, 1, 1) if conv else bias
    if not neuron.bias_is_set:
        return np.zeros((), np.float32)
    bias = neuron.bias.detach().cpu().to(torch.float32).numpy()
    return bias.reshape(()) if bias.size == 1 else bias


def _input(block: Any) -> list[tuple[str, hub.Node]]:
    """A sigma-delta ``Input`` block: ``delta(q(x) * q(weight) + q(bias))``, ``q`` its
    ``quantize_8bit``; its forward runs neither ``delay_shift`` nor its axonal delay."""
    neuron = block.neuron
    try:
        _common_checks(neuron)
    except hub.HubError as e:
        raise e.at(node="neuron") from None
    w_scale = float(neuron.w_scale)
    low, high = WEIGHT_RANGE
    nodes: list[tuple[str, hub.Node]] = [
        ("quantize", hub.Quantize(grid=2 / w_scale, low=low / w_scale, high=high / w_scale))]
    for attr, make in (("weight", lambda v: hub.Scale(scale=v)),
                       ("bias", lambda v: hub.Bias(bias=v))):
        value = getattr(block, attr)
        if value is None:
            continue
        q = neuron.quantize_8bit(value.detach().cpu()).reshape(-1)
        if q.numel() != 1:
            raise hub.UnsupportedError("one value per block is mapped", field=attr)
        nodes.append((attr, make(np.float32(q[0].item()))))
    nodes.append(("neuron", hub.Delta(threshold=_threshold(neuron, conv=False),
                                      resolution=1.0 / float(neuron.delta.scale))))
    return nodes


# -- export ---------------------------------------------------------------------------------


def is_sigma_delta(chain: list[tuple[str, hub.Node]]) -> bool:
    return any(isinstance(node, NODES) for _, node in chain)


def export_chain(chain: list[tuple[str, hub.Node]], plan: dict[str, tuple[int, ...]]
                 ) -> tuple[list[Any], int, tuple[int, ...]]:
    """The ``block.sigma_delta`` blocks of a chain's float sigma-delta front, the index of the
    first node after it and that node's input shape. The front ends at a synapse whose neuron
    is not a sigma-delta one (a block of another family, which the caller exports: lava-dl's
    overview network feeds its sigma-delta front into resonator, alif and cuba blocks)."""
    from hub_plugins.lava.slayer_export import _export_timing

    sd = _slayer().block.sigma_delta
    for name, node in chain:
        if isinstance(node, (hub.SigmaDelta, hub.Delta, hub.Sigma)):
            _float(name, node)
    blocks: list[Any] = []
    shape = tuple(chain[0][1].shape)
    i = 1
    while i < len(chain):
        name, node = chain[i]
        if isinstance(node, hub.Output):
            break
        if isinstance(node, hub.Flatten):
            if len(shape) < 2 or node._span(shape) != (0, len(shape) - 1):
                raise hub.UnsupportedError("slayer's Flatten merges every axis of [C, H, W]",
                                           node=name, field="start_dim")
            flatten = sd.Flatten()
            flatten.shape = [int(np.prod(shape)), 1, 1]
            blocks.append(flatten)
            shape = plan[name]
            i += 1
            continue
        if i == 1 and isinstance(node, (hub.Quantize, hub.Delta)):
            block, i = _export_input(chain, i)
            blocks.append(block)
            shape = plan[chain[i - 1][0]]
            continue
        nxt = chain[i + 1] if i + 1 < len(chain) else (None, None)
        synapses = (hub.Linear, hub.Conv2d, hub.ConvTranspose2d)
        if blocks and (isinstance(node, hub.Vote) or isinstance(node, synapses) and
                       not isinstance(nxt[1], NODES)):
            return blocks, i, shape  # an Average or another family's block: the caller's
        if not isinstance(node, synapses) or not isinstance(nxt[1], (hub.SigmaDelta, hub.Sigma)):
            raise hub.UnsupportedError(
                "slayer's sigma-delta blocks are a synapse (Linear, Conv2d or ConvTranspose2d) "
                f"followed by a SigmaDelta or Sigma; found {type(node).__name__} followed by "
                f"{type(nxt[1]).__name__}", node=name)
        neuron_name, neuron = nxt
        out_shape = plan[neuron_name]
        after = chain[i + 2] if i + 2 < len(chain) else (None, None)
        delay = after if isinstance(after[1], hub.Delay) else None
        conv = isinstance(node, (hub.Conv2d, hub.ConvTranspose2d))
        weight = _weight(name, node)
        if isinstance(neuron, hub.Sigma):
            if conv or delay:
                raise hub.UnsupportedError("slayer's sigma-delta Output block is a dense synapse "
                                           "and a sigma decoder, without delays", node=neuron_name)
            _float(neuron_name, neuron)
            block = sd.Output({"threshold": 1 / DEFAULT_SCALE, "activation": identity},
                              int(weight.shape[1]), int(weight.shape[0]))
        else:
            params = _neuron_params(neuron_name, neuron)
            shift, axonal = _export_timing(neuron_name, neuron, delay, conv, int(out_shape[0]))
            timing = {"delay": axonal is not None, "delay_shift": shift}
            mean = _norm_mean(neuron.bias, int(out_shape[0]), conv)
            if mean is not None:
                params["norm"] = _slayer().neuron.norm.MeanOnlyBatchNorm
            if isinstance(node, hub.ConvTranspose2d):
                if any(node.output_padding):
                    raise hub.UnsupportedError("slayer's ConvT block has no output_padding",
                                               node=name, field="output_padding")
                block = sd.ConvT(params, int(weight.shape[0]), int(weight.shape[1] * node.groups),
                                 tuple(int(k) for k in weight.shape[2:]),
                                 stride=tuple(node.stride), padding=tuple(node.padding),
                                 dilation=tuple(node.dilation), groups=node.groups, **timing)
            elif conv:
                block = sd.Conv(params, int(weight.shape[1] * node.groups), int(weight.shape[0]),
                                tuple(int(k) for k in weight.shape[2:]), stride=tuple(node.stride),
                                padding=tuple(node.padding), dilation=tuple(node.dilation),
                                groups=node.groups, **timing)
            else:
                block = sd.Dense(params, int(weight.shape[1]), int(weight.shape[0]), **timing)
            if mean is not None:
                block.neuron.norm.num_features = len(mean)
                block.neuron.norm.running_mean = torch.tensor(mean, dtype=torch.float32)
            elif np.any(neuron.bias != 0):
                bias = np.broadcast_to(neuron.bias, out_shape).astype(np.float32)
                block.neuron.set_bias(torch.tensor(bias))
            if axonal is not None:
                block.delay.delay.data = torch.tensor(axonal.astype(np.float32))
                block.delay.init = True
        value = weight[..., None] if conv else weight[..., None, None, None]
        with torch.no_grad():
            block.synapse.weight.copy_(torch.tensor(value / DEFAULT_SCALE, dtype=torch.float32))
        block.neuron.shape = torch.Size(out_shape)
        blocks.append(block)
        shape = out_shape
        i += 3 if delay else 2
    return blocks, i, shape


def _float(name: str, node: hub.Node) -> None:
    ACCEPTS.check(node, name)


def _check_delta(name: str, node: hub.Node) -> float:
    """The slayer threshold parameter for a Delta/SigmaDelta's ``threshold`` (its fields
    checked against :data:`~hub_plugins.lava.slayer_accepts.ACCEPTS`)."""
    _float(name, node)
    value = float(np.asarray(node.threshold, dtype=np.float64).reshape(-1)[0])
    if value == 1 / STATE_SCALE:
        return 0.0  # slayer's forward clamps a threshold of 0 to 1 / s_scale
    return value


def _neuron_params(name: str, node: hub.SigmaDelta) -> dict[str, Any]:
    threshold = _check_delta(name, node)
    activation = torch.nn.functional.relu if node.activation == "relu" else identity
    return {"threshold": threshold, "activation": activation}


def _norm_mean(bias: np.ndarray, count: int, conv: bool) -> np.ndarray | None:
    """A norm's running mean that gives ``bias`` exactly (-q(mean) on the 8-bit grid), or None
    (then ``set_bias`` holds it)."""
    value = np.asarray(bias, dtype=np.float64)
    if not np.any(value):
        return None
    if conv and value.size > 1 and (value.ndim != 3 or value.shape[1:] != (1, 1)):
        return None
    if not conv and value.ndim > 1:
        return None
    mantissa = -np.broadcast_to(value.reshape(-1) if value.size > 1 else value, (count,)) * \
        DEFAULT_SCALE
    low, high = WEIGHT_RANGE
    if not _integral(mantissa) or np.any(mantissa % 2) or mantissa.min() < low or \
            mantissa.max() > high:
        return None
    return mantissa / DEFAULT_SCALE


def _weight(name: str, node: hub.Node) -> np.ndarray:
    from hub_plugins.lava.slayer_export import _even_mantissas

    if isinstance(node, (hub.Conv2d, hub.ConvTranspose2d)) and np.any(node.bias != 0):
        raise hub.UnsupportedError("slayer's synapses have no bias (give the neuron one)",
                                   node=name, field="bias")
    return _even_mantissas(name, np.asarray(node.weight, dtype=np.float64) * DEFAULT_SCALE)


def _export_input(chain: list[tuple[str, hub.Node]], i: int) -> tuple[Any, int]:
    """A sigma-delta Input block from ``Quantize -> [Scale] -> [Bias] -> Delta``."""
    name, node = chain[i]
    low, high = WEIGHT_RANGE
    want = hub.Quantize(grid=2 / DEFAULT_SCALE, low=low / DEFAULT_SCALE,
                        high=high / DEFAULT_SCALE)
    if node != want:
        raise hub.UnsupportedError("slayer's sigma-delta Input block quantises its input with "
                                   f"quantize_8bit ({want!r}); this graph's delta encoder "
                                   "input is not that", node=name, field="grid")
    i += 1
    values: dict[str, float | None] = {"weight": None, "bias": None}
    for attr, kind in (("weight", hub.Scale), ("bias", hub.Bias)):
        name, node = chain[i]
        if isinstance(node, kind):
            value = np.asarray(getattr(node, "scale" if attr == "weight" else "bias"),
                               np.float64).reshape(-1)
            mant = value * DEFAULT_SCALE
            if value.size != 1 or mant[0] != round(mant[0]) or mant[0] % 2 or not \
                    low <= mant[0] <= high:
                raise hub.UnsupportedError(f"slayer's Input block takes one {attr}, an even "
                                           f"mantissa in [{low}, {high}] of 1/{DEFAULT_SCALE}",
                                           node=name, field="scale" if attr == "weight" else attr)
            values[attr] = float(value[0])
            i += 1
    name, node = chain[i]
    if not isinstance(node, hub.Delta):
        raise hub.UnsupportedError("slayer's sigma-delta Input block ends in a Delta encoder; "
                                   f"found {type(node).__name__}", node=name)
    params = {"threshold": _check_delta(name, node), "activation": torch.nn.functional.relu}
    block = _slayer().block.sigma_delta.Input(params, weight=values["weight"],
                                              bias=values["bias"])
    return block, i + 1
