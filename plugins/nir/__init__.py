"""The ``nir`` format: NIR graphs (``nir.NIRGraph`` objects and ``.nir`` files).

NIR is continuous-time; the hub is discrete-time. With a time step ``dt``, forward Euler maps one
onto the other:

===================  ==========================================================================
NIR node             canonical node
===================  ==========================================================================
LIF(tau, r, ...)     LIF(beta = 1 - dt/tau, gain = dt*r/tau)
IF(r, ...)           IF(gain = dt*r)
CubaLIF(tau_syn,     CubaLIF(alpha = 1 - dt/tau_syn, current_gain = dt*w_in/tau_syn,
  tau_mem, r, w_in)    beta = 1 - dt/tau_mem, gain = dt*r/tau_mem, current_order="new")
LI, CubaLI, I        LI, CubaLI, Integrator, likewise
Delay(delay)         Delay(steps = delay/dt), which must be a whole number of steps
Affine, Linear,      the same, with integer padding ('same'/'valid' resolved)
Conv1d, Conv2d,
SumPool2d,
AvgPool2d, Flatten,
Scale, Threshold
Identity             Add
===================  ==========================================================================

and back: ``tau = dt/(1-beta)``, ``r = gain/(1-beta)``. NIR's own semantics apply to a file with
nothing else in it: spike when ``v > v_threshold``, reset to ``v_reset`` in the same step. A
current-based neuron's voltage sees this step's current, as snnTorch, Norse and SpikingJelly
write and read NIR; ``load(..., current_order="previous")`` reads it as forward Euler of both
equations instead. Import keeps the file's own values of what export would not give back bit
for bit (:mod:`hub_plugins.nir.source`), so NIR -> hub -> NIR returns the file's parameters.

Export keeps what NIR cannot hold (``dt``, the comparison, reset kind and timing, spike mode,
refractory and axonal delays, exact discrete parameters) in each node's metadata under
``"hub"``, and the graph's ``dt`` in the graph's metadata, so hub -> NIR -> hub gives back the
identical graph. On import that metadata is used only if it still agrees with the node's NIR
parameters (a tool that edited the file without updating it gets a warning and NIR's values).
Another NIR reader ignores the metadata and sees NIR's semantics: a ``>=`` or subtract-reset
neuron then behaves differently there, which ``hub check`` (the conformance suite) shows.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import hub
import hub.hdf5
from hub.errors import FormatError, HubError, ParameterError, ShapeError, UnsupportedError
from hub.graph import check_dt
from hub.legalise import Accepts
from hub.node import Node, Shape

from . import layers as nir_layers, source as nir_source

META = "hub"
#: How a NIR ``CubaLIF``/``CubaLI`` without snn-hub metadata is read by default: the voltage
#: sees this step's synaptic current, as snnTorch, Norse and SpikingJelly compute it (see
#: docs/nir.md); ``"previous"`` is forward Euler of both equations.
CURRENT_ORDER = "new"
CURRENT_ORDERS = ("new", "previous")
#: Relative tolerance when checking stored metadata against a node's NIR parameters.
RTOL = 1e-5


class HubMetadataWarning(UserWarning):
    """A NIR file's snn-hub metadata disagrees with its NIR parameters and was ignored."""


class NIRFormat(hub.Format):
    name = "nir"
    description = "Neuromorphic Intermediate Representation (NIRGraph objects, .nir files)"
    suffixes = (".nir",)
    requires = ("nir",)
    install_hint = "nir"
    load_options = ("dt", "current_order")
    save_options = ("dt",)
    # imports and exports: set from the conversion tables at the end of this module

    def recognizes(self, obj: Any) -> bool:
        import nir

        return isinstance(obj, nir.NIRGraph)

    def read(self, path: Path, dt: float | None = None,
             current_order: str = CURRENT_ORDER) -> hub.Graph:
        return self.load(read_nir(path), dt=dt, current_order=current_order)

    def load(self, obj: Any, dt: float | None = None,
             current_order: str = CURRENT_ORDER) -> hub.Graph:
        """``current_order`` is how a ``CubaLIF``/``CubaLI`` without snn-hub metadata is read:
        ``"new"`` (the voltage sees this step's synaptic current, as snnTorch, Norse and
        SpikingJelly read and write NIR) or ``"previous"`` (forward Euler of both equations)."""
        dt = _check_dt(dt) if dt is not None else None
        graph = _import_graph(obj, dt, current_order=_check_current_order(current_order))
        plan = graph.plan()
        _check_declared_shapes(obj, graph, plan)
        _keep_source(obj, graph, plan.input_shapes, "")
        return graph

    def export(self, graph: hub.Graph, dt: float | None = None) -> Any:
        dt = dt if dt is not None else graph.metadata.get("dt")
        dt = _check_dt(dt) if dt is not None else None
        plan = graph.plan()
        return _export_graph(graph, dt, plan.input_shapes, plan.output_shapes, "")

    def write(self, graph: hub.Graph, path: Path, dt: float | None = None) -> None:
        """Write a ``.nir`` file, its arrays uncompressed: ``nir.write``'s default, gzip, takes
        about five times as long as the rest of the write on trained (random-looking) float
        weights, for files a third smaller; an uncompressed file is also one any HDF5 reader
        can read without a filter."""
        import nir

        nir.write(path, self.export(graph, dt=dt), compression=None)

    def run(self, native: Any, x: Any, dt: float | None = None,
            current_order: str = CURRENT_ORDER) -> Any:
        """Run a NIR graph or ``.nir`` file in NIR's own runtime, :mod:`hub_plugins.nir.runtime`
        (an interpreter of NIR's equations, independent of the hub's simulator)."""
        from .runtime import run

        return run(native, x, dt=dt, current_order=current_order)


@hub.hookimpl
def hub_register_formats(register) -> None:
    register(NIRFormat())


def read_nir(path: Path) -> Any:
    """The ``nir.NIRGraph`` in a file; a damaged, malformed or hostile file is a
    :class:`FormatError`. The file is checked by :func:`hub.hdf5.open_file` (nothing outside it,
    within the limits) before a byte of data is read."""
    import h5py
    import nir

    # What nir.read(path) does, in two steps: a damaged HDF5 structure is told apart from
    # NIR content that nir rejects, and the latter is traced to its node without reading
    # the file again (a corrupt file can make every h5py read slow).
    with hub.hdf5.open_file(path, nodes="nodes") as f:
        if not isinstance(f.get("node"), h5py.Group):
            raise FormatError("not a NIR file: no group 'node' (the graph)", file=path)
        try:
            tree = hub.hdf5.read_tree(f["node"])
        except HubError as e:
            raise e.at(file=path)
        except Exception as e:  # noqa: BLE001 (whatever h5py raises on a damaged file)
            raise FormatError(f"damaged HDF5 file (truncated or corrupted; export it again); "
                              f"h5py reports: {_describe(e)}", file=path) from None
        version = f["version"][()] if isinstance(f.get("version"), h5py.Dataset) else None
    try:
        # nir's type check rejects files that older nir versions wrote (an Output of shape
        # [1, 1, 1] fed by a [1]), and nir turns it off only at the top level, so a deep file
        # would be checked once per level; the hub's own shape check is exact and names nodes.
        return _build(tree, top=False)
    except Exception as e:  # noqa: BLE001 (whatever nir raises on content it rejects)
        node, field, reason = _diagnose(tree, "")
        raise FormatError(f"malformed NIR file (written by nir {_version(version)}); nir "
                          f"{nir.version} reports: {reason or _describe(e)}",
                          node=node, field=field) from None


def _unchecked(node: dict[str, Any]) -> dict[str, Any]:
    """A copy of a NIR node's dicts as read from a file (not its arrays: nir's from_dict edits
    the dicts it is given) with nir's type check off in every graph, nested ones too: nir turns
    it off only at the top level, and checks a deep file's types once per level."""
    top = dict(node)
    stack = [top]
    while stack:
        data = stack.pop()
        if data.get("type") != "NIRGraph" or not isinstance(data.get("nodes"), dict):
            continue
        data["type_check"] = False
        data["nodes"] = {k: dict(v) if isinstance(v, dict) else v
                         for k, v in data["nodes"].items()}
        stack.extend(v for v in data["nodes"].values() if isinstance(v, dict))
    return top


def _build(data: dict[str, Any], *, top: bool = True) -> Any:
    """The NIR node of a file's dicts, built without nir's per-level type check; each nested
    graph's edges are still checked (and the top graph's if ``top``: the hub checks them too)."""
    import nir

    node = nir.dict2NIRNode(_unchecked(data))
    stack = [(node, top)]
    while stack:
        graph, check = stack.pop()
        if not isinstance(graph, nir.NIRGraph):
            continue
        if check:
            graph.validate_structure()
        stack.extend((n, True) for n in graph.nodes.values())
    return node


def _version(value: Any) -> str:
    """The nir version a file says wrote it, for error messages."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value) if isinstance(value, str) else "an unknown version"


def _check_dt(dt: Any) -> float:
    """The time step given to the NIR format (``dt=``), checked as every dt is."""
    return check_dt(dt, field="dt")


def _check_current_order(value: Any) -> str:
    if value not in CURRENT_ORDERS:
        raise ParameterError(f"must be one of {', '.join(map(repr, CURRENT_ORDERS))}, got "
                             f"{value!r}", field="current_order")
    return value


def _need_dt(dt: float | None, what: str) -> float:
    if dt is None:
        raise HubError(f"{what} needs a time step: pass dt=<seconds> (--dt on the command line)",
                       field="dt")
    return dt


# -- import ---------------------------------------------------------------------------------


def _describe(e: Exception) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _diagnose(tree: Any, prefix: str) -> tuple[str | None, str | None, str]:
    """The node of a NIR file's contents (as read from hdf5) that nir cannot build, the field
    if nir's error shows it, and why: nir builds the whole graph at once and its errors name no
    node. ``(None, None, "")`` where no single node is to blame."""
    import nir

    nodes = tree.get("nodes") if isinstance(tree, dict) else None
    if not isinstance(nodes, dict):
        return None, None, ""
    for name, data in nodes.items():
        kind = data.get("type") if isinstance(data, dict) else None
        if kind == "NIRGraph":
            found = _diagnose(data, f"{prefix}{name}.")
            if found[0] is not None:
                return found
        try:
            nir.str2NIRNode(kind)
        except Exception:  # noqa: BLE001 (nir's way of saying the type is unknown)
            return f"{prefix}{name}", "type", (f"unknown NIR node type {kind!r}"
                                               if kind is not None else "the node has no 'type'")
        try:
            _build(data)
        except Exception as e:  # noqa: BLE001 (the first node nir cannot build)
            return f"{prefix}{name}", _field_of(e, data), _describe(e)
    return None, None, ""


def _field_of(e: Exception, data: dict[str, Any]) -> str | None:
    """The NIR field an exception from nir's constructors is about, where it says so."""
    if isinstance(e, KeyError) and e.args and isinstance(e.args[0], str):
        return e.args[0]
    quoted = re.findall(r"'([A-Za-z_][A-Za-z0-9_]*)'", str(e))
    return next((q for q in quoted if q in data or isinstance(e, TypeError)), None)


def _import_graph(nir_graph: Any, dt: float | None, stored_dt: float | None = None, *,
                  current_order: str = CURRENT_ORDER) -> hub.Graph:
    import nir

    meta = _plain(getattr(nir_graph, "metadata", None) or {}).get(META, {})
    if isinstance(meta, dict) and meta.get("dt") is not None:
        stored_dt = _check_dt(meta["dt"])
        if dt is not None and not math.isclose(dt, stored_dt, rel_tol=1e-12):
            warnings.warn(f"the graph was exported with dt={stored_dt}, but dt={dt} was given; "
                          f"nodes exported by snn-hub keep their exact discrete parameters",
                          UserWarning, stacklevel=4)
    effective = dt if dt is not None else stored_dt
    graph = hub.Graph(metadata={"dt": effective} if effective is not None else {})
    for name, node in nir_graph.nodes.items():
        try:
            if isinstance(node, nir.NIRGraph):
                graph.add(name, _import_graph(node, dt, stored_dt, current_order=current_order))
            else:
                graph.add(name, _import_node(node, effective, stored_dt, current_order))
        except HubError as e:
            raise e.at(node=name)
        except Exception as e:  # values nir accepted but that make no sense as parameters
            raise FormatError(f"cannot import this NIR {type(node).__name__}: "
                              f"{type(e).__name__}: {e}", node=name) from e
    for source, target in nir_graph.edges:
        graph.connect(source, target)
    return graph


def _import_node(node: Any, dt: float | None, stored_dt: float | None,
                 current_order: str = CURRENT_ORDER) -> Node:
    """The stored canonical node if its metadata is intact, else NIR's semantics with ``dt``
    (a current-based neuron's voltage seeing the current of ``current_order``)."""
    kind = type(node).__name__
    convert = _IMPORTERS.get(kind)
    if convert is None:
        raise UnsupportedError(f"NIR node type {kind!r} has no canonical counterpart; supported "
                               f"types are {', '.join(sorted(_IMPORTERS))}", field="type")
    _check_finite(node)
    if kind == "Input":
        _input_shape(node)  # the stored node's shape must not hide a fractional one in the file
    metadata = node.metadata if isinstance(node.metadata, dict) else {}
    meta = _plain(metadata).get(META)
    if isinstance(meta, dict):
        exported_for = _shape_hint(meta.pop(nir_layers.INPUT, None))
        for field in _HELD.get(meta.get("type"), ()):
            if field not in meta and hasattr(node, field):
                meta[field] = np.asarray(getattr(node, field))
        try:
            stored = hub.node_from_dict(meta)
        except HubError as e:
            warnings.warn(f"ignoring malformed snn-hub metadata ({e}); using NIR's parameters",
                          HubMetadataWarning, stacklevel=5)
        else:
            mismatch = _disagreement(stored, node, stored_dt, exported_for)
            if mismatch is None:
                return stored
            warnings.warn(f"snn-hub metadata disagrees with the NIR parameter {mismatch!r} (was "
                          "the file edited?); using NIR's parameters", HubMetadataWarning,
                          stacklevel=5)
    imported = convert(node, dt)
    if getattr(imported, "current", False) and current_order != imported.current_order:
        imported = imported.replace(current_order=current_order)
    return imported


def _check_finite(node: Any) -> None:
    """Refuse NaN and infinite NIR parameters, naming the NIR field (before conversion renames
    ``tau`` to ``beta`` and the like)."""
    for key, value in vars(node).items():
        if key in ("metadata", "input_type", "output_type"):
            continue
        if not isinstance(value, (np.ndarray, np.floating, float)):
            continue
        values = np.asarray(value)
        if values.dtype.kind != "f":
            continue
        bad = ~np.isfinite(values)
        if bad.any():
            what = "NaN" if np.isnan(values).any() else "infinite value"
            raise ParameterError(f"{what} in {int(bad.sum())} of {values.size} values", field=key)


def _shape_hint(value: Any) -> tuple[int, ...] | None:
    """The input shape a node was exported for, as its metadata holds it (if it is one)."""
    try:
        shape = tuple(int(s) for s in np.asarray(value, dtype=np.int64).ravel())
    except (TypeError, ValueError, OverflowError):
        return None
    return shape if value is not None and all(s > 0 for s in shape) else None


def _disagreement(stored: Node, nir_node: Any, dt: float | None,
                  shape: tuple[int, ...] | None = None) -> str | None:
    """The first NIR parameter that the stored canonical node, exported for an input of
    ``shape`` (else the shape the NIR node declares), does not reproduce, if any."""
    declared = (getattr(nir_node, "input_type", None) or {}).get("input")
    if shape is None and declared is not None:
        shape = tuple(int(s) for s in np.asarray(declared).ravel())
    try:
        again = _EXPORTERS[type(stored).__name__](stored, dt, shape)
    except (HubError, KeyError, ValueError, TypeError, AssertionError):
        return "type"
    if type(again).__name__ != type(nir_node).__name__:
        return "type"
    for key, value in vars(again).items():
        if key in ("metadata", "input_type", "output_type") or not isinstance(value, np.ndarray):
            continue
        theirs = np.asarray(getattr(nir_node, key, None))
        if value.shape == theirs.shape and np.array_equal(value, theirs):
            continue  # the usual case, a file the hub wrote: much faster than allclose
        try:
            if not np.allclose(np.broadcast_to(value, theirs.shape), theirs, rtol=RTOL, atol=0):
                return key
        except (TypeError, ValueError):
            return key
    return None


def _f(value: Any) -> np.ndarray:
    return np.asarray(value, dtype=np.float64)


def _euler(tau: Any, dt: float, field: str) -> tuple[np.ndarray, np.ndarray]:
    """Decay ``1 - dt/tau`` and the factor ``dt/tau``, checking tau."""
    tau = _f(tau)
    if (tau <= 0).any():
        raise ParameterError("time constants must be positive", field=field)
    k = dt / tau
    if (k > 1).any():
        raise ParameterError(f"dt={dt} is longer than the time constant (min {tau.min()}); "
                             "forward Euler would make the decay negative: choose a smaller dt",
                             field=field)
    return 1 - k, k


def _spiking(node: Any) -> dict[str, Any]:
    v_reset = getattr(node, "v_reset", None)
    return {"threshold": node.v_threshold,
            "v_reset": 0.0 if v_reset is None else v_reset,
            "comparison": ">", "reset": "zero", "reset_timing": "same"}


def _import_lif(n: Any, dt: float | None) -> Node:
    beta, k = _euler(n.tau, _need_dt(dt, "a NIR LIF"), "tau")
    return hub.LIF(beta=beta, gain=k * _f(n.r), v_leak=n.v_leak, **_spiking(n))


def _import_if(n: Any, dt: float | None) -> Node:
    return hub.IF(gain=_need_dt(dt, "a NIR IF") * _f(n.r), **_spiking(n))


def _cuba(n: Any, dt: float | None, what: str) -> dict[str, Any]:
    dt = _need_dt(dt, what)
    alpha, ks = _euler(n.tau_syn, dt, "tau_syn")
    beta, km = _euler(n.tau_mem, dt, "tau_mem")
    return {"alpha": alpha, "current_gain": ks * _f(n.w_in), "beta": beta, "gain": km * _f(n.r),
            "v_leak": n.v_leak}


def _import_cubalif(n: Any, dt: float | None) -> Node:
    return hub.CubaLIF(**_cuba(n, dt, "a NIR CubaLIF"), **_spiking(n))


def _import_cubali(n: Any, dt: float | None) -> Node:
    return hub.CubaLI(**_cuba(n, dt, "a NIR CubaLI"))


def _import_li(n: Any, dt: float | None) -> Node:
    beta, k = _euler(n.tau, _need_dt(dt, "a NIR LI"), "tau")
    return hub.LI(beta=beta, gain=k * _f(n.r), v_leak=n.v_leak)


def _import_i(n: Any, dt: float | None) -> Node:
    return hub.Integrator(gain=_need_dt(dt, "a NIR I (integrator)") * _f(n.r))


def _import_delay(n: Any, dt: float | None) -> Node:
    steps = _f(n.delay) / _need_dt(dt, "a NIR Delay")
    whole = np.round(steps)
    if not np.allclose(steps, whole, rtol=1e-9, atol=1e-6):
        raise UnsupportedError(f"delays {_f(n.delay).ravel()[:4]} are not whole multiples of "
                               f"dt={dt}; choose a dt that divides them", field="delay")
    return hub.Delay(delay=whole.astype(np.int64))


def _padding(n: Any, dims: int) -> tuple[int, ...]:
    padding = n.padding
    if isinstance(padding, (bytes, str)):
        padding = padding.decode() if isinstance(padding, bytes) else padding
        if padding == "valid":
            return (0,) * dims
        if padding == "same":
            if np.any(np.asarray(n.stride) != 1):
                # nir's own shape inference and a symmetric pad disagree here: refuse to guess
                raise UnsupportedError("padding='same' is defined only for stride 1; give the "
                                       "padding as integers", field="padding")
            kernel = np.asarray(n.weight).shape[2:]
            dilation = np.broadcast_to(np.asarray(n.dilation), (dims,))
            total = [int(d) * (int(k) - 1) for k, d in zip(kernel, dilation)]
            if any(t % 2 for t in total):
                raise UnsupportedError("padding='same' with an even kernel pads unevenly, which "
                                       "the canonical Conv cannot express", field="padding")
            return tuple(t // 2 for t in total)
        raise ParameterError(f"padding must be 'same', 'valid' or integers, got {padding!r}",
                             field="padding")
    return _ints(padding, "padding", dims)


def _conv(cls: type, dims: int) -> Callable[[Any, float | None], Node]:
    def convert(n: Any, dt: float | None) -> Node:
        return cls(weight=n.weight, bias=n.bias, stride=_ints(n.stride, "stride", dims),
                   padding=_padding(n, dims), dilation=_ints(n.dilation, "dilation", dims),
                   groups=_ints(n.groups, "groups", 1)[0])
    return convert


def _pool(cls: type) -> Callable[[Any, float | None], Node]:
    def convert(n: Any, dt: float | None) -> Node:
        return cls(kernel_size=_ints(n.kernel_size, "kernel_size", 2),
                   stride=_ints(n.stride, "stride", 2), padding=_ints(n.padding, "padding", 2))
    return convert


def _ints(value: Any, field: str, dims: int | None = None) -> tuple[int, ...]:
    """Integers as a NIR file holds them (any numeric dtype), ``dims`` of them if given (one
    value is repeated); a fractional, infinite or huge value is refused, never truncated."""
    try:
        values = np.asarray(value)
        if values.dtype.kind not in "biuf":
            raise TypeError(values.dtype)
        values = values.ravel() if dims is None else np.broadcast_to(values.ravel(), (dims,))
        exact = [int(v) for v in values]
    except (TypeError, ValueError, OverflowError):
        raise ParameterError(f"expected integers, got {value!r}", field=field) from None
    if any(e != v for e, v in zip(exact, values.tolist())) or any(abs(e) >= 1 << 63
                                                                   for e in exact):
        raise ParameterError(f"expected integers, got {values.tolist()!r}", field=field)
    return tuple(exact)


def _input_shape(n: Any) -> np.ndarray:
    shape = n.input_type.get("input")
    if shape is None:
        raise ShapeError("the Input node has no shape", field="shape")
    return np.asarray(_ints(shape, "shape"), dtype=np.int64)


_IMPORTERS: dict[str, Callable[[Any, float | None], Node]] = {
    "Input": lambda n, dt: hub.Input(shape=_input_shape(n)),
    "Output": lambda n, dt: hub.Output(),
    "Identity": lambda n, dt: hub.Add(),
    "Affine": lambda n, dt: hub.Affine(weight=n.weight, bias=n.bias),
    "Linear": lambda n, dt: hub.Linear(weight=n.weight),
    "Conv1d": _conv(hub.Conv1d, 1),
    "Conv2d": _conv(hub.Conv2d, 2),
    "SumPool2d": _pool(hub.SumPool2d),
    "AvgPool2d": _pool(hub.AvgPool2d),
    "Flatten": lambda n, dt: hub.Flatten(start_dim=_ints(n.start_dim, "start_dim", 1)[0],
                                         end_dim=_ints(n.end_dim, "end_dim", 1)[0]),
    "Scale": lambda n, dt: hub.Scale(scale=n.scale),
    "Threshold": lambda n, dt: hub.Threshold(threshold=n.threshold),
    "Delay": _import_delay,
    "IF": _import_if,
    "LIF": _import_lif,
    "CubaLIF": _import_cubalif,
    "LI": _import_li,
    "CubaLI": _import_cubali,
    "I": _import_i,
}


def _check_declared_shapes(nir_graph: Any, graph: hub.Graph, plan: Any = None) -> None:
    """Compare the shapes NIR Output nodes declare with the ones the hub infers."""
    import nir

    plan = plan if plan is not None else graph.plan()
    for name, node in nir_graph.nodes.items():
        if not isinstance(node, nir.Output) or name not in plan.input_shapes:
            continue
        declared = node.output_type.get("output")
        if declared is None:
            continue
        try:
            declared = _ints(declared, "shape")
        except HubError as e:
            raise e.at(node=name)
        inferred = plan.input_shapes[name]
        if declared == inferred:
            continue
        if inferred is not None and math.prod(declared) == math.prod(inferred):
            warnings.warn(f"Output node {name!r} declares shape {list(declared)} but receives "
                          f"{list(inferred)}; the same values, so reading it as "
                          f"{list(inferred)}", UserWarning, stacklevel=5)
            continue
        raise ShapeError(f"declares shape {list(declared)} but receives "
                         f"{list(inferred) if inferred else 'nothing'}", node=name, field="shape")


def _keep_source(nir_graph: Any, graph: hub.Graph, in_shapes: dict, prefix: str) -> None:
    """Keep, in each graph's metadata, the file's own values of the NIR fields that export
    would not give back bit for bit (:mod:`hub_plugins.nir.source`)."""
    import nir

    kept: dict[str, Any] = {}
    dt = graph.metadata.get("dt")
    for name, nir_node in nir_graph.nodes.items():
        node = graph.nodes[name]
        if isinstance(nir_node, nir.NIRGraph):
            _keep_source(nir_node, node, in_shapes, f"{prefix}{name}.")
            continue
        shape = node.shape if isinstance(node, hub.Input) else in_shapes.get(f"{prefix}{name}")
        try:
            with np.errstate(over="ignore"):
                again = _EXPORTERS[node.type](node, dt, shape)
        except (HubError, KeyError):
            continue  # no export to keep the values for
        nir_source.keep(nir_node, node, again, dt, kept, name, _HELD.get(node.type, ()))
    if kept:
        graph.metadata[nir_source.KEY] = kept


def _reads_as(nir_node: Any, node: Node, dt: float | None) -> bool:
    """Whether NIR's semantics read ``nir_node`` as ``node``, in every field NIR holds."""
    try:
        back = _IMPORTERS[type(nir_node).__name__](nir_node, dt)
    except (HubError, ValueError, TypeError, KeyError, AttributeError):  # no such node at all
        return False
    if type(back) is not type(node):
        return False
    return all(nir_source.same(value, getattr(node, key)) for key, value in back.params().items()
               if isinstance(value, (np.ndarray, tuple)))


# -- export ---------------------------------------------------------------------------------


def _export_graph(graph: hub.Graph, dt: float | None, in_shapes: dict, out_shapes: dict,
                  prefix: str) -> Any:
    import nir

    nodes = {}
    for name, node in graph.nodes.items():
        try:
            _check_name(name)
            if isinstance(node, hub.Graph):
                nodes[name] = _export_graph(node, dt, in_shapes, out_shapes, f"{prefix}{name}.")
            else:
                path = f"{prefix}{name}"
                shape = in_shapes.get(path) if not isinstance(node, hub.Input) else node.shape
                with np.errstate(over="ignore"):  # an overflow is refused, naming the field
                    nir_node = _EXPORTERS[node.type](node, dt, shape) \
                        if node.type in _EXPORTERS else _unsupported(node)
                _check_finite(nir_node)  # a dt of 1e308 would write tau = inf
                record = (graph.metadata.get(nir_source.KEY) or {}).get(name)
                if record is not None:  # the values of the NIR file this node came from
                    nir_node = nir_source.restore(nir_node, node, dt, record,
                                                  lambda n, kept: _reads_as(kept, n, dt))
                nir_node.metadata = {META: _meta(node)}
                if node.type in nir_layers.EXPORTERS and shape is not None:
                    # what NIR does not keep (pooling and grouped convolutions lose it)
                    nir_node.metadata[META][nir_layers.INPUT] = np.array(
                        nir_layers.first_shape(shape), dtype=np.int64)
                nodes[name] = nir_node
        except HubError as e:
            raise e.at(node=name)
    meta = {META: {"dt": dt}} if dt is not None else {}
    edges = [(_nir_end(graph, a, "source"), _nir_end(graph, b, "target")) for a, b in graph.edges]
    for i, edge in enumerate(edges):
        if edge in edges[:i]:
            raise UnsupportedError(f"NIR refuses an edge twice, and {edge} is here twice (as "
                                   "written or once subgraph ports are named by their "
                                   "subgraph); add a node to sum the two", node=edge[1],
                                   field="edges")
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=False)


def _check_name(name: str) -> None:
    """Refuse node names that HDF5 would read as a path (``a/b`` becomes nested groups)."""
    if "/" in name or "\0" in name or name in (".", ".."):
        raise UnsupportedError("NIR files store each node as an HDF5 group of this name, and "
                               "HDF5 reads '/' as a path (and '.' as the group itself); "
                               "rename the node", field="name")  # the caller adds the node


def _nir_end(graph: hub.Graph, ref: str, role: str) -> str:
    """An edge end as NIR holds it: a node of the same graph, a subgraph as a whole for its
    single input (output) port; NIR has no edge into a subgraph's other nodes."""
    if ref in graph.nodes:
        return ref
    sub_name, _, port = ref.partition(".")
    sub = graph.nodes.get(sub_name)
    ports = (sub.outputs if role == "source" else sub.inputs) if isinstance(sub, hub.Graph) else []
    if ports == [port]:
        return sub_name
    raise UnsupportedError(f"the edge {role} {ref!r} reaches inside subgraph {sub_name!r}, which "
                           "NIR cannot hold: a NIR edge names a whole subgraph, for its only "
                           f"{'output' if role == 'source' else 'input'} node; route the edge "
                           "through that node", node=sub_name, field="edges")


def _unsupported(node: Node) -> Any:
    raise UnsupportedError(f"NIR has no {node.type} node; supported types are "
                           f"{', '.join(sorted(_EXPORTERS))}", field="type")


#: Canonical fields that the NIR node itself holds bit for bit, under the same name: the
#: metadata leaves them out (a weight would otherwise be written twice) and import reads them
#: from the NIR node.
_HELD = {"Affine": ("weight",), "Linear": ("weight",), "Conv1d": ("weight",), "Conv2d": ("weight",)}


def _meta(node: Node) -> dict[str, Any]:
    """The node's exact canonical parameters NIR does not hold, as data its hdf5 writer stores."""
    out: dict[str, Any] = {"type": node.type}
    for key, value in node.params().items():
        if key in _HELD.get(node.type, ()):
            continue
        if isinstance(value, tuple):
            value = np.asarray(value, dtype=np.int64)
        elif isinstance(value, np.ndarray) and value.ndim == 0:
            value = value[()]  # h5py cannot compress a 0-d dataset; a numpy scalar keeps the dtype
        out[key] = value
    return out


def _plain(value: Any) -> Any:
    """Metadata as read back from hdf5 (numpy scalars, bytes) into plain Python values."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.dtype.kind in "SO":
        return value.astype(str).tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _full(value: np.ndarray, shape: Shape | None) -> np.ndarray:
    """A per-neuron array of ``shape`` (NIR wants explicit shapes), float64 or as given."""
    value = np.asarray(value)
    return np.array(np.broadcast_to(value, shape if shape is not None else value.shape))


def _inverse(decay: np.ndarray, dt: float, field: str) -> np.ndarray:
    """``dt / (1 - decay)``: the time constant that forward Euler turns into ``decay``."""
    k = 1 - decay.astype(np.float64)
    if (k <= 0).any() or (k > 1).any():
        raise UnsupportedError(f"a decay of {decay.ravel()[np.argmax(k <= 0)]} has no finite "
                               "positive time constant in NIR (decays must lie in [0, 1))",
                               field=field)
    return dt / k


def _export_spiking(node: Node, shape: Shape | None) -> dict[str, np.ndarray]:
    return {"v_threshold": _full(node.threshold, shape), "v_reset": _full(node.v_reset, shape)}


def _export_lif(node: Any, dt: float | None, shape: Shape | None) -> Any:
    import nir

    dt = _need_dt(dt, "exporting LIF to NIR")
    tau = _inverse(node.beta, dt, "beta")
    r = node.gain.astype(np.float64) / (1 - node.beta.astype(np.float64))
    return nir.LIF(tau=_full(tau, shape), r=_full(r, shape), v_leak=_full(node.v_leak, shape),
                   **_export_spiking(node, shape))


def _export_if(node: Any, dt: float | None, shape: Shape | None) -> Any:
    import nir

    r = node.gain.astype(np.float64) / _need_dt(dt, "exporting IF to NIR")
    return nir.IF(r=_full(r, shape), **_export_spiking(node, shape))


def _export_cuba(node: Any, dt: float | None, shape: Shape | None) -> dict[str, np.ndarray]:
    dt = _need_dt(dt, f"exporting {node.type} to NIR")
    tau_syn = _inverse(node.alpha, dt, "alpha")
    tau_mem = _inverse(node.beta, dt, "beta")
    w_in = node.current_gain.astype(np.float64) / (1 - node.alpha.astype(np.float64))
    r = node.gain.astype(np.float64) / (1 - node.beta.astype(np.float64))
    return {"tau_syn": _full(tau_syn, shape), "tau_mem": _full(tau_mem, shape),
            "r": _full(r, shape), "v_leak": _full(node.v_leak, shape), "w_in": _full(w_in, shape)}


def _export_cubalif(node: Any, dt: float | None, shape: Shape | None) -> Any:
    import nir

    return nir.CubaLIF(**_export_cuba(node, dt, shape), **_export_spiking(node, shape))


def _export_cubali(node: Any, dt: float | None, shape: Shape | None) -> Any:
    import nir

    return nir.CubaLI(**_export_cuba(node, dt, shape))


def _export_li(node: Any, dt: float | None, shape: Shape | None) -> Any:
    import nir

    dt = _need_dt(dt, "exporting LI to NIR")
    tau = _inverse(node.beta, dt, "beta")
    r = node.gain.astype(np.float64) / (1 - node.beta.astype(np.float64))
    return nir.LI(tau=_full(tau, shape), r=_full(r, shape), v_leak=_full(node.v_leak, shape))


def _export_integrator(node: Any, dt: float | None, shape: Shape | None) -> Any:
    import nir

    r = node.gain.astype(np.float64) / _need_dt(dt, "exporting Integrator to NIR")
    return nir.I(r=_full(r, shape))


def _export_delay(node: Any, dt: float | None, shape: Shape | None) -> Any:
    import nir

    seconds = node.delay.astype(np.float64) * _need_dt(dt, "exporting Delay to NIR")
    return nir.Delay(delay=_full(seconds, shape))


def _export_conv(node: Any, dt: float | None, shape: Shape | None) -> Any:
    import nir

    cls = nir.Conv1d if node.type == "Conv1d" else nir.Conv2d
    spatial = None if shape is None else (shape[1] if node.type == "Conv1d" else shape[1:])
    bias = _full(node.bias, (node.weight.shape[0],))
    return cls(input_shape=spatial, weight=np.array(node.weight), stride=node.stride,
               padding=node.padding, dilation=node.dilation, groups=node.groups, bias=bias)


def _export_pool(node: Any, dt: float | None, shape: Shape | None) -> Any:
    import nir

    cls = getattr(nir, node.type)
    return cls(kernel_size=np.array(node.kernel_size), stride=np.array(node.stride),
               padding=np.array(node.padding))


def _export_output(node: Any, dt: float | None, shape: Shape | None) -> Any:
    import nir

    return nir.Output(output_type={"output": np.array(shape if shape is not None else ())})


_EXPORTERS: dict[str, Callable[[Any, float | None, Shape | None], Any]] = {
    "Input": lambda n, dt, s: __import__("nir").Input(input_type={"input": np.array(n.shape)}),
    "Output": _export_output,
    # NIR sums a node's incoming edges like the hub does, so a junction is a unit Scale;
    # nir.Identity does not survive nir 1.0.8's own file round trip.
    "Add": lambda n, dt, s: __import__("nir").Scale(scale=_full(np.float32(1), s)),
    "Affine": lambda n, dt, s: __import__("nir").Affine(
        weight=np.array(n.weight), bias=_full(n.bias, (n.weight.shape[0],))),
    "Linear": lambda n, dt, s: __import__("nir").Linear(weight=np.array(n.weight)),
    "Conv1d": _export_conv,
    "Conv2d": _export_conv,
    "SumPool2d": _export_pool,
    "AvgPool2d": _export_pool,
    "Flatten": lambda n, dt, s: __import__("nir").Flatten(
        input_type={"input": None if s is None else np.array(s)}, start_dim=n.start_dim,
        end_dim=n.end_dim),
    "Scale": lambda n, dt, s: __import__("nir").Scale(scale=_full(n.scale, s)),
    "Threshold": lambda n, dt, s: __import__("nir").Threshold(threshold=_full(n.threshold, s)),
    "Delay": _export_delay,
    "IF": _export_if,
    "LIF": _export_lif,
    "CubaLIF": _export_cubalif,
    "LI": _export_li,
    "CubaLI": _export_cubali,
    "Integrator": _export_integrator,
}


_EXPORTERS.update(nir_layers.EXPORTERS)


# -- the neuron families of hub.families: carried by NIR's nearest neuron -------------------------
# NIR has no adaptive, quadratic, exponential, alpha or filter neuron. Each such node goes out as
# the NIR neuron that holds its linear part (its carrier) with the exact node in metadata["hub"],
# so hub -> NIR -> hub gives it back bit for bit; a reader without snn-hub sees the carrier only.


def _carrier_lif(node: Any, dt: float | None, shape: Shape | None, tau_steps: Any,
                 v_leak: Any) -> Any:
    import nir

    dt = _need_dt(dt, f"exporting {node.type} to NIR")
    tau = _f(tau_steps) * dt
    return nir.LIF(tau=_full(tau, shape), r=_full(np.float64(1.0), shape),
                   v_leak=_full(v_leak, shape), v_threshold=_full(node.threshold, shape),
                   v_reset=_full(getattr(node, "v_reset", np.float32(0)), shape))


def _carrier_cuba(node: Any, dt: float | None, shape: Shape | None, syn_rate: Any,
                  rate: Any, v_leak: Any) -> Any:
    import nir

    dt = _need_dt(dt, f"exporting {node.type} to NIR")
    one = _full(np.float64(1.0), shape)
    return nir.CubaLIF(tau_syn=_full(dt / _f(syn_rate), shape), tau_mem=_full(dt / _f(rate), shape),
                       r=one, v_leak=_full(v_leak, shape), w_in=one,
                       v_threshold=_full(node.threshold, shape),
                       v_reset=_full(getattr(node, "v_reset", np.float32(0)), shape))


_EXPORTERS.update({
    "ALIF": lambda n, dt, s: __import__("nir").CubaLIF(**_export_cuba(n, dt, s),
                                                       **_export_spiking(n, s)),
    "AdExLIF": lambda n, dt, s: _carrier_cuba(n, dt, s, n.syn_rate, n.rate, n.v_leak),
    "AlphaLIF": lambda n, dt, s: _carrier_cuba(n, dt, s, 1 - _f(n.alpha), 1 - _f(n.beta), 0.0),
    "Izhikevich": lambda n, dt, s: _carrier_lif(n, dt, s, 1 / _f(n.rate), n.v_reset),
    "QIF": lambda n, dt, s: _carrier_lif(n, dt, s, n.tau, n.v_rest),
    "EIF": lambda n, dt, s: _carrier_lif(n, dt, s, n.tau, n.v_rest),
    "SynapseFilter": lambda n, dt, s: __import__("nir").LI(
        tau=_full(_need_dt(dt, "exporting SynapseFilter to NIR") / _f(n.rate), s),
        r=_full(1 / _f(n.rate), s), v_leak=_full(np.float64(0.0), s)),
})
#: The canonical types NIR carries only through snn-hub's metadata (no NIR node computes them).
CARRIED = frozenset({"ALIF", "AdExLIF", "AlphaLIF", "Izhikevich", "QIF", "EIF", "SynapseFilter"})


# Every canonical type that has a NIR counterpart converts both ways.
NIRFormat.imports = NIRFormat.exports = frozenset(_EXPORTERS)
#: Every exported node keeps all its fields: what NIR cannot hold travels in the "hub" metadata.
NIRFormat.accepts = Accepts({tuple(sorted(_EXPORTERS)): ()}, name="NIR", notes=[
    "every field NIR has no place for travels in the node's 'hub' metadata"])
