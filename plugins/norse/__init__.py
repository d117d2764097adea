r"""The ``norse`` format: Norse 1.1 models (``SequentialState``, ``nn.Sequential``, cells, graphs).

Each Norse neuron's update, read from the installed source (``norse/torch/functional``), in
Norse's own float operations. ``k = dt * tau_mem_inv`` and ``ks = dt * tau_syn_inv`` are computed
first (a float32 product), ``x`` is the cell's input, ``th = v_th``:

======================  ============================================================================
Norse cell              one step (``lif.py``, ``lif_box.py``, ``leaky_integrator*.py``, ``iaf.py``)
======================  ============================================================================
``LIFBoxCell``          ``v = v + k * ((x + v_leak) - v)``; ``z = (v - th) > 0``; reset
                        ``reset_value``: ``(1-z)*v + z*v_reset``,
                        ``reset_subtract``: ``(1-z)*v + z*(v-th)``
``LIFCell``             ``j = i + x``; ``v = v + k * ((v_leak - v) + j)``; ``i = j + (-ks) * j``;
                        ``z = (v - th) > 0``; ``v = (1-z)*v + z*v_reset``
``LIBoxCell``           ``v = v + k * ((v_leak - v) + x)``; outputs ``v``
``LICell``              ``j = i + x``; ``v = v + k * ((v_leak - v) + j)``;
                        ``i = j + (-ks) * j``; outputs ``v``
``IAFCell``             ``v = v + x``; ``z = (v - th) > 0``; ``v = (1-z)*v + z*v_reset``
======================  ============================================================================

``method`` (``"super"``, ``"heaviside"``, ``"triangle"``, ``"tanh"``, ``"circ"``,
``"heavi_erfc"``) and ``alpha`` only choose the surrogate gradient: every one of them spikes
with ``heaviside``, ``(v - th) > 0``, which for finite floats is exactly ``v > th``
(``comparison=">"``). ``"adjoint"`` runs another step function and probabilistic methods draw
random spikes; both are refused. With ``z`` 0 or 1 the reset products are exact, so
``reset_value`` is ``reset="zero"`` and ``reset_subtract`` is ``reset="subtract"`` bit for bit.
The state starts at ``v = v_leak`` (``IAFCell``: ``v = v_reset``) and ``i = 0``.

Canonical counterparts (``fl`` is float32 rounding):

======================  ============================================================================
Norse                   canonical node
======================  ============================================================================
``LIFBoxCell``          ``LIF(beta = fl(1 - k), gain = k, v_leak, threshold = v_th, v_reset,
                        v_init = v_leak)``
``LIFCell``             ``CubaLIF(alpha = fl(1 - ks), current_gain = 1, beta = fl(1 - k), gain = k,
                        current_order = "new", ...)``: the canonical current is Norse's ``j``, the
                        current after this step's input jump (Norse stores it decayed)
``LIBoxCell``           ``LI``; ``LICell``: ``CubaLI`` likewise
``IAFCell``             ``IF(gain = 1, v_init = v_reset)``
``LIFRecurrentCell``    ``Linear(input_weights)`` into ``CubaLIF`` with a recurrent
                        ``Linear(recurrent_weights)`` from its spikes (``LIFRecurrent`` likewise)
``nn.Linear``           ``Affine`` (``Linear`` without bias); ``nn.Conv1d/2d`` the same;
                        ``nn.Flatten`` ``Flatten`` (dims shifted by the batch axis);
                        ``nn.AvgPool2d`` ``AvgPool2d``
                        (``divisor_override=1``: ``SumPool2d``); ``nn.MaxPool2d``; ``nn.Identity``
                        ``Add`` (a junction)
======================  ============================================================================

The time-looping modules (``LIF``, ``LI``, ``IAF``, ``LIFRecurrent``) import like their cells.

**Exactness.** Norse's ``v + k*((v_leak - v) + x)`` and the canonical
``v_leak + beta*(v - v_leak) + gain*x`` are the same real number but different float
expressions, and ``beta = 1 - k`` itself is rounded when ``k`` has more bits than ``1 - k`` can
hold. Where every value is a short dyadic rational (the exact tier) both are exact and the
spikes are bit-identical; with random float32 parameters they differ by a few ulps, so a spike
can differ only where the voltage sits within rounding of the threshold (a threshold tie, which
the float tier allows). No canonical parameterisation reproduces Norse's rounding in general:
the canonical step has no ``v + k*(... - v)`` form.

**Export** picks Norse's own cell where it holds the node's parameters exactly, and otherwise
:class:`NeuronCell`, a small module built from Norse cells in the way Norse's own NIR import
builds NIR's ``CubaLIF`` (an ``LIBoxCell`` synapse driving a ``LIFBoxCell``, with input
gains): it adds the input gains ``gain`` and ``current_gain`` that Norse's cells fix to
``k`` and 1, the voltage seeing the previous step's current (NIR's forward Euler,
``current_order="previous"``) and a start ``v_init`` other than the cell's own.
``tau_mem_inv`` is chosen so that the float32 product
``dt * tau_mem_inv`` is exactly ``1 - beta``; ``dt`` is the graph's (``dt=`` overrides; 1e-3,
Norse's default, where neither is given: the dynamics depend only on the products). A
``Linear`` into an ``LIFCell`` with a recurrent ``Linear`` back into it becomes Norse's
``LIFRecurrentCell`` (``autapses=True``: the weights as given). Layers are the shared
torch.nn mapping (:mod:`hub_plugins.torch_layers`); a ``Delay`` is its ``StepDelay`` and a
``Threshold`` spikes through Norse's SuperSpike (``heaviside``, ``z > 0``; ``>=`` as ``>`` on
the next float below, exactly). A chain exports as ``norse.torch.SequentialState`` of cells;
any other graph (skips, branches, concatenation, products, recurrence, nested subgraphs) as
:class:`NorseGraph`, which steps its modules as :mod:`hub_plugins.torch_graph` says (the
reference simulator's order and sums; recurrent edges deliver the previous step). Both are
stepped the way Norse users step ``SequentialState``::

    state = None
    for x_t in x:                 # x: [T, N, *]
        y_t, state = model(x_t, state)

Refused (``hub.UnsupportedError`` naming node and field; ``strict=False`` turns the
comparison into Norse's ``>`` with a :class:`NorseApproximationWarning` instead): ``>=``
(Norse spikes with ``>`` only), reset ``"none"``, ``reset_timing="next"``, multi and graded
spikes, ``amplitude != 1``, refractory periods (but a ``CubaLIF`` that ``LIFCell`` computes
exports with one as ``LIFRefracCell``) and axonal delays, subtract reset on ``IF``,
decays whose
``1 - beta`` has no float32 ``tau_inv`` with ``dt * tau_inv == 1 - beta``, and ``Integrator``
(Norse has no cell that does not leak).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import warnings
from typing import Any

import numpy as np
import torch

import hub
from hub.errors import FormatError, HubError, UnsupportedError
from hub.layout import as_input
from hub_plugins import torch_graph, torch_trace
from hub_plugins.norse import families as norse_families
from hub_plugins.torch_graph import GraphRunner
from hub_plugins.torch_layers import (EXPORTED, StepDelay, Threshold, export_layer,
                                      import_module)
from hub.legalise import Accepts, equal, one_of
from hub.neurons import Neuron

#: Norse's default time step (``SNNCell(dt=0.001)``).
NORSE_DT = 1e-3
#: Surrogate methods whose forward pass is ``heaviside``: they differ in gradients only.
HEAVISIDE_METHODS = ("super", "heaviside", "triangle", "tanh", "circ", "heavi_erfc")
#: How many float32 neighbours of ``k / dt`` are tried for an exact ``dt * tau_inv``.
SEARCH_ULPS = 8


class NorseApproximationWarning(UserWarning):
    """``strict=False`` export changed a convention Norse cannot express; the message says which."""


_NEURONS = ("IF", "LIF", "CubaLIF", "LI", "CubaLI")
_SPIKING = ("IF", "LIF", "CubaLIF")

#: What Norse's cells compute (see the module docstring), per node type and field. Decays are
#: checked at export, against the ``dt`` used: ``beta`` must be ``1 - dt*tau_inv`` for a
#: float32 ``tau_inv``.
ACCEPTS = Accepts({
    tuple(sorted(EXPORTED | {"Add"})): (),
    _SPIKING: (
        one_of("comparison", ">", why="Norse spikes when v - v_th > 0"),
        one_of("reset_timing", "same", why="Norse resets in the spiking step only"),
        one_of("spike_mode", "binary", why="Norse emits binary spikes"),
        equal("amplitude", 1, why="Norse spikes are 1"),
        one_of("delay", 0, why="Norse's cells have no axonal delay"),
        one_of("reset", "zero", "subtract", why="Norse's cells always reset"),
    ),
    ("IF", "LIF"): (one_of("refractory", 0, why="Norse's refractory cell is LIFRefracCell, an "
                           "LIFCell (CubaLIF) with a refractory period; other cells have none"),),
    "IF": (one_of("reset", "zero", why="Norse's IAFCell resets to v_reset only"),),
    ("LI", "CubaLI"): (),
    # the families' exporters (norse_families) check their own fields
    ("ALIF", "Izhikevich", "AdExLIF"): (),
    "ALIF": (one_of("arithmetic", "float", why="Norse's LSNNCell computes in float, not in "
                    "Loihi's integers"),),
}, topology="any", name="Norse", notes=[
    ("gains, current order and a start voltage other than the cell's own are exported through "
     "NeuronCell, built from Norse's cells; per-neuron parameters as tensors"),
    "beta and alpha must be 1 - dt*tau_inv for a float32 tau_inv at the export's dt"])


class NorseFormat(hub.Format):
    name = "norse"
    description = "Norse 1.1 models (SequentialState, nn.Sequential, LIF/LIFBox/LI/IAF cells)"
    requires = ("norse",)
    install_hint = "norse"
    load_options = ("dt", "input_shape")
    save_options = ("dt", "strict")
    exports = EXPORTED | frozenset({"IF", "LIF", "CubaLIF", "LI", "CubaLI", "ALIF",
                                    "Izhikevich", "AdExLIF"})
    imports = exports | torch_trace.TRACED
    accepts = ACCEPTS

    def recognizes(self, obj: Any) -> bool:
        if not isinstance(obj, torch.nn.Module):
            return False
        if isinstance(obj, NorseGraph):
            return True
        return any(type(m).__module__.startswith("norse.") for m in obj.modules())

    def load(self, obj: Any, dt: float | None = None,
             input_shape: tuple[int, ...] | None = None) -> hub.Graph:
        return import_model(obj, dt=dt, input_shape=input_shape)

    def export(self, graph: hub.Graph, dt: float | None = None, strict: bool = True) -> Any:
        return export_graph(graph, dt=dt, strict=strict)

    def run(self, native: Any, x: Any) -> Any:
        return run(native, x)


@hub.hookimpl
def hub_register_formats(register) -> None:
    register(NorseFormat())


# -- modules the export builds from Norse cells ------------------------------------------------


def norse_cls(name: str) -> type:
    """A class of ``norse.torch`` by name (imported on first use)."""
    import norse.torch

    return getattr(norse.torch, name)


def _stateful(module: torch.nn.Module) -> bool:
    """Whether ``module.forward`` takes a state, as ``SequentialState`` decides it."""
    return "state" in inspect.signature(module.forward).parameters


def _rate(cell: torch.nn.Module) -> torch.Tensor | float:
    """``dt * tau_mem_inv`` of a cell, computed as Norse computes it (IAF: 1)."""
    p = cell.p
    return cell.dt * p.tau_mem_inv if hasattr(p, "tau_mem_inv") else 1.0


class NeuronCell(torch.nn.Module):
    """A Norse neuron cell with input gains and, optionally, an ``LIBoxCell`` synapse before it.

    As ``norse.torch.utils.import_nir`` builds NIR's ``CubaLIF`` (``w_in``, an ``LIBoxCell``
    synapse, ``r``, an ``LIFBoxCell``), with the gains stated the canonical way: the synapse
    ``i = i + ks*((0 - i) + x * current_gain/ks)`` (``ks = dt * tau_mem_inv`` of the synapse)
    and the neuron driven by ``u * gain/k``, where ``u`` is this step's current (``order="new"``)
    or the previous step's (``"previous"``), or ``x`` without a synapse. ``v_init``, if given,
    is the neuron's first voltage in place of the cell's own start. One step:
    ``y, state = cell(x, state)``.
    """

    def __init__(self, neuron: torch.nn.Module, gain: Any, synapse: torch.nn.Module | None = None,
                 current_gain: Any = 1.0, order: str = "new", v_init: Any = None) -> None:
        super().__init__()
        if order not in ("new", "previous"):
            raise ValueError(f"order must be 'new' or 'previous', got {order!r}")
        self.neuron = neuron
        self.synapse = synapse
        self.order = order
        self.register_buffer("gain", torch.as_tensor(gain, dtype=torch.float32))
        self.register_buffer("current_gain", torch.as_tensor(current_gain, dtype=torch.float32))
        #: the voltage to start from, where it is not the neuron cell's own start
        self.register_buffer("v_init", None if v_init is None else
                             torch.as_tensor(v_init, dtype=torch.float32))

    def _start(self, like: torch.Tensor) -> Any:
        """The neuron cell's first state, with the voltage at ``v_init``."""
        from norse.torch.functional.iaf import IAFFeedForwardState
        from norse.torch.functional.leaky_integrator_box import LIBoxState
        from norse.torch.functional.lif_box import LIFBoxFeedForwardState

        v = self.v_init.expand_as(like).clone()
        for cls, state in ((norse_cls("LIFBoxCell"), LIFBoxFeedForwardState),
                           (norse_cls("LIBoxCell"), LIBoxState),
                           (norse_cls("IAFCell"), IAFFeedForwardState)):
            if isinstance(self.neuron, cls):
                return state(v=v)
        raise TypeError(f"cannot start a {type(self.neuron).__name__} at v_init")

    def extra_repr(self) -> str:
        return f"order={self.order!r}"

    def forward(self, x: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        syn_state, neuron_state = (None, None) if state is None else state
        u = x
        if self.synapse is not None:
            previous = (torch.zeros_like(x) if syn_state is None
                        else syn_state.v.expand_as(x))
            current, syn_state = self.synapse(x * (self.current_gain / _rate(self.synapse)),
                                              syn_state)
            u = current if self.order == "new" else previous
        if neuron_state is None and self.v_init is not None:
            neuron_state = self._start(u)
        out, neuron_state = self.neuron(u * (self.gain / _rate(self.neuron)), neuron_state)
        return out, (syn_state, neuron_state)


class NorseGraph(GraphRunner, torch.nn.Module):
    """A graph of any topology over torch and Norse modules, stepped one time step per call like
    ``SequentialState``: ``y, state = model(x_t, state)``.

    Each node's module is registered under the node's name (dots become ``__``); the graph is
    stepped as :mod:`hub_plugins.torch_graph` says (recurrent edges deliver the previous step's
    value). ``x_t`` is a tensor (a dict by input name if several), ``y`` likewise by output. The
    state holds every node's last value and each cell's own state; ``state=None`` starts afresh
    (and empties the delay lines, which keep theirs inside).
    """

    def __init__(self, modules: dict[str, torch.nn.Module],
                 lay: torch_graph.Layout) -> None:
        super().__init__()
        self._setup(modules, lay)

    def forward(self, x: Any, state: Any = None) -> tuple[Any, Any]:
        if state is None:
            state = {"last": {}, "cells": {}}
            for module in self.modules():
                if isinstance(module, StepDelay):
                    module.reset()
        cells = dict(state["cells"])

        def call(name: str, module: torch.nn.Module, *args: torch.Tensor) -> torch.Tensor:
            if len(args) == 1 and _stateful(module):
                y, cells[name] = module(args[0], cells.get(name))
                return y
            return module(*args)

        values = self.step_graph(self.given(x), state["last"], call)
        return self.results(values), {"last": values, "cells": cells}


# -- export ------------------------------------------------------------------------------------


def _f32(value: Any) -> np.ndarray:
    return np.asarray(value, dtype=np.float32)


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


def _t(value: Any) -> torch.Tensor:
    return torch.as_tensor(np.array(value, dtype=np.float32))


def _check(node: hub.Node, name: str, strict: bool, notes: list[str]) -> None:
    """Refuse what no Norse cell computes, as ACCEPTS declares it (``strict=False``: note
    ``>=`` exported as ``>``, an approximation)."""
    ACCEPTS.check(node, name, skip=() if strict else ("comparison",))
    if node.spiking and node.comparison != ">":
        notes.append(f"{name}.comparison: '>=' exported as Norse's '>'")


def _starts_at(node: hub.Node, start: np.ndarray) -> bool:
    """Whether ``v_init`` is the cell's own start (``v_leak``, ``IAF``: ``v_reset``)."""
    init = np.broadcast_to(_f32(node.v_init), np.broadcast_shapes(node.v_init.shape, start.shape))
    return bool((init == np.broadcast_to(_f32(start), init.shape)).all())


def _export_neuron(node: hub.Node, name: str, dt: float, strict: bool,
                   notes: list[str]) -> torch.nn.Module:
    from norse.torch.functional.reset import reset_subtract, reset_value
    from norse.torch import (IAFCell, IAFParameters, LIBoxCell, LIBoxParameters, LICell,
                             LIFBoxCell, LIFBoxParameters, LIFCell, LIFParameters, LIParameters)

    _check(node, name, strict, notes)
    kind = node.type
    if kind == "IF":
        if node.reset != "zero":
            raise UnsupportedError("Norse's IAFCell resets to v_reset only", node=name,
                                   field="reset")
        cell = IAFCell(IAFParameters(v_th=_t(node.threshold), v_reset=_t(node.v_reset)), dt=dt)
        starts = _starts_at(node, node.v_reset)
        if (node.gain == 1).all() and starts:
            return cell
        return NeuronCell(cell, _t(node.gain), v_init=None if starts else _t(node.v_init))
    if kind == "Integrator":
        raise UnsupportedError("Norse has no integrator cell (LIBoxCell always leaks)",
                               node=name, field="type")
    starts = _starts_at(node, node.v_leak)
    v_init = None if starts else _t(node.v_init)
    current = node.current
    k = _decay_rate(node.beta, node.gain, name, "beta", dt)
    tmi = _inverse_rate(k, dt, name, "beta", strict, notes)
    plain_gain = k.shape == node.gain.shape and (k == node.gain).all()
    if current:
        ks = _decay_rate(node.alpha, None, name, "alpha", dt)
        tsi = _inverse_rate(ks, dt, name, "alpha", strict, notes)
        native = (plain_gain and starts and (node.current_gain == 1).all()
                  and node.current_order == "new"
                  and (not node.spiking or node.reset == "zero"))
        if native and node.spiking:
            return LIFCell(LIFParameters(tau_syn_inv=_t(tsi), tau_mem_inv=_t(tmi),
                                         v_leak=_t(node.v_leak), v_th=_t(node.threshold),
                                         v_reset=_t(node.v_reset)), dt=dt)
        if native:
            return LICell(LIParameters(tau_syn_inv=_t(tsi), tau_mem_inv=_t(tmi),
                                       v_leak=_t(node.v_leak)), dt=dt)
    if node.spiking:
        cell = LIFBoxCell(LIFBoxParameters(
            tau_mem_inv=_t(tmi), v_leak=_t(node.v_leak), v_th=_t(node.threshold),
            v_reset=_t(node.v_reset),
            reset_method=reset_subtract if node.reset == "subtract" else reset_value), dt=dt)
    else:
        cell = LIBoxCell(LIBoxParameters(tau_mem_inv=_t(tmi), v_leak=_t(node.v_leak)), dt=dt)
    if not current:
        return cell if plain_gain and starts else NeuronCell(cell, _t(node.gain), v_init=v_init)
    synapse = LIBoxCell(LIBoxParameters(tau_mem_inv=_t(tsi), v_leak=torch.as_tensor(0.0)),
                        dt=dt)
    return NeuronCell(cell, _t(node.gain), synapse, _t(node.current_gain), node.current_order,
                      v_init)


def _export_layer(node: hub.Node, name: str, input_shape: tuple[int, ...] | None
                  ) -> torch.nn.Module:
    """A layer node as torch.nn (the shared mapping); an ``Add`` junction as ``Identity``."""
    if node.type == "Add":
        return torch.nn.Identity()
    if node.type not in EXPORTED:
        raise UnsupportedError(f"Norse and torch have no {node.type} layer that the hub maps to; "
                               f"the layers are {', '.join(sorted(EXPORTED))} and Norse's cells",
                               node=name, field="type")
    return export_layer(node, input_shape)


def _threshold(node: hub.Node) -> torch.nn.Module:
    """A Threshold node spiking through Norse's SuperSpike (``heaviside``: ``z > 0``)."""
    from norse.torch.functional.threshold import threshold

    return Threshold(_t(node.threshold), node.comparison,
                     functools.partial(threshold, method="super", alpha=100.0))


def export_graph(graph: hub.Graph, dt: float | None = None, strict: bool = True) -> Any:
    """The Norse model of ``graph``: ``SequentialState`` for a chain, else :class:`NorseGraph`."""
    from norse.torch import SequentialState

    dt = float(dt if dt is not None else graph.metadata.get("dt") or NORSE_DT)
    notes: list[str] = []

    def export(name: str, node: hub.Node, shape: tuple[int, ...] | None
               ) -> tuple[torch.nn.Module | None, dict]:
        if isinstance(node, (hub.Input, hub.Output)):
            return None, {}
        if isinstance(node, Neuron):
            cell = norse_families.export_refractory(node, name, dt, strict, notes)
            return (cell if cell is not None else
                    _export_neuron(node, name, dt, strict, notes)), {}
        if isinstance(node, hub.Family):
            return norse_families.export_neuron(node, name, dt, strict, notes), {}
        if isinstance(node, hub.Threshold):
            return _threshold(node), {}
        return _export_layer(node, name, shape), {}

    modules, lay = torch_graph.layout(graph, export)
    for note in notes:
        warnings.warn(f"approximated for Norse: {note}", NorseApproximationWarning, stacklevel=3)
    lay = _fold_recurrent(modules, lay, dt)
    # a delay keeps its line inside, which a SequentialState would never empty
    if lay.is_chain() and not any(isinstance(m, StepDelay) for m in modules.values()):
        model = SequentialState(*(modules[n] for n in lay.line()[1:-1]))
        model.input_shape = lay.shapes[lay.inputs[0]]  # what hub.load needs to read it back
    else:
        model = NorseGraph(modules, lay)
    model.dt = dt
    return model


def _fold_recurrent(modules: dict[str, torch.nn.Module], lay: torch_graph.Layout,
                    dt: float) -> torch_graph.Layout:
    """Fold each ``Linear -> LIFCell`` with a recurrent ``Linear`` from its spikes back into
    it into one ``LIFRecurrentCell`` (Norse's own recurrent layer), under the input layer's
    name; likewise the families' cells into their recurrent forms (``LSNNCell`` into
    ``LSNNRecurrentCell``, ...). Returns the layout with the neuron and its recurrent weights
    folded away."""
    from norse.torch import LIFCell, LIFRecurrentCell

    forms = {LIFCell: LIFRecurrentCell, **norse_families.recurrent_forms()}

    consumers: dict[str, list[str]] = {n: [] for n in lay.order}
    for target in lay.order:
        for source in (*lay.forward.get(target, ()), *lay.recurrent.get(target, ())):
            consumers[source].append(target)
    folded: dict[str, str] = {}  # neuron or recurrent weights -> the input layer's name
    for n in lay.order:
        a, r = lay.forward.get(n, []), lay.recurrent.get(n, [])
        form = forms.get(type(modules.get(n)))
        if not (form is not None and len(a) == 1 and len(r) == 1):
            continue
        a, r = a[0], r[0]
        if not (lay.roles[a]["type"] == "Linear" and lay.roles[r]["type"] == "Linear"
                and consumers[a] == [n] and consumers[r] == [n] and lay.forward.get(r) == [n]
                and not lay.recurrent.get(r) and not lay.recurrent.get(a) and a not in folded):
            continue
        w_in, w_rec = modules[a].weight.detach(), modules[r].weight.detach()
        modules[a] = form(
            w_in.shape[1], w_in.shape[0], norse_families.cell_parameters(modules[n]), dt=dt,
            autapses=True, input_weights=torch.nn.Parameter(w_in.clone()),
            recurrent_weights=torch.nn.Parameter(w_rec.clone()))
        lay.roles[a] = {"type": form.__name__}
        folded[n] = folded[r] = a
        del modules[n], modules[r]
    if not folded:
        return lay
    rename = lambda s: folded.get(s, s)  # noqa: E731  the neuron's spikes leave the cell
    keep = [n for n in lay.order if n not in folded]
    return dataclasses.replace(
        lay, order=keep,
        forward={t: [rename(s) for s in lay.forward[t] if folded.get(s) != t]
                 for t in keep if t in lay.forward},
        recurrent={t: [rename(s) for s in lay.recurrent[t]] for t in keep if t in lay.recurrent},
        edges=[(rename(s), t) for s, t in lay.edges if t not in folded and folded.get(s) != t],
        roles={k: v for k, v in lay.roles.items() if k not in folded},
        names={k: v for k, v in lay.names.items() if k not in folded})


# -- import ------------------------------------------------------------------------------------


def _np(value: Any) -> np.ndarray:
    return np.array(torch.as_tensor(value).detach().cpu().numpy(), dtype=np.float32)


def _k(cell: Any, field: str = "tau_mem_inv") -> np.ndarray:
    """``dt * tau_inv`` exactly as the cell computes it (a float32 product)."""
    return _np(cell.dt * torch.as_tensor(getattr(cell.p, field)).detach().float())


def _start(value: Any) -> np.ndarray:
    """A cell's starting voltage as ``v_init``: one scalar where every neuron starts alike (Norse
    keeps no separate initial value, and the canonical default is a scalar)."""
    v = _np(value)
    return v.ravel()[:1].reshape(()) if v.size and (v == v.ravel()[0]).all() else v


def _one_minus(k: np.ndarray) -> np.ndarray:
    return _f32(np.float32(1) - k)


def _method(cell: Any, name: str) -> None:
    method = getattr(cell.p, "method", "super")
    if method not in HEAVISIDE_METHODS:
        raise UnsupportedError(f"method {method!r} does not spike with heaviside(v - v_th); "
                               f"supported: {', '.join(HEAVISIDE_METHODS)}", node=name,
                               field="method")


def _reset(cell: Any, name: str) -> str:
    from norse.torch.functional.reset import reset_subtract, reset_value

    method = getattr(cell.p, "reset_method", reset_value)
    if method is reset_value:
        return "zero"
    if method is reset_subtract:
        return "subtract"
    raise UnsupportedError(f"reset_method {getattr(method, '__name__', method)!r} is neither "
                           "reset_value nor reset_subtract", node=name, field="reset_method")


def _spiking_fields(cell: Any, reset: str = "zero") -> dict[str, Any]:
    return {"threshold": _np(cell.p.v_th), "v_reset": _np(cell.p.v_reset), "comparison": ">",
            "reset": reset, "reset_timing": "same"}


def _import_cell(cell: Any, name: str) -> hub.Node:
    """The canonical neuron of one Norse cell (or time-looping module)."""
    from norse.torch import (IAF, LI, LIF, IAFCell, LIBoxCell, LICell, LIFBoxCell, LIFCell,
                             LIFRecurrent, LIFRecurrentCell)

    if isinstance(cell, NeuronCell):
        inner = _import_cell(cell.neuron, name)
        if cell.v_init is not None:
            inner = inner.replace(v_init=_np(cell.v_init))
        gain = _np(cell.gain)
        if cell.synapse is None:
            return inner.replace(gain=gain)
        if not isinstance(cell.synapse, LIBoxCell) or (_np(cell.synapse.p.v_leak) != 0).any():
            raise UnsupportedError("the synapse must be an LIBoxCell with v_leak 0", node=name,
                                   field="synapse")
        fields = {k: v for k, v in inner.params().items() if k not in ("gain",)}
        cls = hub.CubaLIF if isinstance(inner, hub.LIF) else hub.CubaLI
        if not isinstance(inner, (hub.LIF, hub.LI)):
            raise UnsupportedError("a synapse drives an LIFBoxCell or LIBoxCell only", node=name,
                                   field="neuron")
        return cls(**fields, gain=gain, alpha=_one_minus(_k(cell.synapse)),
                   current_gain=_np(cell.current_gain), current_order=cell.order)
    if isinstance(cell, (LIFCell, LIF, LIFRecurrentCell, LIFRecurrent)):
        _method(cell, name)
        k, ks = _k(cell), _k(cell, "tau_syn_inv")
        return hub.CubaLIF(alpha=_one_minus(ks), beta=_one_minus(k), gain=k, current_gain=1.0,
                           v_leak=_np(cell.p.v_leak), v_init=_start(cell.p.v_leak),
                           current_order="new", **_spiking_fields(cell))
    if isinstance(cell, LIFBoxCell):
        _method(cell, name)
        k = _k(cell)
        return hub.LIF(beta=_one_minus(k), gain=k, v_leak=_np(cell.p.v_leak),
                       v_init=_start(cell.p.v_leak), **_spiking_fields(cell, _reset(cell, name)))
    if isinstance(cell, (LICell, LI)):
        k, ks = _k(cell), _k(cell, "tau_syn_inv")
        return hub.CubaLI(alpha=_one_minus(ks), beta=_one_minus(k), gain=k, current_gain=1.0,
                          v_leak=_np(cell.p.v_leak), v_init=_start(cell.p.v_leak),
                          current_order="new")
    if isinstance(cell, LIBoxCell):
        k = _k(cell)
        return hub.LI(beta=_one_minus(k), gain=k, v_leak=_np(cell.p.v_leak),
                      v_init=_start(cell.p.v_leak))
    if isinstance(cell, (IAFCell, IAF)):
        _method(cell, name)
        return hub.IF(gain=1.0, v_init=_start(cell.p.v_reset), **_spiking_fields(cell))
    other = norse_families.import_cell(cell, name)
    if other is not None:
        return other
    raise UnsupportedError(f"{type(cell).__name__} has no canonical counterpart here; supported "
                           "are LIFCell, LIF, LIFBoxCell, LICell, LI, LIBoxCell, IAFCell, IAF, "
                           "LIFRecurrentCell, LIFRecurrent, LSNNCell, LSNN, LSNNRecurrentCell, "
                           "LSNNRecurrent, IzhikevichCell, Izhikevich, IzhikevichRecurrentCell, "
                           "IzhikevichRecurrent, LIFExCell, LIFEx, LIFAdExCell, LIFAdEx (and "
                           "their recurrent forms), LIFRefracCell", node=name, field="type")


def _import_layer(module: torch.nn.Module, name: str) -> hub.Node:
    """A torch.nn layer (the shared mapping); ``Identity``, an exported junction, as ``Add``."""
    if isinstance(module, torch.nn.Identity):
        return hub.Add()
    try:
        node = import_module(module)
    except UnsupportedError as e:
        raise e.at(node=name) from None
    if node is None:
        raise UnsupportedError(f"{type(module).__name__} does nothing at inference; leave it "
                               "out of a Norse step model", node=name, field="type")
    return node


def _traced(model: torch.nn.Module) -> bool:
    """Whether ``model`` is a class of its own (``norse.torch.models``, a user's) anywhere
    below its sequentials, whose ``forward`` only tracing reads."""
    from norse.torch import Lift, SequentialState

    if isinstance(model, NorseGraph):  # the hub's own export: read from its structure
        return False
    if isinstance(model, (torch.nn.Sequential, SequentialState)):
        return any(_traced(child) for child in model.children())
    if isinstance(model, Lift):
        return _traced(model.lifted_module)
    return not (_is_cell(model) or not any(True for _ in model.children()))


def framework() -> torch_trace.Framework:
    """Norse as the shared tracer sees it: cells take their state and return the next."""

    def split(module: Any, args: tuple, kwargs: dict) -> tuple[Any, Any]:
        state = args[1] if len(args) > 1 else None
        return args[0], (state if state is not None else ())

    def piece(call: torch_trace.Call) -> torch_trace.Piece:
        if call.fresh:
            raise UnsupportedError("the cell starts from no state at every step", field="state")
        if call.used != {0}:
            raise UnsupportedError("the cell's state is read as an output; the hub reads its "
                                   "spikes (or a leaky integrator's voltage)", field="state")
        from norse.torch import LICell, LILinearCell

        cell = call.module
        if isinstance(cell, LILinearCell):  # li_step: LICell's update on linear(x, weights)
            inner = _import_cell(LICell(p=cell.p, dt=cell.dt), call.path)
            return torch_trace.Piece(
                {"_linear": hub.Linear(weight=_np(cell.input_weights)), "": inner},
                [("<in>", "_linear"), ("_linear", "")])
        from norse.torch import LIFRecurrent, LIFRecurrentCell

        if isinstance(cell, (LIFRecurrentCell, LIFRecurrent, *norse_families.recurrent_cells())):
            return norse_families.recurrent_piece(cell, call.path)
        return torch_trace.Piece({"": _import_cell(cell, call.path)})

    def is_neuron(module: Any) -> bool:
        from norse.torch import LILinearCell
        from norse.torch.module import snn

        return isinstance(module, (NeuronCell, LILinearCell, snn.SNNCell, snn.SNN,
                                   snn.SNNRecurrentCell, snn.SNNRecurrent))

    return torch_trace.Framework("norse", is_neuron, piece, split)


def _is_cell(module: Any) -> bool:
    return (isinstance(module, NeuronCell)
            or type(module).__module__.startswith("norse.torch.module"))


def _recurrent_nodes(cell: Any, name: str, graph: hub.Graph) -> tuple[str, str]:
    """Add an ``LIFRecurrentCell``'s input weights, neuron and recurrent weights; returns the
    node its input enters and the node its spikes leave."""
    graph.add(f"{name}.input_weights", hub.Linear(weight=_np(cell.input_weights)))
    graph.add(f"{name}.lif", _import_cell(cell, name))
    graph.add(f"{name}.recurrent_weights", hub.Linear(weight=_np(cell.recurrent_weights)))
    graph.connect(f"{name}.input_weights", f"{name}.lif")
    graph.connect(f"{name}.lif", f"{name}.recurrent_weights")
    graph.connect(f"{name}.recurrent_weights", f"{name}.lif")
    return f"{name}.input_weights", f"{name}.lif"


def _recurrent_cell(cell: Any, name: str, graph: hub.Graph, source: str) -> str:
    """Add an ``LIFRecurrentCell`` after ``source`` in a chain; returns its neuron."""
    first, last = _recurrent_nodes(cell, name, graph)
    graph.connect(source, first)
    return last


def _leaves(model: torch.nn.Module, prefix: str = "") -> list[tuple[str, torch.nn.Module]]:
    """The modules of (nested) sequentials in order; ``Lift`` unwrapped."""
    from norse.torch import Lift

    if isinstance(model, torch.nn.Sequential):
        out = []
        for key, child in model.named_children():
            out += _leaves(child, f"{prefix}{key}.")
        return out
    if isinstance(model, Lift):
        return _leaves(model.lifted_module, prefix)
    return [(prefix.rstrip(".") or type(model).__name__.lower(), model)]


def _first_shape(layers: list[tuple[str, torch.nn.Module]]) -> tuple[int, ...] | None:
    from norse.torch import LIFRecurrent, LIFRecurrentCell

    for _, module in layers:
        if isinstance(module, torch.nn.Linear):
            return (module.in_features,)
        if isinstance(module, (LIFRecurrentCell, LIFRecurrent,
                               *norse_families.recurrent_cells())):
            return (int(module.input_size),)
        if not _is_cell(module) and not isinstance(module, torch.nn.Identity):
            return None
    return None


def import_model(model: Any, dt: float | None = None,
                 input_shape: tuple[int, ...] | None = None) -> hub.Graph:
    """The canonical graph of a Norse model (see the module docstring)."""
    from norse.torch import LIFRecurrent, LIFRecurrentCell

    if not isinstance(model, torch.nn.Module):
        raise FormatError(f"a Norse model is a torch.nn.Module, not {type(model).__name__}")
    if isinstance(model, NorseGraph):
        return _import_graph(model, dt)
    if _traced(model):
        graph = torch_trace.import_model(model, framework(), input_shape=input_shape).graph
        dts = {float(m.p.dt if hasattr(m, "p") and hasattr(m.p, "dt") else m.dt)
               for m in model.modules() if _is_cell(m) and hasattr(m, "dt")}
        if dt is not None or len(dts) == 1:
            graph.metadata["dt"] = dt if dt is not None else dts.pop()
        return graph
    layers = _leaves(model)
    shape = input_shape or getattr(model, "input_shape", None) or _first_shape(layers)
    if shape is None:
        raise HubError("the model does not say its input shape (it starts with a layer of any "
                       "size): pass input_shape=(C, H, W) (without batch and time)",
                       field="input_shape")
    dts = {float(m.dt) for _, m in layers if hasattr(m, "dt") and _is_cell(m)}
    dts |= {float(m.neuron.dt) for _, m in layers if isinstance(m, NeuronCell)}
    graph = hub.Graph(metadata={"dt": dt if dt is not None else
                                (dts.pop() if len(dts) == 1 else getattr(model, "dt", None))})
    if graph.metadata["dt"] is None:
        del graph.metadata["dt"]
    graph.add("input", hub.Input(shape=tuple(int(s) for s in shape)))
    at = "input"
    used: set[str] = set()
    for path, module in layers:
        name = re.sub(r"[^0-9A-Za-z_]", "_", path)
        while name in used or name in ("input", "output"):
            name += "_"
        used.add(name)
        try:
            if isinstance(module, (LIFRecurrentCell, LIFRecurrent,
                                   *norse_families.recurrent_cells())):
                at = _recurrent_cell(module, name, graph, at)
                continue
            node = _import_cell(module, name) if _is_cell(module) else _import_layer(module, name)
        except HubError as e:
            raise e if e.node else e.at(node=name)
        graph.add(name, node)
        graph.connect(at, name)
        at = name
    graph.add("output", hub.Output())
    graph.connect(at, "output")
    torch_trace.prove_outputs(graph, lambda x: run(torch_trace.copy_model(model).eval(), x))
    return graph


def _import_graph(model: NorseGraph, dt: float | None) -> hub.Graph:
    from norse.torch import LIFRecurrent, LIFRecurrentCell

    recurrent_cells = (LIFRecurrentCell, LIFRecurrent, *norse_families.recurrent_cells())

    def node_of(name: str, module: torch.nn.Module, role: dict) -> Any:
        if isinstance(module, recurrent_cells):
            piece = hub.Graph()
            first, last = _recurrent_nodes(module, name, piece)
            return torch_graph.Expanded(piece, first, last)
        return _import_cell(module, name) if _is_cell(module) else _import_layer(module, name)

    graph = torch_graph.read(model, node_of)
    stored = getattr(model, "dt", None)
    if dt is not None or stored is not None:
        graph.metadata["dt"] = dt if dt is not None else stored
    return graph


# -- running -----------------------------------------------------------------------------------


def _loops_over_time(model: torch.nn.Module) -> bool:
    """Whether the model holds Norse's time-looping modules (``LIF``, not ``LIFCell``)."""
    from norse.torch.module.snn import SNN, SNNRecurrent

    return any(isinstance(m, (SNN, SNNRecurrent)) for m in model.modules())


def run(model: Any, x: Any) -> Any:
    """Run a Norse model on ``x`` ``[T, N, *]`` the way Norse users do; returns ``[T, N, *]``.

    Cells are stepped one time step per call with their state carried along; a model of
    Norse's time-looping modules (``LIF``, ``LI``, ...) gets the whole sequence in one call.
    """
    from norse.torch import SequentialState

    x = as_input(x)
    if _traced(model):  # a class of its own: called as its forward wants
        return torch_trace.run_native(model, framework(), x)
    with torch.no_grad():
        if _loops_over_time(model):
            out = model(x)
            return out[0] if isinstance(out, tuple) else out
        if not isinstance(model, torch.nn.Sequential) or isinstance(model, SequentialState):
            step = model
        else:
            step = SequentialState(*model)  # plain nn.Sequential: step its modules with state
        state, ys = None, []
        for x_t in x.unbind(0):
            if _stateful(step):
                y, state = step(x_t, state)
            else:
                y = step(x_t)
            ys.append(y)
        if isinstance(ys[0], dict):
            return {k: torch.stack([y[k] for y in ys]) for k in ys[0]}
        return torch.stack(ys)
