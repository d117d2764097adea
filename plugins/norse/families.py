r"""Norse's adaptive and Izhikevich neurons, both ways (the ``norse`` format's other families).

Read from the installed source (``norse/torch/functional/lsnn.py``, ``izhikevich.py``), in
Norse's float operations; ``k = dt * tau_mem_inv``, ``ks = dt * tau_syn_inv``,
``kb = dt * tau_adapt_inv`` (float32 products), ``x`` the cell's input:

=========================  =========================================================================
Norse                      one step, and the canonical node
=========================  =========================================================================
``LSNNCell``, ``LSNN``     ``v' = v + k*((v_leak - v) + i)``; ``i' = i + (-ks)*i``;
                           ``b' = b + kb*(v_th - b)``; ``z = (v' - b') > 0``; ``v' = v_reset`` where
                           ``z``; ``b' = b' + z*beta``; ``i' = i' + x``. State starts
                           ``v = v_leak``, ``i = 0``, ``b = v_th``.
                           ``ALIF(alpha = 1-ks, beta = 1-k, gain = k, current_order="previous",
                           threshold = v_th, threshold_decay = 1-kb, threshold_step = beta)``
``LSNNRecurrentCell``,     the same with ``i' = (i' + W_in x) + W_rec z_prev``: ``Linear(W_in)``
``LSNNRecurrent``          into the ``ALIF`` with a recurrent ``Linear(W_rec)`` from its spikes
``IzhikevichCell``,        ``v' = v + (tau_inv*dt) * (sq*v**2 + mn*v + bias - u + x)``;
``Izhikevich``             ``u' = u + (tau_inv*dt*a) * (b*v - u)``; ``z = (v' - v_th) > 0``;
                           ``v' = c``, ``u' = u' + d`` where ``z``. ``Izhikevich(rate, sq, mn, bias,
                           recovery_rate, coupling = b, threshold = v_th, v_reset = c,
                           u_jump = d)``, starting from the behaviour's ``v`` and ``u``
``IzhikevichRecurrent*``   ``Linear(W_in)`` into the ``Izhikevich`` with a recurrent
                           ``Linear(W_rec)``
``LIFRefracCell``          ``LIFCell``'s step, then where ``rho > 0``: the voltage kept from
                           before the step, no spike, ``rho = rho - 1``; a spike sets
                           ``rho = rho_reset``. The current integrates throughout.
                           ``CubaLIF`` as for ``LIFCell`` with ``refractory = rho_reset``
                           (a whole number of steps)
=========================  =========================================================================

The Python-float products (``tau_inv*dt*a`` of Izhikevich's float parameters) are taken in
float64 and rounded once to float32, as torch does when it multiplies a float32 tensor by a
Python number. Norse's ``v + k*((v_leak - v) + i)`` and the canonical
``v_leak + beta*(v - v_leak) + gain*u`` (and likewise the threshold's decay) are the same real
number: exact on the exact tier, a few ulps apart on random floats (threshold ties only), as
for ``LIFCell``. The Izhikevich step is Norse's own float expression, so it is exact.

``LIFExCell``, ``LIFEx``,   ``j = i + x``; ``e = delta_T*exp((v - v_th)/delta_T)``;
``LIFAdExCell``, ``LIFAdEx``  ``v' = v + k*((((v_leak - v) + e) + j) - a)``; ``i' = j + (-ks)*j``;
                           ``a' = a + ka*(adaptation_current*(v - v_leak) - a)``; ``z = v' - v_th
                           > 0``; ``v' = v_reset``, ``a' += adaptation_spike`` where ``z``.
                           ``AdExLIF(rate = k, syn_rate = ks, ada_rate = ka, delta_t, v_leak,
                           threshold = v_th, v_reset, coupling = adaptation_current,
                           jump = adaptation_spike)`` (``LIFEx``: no ``a``, so ``coupling = jump =
                           ada_rate = 0``): Norse's own float operations, exact for any values
(their recurrent forms)    ``Linear(W_in)`` into the neuron with a recurrent ``Linear(W_rec)``

Refused, naming the class and the reason: ``LIFAdExRefracCell`` (and its recurrent forms) and the
recurrent refractory cells.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

import hub
from hub.errors import UnsupportedError

#: Norse classes refused whole, with why.
REFUSED = {
    "LIFAdExRefracCell": "its refractory period comes on top of the adaptive exponential step; "
                         "no canonical type has both",
    "LIFAdExRefracRecurrentCell": "its refractory period comes on top of the adaptive "
                                  "exponential step; no canonical type has both",
    "LIFAdExRefracRecurrent": "its refractory period comes on top of the adaptive exponential "
                              "step; no canonical type has both",
    "LIFRefracRecurrentCell": "its recurrent spikes enter the current before the refractory "
                              "mask; only the feed-forward LIFRefracCell maps",
    "LIFRefracRecurrent": "its recurrent spikes enter the current before the refractory mask; "
                          "only the feed-forward LIFRefracCell maps",
}


def _cls(name: str) -> type:
    import norse.torch

    return getattr(norse.torch, name)


def recurrent_cells() -> tuple[type, ...]:
    """The Norse recurrent cells of these families (input and recurrent weights inside)."""
    return tuple(_cls(n) for n in ("LSNNRecurrentCell", "LSNNRecurrent",
                                   "IzhikevichRecurrentCell", "IzhikevichRecurrent",
                                   "LIFExRecurrentCell", "LIFExRecurrent",
                                   "LIFAdExRecurrentCell", "LIFAdExRecurrent"))


def _np(value: Any) -> np.ndarray:
    return np.array(torch.as_tensor(value).detach().cpu().numpy(), dtype=np.float32)


def _product(*factors: Any) -> np.ndarray:
    """``a * b * ...`` left to right as Norse's expression computes it: Python numbers in
    float64, tensors in float32; the result as the float32 that torch multiplies by."""
    out = factors[0]
    for f in factors[1:]:
        out = out * f
    return _np(out)


def _rate(cell: Any, field: str) -> np.ndarray:
    return _np(cell.dt * torch.as_tensor(getattr(cell.p, field)).detach().float())


def _method(cell: Any, name: str) -> None:
    from hub_plugins.norse.reading import _method as check

    check(cell, name)


def import_cell(cell: Any, name: str) -> hub.Node | None:
    """The canonical neuron of a Norse cell of these families; None if it is none of them."""
    kind = type(cell).__name__
    if kind in REFUSED and type(cell).__module__.startswith("norse."):
        raise UnsupportedError(f"Norse's {kind} is refused: {REFUSED[kind]}", node=name,
                               field="type")
    if kind in ("LSNNCell", "LSNN", "LSNNRecurrentCell", "LSNNRecurrent"):
        _method(cell, name)
        if getattr(cell, "adjoint", False):
            raise UnsupportedError("the adjoint step is another function", node=name,
                                   field="adjoint")
        one = np.float32(1)
        k, ks, kb = (_rate(cell, f) for f in ("tau_mem_inv", "tau_syn_inv", "tau_adapt_inv"))
        v_leak = _np(cell.p.v_leak)
        return hub.ALIF(alpha=one - ks, beta=one - k, gain=k, current_gain=1.0,
                        v_leak=v_leak, v_init=_start(v_leak), current_order="previous",
                        threshold=_np(cell.p.v_th), threshold_decay=one - kb,
                        threshold_step=_np(cell.p.beta), comparison=">", reset="zero",
                        v_reset=_np(cell.p.v_reset))
    if kind.startswith(("LIFExRecurrent", "LIFAdExRecurrent")) or kind in (
            "LIFExCell", "LIFEx", "LIFAdExCell", "LIFAdEx"):
        _method(cell, name)
        p = cell.p
        adaptive = kind.startswith("LIFAdEx")
        v_leak = _np(p.v_leak)
        return hub.AdExLIF(rate=_rate(cell, "tau_mem_inv"), syn_rate=_rate(cell, "tau_syn_inv"),
                           ada_rate=_rate(cell, "tau_ada_inv") if adaptive else 0.0,
                           delta_t=_np(p.delta_T), v_leak=v_leak, threshold=_np(p.v_th),
                           comparison=">", v_reset=_np(p.v_reset),
                           coupling=_np(p.adaptation_current) if adaptive else 0.0,
                           jump=_np(p.adaptation_spike) if adaptive else 0.0,
                           v_init=_start(v_leak))
    if kind == "LIFRefracCell":
        from hub_plugins.norse.reading import _import_cell

        rho = _np(cell.p.rho_reset)
        if rho.size != 1 or rho.ravel()[0] < 0 or rho.ravel()[0] != np.round(rho.ravel()[0]):
            raise UnsupportedError(f"rho_reset {rho.ravel()[:4].tolist()}: the refractory "
                                   "period counts whole steps (rho - 1 per step), so it must be "
                                   "one non-negative integer", node=name, field="rho_reset")
        lif = _import_cell(_cls("LIFCell")(cell.p.lif, dt=cell.dt), name)
        return lif.replace(refractory=int(rho.ravel()[0]))
    if kind in ("IzhikevichCell", "Izhikevich", "IzhikevichRecurrentCell",
                "IzhikevichRecurrent"):
        _method(cell, name)
        p, s, dt = cell.p, cell.spiking_method.s, cell.dt
        return hub.Izhikevich(rate=_product(p.tau_inv, dt), sq=_np(p.sq), mn=_np(p.mn),
                              bias=_np(p.bias), recovery_rate=_product(p.tau_inv, dt, p.a),
                              coupling=_np(p.b), threshold=_np(p.v_th), comparison=">",
                              v_reset=_np(p.c), u_jump=_np(p.d), v_init=_start(_np(s.v)),
                              u_init=_start(_np(s.u)))
    return None


def _start(v: np.ndarray) -> np.ndarray:
    return v.ravel()[:1].reshape(()) if v.size and (v == v.ravel()[0]).all() else v


def recurrent_piece(cell: Any, path: str) -> Any:
    """A recurrent cell (these families', or ``LIFRecurrentCell``) as the tracer's piece: input
    weights, neuron, recurrent weights."""
    from hub_plugins.torchnn import trace as torch_trace
    from hub_plugins.norse.reading import _import_cell

    return torch_trace.Piece(
        {"_input": hub.Linear(weight=_np(cell.input_weights)), "": _import_cell(cell, path),
         "_recurrent": hub.Linear(weight=_np(cell.recurrent_weights))},
        [("<in>", "_input"), ("_input", ""), ("", "_recurrent"), ("_recurrent", "")])


# -- export ------------------------------------------------------------------------------------


def _refuse(name: str, field: str, why: str) -> None:
    raise UnsupportedError(why, node=name, field=field)


def _all(value: np.ndarray, want: Any) -> bool:
    return bool((np.asarray(value) == np.asarray(want, dtype=np.float32)).all())


def _lsnn_parameters(node: hub.ALIF, name: str, dt: float, strict: bool,
                     notes: list[str]) -> Any:
    from hub_plugins.norse.common import _t
    from hub_plugins.norse.rates import _decay_rate, _inverse_rate

    LSNNParameters = _cls("LSNNParameters")
    if node.current_order != "previous":
        _refuse(name, "current_order", "Norse's LSNN voltage sees the previous step's current")
    if not _all(node.current_gain, 1):
        _refuse(name, "current_gain", "Norse's LSNN adds its input to the current unscaled")
    if node.comparison != ">":
        _refuse(name, "comparison", "Norse spikes when v - b > 0 (comparison '>') only")
    if node.reset != "zero":
        _refuse(name, "reset", "Norse's LSNN resets the voltage to v_reset only")
    if not _all(node.refractory_scale, 0):
        _refuse(name, "refractory_scale", "Norse's LSNN has no refractory voltage")
    if not (np.broadcast_to(node.v_init, node.v_leak.shape) == node.v_leak).all() or \
            node.v_init.shape != node.v_leak.shape and node.v_init.size != 1:
        _refuse(name, "v_init", "Norse's LSNN starts at v = v_leak")
    k = _decay_rate(node.beta, node.gain, name, "beta", dt)
    if not (k.shape == node.gain.shape and (k == node.gain).all()):
        _refuse(name, "gain", "Norse's LSNN drives the voltage by dt * tau_mem_inv = 1 - beta")
    tmi = _inverse_rate(k, dt, name, "beta", strict, notes)
    tsi = _inverse_rate(_decay_rate(node.alpha, None, name, "alpha", dt), dt, name, "alpha",
                        strict, notes)
    tai = _inverse_rate(_decay_rate(node.threshold_decay, None, name, "threshold_decay", dt),
                        dt, name, "threshold_decay", strict, notes)
    return LSNNParameters(tau_syn_inv=_t(tsi), tau_mem_inv=_t(tmi), tau_adapt_inv=_t(tai),
                          v_leak=_t(node.v_leak), v_th=_t(node.threshold),
                          v_reset=_t(node.v_reset), beta=_t(node.threshold_step))


def _izhikevich_behaviour(node: hub.Izhikevich, name: str, dt: float) -> Any:
    from norse.torch.functional.izhikevich import (
        IzhikevichParameters,
        IzhikevichSpikingBehavior,
        IzhikevichState,
    )

    if node.comparison != ">":
        _refuse(name, "comparison", "Norse spikes when v - v_th > 0 (comparison '>') only")
    scalars = {}
    for field in ("rate", "sq", "mn", "bias", "recovery_rate", "coupling", "threshold",
                  "v_reset", "u_jump"):
        value = getattr(node, field)
        if value.size != 1:
            _refuse(name, field, "Norse's Izhikevich parameters are one number for all neurons")
        scalars[field] = float(value.ravel()[0])
    tau_inv = scalars["rate"] / dt
    a = scalars["recovery_rate"] / (tau_inv * dt) if scalars["rate"] else 0.0
    if np.float32(tau_inv * dt) != np.float32(scalars["rate"]):
        _refuse(name, "rate", f"no tau_inv gives tau_inv * dt == {scalars['rate']!r} at dt={dt}")
    if np.float32(tau_inv * dt * a) != np.float32(scalars["recovery_rate"]):
        _refuse(name, "recovery_rate", "no a gives tau_inv * dt * a == "
                f"{scalars['recovery_rate']!r} at dt={dt}")
    p = IzhikevichParameters(a=a, b=scalars["coupling"], c=scalars["v_reset"],
                             d=scalars["u_jump"], sq=scalars["sq"], mn=scalars["mn"],
                             bias=scalars["bias"], v_th=scalars["threshold"], tau_inv=tau_inv)
    state = IzhikevichState(v=torch.as_tensor(np.array(node.v_init)),
                            u=torch.as_tensor(np.array(node.u_init)))
    return IzhikevichSpikingBehavior(p=p, s=state)


def _tau_inv(rate: np.ndarray, dt: float, name: str, field: str) -> torch.Tensor:
    """A float32 ``tau_inv`` with ``dt * tau_inv == rate`` exactly as torch computes it."""
    from hub_plugins.norse.common import _t
    from hub_plugins.norse.rates import _inverse_rate

    return _t(_inverse_rate(rate, dt, name, field))


def _export_adex(node: hub.AdExLIF, name: str, dt: float) -> torch.nn.Module:
    from hub_plugins.norse.common import _t

    if node.comparison != ">":
        _refuse(name, "comparison", "Norse spikes when v - v_th > 0 (comparison '>') only")
    if not (np.broadcast_to(node.v_init, node.v_leak.shape) == node.v_leak).all() or \
            node.v_init.shape != node.v_leak.shape and node.v_init.size != 1:
        _refuse(name, "v_init", "Norse's exponential cells start at v = v_leak")
    common = {"delta_T": _t(node.delta_t), "tau_syn_inv": _tau_inv(node.syn_rate, dt, name,
                                                                    "syn_rate"),
              "tau_mem_inv": _tau_inv(node.rate, dt, name, "rate"), "v_leak": _t(node.v_leak),
              "v_th": _t(node.threshold), "v_reset": _t(node.v_reset)}
    if _all(node.coupling, 0) and _all(node.jump, 0) and _all(node.ada_rate, 0):
        return _cls("LIFExCell")(_cls("LIFExParameters")(**common), dt=dt)
    return _cls("LIFAdExCell")(_cls("LIFAdExParameters")(
        adaptation_current=_t(node.coupling), adaptation_spike=_t(node.jump),
        tau_ada_inv=_tau_inv(node.ada_rate, dt, name, "ada_rate"), **common), dt=dt)


def export_refractory(node: hub.Node, name: str, dt: float, strict: bool,
                      notes: list[str]) -> torch.nn.Module | None:
    """``LIFRefracCell`` for a ``CubaLIF`` with a refractory period that ``LIFCell`` computes
    otherwise; None for any other node (the ``norse`` plugin's own export takes it)."""
    if not (isinstance(node, hub.CubaLIF) and node.refractory):
        return None
    from hub_plugins.norse.writing import _export_neuron

    cell = _export_neuron(node.replace(refractory=0), name, dt, strict, notes)
    if not isinstance(cell, _cls("LIFCell")):
        _refuse(name, "refractory", "Norse's refractory cell is LIFRefracCell, an LIFCell with "
                "a refractory period; this node needs more than an LIFCell computes")
    return _cls("LIFRefracCell")(_cls("LIFRefracParameters")(
        lif=cell.p, rho_reset=torch.as_tensor(float(node.refractory))), dt=dt)


def export_neuron(node: hub.Node, name: str, dt: float, strict: bool,
                  notes: list[str]) -> torch.nn.Module | None:
    """The Norse cell of a node of these families; None for other node types."""
    if isinstance(node, hub.ALIF):
        return _cls("LSNNCell")(_lsnn_parameters(node, name, dt, strict, notes), dt=dt)
    if isinstance(node, hub.Izhikevich):
        return _cls("IzhikevichCell")(_izhikevich_behaviour(node, name, dt), dt=dt)
    if isinstance(node, hub.AdExLIF):
        return _export_adex(node, name, dt)
    if isinstance(node, hub.Family):
        _refuse(name, "type", f"Norse has no cell computing {node.type}'s step")
    return None


def recurrent_forms() -> dict[type, type]:
    """Each family cell's recurrent form, which the ``norse`` plugin's export folds
    ``Linear -> cell`` with a recurrent ``Linear`` from its spikes into (under the input
    layer's name), as it folds ``LIFCell`` into ``LIFRecurrentCell``."""
    return {_cls("LSNNCell"): _cls("LSNNRecurrentCell"),
            _cls("IzhikevichCell"): _cls("IzhikevichRecurrentCell"),
            _cls("LIFExCell"): _cls("LIFExRecurrentCell"),
            _cls("LIFAdExCell"): _cls("LIFAdExRecurrentCell")}


def cell_parameters(cell: torch.nn.Module) -> Any:
    """What a cell's recurrent form takes first: the spiking behaviour (parameters and starting
    state) for Izhikevich, the parameters for the others."""
    return cell.spiking_method if isinstance(cell, _cls("IzhikevichCell")) else cell.p
