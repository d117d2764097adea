"""Import: a NIR graph as a canonical graph, one importer per NIR node type."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

import hub
import hub.hdf5
from hub.errors import FormatError, HubError, ParameterError, ShapeError, UnsupportedError
from hub.node import Node
from hub_plugins.nir import layers as nir_layers
from hub_plugins.nir import source as nir_source
from hub_plugins.nir.common import (
    CURRENT_ORDER,
    META,
    RTOL,
    HubMetadataWarning,
    _check_dt,
    _check_finite,
    _f,
    _need_dt,
    _plain,
)
from hub_plugins.nir.writing import _EXPORTERS, _HELD


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
