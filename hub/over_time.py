"""Stateless layers over all time steps in one call, with the values of stepping.

A stateless node (convolution, matrix product, pooling, batch norm in inference, a sum, ...)
computes each sample on its own, so one call on the ``T x N`` samples of a whole sequence could
give the values of ``T`` calls on ``N`` samples, and run much faster. Whether it does is the
library's choice: its algorithm, blocking and summation order may depend on the batch size. So it
is not assumed. The first time a node type with given fields, parameter and input shapes, dtype,
device, thread count and trainable parameters runs this way, :func:`verified` runs it both ways
on random values, and the node keeps stepping unless

- its outputs and the gradient with respect to each input are bit-identical to stepping's (spikes
  depend on them, so they are held to the reference's bits), and
- each trainable parameter's gradient is float-equivalent to stepping's (:func:`equivalent`).

The verdict is kept for the process.

Parameter gradients are not spikes: a parameter's gradient is a sum over every sample, step and
position, and stepping sums it in one order (each step's sum, then the ``T`` steps added last step
first, as autograd's engine adds them) where one call over all steps sums it in another (the
library's own blocking over ``T x N`` samples, as SpikingJelly's multi-step mode and any batched
framework compute it). So over all steps a layer's parameter gradients come from the one call's
own backward, and they may differ from stepping's in the last bits: by at most
``4 T eps A`` for each element, where ``eps`` is the dtype's machine epsilon and ``A`` the same
gradient computed from the absolute values of input, output gradient and parameters. For
convolutions, matrix products, scales and biases ``A`` is exactly the sum of the magnitudes of the
terms summed, the scale of what reordering their sum can change (each rounding moves it by at most
``eps/2`` of a partial sum); for other layers (batch norm) it stands in for it. The differences
measured on the layers of ``bench/networks.py`` stay below ``0.7 T eps A``; 4 is the margin. A
wrong gradient (another real number) fails this; a layer whose reordered sum rounds worse keeps
stepping, which is always correct. ``backend="torch"`` steps every node, so it keeps stepping's
order.
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from typing import Any, Callable

import numpy as np
import torch

from .node import Node
from .nodes import Affine, MaxPool2d


def _max_pool(node: Node, p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor | None:
    from .kernels import cpu

    return cpu.max_pool2d(node, x)


def _bias_only(node: Node, p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor | None:
    """An :class:`Affine` whose weights are all zero outputs its bias, where that is what the
    product gives: without gradients, on a finite input, for a finite bias without ``-0.0``.

    (snnTorch's recurrent bias is imported as such a layer; its product costs as much as any.)
    The product sums terms ``x_k * 0``, a signed zero each for a finite ``x_k``, so it is a
    signed zero in any order or blocking the library sums them, and adding the bias gives the
    bias bit for bit, but for a ``-0.0`` in it (``+0.0 + -0.0`` is ``+0.0``). An infinite or
    NaN input (``inf * 0`` is NaN) takes the product, as does a call that records gradients
    (its backward is the product's)."""
    w, b = p["weight"], p["bias"]
    if torch.is_grad_enabled() and (x.requires_grad or w.requires_grad or b.requires_grad):
        return None
    if not (x.dtype == w.dtype == b.dtype and x.device == w.device == b.device):
        return None
    # a finite sum has no infinite or NaN term (one that overflows only sends this to the
    # product), and costs a fraction of isfinite().all()
    if bool(w.count_nonzero()) or not bool(b.isfinite().all()) or bool(
            (b.signbit() & (b == 0)).any()) or not bool(x.sum().isfinite()):
        return None
    out = x.new_empty((*x.shape[:-1], w.shape[0]))
    return out.copy_(b.expand(out.shape))


#: Faster implementations of a step over all samples, for exact node types (None: not here).
#: They are held to the same verification as the step itself (and :func:`_bias_only`, which
#: runs only where nothing records gradients, is exact by its own argument).
_FAST: dict[type, Callable[[Node, dict[str, torch.Tensor], torch.Tensor],
                           torch.Tensor | None]] = {MaxPool2d: _max_pool, Affine: _bias_only}


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
#: Each node's type and fields as :func:`_fields` describes them, and its verdicts by call.
_described = PerNode()
_lock = threading.Lock()


def trainable(p: dict[str, torch.Tensor]) -> tuple[str, ...]:
    """The parameters whose gradients this call records."""
    if not torch.is_grad_enabled():
        return ()
    return tuple(k for k, v in p.items() if v.requires_grad)


def run(node: Node, p: dict[str, torch.Tensor], total: Any, state: Any) -> torch.Tensor:
    """``node`` on all time steps of ``total`` (``[T, N, ...]``, a tuple of them for a node with
    operands) in one call; only for a node :func:`verified` accepts. Gradients, parameters'
    included, come from that call's own backward (module docstring)."""
    first = total[0] if node.operands else total
    flat = tuple(v.flatten(0, 1) for v in total) if node.operands else total.flatten(0, 1)
    out = _FAST[type(node)](node, p, flat) if type(node) in _FAST else None
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
    """Whether :func:`run` gives ``node`` on inputs like ``total`` stepping's values and input
    gradients, bit for bit, and float-equivalent parameter gradients (module docstring); found
    out once per kind of call and kept."""
    if node.stateful or state is not None:
        return False
    inputs = tuple(total) if node.operands else (total,)
    if not all(isinstance(v, torch.Tensor) and v.dim() >= 2 for v in inputs):
        return False
    keys = trainable(p)
    like = inputs[0]
    call = (tuple((k, v.shape, v.dtype) for k, v in p.items()),
            tuple(v.shape for v in inputs), like.dtype, like.device.type,
            torch.get_num_threads(), keys)
    described = _described.get(node)
    if described is None:
        described = ((type(node), _fields(node)), {})
        _described.set(node, described)
    fields, seen = described  # this node's verdicts by call, found again without its fields
    if call not in seen:
        key = (fields, *call)
        if key not in _verdicts:
            with _lock:
                if key not in _verdicts:
                    _verdicts[key] = _compare(node, p, inputs, keys)
        seen[call] = _verdicts[key]
    return seen[call]


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
    factor in [0.5, 1.5), so signs and zeros stay where they are): every bit of the outputs and
    input gradients, and float-equivalent parameter gradients (module docstring)."""
    gen = torch.Generator().manual_seed(0x5EED)
    like = inputs[0]

    def rand(shape: torch.Size, uniform: bool = False) -> torch.Tensor:
        values = (torch.rand if uniform else torch.randn)(shape, generator=gen, dtype=like.dtype)
        return values.to(like.device)

    q = {k: v.detach() * (0.5 + rand(v.shape, True)) if v.is_floating_point() and v.numel()
         else v.detach() for k, v in p.items()}
    xs = [rand(v.shape) for v in inputs]
    scales: list[torch.Tensor | None] = []

    def differentiate(way: Callable, xs: list[torch.Tensor], q: dict[str, torch.Tensor],
                      g: torch.Tensor | None) -> tuple[Any, list]:
        xg = [x.clone().requires_grad_() for x in xs]
        qg = {k: v.clone().requires_grad_(k in keys) for k, v in q.items()}
        out = way(node, qg, tuple(xg) if node.operands else xg[0], None)
        out = out[0] if way is step else out
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"{type(node).__name__} gives {type(out).__name__}, not a tensor")
        g = rand(out.shape) if g is None else g
        wrt = [*xg, *(qg[k] for k in keys)]
        grads = (torch.autograd.grad(out, wrt, g, allow_unused=True)
                 if out.requires_grad and out.shape == g.shape else [None] * len(wrt))
        return (out.detach(), g), list(grads)

    try:
        with torch.enable_grad():
            # one output gradient for both ways
            (want, seed), want_grads = differentiate(step, xs, q, None)
            (got, _), got_grads = differentiate(run, xs, q, seed)
            if keys:  # the scale of each parameter gradient's terms, from absolute values
                _, scales = differentiate(run, [x.abs() for x in xs], {
                    k: v.abs() if v.is_floating_point() else v for k, v in q.items()},
                    seed.abs())
    except Exception:  # a node that cannot run over all steps at once keeps stepping
        return False
    if got.shape != want.shape or not torch.equal(got, want):
        return False
    n = len(inputs)
    if not all(same(a, b) for a, b in zip(got_grads[:n], want_grads[:n])):
        return False
    steps = like.shape[0]
    return all(same(a, b) or (a is not None and b is not None and equivalent(a, b, s, steps))
               for a, b, s in zip(got_grads[n:], want_grads[n:], scales[n:]))


def same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    """Both absent, or bit-identical."""
    return (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))


def equivalent(got: torch.Tensor, want: torch.Tensor, scale: torch.Tensor | None,
               steps: int) -> bool:
    """Whether a parameter gradient summed in another order than stepping's is float-equivalent
    to stepping's: each element within ``4 T eps`` times its terms' magnitudes ``scale`` (module
    docstring)."""
    if scale is None or got.shape != want.shape or not (got.isfinite().all() and
                                                        want.isfinite().all()):
        return False
    eps = torch.finfo(want.dtype).eps
    return bool(((got - want).abs() <= 4 * steps * eps * scale.abs()).all())
