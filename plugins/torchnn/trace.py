"""Import a live torch model from what its ``forward`` computes, and prove the import.

The snnTorch, Norse, SpikingJelly and ANN plugins share this importer. It runs the model once on
a probe input under a recorder (a ``torch.overrides.TorchFunctionMode`` for every torch
function, tensor method and operator at the model's own level, and global module hooks for the
*leaves*: torch.nn layers and each framework's neurons), so whatever the ``forward`` does, Python
control flow included, is seen as it happens: wrapper classes, functional ops, reshapes, residual
additions, products, concatenation, loops over time steps with explicit or hidden state, and
SpikingJelly's multi-step tensors ``[T, N, *]``. ``torch.fx`` cannot follow the time loops
real models write (``for t in range(x.shape[0])``), which is why the recorder runs the code.

Time. Every recorded value is *static* (no time axis, such as the input of a forward that
presents one image at every step), a *step* value at a time step ``t``, or a *sequence*
``[T, N, *]``. A forward called once per step, a forward that loops over the steps of its
input (``x[t]``, ``unbind``) or over a fixed count with a static input, and a multi-step forward
all give the same per-step graph: the nodes come from the static, sequence and ``t = 0`` values;
later steps only name their counterparts (the same operation, by its order within its step), so
the native run can be compared node by node and step by step. A neuron called with state that a
previous call returned continues that state; one called with fresh state at every step has no
state, and imports as its first step.

Proof. :func:`import_model` then runs the imported graph in the reference simulator on the same
probe and compares every node with the native value it came from, in graph order, at every step:
the first node whose output differs beyond float32 rounding is named, with the step, and the
import is refused. A wrong reading of a model is impossible by construction.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable, Iterable

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

import hub
from hub.errors import FormatError, HubError, UnsupportedError
from hub.node import Node

from .layers import LAYERS, import_layer, import_module, is_layer

#: The layer node types tracing a forward can give, whatever the framework (its neurons aside).
TRACED = frozenset({"Input", "Output", "Add", "Affine", "Linear", "Conv1d", "Conv2d", "MaxPool2d",
                    "AvgPool2d", "SumPool2d", "AdaptiveAvgPool2d", "Flatten", "Scale", "Bias",
                    "ReLU", "BatchNorm", "Mul", "Concat", "Reshape", "Delay", "Threshold"})

#: Steps and batch of the probe input every import runs.
PROBE_STEPS = 6
PROBE_BATCH = 2
#: Tolerance of the proof: float32 rounding, scaled by the size of the values compared.
RTOL, ATOL = 1e-4, 1e-5


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


# -- running and proving ----------------------------------------------------------------------


@dataclasses.dataclass
class Traced:
    """A traced model: its graph, how its forward is called, and what the probe computed."""

    graph: hub.Graph
    convention: str  # "step" (one call per step), "sequence" ([T, N, *] in), "static" (one x)
    outputs: dict[str, Value]
    native: dict[str, dict[int | None, tuple[Value, torch.Tensor]]]
    steps: int
    #: the input the graph gets for the model's own input: ``[steps, N, *in]``
    x: torch.Tensor
    #: graph node -> the native value it must equal (see :func:`native_at`)
    compare: dict[str, str]


def _key(ref: tuple[str, int]) -> str:
    return ref[0] if ref[1] == 0 else f"{ref[0]}#{ref[1]}"


def _hooked(recorder: Recorder, run: Callable[[], Any]) -> Any:
    """Run ``run()`` with the recorder watching every module call and torch function."""

    def pre(module: nn.Module, args: tuple) -> None:
        recorder.stack.append(module)
        if recorder.leaf_depth or recorder.leaf(module):
            recorder.leaf_depth += 1

    def post(module: nn.Module, args: tuple, out: Any) -> None:
        recorder.stack.pop()
        if recorder.leaf_depth:
            recorder.leaf_depth -= 1
            if recorder.leaf_depth == 0:
                recorder.on_module(module, args, {}, out)

    class Mode(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            if recorder.leaf_depth == 0:
                if getattr(func, "__name__", "") == "__iter__":  # for x_t in x: x.unbind(0)
                    items = tuple(out)
                    recorder.on_function(torch.Tensor.unbind, args[:1], {}, items)
                    return iter(items)
                recorder.on_function(func, args, kwargs, out)
            return out

    handles = [nn.modules.module.register_module_forward_pre_hook(pre),
               nn.modules.module.register_module_forward_hook(post)]
    try:
        with Mode(), torch.no_grad():
            return run()
    finally:
        for handle in handles:
            handle.remove()


def trace(model: nn.Module, framework: Framework, x: torch.Tensor, convention: str) -> Traced:
    """Record ``model`` on ``x`` (``[T, N, *]``) called in ``convention``; build its graph."""
    recorder = Recorder(model, framework)
    framework.reset(model)
    try:
        return _trace(recorder, model, x, convention)
    except HubError as e:
        e.progress = len(recorder.values)  # how far this way of calling got
        raise


def _trace(recorder: Recorder, model: nn.Module, x: torch.Tensor, convention: str) -> Traced:
    steps = x.shape[0]
    results: list[Any] = []
    if convention == "step":
        state = None
        for t in range(steps):
            xt = x[t].clone()
            recorder.remember(xt, Value(("input", 0), STEP, time=t))
            args = (xt,) if state is None else (xt, state)
            out = _hooked(recorder, lambda: model(*args))
            if _returns_state(out):
                out, state = out
            results.append(out)
    elif convention == "sequence":
        xs = x.clone()
        recorder.remember(xs, Value(("input", 0), SEQ, steps=steps))
        results.append(_hooked(recorder, lambda: model(xs)))
    else:
        x0 = x[0].clone()
        recorder.remember(x0, Value(("input", 0), STATIC))
        results.append(_hooked(recorder, lambda: model(x0)))
    outputs = _outputs(recorder, results[0])
    graph = recorder.graph({"input": tuple(x.shape[2:])}, outputs)
    if convention == "static":  # the forward presents x[0] at each of its own steps
        steps = max((v.steps for v in outputs.values() if v.layout in (SEQ, REDUCED)),
                    default=1)
        x = x[0].expand(steps, *x.shape[1:])
    return Traced(graph, convention, outputs, recorder.native, steps, x, recorder.compare)


def _returns_state(out: Any) -> bool:
    """Whether a step call returned ``(y, state)`` to be passed back in the next call (Norse's
    ``SequentialState`` and cells): a plain pair whose second item is not a tensor."""
    return (type(out) is tuple and len(out) == 2 and isinstance(out[0], torch.Tensor)
            and not isinstance(out[1], torch.Tensor))


def _outputs(recorder: Recorder, result: Any) -> dict[str, Value]:
    found = list(_tensors(result))
    if not found:
        raise FormatError("the forward returns no tensor")
    outputs: dict[str, Value] = {}
    for index, (path, t) in enumerate(found):
        where = f"the forward's result{''.join(f'[{p!r}]' for p in path)}"
        v = recorder.value(t)
        if v is None:
            raise UnsupportedError(f"{where} does not depend on the input")
        if v.layout == STEP and v.time != 0:
            raise UnsupportedError(f"{where} is step {v.time}'s value alone; return every "
                                   "step's (torch.stack them)")
        if v.layout in (MERGED, LIFTED):
            raise UnsupportedError(f"{where} keeps time and batch merged; return [T, N, ...]")
        if index and v.layout == STEP and v.ref[0] == outputs["output"].ref[0]:
            continue  # a neuron's own (spikes, state...) result, returned as is: its spikes
        outputs["output" if index == 0 else f"output{index}"] = v
    return outputs


def native_at(traced: Traced, key: str, t: int) -> torch.Tensor | None:
    """The native value of node ``key`` at step ``t``, if the probe recorded it."""
    times = traced.native.get(key)
    if not times:
        return None
    if t in times:
        return times[t][1]
    if None not in times:
        return None
    v, value = times[None]
    if v.layout == SEQ:
        return value[t]
    if v.layout == MERGED:
        return value.reshape(v.steps, -1, *value.shape[1:])[t]
    return value  # static: the same at every step


def native_outputs(traced: Traced) -> dict[str, torch.Tensor]:
    """The native run's outputs as ``[T, N, *]``, before any time reduction of the forward."""
    return {name: torch.stack([native_at(traced, _key(v.ref), t) for t in range(traced.steps)])
            for name, v in traced.outputs.items()}


def prove(traced: Traced) -> None:
    """Run the graph on the probe and compare it with the native run, node by node and step by
    step; raise naming the first node and step that differ beyond float32 rounding."""
    sim = hub.Simulator(traced.graph)
    inputs = set(traced.graph.inputs)
    for t in range(traced.steps):
        sim.step(traced.x[t])
        got = sim.values
        for name in sim.plan.order:
            if name not in traced.compare or name in inputs:
                continue
            want = native_at(traced, traced.compare[name], t)
            if want is None:
                continue
            have = got[name]
            if have.shape != want.shape:
                raise UnsupportedError(
                    f"the imported graph gives shape {list(have.shape)} where the model's own "
                    f"run gives {list(want.shape)}, at step {t}", node=name)
            if not _close(have, want):
                worst = float((have - want).abs().max())
                raise UnsupportedError(
                    f"the imported graph differs from the model's own run at step {t} (by up "
                    f"to {worst:.3g}): the hub cannot reproduce this part of the forward "
                    "exactly, so it refuses the import", node=name)


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    if torch.equal(a, b):
        return True
    scale = float(b.abs().max()) if b.numel() else 0.0
    return bool(torch.allclose(a, b, rtol=RTOL, atol=ATOL * max(1.0, scale)))


# -- importing ---------------------------------------------------------------------------------


def guess_input_shape(model: nn.Module) -> tuple[int, ...]:
    """A sample's shape from the first layer registered, where it says (a Linear does)."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            return (module.in_features,)
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d)):
            break
    raise HubError(f"the input shape of this {type(model).__name__} is not stated by its first "
                   "layer: pass input_shape=(C, H, W) (without batch and time axes)",
                   field="input_shape")


def probe(shape: tuple[int, ...], steps: int = PROBE_STEPS, batch: int = PROBE_BATCH,
          seed: int = 0) -> torch.Tensor:
    """The probe input: reproducible random values in [0, 2), ``[steps, batch, *shape]``."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand((steps, batch, *shape), generator=generator) * 2


CONVENTIONS = ("step", "sequence", "static")


def import_model(model: nn.Module, framework: Framework, *,
                 input_shape: tuple[int, ...] | None = None,
                 conventions: tuple[str, ...] = CONVENTIONS) -> Traced:
    """Trace ``model`` (a copy, in eval mode; the model itself is not touched) and prove the
    graph against the model's own run on a probe input.

    The forward's calling convention is found by trying ``conventions`` in order: called once
    per step on ``[N, *in]``, once on a sequence ``[T, N, *in]``, or once on a single ``[N, *in]``
    that it presents at every step itself. The first that runs, reads and proves gives the
    graph; if none does, a failed proof is raised first, else the refusal of the way of calling
    that read the furthest.
    """
    shape = tuple(input_shape) if input_shape is not None else guess_input_shape(model)
    try:
        shape = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise HubError(f"expected a tuple of ints, got {input_shape!r}",
                       field="input_shape") from None
    copied = copy_model(model).eval()
    x = probe(shape)
    traced_wrong: list[HubError] = []
    failures: list[tuple[str, BaseException]] = []
    for convention in conventions:
        try:
            traced = trace(copied, framework, x, convention)
        except Exception as e:  # a refusal, or the forward cannot run this way
            failures.append((convention, e))
            continue
        try:
            prove(traced)
        except HubError as e:  # read, but not what the model computes: maybe another way
            traced_wrong.append(e)
            continue
        return traced
    # the refusal from the way of calling that read the furthest says the most
    ours = sorted((e for _, e in failures if isinstance(e, HubError)),
                  key=lambda e: -getattr(e, "progress", 0))
    if traced_wrong or ours:
        raise (traced_wrong + ours)[0]
    tried = "; ".join(f"{c}: {type(e).__name__}: {e}" for c, e in failures)
    raise FormatError(f"the forward of {type(model).__name__} runs in none of the ways the hub "
                      f"calls a model on inputs of shape {list(shape)} ({tried}); pass "
                      "input_shape=(...) if that shape is wrong")


def copy_model(model: nn.Module) -> nn.Module:
    """A deep copy to trace, so the model's own state is never touched. Tensors a module holds
    as plain attributes with autograd history (a neuron's state after training) cannot be
    deep-copied, so the copy gets them detached."""
    held = []
    for module in model.modules():
        for where in (vars(module), module._buffers):
            for key, value in where.items():
                if isinstance(value, torch.Tensor) and not value.is_leaf:
                    held.append((where, key, value))
    try:
        for where, key, value in held:
            where[key] = value.detach()
        return copy.deepcopy(model)
    finally:
        for where, key, value in held:
            where[key] = value


def run_native(model: nn.Module, framework: Framework, x: torch.Tensor,
               input_shape: tuple[int, ...] | None = None) -> Any:
    """Run ``model`` (a copy) in its framework on ``x`` ``[T, N, *in]`` the way its forward is
    called (see :func:`import_model`); its outputs as ``[T, N, *]``, a dict by output name when
    there are several, read before any time reduction its forward applies (a mean firing rate).
    A forward that presents one input at each of its own steps needs an ``x`` that is the same
    at every step, with as many steps as it runs."""
    shape = tuple(x.shape[2:]) if input_shape is None else input_shape
    convention = import_model(model, framework, input_shape=shape).convention
    if convention == "static" and not torch.equal(x, x[:1].expand_as(x)):
        raise HubError("this model's forward takes one input and presents it at each of its "
                       "own steps; pass an x that is the same at every step", field="x")
    traced = trace(copy_model(model).eval(), framework, x, convention)
    if traced.steps != x.shape[0]:
        raise HubError(f"this model's forward runs {traced.steps} steps of its own; pass an x "
                       f"of {traced.steps} steps, not {x.shape[0]}", field="x")
    outputs = native_outputs(traced)
    return outputs["output"] if len(outputs) == 1 else outputs


def prove_outputs(graph: hub.Graph, run: Callable[[torch.Tensor], Any]) -> None:
    """The proof for a model read from its containers rather than traced: its own run
    (``run(x)``, ``[T, N, *]`` in and out) and the graph's on the probe input agree output by
    output, or the import is refused naming the output and the first step that differs."""
    x = probe(graph.plan().output_shapes[graph.inputs[0]])
    want = run(x)
    got = hub.simulate(graph, x)
    if not isinstance(got, dict):
        got, want = {graph.outputs[0]: got}, {graph.outputs[0]: want}
    for name, have in got.items():
        native = torch.as_tensor(want[name]).to(have.dtype)
        if native.shape != have.shape:
            raise UnsupportedError(f"the model's own run gives shape {list(native.shape)} where "
                                   f"the imported graph gives {list(have.shape)}", node=name)
        for t in range(have.shape[0]):
            if not _close(have[t], native[t]):
                raise UnsupportedError(
                    f"the imported graph differs from the model's own run at step {t}: the "
                    "model's containers do not say what it computes, so the import is refused",
                    node=name)
