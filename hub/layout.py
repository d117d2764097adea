"""Helpers between the hub's time-major ``[T, N, *]`` layout and Lava's ``[N, *, T]``."""

from __future__ import annotations

import torch


def to_lava(x: torch.Tensor) -> torch.Tensor:
    """``[T, N, *]`` to Lava's ``[N, *, T]``."""
    return x.movedim(0, -1)


def from_lava(x: torch.Tensor) -> torch.Tensor:
    """Lava's ``[N, *, T]`` to ``[T, N, *]``."""
    return x.movedim(-1, 0)
