"""Export: a canonical graph as a NIR graph, one exporter per node type; the neuron families
carried by NIR's nearest neuron with the rest in the ``"hub"`` metadata."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

import hub
import hub.hdf5
from hub.errors import HubError, UnsupportedError
from hub.node import Node, Shape
from hub_plugins.nir import layers as nir_layers
from hub_plugins.nir import source as nir_source
from hub_plugins.nir.common import META, _check_finite, _f, _need_dt

# -- export ---------------------------------------------------------------------------------


def _export_graph(graph: hub.Graph, dt: float | None, in_shapes: dict, out_shapes: dict,
                  prefix: str) -> Any:
    import nir
    from hub_plugins.nir.reading import _reads_as  # which imports this module

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


def _carrier_resonator(node: Any, dt: float | None, shape: Shape | None) -> Any:
    """A Resonator's carrier: NIR has no resonator, nor a neuron whose input (the real and the
    imaginary halves) is twice its output, so it rides on the projection onto the real half (a
    ``Linear``, or a 1x1 ``Conv2d`` over ``[2C, H, W]``), which keeps the graph's shapes."""
    shape = tuple(shape or ())
    if len(shape) not in (1, 3):
        raise UnsupportedError(f"NIR carries a Resonator over [2C] or [2C, H, W] inputs only, "
                               f"not {list(shape)}", field="type")
    half = shape[0] // 2
    projection = np.concatenate([np.eye(half), np.zeros((half, half))], 1).astype(np.float32)
    if len(shape) == 1:
        return _EXPORTERS["Linear"](hub.Linear(weight=projection), dt, shape)
    return _EXPORTERS["Conv2d"](hub.Conv2d(weight=projection[..., None, None]), dt, shape)


_EXPORTERS["Resonator"] = _carrier_resonator
