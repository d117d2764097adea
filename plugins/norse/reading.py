"""Import: a Norse model, read from what its forward computes, or an exported one."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

import hub
from hub.errors import FormatError, HubError, UnsupportedError
from hub_plugins.torchnn import graph as torch_graph
from hub_plugins.torchnn import trace as torch_trace
from hub_plugins.norse import families as norse_families
from hub_plugins.norse.common import HEAVISIDE_METHODS, _f32, _np
from hub_plugins.norse.modules import NeuronCell, NorseGraph
from hub_plugins.torchnn.layers import import_module


def _k(cell: Any, field: str = "tau_mem_inv") -> np.ndarray:
    """``dt * tau_inv`` exactly as the cell computes it (a float32 product)."""
    return _np(cell.dt * torch.as_tensor(getattr(cell.p, field)).detach().float())


def _start(value: Any) -> np.ndarray:
    """A cell's starting voltage as ``v_init``: one scalar where every neuron starts alike (Norse
    keeps no separate initial value, and the canonical default is a scalar)."""
    v = _np(value)
    return v.ravel()[:1].reshape(()) if v.size and (v == v.ravel()[0]).all() else v


def _one_minus(k: np.ndarray) -> np.ndarray:
    return _f32(np.float32(1) - k)


def _method(cell: Any, name: str) -> None:
    method = getattr(cell.p, "method", "super")
    if method not in HEAVISIDE_METHODS:
        raise UnsupportedError(f"method {method!r} does not spike with heaviside(v - v_th); "
                               f"supported: {', '.join(HEAVISIDE_METHODS)}", node=name,
                               field="method")


def _reset(cell: Any, name: str) -> str:
    from norse.torch.functional.reset import reset_subtract, reset_value

    method = getattr(cell.p, "reset_method", reset_value)
    if method is reset_value:
        return "zero"
    if method is reset_subtract:
        return "subtract"
    raise UnsupportedError(f"reset_method {getattr(method, '__name__', method)!r} is neither "
                           "reset_value nor reset_subtract", node=name, field="reset_method")


def _spiking_fields(cell: Any, reset: str = "zero") -> dict[str, Any]:
    return {"threshold": _np(cell.p.v_th), "v_reset": _np(cell.p.v_reset), "comparison": ">",
            "reset": reset, "reset_timing": "same"}


def _import_cell(cell: Any, name: str) -> hub.Node:
    """The canonical neuron of one Norse cell (or time-looping module)."""
    importer = next((_cells()[c] for c in type(cell).__mro__ if c in _cells()), None)
    if importer is not None:
        return importer(cell, name)
    other = norse_families.import_cell(cell, name)
    if other is not None:
        return other
    raise UnsupportedError(f"{type(cell).__name__} has no canonical counterpart here; supported "
                           "are LIFCell, LIF, LIFBoxCell, LICell, LI, LIBoxCell, IAFCell, IAF, "
                           "LIFRecurrentCell, LIFRecurrent, LSNNCell, LSNN, LSNNRecurrentCell, "
                           "LSNNRecurrent, IzhikevichCell, Izhikevich, IzhikevichRecurrentCell, "
                           "IzhikevichRecurrent, LIFExCell, LIFEx, LIFAdExCell, LIFAdEx (and "
                           "their recurrent forms), LIFRefracCell", node=name, field="type")


def _import_neuron_cell(cell: NeuronCell, name: str) -> hub.Node:
    """The hub's own cell: a Norse neuron with its gain, start and optional synapse."""
    from norse.torch import LIBoxCell

    inner = _import_cell(cell.neuron, name)
    if cell.v_init is not None:
        inner = inner.replace(v_init=_np(cell.v_init))
    gain = _np(cell.gain)
    if cell.synapse is None:
        return inner.replace(gain=gain)
    if not isinstance(cell.synapse, LIBoxCell) or (_np(cell.synapse.p.v_leak) != 0).any():
        raise UnsupportedError("the synapse must be an LIBoxCell with v_leak 0", node=name,
                               field="synapse")
    fields = {k: v for k, v in inner.params().items() if k not in ("gain",)}
    cls = hub.CubaLIF if isinstance(inner, hub.LIF) else hub.CubaLI
    if not isinstance(inner, (hub.LIF, hub.LI)):
        raise UnsupportedError("a synapse drives an LIFBoxCell or LIBoxCell only", node=name,
                               field="neuron")
    return cls(**fields, gain=gain, alpha=_one_minus(_k(cell.synapse)),
               current_gain=_np(cell.current_gain), current_order=cell.order)


def _import_lif(cell: Any, name: str) -> hub.Node:
    _method(cell, name)
    k, ks = _k(cell), _k(cell, "tau_syn_inv")
    return hub.CubaLIF(alpha=_one_minus(ks), beta=_one_minus(k), gain=k, current_gain=1.0,
                       v_leak=_np(cell.p.v_leak), v_init=_start(cell.p.v_leak),
                       current_order="new", **_spiking_fields(cell))


def _import_lifbox(cell: Any, name: str) -> hub.Node:
    _method(cell, name)
    k = _k(cell)
    return hub.LIF(beta=_one_minus(k), gain=k, v_leak=_np(cell.p.v_leak),
                   v_init=_start(cell.p.v_leak), **_spiking_fields(cell, _reset(cell, name)))


def _import_li(cell: Any, name: str) -> hub.Node:
    k, ks = _k(cell), _k(cell, "tau_syn_inv")
    return hub.CubaLI(alpha=_one_minus(ks), beta=_one_minus(k), gain=k, current_gain=1.0,
                      v_leak=_np(cell.p.v_leak), v_init=_start(cell.p.v_leak),
                      current_order="new")


def _import_libox(cell: Any, name: str) -> hub.Node:
    k = _k(cell)
    return hub.LI(beta=_one_minus(k), gain=k, v_leak=_np(cell.p.v_leak),
                  v_init=_start(cell.p.v_leak))


def _import_iaf(cell: Any, name: str) -> hub.Node:
    _method(cell, name)
    return hub.IF(gain=1.0, v_init=_start(cell.p.v_reset), **_spiking_fields(cell))


@functools.cache
def _cells() -> dict[type, Callable[[Any, str], hub.Node]]:
    """Norse cell class -> its importer (Norse is imported on first use); the neuron families'
    cells are :mod:`hub_plugins.norse.families`'."""
    from norse.torch import (IAF, LI, LIF, IAFCell, LIBoxCell, LICell, LIFBoxCell, LIFCell,
                             LIFRecurrent, LIFRecurrentCell)

    return {NeuronCell: _import_neuron_cell,
            **dict.fromkeys((LIFCell, LIF, LIFRecurrentCell, LIFRecurrent), _import_lif),
            LIFBoxCell: _import_lifbox, **dict.fromkeys((LICell, LI), _import_li),
            LIBoxCell: _import_libox, **dict.fromkeys((IAFCell, IAF), _import_iaf)}


def _import_layer(module: torch.nn.Module, name: str) -> hub.Node:
    """A torch.nn layer (the shared mapping); ``Identity``, an exported junction, as ``Add``."""
    if isinstance(module, torch.nn.Identity):
        return hub.Add()
    try:
        node = import_module(module)
    except UnsupportedError as e:
        raise e.at(node=name) from None
    if node is None:
        raise UnsupportedError(f"{type(module).__name__} does nothing at inference; leave it "
                               "out of a Norse step model", node=name, field="type")
    return node


def _traced(model: torch.nn.Module) -> bool:
    """Whether ``model`` is a class of its own (``norse.torch.models``, a user's) anywhere
    below its sequentials, whose ``forward`` only tracing reads."""
    from norse.torch import Lift, SequentialState

    if isinstance(model, NorseGraph):  # the hub's own export: read from its structure
        return False
    if isinstance(model, (torch.nn.Sequential, SequentialState)):
        return any(_traced(child) for child in model.children())
    if isinstance(model, Lift):
        return _traced(model.lifted_module)
    return not (_is_cell(model) or not any(True for _ in model.children()))


def framework() -> torch_trace.Framework:
    """Norse as the shared tracer sees it: cells take their state and return the next."""

    def split(module: Any, args: tuple, kwargs: dict) -> tuple[Any, Any]:
        state = args[1] if len(args) > 1 else None
        return args[0], (state if state is not None else ())

    def piece(call: torch_trace.Call) -> torch_trace.Piece:
        if call.fresh:
            raise UnsupportedError("the cell starts from no state at every step", field="state")
        if call.used != {0}:
            raise UnsupportedError("the cell's state is read as an output; the hub reads its "
                                   "spikes (or a leaky integrator's voltage)", field="state")
        from norse.torch import LICell, LILinearCell

        cell = call.module
        if isinstance(cell, LILinearCell):  # li_step: LICell's update on linear(x, weights)
            inner = _import_cell(LICell(p=cell.p, dt=cell.dt), call.path)
            return torch_trace.Piece(
                {"_linear": hub.Linear(weight=_np(cell.input_weights)), "": inner},
                [("<in>", "_linear"), ("_linear", "")])
        from norse.torch import LIFRecurrent, LIFRecurrentCell

        if isinstance(cell, (LIFRecurrentCell, LIFRecurrent, *norse_families.recurrent_cells())):
            return norse_families.recurrent_piece(cell, call.path)
        return torch_trace.Piece({"": _import_cell(cell, call.path)})

    def is_neuron(module: Any) -> bool:
        from norse.torch import LILinearCell
        from norse.torch.module import snn

        return isinstance(module, (NeuronCell, LILinearCell, snn.SNNCell, snn.SNN,
                                   snn.SNNRecurrentCell, snn.SNNRecurrent))

    return torch_trace.Framework("norse", is_neuron, piece, split)


def _is_cell(module: Any) -> bool:
    return (isinstance(module, NeuronCell)
            or type(module).__module__.startswith("norse.torch.module"))


def _recurrent_nodes(cell: Any, name: str, graph: hub.Graph) -> tuple[str, str]:
    """Add an ``LIFRecurrentCell``'s input weights, neuron and recurrent weights; returns the
    node its input enters and the node its spikes leave."""
    graph.add(f"{name}.input_weights", hub.Linear(weight=_np(cell.input_weights)))
    graph.add(f"{name}.lif", _import_cell(cell, name))
    graph.add(f"{name}.recurrent_weights", hub.Linear(weight=_np(cell.recurrent_weights)))
    graph.connect(f"{name}.input_weights", f"{name}.lif")
    graph.connect(f"{name}.lif", f"{name}.recurrent_weights")
    graph.connect(f"{name}.recurrent_weights", f"{name}.lif")
    return f"{name}.input_weights", f"{name}.lif"


def _recurrent_cell(cell: Any, name: str, graph: hub.Graph, source: str) -> str:
    """Add an ``LIFRecurrentCell`` after ``source`` in a chain; returns its neuron."""
    first, last = _recurrent_nodes(cell, name, graph)
    graph.connect(source, first)
    return last


def _leaves(model: torch.nn.Module, prefix: str = "") -> list[tuple[str, torch.nn.Module]]:
    """The modules of (nested) sequentials in order; ``Lift`` unwrapped."""
    from norse.torch import Lift

    if isinstance(model, torch.nn.Sequential):
        out = []
        for key, child in model.named_children():
            out += _leaves(child, f"{prefix}{key}.")
        return out
    if isinstance(model, Lift):
        return _leaves(model.lifted_module, prefix)
    return [(prefix.rstrip(".") or type(model).__name__.lower(), model)]


def _first_shape(layers: list[tuple[str, torch.nn.Module]]) -> tuple[int, ...] | None:
    from norse.torch import LIFRecurrent, LIFRecurrentCell

    for _, module in layers:
        if isinstance(module, torch.nn.Linear):
            return (module.in_features,)
        if isinstance(module, (LIFRecurrentCell, LIFRecurrent,
                               *norse_families.recurrent_cells())):
            return (int(module.input_size),)
        if not _is_cell(module) and not isinstance(module, torch.nn.Identity):
            return None
    return None


def import_model(model: Any, dt: float | None = None,
                 input_shape: tuple[int, ...] | None = None) -> hub.Graph:
    """The canonical graph of a Norse model (see the module docstring)."""
    from norse.torch import LIFRecurrent, LIFRecurrentCell

    if not isinstance(model, torch.nn.Module):
        raise FormatError(f"a Norse model is a torch.nn.Module, not {type(model).__name__}")
    if isinstance(model, NorseGraph):
        return _import_graph(model, dt)
    if _traced(model):
        graph = torch_trace.import_model(model, framework(), input_shape=input_shape).graph
        dts = {float(m.p.dt if hasattr(m, "p") and hasattr(m.p, "dt") else m.dt)
               for m in model.modules() if _is_cell(m) and hasattr(m, "dt")}
        if dt is not None or len(dts) == 1:
            graph.metadata["dt"] = dt if dt is not None else dts.pop()
        return graph
    layers = _leaves(model)
    shape = input_shape or getattr(model, "input_shape", None) or _first_shape(layers)
    if shape is None:
        raise HubError("the model does not say its input shape (it starts with a layer of any "
                       "size): pass input_shape=(C, H, W) (without batch and time)",
                       field="input_shape")
    dts = {float(m.dt) for _, m in layers if hasattr(m, "dt") and _is_cell(m)}
    dts |= {float(m.neuron.dt) for _, m in layers if isinstance(m, NeuronCell)}
    graph = hub.Graph(metadata={"dt": dt if dt is not None else
                                (dts.pop() if len(dts) == 1 else getattr(model, "dt", None))})
    if graph.metadata["dt"] is None:
        del graph.metadata["dt"]
    graph.add("input", hub.Input(shape=tuple(int(s) for s in shape)))
    at = "input"
    used: set[str] = set()
    for path, module in layers:
        name = re.sub(r"[^0-9A-Za-z_]", "_", path)
        while name in used or name in ("input", "output"):
            name += "_"
        used.add(name)
        try:
            if isinstance(module, (LIFRecurrentCell, LIFRecurrent,
                                   *norse_families.recurrent_cells())):
                at = _recurrent_cell(module, name, graph, at)
                continue
            node = _import_cell(module, name) if _is_cell(module) else _import_layer(module, name)
        except HubError as e:
            raise e if e.node else e.at(node=name)
        graph.add(name, node)
        graph.connect(at, name)
        at = name
    graph.add("output", hub.Output())
    graph.connect(at, "output")
    from hub_plugins.norse.runtime import run  # which runs other models with this module

    torch_trace.prove_outputs(graph, lambda x: run(torch_trace.copy_model(model).eval(), x))
    return graph


def _import_graph(model: NorseGraph, dt: float | None) -> hub.Graph:
    from norse.torch import LIFRecurrent, LIFRecurrentCell

    recurrent_cells = (LIFRecurrentCell, LIFRecurrent, *norse_families.recurrent_cells())

    def node_of(name: str, module: torch.nn.Module, role: dict) -> Any:
        if isinstance(module, recurrent_cells):
            piece = hub.Graph()
            first, last = _recurrent_nodes(module, name, piece)
            return torch_graph.Expanded(piece, first, last)
        return _import_cell(module, name) if _is_cell(module) else _import_layer(module, name)

    graph = torch_graph.read(model, node_of)
    stored = getattr(model, "dt", None)
    if dt is not None or stored is not None:
        graph.metadata["dt"] = dt if dt is not None else stored
    return graph
