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
import is refused. A wrong reading of a model is impossible by construction."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

import hub
from hub.errors import FormatError, HubError, UnsupportedError

from .recorder import (LIFTED, MERGED, REDUCED, SEQ, STATIC, STEP, Call, Framework,  # noqa: F401
                       Piece, Recorder, Value, _key, _tensors)

#: The layer node types tracing a forward can give, whatever the framework (its neurons aside).
TRACED = frozenset({"Input", "Output", "Add", "Affine", "Linear", "Conv1d", "Conv2d", "MaxPool2d",
                    "AvgPool2d", "SumPool2d", "AdaptiveAvgPool2d", "Flatten", "Scale", "Bias",
                    "ReLU", "BatchNorm", "Mul", "Concat", "Reshape", "Delay", "Threshold"})

#: Steps and batch of the probe input every import runs.
PROBE_STEPS = 6
PROBE_BATCH = 2
#: Tolerance of the proof: float32 rounding, scaled by the size of the values compared.
RTOL, ATOL = 1e-4, 1e-5


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
