"""What the Norse plugin's reading and writing share: its default time step, float32 values."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

#: Norse's default time step (``SNNCell(dt=0.001)``).
NORSE_DT = 1e-3
#: Surrogate methods whose forward pass is ``heaviside``: they differ in gradients only.
HEAVISIDE_METHODS = ("super", "heaviside", "triangle", "tanh", "circ", "heavi_erfc")
#: How many float32 neighbours of ``k / dt`` are tried for an exact ``dt * tau_inv``.
SEARCH_ULPS = 8


class NorseApproximationWarning(UserWarning):
    """``strict=False`` export changed a convention Norse cannot express; the message says which."""


# -- export ------------------------------------------------------------------------------------


def _f32(value: Any) -> np.ndarray:
    return np.asarray(value, dtype=np.float32)


def _t(value: Any) -> torch.Tensor:
    return torch.as_tensor(np.array(value, dtype=np.float32))


# -- import ------------------------------------------------------------------------------------


def _np(value: Any) -> np.ndarray:
    return np.array(torch.as_tensor(value).detach().cpu().numpy(), dtype=np.float32)
