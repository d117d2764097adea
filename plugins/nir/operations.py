"""The operations of NIR's runtime (:mod:`hub_plugins.nir.runtime`): each NIR node type's
equations in torch, one table entry per type, built from the node's own parameters."""

from __future__ import annotations

import abc
import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hub.errors import (
    FormatError,
    HubError,
    ParameterError,
    ShapeError,
    UnsupportedError,
)
from hub.node import MAX_STEPS
from hub_plugins.nir.common import CARRIED, CURRENT_ORDER, META, HubMetadataWarning, _plain
from hub_plugins.nir.layers import INPUT, NIR_TYPES

DTYPE = torch.float32

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
