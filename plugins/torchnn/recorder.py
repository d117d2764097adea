"""The recorder behind :mod:`hub_plugins.torchnn.trace`: every torch call a model's forward makes,
at the model's own level, as values and the canonical pieces that compute them."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable

import torch
from torch import nn

import hub
from hub.errors import HubError, UnsupportedError
from hub.node import Node

from .layers import LAYERS, import_layer, import_module, is_layer


@dataclasses.dataclass
class Piece:
    """What one neuron call becomes: nodes by suffix of the call's name, edges among them
    (``"<in>"`` is the call's input), and which suffix gives output ``k`` (0 the spikes,
    1 the membrane)."""

    nodes: dict[str, Node]
    edges: list[tuple[str, str]] = dataclasses.field(default_factory=lambda: [("<in>", "")])
    outputs: dict[int, str] = dataclasses.field(default_factory=lambda: {0: ""})


@dataclasses.dataclass(frozen=True)
class Call:
    """A neuron call as the plugin's mapper sees it."""

    module: nn.Module
    path: str
    #: the state starts from zero at every step: the neuron is its own first step, stateless
    fresh: bool
    #: which outputs something reads: 0 the spikes, 1 the membrane
    used: frozenset[int]


@dataclasses.dataclass(frozen=True)
class Framework:
    """What a plugin tells the importer about its framework."""

    name: str
    #: whether a module is one of the framework's neurons (a leaf with state)
    is_neuron: Callable[[nn.Module], bool]
    #: the canonical piece of a neuron call
    neuron: Callable[[Call], Piece]
    #: split a neuron call's arguments into (input, state); state is None when it is hidden
    split: Callable[[nn.Module, tuple, dict], tuple[Any, Any]]
    #: other leaves the framework adds (SpikingJelly's VotingLayer), module -> node
    layers: dict[type, Callable[[nn.Module], Node | None]] = dataclasses.field(default_factory=dict)
    #: forget every neuron's hidden state before a run
    reset: Callable[[nn.Module], None] = lambda model: None
    #: why a module the framework has is refused whole (a stateful layer with no canonical
    #: counterpart), or None; such a module is a leaf, so the refusal names it
    refused: Callable[[nn.Module], str | None] = lambda module: None


# -- values ---------------------------------------------------------------------------------

STATIC, STEP, SEQ, MERGED, LIFTED, REDUCED = "static", "step", "seq", "merged", "lifted", "reduced"


@dataclasses.dataclass
class Value:
    """What the recorder knows of one tensor the forward computed."""

    ref: tuple[str, int] | None  # (node or neuron site name, output index); None for constants
    layout: str
    time: int | None = None  # the step of a STEP value
    steps: int | None = None  # T of a SEQ or MERGED value
    #: for a neuron's output: (site name, time), so a later call can continue its state
    state_of: tuple[str, int] | None = None
    reduction: str | None = None  # REDUCED: the time reduction ("mean", "sum")


def _lead(v: Value) -> int:
    return {STATIC: 1, STEP: 1, SEQ: 2, MERGED: 1, LIFTED: 2, REDUCED: 1}[v.layout]


def _tensors(obj: Any) -> Iterable[tuple[tuple, torch.Tensor]]:
    """Every tensor in a nested structure with its index path."""
    if isinstance(obj, torch.Tensor):
        yield (), obj
    elif isinstance(obj, (tuple, list)):
        for i, item in enumerate(obj):
            for path, t in _tensors(item):
                yield (i, *path), t
    elif isinstance(obj, dict):
        for k, item in obj.items():
            for path, t in _tensors(item):
                yield (k, *path), t


# -- the recorder -----------------------------------------------------------------------------


class _Site:
    """A neuron's call site: materialised once every use of its outputs is known."""

    def __init__(self, module: nn.Module, path: str, source: tuple[str, int]) -> None:
        self.module, self.path, self.source = module, path, source
        self.used: set[int] = set()
        self.continued = False  # a later step continues this site's state
        self.restarted = False  # a later step starts it again from fresh state


class Recorder:
    """Runs a model and builds the canonical graph of what it computed (module docstring)."""

    def __init__(self, model: nn.Module, framework: Framework) -> None:
        self.model, self.fw = model, framework
        self.paths = {id(m): name for name, m in model.named_modules()}
        self.values: dict[int, tuple[Value, torch.Tensor]] = {}
        self.nodes: dict[str, Node | _Site] = {}
        self.edges: list[tuple[tuple[str, int], str]] = []
        #: what the native run computed: node name -> step (None: every step) -> value
        self.native: dict[str, dict[int | None, tuple[Value, torch.Tensor]]] = {}
        self.static_keys: dict[Any, str] = {}
        self.counts: dict[tuple[Any, str], int] = {}
        self.leaf_depth = 0
        self.stack: list[nn.Module] = []
        self.calls: dict[int, int] = {}  # hidden-state neuron -> calls so far
        #: graph node -> the key of the native value it must equal
        self.compare: dict[str, str] = {}

    # -- bookkeeping ------------------------------------------------------------------------

    def where(self) -> str:
        for module in reversed(self.stack):
            path = self.paths.get(id(module))
            if path:
                return path
        return type(self.model).__name__

    def value(self, t: Any) -> Value | None:
        if isinstance(t, torch.Tensor):
            hit = self.values.get(id(t))
            if hit is not None and hit[1] is t:
                return hit[0]
        return None

    def remember(self, t: torch.Tensor, v: Value) -> None:
        self.values[id(t)] = (v, t)
        if v.ref is not None and v.layout not in (REDUCED, LIFTED):
            times = self.native.setdefault(_key(v.ref), {})
            # a copy: a later in-place operation (out += identity) must not change it
            times.setdefault(v.time if v.layout == STEP else None, (v, t.detach().clone()))

    def name_for(self, base: str, time: int | None) -> str:
        """The name of the next operation ``base`` in step ``time``: the same name at every
        step for the same position, so later steps find their counterpart."""
        base = base.replace("/", "_") or "node"
        key = (time, base)
        index = self.counts.get(key, 0)
        self.counts[key] = index + 1
        return base if index == 0 else f"{base}_{index}"

    def add(self, name: str, node: Node | _Site, inputs: Iterable[tuple[str, int]]) -> None:
        self.nodes[name] = node
        for ref in inputs:
            self.edges.append((ref, name))

    # -- operations -------------------------------------------------------------------------

    def combine(self, inputs: list[Value]) -> tuple[str, int | None, int | None]:
        """The layout, time and steps of an operation on ``inputs``."""
        layouts = {v.layout for v in inputs}
        if REDUCED in layouts:
            raise UnsupportedError("a value reduced over time (a mean or sum over the steps) "
                                   "is used again; only the forward's result may be one",
                                   node=self.where())
        for kind in (SEQ, MERGED, LIFTED):
            if kind in layouts:
                if len(layouts - {STATIC}) > 1:
                    raise UnsupportedError(f"values with and without a time axis meet here "
                                           f"({', '.join(sorted(layouts))})", node=self.where())
                steps = {v.steps for v in inputs if v.layout == kind}
                return kind, None, steps.pop()
        times = {v.time for v in inputs if v.layout == STEP}
        if len(times) > 1:
            raise UnsupportedError(f"values of different time steps ({sorted(times)}) meet "
                                   "here; the hub's graph computes each step from that step's "
                                   "values (and state)", node=self.where())
        if times:
            return STEP, times.pop(), None
        return STATIC, None, None

    def op(self, base: str, node: Node | None, inputs: list[Value], key: Any,
           out: torch.Tensor) -> None:
        """Record ``out`` as the output of ``node`` fed by ``inputs`` (``node`` None passes the
        single input through)."""
        layout, time, steps = self.combine(inputs)
        if node is None:
            self.remember(out, dataclasses.replace(inputs[0], layout=layout, time=time,
                                                   steps=steps, state_of=None))
            return
        if layout == STATIC:  # computed again in every step of a loop: one node
            skey = (base, key if key is not None else _fingerprint(node),
                    tuple(v.ref for v in inputs))
            name = self.static_keys.get(skey)
            if name is None:
                name = self.static_keys[skey] = self.name_for(base, None)
                self.add(name, node, [v.ref for v in inputs])
        else:
            name = self.name_for(base, time)
            if time in (None, 0) and name not in self.nodes:
                self.add(name, node, [v.ref for v in inputs])
        self.remember(out, Value((name, 0), layout, time, steps))

    # -- leaves -----------------------------------------------------------------------------

    def leaf(self, module: nn.Module) -> bool:
        return (self.fw.is_neuron(module) or type(module) in self.fw.layers or is_layer(module)
                or self.fw.refused(module) is not None)

    def on_module(self, module: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
        path = self.paths.get(id(module), type(module).__name__)
        why = self.fw.refused(module)
        if why is not None:
            raise UnsupportedError(why, node=path, field="type")
        if self.fw.is_neuron(module):
            self.on_neuron(module, path, args, kwargs, out)
            return
        inputs = [self.value(x) for x in args] or [None]
        if any(v is None for v in inputs):
            raise UnsupportedError(f"{type(module).__name__} is applied to a tensor that does "
                                   "not come from the model's input", node=path)
        v = inputs[0]
        if not isinstance(out, torch.Tensor):
            raise UnsupportedError(f"{type(module).__name__} returns a "
                                   f"{type(out).__name__}, not a tensor", node=path)
        try:
            if type(module) in self.fw.layers:
                node = self.fw.layers[type(module)](module)
            elif isinstance(module, LAYERS):
                node = import_layer(module, lead=_lead(v), per_step=_step_module(module, v))
            else:
                node = import_module(module)
        except HubError as e:
            raise e.at(node=path)
        self.op(path, node, inputs, id(module), out)

    def on_neuron(self, module: nn.Module, path: str, args: tuple, kwargs: dict,
                  out: Any) -> None:
        x, state = self.fw.split(module, args, kwargs)
        v = self.value(x)
        if v is None:
            raise UnsupportedError("a neuron is applied to a tensor that does not come from "
                                   "the model's input", node=path)
        layout, time, steps = self.combine([v])
        known = [self.value(t) for _, t in _tensors(state)]
        carried = {k.state_of for k in known if k is not None and k.state_of}
        if len(carried) > 1:
            raise UnsupportedError("the state passed in comes from several neuron calls "
                                   f"({', '.join(sorted(map(str, carried)))})", node=path)
        if layout in (SEQ, MERGED, LIFTED):  # a multi-step neuron: one call for all steps
            name = self.name_for(path, None)
            site = self._site(name, module, path, v)
        elif carried:  # the state a previous call returned: the next step of that call
            site_name, last = carried.pop()
            if time is not None and time != last + 1:
                raise UnsupportedError(f"the state passed in was returned by {site_name!r} at "
                                       f"step {last}, but the input is step {time}'s",
                                       node=path)
            time = last + 1
            name = self.name_for(path, time)
            if name != site_name:
                raise UnsupportedError(f"the state passed in was returned by {site_name!r}, "
                                       "not by this call's previous step", node=name)
            site = self.nodes[site_name]
            site.continued = True
            layout = STEP
        elif state is not None and time is None:  # fresh state, static input: a first step
            time, layout = 0, STEP
            name = self.name_for(path, time)
            site = self._site(name, module, path, v)
        else:
            if time is None:  # hidden state, static input: each call is the next step
                time = self.calls.get(id(module), 0)
                layout = STEP
            self.calls[id(module)] = self.calls.get(id(module), 0) + 1
            name = self.name_for(path, time)
            if time == 0:
                site = self._site(name, module, path, v)
            else:
                site = self.nodes.get(name)
                if not isinstance(site, _Site):
                    raise UnsupportedError(f"a neuron is called at step {time} but not at step "
                                           "0", node=name)
                if state is not None:  # explicit state, not carried over: fresh every step
                    site.restarted = True
        seen: set[int] = set()
        for index, (idx_path, t) in enumerate(_tensors(out)):
            if id(t) in seen:  # returned again inside the state: the first place says what it is
                continue
            seen.add(id(t))
            k = idx_path[0] if idx_path and isinstance(idx_path[0], int) else index
            self.remember(t, Value((name, min(k, 1)), layout, time, steps,
                                   state_of=(name, time if time is not None else 0)))

    def _site(self, name: str, module: nn.Module, path: str, v: Value) -> _Site:
        if name not in self.nodes:
            self.add(name, _Site(module, path, v.ref), [v.ref])
        site = self.nodes[name]
        if not isinstance(site, _Site):
            raise UnsupportedError("a neuron and another operation share a name", node=name)
        return site

    # -- functions --------------------------------------------------------------------------

    def on_function(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        from . import ops as torch_ops

        torch_ops.record(self, func, args, kwargs, out)

    # -- finishing --------------------------------------------------------------------------

    def used(self, ref: tuple[str, int]) -> None:
        node = self.nodes.get(ref[0])
        if isinstance(node, _Site):
            node.used.add(ref[1])

    def graph(self, inputs: dict[str, tuple[int, ...]], outputs: dict[str, Value]) -> hub.Graph:
        """The canonical graph: sites materialised, nodes no output depends on left out."""
        for (src, k), _ in self.edges:
            self.used((src, k))
        for v in outputs.values():
            self.used(v.ref)
        graph = hub.Graph(metadata={})
        for name, shape in inputs.items():
            graph.add(name, hub.Input(shape=shape))
        wired: dict[tuple[str, int], str] = {}
        pieces: dict[str, Piece] = {}
        for name, node in self.nodes.items():
            if isinstance(node, _Site):
                fresh = node.restarted and not node.continued
                try:
                    piece = self.fw.neuron(Call(node.module, node.path, fresh,
                                                frozenset(node.used or {0})))
                except HubError as e:
                    raise e.at(node=name)
                pieces[name] = piece
                for suffix, inner in piece.nodes.items():
                    graph.add(f"{name}{suffix}", inner)
                for k, suffix in piece.outputs.items():
                    wired[(name, k)] = f"{name}{suffix}"
                    if k in node.used or (k == 0 and not node.used):
                        self.compare[f"{name}{suffix}"] = _key((name, k))
            else:
                graph.add(name, node)
                wired[(name, 0)] = name
                self.compare[name] = name
        for name, shape in inputs.items():
            wired[(name, 0)] = name

        def source(ref: tuple[str, int]) -> str:
            if ref not in wired:
                raise UnsupportedError(f"output {ref[1]} of {ref[0]!r} (its membrane) is read, "
                                       "but this neuron has no canonical node for it",
                                       node=ref[0])
            return wired[ref]

        for name, piece in pieces.items():
            (src,) = [ref for ref, dst in self.edges if dst == name]
            for a, b in piece.edges:
                graph.connect(source(src) if a == "<in>" else f"{name}{a}", f"{name}{b}")
        for ref, dst in self.edges:
            if dst not in pieces:
                graph.connect(source(ref), dst)
        for name, v in outputs.items():
            graph.add(name, hub.Output())
            graph.connect(source(v.ref), name)
        return _prune(graph)


def _fingerprint(node: Node) -> tuple:
    """What tells two nodes of a functional operation apart: their type and parameters."""
    return (node.type, *((k, v.tobytes() if hasattr(v, "tobytes") else v)
                         for k, v in node.params().items()))


def _step_module(module: nn.Module, v: Value) -> bool:
    """Whether ``module`` applies its per-step meaning to a sequence (SpikingJelly's
    multi-step layers do; a plain torch layer works on the tensor it is given)."""
    return v.layout in (SEQ, LIFTED) and getattr(module, "step_mode", "s") == "m"


def _prune(graph: hub.Graph) -> hub.Graph:
    """Leave out nodes that no output depends on (repeats of static work, unread buffers)."""
    needed = set(graph.outputs)
    feeds: dict[str, list[str]] = {}
    for a, b in graph.edges:
        feeds.setdefault(b, []).append(a)
    todo = list(needed)
    while todo:
        for a in feeds.get(todo.pop(), ()):
            if a not in needed:
                needed.add(a)
                todo.append(a)
    needed |= set(graph.inputs)
    out = hub.Graph(metadata=graph.metadata)
    for name, node in graph.nodes.items():
        if name in needed:
            out.add(name, node)
    for a, b in graph.edges:
        if a in needed and b in needed:
            out.connect(a, b)
    return out


def _key(ref: tuple[str, int]) -> str:
    return ref[0] if ref[1] == 0 else f"{ref[0]}#{ref[1]}"
