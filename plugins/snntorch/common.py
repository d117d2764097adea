"""What the snnTorch plugin's reading and writing share: float32 parameters and approximations."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from hub.errors import UnsupportedError


class SnnTorchApproximationWarning(UserWarning):
    """A ``strict=False`` conversion changed behaviour; the message says where and how."""


# -- shared checks --------------------------------------------------------------------------


def _array(value: Any, what: str) -> np.ndarray:
    """A module's parameter as a float32 array; other dtypes are refused (snnTorch computes
    spikes in float32 whatever the membrane's dtype)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.is_floating_point() and value.dtype != torch.float32:
            raise UnsupportedError(f"is {value.dtype}; the hub converts float32 models: call "
                                   "model.float() first", field=what)
        return value.to(torch.float32).numpy().copy()
    return np.asarray(value, dtype=np.float32)


def _approximate(strict: bool, message: str, field: str) -> None:
    """Refuse (strict) or warn that the conversion changes behaviour as ``message`` says."""
    if strict:
        raise UnsupportedError(f"{message}; pass strict=False to convert it anyway", field=field)
    warnings.warn(f"{field}: {message}; converted approximately (strict=False)",
                  SnnTorchApproximationWarning, stacklevel=4)


def _power_of_two(value: np.ndarray) -> bool:
    mantissa, _ = np.frexp(value.astype(np.float64))
    return bool(np.all(mantissa == 0.5))


def _t(value: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(value, dtype=np.float32))
