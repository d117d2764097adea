"""Norse's decays as rates: the float32 ``tau_inv`` whose ``1 - dt * tau_inv`` gives a decay
back exactly, and the roundest such rate."""

from __future__ import annotations

import numpy as np
import torch

from hub.errors import UnsupportedError
from hub_plugins.norse.common import SEARCH_ULPS, _f32


def _neighbours(x: np.ndarray, n: int) -> list[np.ndarray]:
    """``x`` and its float32 neighbours up to ``n`` steps away, nearest first."""
    out, up, down = [x], x, x
    for _ in range(n):
        up = np.nextafter(up, np.float32(np.inf))
        down = np.nextafter(down, np.float32(-np.inf))
        out += [up, down]
    return out


def _exact_inverses(k: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """Per element, the float32 ``tau_inv`` nearest ``k / dt`` with ``dt * tau_inv == k``
    exactly as torch computes it (NaN where none is), and the one whose product is nearest."""
    k = _f32(k)
    start = _f32(k.astype(np.float64) / dt)
    found = np.full(k.shape, np.nan, dtype=np.float32)
    best = start.copy()
    best_error = np.full(k.shape, np.inf)
    for t in _neighbours(start, SEARCH_ULPS):
        product = (dt * torch.from_numpy(np.array(t, dtype=np.float32))).numpy()
        found = np.where(np.isnan(found) & (product == k), t, found).astype(np.float32)
        error = np.abs(product.astype(np.float64) - k)
        best = np.where(error < best_error, t, best).astype(np.float32)
        best_error = np.minimum(error, best_error)
    return found, best


def _inverse_rate(k: np.ndarray, dt: float, node: str, field: str, strict: bool = True,
                  notes: list[str] | None = None) -> np.ndarray:
    """A float32 ``tau_inv`` per neuron with ``dt * tau_inv == k`` exactly, as torch computes it.

    Where ``dt`` has more significant bits than a float32 step of ``tau_inv`` can resolve, some
    ``k`` are no such product: refused, or (``strict=False``) the nearest product, noted.
    """
    k = _f32(k)
    found, best = _exact_inverses(k, dt)
    missing = np.isnan(found)
    if missing.any() and not strict and notes is not None:
        notes.append(f"{node}.{field}: dt * tau_inv cannot be exactly {k.ravel()[0]!r} at "
                     f"dt={dt}; the nearest float32 product is used")
        return np.where(missing, best, found).astype(np.float32)
    if missing.any():
        bad = k.ravel()[np.argmax(missing.ravel())]
        raise UnsupportedError(f"no float32 tau_inv gives dt * tau_inv == {bad!r} exactly at "
                               f"dt={dt}; export with a dt that is a power of two, or "
                               "pass strict=False for the nearest",
                               node=node, field=field)
    return found


def _significant_bits(t: np.ndarray) -> np.ndarray:
    """How many mantissa bits each float32 uses (fewer: a rounder number, like 200.0)."""
    mantissa = _f32(t).view(np.uint32).astype(np.int64) & 0x7FFFFF
    lowest = mantissa & -mantissa
    zeros = np.where(lowest > 0, np.log2(np.maximum(lowest, 1)).astype(np.int64), 23)
    return 24 - zeros


def _roundest_rates(decay: np.ndarray, dt: float) -> np.ndarray:
    """Per element, of the float32 ``k`` with ``fl(1 - k) == decay``, the one whose exact
    ``tau_inv`` at ``dt`` has the fewest significant bits (then the one nearest ``1 - decay``):
    a Norse ``tau_syn_inv = 200`` comes back as 200, not as the neighbour ``1 - alpha`` gives.
    Where none has an exact ``tau_inv``, ``fl(1 - decay)``."""
    decay = _f32(decay)
    base = _f32(np.float32(1) - decay)
    best = base.copy()
    best_bits = np.full(decay.shape, 99)
    best_distance = np.full(decay.shape, np.inf)
    for k in _neighbours(base, 4):
        t, _ = _exact_inverses(k, dt)
        valid = (_f32(np.float32(1) - k) == decay) & ~np.isnan(t)
        bits = _significant_bits(np.where(np.isnan(t), 0, t))
        distance = np.abs(k.astype(np.float64) - (1 - decay.astype(np.float64)))
        better = valid & ((bits < best_bits) | ((bits == best_bits) & (distance < best_distance)))
        best = np.where(better, k, best).astype(np.float32)
        best_bits = np.where(better, bits, best_bits)
        best_distance = np.where(better, distance, best_distance)
    return best


def _decay_rate(decay: np.ndarray, prefer: np.ndarray | None, node: str, field: str,
                dt: float) -> np.ndarray:
    """The Norse ``k`` with ``fl(1 - k) == decay``: ``prefer`` (the gain) where it fits, else
    the one with the roundest ``tau_inv`` (:func:`_roundest_rates`)."""
    decay = _f32(decay)
    k = _roundest_rates(decay, dt)
    if prefer is not None:
        prefer = np.broadcast_to(_f32(prefer), np.broadcast_shapes(prefer.shape, decay.shape))
        decay_b = np.broadcast_to(decay, prefer.shape)
        fits = _f32(np.float32(1) - prefer) == decay_b
        if fits.all() and prefer.shape == decay.shape:
            return _f32(prefer)
        k = np.where(fits, prefer, np.broadcast_to(k, prefer.shape)).astype(np.float32)
    back = _f32(np.float32(1) - k)
    if not (back == np.broadcast_to(decay, back.shape)).all():
        bad = decay.ravel()[np.argmax((np.broadcast_to(decay, back.shape) != back).ravel())]
        raise UnsupportedError(f"Norse decays by 1 - dt*tau_inv; {bad!r} is not 1 - k for any "
                               "float32 k (it has more bits than 1 - k keeps)",
                               node=node, field=field)
    return k
