r"""SpikingJelly's other neurons, its synapse filter and its recurrent containers.

Read from the installed source (``spikingjelly/_ops/izhikevich/cpu.py``, ``_ops/qif/cpu.py``,
``functional/layer.py`` ``synapse_filter_step``, ``layer/container.py``), Python-float
parameters rounded to float32 where they meet a float32 tensor:

==================================  ===============================================================
SpikingJelly                        one step, and the canonical node
==================================  ===============================================================
``IzhikevichNode``                  ``h = v + (x + a0*(v - v_rest)*(v - v_c) - w) / tau``;
                                    ``s = h >= v_threshold``;
                                    ``w = w + (a*(h - v_rest) - w) / tau_w + b*s``; reset as
                                    every node. ``QIF(tau, a0, v_rest, v_c, tau_w, coupling = a,
                                    w_jump = b, w_init = w_rest)``: its float operations
``QIFNode``                         the same without ``w``: ``QIF`` with ``coupling = w_jump =
                                    0`` (``w`` stays 0, and ``(x + q) - 0`` is ``x + q``)
``EIFNode``                         ``h = v + (x + v_rest - v + delta_T*exp((v - theta_rh) /
                                    delta_T)) / tau``: ``EIF(tau, delta_t = delta_T, theta_rh,
                                    v_rest)``, its float operations
``layer.SynapseFilter(tau)``        ``y = y - (1 - x)*y*(1/tau) + x``: ``SynapseFilter(rate =
                                    1/tau)``; ``learnable=True``: ``rate = sigmoid(w)`` (float32),
                                    frozen at its current ``w``
``LinearRecurrentContainer(m)``     ``y = m(rc(cat(x, y_prev)))``: a subgraph, ``Affine(rc's
                                    x columns, bias)`` from the input and a recurrent
                                    ``Linear(rc's y columns)`` from ``m``'s output both into
                                    ``m``'s nodes
``ElementWiseRecurrentContainer``   ``y = m(f(y_prev, x))`` with ``f`` an addition: a subgraph,
                                    ``m``'s nodes fed by the input and, recurrently, by their own
                                    output
==================================  ===============================================================

``rc(cat(x, y))`` is one dot product over both halves; the subgraph sums the two halves'
products, then adds: exact on the exact tier, a float-equivalent rewrite otherwise.
Export folds that pattern (a dense layer into an ``Add`` fed recurrently by a ``Linear`` from
the neuron the ``Add`` drives) back into a ``LinearRecurrentContainer``, and a neuron fed back
its own output into an ``ElementWiseRecurrentContainer`` with ``torch.add``.

Refused, naming the class and why: ``KLIFNode``
(its learnable ``k`` rescales and rectifies the voltage before firing), ``LIAFNode`` (its output
is an arbitrary activation of the voltage, not spikes), ``GatedLIFNode`` (learnable gates mix
several leak and reset modes, over a fixed ``T``), ``PSN``, ``MaskedPSN``, ``SlidingPSN`` (the
parallel spiking neurons weight a window of past inputs with learned weights, a different
state than any neuron's), and an ``ElementWiseRecurrentContainer`` whose function is not an
addition.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

import hub
from hub.errors import UnsupportedError
from hub.node import Node

#: SpikingJelly classes (by name) refused whole, with why.
REFUSED = {
    "KLIFNode": "its learnable k rescales and rectifies the voltage (relu(k * h)) before "
                "firing, which no canonical neuron computes",
    "LIAFNode": "its output is an activation of the voltage, not spikes: an analog neuron",
    "GatedLIFNode": "learnable gates blend several leak, reset and integration modes over a "
                    "fixed number of steps T",
    "PSN": "a parallel spiking neuron weights all T inputs with a learned matrix at once: "
           "a different state than any neuron's step",
    "MaskedPSN": "a parallel spiking neuron weights a window of past inputs with learned "
                 "weights: a different state than any neuron's step",
    "SlidingPSN": "a parallel spiking neuron weights a window of past inputs with learned "
                  "weights: a different state than any neuron's step",
}


def _f32(value: Any) -> np.float32:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().float().item()
    return np.float32(value)


def _import_qif(module: Any) -> Node:
    from hub_plugins.spikingjelly.neurons import _spiking

    fields = _spiking(module)
    adaptive = hasattr(module, "tau_w")
    extra = {}
    if adaptive:
        extra = {"tau_w": _f32(module.tau_w), "coupling": _f32(module.a),
                 "w_jump": _f32(module.b), "w_init": _f32(module._memories_rv.get("w"))}
    return hub.QIF(tau=_f32(module.tau), a0=_f32(module.a0), v_rest=_f32(module.v_rest),
                   v_c=_f32(module.v_c), **extra, **fields)


def _import_eif(module: Any) -> Node:
    from hub_plugins.spikingjelly.neurons import _spiking

    return hub.EIF(tau=_f32(module.tau), delta_t=_f32(module.delta_T),
                   theta_rh=_f32(module.theta_rh), v_rest=_f32(module.v_rest), **_spiking(module))


def neuron_table() -> dict[type, Callable[[Any], Node]]:
    """SpikingJelly neuron class -> its canonical node, for the plugin's neuron table."""
    from spikingjelly.activation_based import neuron

    return {neuron.IzhikevichNode: _import_qif, neuron.QIFNode: _import_qif,
            neuron.EIFNode: _import_eif}


def refusal(module: Any) -> str | None:
    """Why a SpikingJelly module of these families is refused, naming its class; or None."""
    kind = type(module).__name__
    if kind in REFUSED and type(module).__module__.startswith("spikingjelly."):
        return f"SpikingJelly's {kind} is refused: {REFUSED[kind]}"
    return None


def synapse_filter(module: Any) -> Node:
    if module.learnable:
        rate = torch.sigmoid(module.w.detach().cpu().float()).item()  # float32, as it computes
    else:
        rate = 1.0 / module.tau  # a Python float, rounded to float32 as it meets the tensor
    return hub.SynapseFilter(rate=np.float32(rate))


def shape_after(nodes: list[tuple[str, Node]]) -> tuple[int, ...] | None:
    """The output shape of a chain of ``nodes`` that ends in a dense layer followed by
    per-element nodes (neurons, filters), or None where that does not say it."""
    for _, node in reversed(nodes):
        if isinstance(node, (hub.Linear, hub.Affine)):
            return (int(node.weight.shape[0]),)
        if not isinstance(node, (hub.Neuron, hub.Family, hub.Graph)):
            return None
        if isinstance(node, hub.Graph):
            return None
    return None


def _inner(module: Any, import_leaf: Callable[[Any], Node | None]) -> list[tuple[str, Node]]:
    """The canonical nodes of a container's sub-module (one leaf or a sequential of them)."""
    children = list(module.named_children()) if isinstance(module, torch.nn.Sequential) \
        else [("m", module)]
    out = []
    for name, child in children:
        node = import_leaf(child)
        if node is not None:
            out.append((f"sub_{name}", node))
    if not out:
        raise UnsupportedError("the container's sub-module computes nothing", field="sub_module")
    return out


def container_graph(module: Any, import_leaf: Callable[[Any], Node | None],
                    shape: tuple[int, ...] | None = None) -> hub.Graph | None:
    """A recurrent container as a subgraph with its recurrent edge; None for other modules.

    ``import_leaf`` maps one single-step module of the container to its canonical node."""
    from spikingjelly.activation_based import layer

    if not isinstance(module, (layer.LinearRecurrentContainer,
                               layer.ElementWiseRecurrentContainer)):
        return None
    nodes = _inner(module.sub_module, import_leaf)
    graph = hub.Graph()
    if isinstance(module, layer.LinearRecurrentContainer):
        weight = module.rc.weight.detach().cpu().numpy().astype(np.float32)
        n_in = weight.shape[0]
        bias = (module.rc.bias.detach().cpu().numpy().astype(np.float32)
                if module.rc.bias is not None else np.float32(0))
        graph.add("input", hub.Input(shape=(n_in,)))
        graph.add("input_weights", hub.Affine(weight=weight[:, :n_in], bias=bias))
        graph.add("recurrent_weights", hub.Linear(weight=weight[:, n_in:]))
        graph.add("sum", hub.Add())
        graph.connect("input", "input_weights")
        graph.connect("input_weights", "sum")
        first = "sum"
        graph.add(*nodes[0])
        graph.connect("sum", nodes[0][0])
    else:
        function = module.element_wise_function
        if function not in (torch.add, operator.add, operator.iadd):
            shown = getattr(function, "__name__", function)
            raise UnsupportedError(f"element_wise_function {shown!r} is not an addition; only "
                                   "torch.add and operator.add map "
                                   "onto graph edges (a sum)", field="element_wise_function")
        if shape is None:
            raise UnsupportedError("an ElementWiseRecurrentContainer needs the input shape",
                                   field="input_shape")
        graph.add("input", hub.Input(shape=tuple(shape)))
        graph.add(*nodes[0])
        graph.connect("input", nodes[0][0])
        first = nodes[0][0]
    for (a, _), (b, node) in itertools.pairwise(nodes):
        graph.add(b, node)
        graph.connect(a, b)
    last = nodes[-1][0]
    graph.add("output", hub.Output())
    graph.connect(last, "output")
    if isinstance(module, layer.LinearRecurrentContainer):
        graph.connect(last, "recurrent_weights")
        graph.connect("recurrent_weights", first)
    else:
        graph.connect(last, first)
    return graph


def STATEFUL_LAYERS() -> tuple[type, ...]:
    """The stateful SpikingJelly layers the tracer treats like neurons (state inside)."""
    from spikingjelly.activation_based import layer

    return (layer.SynapseFilter, layer.LinearRecurrentContainer,
            layer.ElementWiseRecurrentContainer)


def piece(call: Any, import_leaf: Callable[[Any], Node | None]) -> Any:
    """The tracer's piece for a call of one of these modules (or a refusal); None otherwise."""
    from hub_plugins.torchnn import trace as torch_trace
    from spikingjelly.activation_based import layer

    module = call.module
    why = refusal(module)
    if why is not None:
        raise UnsupportedError(why, field="type")
    if isinstance(module, layer.SynapseFilter):
        return torch_trace.Piece({"": synapse_filter(module)})
    # the piece leaves out the subgraph's Input, so its shape is a placeholder
    graph = container_graph(module, import_leaf, (1,))
    if graph is None:
        return None
    # the subgraph's nodes as the piece's, its last (the output's source) named by the call
    last = next(a for a, b in graph.edges if b == "output")
    suffix = {n: ("" if n == last else f"_{n}") for n in graph.nodes}
    suffix["input"] = "<in>"
    nodes = {suffix[n]: node for n, node in graph.nodes.items()
             if not isinstance(node, (hub.Input, hub.Output))}
    edges = [(suffix[a], suffix[b]) for a, b in graph.edges if b != "output"]
    return torch_trace.Piece(nodes, edges, {0: ""})


# -- export --------------------------------------------------------------------------------------


def _one(node: Node, field: str) -> float:
    value = np.asarray(getattr(node, field)).ravel()
    if value.size == 0 or not (value == value[0]).all():
        raise UnsupportedError("SpikingJelly's parameters are one value for all neurons",
                               field=field)
    return float(value[0])


def _threshold_reset(node: Node) -> dict[str, Any]:
    """``v_threshold`` and ``v_reset`` of a SpikingJelly node, refusing what it cannot hold."""
    threshold = _one(node, "threshold")
    if node.comparison == ">":
        if node.reset == "subtract":
            raise UnsupportedError("'>' with a subtractive reset: SpikingJelly compares with >= "
                                   "and subtracts the threshold it compares with",
                                   field="comparison")
        # v > t is v >= (the next float32 above t), for every float32 v
        threshold = float(np.nextafter(np.float32(threshold), np.float32(np.inf)))
    v_reset = _one(node, "v_reset") if node.reset == "zero" else None
    if _one(node, "v_init") != (v_reset or 0.0):
        raise UnsupportedError("SpikingJelly's voltage starts at v_reset (0 for a soft reset)",
                               field="v_init")
    return {"v_threshold": threshold, "v_reset": v_reset}


def _export_qif(node: Node, mode: str) -> Any:
    from spikingjelly.activation_based import neuron

    kwargs = _threshold_reset(node)
    tau = _one(node, "tau")
    if not tau > 1:
        raise UnsupportedError("SpikingJelly's QIF and Izhikevich nodes need tau > 1",
                               field="tau")
    common = {"tau": tau, "v_c": _one(node, "v_c"), "a0": _one(node, "a0"),
              "v_rest": _one(node, "v_rest"), "step_mode": mode, **kwargs}
    adaptive = {"tau_w": _one(node, "tau_w"), "a": _one(node, "coupling"),
                "b": _one(node, "w_jump"), "w_rest": _one(node, "w_init")}
    if adaptive["a"] == adaptive["b"] == adaptive["w_rest"] == 0.0:
        return neuron.QIFNode(**common)
    return neuron.IzhikevichNode(**common, **adaptive)


def _export_eif(node: Node, mode: str) -> Any:
    from spikingjelly.activation_based import neuron

    kwargs = _threshold_reset(node)
    tau = _one(node, "tau")
    if not tau > 1:
        raise UnsupportedError("SpikingJelly's EIFNode needs tau > 1", field="tau")
    return neuron.EIFNode(tau=tau, delta_T=_one(node, "delta_t"), theta_rh=_one(node, "theta_rh"),
                          v_rest=_one(node, "v_rest"), step_mode=mode, **kwargs)


def _export_synapse_filter(node: Node, mode: str) -> Any:
    rate = np.float32(_one(node, "rate"))
    if not 0 < rate < 1:
        raise UnsupportedError("SpikingJelly's SynapseFilter needs tau > 1, a rate in (0, 1)",
                               field="rate")
    tau = 1.0 / float(rate)
    if np.float32(1.0 / tau) != rate:
        raise UnsupportedError(f"no tau gives 1/tau == {rate!r} in float32", field="rate")
    from spikingjelly.activation_based import layer

    return layer.SynapseFilter(tau=tau, step_mode=mode)


def _refuse_family(node: Node, mode: str) -> Any:
    raise UnsupportedError(f"SpikingJelly has no neuron computing {node.type}'s step",
                           field="type")


#: Canonical type -> SpikingJelly module, for the plugin's export table.
EXPORTERS: dict[str, Callable[[Any, str], Any]] = {
    "QIF": _export_qif, "SynapseFilter": _export_synapse_filter, "EIF": _export_eif,
    "ALIF": _refuse_family, "Izhikevich": _refuse_family, "AlphaLIF": _refuse_family,
    "AdExLIF": _refuse_family,
}


def _square(node: Node) -> bool:
    """Whether ``node`` is a dense layer that keeps its input's size: a container's ``rc``
    maps ``[x, y]`` back to ``x``'s size."""
    return (isinstance(node, (hub.Affine, hub.Linear)) and node.weight.ndim == 2
            and node.weight.shape[0] == node.weight.shape[1])


def fold_containers(flat: hub.Graph, mode: str) -> tuple[hub.Graph, dict[str, Any]]:
    """``flat`` with each ``LinearRecurrentContainer`` pattern folded into one junction, and
    the container module that junction stands for.

    The pattern is what :func:`container_graph` imports: a dense layer ``A`` into an ``Add``
    ``S`` that a recurrent ``Linear`` ``R`` from neuron ``N`` also feeds, ``S`` into ``N`` (or
    ``A`` and ``R`` straight into ``N``). The container's ``rc`` is ``[A's weight, R's
    weight]`` with ``A``'s bias."""
    from hub_plugins.spikingjelly.writing import _export_node
    from spikingjelly.activation_based import layer

    plan = flat.plan()
    consumers: dict[str, list[str]] = {n: [] for n in flat.nodes}
    for target in plan.order:
        for source in (*plan.forward[target], *plan.recurrent[target]):
            consumers[source].append(target)
    folded: dict[str, tuple[str, str, str, str]] = {}
    for s in plan.order:
        node = flat.nodes[s]
        if not (isinstance(node, hub.Add) and len(plan.forward[s]) == 1
                and len(plan.recurrent[s]) == 1 and len(consumers[s]) == 1):
            continue
        a, r, n = plan.forward[s][0], plan.recurrent[s][0], consumers[s][0]
        if not (_square(flat.nodes[a])
                and isinstance(flat.nodes[r], hub.Linear) and consumers[a] == [s]
                and consumers[r] == [s] and plan.forward[r] == (n,)
                and plan.forward[n] == (s,) and not plan.recurrent[n]):
            continue
        folded[a] = (a, s, r, n)
    # the same without the junction: the dense layer and the recurrent Linear both into N
    for n in plan.order:
        if not (isinstance(flat.nodes[n], (hub.Neuron, hub.Family))
                and len(plan.forward[n]) == 1 and len(plan.recurrent[n]) == 1):
            continue
        a, r = plan.forward[n][0], plan.recurrent[n][0]
        if not (_square(flat.nodes[a])
                and isinstance(flat.nodes[r], hub.Linear) and consumers[a] == [n]
                and consumers[r] == [n] and plan.forward[r] == (n,) and r != n
                and a not in folded):
            continue
        folded[a] = (a, None, r, n)
    # a neuron fed back its own output: ElementWiseRecurrentContainer with an addition
    loops = {n for n in plan.order if plan.recurrent[n] == (n,) and len(plan.forward[n]) == 1
             and not isinstance(flat.nodes[n], hub.Graph)}
    if not folded and not loops:
        return flat, {}
    modules: dict[str, Any] = {}
    for n in loops:
        modules[n] = layer.ElementWiseRecurrentContainer(
            _export_node(flat.nodes[n], "s", None), element_wise_function=torch.add, step_mode=mode)
    out = hub.Graph(metadata=dict(flat.metadata))
    gone = {name for group in folded.values() for name in group[1:] if name is not None}
    rename = {n: a for a, (_, _, _, n) in folded.items()}
    for name, node in flat.nodes.items():
        if name in gone:
            continue
        if name in loops:
            node = hub.Add()  # a junction holds the container's place in the chain
        elif name in folded:
            _, _, r, n = folded[name]
            dense, recurrent = flat.nodes[name], flat.nodes[r]
            inner = _export_node(flat.nodes[n], "s", None)
            n_in, n_out = dense.weight.shape[0], recurrent.weight.shape[1]
            bias = isinstance(dense, hub.Affine)
            container = layer.LinearRecurrentContainer(inner, in_features=n_in,
                                                       out_features=n_out, bias=bias,
                                                       step_mode=mode)
            with torch.no_grad():
                container.rc.weight.copy_(torch.as_tensor(np.concatenate(
                    [dense.weight, recurrent.weight], axis=1)))
                if bias:
                    container.rc.bias.copy_(torch.as_tensor(np.array(np.broadcast_to(
                        dense.bias, (n_in,)))))
            modules[name] = container
            node = hub.Add()  # a junction holds the container's place in the chain
        out.add(name, node)
    for source, target in flat.edges:
        if source in gone and source not in rename or target in gone:
            continue
        if source == target and source in loops:
            continue
        out.connect(rename.get(source, source), target)
    return out, modules
