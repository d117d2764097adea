"""Export: a canonical graph as a Norse model (``SequentialState`` or :class:`NorseGraph`)."""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any

import numpy as np
import torch

import hub
from hub.errors import UnsupportedError
from hub.neurons import Neuron
from hub_plugins.torchnn import graph as torch_graph
from hub_plugins.norse import families as norse_families
from hub_plugins.norse.accepts import ACCEPTS
from hub_plugins.norse.common import NORSE_DT, NorseApproximationWarning, _f32, _t
from hub_plugins.norse.modules import NeuronCell, NorseGraph
from hub_plugins.norse.rates import _decay_rate, _inverse_rate
from hub_plugins.torchnn.layers import EXPORTED, StepDelay, Threshold, export_layer


def _check(node: hub.Node, name: str, strict: bool, notes: list[str]) -> None:
    """Refuse what no Norse cell computes, as ACCEPTS declares it (``strict=False``: note
    ``>=`` exported as ``>``, an approximation)."""
    ACCEPTS.check(node, name, skip=() if strict else ("comparison",))
    if node.spiking and node.comparison != ">":
        notes.append(f"{name}.comparison: '>=' exported as Norse's '>'")


def _starts_at(node: hub.Node, start: np.ndarray) -> bool:
    """Whether ``v_init`` is the cell's own start (``v_leak``, ``IAF``: ``v_reset``)."""
    init = np.broadcast_to(_f32(node.v_init), np.broadcast_shapes(node.v_init.shape, start.shape))
    return bool((init == np.broadcast_to(_f32(start), init.shape)).all())


def _export_neuron(node: hub.Node, name: str, dt: float, strict: bool,
                   notes: list[str]) -> torch.nn.Module:
    from norse.torch import (
        IAFCell,
        IAFParameters,
        LIBoxCell,
        LIBoxParameters,
        LICell,
        LIFBoxCell,
        LIFBoxParameters,
        LIFCell,
        LIFParameters,
        LIParameters,
    )
    from norse.torch.functional.reset import reset_subtract, reset_value

    _check(node, name, strict, notes)
    kind = node.type
    if kind == "IF":
        if node.reset != "zero":
            raise UnsupportedError("Norse's IAFCell resets to v_reset only", node=name,
                                   field="reset")
        cell = IAFCell(IAFParameters(v_th=_t(node.threshold), v_reset=_t(node.v_reset)), dt=dt)
        starts = _starts_at(node, node.v_reset)
        if (node.gain == 1).all() and starts:
            return cell
        return NeuronCell(cell, _t(node.gain), v_init=None if starts else _t(node.v_init))
    if kind == "Integrator":
        raise UnsupportedError("Norse has no integrator cell (LIBoxCell always leaks)",
                               node=name, field="type")
    starts = _starts_at(node, node.v_leak)
    v_init = None if starts else _t(node.v_init)
    current = node.current
    k = _decay_rate(node.beta, node.gain, name, "beta", dt)
    tmi = _inverse_rate(k, dt, name, "beta", strict, notes)
    plain_gain = k.shape == node.gain.shape and (k == node.gain).all()
    if current:
        ks = _decay_rate(node.alpha, None, name, "alpha", dt)
        tsi = _inverse_rate(ks, dt, name, "alpha", strict, notes)
        native = (plain_gain and starts and (node.current_gain == 1).all()
                  and node.current_order == "new"
                  and (not node.spiking or node.reset == "zero"))
        if native and node.spiking:
            return LIFCell(LIFParameters(tau_syn_inv=_t(tsi), tau_mem_inv=_t(tmi),
                                         v_leak=_t(node.v_leak), v_th=_t(node.threshold),
                                         v_reset=_t(node.v_reset)), dt=dt)
        if native:
            return LICell(LIParameters(tau_syn_inv=_t(tsi), tau_mem_inv=_t(tmi),
                                       v_leak=_t(node.v_leak)), dt=dt)
    if node.spiking:
        cell = LIFBoxCell(LIFBoxParameters(
            tau_mem_inv=_t(tmi), v_leak=_t(node.v_leak), v_th=_t(node.threshold),
            v_reset=_t(node.v_reset),
            reset_method=reset_subtract if node.reset == "subtract" else reset_value), dt=dt)
    else:
        cell = LIBoxCell(LIBoxParameters(tau_mem_inv=_t(tmi), v_leak=_t(node.v_leak)), dt=dt)
    if not current:
        return cell if plain_gain and starts else NeuronCell(cell, _t(node.gain), v_init=v_init)
    synapse = LIBoxCell(LIBoxParameters(tau_mem_inv=_t(tsi), v_leak=torch.as_tensor(0.0)),
                        dt=dt)
    return NeuronCell(cell, _t(node.gain), synapse, _t(node.current_gain), node.current_order,
                      v_init)


def _export_layer(node: hub.Node, name: str, input_shape: tuple[int, ...] | None
                  ) -> torch.nn.Module:
    """A layer node as torch.nn (the shared mapping); an ``Add`` junction as ``Identity``."""
    if node.type == "Add":
        return torch.nn.Identity()
    if node.type not in EXPORTED:
        raise UnsupportedError(f"Norse and torch have no {node.type} layer that the hub maps to; "
                               f"the layers are {', '.join(sorted(EXPORTED))} and Norse's cells",
                               node=name, field="type")
    return export_layer(node, input_shape)


def _threshold(node: hub.Node) -> torch.nn.Module:
    """A Threshold node spiking through Norse's SuperSpike (``heaviside``: ``z > 0``)."""
    from norse.torch.functional.threshold import threshold

    return Threshold(_t(node.threshold), node.comparison,
                     functools.partial(threshold, method="super", alpha=100.0))


def export_graph(graph: hub.Graph, dt: float | None = None, strict: bool = True) -> Any:
    """The Norse model of ``graph``: ``SequentialState`` for a chain, else :class:`NorseGraph`."""
    from norse.torch import SequentialState

    dt = float(dt if dt is not None else graph.metadata.get("dt") or NORSE_DT)
    notes: list[str] = []

    def export(name: str, node: hub.Node, shape: tuple[int, ...] | None
               ) -> tuple[torch.nn.Module | None, dict]:
        if isinstance(node, (hub.Input, hub.Output)):
            return None, {}
        if isinstance(node, Neuron):
            cell = norse_families.export_refractory(node, name, dt, strict, notes)
            return (cell if cell is not None else
                    _export_neuron(node, name, dt, strict, notes)), {}
        if isinstance(node, hub.Family):
            return norse_families.export_neuron(node, name, dt, strict, notes), {}
        if isinstance(node, hub.Threshold):
            return _threshold(node), {}
        return _export_layer(node, name, shape), {}

    modules, lay = torch_graph.layout(graph, export)
    for note in notes:
        warnings.warn(f"approximated for Norse: {note}", NorseApproximationWarning, stacklevel=3)
    lay = _fold_recurrent(modules, lay, dt)
    # a delay keeps its line inside, which a SequentialState would never empty
    if lay.is_chain() and not any(isinstance(m, StepDelay) for m in modules.values()):
        model = SequentialState(*(modules[n] for n in lay.line()[1:-1]))
        model.input_shape = lay.shapes[lay.inputs[0]]  # what hub.load needs to read it back
    else:
        model = NorseGraph(modules, lay)
    model.dt = dt
    return model


def _fold_recurrent(modules: dict[str, torch.nn.Module], lay: torch_graph.Layout,
                    dt: float) -> torch_graph.Layout:
    """Fold each ``Linear -> LIFCell`` with a recurrent ``Linear`` from its spikes back into
    it into one ``LIFRecurrentCell`` (Norse's own recurrent layer), under the input layer's
    name; likewise the families' cells into their recurrent forms (``LSNNCell`` into
    ``LSNNRecurrentCell``, ...). Returns the layout with the neuron and its recurrent weights
    folded away."""
    from norse.torch import LIFCell, LIFRecurrentCell

    forms = {LIFCell: LIFRecurrentCell, **norse_families.recurrent_forms()}

    consumers: dict[str, list[str]] = {n: [] for n in lay.order}
    for target in lay.order:
        for source in (*lay.forward.get(target, ()), *lay.recurrent.get(target, ())):
            consumers[source].append(target)
    folded: dict[str, str] = {}  # neuron or recurrent weights -> the input layer's name
    for n in lay.order:
        a, r = lay.forward.get(n, []), lay.recurrent.get(n, [])
        form = forms.get(type(modules.get(n)))
        if not (form is not None and len(a) == 1 and len(r) == 1):
            continue
        a, r = a[0], r[0]
        if not (lay.roles[a]["type"] == "Linear" and lay.roles[r]["type"] == "Linear"
                and consumers[a] == [n] and consumers[r] == [n] and lay.forward.get(r) == [n]
                and not lay.recurrent.get(r) and not lay.recurrent.get(a) and a not in folded):
            continue
        w_in, w_rec = modules[a].weight.detach(), modules[r].weight.detach()
        modules[a] = form(
            w_in.shape[1], w_in.shape[0], norse_families.cell_parameters(modules[n]), dt=dt,
            autapses=True, input_weights=torch.nn.Parameter(w_in.clone()),
            recurrent_weights=torch.nn.Parameter(w_rec.clone()))
        lay.roles[a] = {"type": form.__name__}
        folded[n] = folded[r] = a
        del modules[n], modules[r]
    if not folded:
        return lay
    rename = lambda s: folded.get(s, s)  # noqa: E731  the neuron's spikes leave the cell
    keep = [n for n in lay.order if n not in folded]
    return dataclasses.replace(
        lay, order=keep,
        forward={t: [rename(s) for s in lay.forward[t] if folded.get(s) != t]
                 for t in keep if t in lay.forward},
        recurrent={t: [rename(s) for s in lay.recurrent[t]] for t in keep if t in lay.recurrent},
        edges=[(rename(s), t) for s, t in lay.edges if t not in folded and folded.get(s) != t],
        roles={k: v for k, v in lay.roles.items() if k not in folded},
        names={k: v for k, v in lay.names.items() if k not in folded})
