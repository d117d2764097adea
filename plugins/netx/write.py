"""Writing canonical graphs as netx layers: the checks against what netx runs, and the layout."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import h5py
import numpy as np
import torch

import hub
from hub.errors import UnsupportedError
from hub.loihi import DECAY_UNITY, LoihiCUBA
from hub_plugins.netx import resonators, sigma_delta
from hub_plugins.netx.accepts import ACCEPTS, one_value
from hub_plugins.netx.schema import ATTR_BIAS, ATTR_FOLDED, ATTR_NEURON, ATTR_OP, MAX_DELAY


@dataclasses.dataclass
class Layer:
    """One netx layer to write: its type, its datasets and its hub attributes."""

    kind: str
    data: dict[str, Any]
    neuron: LoihiCUBA | None = None
    attrs: dict[str, str] = dataclasses.field(default_factory=dict)
    #: a dense layer's delays per input and per output neuron, which its 'delay' key holds
    input_delays: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)
    output_delays: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)


def _write_layer(group: h5py.Group, layer: Layer) -> None:
    group.create_dataset("type", (1,), "S10", [layer.kind.encode("ascii")])
    for key, value in layer.data.items():
        group.create_dataset(key, data=value)
    for key, value in layer.attrs.items():
        group.attrs[key] = value
    if isinstance(layer.neuron, sigma_delta.NODES):
        sigma_delta.write_neuron(group, layer.neuron)
    elif layer.neuron is not None:
        n = layer.neuron
        group.create_dataset("neuron/type", data="CUBA")
        group.create_dataset("neuron/iDecay", data=np.int64(n.i_decay.reshape(-1)[0]))
        group.create_dataset("neuron/vDecay", data=np.int64(n.v_decay.reshape(-1)[0]))
        group.create_dataset("neuron/vThMant", data=np.int64(n.threshold.reshape(-1)[0]))
        group.create_dataset("neuron/refDelay", data=np.int64(1))
        group.create_dataset("neuron/gradedSpike", data=np.bool_(False))


def netx_weights_exact(weight: np.ndarray) -> str | None:
    """Why netx would change these integer dense weights, or ``None`` if it delivers them exactly.

    Replays, in integers, what ``netx.utils.optimize_weight_bits`` and Lava's dense model
    (``clip_weights``, ``truncate_weights``, then the accumulation shifted right by
    ``-weight_exp``) do with a weight matrix: the synapse delivers ``sum(w)`` exactly when the
    scaled weights survive clipping and truncation.
    """
    w = np.asarray(weight, dtype=np.int64)
    hi, lo = int(w.max()), int(w.min())
    if hi == lo == 0:
        return "an all-zero weight matrix makes netx's optimize_weight_bits fail (log2 of inf)"
    if hi > 254 or lo < -256:
        return f"weights from {lo} to {hi} exceed Loihi's 8-bit mantissa range -256..254"
    if hi < 0:
        mode, signed, scale = "inhibitory", 0, -256 / lo
    elif lo >= 0:
        mode, signed, scale = "excitatory", 0, 255 / hi
    else:
        mode, signed, scale = "mixed", 1, min(127 / hi if hi else np.inf, -128 / lo)
    scale_bits = int(np.floor(np.log2(scale))) + signed
    n = 8
    while n > 0 and (w % (1 << n)).any():
        n -= 1
    n -= signed
    num_bits = 8 - scale_bits - n
    scaled = w << scale_bits
    # lava.utils.weightutils.clip_weights, then truncate_weights, with Lava's sign mode
    lava_mode = "excitatory" if lo >= 0 else "inhibitory" if hi <= 0 else "mixed"
    v = -scaled if lava_mode == "inhibitory" else scaled
    v = np.clip(v, -256 if lava_mode == "mixed" else 0, 255)
    drop = 8 - num_bits + (1 if lava_mode == "mixed" else 0)
    v = (v >> drop) << drop if drop >= 0 else v
    v = -v if lava_mode == "inhibitory" else v
    if not np.array_equal(v, scaled):
        bad = int((v != scaled).sum())
        return (f"netx's 8-bit weight optimisation ({mode} sign mode) would change {bad} of "
                f"{w.size} weights")
    return None


def _integral(node_name: str, field: str, value: np.ndarray) -> np.ndarray:
    if not np.array_equal(value, np.round(value)):
        raise UnsupportedError("Loihi weights are integers; this layer has fractional ones "
                               "(write with quantize=True, or hub_plugins.netx.quantize)",
                               node=node_name, field=field)
    return value


def exact_loihi(name: str, node: hub.Node) -> LoihiCUBA:
    """The LoihiCUBA that computes exactly what integrate-and-fire ``node`` computes on integer
    inputs, or UnsupportedError naming the field that prevents it.

    An ``IF`` that netx takes (:data:`~hub_plugins.netx.accepts.ACCEPTS`: gain 1, reset to zero
    at 0 in the same step, binary unit spikes) with ``>``, no delay and an integer threshold is
    Loihi's neuron with ``i_decay = 4096`` (the current is this step's input) and
    ``v_decay = 0``: ``v_loihi = 64 * v`` while ``|v| < 2**17``, and ``v_loihi > th << 6``
    exactly when ``v > th``. Loihi's inputs are integers, so the equality holds wherever netx runs.
    """
    if not isinstance(node, hub.IF):
        raise UnsupportedError(f"{node.type} is not integrate-and-fire", node=name, field="type")
    ACCEPTS.check(node, name)  # what every float neuron netx takes must have
    # what the exact mapping needs beyond that (quantize=True approximates these instead)
    checks = [
        ("comparison", node.comparison == ">", "Loihi spikes where v > threshold"),
        ("delay", not node.delay, "an IF's delay is not written (make it a hub.LoihiCUBA with "
                                  "that delay: netx writes it into the next layer)"),
    ]
    for field, ok, why in checks:
        if not ok:
            raise UnsupportedError(f"{why}; this IF differs (write with quantize=True for an "
                                   "approximation)", node=name, field=field)
    one_value(node, name, "threshold", "Loihi's threshold is one mantissa per layer")
    th = node.threshold.reshape(-1)
    if th[0] != round(float(th[0])) or not 0 <= th[0] < 1 << 17:
        raise UnsupportedError("Loihi's threshold is one integer mantissa per layer, 0 to "
                               "2**17 - 1", node=name, field="threshold")
    return LoihiCUBA(i_decay=DECAY_UNITY, v_decay=0, threshold=int(th[0]))


def _check_neuron(name: str, node: hub.Node) -> LoihiCUBA:
    if isinstance(node, sigma_delta.NODES):
        return sigma_delta.check_neuron(name, node)
    if isinstance(node, hub.ALIF):
        raise UnsupportedError("netx 0.6 builds no adaptive-threshold neuron: its hdf5 reader "
                               "knows CUBA, sigma-delta and RF neurons only (a layer of type "
                               "'ALIF', as slayer's alif blocks export, gets no neuron), so an "
                               "ALIF cannot be written for Lava", node=name, field="type")
    if not isinstance(node, LoihiCUBA):
        if isinstance(node, hub.Neuron):
            raise UnsupportedError(f"netx runs Loihi's fixed-point CUBA neurons; {node.type} has "
                                   "float decays that Loihi's 12-bit ones do not reproduce "
                                   "(write with quantize=True, or convert it with "
                                   "hub_plugins.netx.quantize)", node=name, field="type")
        raise UnsupportedError(f"netx layers end in a LoihiCUBA neuron; {node.type} cannot "
                               "stand here", node=name, field="type")
    # declared in ACCEPTS (legalisation refuses these first); checked again for graphs that
    # reach the layout directly and for what quantize made
    ACCEPTS.check(node, name)
    return node


def _chain(graph: hub.Graph) -> tuple[list[tuple[str, hub.Node]], dict[str, tuple[str, hub.Node]]]:
    """The flat graph as a chain from its input, and each neuron's recurrent Linear, if any."""
    chain = graph.as_chain(loops=hub.Linear, what="netx")
    flat = dict(chain.nodes)
    for owner, (name, _) in chain.loops.items():
        if not isinstance(flat[owner], LoihiCUBA):
            raise UnsupportedError(f"netx holds a recurrent weight (dense_rec) on a CUBA layer "
                                   f"only, not on a {flat[owner].type}", node=name)
    return ([(n, node) for n, node in chain.nodes if not isinstance(node, (hub.Output, hub.Add))],
            dict(chain.loops))


def plan_layers(graph: hub.Graph) -> list[Layer]:
    """The netx layers that express ``graph`` exactly; raises UnsupportedError naming the node."""
    chain, rec = _chain(graph)
    shapes = graph.flat().plan().output_shapes
    first_name, first = chain[0]
    layers = [Layer("input", {"shape": np.array(first.shape, dtype=np.int64)})]
    ops: list[tuple[str, hub.Node]] = []
    shape = tuple(first.shape)
    # the previous neuron's output delay, if any: one value, or one per element of its output
    delayed: tuple[str, int | np.ndarray] | None = None
    for name, node in chain[1:]:
        if isinstance(node, (hub.Linear, hub.Affine, hub.Conv2d, hub.SumPool2d, hub.Flatten)):
            ops.append((name, node))
            continue
        # the network's input (no input neuron) is delayed as a neuron's output is
        at_input = not ops and len(layers) == 1 and layers[0].neuron is None
        after_neuron = not ops and not at_input
        if isinstance(node, hub.Delay) and (after_neuron or at_input):
            uneven = node.delay.size > 1 and not (node.delay == node.delay.reshape(-1)[0]).all()
            if uneven and after_neuron and _output_delays_fit(layers[-1], shapes[name]):
                # per neuron after a plain dense layer: its own per-output delays, as slayer's
                # delay=True writes them
                _write_output_delays(layers[-1], name, node)
                continue
            if uneven:  # per neuron: the input delays of the dense layer the spikes reach
                step: int | np.ndarray = np.broadcast_to(node.delay, shapes[name]).astype(np.int64)
            else:  # a uniform delay right after a neuron is that neuron's axonal delay
                step = _uniform(name, node, "for the network's input" if at_input else "per layer")
            total = (delayed[1] if delayed else 0) + step
            if np.max(total) > MAX_DELAY:
                raise UnsupportedError(f"netx's synaptic delays are 0 to {MAX_DELAY} steps (it "
                                       "clips larger ones)", node=name, field="delay")
            delayed = (name, total) if np.any(total) else None
            continue
        if isinstance(node, hub.Resonator):
            layers += _resonator_layer(ops, name, node, rec.get(name), delayed, shape, shapes)
            delayed, ops, shape = None, [], shapes[name]
            continue
        original = node if isinstance(node, hub.IF) else None
        neuron = _check_neuron(name, exact_loihi(name, node) if original else node)
        if not ops and len(layers) == 1 and layers[0].neuron is None:
            # netx's input layer with a neuron: the network's input drives it directly
            if delayed is not None:
                raise UnsupportedError("netx's input layer has no synapse to delay the input "
                                       "its neuron takes; delay the neuron's output instead",
                                       node=delayed[0], field="delay")
            if np.any(getattr(neuron, "bias", 0)):
                raise UnsupportedError("netx builds the input layer's neuron without a bias",
                                       node=name, field="bias")
            if isinstance(neuron, (hub.SigmaDelta, hub.Sigma)):
                raise UnsupportedError("netx builds an input layer's sigma-delta neuron as a "
                                       "Delta encoder (no sigma, no activation)", node=name,
                                       field="type")
            layers[0].neuron = neuron
            delayed = (name, neuron.delay) if getattr(neuron, "delay", 0) else None
            shape = shapes[name]
            continue
        if not ops:
            raise UnsupportedError("a netx layer needs a synapse (dense or conv) before its "
                                   "neuron", node=name)
        layers += _layer(ops, name, neuron, rec.get(name), shape, shapes)
        if original is not None:
            layers[-1].attrs[ATTR_NEURON] = json.dumps(original.to_dict())
        if delayed is not None:
            _write_delay(layers[-1], *delayed)
        delayed = (name, neuron.delay) if getattr(neuron, "delay", 0) else None
        ops, shape = [], shapes[name]
    if ops:
        raise UnsupportedError("a netx network ends in a neuron layer; these nodes follow the "
                               "last neuron", node=ops[0][0])
    if delayed is not None:
        raise UnsupportedError("netx delays spikes in the synapses of the layer they reach (a "
                               "dense layer's 'delay' key); the last neuron layer feeds the "
                               "network's output, which has none: delay the output yourself "
                               "(a slayer network's delay_shift is such a latency: Lava's "
                               "pipeline adds it by itself, so load the network with "
                               "delay_shift=False to write the network netx runs)",
                               node=delayed[0], field="delay")
    return layers


def _output_delays_fit(layer: Layer, shape: tuple[int, ...]) -> bool:
    """Whether per-neuron delays after ``layer``'s neuron can be its own per-output delays: a
    plain dense layer without a bias (Lava delays the input, which is the output delayed only
    while nothing else drives the neuron) and netx's RF layers' ComplexDense reads no delay."""
    return (layer.kind == "dense" and "weight/real" not in layer.data and "bias" not in layer.data
            and len(shape) == 1)


def _write_output_delays(layer: Layer, name: str, node: hub.Delay) -> None:
    """Per-neuron delays after a dense layer's neuron as that layer's per-output delays (as
    slayer's ``export_hdf5`` writes ``delay=True``)."""
    values = np.broadcast_to(node.delay, (int(layer.data["outFeatures"]),)).astype(np.int64)
    held = layer.output_delays
    layer.output_delays = values if held is None else held + values
    _set_delay_key(layer, name)


def _set_delay_key(layer: Layer, name: str) -> None:
    """The ``delay`` key of a dense layer's input and output delays (``read._delays``): a vector
    of ``out`` delays where its inputs are delayed alike (netx reads such a vector per output
    first), of ``in`` delays without output delays (the ``[out, in]`` matrix of equal rows where
    ``in == out``), else the matrix of their sums."""
    inputs, out = int(layer.data["inFeatures"]), int(layer.data["outFeatures"])
    into, per_output = layer.input_delays, layer.output_delays
    if per_output is None:
        key = (np.repeat(into.reshape(1, -1), out, axis=0)
               if out == inputs and not (into == into[0]).all() else into)
    elif into is None or (into == into[0]).all():
        key = per_output + (0 if into is None else into[0])
    else:
        key = into[None, :] + per_output[:, None]
    if key.size and key.max() > MAX_DELAY:
        raise UnsupportedError(f"with the layer's other delays, netx's synaptic delays are 0 to "
                               f"{MAX_DELAY} steps (it clips larger ones)", node=name,
                               field="delay")
    layer.data["delay"] = key.astype(np.float32)


def _uniform(name: str, node: hub.Delay, what: str = "per layer") -> int:
    one_value(node, name, "delay", f"netx writes one axonal delay {what} (the next dense "
              "layer's 'delay' key)")
    return int(node.delay.reshape(-1)[0])


def _check_bias_before_delay(graph: hub.Graph) -> None:
    """Refuse an axonal delay at or after a layer with a bias.

    Lava integrates a bias from its first step, before the sample's input reaches the layer;
    the run resets each layer when the sample arrives, which hides that transient, but spikes it
    caused that are still travelling through a delay arrive after the next layer's reset and
    change its output. Without a bias upstream nothing spikes before the sample arrives."""
    biased = None
    for name, node in graph.walk():
        if isinstance(node, hub.Delay) and node.delay.any() and biased:
            node = LoihiCUBA(i_decay=0, v_decay=0, threshold=0, delay=1)  # as a delayed neuron
        if not isinstance(node, LoihiCUBA):
            continue
        if node.bias.any():
            biased = biased or name
        if node.delay and biased:
            raise UnsupportedError(
                f"an axonal delay at or after the biased layer {biased!r}: Lava integrates the "
                "bias before the sample reaches the layer, and the delay carries the spikes that "
                "causes into the sample; drop the bias or the delay", node=name, field="delay")


def _write_delay(layer: Layer, name: str, delay: int | np.ndarray) -> None:
    """Neuron ``name``'s axonal delay (one value, or one per element of its output) as the
    input delays of the dense layer it feeds: the ``delay`` key, one value per input, float32
    as slayer's ``export_hdf5`` writes it (see ``read._delays`` for why this is exact)."""
    if layer.kind != "dense":
        why = ("netx 0.6's create_conv does not read a 'delay' key" if layer.kind == "conv" else
               "netx 0.6's RecurrentDense gives its recurrent synapse the forward delays and no "
               "weight exponent")
        raise UnsupportedError(f"this neuron feeds a {layer.kind} layer, and {why}; netx delays "
                               "spikes only in a dense layer's synapses", node=name,
                               field="delay")
    inputs = int(layer.data["inFeatures"])
    layer.input_delays = np.broadcast_to(np.asarray(delay, np.int64).reshape(-1),
                                         (inputs,)).copy()
    _set_delay_key(layer, name)


def _bias_into_neuron(op_name: str, bias: np.ndarray, name: str, neuron: LoihiCUBA) -> None:
    """An Affine's bias reaches the neuron as ``bias << 6`` only if the current forgets itself."""
    if not bias.any():
        return
    if not isinstance(neuron, LoihiCUBA):
        raise UnsupportedError(f"a synapse bias feeds a {neuron.type}'s sum every step; netx "
                               "adds a layer's bias to its neuron: give the neuron the bias",
                               node=op_name, field="bias")
    if (neuron.i_decay != DECAY_UNITY).any():
        raise UnsupportedError("a synapse bias adds to Loihi's current, which decays; netx adds "
                               "a layer's bias to the voltage, which is the same only with "
                               f"i_decay={DECAY_UNITY}", node=op_name, field="bias")
    if neuron.bias.any():
        raise UnsupportedError("both the synapse and the neuron have a bias; give the neuron "
                               "one", node=op_name, field="bias")
    _integral(op_name, "bias", bias)


def _neuron_bias(neuron: LoihiCUBA, shape: tuple[int, ...]) -> np.ndarray | None:
    if not np.any(getattr(neuron, "bias", 0)):
        return None
    full = np.broadcast_to(neuron.bias, shape)
    if len(shape) == 3:  # netx broadcasts a conv layer's bias per channel
        per_channel = full[:, :1, :1]
        if not (full == per_channel).all():
            raise UnsupportedError("netx takes a conv layer's bias per channel; this one varies "
                                   "over positions", field="bias")
        return per_channel.reshape(-1).astype(np.int64)
    return full.reshape(-1).astype(np.int64)


def _layer(ops: list[tuple[str, hub.Node]], name: str, neuron: LoihiCUBA,
           rec: tuple[str, hub.Node] | None, in_shape: tuple[int, ...],
           shapes: dict[str, tuple[int, ...]]) -> list[Layer]:
    out_shape = tuple(shapes[name])
    out: list[Layer] = []
    kinds = [type(n) for _, n in ops]
    attrs: dict[str, str] = {}
    bias = _neuron_bias(neuron, out_shape)
    if kinds and kinds[0] is hub.Flatten and len(in_shape) > 1 and len(ops) > 1:
        flat = ops[0][1]
        if (flat.start_dim, flat.end_dim) not in ((0, -1), (0, len(in_shape) - 1)):
            raise UnsupportedError("netx flattens whole samples only", node=ops[0][0],
                                   field="start_dim")
        out.append(Layer("flatten", {"shape": np.array([int(np.prod(in_shape)), 1, 1])}))
        ops, kinds = ops[1:], kinds[1:]
    if rec is not None and kinds not in ([hub.Linear], [hub.Affine]):
        raise UnsupportedError("netx's recurrent layer (dense_rec) is a dense layer with its own "
                               "recurrence", node=rec[0])
    if kinds in ([hub.Linear], [hub.Affine]):
        op_name, op = ops[0]
        weight = _integral(op_name, "weight", np.asarray(op.weight))
        why = netx_weights_exact(np.hstack([weight, rec[1].weight]) if rec else weight)
        if why:
            raise UnsupportedError(why, node=op_name, field="weight")
        if isinstance(op, hub.Affine) and np.any(getattr(neuron, "bias", 0)):
            raise UnsupportedError("both the synapse (Affine) and the neuron hold a bias; netx "
                                   "has one: use a Linear synapse", node=op_name, field="bias")
        if isinstance(op, hub.Affine) and op.bias.any():
            _bias_into_neuron(op_name, op.bias, name, neuron)
        if isinstance(op, hub.Affine):
            bias = np.broadcast_to(op.bias, (weight.shape[0],)).astype(np.int64)
            attrs[ATTR_BIAS] = "affine"
        data = {"shape": np.array(out_shape, dtype=np.int64),
                "inFeatures": np.int64(weight.shape[1]),
                "outFeatures": np.int64(weight.shape[0]),
                "weight": weight.astype(np.float32)}
        if rec is not None:
            data["weight_rec"] = _integral(rec[0], "weight", rec[1].weight).astype(np.float32)
        if bias is not None:
            data["bias"] = bias
        out.append(Layer("dense_rec" if rec else "dense", data, neuron, attrs))
        return out
    if kinds == [hub.Conv2d] or kinds == [hub.SumPool2d]:
        op_name, op = ops[0]
        channels = in_shape[0]
        if isinstance(op, hub.SumPool2d):
            weight = np.ones((channels, 1, *op.kernel_size), dtype=np.float32)
            groups, dilation = channels, (1, 1)
            attrs[ATTR_OP] = "SumPool2d"
        else:
            weight = _integral(op_name, "weight", np.asarray(op.weight))
            groups, dilation = op.groups, op.dilation
            if np.abs(weight).max() > 255:
                raise UnsupportedError("Loihi conv weights are 8-bit (magnitude at most 255)",
                                       node=op_name, field="weight")
            if op.bias.any():
                _bias_into_neuron(op_name, op.bias, name, neuron)
                bias = np.broadcast_to(op.bias, (weight.shape[0],)).astype(np.int64)
                attrs[ATTR_BIAS] = "affine"
        data = {"shape": np.array(out_shape, dtype=np.int64),
                "inChannels": np.int64(channels), "outChannels": np.int64(weight.shape[0]),
                "kernelSize": np.array(weight.shape[2:], dtype=np.int64),
                "stride": np.array(op.stride, dtype=np.int64),
                "padding": np.array(op.padding, dtype=np.int64),
                "dilation": np.array(dilation, dtype=np.int64),
                "groups": np.int64(groups), "weight": weight.astype(np.float32)}
        if bias is not None:
            data["bias"] = bias
        out.append(Layer("conv", data, neuron, attrs))
        return out
    # a stack of linear operations ending in a dense layer: fold it into one weight matrix
    if kinds and kinds[-1] in (hub.Linear, hub.Affine) and all(
            k in (hub.SumPool2d, hub.Flatten, hub.Conv2d, hub.Linear) for k in kinds[:-1]):
        weight = _fold(ops, in_shape)
        last_name, last = ops[-1]
        if isinstance(last, hub.Affine) and last.bias.any():
            raise UnsupportedError("a bias after folded pooling is not written", node=last_name,
                                   field="bias")
        why = netx_weights_exact(weight)
        if why:
            raise UnsupportedError(f"folded into one dense layer, {why}", node=last_name,
                                   field="weight")
        if len(in_shape) > 1:
            out.append(Layer("flatten", {"shape": np.array([int(np.prod(in_shape)), 1, 1])}))
        data = {"shape": np.array(out_shape, dtype=np.int64),
                "inFeatures": np.int64(weight.shape[1]),
                "outFeatures": np.int64(weight.shape[0]), "weight": weight.astype(np.float32)}
        if bias is not None:
            data["bias"] = bias
        # what was folded, so that hub -> netx -> hub gives back the same nodes
        attrs[ATTR_FOLDED] = json.dumps([op.to_dict() for _, op in ops])
        out.append(Layer("dense", data, neuron, attrs))
        return out
    raise UnsupportedError(f"netx has no layer for {' -> '.join(k.__name__ for k in kinds)} "
                           "before a neuron", node=ops[0][0])


def _resonator_layer(ops: list[tuple[str, hub.Node]], name: str, neuron: hub.Resonator,
                     rec: tuple[str, hub.Node] | None, delayed: tuple[str, int] | None,
                     in_shape: tuple[int, ...], shapes: dict[str, tuple[int, ...]]
                     ) -> list[Layer]:
    """A dense layer with complex weights into an RF or RF_IZ neuron (netx's ComplexDense)."""
    resonators.check_synapse(ops, name, rec, delayed)
    out: list[Layer] = []
    if len(ops) == 2 and len(in_shape) > 1:
        flat = ops[0][1]
        if (flat.start_dim, flat.end_dim) not in ((0, -1), (0, len(in_shape) - 1)):
            raise UnsupportedError("netx flattens whole samples only", node=ops[0][0],
                                   field="start_dim")
        out.append(Layer("flatten", {"shape": np.array([int(np.prod(in_shape)), 1, 1])}))
    op_name, op = ops[-1]
    weight = _integral(op_name, "weight", np.asarray(op.weight))
    count = int(shapes[name][0])
    parts = {"weight/real": weight[:count], "weight/imag": weight[count:]}
    for key, part in parts.items():
        why = netx_weights_exact(part)
        if why:
            raise UnsupportedError(f"{key}: {why}", node=op_name, field="weight")
    data = {"shape": np.array(shapes[name], dtype=np.int64),
            "inFeatures": np.int64(weight.shape[1]), "outFeatures": np.int64(count),
            **{k: v.astype(np.float32) for k, v in parts.items()},
            **resonators.neuron_data(name, neuron)}
    out.append(Layer("dense", data))
    return out


def _fold(ops: list[tuple[str, hub.Node]], in_shape: tuple[int, ...]) -> np.ndarray:
    """The integer matrix of a stack of linear operations, by running it on the unit basis."""
    for op_name, op in ops:
        if isinstance(op, (hub.Linear, hub.Conv2d)):
            _integral(op_name, "weight", np.asarray(op.weight))
        if isinstance(op, hub.Conv2d) and op.bias.any():
            raise UnsupportedError("a convolution's bias cannot be folded into a dense layer",
                                   node=op_name, field="bias")
    size = int(np.prod(in_shape))
    nodes = [("input", hub.Input(shape=in_shape))]
    nodes += [(n, op) for n, op in ops]
    graph = hub.Graph.chain(*nodes)
    basis = torch.eye(size, dtype=torch.float64).reshape(1, size, *in_shape)
    columns = hub.simulate(graph, basis, dtype=torch.float64)[0]  # [in, out]
    return columns.reshape(size, -1).T.numpy().round()
