"""Reading netx hdf5 files into canonical graphs (h5py only; no Lava needed)."""

from __future__ import annotations

import json
from typing import Any

import h5py
import numpy as np

import hub
from hub.errors import FormatError, HubError, UnsupportedError
from hub.loihi import LoihiCUBA
from hub_plugins.netx import sigma_delta
from hub_plugins.netx.schema import (
    ATTR_BIAS, ATTR_FOLDED, ATTR_METADATA, ATTR_NEURON, ATTR_OP, DEFAULT_NEURON, INPUT_TRANSFORM,
    MAX_ATTR, MAX_DELAY, MAX_UNFOLD, NETX_BIAS_EXP, NETX_CANNOT_BUILD, NETX_REFUSES,
    NEURON_TYPES)
from hub_plugins.netx import resonators
from hub_plugins.netx.write import _fold, exact_loihi


def _dataset(group: h5py.Group, key: str, where: str) -> np.ndarray:
    if key not in group:
        raise FormatError("is missing", node=where, field=key)
    item = group[key]
    if not isinstance(item, h5py.Dataset):
        raise FormatError("is a group, expected a dataset", node=where, field=key)
    if item.size > hub.node.MAX_ELEMENTS:
        raise FormatError(f"has {item.size} values, too many", node=where, field=key)
    try:
        return np.asarray(item[()])
    except (OSError, TypeError, ValueError) as e:
        raise FormatError(f"cannot be read: {e}", node=where, field=key) from None


def _string(group: h5py.Group, key: str, where: str) -> str:
    value = _dataset(group, key, where)
    if value.shape:
        if value.size != 1:
            raise FormatError("should hold one string", node=where, field=key)
        value = value.reshape(-1)[0]
    if isinstance(value, np.ndarray):
        value = value.item()
    if isinstance(value, bytes):
        try:
            return value.decode("ascii")
        except UnicodeDecodeError:
            raise FormatError("is not ASCII", node=where, field=key) from None
    if isinstance(value, str):
        return value
    raise FormatError(f"should be a string, got {type(value).__name__}", node=where, field=key)


def _integers(group: h5py.Group, key: str, where: str, *, dtype: str = "int64") -> np.ndarray:
    value = _dataset(group, key, where)
    if value.dtype.kind not in "biuf":
        raise FormatError(f"should hold numbers, got dtype {value.dtype}", node=where, field=key)
    if value.dtype.kind == "f":
        if not np.isfinite(value).all():
            raise FormatError("holds NaN or infinite values", node=where, field=key)
        if not np.array_equal(value, np.round(value)):
            raise FormatError("holds non-integer values; Loihi's are "
                              "integers", node=where, field=key)
    if value.size and np.abs(value.astype(np.float64)).max() >= 2.0 ** 31:
        raise FormatError("holds values beyond 2**31", node=where, field=key)
    return value.astype(dtype)


def _scalar(group: h5py.Group, key: str, where: str) -> int:
    value = _integers(group, key, where)
    if value.size != 1:
        raise FormatError("should be one value per layer (netx's LIF takes "
                          f"a scalar), got shape {list(value.shape)}", node=where, field=key)
    return int(value.reshape(-1)[0])


def _pair(group: h5py.Group, key: str, where: str, default: int) -> tuple[int, int]:
    if key not in group:
        return (default, default)
    value = _integers(group, key, where).reshape(-1)
    if value.size == 1:
        return (int(value[0]), int(value[0]))
    if value.size != 2:
        raise FormatError(f"should hold 1 or 2 values, got {value.size}", node=where, field=key)
    return (int(value[0]), int(value[1]))


def _neuron(layer: h5py.Group, where: str, bias: np.ndarray | None,
            input_layer: bool = False) -> hub.Node:
    if "neuron" not in layer:
        params = dict(DEFAULT_NEURON)
    else:
        group = layer["neuron"]
        if not isinstance(group, h5py.Group):
            raise FormatError("should be a group", node=where, field="neuron")
        where = f"{where}/neuron"
        kind = _string(group, "type", where)
        if kind == sigma_delta.SDNN:
            return sigma_delta.read_neuron(group, where, bias, input_layer=input_layer,
                                           scalar=_scalar, string=_string)
        if kind not in NEURON_TYPES:
            raise UnsupportedError(f"neuron type {kind!r} has no canonical counterpart "
                                   f"here; supported: {', '.join(NEURON_TYPES)}", node=where)
        params = {key: _scalar(group, key, where) for key in ("iDecay", "vDecay", "vThMant")}
        if "refDelay" in group and _scalar(group, "refDelay", where) > 1:
            raise UnsupportedError("asks for a refractory period, which "
                                   "netx's LIF does not have (it would run without one)",
                                   node=where, field="refDelay")
        if "gradedSpike" in group and bool(_scalar(group, "gradedSpike", where)):
            raise UnsupportedError("is set, but netx's LIF emits "
                                   "binary spikes (slayer would emit graded ones)",
                                   node=where, field="gradedSpike")
    try:
        return LoihiCUBA(i_decay=params["iDecay"], v_decay=params["vDecay"],
                         threshold=params["vThMant"],
                         **({} if bias is None else {"bias": bias, "bias_exp": NETX_BIAS_EXP}))
    except HubError as e:
        raise FormatError(e.message if e.node is None else str(e), node=where,
                          field=e.field) from None


def _first_input_shape(layer: h5py.Group, kind: str, where: str,
                       given: tuple[int, ...] | None) -> tuple[int, ...]:
    """The input shape of a file without an input layer: ``input_shape`` where given, else
    what the first layer implies (a dense layer's inputs; a stride-1 convolution's size)."""
    if given is not None:
        return tuple(int(n) for n in given)
    if kind in ("dense", "dense_rec"):
        if "inFeatures" in layer:
            return (_scalar(layer, "inFeatures", where),)
        weight = _weights(layer, "weight", where)
        if weight.ndim == 2:
            return (int(weight.shape[1]),)
    if kind == "conv" and _pair(layer, "stride", where, 1) == (1, 1):
        out = _integers(layer, "shape", where).reshape(-1)
        weight = _weights(layer, "weight", where)
        padding, dilation = _pair(layer, "padding", where, 0), _pair(layer, "dilation", where, 1)
        groups = _scalar(layer, "groups", where) if "groups" in layer else 1
        if out.size == 3 and weight.ndim >= 4:
            return (int(weight.shape[1]) * groups,
                    *(int(o) - 2 * p + d * (k - 1) for o, p, d, k in
                      zip(out[1:], padding, dilation, weight.shape[2:4])))
    raise FormatError(f"the file has no input layer and its first layer ({kind!r}) does not "
                      "say its input size; pass input_shape=(C, H, W) (netx's "
                      "Network(input_shape=...) in torch order)", node=where)


def _read(f: h5py.File, input_shape: tuple[int, ...] | None = None) -> hub.Graph:
    if "layer" not in f or not isinstance(f["layer"], h5py.Group):
        raise FormatError("not a netx network: no group 'layer'")
    group = f["layer"]
    keys = sorted(group.keys(), key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else k))
    if [k for k in keys] != [str(i) for i in range(len(keys))]:
        raise FormatError(f"layers should be named 0, 1, 2, ...; found {', '.join(keys[:8])}",
                          node="layer")
    nodes: list[tuple[str, hub.Node]] = []
    recurrent: list[tuple[str, str, hub.Node]] = []
    shape: tuple[int, ...] | None = None
    input_transform: dict[str, float] = {}
    for key in keys:
        layer = group[key]
        where = f"layer/{key}"
        if not isinstance(layer, h5py.Group):
            raise FormatError("should be a group", node=where)
        kind = _string(layer, "type", where)
        if kind in NETX_CANNOT_BUILD:
            raise UnsupportedError(f"layer type {kind!r}: {NETX_CANNOT_BUILD[kind]}", node=where)
        rf_type = resonators.neuron_type(layer, where)
        if rf_type is not None and kind == "input":
            resonators.read_layer(layer, kind, rf_type, where, 0)  # refused, with the reason
        if kind == "input":
            if nodes:
                raise FormatError("an input layer must come first", node=where)
            if "delay" in layer:
                raise UnsupportedError("on an input layer: netx 0.6's create_input does not "
                                       "read it, so Lava would run the network without the "
                                       "delay", node=where, field="delay")
            shape = tuple(int(v) for v in _integers(layer, "shape", where).reshape(-1))
            nodes.append(("input", hub.Input(shape=shape)))
            if "neuron" in layer:
                # netx's Input block: the network's input reaches this neuron's a_in
                # directly; its 'weight' and 'bias' are a transform netx only records
                # (Input.transform) for whoever encodes the input, so they are metadata here
                nodes.append(("n0", _neuron(layer, where, None, input_layer=True)))
                transform = {key: float(_dataset(layer, key, where).reshape(-1)[0])
                             for key in ("weight", "bias") if key in layer}
                if transform:
                    input_transform.update(transform)
            continue
        if not nodes:
            # slayer's export_hdf5 writes no input layer: the shape comes from the first layer
            shape = _first_input_shape(layer, kind, where, input_shape)
            nodes.append(("input", hub.Input(shape=shape)))
        index = sum(1 for n, _ in nodes if n[:1] == "n" and n[1:].isdigit() and n != "n0") + 1
        op = layer.attrs.get(ATTR_OP, "")
        op = op.decode() if isinstance(op, bytes) else str(op)
        if kind == "flatten":
            nodes.append((f"flat{index}", hub.Flatten()))
            continue
        if rf_type is not None:
            nodes += resonators.read_layer(layer, kind, rf_type, where, index)
            continue
        if kind in ("dense", "dense_rec"):
            weight = _weights(layer, "weight", where)
            if weight.ndim == 1:  # netx reshapes it to [prod(shape), -1]
                out_size = int(np.prod(_integers(layer, "shape", where)))
                if out_size < 1 or weight.size % out_size:
                    raise FormatError(f"holds {weight.size} values, not a multiple of the "
                                      f"{out_size} outputs", node=where, field="weight")
                weight = weight.reshape(out_size, -1)
            if weight.ndim != 2:
                raise FormatError("should be [out, in], got "
                                  f"{list(weight.shape)}", node=where, field="weight")
            if "delay" in layer:
                if kind == "dense_rec":
                    raise UnsupportedError("on a recurrent layer: netx 0.6's "
                                           "RecurrentDense gives its recurrent synapse the "
                                           "forward synapse's delays and no weight exponent, "
                                           "which the hub does not model",
                                           node=where, field="delay")
                into, per_output = _delays(layer, where, weight.shape)
                _delay_inputs(nodes, into, where)
                if not per_output.any():
                    per_output = None
            else:
                per_output = None
            bias = _integers(layer, "bias", where) if "bias" in layer else None
            as_affine = bias is not None and _attr(layer, ATTR_BIAS) == "affine"
            if as_affine:
                nodes.append((f"fc{index}", hub.Affine(weight=weight,
                                                       bias=bias.astype(np.float32))))
                bias = None
            else:
                nodes[:] = _unfold(layer, nodes, weight, index) or [
                    *nodes, (f"fc{index}", hub.Linear(weight=weight))]
            neuron = _restore(layer, _neuron(layer, where, bias))
            nodes.append((f"n{index}", neuron))
            if per_output is not None:
                if np.any(getattr(neuron, "bias", 0)):
                    raise UnsupportedError("per-neuron delays on a layer with a bias: Lava "
                                           "delays the synaptic input, which is the neuron's "
                                           "output delayed only while nothing else drives it",
                                           node=where, field="delay")
                nodes.append((f"d{index}", hub.Delay(delay=per_output)))
            if kind == "dense_rec":
                rec = _weights(layer, "weight_rec", where)
                if rec.shape != (weight.shape[0],) * 2:
                    raise FormatError("should be [out, out], got "
                                      f"{list(rec.shape)}", node=where, field="weight_rec")
                recurrent.append((f"rec{index}", f"n{index}", hub.Linear(weight=rec)))
            continue
        if kind in ("conv", "pool"):
            if "delay" in layer:
                raise UnsupportedError(f"on a {kind} layer: netx 0.6's "
                                       "create_conv does not read it (hdf5.py), so Lava would "
                                       "run the layer without the delay", node=where, field="delay")
            weight = _weights(layer, "weight", where)
            if weight.ndim == 5 and weight.shape[4] == 1:  # slayer's Conv3d kernel, as netx
                weight = weight[..., 0]
            bias = _integers(layer, "bias", where) if "bias" in layer else None
            stride = _pair(layer, "stride", where, 1)
            padding = _pair(layer, "padding", where, 0)
            dilation = _pair(layer, "dilation", where, 1)
            if shape is None or len(shape) != 3:
                raise FormatError(f"a {kind} layer needs a [C, H, W] input, got "
                                  f"{list(shape or [])}", node=where)
            if kind == "pool" or op == "SumPool2d":
                channels = shape[0]
                if weight.ndim != 4 or weight.shape[:2] != (1, 1) and kind == "pool":
                    raise FormatError("should be [1, 1, kh, kw], got "
                                      f"{list(weight.shape)}", node=where, field="weight")
                if op == "SumPool2d" and (weight == 1).all() and dilation == (1, 1):
                    synapse: hub.Node = hub.SumPool2d(kernel_size=weight.shape[2:],
                                                      stride=stride, padding=padding)
                else:
                    kernel = np.broadcast_to(weight[:1, :1], (channels, 1, *weight.shape[2:]))
                    synapse = hub.Conv2d(weight=kernel, stride=stride, padding=padding,
                                         dilation=dilation, groups=channels)
            else:
                groups = _scalar(layer, "groups", where) if "groups" in layer else 1
                try:
                    synapse = (hub.Conv2d(weight=weight, bias=bias.astype(np.float32),
                                          stride=stride, padding=padding, dilation=dilation,
                                          groups=groups)
                               if bias is not None and _attr(layer, ATTR_BIAS) == "affine" else
                               hub.Conv2d(weight=weight, stride=stride, padding=padding,
                                          dilation=dilation, groups=groups))
                except HubError as e:
                    raise FormatError(e.message if e.node is None else str(e), node=where,
                                      field=e.field) from None
                if _attr(layer, ATTR_BIAS) == "affine":
                    bias = None
            name = "pool" if isinstance(synapse, hub.SumPool2d) else "conv"
            nodes.append((f"{name}{index}", synapse))
            if bias is not None and bias.ndim == 1:
                bias = bias.reshape(-1, 1, 1)  # per channel, as netx broadcasts it
            nodes.append((f"n{index}", _restore(layer, _neuron(layer, where, bias))))
        elif kind in NETX_REFUSES:
            raise UnsupportedError(f"layer type {kind!r} is not supported (netx 0.6 "
                                   "refuses it too)", node=where)
        else:
            raise FormatError(f"unknown layer type {kind!r}", node=where)
        try:
            graph = hub.Graph.chain(*nodes)
            shape = graph.plan().output_shapes[nodes[-1][0]]
        except HubError as e:
            raise FormatError(e.message if e.node is None else str(e), node=where,
                              field=e.field) from None
    if len(nodes) < 2:
        raise FormatError("the network has no layers after its input", node="layer")
    # a layer's recurrence right after its neuron, as the graph would be drawn
    loops = {target: (name, node) for name, target, node in recurrent}
    graph = hub.Graph()
    for name, node in [*nodes, ("output", hub.Output())]:
        graph.add(name, node)
        if name in loops:
            graph.add(*loops[name])
    previous = None
    for name, _ in [*nodes, ("output", None)]:
        if previous is not None:
            graph.connect(previous, name)
        if name in loops:
            graph.connect(name, loops[name][0])
            graph.connect(loops[name][0], name)
        previous = name
    try:
        out = graph.plan().output_shapes
    except HubError as e:
        raise FormatError(f"the layers do not fit together: {e}") from None
    expected = _integers(group[keys[-1]], "shape", f"layer/{keys[-1]}").reshape(-1)
    got = out["output"]
    if int(np.prod(expected)) != int(np.prod(got)):
        raise FormatError(f"says {list(expected)}, but the layers give {list(got)}",
                          node=f"layer/{keys[-1]}", field="shape")
    graph.metadata.update(_metadata(f))
    if input_transform:
        graph.metadata[INPUT_TRANSFORM] = input_transform
    return graph


def _delays(layer: h5py.Group, where: str, weight_shape: tuple[int, ...]
            ) -> tuple[np.ndarray, np.ndarray]:
    """A dense layer's ``delay`` key as delays on its inputs (``[in]``) and on its outputs
    (``[out]``, all zero unless they differ), whose sums are its synapses' delays.

    ``hdf5.Network.create_dense`` repeats a vector of ``out`` delays (first; slayer's
    ``delay=True`` export, "axonal delays to syn") or else of ``in`` delays ("input delays") over
    the weight matrix, passes an ``[out, in]`` matrix as it is, and builds Lava's ``DelayDense``
    (``max_delay=62``), whose synapse ``i -> j`` with delay ``D[j, i]`` delivers ``D[j, i]``
    steps after one without a ``delay`` key. Where ``D[j, i] = a[i] + b[j]``, that is input
    ``i`` reaching the layer ``a[i]`` steps late (a delay on the previous layer's output) and
    neuron ``j``'s output leaving ``b[j]`` steps late: its state starts at zero and nothing else
    drives it before its inputs arrive (so not with a bias, :func:`_read`). A matrix that is no
    such sum delays each synapse on its own, which no hub node does, and is refused."""
    value = _integers(layer, "delay", where)
    out, inp = weight_shape
    if value.ndim == 1 and value.size == out:  # netx tries this reading first
        matrix = np.repeat(value.reshape(-1, 1), inp, axis=1)
    elif value.ndim == 1 and value.size == inp:
        matrix = np.repeat(value.reshape(1, -1), out, axis=0)
    elif value.shape == (out, inp):
        matrix = value
    else:
        raise FormatError(f"should be [{inp}] (input delays), [{out}] or "
                          f"[{out}, {inp}], got {list(value.shape)}", node=where, field="delay")
    if matrix.size and (matrix.min() < 0 or matrix.max() > MAX_DELAY):
        raise UnsupportedError(f"holds delays from {matrix.min()} to {matrix.max()}; netx clips "
                               f"delays to 0 .. {MAX_DELAY} (with a warning), so the file "
                               "would not run as written", node=where, field="delay")
    if not matrix.size:
        return np.zeros(inp, np.int64), np.zeros(out, np.int64)
    first = int(np.argmin(matrix[0]))
    into, per_output = matrix[0] - matrix[0, first], matrix[:, first].copy()
    if not np.array_equal(matrix, into[None, :] + per_output[:, None]):
        raise UnsupportedError(
            f"holds a delay per synapse ({matrix.min()} to {matrix.max()} steps) that is not one "
            "delay per input plus one per output neuron; the hub delays a neuron's output "
            "(hub.Delay), not a single synapse, so it cannot hold this layer: give the layer "
            "delays per input ([in]) or per output neuron ([out], as slayer's delay=True "
            "exports), or split the synapses over several layers", node=where, field="delay")
    if (per_output == per_output[0]).all():
        into, per_output = into + per_output[0], np.zeros_like(per_output)
    return into.astype(np.int64), per_output.astype(np.int64)


def _delay_inputs(nodes: list[tuple[str, hub.Node]], into: np.ndarray, where: str) -> None:
    """Delay a dense layer's inputs by ``into`` (one value per input): a uniform delay as
    :func:`_delay_previous`; differing ones as a ``Delay`` on the previous neuron's (or the
    network input's) output, before any flatten, added to a ``Delay`` already there."""
    if not into.size or (into == into[0]).all():
        _delay_previous(nodes, int(into[0]) if into.size else 0, where)
        return
    i = len(nodes)
    while i > 1 and isinstance(nodes[i - 1][1], hub.Flatten):
        i -= 1
    name, node = nodes[i - 1]
    try:
        shape = tuple(hub.Graph.chain(*nodes[:i]).plan().output_shapes[name])
    except HubError as e:
        raise FormatError(e.message if e.node is None else str(e), node=where,
                          field="delay") from None
    if int(np.prod(shape)) != into.size:
        raise FormatError(f"holds {into.size} input delays for {int(np.prod(shape))} inputs",
                          node=where, field="delay")
    delay = into.reshape(shape)
    if isinstance(node, hub.Delay):
        nodes[i - 1] = (name, node.replace(delay=np.broadcast_to(node.delay, shape) + delay))
        return
    taken = {n for n, _ in nodes}
    label = f"d{name[1:]}" if name[:1] == "n" else f"{name}_delay"
    while label in taken:
        label += "_"
    nodes.insert(i, (label, hub.Delay(delay=delay)))


def _delay_previous(nodes: list[tuple[str, hub.Node]], delay: int, where: str) -> None:
    """Give the neuron before this layer (past any flatten) the layer's uniform input delay:
    a ``LoihiCUBA``'s own ``delay``; after a sigma-delta or resonator neuron, which hold none,
    or after the network's input, a ``Delay`` node (the writer writes either back as this
    key)."""
    for i in range(len(nodes) - 1, -1, -1):
        name, node = nodes[i]
        if isinstance(node, hub.Flatten):
            continue
        if isinstance(node, hub.Delay):  # a layer's per-neuron delays, then these
            nodes[i] = (name, node.replace(delay=node.delay + delay))
            return
        if isinstance(node, hub.IF):  # restored from hub.neuron: the file's neuron is Loihi's
            node = exact_loihi(name, node)
        if isinstance(node, (*sigma_delta.NODES, hub.Resonator, hub.Input)):
            if delay:
                taken = {n for n, _ in nodes}
                label = f"d{name[1:]}" if name[:1] == "n" else f"{name}_delay"
                while label in taken:
                    label += "_"
                nodes.insert(i + 1, (label, hub.Delay(delay=np.int64(delay))))
            return
        if not isinstance(node, LoihiCUBA):
            raise FormatError(f"a {node.type} before a dense layer's delays", node=where,
                              field="delay")
        nodes[i] = (name, node.replace(delay=delay))
        return


def _metadata(f: h5py.File) -> dict[str, Any]:
    """The graph metadata snn-hub stored on the root (``{}`` for files other tools wrote)."""
    if ATTR_METADATA not in f.attrs:
        return {}
    text = f.attrs[ATTR_METADATA]
    try:
        data = json.loads(text.decode() if isinstance(text, bytes) else str(text))
    except (UnicodeDecodeError, ValueError):
        data = None
    if not isinstance(data, dict):
        raise FormatError(f"root attribute {ATTR_METADATA!r} is not a JSON object; delete it "
                          "to read the file without snn-hub's metadata")
    return data


def _restore(layer: h5py.Group, neuron: LoihiCUBA) -> hub.Node:
    """The integrate-and-fire neuron a layer was written from (its ``hub.neuron`` attribute),
    if it still converts to exactly the neuron the file holds; otherwise the file's neuron."""
    text = _attr(layer, ATTR_NEURON)
    if not text or len(text) > MAX_ATTR:
        return neuron
    try:
        original = hub.node_from_dict(json.loads(text))
        same = exact_loihi("", original) == neuron
    except (HubError, ValueError, TypeError, RecursionError):
        return neuron  # an attribute someone edited: the file's own neuron is what netx runs
    return original if same else neuron


def _unfold(layer: h5py.Group, nodes: list[tuple[str, hub.Node]], weight: np.ndarray,
            index: int) -> list[tuple[str, hub.Node]] | None:
    """The nodes before a dense layer that the writer folded into its weights (its
    ``hub.folded`` attribute), replacing the file's flatten, if they still fold to exactly the
    file's weights; otherwise ``None`` (the file's dense layer is what netx runs)."""
    text = _attr(layer, ATTR_FOLDED)
    if not text or len(text) > MAX_ATTR:
        return None
    before = nodes[:-1] if isinstance(nodes[-1][1], hub.Flatten) else nodes
    try:
        ops = [hub.node_from_dict(d) for d in json.loads(text)]
        if not ops or not all(isinstance(op, (hub.Conv2d, hub.SumPool2d, hub.Flatten,
                                               hub.Linear, hub.Affine)) for op in ops):
            return None
        in_shape = tuple(hub.Graph.chain(*before).plan().output_shapes[before[-1][0]])
        if int(np.prod(in_shape)) != weight.shape[1] or weight.shape[1] ** 2 > MAX_UNFOLD:
            return None
        folded = _fold([(str(i), op) for i, op in enumerate(ops)], in_shape)
    except (HubError, ValueError, TypeError, KeyError, RecursionError, RuntimeError):
        return None  # an attribute someone edited: the file's own layer is what netx runs
    if folded.shape != weight.shape or not np.array_equal(folded, weight):
        return None
    prefixes = {"Conv2d": "conv", "SumPool2d": "pool", "Flatten": "flat", "Linear": "fc",
                "Affine": "fc"}
    taken = {name for name, _ in before}
    restored = []
    for op in ops:
        name = base = f"{prefixes[op.type]}{index}"
        while name in taken:
            name = f"{base}_{len(taken)}"
        taken.add(name)
        restored.append((name, op))
    return [*before, *restored]


def _attr(layer: h5py.Group, key: str) -> str:
    value = layer.attrs.get(key, "")
    return value.decode() if isinstance(value, bytes) else str(value)


def _weights(layer: h5py.Group, key: str, where: str) -> np.ndarray:
    return _integers(layer, key, where, dtype="float32")

