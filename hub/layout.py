"""Helpers for the hub's time-major ``[T, N, *]`` inputs and Lava's ``[N, *, T]`` layout."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def as_input(x: Any, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An input (tensor, numpy array or nested lists) as a tensor of ``dtype``.

    A numpy array is copied: a read-only one (``np.broadcast_to``, a memory map) would otherwise
    be shared with torch, which warns that it cannot protect it.
    """
    if isinstance(x, np.ndarray):
        return torch.tensor(x, dtype=dtype)
    return torch.as_tensor(x, dtype=dtype)


def to_lava(x: torch.Tensor) -> torch.Tensor:
    """``[T, N, *]`` to Lava's ``[N, *, T]``."""
    return x.movedim(0, -1)


def from_lava(x: torch.Tensor) -> torch.Tensor:
    """Lava's ``[N, *, T]`` to ``[T, N, *]``."""
    return x.movedim(-1, 0)
