"""SpikingJelly's neurons in SpikingJelly's own arithmetic: each neuron class as canonical
fields, and ``tau`` (or ``w``) for a canonical decay and gain."""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

import hub
from hub.errors import UnsupportedError
from hub.node import Node
from hub_plugins.spikingjelly import families as spikingjelly_families
from hub_plugins.spikingjelly.common import _is_sj, _scalar

# -- neurons --------------------------------------------------------------------------------


def _spiking(module: Any) -> dict[str, Any]:
    """The fields every SpikingJelly spiking node sets: threshold, reset and initial voltage."""
    from spikingjelly.activation_based import surrogate

    sg = getattr(module, "surrogate_function", None)
    if not isinstance(sg, surrogate.SurrogateFunctionBase) or not _is_sj(sg):
        raise UnsupportedError(f"surrogate_function {type(sg).__name__} is not one of "
                               "spikingjelly's; its forward may not be the heaviside step",
                               field="surrogate_function")
    if not sg.spiking:
        raise UnsupportedError("the surrogate function is in non-spiking mode "
                               "(set_spiking_mode(False)): it emits its smooth primitive, not "
                               "spikes; call set_spiking_mode(True)", field="surrogate_function")
    if getattr(module, "_neuron_precision", None) is not None:
        raise UnsupportedError("an explicit neuron precision (low-precision state, CUDA only) "
                               "is set", field="neuron_precision")
    v_reset = module.v_reset
    init = module._memories_rv.get("v")
    return {"threshold": _scalar(module.v_threshold, "v_threshold"),
            "comparison": ">=",
            "reset": "subtract" if v_reset is None else "zero",
            "v_reset": 0.0 if v_reset is None else _scalar(v_reset, "v_reset"),
            "v_init": _scalar(init, "v_init")}


def _leak(fields: dict[str, Any]) -> float:
    """SpikingJelly's LIF decays toward v_reset, or 0 with a soft reset."""
    return fields["v_reset"] if fields["reset"] == "zero" else 0.0


def _import_if(module: Any) -> Node:
    return hub.IF(gain=1.0, **_spiking(module))


def _lif_fields(module: Any, inv_tau: Any) -> dict[str, Any]:
    """beta and gain from ``1/tau`` (a float64, or SpikingJelly's float32 sigmoid(w))."""
    fields = _spiking(module)
    inv = np.float64(inv_tau)
    return {"beta": np.float32(1.0 - inv),
            "gain": np.float32(inv) if module.decay_input else np.float32(1.0),
            "v_leak": _leak(fields), **fields}


def _import_lif(module: Any) -> Node:
    tau = _scalar(module.tau, "tau")
    if tau < 1:
        raise UnsupportedError(f"tau={tau} < 1 makes the voltage overshoot its rest "
                               "potential (a negative decay)", field="tau")
    if type(module).__name__ == "SimpleLIFNode" and module.v_reset is None:
        raise UnsupportedError("SimpleLIFNode computes v_reset - v, which fails for "
                               "v_reset=None; use LIFNode for a soft reset", field="v_reset")
    return hub.LIF(**_lif_fields(module, 1.0 / tau))


def _import_plif(module: Any) -> Node:
    import torch

    w = module.w.detach().cpu().float()
    if w.numel() != 1:
        raise UnsupportedError(f"w of shape {list(w.shape)}; only one value is supported",
                               field="w")
    q = torch.sigmoid(w).item()  # float32, as SpikingJelly computes it
    return hub.LIF(**_lif_fields(module, q))


def _import_cubalif(module: Any) -> Node:
    fields = _spiking(module)
    if _scalar(module._memories_rv.get("c"), "c_init") != 0:
        raise UnsupportedError("the synaptic current starts away from 0", field="c_init")
    return hub.CubaLIF(alpha=_scalar(module.c_decay, "c_decay"),
                       beta=_scalar(module.v_decay, "v_decay"), gain=1.0, current_gain=1.0,
                       v_leak=0.0, current_order="new", **fields)


def _neuron_table() -> dict[type, Callable[[Any], Node]]:
    from spikingjelly.activation_based import neuron

    return {neuron.IFNode: _import_if, neuron.SimpleIFNode: _import_if,
            neuron.HalfThresholdIFNode: _import_if,
            neuron.LIFNode: _import_lif, neuron.SimpleLIFNode: _import_lif,
            neuron.ParametricLIFNode: _import_plif, neuron.CUBALIFNode: _import_cubalif,
            **spikingjelly_families.neuron_table()}


class _Lazy(dict):
    """A table filled on first use: the plugin imports SpikingJelly only when it is needed."""

    def __init__(self, fill: Callable[[], dict]) -> None:
        super().__init__()
        self._fill = fill

    def _ready(self) -> None:
        if not dict.__len__(self):
            self.update(self._fill())

    def __contains__(self, key: object) -> bool:
        self._ready()
        return dict.__contains__(self, key)

    def __getitem__(self, key: Any) -> Any:
        self._ready()
        return dict.__getitem__(self, key)

    def __iter__(self):
        self._ready()
        return dict.__iter__(self)


_NEURONS: dict[type, Callable[[Any], Node]] = _Lazy(_neuron_table)


def lif_tau(beta: Any, gain: Any) -> tuple[float, bool] | None:
    """The ``(tau, decay_input)`` of the ``LIFNode`` that import reads as ``LIF(beta, gain)``,
    with the fewest significant digits, or ``None`` where there is none.

    Import computes ``beta = fl(1 - 1/tau)`` and ``gain = fl(1/tau)`` (or 1); many ``tau`` give
    the same pair, and SpikingJelly's own arithmetic divides by ``tau`` itself, so the roundest
    one (``3.0``, not ``2.9999999``) is the one a SpikingJelly model was built with: a model
    comes back bit for bit whatever its ``tau``.
    """
    b, g = np.float32(beta), np.float32(gain)
    decay_input = bool(g != 1)
    if not 0 < b < 1:
        return None
    seeds = [1.0 / (1.0 - float(b))] + ([1.0 / float(g)] if decay_input and g > 0 else [])
    for digits in range(1, 18):
        for seed in seeds:
            tau = float(f"{seed:.{digits}g}")
            if tau <= 1:
                continue
            inv = np.float64(1.0 / tau)
            if np.float32(1.0 - inv) == b and (np.float32(inv) == g or not decay_input):
                return tau, decay_input
    return None


#: A ``tau`` with more significant digits than this is no hand-written ``LIFNode``'s: such a
#: ``LIF(beta, gain=q)`` exports as a ``ParametricLIFNode`` with ``sigmoid(w) == q``.
ROUND_DIGITS = 7


def plif_w(q: Any) -> float | None:
    """A float32 ``w`` with ``sigmoid(w) == q`` as SpikingJelly computes it (float32), or
    ``None``: the ``ParametricLIFNode`` that import reads as ``gain = q``."""
    import torch

    q = float(np.float32(q))
    if not 0 < q < 1:
        return None
    w = torch.tensor(math.log(q / (1 - q)), dtype=torch.float32)
    up = down = w
    for _ in range(64):
        for candidate in (up, down):
            if float(torch.sigmoid(candidate)) == q:
                return float(candidate)
        up = torch.nextafter(up, torch.tensor(math.inf))
        down = torch.nextafter(down, torch.tensor(-math.inf))
    return None
