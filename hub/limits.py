"""Limits that bound the time and memory an untrusted model can cost.

Model files come from strangers, so every reader and the simulator check what a file or graph
asks for against these budgets *before* allocating or walking it, and refuse with a
:class:`~hub.errors.HubError` that says how much was asked for and how to raise the limit.
The defaults fit every real model we know of with room to spare (a 100M-parameter network is
about 400 MB of float32); raise them per process with the environment variables below, or in
code with :func:`configure`::

    HUB_MAX_BYTES=8e9 hub convert big.nir -o big.hub.json
    hub.limits.configure(max_nodes=500_000)
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from .errors import HubError


@dataclasses.dataclass(frozen=True, kw_only=True)
class Limits:
    """The budgets; each has an environment variable ``HUB_<FIELD NAME IN CAPITALS>``."""

    #: Bytes of parameters a file may declare in all (its datasets' declared sizes, summed).
    max_bytes: int = 4 << 30
    #: Bytes of state (neuron state, delay lines, activations) one simulation may allocate.
    max_state_bytes: int = 4 << 30
    #: Nodes in a graph, subgraphs' nodes included.
    max_nodes: int = 100_000
    #: Subgraphs nested inside each other.
    max_depth: int = 64


_ENV = {f.name: f"HUB_{f.name.upper()}" for f in dataclasses.fields(Limits)}
_current: Limits | None = None


def _from_env() -> Limits:
    values: dict[str, Any] = {}
    for name, var in _ENV.items():
        raw = os.environ.get(var)
        if raw is None:
            continue
        try:
            value = int(float(raw))
        except ValueError:
            raise HubError(f"environment variable {var}={raw!r} is not a number") from None
        if value < 1:
            raise HubError(f"environment variable {var}={raw!r} must be at least 1")
        values[name] = value
    return Limits(**values)


def limits() -> Limits:
    """The limits in force: :func:`configure`'s, else the environment's, else the defaults."""
    global _current
    if _current is None:
        _current = _from_env()
    return _current


def configure(**changes: int) -> Limits:
    """Change limits for this process (``configure(max_nodes=10**6)``); returns the new ones.

    ``configure()`` with no arguments goes back to the environment's values or the defaults.
    """
    global _current
    unknown = set(changes) - set(_ENV)
    if unknown:
        raise HubError(f"unknown limit(s) {', '.join(sorted(unknown))}; the limits are "
                       f"{', '.join(_ENV)}")
    for name, value in changes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise HubError(f"limit {name} must be a positive integer, got {value!r}")
    _current = dataclasses.replace(_from_env(), **changes)
    return _current


def how_to_raise(name: str) -> str:
    """The sentence every refusal ends with: how to allow more."""
    return (f"if the model is trusted, raise the limit with {_ENV[name]}=<value> or "
            f"hub.limits.configure({name}=<value>)")
