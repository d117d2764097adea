"""The ``netx`` format: lava-dl's netx hdf5 network description, for Loihi.

A netx file (written by slayer's ``block.*.export_hdf5``, run by ``lava.lib.dl.netx.hdf5.Network``)
is a group ``layer`` with subgroups ``0, 1, ...``, one per layer, in order. Each layer is a
synapse and a neuron group; read and written here with h5py only (no Lava needed):

=============  ===================================================  ==========================
layer type     keys (dtypes as slayer writes them)                  canonical nodes
=============  ===================================================  ==========================
``input``      ``type`` (S10 [1]), ``shape`` (int64, torch order    ``Input(shape)``, then its
               ``[C, H, W]`` or ``[N]``), optional ``neuron/*``,      ``LoihiCUBA`` if it has
               ``weight``, ``bias`` (netx's input transform)          a neuron group
(none)         slayer's ``export_hdf5`` writes no input layer       ``Input`` of the first
                                                                    layer's input size
``dense``      ``shape`` ``[out]``, ``inFeatures``, ``outFeatures``,  ``Linear(weight)`` (or
               ``weight`` float32 ``[out, in]`` (integers),          ``Affine``) ->
               ``bias`` (optional), ``neuron/*``                     ``LoihiCUBA``
``dense_rec``  as ``dense`` plus ``weight_rec`` ``[out, out]``       the same, plus a recurrent
                                                                    ``Linear(weight_rec)``
``conv``       ``shape`` ``[C, H, W]``, ``weight`` float32            ``Conv2d`` -> ``LoihiCUBA``
               ``[out, in/groups, kh, kw]`` (torch's layout: netx
               flips and transposes it to Lava's XYC), ``stride``,
               ``padding``, ``dilation`` ``[h, w]``, ``groups``,
               ``inChannels``, ``outChannels``, ``kernelSize``
``pool``       slayer's pool block: ``weight`` ``[1, 1, kh, kw]``,     depthwise ``Conv2d`` ->
               ``kernelSize``, ``stride``, ``padding``, ``dilation``  ``LoihiCUBA`` (read only)
``flatten``    ``shape``                                            ``Flatten()``
=============  ===================================================  ==========================

The neuron group ``neuron/``: ``type`` (``CUBA`` or ``LOIHI``), ``iDecay``, ``vDecay``,
``vThMant``, ``refDelay``, ``gradedSpike`` (scalars) maps onto :class:`hub.LoihiCUBA`
(``i_decay``, ``v_decay``, ``threshold``); a layer's ``bias`` becomes the neuron's bias mantissa
with ``bias_exp = 6``, which is what netx passes to Lava's LIF. netx ignores ``refDelay`` and
``gradedSpike`` (its LIF has neither), so a file asking for a refractory period
(``refDelay > 1``) or graded spikes is refused rather than silently run without.

An ``IF`` neuron that Loihi's neuron reproduces exactly (``>``, reset to zero, gain 1, an integer
threshold: :func:`exact_loihi`) is written as one. What netx 0.6 cannot run is refused when
writing, with :class:`hub.UnsupportedError` naming the node and field: other float neurons
(convert them with ``quantize=True``, or ``strict=False``, which also warns), per-neuron decays and
thresholds (netx's LIF takes one value per layer), refractory periods, graded spikes, delays
netx cannot hold (below), weights that are not integers or that netx's ``optimize_weight_bits``
would change (8-bit mantissa and exponent), and any topology other than a chain of layers (plus
a layer's own recurrence). Pooling, which netx 0.6 refuses (``create_pool`` raises
``NotImplementedError``), is written as what netx runs: a ``SumPool2d`` followed by a neuron
becomes a depthwise ``conv`` layer with unit weights, and a ``SumPool2d`` followed by ``Flatten``
and a dense layer is folded into that layer's weights; both are exact integer rewrites.

A :class:`hub.LoihiCUBA`'s axonal ``delay`` ``d`` is written as the input delays of the dense
layer its spikes reach (its ``delay`` key, float32 ``[in]`` filled with ``d``): Lava's
``DelayDense`` delivers a synapse with delay ``d`` exactly ``d`` steps after one without, so the
two are the same network (:func:`_uniform_delay`, ``docs/loihi.md``). A uniform ``delay`` key is
read back as the previous neuron's delay; non-uniform delays, a delay on the last neuron layer,
into a conv or ``dense_rec`` layer, or above 62 are refused.

A file written here carries hdf5 attributes under ``hub.*`` (which netx ignores) that say which
canonical node a layer came from (``hub.folded``: the nodes folded into a dense layer, restored on
reading while they still fold to the file's weights), so hub -> netx -> hub gives back the
identical graph.

``run(path, x)`` runs the file in Lava's netx on the Loihi fixed-point simulator through
``hub_plugins.lava.run_netx`` (the Lava environment ``.venv-lava``); see ``docs/loihi.md``.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

import hub
import hub.hdf5
from hub.errors import FormatError, HubError, UnsupportedError
from hub.legalise import Accepts
from hub.loihi import DECAY_UNITY, LoihiCUBA

#: Layers netx 0.6 refuses with NotImplementedError.
NETX_REFUSES = ("pool", "convT", "unpool", "average", "concat")
NEURON_TYPES = ("CUBA", "LOIHI")
#: The bias exponent netx gives every CUBA neuron (``hdf5.Network.get_neuron_params``).
NETX_BIAS_EXP = 6
#: netx's neuron for a dense layer without a ``neuron`` group (``hdf5.Network.create_dense``).
DEFAULT_NEURON = {"iDecay": 0, "vDecay": 4096, "vThMant": 1 << 17}
ATTR_OP = "hub.op"
ATTR_BIAS = "hub.bias"
ATTR_NEURON = "hub.neuron"
ATTR_FOLDED = "hub.folded"
#: The graph's metadata (its ``dt``, ...) as JSON on the file's root, for the round trip.
ATTR_METADATA = "hub.metadata"
#: Graph metadata key of an input layer's ``weight``/``bias`` transform, which netx records
#: (``blocks.process.Input.transform``) but does not apply: the input's encoder applies it.
INPUT_TRANSFORM = "netx_input_transform"
#: Largest synaptic delay netx runs (``hdf5.Network.create_dense`` clips to it, ``max_delay=62``).
MAX_DELAY = 62
#: Longest ``hub.neuron`` attribute read back: one node's plain data.
MAX_ATTR = 1 << 16
#: Largest ``inputs**2`` for which a folded layer's nodes are restored on reading (refolding
#: runs them on the unit basis: 128 MiB of float64 at this size).
MAX_UNFOLD = 1 << 24


class QuantizationWarning(UserWarning):
    """A float graph was written to netx with ``strict=False``: the quantisation report."""


def _summary(report: dict[str, Any]) -> str:
    parts = []
    for name, layer in report["layers"].items():
        notes = "; ".join(layer["approximations"])
        parts.append(f"{name}: scale {layer['scale']:g}, weight error {layer['weight_error']:.3g}"
                     f", threshold error {layer['threshold_error']:.3g}, decay error "
                     f"{layer['decay_error']:.3g}{'; ' + notes if notes else ''}")
    if "agreement" in report:
        parts.append(f"outputs agree on {report['agreement']:.2%} of x")
    return "quantised for Loihi: " + " | ".join(parts)


class NetxFormat(hub.Format):
    name = "netx"
    aliases = ("lava", "lava-netx", "loihi")
    description = "lava-dl netx hdf5 networks for Loihi (.net, .h5), run in Lava's netx"
    suffixes = (".net", ".h5")
    load_options = ("input_shape",)
    save_options = ("strict", "quantize", "x")
    imports = frozenset({"Input", "Linear", "Affine", "Conv2d", "SumPool2d", "Flatten",
                         "LoihiCUBA", "Output"})
    exports = imports | {"Delay"}
    #: quantize=True takes float IF/LIF/CubaLIF too; the exporter checks each value against
    #: Loihi's fixed point (strict: refuses anything not exact)
    accepts = Accepts(
        {tuple(sorted(exports | {"IF", "LIF", "CubaLIF"})): ()}, name="netx",
        notes=["IF, LIF and CubaLIF with quantize=True (quantised to LoihiCUBA at export)",
               "field values are checked by the exporter against Loihi's fixed point"])

    def read(self, path: Path, input_shape: tuple[int, ...] | None = None) -> hub.Graph:
        """Read a netx file; ``input_shape`` (torch order) for a file without an input layer
        whose first layer does not say its input size (a strided convolution)."""
        # checked by hub.hdf5 (nothing outside the file, within the limits) before any read
        with hub.hdf5.open_file(path, nodes="layer") as f:
            try:
                return _read(f, input_shape)
            except HubError as e:
                raise e.at(file=path)

    def write(self, graph: hub.Graph, path: Path, *, strict: bool = True,
              quantize: bool = False, x: Any = None) -> None:
        """Write ``graph`` as a netx file. ``quantize=True`` (or ``strict=False``) first converts
        float neurons with :func:`quantize`; ``strict=False`` also warns with its report."""
        if quantize or not strict:
            graph, report = globals()["quantize"](graph, x=x)
            if not strict:
                warnings.warn(QuantizationWarning(_summary(report)), stacklevel=2)
        layers = plan_layers(graph)
        _check_bias_before_delay(graph)
        transform = graph.metadata.get(INPUT_TRANSFORM)
        if layers[0].neuron is not None and isinstance(transform, dict):
            for key in ("weight", "bias"):
                if isinstance(transform.get(key), (int, float)):
                    layers[0].data[key] = np.float32(transform[key])
        with h5py.File(path, "w") as f:
            if graph.metadata:
                f.attrs[ATTR_METADATA] = json.dumps(graph.metadata)
            group = f.create_group("layer")
            for index, layer in enumerate(layers):
                _write_layer(group.create_group(str(index)), layer)

    def run(self, native: Any, x: Any) -> np.ndarray:
        """Run the file in Lava's netx on the Loihi fixed-point CPU simulator."""
        from hub_plugins.lava import run_netx

        return run_netx(Path(native), x)


# -- reading --------------------------------------------------------------------------------


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


def _neuron(layer: h5py.Group, where: str, bias: np.ndarray | None) -> LoihiCUBA:
    if "neuron" not in layer:
        params = dict(DEFAULT_NEURON)
    else:
        group = layer["neuron"]
        if not isinstance(group, h5py.Group):
            raise FormatError("should be a group", node=where, field="neuron")
        where = f"{where}/neuron"
        kind = _string(group, "type", where)
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
        if kind == "input":
            if nodes:
                raise FormatError("an input layer must come first", node=where)
            shape = tuple(int(v) for v in _integers(layer, "shape", where).reshape(-1))
            nodes.append(("input", hub.Input(shape=shape)))
            if "neuron" in layer:
                # netx's Input block: the network's input reaches this neuron's a_in
                # directly; its 'weight' and 'bias' are a transform netx only records
                # (Input.transform) for whoever encodes the input, so they are metadata here
                nodes.append(("n0", _neuron(layer, where, None)))
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
                per_output = _output_delays(layer, where, weight.shape)
                if per_output is None:
                    _delay_previous(nodes, _uniform_delay(layer, where, weight.shape), where)
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
                if neuron.bias.any():
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


def _uniform_delay(layer: h5py.Group, where: str, weight_shape: tuple[int, ...]) -> int:
    """The one delay, in steps, that a dense layer's ``delay`` key gives all its synapses.

    ``hdf5.Network.create_dense`` repeats a vector of ``out`` (or else ``in``) delays over the
    weight matrix, passes an ``[out, in]`` matrix as it is, and builds Lava's ``DelayDense``
    (``max_delay=62``), whose synapse with delay ``d`` delivers ``d`` steps after one without a
    ``delay`` key. A uniform delay ``d`` on every synapse of a layer is therefore the previous
    layer's spikes leaving ``d`` steps later: :class:`hub.LoihiCUBA`'s ``delay``. Delays that
    differ between synapses have no canonical counterpart and are refused."""
    value = _integers(layer, "delay", where)
    out, inp = weight_shape
    if not (value.ndim == 1 and value.size in (out, inp)) and value.shape != (out, inp):
        raise FormatError(f"should be [{inp}] (input delays), [{out}] or "
                          f"[{out}, {inp}], got {list(value.shape)}", node=where, field="delay")
    if value.size and not (value == value.reshape(-1)[0]).all():
        raise UnsupportedError(f"holds different delays ({value.min()} to "
                               f"{value.max()}); the hub carries one axonal delay per neuron "
                               "layer (LoihiCUBA.delay), so only a uniform delay is read",
                               node=where, field="delay")
    delay = int(value.reshape(-1)[0]) if value.size else 0
    if not 0 <= delay <= MAX_DELAY:
        raise UnsupportedError(f"is {delay}; netx clips delays to 0 .. "
                               f"{MAX_DELAY} (with a warning), so the file would not run as "
                               "written", node=where, field="delay")
    return delay


def _output_delays(layer: h5py.Group, where: str, weight_shape: tuple[int, ...]
                   ) -> np.ndarray | None:
    """A dense layer's differing delays per output neuron (slayer's ``delay=True`` export),
    or ``None`` for any other ``delay`` key.

    netx reads a vector of ``out`` delays first as one delay per output neuron
    (``create_dense``: "axonal delays to syn"), repeated over that neuron's synapses: every
    input of neuron ``j`` arrives ``d[j]`` steps late, which (its state starting at zero and
    nothing else driving it) is neuron ``j``'s output leaving ``d[j]`` steps late: a ``Delay``
    after the layer's neuron, as slayer's forward applies it."""
    value = _integers(layer, "delay", where)
    if value.ndim != 1 or value.size != weight_shape[0] or (value == value[0]).all():
        return None
    if value.min() < 0 or value.max() > MAX_DELAY:
        raise UnsupportedError(f"holds delays from {value.min()} to {value.max()}; netx clips "
                               f"them to 0 .. {MAX_DELAY}", node=where, field="delay")
    return value.astype(np.int64)


def _delay_previous(nodes: list[tuple[str, hub.Node]], delay: int, where: str) -> None:
    """Give the neuron before this layer (past any flatten) the layer's uniform input delay."""
    for i in range(len(nodes) - 1, -1, -1):
        name, node = nodes[i]
        if isinstance(node, hub.Flatten):
            continue
        if isinstance(node, hub.Delay):  # a layer's per-neuron delays, then these
            nodes[i] = (name, node.replace(delay=node.delay + delay))
            return
        if isinstance(node, hub.IF):  # restored from hub.neuron: the file's neuron is Loihi's
            node = exact_loihi(name, node)
        if not isinstance(node, LoihiCUBA):
            if delay == 0:
                return
            raise UnsupportedError("delays the network's input spikes; the "
                                   "hub holds delays on neurons (LoihiCUBA.delay) and the input "
                                   "has none; remove the key or shift the input in time",
                                   node=where, field="delay")
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


# -- writing --------------------------------------------------------------------------------


@dataclasses.dataclass
class Layer:
    """One netx layer to write: its type, its datasets and its hub attributes."""

    kind: str
    data: dict[str, Any]
    neuron: LoihiCUBA | None = None
    attrs: dict[str, str] = dataclasses.field(default_factory=dict)


def _write_layer(group: h5py.Group, layer: Layer) -> None:
    group.create_dataset("type", (1,), "S10", [layer.kind.encode("ascii")])
    for key, value in layer.data.items():
        group.create_dataset(key, data=value)
    for key, value in layer.attrs.items():
        group.attrs[key] = value
    if layer.neuron is not None:
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


def _scalar_field(neuron: LoihiCUBA, name: str, field: str) -> None:
    value = getattr(neuron, field)
    if value.size > 1 and not (value == value.reshape(-1)[0]).all():
        raise UnsupportedError("netx's LIF takes one value per layer; this neuron has "
                               f"{value.size} different ones", node=name, field=field)


def exact_loihi(name: str, node: hub.Node) -> LoihiCUBA:
    """The LoihiCUBA that computes exactly what integrate-and-fire ``node`` computes on integer
    inputs, or UnsupportedError naming the field that prevents it.

    An ``IF`` with gain 1, ``>``, reset to zero at 0 in the same step, binary unit spikes and an
    integer threshold is Loihi's neuron with ``i_decay = 4096`` (the current is this step's input)
    and ``v_decay = 0``: ``v_loihi = 64 * v`` while ``|v| < 2**17``, and ``v_loihi > th << 6``
    exactly when ``v > th``. Loihi's inputs are integers, so the equality holds wherever netx runs.
    """
    if not isinstance(node, hub.IF):
        raise UnsupportedError(f"{node.type} is not integrate-and-fire", node=name, field="type")
    checks = [
        ("comparison", node.comparison == ">", "Loihi spikes where v > threshold"),
        ("reset", node.reset == "zero", "Loihi resets the voltage to zero"),
        ("reset_timing", node.reset_timing == "same", "Loihi resets in the spiking step"),
        ("v_reset", not node.v_reset.any(), "Loihi resets the voltage to zero"),
        ("v_init", not node.v_init.any(), "Loihi's voltage starts at zero"),
        ("spike_mode", node.spike_mode == "binary", "netx's LIF emits binary spikes"),
        ("amplitude", bool((node.amplitude == 1).all()), "netx's LIF emits unit spikes"),
        ("refractory", not node.refractory, "netx's LIF has no refractory period"),
        ("delay", not node.delay, "an IF's delay is not written (make it a hub.LoihiCUBA with "
                                  "that delay: netx writes it into the next layer)"),
        ("gain", bool((node.gain == 1).all()), "Loihi adds the synaptic input unscaled "
                                                "(fold the gain into the weights)"),
    ]
    for field, ok, why in checks:
        if not ok:
            raise UnsupportedError(f"{why}; this IF differs (write with quantize=True for an "
                                   "approximation)", node=name, field=field)
    th = node.threshold.reshape(-1)
    if th.size == 0 or not (th == th[0]).all() or th[0] != round(float(th[0])) or not (
            0 <= th[0] < 1 << 17):
        raise UnsupportedError("Loihi's threshold is one integer mantissa per layer, 0 to "
                               "2**17 - 1", node=name, field="threshold")
    return LoihiCUBA(i_decay=DECAY_UNITY, v_decay=0, threshold=int(th[0]))


def _check_neuron(name: str, node: hub.Node) -> LoihiCUBA:
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
    for field in ("i_decay", "v_decay", "threshold"):
        _scalar_field(node, name, field)
    if node.refractory:
        raise UnsupportedError("netx's LIF has no refractory period", node=name,
                               field="refractory")
    if node.delay > MAX_DELAY:
        raise UnsupportedError(f"netx's synaptic delays are 0 to {MAX_DELAY} steps (it clips "
                               "larger ones)", node=name, field="delay")
    if node.spike_mode != "binary":
        raise UnsupportedError("netx's LIF emits binary spikes only", node=name,
                               field="spike_mode")
    if node.bias.any() and node.bias_exp != NETX_BIAS_EXP:
        raise UnsupportedError(f"netx gives every neuron bias_exp={NETX_BIAS_EXP}", node=name,
                               field="bias_exp")
    return node


def _chain(graph: hub.Graph) -> tuple[list[tuple[str, hub.Node]], dict[str, tuple[str, hub.Node]]]:
    """The flat graph as a chain from its input, and each neuron's recurrent Linear, if any."""
    g = graph.flat()
    if len(g.inputs) != 1 or len(g.outputs) != 1:
        raise UnsupportedError("a netx network has one input and one output; this graph has "
                               f"{len(g.inputs)} and {len(g.outputs)}")
    succ: dict[str, list[str]] = {n: [] for n in g.nodes}
    pred: dict[str, list[str]] = {n: [] for n in g.nodes}
    for s, t in g.edges:
        succ[s].append(t)
        pred[t].append(s)
    rec: dict[str, tuple[str, hub.Node]] = {}
    for name, node in g.nodes.items():
        if (isinstance(node, hub.Linear) and pred[name] == succ[name] and len(pred[name]) == 1
                and isinstance(g.nodes[pred[name][0]], LoihiCUBA)):
            rec[pred[name][0]] = (name, node)
    skip = {name for name, _ in rec.values()}
    chain, name = [], g.inputs[0]
    while True:
        chain.append((name, g.nodes[name]))
        nxt = [t for t in succ[name] if t not in skip]
        if not nxt:
            break
        if len(nxt) > 1:
            raise UnsupportedError("netx networks are chains of layers; this node feeds "
                                   f"{len(nxt)} others", node=name)
        name = nxt[0]
        ins = [s for s in pred[name] if s not in skip]
        if len(ins) > 1:
            raise UnsupportedError("netx networks are chains of layers; this node has "
                                   f"{len(ins)} inputs", node=name)
    if len(chain) != len(g.nodes) - len(skip):
        raise UnsupportedError("netx networks are chains of layers; this graph branches")
    return [(n, node) for n, node in chain if not isinstance(node, (hub.Output, hub.Add))], rec


def plan_layers(graph: hub.Graph) -> list[Layer]:
    """The netx layers that express ``graph`` exactly; raises UnsupportedError naming the node."""
    chain, rec = _chain(graph)
    shapes = graph.flat().plan().output_shapes
    first_name, first = chain[0]
    layers = [Layer("input", {"shape": np.array(first.shape, dtype=np.int64)})]
    ops: list[tuple[str, hub.Node]] = []
    shape = tuple(first.shape)
    delayed: tuple[str, int] | None = None  # the previous neuron, if its output is delayed
    for name, node in chain[1:]:
        if isinstance(node, (hub.Linear, hub.Affine, hub.Conv2d, hub.SumPool2d, hub.Flatten)):
            ops.append((name, node))
            continue
        if isinstance(node, hub.Delay) and not ops and len(layers) > 1 and \
                node.delay.size > 1 and not (node.delay == node.delay.reshape(-1)[0]).all():
            _write_output_delays(layers[-1], name, node, delayed)
            continue
        if isinstance(node, hub.Delay) and not ops and len(layers) > 1:
            # a uniform delay right after a neuron is that neuron's axonal delay
            total = (delayed[1] if delayed else 0) + _uniform(name, node)
            if total > MAX_DELAY:
                raise UnsupportedError(f"netx's synaptic delays are 0 to {MAX_DELAY} steps (it "
                                       "clips larger ones)", node=name, field="delay")
            delayed = (name, total) if total else None
            continue
        original = node if isinstance(node, hub.IF) else None
        neuron = _check_neuron(name, exact_loihi(name, node) if original else node)
        if not ops and len(layers) == 1 and layers[0].neuron is None:
            # netx's input layer with a neuron: the network's input drives it directly
            if neuron.bias.any():
                raise UnsupportedError("netx builds the input layer's neuron without a bias",
                                       node=name, field="bias")
            layers[0].neuron = neuron
            delayed = (name, neuron.delay) if neuron.delay else None
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
        delayed = (name, neuron.delay) if neuron.delay else None
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


def _write_output_delays(layer: Layer, name: str, node: hub.Delay,
                         delayed: tuple[str, int] | None) -> None:
    """Per-neuron delays after a dense layer's neuron as that layer's ``delay`` key, one per
    output (as slayer's ``export_hdf5`` writes ``delay=True``; :func:`_output_delays`)."""
    out = int(layer.data.get("outFeatures", 0))
    values = node.delay.reshape(-1)
    why = None
    if layer.kind != "dense" or node.delay.ndim != 1 or values.size != out:
        why = "only after a dense layer's neuron, one delay per neuron"
    elif "bias" in layer.data:
        why = "not on a layer with a bias (Lava delays the input, not the biased output)"
    elif delayed is not None or "delay" in layer.data:
        why = "not on a layer whose inputs are delayed too (one 'delay' key per layer)"
    elif values.max() > MAX_DELAY:
        why = f"0 to {MAX_DELAY} steps"
    if why:
        raise UnsupportedError(f"netx holds delays that differ between neurons {why}",
                               node=name, field="delay")
    layer.data["delay"] = values.astype(np.float32)


def _uniform(name: str, node: hub.Delay) -> int:
    values = node.delay.reshape(-1)
    if values.size == 0 or not (values == values[0]).all():
        raise UnsupportedError("netx writes one axonal delay per layer (the next dense layer's "
                               "'delay' key); this Delay differs between neurons", node=name,
                               field="delay")
    return int(values[0])


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


def _write_delay(layer: Layer, name: str, delay: int) -> None:
    """Neuron ``name``'s axonal delay as the input delays of the dense layer it feeds: the
    ``delay`` key, one value per input, float32 as slayer's ``export_hdf5`` writes it (see
    :func:`_uniform_delay` for why this is exact)."""
    if layer.kind != "dense":
        why = ("netx 0.6's create_conv does not read a 'delay' key" if layer.kind == "conv" else
               "netx 0.6's RecurrentDense gives its recurrent synapse the forward delays and no "
               "weight exponent")
        raise UnsupportedError(f"this neuron feeds a {layer.kind} layer, and {why}; netx delays "
                               "spikes only in a dense layer's synapses", node=name,
                               field="delay")
    inputs = int(layer.data["inFeatures"])
    layer.data["delay"] = np.full(inputs, delay, dtype=np.float32)


def _bias_into_neuron(op_name: str, bias: np.ndarray, name: str, neuron: LoihiCUBA) -> None:
    """An Affine's bias reaches the neuron as ``bias << 6`` only if the current forgets itself."""
    if not bias.any():
        return
    if (neuron.i_decay != DECAY_UNITY).any():
        raise UnsupportedError("a synapse bias adds to Loihi's current, which decays; netx adds "
                               "a layer's bias to the voltage, which is the same only with "
                               f"i_decay={DECAY_UNITY}", node=op_name, field="bias")
    if neuron.bias.any():
        raise UnsupportedError("both the synapse and the neuron have a bias; give the neuron "
                               "one", node=op_name, field="bias")
    _integral(op_name, "bias", bias)


def _neuron_bias(neuron: LoihiCUBA, shape: tuple[int, ...]) -> np.ndarray | None:
    if not neuron.bias.any():
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
        if isinstance(op, hub.Affine) and neuron.bias.any():
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


# -- quantisation ---------------------------------------------------------------------------


def quantize(graph: hub.Graph, x: Any = None, *, weight_bits: int = 8) -> tuple[hub.Graph, dict]:
    """A Loihi fixed-point copy of a float LIF/IF/CubaLIF graph, and a report of what changed.

    Each neuron layer gets one integer scale ``k`` (a power of two, the largest that keeps its
    incoming weights within ``weight_bits`` signed bits): weights become ``round(w * gain * k)``
    (``gain * current_gain`` for CubaLIF), the threshold mantissa ``round(threshold * k)``,
    decays ``round((1 - beta) * 4096)`` and ``round((1 - alpha) * 4096)`` (an LIF's current
    is cleared every step: ``i_decay = 4096``; an IF keeps its voltage: ``v_decay = 0``). Only
    what Loihi's neuron can mean is converted: reset to zero at ``v_reset = 0``, no leak
    potential; ``>=`` becomes ``>`` (reported). The report has, per neuron, ``scale``,
    ``weight_error`` (largest absolute error of a weight, in float units),
    ``threshold_error``, ``decay_error``, the approximations made, and, when ``x`` is given, the
    spike agreement of the float and the quantised graph on ``x`` (``agreement``).
    """
    g = graph.flat()
    chain, rec = _chain(g)
    nodes = dict(g.nodes)
    report: dict[str, Any] = {"layers": {}}
    feeders: list[str] = []
    for name, node in chain:
        if isinstance(node, (hub.Linear, hub.Affine, hub.Conv2d)):
            feeders.append(name)
            continue
        if isinstance(node, (hub.Input, hub.Flatten, hub.SumPool2d)):
            continue
        if not isinstance(node, (hub.IF, hub.LIF, hub.CubaLIF)):
            raise UnsupportedError("quantize converts IF, LIF and CubaLIF neurons; not "
                                   f"{node.type}", node=name, field="type")
        layer = _quantize_layer(name, node, [*feeders, *([rec[name][0]] if name in rec else [])],
                                nodes, weight_bits)
        report["layers"][name] = layer
        feeders = []
    out = hub.Graph(nodes, g.edges, metadata=dict(g.metadata))
    if x is not None:
        x = torch.as_tensor(np.asarray(x, dtype=np.float32))
        a = hub.simulate(g, x)
        b = hub.simulate(out, x)
        report["agreement"] = float((a == b).double().mean())
        differ = (a != b).nonzero()
        report["first_divergence"] = differ[0].tolist() if len(differ) else None
    return out, report


def _quantize_layer(name: str, node: hub.Node, feeders: list[str], nodes: dict[str, hub.Node],
                    weight_bits: int) -> dict[str, Any]:
    notes = []
    if node.reset != "zero" or node.reset_timing != "same" or np.any(node.v_reset != 0):
        raise UnsupportedError("Loihi resets the voltage to zero in the spiking step",
                               node=name, field="reset")
    if node.spike_mode != "binary" or np.any(node.amplitude != 1):
        raise UnsupportedError("netx's Loihi neuron emits binary spikes", node=name,
                               field="spike_mode")
    if np.any(node.v_init != 0):
        raise UnsupportedError("Loihi's voltage starts at zero", node=name, field="v_init")
    if node.refractory:
        raise UnsupportedError("netx's LIF has no refractory period", node=name,
                               field="refractory")
    if isinstance(node, hub.CubaLIF) and node.current_order != "new":
        raise UnsupportedError("Loihi's voltage sees this step's current", node=name,
                               field="current_order")
    if getattr(node, "v_leak", np.zeros(())).any():
        raise UnsupportedError("Loihi's voltage decays to zero", node=name, field="v_leak")
    if node.comparison == ">=":
        notes.append("'>=' becomes Loihi's '>'")
    gain = np.asarray(getattr(node, "gain", 1.0), dtype=np.float64)
    if isinstance(node, hub.CubaLIF):
        gain = gain * node.current_gain
    if gain.size > 1:
        raise UnsupportedError("quantize needs one gain per layer", node=name, field="gain")
    gain = float(gain)
    largest = max((np.abs(np.asarray(nodes[f].weight, dtype=np.float64)).max() for f in feeders),
                  default=0.0) * abs(gain)
    for f in feeders:
        if isinstance(nodes[f], (hub.Affine, hub.Conv2d)) and nodes[f].bias.any():
            largest = max(largest, float(np.abs(nodes[f].bias).max()) * abs(gain))
    limit = (1 << (weight_bits - 1)) - 1
    scale = 2.0 ** np.floor(np.log2(limit / largest)) if largest > 0 else 1.0
    threshold = np.asarray(node.threshold, dtype=np.float64)
    if threshold.size > 1 and not (threshold == threshold.reshape(-1)[0]).all():
        raise UnsupportedError("netx takes one threshold per layer", node=name,
                               field="threshold")
    mant = int(np.round(float(threshold.reshape(-1)[0]) * scale))
    weight_error = 0.0
    for f in feeders:
        op = nodes[f]
        w = np.asarray(op.weight, dtype=np.float64) * gain * scale
        q = np.round(w)
        weight_error = max(weight_error, float(np.abs(q - w).max()) / scale)
        changes: dict[str, Any] = {"weight": q.astype(np.float32)}
        if isinstance(op, (hub.Affine, hub.Conv2d)):
            b = np.asarray(op.bias, dtype=np.float64) * gain * scale
            changes["bias"] = np.round(b).astype(np.float32)
            weight_error = max(weight_error, float(np.abs(np.round(b) - b).max()) / scale)
        nodes[f] = op.replace(**changes)
    beta = np.asarray(getattr(node, "beta", 1.0), dtype=np.float64)
    alpha = np.asarray(getattr(node, "alpha", 0.0), dtype=np.float64)
    v_decay = np.round((1 - beta) * DECAY_UNITY)
    i_decay = np.round((1 - alpha) * DECAY_UNITY)
    decay_error = float(max(np.abs(v_decay - (1 - beta) * DECAY_UNITY).max(),
                            np.abs(i_decay - (1 - alpha) * DECAY_UNITY).max())) / DECAY_UNITY
    for field, value in (("v_decay", v_decay), ("i_decay", i_decay)):
        if value.size > 1 and not (value == value.reshape(-1)[0]).all():
            raise UnsupportedError("netx takes one decay per layer", node=name, field=field)
    nodes[name] = LoihiCUBA(i_decay=int(i_decay.reshape(-1)[0]),
                            v_decay=int(v_decay.reshape(-1)[0]), threshold=mant,
                            delay=node.delay)  # the same axonal delay: netx writes it exactly
    return {"scale": scale, "weight_error": weight_error,
            "threshold_error": abs(mant / scale - float(threshold.reshape(-1)[0])),
            "decay_error": decay_error, "approximations": notes}


@hub.hookimpl
def hub_register_formats(register) -> None:
    register(NetxFormat())
