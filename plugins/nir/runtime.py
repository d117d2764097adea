r"""NIR's native runtime: an interpreter of NIR graphs, for the conformance suite.

NIR has no runtime of its own, so the conformance suite needs one that reads a NIR graph the
way any NIR consumer would: from NIR's own parameters (``tau``, ``r``, ``v_leak``,
``v_threshold``, ``v_reset``, ``tau_syn``, ``tau_mem``, ``w_in``, ``weight``, ``bias``, ``scale``,
``delay``, ...), integrating NIR's continuous-time equations by forward Euler at the time step
``dt``. It is deliberately a second implementation of the arithmetic: it never builds canonical
neurons or calls their ``step``, so a mistake in the NIR mapping or in the reference simulator
shows up as a disagreement between the two.

**Structure from the hub, arithmetic from NIR.** Which edges are recurrent (carrying the
previous step's value) and the order nodes run in are a matter of definition, and the hub's
definition is the one conversions must agree with; so the runtime imports the graph with the
NIR plugin only to call :meth:`hub.Graph.plan` (order, forward and recurrent edges, shapes).
Everything a node computes comes from the NIR node itself. A node's input is the sum of its
incoming edges, forward ones from this step, then recurrent ones from the step before. Nested
NIR graphs run inlined (their inner ``Input``/``Output`` pass values through).

**The time step.** ``dt`` comes from the graph's metadata ``{"hub": {"dt": ...}}``, which
snn-hub writes on export, or from ``run(..., dt=)`` for a graph without it; with neither, the
runtime refuses to guess. Per-step factors (``dt/tau``, ``dt*r``) are computed in float64 and
cast to float32 once; the state and all arithmetic are float32.

**Neurons, forward Euler.** With input ``I`` (the summed edges) and ``k = dt/tau``:

=========  ======================================================================================
LIF, LI    ``v = v + k * ((v_leak - v) + r * I)``
IF, I      ``v = v + (dt * r) * I``
CubaLIF,   ``I_syn' = I_syn + k_syn * (w_in * I - I_syn)`` and
CubaLI     ``v = v + k_mem * ((v_leak - v) + r * I_syn')``: the voltage sees this step's
           current ``I_syn'``, as snnTorch, Norse and SpikingJelly compute NIR's CubaLIF, or
           the previous ``I_syn`` (forward Euler of both equations) with
           ``current_order="previous"`` or where the dialect says so
=========  ======================================================================================

``Delay`` delays by ``delay/dt`` steps (a whole number, else an error); ``Threshold``,
``Affine``, ``Linear``, ``Scale``, ``Conv1d``/``Conv2d`` (integer, ``'same'`` or ``'valid'``
padding), ``SumPool2d``/``AvgPool2d`` (zero padding, counted in the average), ``Flatten``,
``Identity``, ``Input`` and ``Output`` compute what their NIR definitions say.

**NIR's semantics, and the snn-hub dialect.** A node without snn-hub metadata follows NIR's
documented semantics: it spikes when ``v > v_threshold``, resets to ``v_reset`` in the same step,
and emits binary spikes. Discrete conventions NIR cannot hold are stored by snn-hub's exporter in
the node's metadata under ``"hub"``; they are part of the file (the snn-hub dialect of NIR), and
the runtime honours them:

- ``comparison`` (``">"``, ``">="``), also on ``Threshold``;
- ``reset`` (``"zero"`` to ``v_reset``, ``"subtract"`` the threshold, ``"none"``) and
  ``reset_timing`` (``"same"`` step, or ``"next"``: at the start of the next step, undecayed);
- ``spike_mode`` (``"binary"``, ``"multi"``: one spike per threshold multiple reached,
  ``"graded"``: the voltage), and ``amplitude`` (every output is multiplied by it);
- ``refractory`` (steps the voltage is held and silent after a spike) and ``delay`` (axonal
  delay of the output, in steps);
- ``current_order`` (``"new"``: the voltage sees this step's synaptic current, or
  ``"previous"``);
- ``v_init`` (the voltage before the first step; NIR has no initial state).

Only these conventions are read from the metadata; every continuous parameter comes from NIR's
own fields, so a file whose NIR parameters were edited runs with the edited values. The one
exception is a layer NIR has no node for (``ReLU``, ``Mul``, ``Concat``, ``MaxPool2d``, and
settings of the others that no NIR node computes, :mod:`hub_plugins.nir.layers`): it is written
as a unit ``Scale`` whose metadata names the layer and holds its parameters, and the runtime
computes that layer (a ``Mul`` or ``Concat`` takes its inputs as operands in edge order).
Metadata written for another node type is ignored with a warning. Anything else the runtime
cannot do raises a :class:`hub.HubError` naming the node and the field.
"""

from __future__ import annotations

import abc
import math
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hub.errors import (
    FormatError,
    GraphError,
    HubError,
    ParameterError,
    ShapeError,
    UnsupportedError,
)
from hub.node import MAX_STEPS

from hub_plugins.nir.common import (CARRIED, CURRENT_ORDER, META, HubMetadataWarning,
                                    _check_current_order, _check_dt, _plain)
from hub_plugins.nir.files import read_nir
from hub_plugins.nir.reading import _import_graph
from hub_plugins.nir.layers import INPUT, NIR_TYPES

DTYPE = torch.float32
Tensors = torch.Tensor | dict[str, torch.Tensor]

#: The snn-hub metadata "type" each NIR node type may carry (Add is exported as a unit Scale).
_META_TYPES = {"I": {"Integrator"}, "Scale": {"Scale", "Add"}, "Identity": {"Add"}}
for _layer, _kinds in NIR_TYPES.items():  # the layers of real models (hub_plugins.nir.layers)
    for _kind in _kinds:
        _META_TYPES.setdefault(_kind, {_kind}).add(_layer)

#: The discrete conventions of the dialect, their allowed values and NIR's own choice.
_CHOICES = {
    "comparison": ((">", ">="), ">"),
    "reset": (("zero", "subtract", "none"), "zero"),
    "reset_timing": (("same", "next"), "same"),
    "spike_mode": (("binary", "multi", "graded"), "binary"),
    "current_order": (("new", "previous"), CURRENT_ORDER),
}


def run(nir_graph: Any, x: Any, *, dt: float | None = None,
        current_order: str = CURRENT_ORDER) -> Tensors:
    """Run a NIR graph (a ``nir.NIRGraph`` or a ``.nir`` path) on a time-major input.

    ``x`` is ``[T, N, *in]`` (a tensor or an array), or a dict of them by input node name when
    the graph has several inputs. Returns a float32 tensor ``[T, N, *out]``, or a dict by output
    name for several outputs, like :func:`hub.simulate`. ``dt`` (seconds) is needed only for a
    graph whose metadata does not say which time step it was made for. ``current_order`` is
    the current a ``CubaLIF``/``CubaLI`` voltage sees where the node's metadata does not say:
    ``"new"`` (this step's, as snnTorch, Norse and SpikingJelly read NIR) or ``"previous"``.
    """
    path = None
    if isinstance(nir_graph, (str, os.PathLike)):
        path = Path(nir_graph)
    try:
        if path is not None:
            if not path.is_file():
                raise FormatError("no such file" if not path.exists() else "not a file")
            nir_graph = read_nir(path)
        return Runtime(nir_graph, dt=dt, current_order=current_order)(x)
    except HubError as e:
        raise e.at(file=path) if path is not None else e


def _graph_dt(nir_graph: Any, dt: float | None) -> float:
    """The time step: the graph's own (snn-hub metadata), else the one given, never a guess."""
    meta = _plain(getattr(nir_graph, "metadata", None) or {}).get(META)
    stored = meta.get("dt") if isinstance(meta, dict) else None
    if stored is not None:
        stored = _check_dt(stored)
        if dt is not None and not math.isclose(_check_dt(dt), stored, rel_tol=1e-12):
            raise ParameterError(f"the graph was made for dt={stored}, but dt={dt} was given; "
                                 "leave dt out to run it as made", field="dt")
        return stored
    if dt is None:
        raise FormatError("running a NIR graph needs a time step, and its metadata has none "
                          "(snn-hub writes {'hub': {'dt': ...}}); pass dt=<seconds>", field="dt")
    return _check_dt(dt)


def _nir_nodes(nir_graph: Any, prefix: str = "") -> dict[str, Any]:
    """Every non-graph NIR node by the dotted name :meth:`hub.Graph.flat` gives it."""
    import nir

    out = {}
    for name, node in nir_graph.nodes.items():
        if isinstance(node, nir.NIRGraph):
            out.update(_nir_nodes(node, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = node
    return out


class Runtime:
    """A NIR graph ready to run: the hub's plan, and one NIR operation per node."""

    def __init__(self, nir_graph: Any, *, dt: float | None = None,
                 current_order: str = CURRENT_ORDER) -> None:
        self.dt = _graph_dt(nir_graph, dt)
        current_order = _check_current_order(current_order)
        with warnings.catch_warnings():
            # the plugin warns about metadata it distrusts; the runtime reads its own below
            warnings.simplefilter("ignore", HubMetadataWarning)
            graph = _import_graph(nir_graph, self.dt)
        self.plan = graph.plan()
        flat = graph.flat()
        self.inputs, self.outputs = flat.inputs, flat.outputs
        self.operands = {n for n in self.plan.order if getattr(flat.nodes[n], "operands", False)}
        nodes = _nir_nodes(nir_graph)
        self.ops: dict[str, _Op] = {}
        for name in self.plan.order:
            try:
                self.ops[name] = _make_op(nodes[name], self.dt, self.plan.output_shapes[name],
                                          current_order)
            except HubError as e:
                raise e.at(node=name)

    def __call__(self, x: Any) -> Tensors:
        inputs = self._named(x)
        first = next(iter(inputs.values()))
        steps, batch = first.shape[:2]
        like = first  # device and dtype of the state
        states = {name: op.start(batch, like) for name, op in self.ops.items()}
        last = {name: like.new_zeros((batch, *self.plan.output_shapes[name]))
                for name in self.plan.order}
        results: dict[str, list[torch.Tensor]] = {name: [] for name in self.outputs}
        for t in range(steps):
            now: dict[str, torch.Tensor] = {}
            for name in self.plan.order:
                if name in inputs:
                    total = inputs[name][t]
                elif name in self.operands:  # separate operands, in edge order
                    total = tuple(now[s] for s in self.plan.forward[name])
                else:
                    sources = [now[s] for s in self.plan.forward[name]]
                    sources += [last[s] for s in self.plan.recurrent[name]]
                    if not sources:
                        raise GraphError("nothing feeds this node", node=name)
                    total = sources[0]
                    for value in sources[1:]:
                        total = total + value
                try:
                    now[name], states[name] = self.ops[name].step(total, states[name])
                except HubError as e:
                    raise e.at(node=name)
            last = now
            for name in self.outputs:
                results[name].append(now[name])
        out = {name: torch.stack(values) for name, values in results.items()}
        return out if len(out) > 1 else next(iter(out.values()))

    def _named(self, x: Any) -> dict[str, torch.Tensor]:
        """The input sequences by input name, as float32 ``[T, N, *shape]``, checked."""
        if isinstance(x, Mapping):
            if set(x) != set(self.inputs):
                raise HubError(f"the graph's inputs are {', '.join(self.inputs)}; got "
                               f"{', '.join(map(str, x))}")
            given = dict(x)
        elif len(self.inputs) == 1:
            given = {self.inputs[0]: x}
        else:
            raise HubError(f"the graph has {len(self.inputs)} inputs "
                           f"({', '.join(self.inputs)}); pass a dict of tensors by input name")
        out, lead = {}, None
        for name, value in given.items():
            value = torch.as_tensor(np.asarray(value) if not torch.is_tensor(value) else value)
            want = tuple(self.plan.output_shapes[name])
            if value.dim() != 2 + len(want) or tuple(value.shape[2:]) != want:
                raise ShapeError(f"expected input of shape [T, N, {', '.join(map(str, want))}]"
                                 f", got {list(value.shape)}", node=name)
            if lead is not None and tuple(value.shape[:2]) != lead:
                raise ShapeError("inputs disagree on the time or batch size", node=name)
            lead = tuple(value.shape[:2])
            out[name] = value.to(DTYPE)
        return out


# -- operations ---------------------------------------------------------------------------------


class _Op(abc.ABC):
    """One NIR node's computation: ``step(x, state) -> (y, state)`` on ``[N, *]`` tensors."""

    def start(self, batch: int, like: torch.Tensor) -> Any:
        return None

    @abc.abstractmethod
    def step(self, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """One time step of this node."""


def _tensor(value: Any, like: torch.Tensor, dtype: torch.dtype = DTYPE) -> torch.Tensor:
    return torch.as_tensor(np.asarray(value), device=like.device).to(dtype)


class _Stateless(_Op):
    """An operation with no state, from a function of the input and its parameters."""

    def __init__(self, fn: Any, **params: Any) -> None:
        self.fn = fn
        self.params = params
        self._on: dict[str, torch.Tensor] | None = None

    def start(self, batch: int, like: torch.Tensor) -> Any:
        self._on = {k: _tensor(v, like) if isinstance(v, np.ndarray) else v
                    for k, v in self.params.items()}
        return None

    def step(self, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        return self.fn(x, **self._on), state


def _affine(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return torch.matmul(x, weight.T) + bias


def _linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return torch.matmul(x, weight.T)


def _window_sums(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int],
                 padding: tuple[int, int]) -> torch.Tensor:
    """The sum over each pooling window of ``[N, C, H, W]``, zero padding included."""
    n, c, h, w = x.shape
    cols = F.unfold(x, kernel, padding=padding, stride=stride)  # [N, C*kh*kw, L]
    sums = cols.reshape(n, c, kernel[0] * kernel[1], -1).sum(2)
    out_h = (h + 2 * padding[0] - kernel[0]) // stride[0] + 1
    out_w = (w + 2 * padding[1] - kernel[1]) // stride[1] + 1
    return sums.reshape(n, c, out_h, out_w)


class _Delay(_Op):
    """``y[t] = x[t - steps]`` per element; zeros before the first input."""

    def __init__(self, steps: np.ndarray) -> None:
        self.steps = steps
        self.depth = int(steps.max()) + 1 if steps.size else 1

    def start(self, batch: int, like: torch.Tensor) -> Any:
        self._index = torch.as_tensor(self.steps, device=like.device)
        return []  # past inputs, newest first

    def step(self, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        past = [x] + state[:self.depth - 1]
        past += [torch.zeros_like(x)] * (self.depth - len(past))
        history = torch.stack(past)  # history[j] = x[t - j]
        index = self._index.expand(x.shape).unsqueeze(0)
        return torch.gather(history, 0, index)[0], past


class _Neuron(_Op):
    """A NIR neuron integrated by forward Euler, with the dialect's discrete conventions."""

    def __init__(self, kind: str, params: dict[str, np.ndarray], conventions: dict[str, Any],
                 shape: tuple[int, ...]) -> None:
        self.kind = kind
        self.params = params
        self.c = conventions
        self.shape = shape
        self.spiking = kind in ("LIF", "IF", "CubaLIF")
        self.cuba = kind in ("CubaLIF", "CubaLI")
        self.leaky = kind not in ("IF", "I")

    def start(self, batch: int, like: torch.Tensor) -> Any:
        self.p = {k: _tensor(v, like) for k, v in self.params.items()}
        shape = (batch, *self.shape)
        zeros = like.new_zeros(shape)
        state = {"v": zeros + _tensor(self.c["v_init"], like)}
        if self.cuba:
            state["i"] = zeros
        if self.spiking:
            state["s"] = zeros  # the previous step's spike count, before amplitude
            state["rest"] = torch.zeros(shape, dtype=torch.int64, device=like.device)
            state["line"] = [zeros] * self.c["delay"]
        return state

    def _integrate(self, v: torch.Tensor, drive: torch.Tensor) -> torch.Tensor:
        p = self.p
        if self.leaky:  # tau dv/dt = (v_leak - v) + r I
            return v + p["k_mem"] * ((p["v_leak"] - v) + p["r"] * drive)
        return v + p["dt_r"] * drive  # dv/dt = r I

    def step(self, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        p, c = self.p, self.c
        new = dict(state)
        if self.cuba:  # tau_syn dI/dt = -I + w_in S
            i_new = state["i"] + p["k_syn"] * (p["w_in"] * x - state["i"])
            drive = i_new if c["current_order"] == "new" else state["i"]
            new["i"] = i_new
        else:
            drive = x
        v = state["v"]
        if not self.spiking:
            new["v"] = self._integrate(v, drive)
            return new["v"], new

        threshold, previous = p["v_threshold"], state["s"]
        later = c["reset_timing"] == "next"
        held = v
        if later and c["reset"] == "zero":  # the previous spike's reset, before integrating
            v = torch.where(previous > 0, p["v_reset"].expand_as(v), v)
        v = self._integrate(v, drive)
        if later and c["reset"] == "subtract":
            v = v - threshold * previous
        resting = state["rest"] > 0
        if c["refractory"]:
            v = torch.where(resting, held, v)

        fired = v >= threshold if c["comparison"] == ">=" else v > threshold
        fired = fired & ~resting
        count = fired.to(DTYPE)
        if c["spike_mode"] == "multi":
            count = torch.where(fired, torch.clamp(self._multiples(v, threshold), min=1),
                                torch.zeros_like(v))
        out = count * v if c["spike_mode"] == "graded" else count
        out = out * p["amplitude"]
        new["s"] = count if later else fired.to(DTYPE)
        if not later:
            if c["reset"] == "zero":
                v = torch.where(fired, p["v_reset"].expand_as(v), v)
            elif c["reset"] == "subtract":
                v = v - threshold * count
        new["v"] = v
        if c["refractory"]:
            new["rest"] = torch.where(fired, torch.full_like(state["rest"], c["refractory"]),
                                      torch.clamp(state["rest"] - 1, min=0))
        if c["delay"]:
            line = state["line"] + [out]
            out, new["line"] = line[0], line[1:]
        return out, new

    def _multiples(self, v: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
        """How many multiples ``k * threshold`` (k >= 1) ``v`` reaches (``>=``) or exceeds."""
        n = torch.floor(v / threshold)
        # v / threshold rounds; the exact products decide which side of a multiple v is on
        n = torch.where(n * threshold > v, n - 1, n)
        n = torch.where((n + 1) * threshold <= v, n + 1, n)
        if self.c["comparison"] == ">":
            n = torch.where(n * threshold == v, n - 1, n)
        return n


# -- building operations from NIR nodes ---------------------------------------------------------


def _f32(value: Any) -> np.ndarray:
    """A NIR parameter as float32 (how the runtime computes)."""
    return np.asarray(value, dtype=np.float64).astype(np.float32)


def _factor(value: np.ndarray) -> np.ndarray:
    """A per-step factor computed in float64, cast to float32 once."""
    return np.asarray(value, dtype=np.float64).astype(np.float32)


def _rate(tau: Any, dt: float, field: str) -> np.ndarray:
    """``dt / tau``, the forward-Euler step of a time constant."""
    tau = np.asarray(tau, dtype=np.float64)
    if (tau <= 0).any():
        raise ParameterError("time constants must be positive", field=field)
    return _factor(dt / tau)


def _ints(value: Any, dims: int, field: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in np.broadcast_to(np.asarray(value, dtype=np.int64), (dims,)))
    except (TypeError, ValueError) as e:
        raise ParameterError(f"expected {dims} integers, got {value!r}", field=field) from e


def _conventions(node: Any, meta: dict[str, Any] | None,
                 current_order: str = CURRENT_ORDER) -> dict[str, Any]:
    """The discrete conventions of a node: NIR's (and the reading of its current given by
    ``current_order``), overridden by the snn-hub dialect."""
    out: dict[str, Any] = {k: default for k, (_, default) in _CHOICES.items()}
    out["current_order"] = current_order
    out.update(amplitude=np.float32(1.0), refractory=0, delay=0, v_init=np.float32(0.0))
    for key, value in (meta or {}).items():
        if key in _CHOICES:
            allowed = _CHOICES[key][0]
            if value not in allowed:
                raise FormatError(f"snn-hub metadata: {value!r} is not one of "
                                  f"{', '.join(map(repr, allowed))}", field=key)
            out[key] = value
        elif key in ("refractory", "delay"):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
                    or not 0 <= value <= MAX_STEPS:
                raise FormatError(f"snn-hub metadata: expected a whole number of steps from 0 "
                                  f"to {MAX_STEPS}, got {value!r}", field=key)
            out[key] = int(value)
        elif key in ("amplitude", "v_init"):
            try:
                array = np.asarray(value, dtype=np.float64)
            except (TypeError, ValueError):
                array = np.asarray(np.nan)
            if not np.isfinite(array).all():
                raise FormatError(f"snn-hub metadata: expected finite numbers, got {value!r}",
                                  field=key)
            out[key] = array.astype(np.float32)
    if out["refractory"] and out["reset_timing"] == "next":
        raise FormatError("snn-hub metadata: a refractory period needs reset_timing='same'",
                          field="refractory")
    return out


def _dialect(node: Any) -> dict[str, Any] | None:
    """The node's snn-hub metadata, if it was written for this NIR node type."""
    metadata = node.metadata if isinstance(getattr(node, "metadata", None), dict) else {}
    meta = _plain(metadata).get(META)
    if not isinstance(meta, dict):
        return None
    kind = type(node).__name__
    if meta.get("type") in CARRIED:
        raise UnsupportedError(f"this NIR {kind} carries snn-hub's {meta['type']}, which no NIR "
                               "node computes (NIR's own semantics would be another neuron); "
                               "snn-hub runs it", field="type")
    if meta.get("type") not in _META_TYPES.get(kind, {kind}):
        warnings.warn(f"ignoring snn-hub metadata of type {meta.get('type')!r} on a NIR {kind}; "
                      "using NIR's semantics", HubMetadataWarning, stacklevel=4)
        return None
    return meta


def _make_op(node: Any, dt: float, shape: tuple[int, ...],
             current_order: str = CURRENT_ORDER) -> _Op:
    """The operation that computes ``node`` (its NIR type and parameters) at time step ``dt``."""
    kind = type(node).__name__
    meta = _dialect(node)
    if kind == "Scale" and meta is not None and meta.get("type") in NIR_TYPES:
        return _junction_layer(meta)
    make = _OPS.get(kind)
    if make is None:
        raise UnsupportedError(f"the NIR runtime cannot run a NIR {kind}", field="type")
    return make(node, dt, shape, meta, current_order)


def _threshold(node: Any, meta: dict[str, Any] | None) -> _Op:
    ge = _conventions(node, meta)["comparison"] == ">="
    return _Stateless(lambda x, threshold: (x >= threshold if ge else x > threshold).to(DTYPE),
                      threshold=_f32(node.threshold))


def _delay(node: Any, dt: float) -> _Op:
    steps = np.asarray(node.delay, dtype=np.float64) / dt
    whole = np.round(steps)
    if not np.allclose(steps, whole, rtol=1e-9, atol=1e-6) or (whole < 0).any():
        raise UnsupportedError(f"delays must be whole non-negative multiples of dt={dt}",
                               field="delay")
    return _Delay(whole.astype(np.int64))


#: NIR node type -> its operation ``(node, dt, shape, snn-hub metadata, current order)``.
_OPS: dict[str, Callable[..., _Op]] = {
    **dict.fromkeys(("Input", "Output", "Identity"),
                    lambda node, dt, shape, meta, order: _Stateless(lambda x: x)),
    "Affine": lambda node, dt, shape, meta, order: _Stateless(
        _affine, weight=_f32(node.weight), bias=_f32(node.bias)),
    "Linear": lambda node, dt, shape, meta, order: _Stateless(_linear, weight=_f32(node.weight)),
    "Scale": lambda node, dt, shape, meta, order: _Stateless(
        lambda x, scale: x * scale, scale=_f32(node.scale)),
    "Threshold": lambda node, dt, shape, meta, order: _threshold(node, meta),
    "Flatten": lambda node, dt, shape, meta, order: _flatten(node),
    "Conv1d": lambda node, dt, shape, meta, order: _conv(node, 1),
    "Conv2d": lambda node, dt, shape, meta, order: _conv(node, 2),
    "SumPool2d": lambda node, dt, shape, meta, order: _pool(node, average=False),
    "AvgPool2d": lambda node, dt, shape, meta, order: _pool(node, average=True),
    "Delay": lambda node, dt, shape, meta, order: _delay(node, dt),
    **{kind: (lambda kind: lambda node, dt, shape, meta, order: _neuron(
        node, kind, dt, shape, _conventions(node, meta, order)))(kind)
       for kind in ("LIF", "IF", "CubaLIF", "LI", "I", "CubaLI")},
}


def _junction_layer(meta: dict[str, Any]) -> _Op:
    """A layer NIR has no node for, exported as a unit ``Scale``: the dialect names it and
    holds its parameters (there is no NIR field for them); computed here independently."""
    import hub

    fields = {k: v for k, v in meta.items() if k != INPUT}
    try:
        layer = hub.node_from_dict(fields)
    except HubError as e:
        raise FormatError(f"snn-hub metadata: {e.message}", field=e.field) from None
    make = _JUNCTIONS.get(layer.type)
    if make is None:
        raise UnsupportedError(f"the NIR runtime cannot run a {layer.type} junction",
                               field="type")
    return make(layer)


def _batchnorm(layer: Any) -> _Op:
    def normalise(x, mean, var, weight, bias):
        axes = (-1,) + (1,) * (x.dim() - 2)  # per channel: axis 1 of [N, C, ...]
        return ((x - mean.reshape(axes)) / torch.sqrt(var.reshape(axes) + layer.eps)
                * weight.reshape(axes) + bias.reshape(axes))
    channels = layer.mean.shape[0]
    return _Stateless(normalise, mean=_f32(layer.mean), var=_f32(layer.var),
                      weight=np.broadcast_to(_f32(layer.weight), channels).copy(),
                      bias=np.broadcast_to(_f32(layer.bias), channels).copy())


def _vote(layer: Any) -> _Op:
    def vote(x):
        groups = x.shape[1] // layer.size
        return x[:, :groups * layer.size].reshape(x.shape[0], groups, layer.size).mean(-1)
    return _Stateless(vote)


#: The layers snn-hub writes as a NIR junction with the layer in its metadata -> the operation.
_JUNCTIONS: dict[str, Callable[[Any], _Op]] = {
    "ReLU": lambda layer: _Stateless(lambda x: torch.clamp(x, min=0.0)),
    "Mul": lambda layer: _Stateless(lambda xs: math.prod(xs[1:], start=xs[0])),
    "Concat": lambda layer: _Stateless(lambda xs: torch.cat(xs, dim=layer.dim + 1)),
    "Reshape": lambda layer: _Stateless(lambda x: x.reshape(x.shape[0], *layer.shape)),
    "Bias": lambda layer: _Stateless(lambda x, bias: x + bias, bias=_f32(layer.bias)),
    "BatchNorm": _batchnorm,
    "AdaptiveAvgPool2d": lambda layer: _Stateless(
        lambda x: F.adaptive_avg_pool2d(x, layer.output_size)),
    "MaxPool2d": lambda layer: _Stateless(
        lambda x: F.max_pool2d(x, layer.kernel_size, layer.stride, layer.padding)),
    "Vote": _vote,
}


def _flatten(node: Any) -> _Op:
    start, end = int(node.start_dim), int(node.end_dim)

    def flatten(x: torch.Tensor) -> torch.Tensor:
        dims = x.dim() - 1  # NIR's dimensions do not count the batch
        first = start + dims if start < 0 else start
        last = end + dims if end < 0 else end
        return x.flatten(first + 1, last + 1)

    return _Stateless(flatten)


def _conv(node: Any, dims: int) -> _Op:
    weight = _f32(node.weight)
    stride = _ints(node.stride, dims, "stride")
    dilation = _ints(node.dilation, dims, "dilation")
    groups = int(node.groups)
    padding: Any = node.padding
    if isinstance(padding, bytes):
        padding = padding.decode()
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ParameterError(f"padding must be 'same', 'valid' or integers, got "
                                 f"{padding!r}", field="padding")
        if padding == "same" and any(s != 1 for s in stride):
            raise UnsupportedError("padding='same' is defined only for stride 1",
                                   field="padding")
    else:
        padding = _ints(padding, dims, "padding")
    conv = F.conv1d if dims == 1 else F.conv2d

    def convolve(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        y = conv(x, weight, None, stride, padding, dilation, groups)
        return y + bias.reshape(-1, *(1,) * dims)

    bias = np.broadcast_to(_f32(node.bias), (weight.shape[0],)).copy()
    return _Stateless(convolve, weight=weight, bias=bias)


def _pool(node: Any, average: bool) -> _Op:
    kernel = _ints(node.kernel_size, 2, "kernel_size")
    stride = _ints(node.stride if node.stride is not None else kernel, 2, "stride")
    padding = _ints(node.padding if node.padding is not None else 0, 2, "padding")
    area = float(kernel[0] * kernel[1])

    def pool(x: torch.Tensor) -> torch.Tensor:
        sums = _window_sums(x, kernel, stride, padding)
        return sums / area if average else sums

    return _Stateless(pool)


def _neuron(node: Any, kind: str, dt: float, shape: tuple[int, ...],
            conventions: dict[str, Any]) -> _Op:
    """A neuron's per-step factors from its NIR parameters."""
    params: dict[str, np.ndarray] = {}
    if kind in ("LIF", "LI"):
        params["k_mem"] = _rate(node.tau, dt, "tau")
    if kind in ("CubaLIF", "CubaLI"):
        params["k_mem"] = _rate(node.tau_mem, dt, "tau_mem")
        params["k_syn"] = _rate(node.tau_syn, dt, "tau_syn")
        params["w_in"] = _f32(node.w_in)
    if kind in ("IF", "I"):
        params["dt_r"] = _factor(dt * np.asarray(node.r, dtype=np.float64))
    else:
        params["r"] = _f32(node.r)
        params["v_leak"] = _f32(node.v_leak)
    if kind in ("LIF", "IF", "CubaLIF"):
        params["v_threshold"] = _f32(node.v_threshold)
        v_reset = getattr(node, "v_reset", None)
        params["v_reset"] = _f32(0.0 if v_reset is None else v_reset)
        params["amplitude"] = conventions["amplitude"]
        if conventions["spike_mode"] == "multi" and (params["v_threshold"] <= 0).any():
            raise ParameterError("multi-spike neurons need a positive threshold",
                                 field="v_threshold")
    for name, value in params.items():
        try:
            np.broadcast_to(value, shape)
        except ValueError:
            raise ShapeError(f"shape {list(value.shape)} does not fit the neuron shape "
                             f"{list(shape)}", field=name) from None
    return _Neuron(kind, params, conventions, tuple(shape))
