"""Helpers for the hub's time-major ``[T, N, *]`` inputs and Lava's ``[N, *, T]`` layout."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .errors import ParameterError


def as_input(x: Any, dtype: torch.dtype = torch.float32, *, name: str = "x") -> torch.Tensor:
    """An input (tensor, numpy array or nested lists) as a tensor of ``dtype``.

    Anything else (None, a string, ragged lists) is a :class:`~hub.errors.ParameterError`
    naming ``name``, and so is a complex input, whose imaginary part would be lost. A numpy
    array is copied: a read-only one (``np.broadcast_to``, a memory map) would otherwise be
    shared with torch, which warns that it cannot protect it.
    """
    expected = "a tensor, numpy array or nested lists of real numbers"
    try:
        if isinstance(x, torch.Tensor):
            value = x
        elif isinstance(x, np.ndarray):
            value = torch.tensor(x)
        elif x is None or isinstance(x, (str, bytes)):
            raise TypeError(f"got {type(x).__name__}")
        else:
            value = torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError, OverflowError) as e:
        raise ParameterError(f"expected {expected}; {_short(e)}", field=name) from None
    if value.is_complex():
        raise ParameterError(f"expected {expected}, got complex values ({value.dtype}); the "
                             "imaginary part would be lost: pass x.real if that is meant",
                             field=name)
    if value.dtype not in (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32,
                           torch.int64) and not value.is_floating_point():
        raise ParameterError(f"expected {expected}, got {value.dtype}", field=name)
    return value.to(dtype)


def _short(error: Exception, most: int = 160) -> str:
    text = str(error) or type(error).__name__
    return text if len(text) <= most else text[:most] + "..."


def to_lava(x: torch.Tensor) -> torch.Tensor:
    """``[T, N, *]`` to Lava's ``[N, *, T]``."""
    return x.movedim(0, -1)


def from_lava(x: torch.Tensor) -> torch.Tensor:
    """Lava's ``[N, *, T]`` to ``[T, N, *]``."""
    return x.movedim(-1, 0)
