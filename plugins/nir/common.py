"""What the NIR plugin's reading, writing and runtime share: the metadata key, the current
order, time steps."""

from __future__ import annotations

from typing import Any

import numpy as np

from hub.errors import HubError, ParameterError
from hub.graph import check_dt

META = "hub"
#: How a NIR ``CubaLIF``/``CubaLI`` without snn-hub metadata is read by default: the voltage
#: sees this step's synaptic current, as snnTorch, Norse and SpikingJelly compute it (see
#: docs/nir.md); ``"previous"`` is forward Euler of both equations.
CURRENT_ORDER = "new"
CURRENT_ORDERS = ("new", "previous")
#: Relative tolerance when checking stored metadata against a node's NIR parameters.
RTOL = 1e-5


class HubMetadataWarning(UserWarning):
    """A NIR file's snn-hub metadata disagrees with its NIR parameters and was ignored."""


def _check_dt(dt: Any) -> float:
    """The time step given to the NIR format (``dt=``), checked as every dt is."""
    return check_dt(dt, field="dt")


def _check_current_order(value: Any) -> str:
    if value not in CURRENT_ORDERS:
        raise ParameterError(f"must be one of {', '.join(map(repr, CURRENT_ORDERS))}, got "
                             f"{value!r}", field="current_order")
    return value


def _need_dt(dt: float | None, what: str) -> float:
    if dt is None:
        raise HubError(f"{what} needs a time step: pass dt=<seconds> (--dt on the command line)",
                       field="dt")
    return dt


def _check_finite(node: Any) -> None:
    """Refuse NaN and infinite NIR parameters, naming the NIR field (before conversion renames
    ``tau`` to ``beta`` and the like)."""
    for key, value in vars(node).items():
        if key in ("metadata", "input_type", "output_type"):
            continue
        if not isinstance(value, (np.ndarray, np.floating, float)):
            continue
        values = np.asarray(value)
        if values.dtype.kind != "f":
            continue
        bad = ~np.isfinite(values)
        if bad.any():
            what = "NaN" if np.isnan(values).any() else "infinite value"
            raise ParameterError(f"{what} in {int(bad.sum())} of {values.size} values", field=key)


def _f(value: Any) -> np.ndarray:
    return np.asarray(value, dtype=np.float64)


def _plain(value: Any) -> Any:
    """Metadata as read back from hdf5 (numpy scalars, bytes) into plain Python values."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.dtype.kind in "SO":
        return value.astype(str).tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
#: The canonical types NIR carries only through snn-hub's metadata (no NIR node computes them).
CARRIED = frozenset({"ALIF", "AdExLIF", "AlphaLIF", "Izhikevich", "QIF", "EIF", "SynapseFilter",
                     "Resonator"})
