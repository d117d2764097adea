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
from typing import Any, Iterable, Iterator, NamedTuple, Union

import numpy as np

from .errors import GraphError, HubError, ParameterError, ShapeError, UnsupportedError
from .limits import how_to_raise, limits
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


class Chain(NamedTuple):
    """A graph read as one line of nodes (:meth:`Graph.as_chain`)."""

    #: ``(name, node)`` of the flat graph from its input to its output, both included
    nodes: list[tuple[str, Node]]
    #: neuron name -> ``(name, node)`` of the one node that feeds the neuron back into itself
    #: (a recurrent weight), for the node types ``as_chain(loops=...)`` allows
    loops: dict[str, tuple[str, Node]]


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
            name, node = (item if isinstance(item, tuple)
                          else (f"{_kind(item).lower()}{index}", item))
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

    def as_chain(self, *, loops: type | tuple[type, ...] = (), what: str = "this format"
                 ) -> Chain:
        """This graph, flattened, as one line from its one input to its one output.

        For exporters whose target is a sequence of layers. A node of a type in ``loops``
        whose only input and only output are the same neuron is that neuron's recurrent weight
        (a ``Recurrent`` block): it is taken out of the line into :attr:`Chain.loops`. Anything
        else off the line (a branch, a merge, a cycle, a second input or output, a node no path
        reaches) raises :class:`~hub.errors.UnsupportedError` naming the node, with ``what``
        (the format) in the message.
        """
        g = self.flat()
        loopable = {n for n, node in g.nodes.items() if loops and isinstance(node, loops)}
        owners = {n for n, node in g.nodes.items() if node.stateful}
        line, looped = chain_order(g.nodes, g.edges, g.inputs, g.outputs, loopable=loopable,
                                   owners=owners, what=what)
        return Chain([(name, g.nodes[name]) for name in line],
                     {owner: (name, g.nodes[name]) for owner, name in looped.items()})

    def is_chain(self) -> bool:
        """Whether :meth:`as_chain` (without loops) reads this graph as one line."""
        try:
            self.as_chain()
        except UnsupportedError:
            return False
        return True

    def walk(self, prefix: str = "") -> Iterator[tuple[str, Node]]:
        """Every node, subgraphs included, with its dotted path (depth first, in order)."""
        for path, node, _ in self._leaves(prefix):
            yield path, node

    def _leaves(self, prefix: str = "") -> Iterator[tuple[str, Node, bool]]:
        """:meth:`walk`, also saying whether each node is inside a subgraph."""
        # a stack, not recursion: a graph nested deeper than Python's stack still walks
        stack = [(prefix, iter(self.nodes.items()))]
        while stack:
            path, items = stack[-1]
            for name, node in items:
                if isinstance(node, Graph):
                    stack.append((f"{path}{name}.", iter(node.nodes.items())))
                    break
                yield f"{path}{name}", node, len(stack) > 1
            else:
                stack.pop()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Graph):
            return NotImplemented
        pairs = [(self, other)]
        while pairs:  # a stack of subgraph pairs, for the same reason as walk()
            a, b = pairs.pop()
            if a.nodes.keys() != b.nodes.keys() or sorted(a.edges) != sorted(b.edges):
                return False
            # the order of edges into an operand node (Mul, Concat) is part of its meaning
            if any([e for e in a.edges if e[1] == k] != [e for e in b.edges if e[1] == k]
                   for k, n in a.nodes.items() if getattr(n, "operands", False)):
                return False
            for key, node in a.nodes.items():
                if isinstance(node, Graph) and isinstance(b.nodes[key], Graph):
                    pairs.append((node, b.nodes[key]))
                elif not node == b.nodes[key]:
                    return False
        return True

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Graph({len(self.nodes)} nodes, {len(self.edges)} edges)"

    # -- flattening ---------------------------------------------------------------------------

    def flat(self) -> Graph:
        """This graph with every subgraph inlined; inner inputs and outputs become junctions.

        Refuses graphs beyond ``hub.limits.limits()``' ``max_nodes`` (counted after inlining)
        and ``max_depth``. Time and memory are linear in the size of the result: each subgraph
        is walked once, and an edge end naming an inner node is looked up, not re-flattened.
        """
        size(self)
        if not any(isinstance(n, Graph) for n in self.nodes.values()):
            return self
        out = Graph(metadata=self.metadata)
        for name, node, inner in self._leaves():
            if inner and isinstance(node, (Input, Output)):
                node = Add()  # the input or output of a subgraph is a junction once inlined
            if name in out.nodes:
                raise GraphError("a node of this name already exists", node=name)
            out.nodes[name] = node
        # Edges in the order the nested definition gives them: a subgraph's (its own
        # subgraphs' first) before those of the graph holding it.
        stack = [("", self, iter(self.nodes.items()))]
        while stack:
            prefix, graph, items = stack[-1]
            for name, node in items:
                if isinstance(node, Graph):
                    stack.append((f"{prefix}{name}.", node, iter(node.nodes.items())))
                    break
            else:
                stack.pop()
                for a, b in graph.edges:
                    out.edges.append((_endpoint(graph, prefix, a, "source", out.nodes),
                                      _endpoint(graph, prefix, b, "target", out.nodes)))
        return out

    # -- validation and planning --------------------------------------------------------------

    def validate(self) -> Graph:
        """Check structure and shapes; raise a :class:`HubError` naming node and field."""
        self.plan()
        return self

    def plan(self) -> Plan:
        """Order, recurrent edges and shapes of the flat graph (validating it on the way)."""
        if self.metadata.get("dt") is not None:
            check_dt(self.metadata["dt"])
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
                                     f"is no such node; nodes are {_names(g.nodes)}",
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

    def copy(self) -> Graph:
        """This graph anew: its nested graphs, edges and metadata (each graph's top level, as
        :meth:`from_dict` of :meth:`to_dict` gives) copied, its nodes shared, as they cannot
        change (frozen, their arrays read-only). The same graph as that round trip, without
        writing every array out and reading it back (seconds for a 100M-parameter model). A
        graph beyond the limits is refused as :meth:`to_dict` refuses it; it works with a stack,
        not recursion."""
        size(self)
        root = Graph(metadata=self.metadata)
        stack = [(self, root)]
        while stack:
            graph, new = stack.pop()
            for name, node in graph.nodes.items():
                if isinstance(node, Graph):
                    inner = Graph(metadata=node.metadata)
                    stack.append((node, inner))
                    node = inner
                new.add(name, node)
            for source, target in graph.edges:
                new.connect(source, target)
        return root

    # -- serialisation ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain data: nodes (nested graphs as ``{"type": "Graph", ...}``), edges, metadata.

        Refuses a graph beyond the limits (:func:`size`), a graph that contains itself
        included, never a ``RecursionError``: it works with a stack, not recursion.
        """
        size(self)
        out: dict[str, Any] = {}
        stack = [(self, out, "", 0)]
        while stack:
            graph, data, path, depth = stack.pop()
            nodes: dict[str, Any] = {}
            data.update(type="Graph", nodes=nodes, edges=[list(e) for e in graph.edges],
                        metadata=dict(graph.metadata))
            for name, node in graph.nodes.items():
                if isinstance(node, Graph):
                    nodes[name] = {}
                    inner = f"{path}.{name}" if path else name
                    _check_depth(depth + 1, inner)
                    stack.append((node, nodes[name], inner, depth + 1))
                else:
                    nodes[name] = node.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Graph:
        """The graph that :meth:`to_dict` gave as ``data``, checked as untrusted input.

        Every node is validated; a nesting deeper than ``limits().max_depth`` or more than
        ``limits().max_nodes`` nodes in all is refused before more is read.
        """
        budget = limits().max_nodes
        count = 0
        root = _graph_shell(cls, data, "")
        stack = [(root, data, iter(data["nodes"].items()), "")]
        while stack:
            graph, item_data, items, path = stack[-1]
            for name, item in items:
                where = f"{path}.{name}" if path else name
                if isinstance(item, dict) and item.get("type") == "Graph":
                    _check_depth(len(stack), where)
                    node: Element = _graph_shell(cls, item, where)
                    _add(graph, name, node, path)
                    stack.append((node, item, iter(item["nodes"].items()), where))
                    break
                count += 1
                if count > budget:
                    raise GraphError(f"more than {budget} nodes; "
                                     + how_to_raise("max_nodes"), node=where)
                try:
                    node = node_from_dict(item)
                except HubError as e:
                    raise e.at(node=where)
                _add(graph, name, node, path)
            else:
                stack.pop()
                for edge in item_data.get("edges", []):
                    if (not isinstance(edge, (list, tuple)) or len(edge) != 2
                            or not all(isinstance(end, str) for end in edge)):
                        error = GraphError(f"an edge is a pair [source, target] of node names, "
                                           f"got {_short(edge)}", field="edges")
                        raise error.at(node=path or None)
                    graph.connect(*edge)
        return root


def chain_order(names: Iterable[str], edges: Iterable[tuple[str, str]], inputs: list[str],
                outputs: list[str], *, loopable: Iterable[str] = (), owners: Iterable[str] = (),
                what: str = "this format") -> tuple[list[str], dict[str, str]]:
    """The node names of a graph's structure from its one input to its one output, and each
    owner's loop (see :meth:`Graph.as_chain`, which this is on names and edges alone).

    ``loopable`` names nodes that may be an ``owners`` node's recurrent weight: a node whose
    only input and only output are that owner. Raises :class:`UnsupportedError` naming the node
    where the structure is not one line.
    """
    names = list(names)
    where = f"{what} needs a chain of layers from one input to one output"
    if len(inputs) != 1 or len(outputs) != 1:
        raise UnsupportedError(f"{where}; this graph has {len(inputs)} inputs "
                               f"({_names(inputs)}) and {len(outputs)} outputs "
                               f"({_names(outputs)})")
    succ: dict[str, list[str]] = {n: [] for n in names}
    pred: dict[str, list[str]] = {n: [] for n in names}
    for a, b in edges:
        for end in (a, b):
            if end not in succ:
                raise GraphError(f"edge ({a!r}, {b!r}) names {end!r}, but there is no such "
                                 f"node; nodes are {_names(names)}", node=end)
        succ[a].append(b)
        pred[b].append(a)
    loopable, owners = set(loopable), set(owners)
    looped: dict[str, str] = {}  # owner -> its loop
    for name in names:
        owner = pred[name][0] if len(pred[name]) == 1 else None
        if (name in loopable and owner in owners and owner != name and pred[name] == succ[name]
                and owner not in looped):
            looped[owner] = name
    skip = set(looped.values())
    line, seen = [inputs[0]], {inputs[0]}
    while line[-1] != outputs[0]:
        at = line[-1]
        nexts = [t for t in succ[at] if t not in skip]
        if len(nexts) != 1:
            says = ("feeds nothing, so the output is never reached" if not nexts else
                    f"feeds {len(nexts)} nodes ({_names(nexts)}): a branch")
            raise UnsupportedError(f"{where}; this node {says}", node=at)
        nxt = nexts[0]
        if nxt in seen:
            raise UnsupportedError(f"{where}; this node feeds {nxt!r} back, a recurrence that "
                                   "is not a layer's own recurrent weight", node=at)
        ins = [s for s in pred[nxt] if s not in skip]  # a skipped one is nxt's own loop
        if len(ins) > 1:
            raise UnsupportedError(f"{where}; this node has {len(ins)} inputs ({_names(ins)}): "
                                   "a merge", node=nxt)
        line.append(nxt)
        seen.add(nxt)
    if succ[line[-1]]:
        raise UnsupportedError(f"{where}; the output feeds {_names(succ[line[-1]])}",
                               node=line[-1])
    off = [n for n in names if n not in seen and n not in skip]
    if off:
        raise UnsupportedError(f"{where}; this node is off the line from {inputs[0]!r} to "
                               f"{outputs[0]!r}", node=off[0])
    return line, {owner: looped[owner] for owner in line if owner in looped}


def _graph_shell(cls: type[Graph], data: Any, path: str) -> Graph:
    """An empty graph with ``data``'s metadata, once the parts of ``data`` have the right types."""
    try:
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
        if not isinstance(data.get("edges", []), (list, tuple)):
            raise GraphError(f"expected a list of [source, target] pairs, got "
                             f"{type(data.get('edges')).__name__}", field="edges")
    except HubError as e:
        raise e.at(node=path or None)
    return cls(metadata=metadata)


def _add(graph: Graph, name: str, node: Element, path: str) -> None:
    try:
        graph.add(name, node)
    except HubError as e:
        raise e.at(node=path or None)


def _check_depth(depth: int, path: str) -> None:
    """Refuse a subgraph at nesting ``depth`` (1: inside the top graph) beyond the limit."""
    most = limits().max_depth
    if depth > most:
        raise GraphError(f"subgraphs nest more than {most} deep here; "
                         + how_to_raise("max_depth"), node=_short_path(path))


def size(graph: Graph) -> int:
    """How many nodes ``graph`` has once flattened, refusing it beyond the limits.

    Counts without building anything, in time linear in the distinct subgraphs (one used
    several times is counted once and multiplied), so a small graph that would flatten into
    billions of nodes is refused at once. Nesting beyond ``max_depth``, a graph that contains
    itself included, is refused too.
    """
    most = limits()
    counts: dict[int, int] = {}
    heights: dict[int, int] = {}
    stack = [(graph, iter(graph.nodes.items()))]
    path = [""]
    while stack:
        g, items = stack[-1]
        for name, node in items:
            if not isinstance(node, Graph):
                continue
            where = ".".join([*path[1:], name])
            if id(node) in counts:  # seen before: only its depth here is new
                _check_depth(len(stack) + heights[id(node)], where)
                continue
            _check_depth(len(stack), where)
            stack.append((node, iter(node.nodes.items())))
            path.append(name)
            break
        else:
            stack.pop()
            where = ".".join(path[1:])
            path.pop()
            subs = [n for n in g.nodes.values() if isinstance(n, Graph)]
            heights[id(g)] = 1 + max((heights[id(n)] for n in subs), default=0)
            counts[id(g)] = len(g.nodes) - len(subs) + sum(counts[id(n)] for n in subs)
            if counts[id(g)] > most.max_nodes:
                raise GraphError(f"{counts[id(g)]} nodes once subgraphs are inlined, more than "
                                 f"{most.max_nodes}; " + how_to_raise("max_nodes"),
                                 node=where or None)
    return counts[id(graph)]


def _endpoint(graph: Graph, prefix: str, ref: str, role: str, flat: dict[str, Node]) -> str:
    """Resolve an edge end of ``graph`` (inlined at ``prefix``) to a node name of ``flat``."""
    if ref in graph.nodes and not isinstance(graph.nodes[ref], Graph):
        return prefix + ref
    sub_name, _, port = ref.partition(".")
    sub = graph.nodes.get(sub_name) if ref not in graph.nodes else graph.nodes[ref]
    if not isinstance(sub, Graph):
        raise GraphError(f"edge {role} {ref!r} names no node; nodes are "
                         f"{_names(graph.nodes)}", node=prefix + ref)
    ports = sub.outputs if role == "source" else sub.inputs
    if ref == sub_name:
        if len(ports) != 1:
            raise GraphError(f"subgraph has {len(ports)} {role} ports ({_names(ports)}); "
                             f"name one as '{sub_name}.<port>'", node=prefix + sub_name)
        port = ports[0]
    name = f"{prefix}{sub_name}.{port}"
    # a port, or an edge straight to an inner node, as some NIR files have: a dict lookup
    if port in ports or name in flat:
        return name
    inner = f"{prefix}{sub_name}."
    raise GraphError(f"edge {role} {ref!r}: subgraph {sub_name!r} has no node {port!r}; it has "
                     f"{_names(n[len(inner):] for n in flat if n.startswith(inner))}",
                     node=prefix + sub_name)


def _names(names: Iterable[str], most: int = 20) -> str:
    """Names for a message, sorted, at most ``most`` of them: a hostile graph has 100,000."""
    names = sorted(names)
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def _short(value: Any, most: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= most else text[:most] + "..."


def _short_path(path: str, most: int = 200) -> str:
    return path if len(path) <= most else "..." + path[-most:]


def check_dt(value: Any, field: str = "metadata.dt") -> float:
    """A time step: a positive, finite number of seconds; else a ParameterError naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ParameterError(f"dt must be a number of seconds, got {_short(value)}", field=field)
    if not math.isfinite(float(value)) or float(value) <= 0:
        raise ParameterError(f"dt must be a positive number of seconds, and finite, got "
                             f"{value!r}", field=field)
    return float(value)


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
    inputs = g.inputs  # once: a property that walks every node
    given = set(inputs)
    starts = inputs + [n for n in g.nodes if n not in given]
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
