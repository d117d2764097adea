"""A canonical graph of any topology as a torch module: what snnTorch, Norse and SpikingJelly
exports are when the graph is not a plain chain.

:func:`layout` turns a graph into the modules of its nodes (each plugin says how a node becomes
its framework's module) and a :class:`Layout` of plain data: the nodes in the order the
reference simulator steps them, the edges of each node and its role. A framework's exported
class mixes :class:`GraphRunner` into its own ``nn.Module`` (SpikingJelly's: a
``MemoryModule``), registers each node's module on itself under the node's name (dots become
``__``), and calls :meth:`GraphRunner.step_graph` with the framework's way of calling a module
(hidden state, explicit state, multi-step). One step computes what ``hub.simulate`` computes,
in the same float operations:

- nodes in the plan's order; an ``Input`` takes the given tensor;
- a node's input is the sum of its forward edges' values of this step, in the plan's order, then
  of its recurrent edges' values of the step before (zeros at the first step);
- an operand node (``Mul``, ``Concat``) gets its forward edges' values as separate arguments;
- a node without a module (``Output``, an ``Add`` junction) passes its input on.

Skips, branches, concatenation, products, recurrence and nested subgraphs (inlined, their nodes
named ``sub__name``) all run this way. The modules are the framework's own layers and neurons
(or the shared small modules of :mod:`hub_plugins.torchnn.layers`), so the parameters are
registered and gradients flow through the framework's surrogate. Without recurrence the forward
is also traceable by :mod:`hub_plugins.torchnn.trace` (each module is a leaf); a recurrent edge
mixes two steps' values, which the tracer refuses, so the plugins read their own exports from
the layout instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import hub
from hub.errors import FormatError, HubError, UnsupportedError
from hub.graph import chain_order
from hub.node import Node

#: How a plugin makes a node's module: ``(name, node, input shape) -> (module or None, role)``.
#: The role is plain data the module alone does not say; ``type`` and ``operands`` are added.
Export = Callable[[str, Node, "tuple[int, ...] | None"], "tuple[nn.Module | None, dict]"]
#: How a runner calls a node's module: ``(name, module, *inputs) -> output``.
Call = Callable[..., torch.Tensor]


def safe(name: str) -> str:
    """A node name as a module attribute name."""
    return name.replace(".", "__")


@dataclasses.dataclass
class Layout:
    """The structure of an exported graph, by module name (see the module docstring)."""

    order: list[str]
    forward: dict[str, list[str]]
    recurrent: dict[str, list[str]]
    inputs: list[str]
    outputs: list[str]
    #: a sample's shape out of each node
    shapes: dict[str, tuple[int, ...]]
    #: every edge in the graph's own order (the order decides which edges are recurrent)
    edges: list[tuple[str, str]]
    #: module name -> the node's name in the graph
    names: dict[str, str]
    #: module name -> what the module alone does not say (``type``, ``operands``, ...)
    roles: dict[str, dict[str, Any]]
    metadata: dict[str, Any]

    def is_chain(self) -> bool:
        """Whether the graph is one line from its one input to its one output."""
        try:
            self.line()
        except UnsupportedError:
            return False
        return True

    def line(self) -> list[str]:
        """The nodes of a chain, from the input to the output (``hub.graph.chain_order``);
        an :class:`~hub.errors.UnsupportedError` naming the node where it is not one."""
        edges = [(s, t) for t in self.order
                 for s in (*self.forward.get(t, ()), *self.recurrent.get(t, ()))]
        return chain_order(self.order, edges, self.inputs, self.outputs)[0]


def layout(graph: hub.Graph, export: Export) -> tuple[dict[str, nn.Module], Layout]:
    """The modules of ``graph``'s nodes (by module name) and its :class:`Layout`; a node's
    refusal is raised naming the node."""
    flat = graph.flat()
    plan = flat.plan()
    names = {safe(n): n for n in plan.order}
    if len(names) != len(plan.order):
        raise FormatError("node names collide once dots are replaced by '__'; rename the nodes")
    modules: dict[str, nn.Module] = {}
    roles: dict[str, dict[str, Any]] = {}
    for name in plan.order:
        node = flat.nodes[name]
        try:
            module, role = export(name, node, plan.input_shapes[name])
        except HubError as e:
            raise e if e.node else e.at(node=name)
        role = {"type": node.type, **role}
        if node.operands:
            role["operands"] = True
        if module is not None:
            modules[safe(name)] = module
        roles[safe(name)] = role
    return modules, Layout(
        order=[safe(n) for n in plan.order],
        forward={safe(k): [safe(s) for s in v] for k, v in plan.forward.items() if v},
        recurrent={safe(k): [safe(s) for s in v] for k, v in plan.recurrent.items() if v},
        inputs=[safe(n) for n in flat.inputs], outputs=[safe(n) for n in flat.outputs],
        shapes={safe(n): tuple(plan.output_shapes[n]) for n in plan.order},
        edges=[(safe(a), safe(b)) for a, b in flat.edges], names=names, roles=roles,
        metadata=dict(graph.metadata))


class GraphRunner:
    """Steps a :class:`Layout` over the modules registered on ``self`` (an ``nn.Module``)."""

    def _setup(self, modules: dict[str, nn.Module], lay: Layout) -> None:
        for name, module in modules.items():
            if hasattr(self, name) and name not in self._modules:
                raise FormatError(f"node {lay.names.get(name, name)!r} is named like an "
                                  f"attribute of {type(self).__name__}; rename the node")
            self.add_module(name, module)
        self.order = list(lay.order)
        self.forward_edges = {k: list(v) for k, v in lay.forward.items()}
        self.recurrent_edges = {k: list(v) for k, v in lay.recurrent.items()}
        self.inputs, self.outputs = list(lay.inputs), list(lay.outputs)
        self.shapes = {k: tuple(v) for k, v in lay.shapes.items()}
        self.edges = [tuple(e) for e in lay.edges]
        self.names = dict(lay.names)
        self.roles = {k: dict(v) for k, v in lay.roles.items()}
        #: the graph's metadata (its ``dt``, which NIR export needs)
        self.metadata = dict(lay.metadata)

    @property
    def recurrent(self) -> bool:
        """Whether some edge carries the previous step's value."""
        return any(self.recurrent_edges.values())

    def module(self, name: str) -> nn.Module | None:
        return self._modules.get(name)

    def given(self, x: Any) -> dict[str, torch.Tensor]:
        """The input tensors by module name (``x`` a tensor, or a dict by node name)."""
        if isinstance(x, dict):
            back = {v: k for k, v in self.names.items()}
            return {back.get(k, k): v for k, v in x.items()}
        return {self.inputs[0]: x}

    def step_graph(self, given: dict[str, torch.Tensor], last: dict[str, torch.Tensor],
                   call: Call, lead: int = 1) -> dict[str, torch.Tensor]:
        """Every node's value in one step (module docstring). ``last`` holds the previous
        step's values (empty at the first); ``lead`` counts the axes before a sample's own."""
        like = next(iter(given.values()))
        values: dict[str, torch.Tensor] = {}
        for name in self.order:
            if name in given:
                values[name] = given[name]
                continue
            module = self._modules.get(name)
            if self.roles.get(name, {}).get("operands"):
                values[name] = call(name, module, *(values[s] for s in self.forward_edges[name]))
                continue
            total = None
            for source in self.forward_edges.get(name, ()):
                total = values[source] if total is None else total + values[source]
            for source in self.recurrent_edges.get(name, ()):
                prev = last.get(source)
                if prev is None:  # nothing was sent before the first step
                    prev = like.new_zeros((*like.shape[:lead], *self.shapes[source]))
                total = prev if total is None else total + prev
            values[name] = total if module is None else call(name, module, total)
        return values

    def results(self, values: dict[str, torch.Tensor]) -> Any:
        """The outputs: one tensor, or a dict by output node name."""
        if len(self.outputs) == 1:
            return values[self.outputs[0]]
        return {self.names.get(o, o): values[o] for o in self.outputs}


@dataclasses.dataclass
class Expanded:
    """Several nodes read from one module (Norse's ``LIFRecurrentCell``): ``nodes`` holds them
    and their edges, named as they go into the graph; edges into the module go to ``entry``,
    edges out of it leave ``exit``."""

    nodes: hub.Graph
    entry: str
    exit: str


def read(net: GraphRunner,
         node_of: Callable[[str, nn.Module, dict], Node | Expanded]) -> hub.Graph:
    """The canonical graph of an exported runner: its layout, with each module's node as
    ``node_of(name, module, role)`` reads it now (trained parameters included)."""
    graph = hub.Graph(metadata=dict(getattr(net, "metadata", {}) or {}))
    ends: dict[str, tuple[str, str]] = {}
    for safe_name in net.order:
        name = net.names.get(safe_name, safe_name)
        role = net.roles.get(safe_name, {})
        kind = role.get("type")
        try:
            if kind == "Input":
                node: Node = hub.Input(shape=net.shapes[safe_name])
            elif kind == "Output":
                node = hub.Output()
            elif kind == "Add" and net.module(safe_name) is None:
                node = hub.Add()
            else:
                module = net.module(safe_name)
                if module is None:
                    raise FormatError("the net has no module for this node")
                node = node_of(name, module, role)
        except HubError as e:
            raise e if e.node else e.at(node=name)
        if isinstance(node, Expanded):
            for inner, inner_node in node.nodes.nodes.items():
                graph.add(inner, inner_node)
            graph.edges += node.nodes.edges
            ends[name] = (node.entry, node.exit)
        else:
            graph.add(name, node)
    for source, target in net.edges:
        source, target = net.names.get(source, source), net.names.get(target, target)
        graph.connect(ends[source][1] if source in ends else source,
                      ends[target][0] if target in ends else target)
    graph.validate()
    return graph
