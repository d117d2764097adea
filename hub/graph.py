"""The canonical graph: named nodes, directed edges, nested subgraphs.

A node fed by several edges receives their sum. Edges may form cycles (recurrence): walking
depth-first from the inputs, in the order nodes were added, an edge that returns to a node still
being walked is *recurrent* and carries its value one step late. Every cycle must pass through a
node with state (a neuron or a delay), otherwise the graph is an algebraic loop and is refused.

An edge end names a node, or ``"sub.name"`` for the ``Input``/``Output`` node ``name`` of the
subgraph ``sub`` (just ``"sub"`` when it has one). :meth:`Graph.flat` inlines subgraphs, giving
their nodes dotted names; the simulator and most exporters work on the flat graph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Union

from .errors import GraphError, HubError, ShapeError
from .node import MAX_ELEMENTS, Node, Shape, node_from_dict
from .nodes import Add, Delay, Input, Output

Element = Union[Node, "Graph"]


@dataclass(frozen=True)
class Plan:
    """How to run a flat graph: node order, edges by kind, and shapes."""

    order: tuple[str, ...]
    forward: dict[str, tuple[str, ...]]  # node -> sources delivering this step
    recurrent: dict[str, tuple[str, ...]]  # node -> sources delivering the previous step
    input_shapes: dict[str, Shape | None]
    output_shapes: dict[str, Shape]


class Graph:
    """A graph of named nodes (or nested graphs) and edges ``(source, target)``."""

    def __init__(
        self,
        nodes: dict[str, Element] | None = None,
        edges: Iterable[tuple[str, str]] = (),
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.nodes: dict[str, Element] = {}
        self.edges: list[tuple[str, str]] = []
        self.metadata: dict[str, Any] = dict(metadata or {})
        for name, node in (nodes or {}).items():
            self.add(name, node)
        for source, target in edges:
            self.connect(source, target)

    @classmethod
    def chain(cls, *nodes: Element | tuple[str, Element], metadata: dict | None = None) -> Graph:
        """A feed-forward graph of ``nodes`` in order; ``("name", node)`` pairs name them.

        Unnamed nodes are named after their type and position (``"lif2"``). An ``Input`` and an
        ``Output`` are added at the ends if missing.
        """
        named = []
        for index, item in enumerate(nodes):
            name, node = item if isinstance(item, tuple) else (f"{_kind(item).lower()}{index}", item)
            named.append((name, node))
        if not named or not isinstance(named[0][1], Input):
            raise GraphError("Graph.chain needs an Input node first, to know the input shape")
        if not isinstance(named[-1][1], Output):
            named.append(("output", Output()))
        graph = cls(dict(named), metadata=metadata)
        for (a, _), (b, _) in zip(named, named[1:]):
            graph.connect(a, b)
        return graph

    # -- building ---------------------------------------------------------------------------

    def add(self, name: str, node: Element) -> Graph:
        if not isinstance(name, str) or not name:
            raise GraphError(f"node names must be non-empty strings, got {name!r}")
        if name in self.nodes:
            raise GraphError("a node of this name already exists", node=name)
        if not isinstance(node, (Node, Graph)):
            raise GraphError(f"expected a hub Node or Graph, got {type(node).__name__}",
                             node=name)
        self.nodes[name] = node
        return self

    def connect(self, source: str, target: str) -> Graph:
        self.edges.append((str(source), str(target)))
        return self

    # -- reading ----------------------------------------------------------------------------

    @property
    def inputs(self) -> list[str]:
        return [n for n, node in self.nodes.items() if isinstance(node, Input)]

    @property
    def outputs(self) -> list[str]:
        return [n for n, node in self.nodes.items() if isinstance(node, Output)]

    def walk(self, prefix: str = "") -> Iterator[tuple[str, Node]]:
        """Every node, subgraphs included, with its dotted path."""
        for name, node in self.nodes.items():
            if isinstance(node, Graph):
                yield from node.walk(f"{prefix}{name}.")
            else:
                yield f"{prefix}{name}", node

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Graph):
            return NotImplemented
        return (self.nodes.keys() == other.nodes.keys()
                and all(self.nodes[k] == other.nodes[k] for k in self.nodes)
                and sorted(self.edges) == sorted(other.edges)
                # the order of edges into an operand node (Mul, Concat) is part of the meaning
                and all([e for e in self.edges if e[1] == k] == [e for e in other.edges
                                                                  if e[1] == k]
                        for k, n in self.nodes.items() if getattr(n, "operands", False)))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Graph({len(self.nodes)} nodes, {len(self.edges)} edges)"

    # -- flattening ---------------------------------------------------------------------------

    def flat(self) -> Graph:
        """This graph with every subgraph inlined; inner inputs and outputs become junctions."""
        if not any(isinstance(n, Graph) for n in self.nodes.values()):
            return self
        out = Graph(metadata=self.metadata)
        for name, node in self.nodes.items():
            if isinstance(node, Graph):
                inner = node.flat()
                for inner_name, inner_node in inner.nodes.items():
                    if isinstance(inner_node, (Input, Output)):
                        inner_node = Add()
                    out.add(f"{name}.{inner_name}", inner_node)
                for a, b in inner.edges:
                    out.connect(f"{name}.{a}", f"{name}.{b}")
            else:
                out.add(name, node)
        for a, b in self.edges:
            out.connect(self._endpoint(a, "source"), self._endpoint(b, "target"))
        return out

    def _endpoint(self, ref: str, role: str) -> str:
        """Resolve an edge end of this (unflattened) graph to a flat node name."""
        if ref in self.nodes and not isinstance(self.nodes[ref], Graph):
            return ref
        sub_name, _, port = ref.partition(".")
        sub = self.nodes.get(sub_name) if ref not in self.nodes else self.nodes[ref]
        if not isinstance(sub, Graph):
            raise GraphError(
                f"edge {role} {ref!r} names no node; nodes are {', '.join(sorted(self.nodes))}",
                node=ref)
        ports = sub.outputs if role == "source" else sub.inputs
        if ref == sub_name:
            if len(ports) != 1:
                raise GraphError(f"subgraph has {len(ports)} {role} ports ({', '.join(ports)}); "
                                 f"name one as '{sub_name}.<port>'", node=sub_name)
            port = ports[0]
        if port in ports:
            return f"{sub_name}.{port}"
        inner = sub.flat()
        if port in inner.nodes:  # an edge straight to an inner node, as some NIR files have
            return f"{sub_name}.{port}"
        raise GraphError(f"edge {role} {ref!r}: subgraph {sub_name!r} has no node {port!r}; "
                         f"it has {', '.join(sorted(inner.nodes))}", node=sub_name)

    # -- validation and planning --------------------------------------------------------------

    def validate(self) -> Graph:
        """Check structure and shapes; raise a :class:`HubError` naming node and field."""
        self.plan()
        return self

    def plan(self) -> Plan:
        """Order, recurrent edges and shapes of the flat graph (validating it on the way)."""
        g = self.flat()
        if not g.inputs:
            raise GraphError("the graph has no Input node; add one to say what the input is")
        if not g.outputs:
            raise GraphError("the graph has no Output node; add one to say what is read out")
        succ: dict[str, list[str]] = {n: [] for n in g.nodes}
        for a, b in g.edges:
            for end, role in ((a, "source"), (b, "target")):
                if end not in g.nodes:
                    raise GraphError(f"edge ({a!r}, {b!r}) names {end!r} as its {role}, but there "
                                     f"is no such node; nodes are {', '.join(sorted(g.nodes))}",
                                     node=end)
            if isinstance(g.nodes[b], Input):
                raise GraphError(f"edge ({a!r}, {b!r}) leads into an Input node", node=b)
            succ[a].append(b)

        order, back = _order(g, succ)
        forward: dict[str, list[str]] = {n: [] for n in g.nodes}
        recurrent: dict[str, list[str]] = {n: [] for n in g.nodes}
        for a, b in g.edges:
            (recurrent if (a, b) in back else forward)[b].append(a)

        in_shapes: dict[str, Shape | None] = {}
        out_shapes: dict[str, Shape] = {}
        for name in order:
            node = g.nodes[name]
            if node.operands:
                if recurrent[name]:
                    raise GraphError(f"a {node.type} takes its inputs as separate operands, so "
                                     "none may arrive through a recurrent edge (from "
                                     f"{', '.join(map(repr, recurrent[name]))}); put a Delay or "
                                     "neuron between", node=name)
                shapes = {tuple(out_shapes[s] for s in forward[name]) or None}
            else:
                shapes = {out_shapes[s] for s in forward[name]}
            if len(shapes) > 1:
                raise ShapeError("inputs of different shapes meet here: "
                                 + ", ".join(f"{s!r} gives {list(out_shapes[s])}"
                                             for s in forward[name]), node=name)
            shape = shapes.pop() if shapes else None
            if shape is None and node.takes_input:
                raise ShapeError("nothing feeds this node (in this step); connect an input",
                                 node=name)
            try:
                in_shapes[name] = shape
                out_shapes[name] = tuple(node.output_shape(shape))
            except HubError as e:
                raise e.at(node=name)
            if math.prod(out_shapes[name]) > MAX_ELEMENTS:
                raise ShapeError(f"its output {list(out_shapes[name])} has more than 2**31 "
                                 "values per sample, more than any model needs", node=name)
        for b, sources in recurrent.items():
            for a in sources:
                if out_shapes[a] != in_shapes[b]:
                    raise ShapeError(f"recurrent edge from {a!r} gives {list(out_shapes[a])}, "
                                     f"but the node's input is {list(in_shapes[b])}", node=b)
        return Plan(tuple(order), {k: tuple(v) for k, v in forward.items()},
                    {k: tuple(v) for k, v in recurrent.items()}, in_shapes, out_shapes)

    # -- serialisation ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain data: nodes (nested graphs as ``{"type": "Graph", ...}``), edges, metadata."""
        return {
            "type": "Graph",
            "nodes": {n: node.to_dict() for n, node in self.nodes.items()},
            "edges": [list(e) for e in self.edges],
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Graph:
        if not isinstance(data, dict):
            raise GraphError(f"expected a mapping with 'nodes' and 'edges', got "
                             f"{type(data).__name__}")
        if not isinstance(data.get("nodes"), dict):
            raise GraphError(f"expected a mapping of node names to nodes, got "
                             f"{type(data.get('nodes')).__name__}", field="nodes")
        metadata = data.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise GraphError(f"expected a mapping, got {type(metadata).__name__}",
                             field="metadata")
        edges = data.get("edges", [])
        if not isinstance(edges, (list, tuple)):
            raise GraphError(f"expected a list of [source, target] pairs, got "
                             f"{type(edges).__name__}", field="edges")
        graph = cls(metadata=metadata)
        for name, item in data["nodes"].items():
            try:
                if isinstance(item, dict) and item.get("type") == "Graph":
                    node: Element = cls.from_dict(item)
                else:
                    node = node_from_dict(item)
            except HubError as e:
                raise e.at(node=name)
            graph.add(name, node)
        for edge in edges:
            if (not isinstance(edge, (list, tuple)) or len(edge) != 2
                    or not all(isinstance(end, str) for end in edge)):
                raise GraphError(f"an edge is a pair [source, target] of node names, got {edge!r}",
                                 field="edges")
            graph.connect(*edge)
        return graph


def _kind(item: Element) -> str:
    return "graph" if isinstance(item, Graph) else item.type


def _holds_state(node: Node) -> bool:
    if isinstance(node, Delay):
        return node.holds_state
    return node.stateful


def _order(g: Graph, succ: dict[str, list[str]]) -> tuple[list[str], set[tuple[str, str]]]:
    """Reverse post-order of a depth-first walk from the inputs, and the edges it finds
    returning to a node on the walk (recurrent edges). Refuses cycles with no state."""
    back: set[tuple[str, str]] = set()
    done: set[str] = set()
    post: list[str] = []
    starts = g.inputs + [n for n in g.nodes if n not in g.inputs]
    for start in starts:
        if start in done:
            continue
        stack = [start]
        on_path = {start: 0}
        iters = [iter(succ[start])]
        while stack:
            try:
                nxt = next(iters[-1])
            except StopIteration:
                node = stack.pop()
                iters.pop()
                del on_path[node]
                done.add(node)
                post.append(node)
                continue
            if nxt in on_path:
                cycle = stack[on_path[nxt]:]
                if not any(_holds_state(g.nodes[n]) for n in cycle):
                    raise GraphError(
                        "cycle " + " -> ".join(cycle + [nxt]) + " has no neuron or delay to hold "
                        "state, so it cannot be computed step by step; add a Delay", node=nxt)
                back.add((stack[-1], nxt))
            elif nxt not in done:
                on_path[nxt] = len(stack)
                stack.append(nxt)
                iters.append(iter(succ[nxt]))
    return post[::-1], back
