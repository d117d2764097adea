"""Layer node types: the stateless (and delay) operations between neurons.

Shapes exclude the batch and time axes. A node that several edges feed receives their sum, as
in NIR, so ``Add`` only names a junction. Each ``step`` gets ``p``, the node's array parameters
as torch tensors on the simulation's device, and one time step of input ``x`` of shape
``[N, *input_shape]``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ParameterError, ShapeError
from .node import (MAX_ELEMENTS, MAX_STEPS, Node, Shape, _required, array, choice, integer, ints,
                   number)
from .surrogate import spike


def _per_element(node: Node, shape: Shape | None, *names: str) -> Shape:
    """Check that per-element parameters broadcast onto the input shape; return the shape."""
    shape = _required(shape, node)
    for name in names:
        value = getattr(node, name)
        try:
            if np.broadcast_shapes(value.shape, shape) != tuple(shape):
                raise ValueError
        except ValueError:
            raise ShapeError(
                f"shape {list(value.shape)} does not broadcast to the input shape {list(shape)}",
                field=name,
            ) from None
    return tuple(shape)


def _expect(node: Node, shape: Shape | None, want: Shape, what: str) -> Shape:
    shape = _required(shape, node)
    if tuple(shape) != tuple(want):
        raise ShapeError(f"input shape {list(shape)} does not match {what} {list(want)}")
    return tuple(shape)


class Input(Node):
    """Where data enters the graph: one time step has ``shape``."""

    shape: tuple[int, ...] = ints(doc="shape of one sample, without batch and time axes")
    takes_input: ClassVar[bool] = False

    def output_shape(self, input_shape: Shape | None) -> Shape:
        return self.shape


class Output(Node):
    """Where data leaves the graph; its shape is that of what feeds it."""


def _plus(y: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``y + b`` for a fresh result ``y`` (a product or convolution, which its backward does not
    keep), added in place where that gives the same tensor: the same values without a second
    array of ``y``'s size to allocate and fill."""
    if b.dtype == y.dtype and b.dim() <= y.dim() and all(
            m in (1, n) for m, n in zip(b.shape[::-1], y.shape[::-1])):
        return y.add_(b)
    return y + b


class Affine(Node):
    """``y = W x + b`` with ``W`` of shape ``[out, in]``."""

    weight: np.ndarray = array(doc="[out, in]")
    bias: np.ndarray = array(0.0, doc="[out] or a scalar")

    def check(self) -> None:
        if self.weight.ndim != 2:
            raise ParameterError(f"expected 2 dimensions [out, in], got {list(self.weight.shape)}",
                                 field="weight")
        if self.bias.ndim > 1 or self.bias.size not in (1, self.weight.shape[0]):
            raise ShapeError(f"shape {list(self.bias.shape)} does not fit {self.weight.shape[0]} "
                             "outputs", field="bias")

    def output_shape(self, input_shape: Shape | None) -> Shape:
        _expect(self, input_shape, self.weight.shape[1:], "weight's input size")
        return (self.weight.shape[0],)

    def step(self, p: dict, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        return _plus(F.linear(x, p["weight"]), p["bias"]), state


class Linear(Node):
    """``y = W x`` with ``W`` of shape ``[out, in]``."""

    weight: np.ndarray = array(doc="[out, in]")

    def check(self) -> None:
        if self.weight.ndim != 2:
            raise ParameterError(f"expected 2 dimensions [out, in], got {list(self.weight.shape)}",
                                 field="weight")

    def output_shape(self, input_shape: Shape | None) -> Shape:
        _expect(self, input_shape, self.weight.shape[1:], "weight's input size")
        return (self.weight.shape[0],)

    def step(self, p: dict, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        return F.linear(x, p["weight"]), state


class _Conv(Node):
    """Shared shape logic of the convolutions (torch's definition, integer padding)."""

    abstract: ClassVar[bool] = True
    dims: ClassVar[int]

    def check(self) -> None:
        w = self.weight
        if w.ndim != self.dims + 2:
            raise ParameterError(f"expected {self.dims + 2} dimensions [out, in/groups, "
                                 f"*kernel], got {list(w.shape)}", field="weight")
        if self.groups < 1 or w.shape[0] % self.groups:
            raise ParameterError(f"{w.shape[0]} output channels are not divisible into "
                                 f"{self.groups} groups", field="groups")
        if self.bias.ndim > 1 or self.bias.size not in (1, w.shape[0]):
            raise ShapeError(f"shape {list(self.bias.shape)} does not fit {w.shape[0]} channels",
                             field="bias")
        for name in ("stride", "dilation"):
            if 0 in getattr(self, name):
                raise ParameterError("must be at least 1", field=name)

    def output_shape(self, input_shape: Shape | None) -> Shape:
        shape = _required(input_shape, self)
        channels = self.weight.shape[1] * self.groups
        if len(shape) != self.dims + 1 or shape[0] != channels:
            raise ShapeError(f"input shape {list(shape)} does not fit: expected "
                             f"[{channels}, {', '.join('*' * self.dims)}]")
        out = [self.weight.shape[0]]
        for size, k, s, p, d in zip(shape[1:], self.weight.shape[2:], self.stride, self.padding,
                                    self.dilation):
            n = (size + 2 * p - d * (k - 1) - 1) // s + 1
            if n < 1:
                raise ShapeError(f"kernel {k} (dilation {d}) does not fit input size {size} "
                                 f"with padding {p}", field="weight")
            out.append(n)
        return tuple(out)


class Conv1d(_Conv):
    """1-d convolution over ``[C, L]``, as ``torch.nn.functional.conv1d``."""

    dims: ClassVar[int] = 1
    weight: np.ndarray = array(doc="[out, in/groups, k]")
    bias: np.ndarray = array(0.0, doc="[out] or a scalar")
    stride: tuple[int, ...] = ints((1,), length=1)
    padding: tuple[int, ...] = ints((0,), length=1)
    dilation: tuple[int, ...] = ints((1,), length=1)
    groups: int = integer(1, minimum=1)

    def step(self, p: dict, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        y = F.conv1d(x, p["weight"], None, self.stride, self.padding, self.dilation, self.groups)
        return _plus(y, p["bias"].reshape(-1, 1)), state


class Conv2d(_Conv):
    """2-d convolution over ``[C, H, W]``, as ``torch.nn.functional.conv2d``."""

    dims: ClassVar[int] = 2
    weight: np.ndarray = array(doc="[out, in/groups, kh, kw]")
    bias: np.ndarray = array(0.0, doc="[out] or a scalar")
    stride: tuple[int, ...] = ints((1, 1), length=2)
    padding: tuple[int, ...] = ints((0, 0), length=2)
    dilation: tuple[int, ...] = ints((1, 1), length=2)
    groups: int = integer(1, minimum=1)

    def step(self, p: dict, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        y = F.conv2d(x, p["weight"], None, self.stride, self.padding, self.dilation, self.groups)
        return _plus(y, p["bias"].reshape(-1, 1, 1)), state


class ConvTranspose2d(Node):
    """2-d transposed convolution over ``[C, H, W]``, as ``torch.nn.functional.conv_transpose2d``
    (``weight`` in torch's layout, ``[in, out/groups, kh, kw]``): each input value adds the
    kernel, scaled by it, to the output at ``stride`` times its position, less ``padding``.
    A learned upsampling (slayer's ``ConvT`` and ``Unpool`` blocks)."""

    weight: np.ndarray = array(doc="[in, out/groups, kh, kw]")
    bias: np.ndarray = array(0.0, doc="[out] or a scalar")
    stride: tuple[int, ...] = ints((1, 1), length=2)
    padding: tuple[int, ...] = ints((0, 0), length=2)
    output_padding: tuple[int, ...] = ints((0, 0), length=2,
                                           doc="extra rows and columns on one side")
    dilation: tuple[int, ...] = ints((1, 1), length=2)
    groups: int = integer(1, minimum=1)

    def check(self) -> None:
        w = self.weight
        if w.ndim != 4:
            raise ParameterError(f"expected 4 dimensions [in, out/groups, kh, kw], got "
                                 f"{list(w.shape)}", field="weight")
        if self.groups < 1 or w.shape[0] % self.groups:
            raise ParameterError(f"{w.shape[0]} input channels are not divisible into "
                                 f"{self.groups} groups", field="groups")
        out = w.shape[1] * self.groups
        if self.bias.ndim > 1 or self.bias.size not in (1, out):
            raise ShapeError(f"shape {list(self.bias.shape)} does not fit {out} channels",
                             field="bias")
        for name in ("stride", "dilation"):
            if 0 in getattr(self, name):
                raise ParameterError("must be at least 1", field=name)
        if any(o >= max(s, d) for o, s, d in zip(self.output_padding, self.stride,
                                                  self.dilation)):
            raise ParameterError("must be smaller than the stride or the dilation",
                                 field="output_padding")

    def output_shape(self, input_shape: Shape | None) -> Shape:
        shape = _required(input_shape, self)
        if len(shape) != 3 or shape[0] != self.weight.shape[0]:
            raise ShapeError(f"input shape {list(shape)} does not fit: expected "
                             f"[{self.weight.shape[0]}, *, *]")
        out = [self.weight.shape[1] * self.groups]
        for size, k, s, p, o, d in zip(shape[1:], self.weight.shape[2:], self.stride,
                                       self.padding, self.output_padding, self.dilation):
            n = (size - 1) * s - 2 * p + d * (k - 1) + o + 1
            if n < 1:
                raise ShapeError(f"padding {p} leaves no output of input size {size}",
                                 field="padding")
            out.append(n)
        return tuple(out)

    def step(self, p: dict, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        y = F.conv_transpose2d(x, p["weight"], None, self.stride, self.padding,
                               self.output_padding, self.groups, self.dilation)
        return y + p["bias"].reshape(-1, 1, 1), state


class _Pool2d(Node):
    abstract: ClassVar[bool] = True
    kernel_size: tuple[int, ...] = ints(length=2)
    stride: tuple[int, ...] = ints(length=2, doc="defaults to the kernel size in most frameworks")
    padding: tuple[int, ...] = ints((0, 0), length=2)

    def check(self) -> None:
        if 0 in self.kernel_size:
            raise ParameterError("must be at least 1", field="kernel_size")
        if 0 in self.stride:
            raise ParameterError("must be at least 1", field="stride")
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            raise ParameterError("must be at most half the kernel size", field="padding")

    def output_shape(self, input_shape: Shape | None) -> Shape:
        shape = _required(input_shape, self)
        if len(shape) != 3:
            raise ShapeError(f"expected an input of shape [C, H, W], got {list(shape)}")
        out = [(n + 2 * p - k) // s + 1
               for n, k, s, p in zip(shape[1:], self.kernel_size, self.stride, self.padding)]
        if min(out) < 1:
            raise ShapeError(f"kernel {list(self.kernel_size)} does not fit input "
                             f"{list(shape[1:])}", field="kernel_size")
        return (shape[0], *out)


class SumPool2d(_Pool2d):
    """Sum over each window (zero padding counts as zeros)."""

    def step(self, p: dict, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding,
                            count_include_pad=True, divisor_override=1), state


class AvgPool2d(_Pool2d):
    """Mean over each window, padding included in the count (torch's default)."""

    def step(self, p: dict, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding,
                            count_include_pad=True), state


class MaxPool2d(_Pool2d):
    """Maximum over each window (padding never wins)."""

    def step(self, p: dict, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding), state


class Flatten(Node):
    """Merge the axes ``start_dim..end_dim`` of one sample (batch and time not counted)."""

    start_dim: int = integer(0, minimum=None)
    end_dim: int = integer(-1, minimum=None)

    def _span(self, shape: Shape) -> tuple[int, int]:
        n = len(shape)
        start = self.start_dim + n if self.start_dim < 0 else self.start_dim
        end = self.end_dim + n if self.end_dim < 0 else self.end_dim
        if not (0 <= start <= end < n):
            raise ShapeError(f"start_dim={self.start_dim}, end_dim={self.end_dim} do not fit an "
                             f"input of shape {list(shape)}", field="start_dim")
        return start, end

    def output_shape(self, input_shape: Shape | None) -> Shape:
        shape = _required(input_shape, self)
        start, end = self._span(shape)
        return (*shape[:start], math.prod(shape[start:end + 1]), *shape[end + 1:])

    def step(self, p: dict, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        start, end = self._span(tuple(x.shape[1:]))
        return x.flatten(start + 1, end + 1), state


class Reshape(Node):
    """A sample's values in a new ``shape`` of the same size, in row-major order (``view``)."""

    shape: tuple[int, ...] = ints(doc="a sample's shape afterwards, without batch and time")

    def output_shape(self, input_shape: Shape | None) -> Shape:
        shape = _required(input_shape, self)
        if math.prod(shape) != math.prod(self.shape):
            raise ShapeError(f"{list(shape)} has {math.prod(shape)} values, {list(self.shape)} "
                             f"{math.prod(self.shape)}", field="shape")
        return tuple(self.shape)

    def step(self, p: dict, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        return x.reshape(x.shape[0], *self.shape), state


class Scale(Node):
    """``y = scale * x``, elementwise."""

    scale: np.ndarray = array()

    def output_shape(self, input_shape: Shape | None) -> Shape:
        return _per_element(self, input_shape, "scale")

    def step(self, p: dict, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        return x * p["scale"], state


class Add(Node):
    """A junction: its output is the sum of every edge into it (skip connections)."""


class Delay(Node):
    """``y[t] = x[t - delay]`` per element, in whole steps; zeros before the first input."""

    delay: np.ndarray = array(dtype="int64", doc="steps, per element or a scalar")
    stateful: ClassVar[bool] = True

    def check(self) -> None:
        if (self.delay < 0).any():
            raise ParameterError("delays must not be negative", field="delay")
        if self.delay.size and int(self.delay.max()) > MAX_STEPS:
            raise ParameterError(f"a delay of {int(self.delay.max())} steps is more than "
                                 f"{MAX_STEPS}", field="delay")

    @property
    def holds_state(self) -> bool:
        return bool(self.delay.size) and bool((self.delay > 0).all())

    def output_shape(self, input_shape: Shape | None) -> Shape:
        return _per_element(self, input_shape, "delay")

    def initial_state(self, shape: tuple[int, ...], like: torch.Tensor) -> Any:
        depth = int(self.delay.max()) + 1 if self.delay.size else 1
        if depth * math.prod(shape) > MAX_ELEMENTS:
            raise ParameterError(f"a delay line of {depth} steps for {list(shape)} is too large",
                                 field="delay")
        return (like.new_zeros((depth, *shape)), 0)

    def step(self, p: dict, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        buffer, t = state
        depth = buffer.shape[0]
        buffer = buffer.clone()
        buffer[t % depth] = x
        index = ((t - p["delay"]) % depth).expand(x.shape[1:])
        y = torch.gather(buffer, 0, index.unsqueeze(0).unsqueeze(1).expand(1, *x.shape))[0]
        return y, (buffer, t + 1)


class Threshold(Node):
    """Heaviside spike of the input: ``y = x > threshold`` (or ``>=``), a surrogate gradient."""

    threshold: np.ndarray = array()
    comparison: str = choice(">", (">", ">="))

    def output_shape(self, input_shape: Shape | None) -> Shape:
        return _per_element(self, input_shape, "threshold")

    def step(self, p: dict, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        return spike(x - p["threshold"], self.comparison == ">="), state


class Bias(Node):
    """``y = x + bias``, elementwise (a constant offset, such as the ``1`` of ``1 - x``)."""

    bias: np.ndarray = array()

    def output_shape(self, input_shape: Shape | None) -> Shape:
        return _per_element(self, input_shape, "bias")

    def step(self, p: dict, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        return x + p["bias"], state


class ReLU(Node):
    """``y = max(x, 0)``, elementwise, as ``torch.relu``."""

    def step(self, p: dict, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        return torch.relu(x), state


class BatchNorm(Node):
    """Batch normalisation in inference: ``y = (x - mean) / sqrt(var + eps) * weight + bias``
    per channel (axis 0 of a sample), computed by ``torch.nn.functional.batch_norm`` itself so
    that it equals ``torch.nn.BatchNorm1d/2d`` in eval mode bit for bit."""

    mean: np.ndarray = array(doc="[C] running mean")
    var: np.ndarray = array(doc="[C] running variance")
    weight: np.ndarray = array(1.0, doc="[C] or a scalar")
    bias: np.ndarray = array(0.0, doc="[C] or a scalar")
    eps: float = number(1e-5, doc="added to the variance")

    def check(self) -> None:
        if self.mean.ndim != 1:
            raise ParameterError(f"expected one value per channel, got {list(self.mean.shape)}",
                                 field="mean")
        channels = self.mean.shape[0]
        for name in ("var", "weight", "bias"):
            if getattr(self, name).shape not in ((channels,), ()):
                raise ShapeError(f"shape {list(getattr(self, name).shape)} does not fit "
                                 f"{channels} channels", field=name)
        if (self.var < 0).any():
            raise ParameterError("a variance cannot be negative", field="var")
        if self.eps < 0:
            raise ParameterError(f"must not be negative, got {self.eps!r}", field="eps")

    def output_shape(self, input_shape: Shape | None) -> Shape:
        shape = _required(input_shape, self)
        if not shape or shape[0] != self.mean.shape[0]:
            raise ShapeError(f"input shape {list(shape)} does not have {self.mean.shape[0]} "
                             "channels on its first axis")
        return tuple(shape)

    def step(self, p: dict, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        channels = self.mean.shape[0]
        weight = p["weight"].expand(channels)
        bias = p["bias"].expand(channels)
        return F.batch_norm(x, p["mean"], p["var"], weight, bias, False, 0.0, self.eps), state


class AdaptiveAvgPool2d(Node):
    """Mean over adaptive windows to a fixed ``output_size`` ``(H, W)``, as
    ``torch.nn.functional.adaptive_avg_pool2d``."""

    output_size: tuple[int, ...] = ints(length=2)

    def check(self) -> None:
        if 0 in self.output_size:
            raise ParameterError("must be at least 1", field="output_size")

    def output_shape(self, input_shape: Shape | None) -> Shape:
        shape = _required(input_shape, self)
        if len(shape) != 3:
            raise ShapeError(f"expected an input of shape [C, H, W], got {list(shape)}")
        return (shape[0], *self.output_size)

    def step(self, p: dict, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        return F.adaptive_avg_pool2d(x, self.output_size), state


class Vote(Node):
    """Mean of each group of ``size`` consecutive values of a vector (SpikingJelly's
    ``VotingLayer``): ``[L]`` in, ``[L // size]`` out, as ``avg_pool1d`` computes it."""

    size: int = integer(minimum=1)

    def output_shape(self, input_shape: Shape | None) -> Shape:
        shape = _required(input_shape, self)
        if len(shape) != 1 or shape[0] < self.size:
            raise ShapeError(f"expected a vector of at least {self.size} values, got "
                             f"{list(shape)}")
        return (shape[0] // self.size,)

    def step(self, p: dict, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        return F.avg_pool1d(x.unsqueeze(1), self.size, self.size).squeeze(1), state


class _Operands(Node):
    """A node whose input edges are separate operands, in the order the edges were added,
    instead of being summed. Recurrent edges into it are refused."""

    abstract: ClassVar[bool] = True
    operands: ClassVar[bool] = True

    def output_shape(self, input_shape: Any) -> Shape:  # a tuple of shapes, one per edge
        shapes = _required(input_shape, self)
        if len(shapes) < 2:
            raise ShapeError(f"{self.type} needs at least two inputs, got {len(shapes)}")
        return self.combine(shapes)  # each operand node type defines how shapes combine


class Mul(_Operands):
    """Elementwise product of its inputs (SEW ResNet's AND and IAND connections)."""

    def combine(self, shapes: tuple[Shape, ...]) -> Shape:
        if len(set(shapes)) > 1:
            raise ShapeError("inputs of different shapes: "
                             + ", ".join(map(str, map(list, shapes))))
        return shapes[0]

    def step(self, p: dict, x: Any, state: Any) -> tuple[torch.Tensor, Any]:
        out = x[0]
        for other in x[1:]:
            out = out * other
        return out, state


class Concat(_Operands):
    """Concatenation of its inputs along axis ``dim`` of a sample (``torch.cat``)."""

    dim: int = integer(0)

    def combine(self, shapes: tuple[Shape, ...]) -> Shape:
        rank = len(shapes[0])
        if self.dim >= rank or any(len(s) != rank for s in shapes) or any(
                s[:self.dim] + s[self.dim + 1:] != shapes[0][:self.dim] + shapes[0][self.dim + 1:]
                for s in shapes):
            raise ShapeError(f"inputs {', '.join(map(str, map(list, shapes)))} cannot be "
                             f"concatenated along axis {self.dim}", field="dim")
        return (*shapes[0][:self.dim], sum(s[self.dim] for s in shapes), *shapes[0][self.dim + 1:])

    def step(self, p: dict, x: Any, state: Any) -> tuple[torch.Tensor, Any]:
        return torch.cat(list(x), dim=self.dim + 1), state
