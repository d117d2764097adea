"""Spikes with a surrogate gradient, so that the reference simulator can train.

The forward pass is an exact Heaviside step (``x > 0``, or ``x >= 0``); the backward pass uses
the derivative of a fast sigmoid, ``1 / (1 + slope * |x|)**2``, as SuperSpike and snnTorch's
default do. Only gradients are approximated: spikes are never changed. Gradients also flow
through the reset (snnTorch detaches it by default), so trained gradients may differ from a
framework's while forward spikes are identical.
"""

from __future__ import annotations

import torch

#: Steepness of the fast-sigmoid surrogate.
SLOPE = 25.0


class _Spike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, inclusive: bool) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return (x >= 0).to(x.dtype) if inclusive else (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad / (1 + SLOPE * x.abs()) ** 2, None


def spike(x: torch.Tensor, inclusive: bool = False) -> torch.Tensor:
    """1 where ``x > 0`` (``x >= 0`` if ``inclusive``), else 0; differentiable by surrogate."""
    return _Spike.apply(x, inclusive)
