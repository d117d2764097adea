"""Stateless layers over all time steps in one call, with the bits of stepping.

A stateless node (convolution, matrix product, pooling, batch norm in inference, a sum, ...)
computes each sample on its own, so one call on the ``T x N`` samples of a whole sequence could
give the values of ``T`` calls on ``N`` samples, and run much faster. Whether it does is the
library's choice: its algorithm, blocking and summation order may depend on the batch size. So it
is not assumed. The first time a node type with given fields, parameter and input shapes, dtype,
device, thread count and trainable parameters runs this way, :func:`verified` runs it both ways
on random values: the outputs, the gradient with respect to each input and each trainable
parameter's gradient must be bit-identical to stepping's, or the node keeps stepping. The verdict
is kept for the process.

Parameter gradients: stepping sums a parameter's ``T`` per-step gradients in the order autograd's
engine computes them, the last step first. :class:`_Sequence` computes them per step in that order
(for convolutions and matrix products from each step's input and output gradient, as their own
backward does, without running the forward pass again; for other layers by differentiating that
step again), while the forward pass and the input's gradient run once over all steps.
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from typing import Any, Callable

import numpy as np
import torch

from .node import Node
from .nodes import Affine, Conv1d, Conv2d, Linear, MaxPool2d

def _max_pool(node: Node, x: torch.Tensor) -> torch.Tensor | None:
    from .kernels import cpu

    return cpu.max_pool2d(node, x)


#: Faster implementations of a step over all samples, for exact node types (None: not here).
#: They are held to the same verification as the step itself.
_FAST: dict[type, Callable[[Node, torch.Tensor], torch.Tensor | None]] = {MaxPool2d: _max_pool}

class PerNode:
    """Values kept for each live node, found by identity (nodes compare equal by value, and
    comparing their arrays on every look-up would cost more than what is kept)."""

    def __init__(self) -> None:
        self._data: dict[int, tuple[weakref.ref, Any]] = {}

    def get(self, node: Node) -> Any:
        entry = self._data.get(id(node))
        return entry[1] if entry is not None and entry[0]() is node else None

    def set(self, node: Node, value: Any) -> None:
        key, data = id(node), self._data
        data[key] = (weakref.ref(node, lambda _: data.pop(key, None)), value)


_verdicts: dict[tuple, bool] = {}
#: Each node's type and fields as :func:`_fields` describes them.
_described = PerNode()
_lock = threading.Lock()


def trainable(p: dict[str, torch.Tensor]) -> tuple[str, ...]:
    """The parameters whose gradients this call records."""
    if not torch.is_grad_enabled():
        return ()
    return tuple(k for k, v in p.items() if v.requires_grad)


def run(node: Node, p: dict[str, torch.Tensor], total: Any, state: Any) -> torch.Tensor:
    """``node`` on all time steps of ``total`` (``[T, N, ...]``, a tuple of them for a node with
    operands) in one call; only for a node :func:`verified` accepts."""
    keys = trainable(p)
    if keys:
        return _Sequence.apply(node, p, state, keys, total, *(p[k] for k in keys))
    first = total[0] if node.operands else total
    flat = tuple(v.flatten(0, 1) for v in total) if node.operands else total.flatten(0, 1)
    out = _FAST[type(node)](node, flat) if type(node) in _FAST else None
    if out is None:
        out, _ = node.step(p, flat, state)
    return out.unflatten(0, first.shape[:2])


def step(node: Node, p: dict[str, torch.Tensor], total: Any, state: Any) -> tuple[Any, Any]:
    """``node`` stepped through the time steps of ``total``, as the simulator steps it."""
    # unbind, not x[t]: the backward of T selects would add T full-size gradients
    steps = (zip(*(map(standalone, v.unbind(0)) for v in total)) if node.operands
             else map(standalone, total.unbind(0)))
    results = []
    for xt in steps:
        out, state = node.step(p, xt, state)
        results.append(out)
    return torch.stack(results), state


def standalone(x: torch.Tensor) -> torch.Tensor:
    """One step of a sequence as the tensor of its own that a single step would be given.

    A step of a ``[T, N, ...]`` tensor starts wherever the step before ended, and the libraries
    behind a matrix product or convolution may round differently on an input that does not start
    on a 64-byte boundary (this machine's sgemm does, for a Linear of 7 inputs on a batch of 3):
    so a step that does not is copied to memory of its own, which torch aligns."""
    return x if x.data_ptr() % 64 == 0 else x.clone()


def verified(node: Node, p: dict[str, torch.Tensor], total: Any, state: Any) -> bool:
    """Whether :func:`run` gives ``node`` on inputs like ``total`` stepping's bits (module
    docstring); found out once per kind of call and kept."""
    if node.stateful or state is not None:
        return False
    inputs = tuple(total) if node.operands else (total,)
    if not all(isinstance(v, torch.Tensor) and v.dim() >= 2 for v in inputs):
        return False
    keys = trainable(p)
    if keys and node.operands:
        return False
    like = inputs[0]
    fields = _described.get(node)
    if fields is None:
        fields = (type(node), _fields(node))
        _described.set(node, fields)
    key = (fields, tuple((k, tuple(v.shape), v.dtype) for k, v in p.items()),
           tuple(tuple(v.shape) for v in inputs), like.dtype, like.device.type,
           torch.get_num_threads(), keys)
    if key not in _verdicts:
        with _lock:
            if key not in _verdicts:
                _verdicts[key] = _compare(node, p, inputs, keys)
    return _verdicts[key]


def _fields(node: Node) -> tuple:
    """A node's fields as they bear on how a library computes it: array fields by shape."""
    out = []
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        out.append((f.name, (value.shape, str(value.dtype)) if isinstance(value, np.ndarray)
                    else repr(value)))
    return tuple(out)


def _compare(node: Node, p: dict[str, torch.Tensor], inputs: tuple[torch.Tensor, ...],
             keys: tuple[str, ...]) -> bool:
    """Run ``node`` both ways on random inputs and parameters (each parameter scaled by a random
    factor in [0.5, 1.5), so signs and zeros stay where they are) and compare every bit."""
    gen = torch.Generator().manual_seed(0x5EED)
    like = inputs[0]

    def rand(shape: torch.Size, uniform: bool = False) -> torch.Tensor:
        values = (torch.rand if uniform else torch.randn)(shape, generator=gen, dtype=like.dtype)
        return values.to(like.device)

    q = {k: v.detach() * (0.5 + rand(v.shape, True)) if v.is_floating_point() and v.numel()
         else v.detach() for k, v in p.items()}
    xs = [rand(v.shape) for v in inputs]
    results = []
    seeds: list[torch.Tensor] = []  # one output gradient for both ways
    try:
        with torch.enable_grad():
            for way in (step, run):
                xg = [x.clone().requires_grad_() for x in xs]
                qg = {k: v.clone().requires_grad_(k in keys) for k, v in q.items()}
                total = tuple(xg) if node.operands else xg[0]
                out = way(node, qg, total, None)
                out = out[0] if way is step else out
                if not isinstance(out, torch.Tensor):
                    return False
                wrt = [*xg, *(qg[k] for k in keys)]
                if not seeds:
                    seeds.append(rand(out.shape))
                grads = (torch.autograd.grad(out, wrt, seeds[0], allow_unused=True)
                         if out.requires_grad and out.shape == seeds[0].shape
                         else [None] * len(wrt))
                results.append((out.detach(), grads))
    except Exception:  # a node that cannot run over all steps at once keeps stepping
        return False
    (want, want_grads), (got, got_grads) = results
    return got.shape == want.shape and torch.equal(got, want) and all(
        (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))
        for a, b in zip(got_grads, want_grads))


def _conv_grads(node: Node, p: dict, keys: tuple[str, ...], x: torch.Tensor,
                g: torch.Tensor) -> list[torch.Tensor]:
    """One step's parameter gradients of a convolution, as its step's backward computes them."""
    out = []
    for k in keys:
        if k == "weight":
            out.append(torch.ops.aten.convolution_backward(
                g, x, p["weight"].detach(), None, list(node.stride), list(node.padding),
                list(node.dilation), False, [0] * node.dims, node.groups,
                [False, True, False])[1])
        else:  # the bias, added as a [C, 1, ...] view
            bias = p["bias"]
            view = bias.reshape(-1, *(1,) * node.dims).shape
            out.append(g.sum_to_size(view).reshape(bias.shape))
    return out


def _matrix_grads(node: Node, p: dict, keys: tuple[str, ...], x: torch.Tensor,
                  g: torch.Tensor) -> list[torch.Tensor]:
    """One step's parameter gradients of ``F.linear(x, W) (+ b)``."""
    return [g.t().mm(x) if k == "weight" else g.sum_to_size(p[k].shape) for k in keys]


#: Per-step parameter gradients computed without the forward pass (module docstring).
_RULES: dict[type, Callable] = {Conv1d: _conv_grads, Conv2d: _conv_grads, Affine: _matrix_grads,
                                Linear: _matrix_grads}


def _again(node: Node, p: dict, keys: tuple[str, ...], x: torch.Tensor, g: torch.Tensor,
           state: Any) -> tuple[torch.Tensor, ...]:
    """One step's parameter gradients by differentiating that step again."""
    with torch.enable_grad():
        q = {k: v.detach().requires_grad_(k in keys) for k, v in p.items()}
        out, _ = node.step(q, x, state)
        return torch.autograd.grad(out, [q[k] for k in keys], g, allow_unused=True)


class _Sequence(torch.autograd.Function):
    """A layer with trainable parameters over all steps (module docstring)."""

    @staticmethod
    def forward(ctx: Any, node: Node, p: dict, state: Any, keys: tuple[str, ...],
                x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        ctx.node, ctx.p, ctx.state, ctx.keys = node, p, state, keys
        with torch.enable_grad():
            # the input's gradient comes from one backward over all steps; the parameters'
            # gradients are computed per step in backward, so here they are constants
            flat = x.detach().flatten(0, 1).requires_grad_(ctx.needs_input_grad[4])
            out, _ = node.step({k: v.detach() for k, v in p.items()}, flat, state)
        ctx.flat, ctx.out = flat, out
        ctx.save_for_backward(x)
        return out.detach().unflatten(0, x.shape[:2])

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[Any, ...]:
        (x,) = ctx.saved_tensors
        dx = None
        if ctx.needs_input_grad[4] and ctx.out.requires_grad:
            (dx,) = torch.autograd.grad(ctx.out, ctx.flat, g.flatten(0, 1))
            dx = dx.unflatten(0, x.shape[:2])
        node, p, keys = ctx.node, ctx.p, ctx.keys
        rule = _RULES.get(type(node))  # exact types: a subclass may compute otherwise
        sums: list[Any] = [None] * len(keys)
        for xt, gt in zip(reversed(x.unbind(0)), reversed(g.unbind(0))):
            grads = (rule(node, p, keys, xt, gt) if rule is not None
                     else _again(node, p, keys, xt, gt, ctx.state))
            sums = [d if s is None else s if d is None else s + d for s, d in zip(sums, grads)]
        ctx.flat = ctx.out = None
        return (None, None, None, None, dx, *sums)
