r"""More neuron families: adaptive threshold, Izhikevich, quadratic IF, alpha synapse, filter.

The types in :mod:`hub.neurons` share one step; these have state and float operations of their
own, so each states its update as the ordered list of float32 operations it computes (every
product and sum as written, left to right; ``fl`` is float32 rounding, ``s`` is 1 where the
neuron spiked this step, else 0). Each is its own exact convention: a framework's model maps
onto it only where the framework computes the same operations in the same order, and a
conversion between two types is refused rather than guessed. Each type's built-in step also has
a fused CPU kernel (:mod:`hub.kernels.families`), bit-identical to it, named by
:attr:`Family.kernel`.

Every array parameter is per neuron or a scalar broadcast to all; the state starts as each type
says.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from .errors import HubError, ParameterError
from .node import Node, Shape, array, choice
from .neurons import SpikingFields, Threshold
from .nodes import _per_element
from .surrogate import spike


class Family(Node):
    """Shared plumbing of these neuron types: per-element parameters and named state."""

    abstract: ClassVar[bool] = True
    stateful: ClassVar[bool] = True
    spiking: ClassVar[bool] = True
    #: state name -> the field holding its start value (None: zero)
    starts: ClassVar[dict[str, str | None]] = {}
    #: The fused kernel (in ``hub/kernels/families.cpp``) that computes this type's own
    #: ``step`` over a whole sequence; None: the reference step only. A subclass that overrides
    #: ``step`` runs its own step: the kernel computes the built-in equation only.
    kernel: ClassVar[str | None] = None

    def kernel_refusal(self) -> str | None:
        """Why this node's settings keep it off its type's fused kernel, or None if they don't."""
        return None

    def output_shape(self, input_shape: Shape | None) -> Shape:
        names = [n for n, v in self.params().items() if isinstance(v, np.ndarray)]
        return _per_element(self, input_shape, *names)

    def initial_state(self, shape: tuple[int, ...], like: torch.Tensor) -> dict[str, Any]:
        zeros = like.new_zeros(shape)
        state = {}
        for name, field in self.starts.items():
            start = zeros
            if field is not None:
                start = zeros + torch.tensor(np.array(getattr(self, field)), dtype=like.dtype,
                                             device=like.device)
            state[name] = start
        return state

    def _fire(self, p: dict, v: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
        return spike(v - threshold, self.comparison == ">=")


def _reset(kind: str, v: torch.Tensor, s: torch.Tensor, v_reset: torch.Tensor,
           threshold: torch.Tensor) -> torch.Tensor:
    if kind == "zero":
        return torch.where(s > 0, v_reset.expand_as(v), v)
    if kind == "subtract":
        return v - threshold * s
    return v


class ALIF(Family, SpikingFields):
    r"""Adaptive-threshold current-based LIF (Norse's LSNN, Bellec et al.; Loihi's ALIF).

    State: current ``i`` (starts 0), voltage ``v`` (``v_init``), threshold ``theta``
    (``threshold``) and refractory voltage ``r`` (0). One step with input ``x``:

    1. ``i_new = alpha * i + current_gain * x``; ``u = i_new`` (``current_order="new"``) or
       ``u = i`` (``"previous"``)
    2. ``v = v_leak + beta * (v - v_leak) + gain * u``
    3. ``theta = threshold + threshold_decay * (theta - threshold)``
    4. ``r = refractory_decay * r``
    5. ``s = (v - r) - theta > 0`` (``comparison=">"``) or ``>= 0`` (``">="``); the output is
       ``s``
    6. reset ``"zero"``: ``v = v_reset`` where ``s``; ``"subtract"``: ``v = v - theta * s``;
       ``"none"``: ``v`` stays (the refractory voltage may do the resetting)
    7. ``r = r + (refractory_scale * theta) * s``; ``theta = theta + threshold_step * s``

    ``threshold_decay`` is the per-step decay of the threshold's excess over its base
    ``threshold`` (Norse: ``1 - dt * tau_adapt_inv``), ``threshold_step`` its increase per
    spike (Norse's ``beta``). ``refractory_scale = 0`` (the default) leaves ``r`` at 0, so the
    comparison is ``v - theta`` exactly; Loihi's ALIF adds ``2 * theta`` per spike.

    Lava-DL slayer's ``alif`` (``lava/lib/dl/slayer/neuron/alif.py``) has these fields: its
    threshold state decays towards ``threshold`` by ``threshold_decay``, steps by
    ``threshold_step`` per spike, and its refractory state decays by ``refractory_decay`` and
    grows by ``2 * theta`` (``refractory_scale = 2``, ``reset = "none"``, ``comparison=">="``);
    computed in Loihi's fixed point: ``arithmetic="fixed"``.

    ``arithmetic="fixed"`` is that fixed point (slayer's ``alif`` forward, in units of its
    state scale): every state is an integer (int64), the decays are multiples of ``1/4096``
    and each product ``decay * y`` in steps 1 to 4 is ``(y * round(4096 * decay)) >> 12``
    rounded toward zero; ``current_gain * x`` must be an integer and so must ``gain``,
    ``current_gain``, ``v_leak``, ``v_init``, ``v_reset``, ``threshold``, ``threshold_step``
    and ``refractory_scale``. ``"float"`` (the default) computes the steps in the input's
    float type as written.
    """

    alpha: np.ndarray = array(0.0, doc="current decay per step (0: no current state)")
    beta: np.ndarray = array(doc="voltage decay per step")
    gain: np.ndarray = array(1.0, doc="gain of the current into the voltage")
    current_gain: np.ndarray = array(1.0, doc="gain of the input into the current")
    v_leak: np.ndarray = array(0.0, doc="rest potential")
    current_order: str = choice("new", ("new", "previous"),
                                doc="the voltage sees this step's current or the previous one")
    threshold_decay: np.ndarray = array(1.0, doc="per-step decay of theta - threshold")
    threshold_step: np.ndarray = array(0.0, doc="increase of theta per spike")
    refractory_decay: np.ndarray = array(0.0, doc="per-step decay of the refractory voltage")
    refractory_scale: np.ndarray = array(0.0, doc="r grows by this times theta per spike")
    arithmetic: str = choice("float", ("float", "fixed"),
                             doc="float steps, or Loihi's integer steps with 12-bit decays")
    kernel: ClassVar[str | None] = "alif"
    starts: ClassVar[dict[str, str | None]] = {"i": None, "v": "v_init", "theta": "threshold",
                                               "r": None}
    _DECAYS: ClassVar[tuple[str, ...]] = ("alpha", "beta", "threshold_decay", "refractory_decay")
    _INTEGERS: ClassVar[tuple[str, ...]] = ("gain", "current_gain", "v_leak", "v_init",
                                            "v_reset", "threshold", "threshold_step",
                                            "refractory_scale")

    def check(self) -> None:
        if self.arithmetic != "fixed":
            return
        for name in self._DECAYS:
            value = np.asarray(getattr(self, name), dtype=np.float64)
            if value.size and (value.min() < 0 or value.max() > 1
                               or np.any(value * 4096 != np.round(value * 4096))):
                raise ParameterError("fixed arithmetic takes decays that are multiples of "
                                     "1/4096 in [0, 1]", field=name)
        for name in self._INTEGERS:
            value = np.asarray(getattr(self, name), dtype=np.float64)
            if value.size and np.any(value != np.round(value)):
                raise ParameterError("fixed arithmetic takes integer values", field=name)

    def initial_state(self, shape: tuple[int, ...], like: torch.Tensor) -> dict[str, Any]:
        state = super().initial_state(shape, like)
        if self.arithmetic == "fixed":
            state = {k: torch.round(v.to(torch.float64)).to(torch.int64) for k, v in state.items()}
        return state

    def step(self, p: dict, x: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, dict]:
        if self.arithmetic == "fixed":
            return self._fixed_step(p, x, state)
        i_new = p["alpha"] * state["i"] + p["current_gain"] * x
        u = i_new if self.current_order == "new" else state["i"]
        v = p["v_leak"] + p["beta"] * (state["v"] - p["v_leak"]) + p["gain"] * u
        theta = p["threshold"] + p["threshold_decay"] * (state["theta"] - p["threshold"])
        r = p["refractory_decay"] * state["r"]
        s = self._fire(p, v - r, theta)
        v = _reset(self.reset, v, s, p["v_reset"], theta)
        r = r + (p["refractory_scale"] * theta) * s
        theta = theta + p["threshold_step"] * s
        return s, {"i": i_new, "v": v, "theta": theta, "r": r}

    def _fixed_step(self, p: dict, x: torch.Tensor, state: dict[str, Any]
                    ) -> tuple[torch.Tensor, dict]:
        q = {k: torch.round(torch.as_tensor(v, device=x.device).to(torch.float64)
                            * (4096 if k in self._DECAYS else 1)).to(torch.int64)
             for k, v in p.items() if k in self._DECAYS + self._INTEGERS}
        drive = p["current_gain"].to(torch.float64) * x.to(torch.float64)
        if not torch.equal(drive, torch.round(drive)):
            raise HubError("an ALIF with fixed arithmetic received an input whose "
                           "current_gain * x is not an integer", field="input")
        i_new = _decayed(q["alpha"], state["i"]) + drive.to(torch.int64)
        u = i_new if self.current_order == "new" else state["i"]
        v = q["v_leak"] + _decayed(q["beta"], state["v"] - q["v_leak"]) + q["gain"] * u
        theta = q["threshold"] + _decayed(q["threshold_decay"], state["theta"] - q["threshold"])
        r = _decayed(q["refractory_decay"], state["r"])
        fired = (v - r >= theta) if self.comparison == ">=" else (v - r > theta)
        f = fired.to(torch.int64)
        if self.reset == "zero":
            v = torch.where(fired, q["v_reset"].expand_as(v), v)
        elif self.reset == "subtract":
            v = v - theta * f
        r = r + q["refractory_scale"] * theta * f
        theta = theta + q["threshold_step"] * f
        return fired.to(x.dtype), {"i": i_new, "v": v, "theta": theta, "r": r}


def _decayed(decay: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``decay / 4096 * y`` in Loihi's integers: ``y * decay >> 12`` rounded toward zero."""
    p = y * decay
    return torch.sign(p) * (torch.abs(p) >> 12)


class Izhikevich(Family, Threshold):
    r"""Izhikevich's two-variable neuron in its 2003 form (Norse's ``IzhikevichCell``).

    State: voltage ``v`` (``v_init``) and recovery ``u`` (``u_init``). One step with input
    ``x``, where ``rate`` is the step's ``dt / tau`` (Norse: ``fl(tau_inv * dt)``) and
    ``recovery_rate`` that times Izhikevich's ``a`` (Norse: ``fl(tau_inv * dt * a)``):

    1. ``v_new = v + rate * ((((sq * v**2 + mn * v) + bias) - u) + x)``
    2. ``u_new = u + recovery_rate * (coupling * v - u)``, with the voltage before step 1
    3. ``s = v_new - threshold > 0`` (``comparison=">"``) or ``>= 0``; the output is ``s``
    4. where ``s``: ``v_new = v_reset`` (Izhikevich's ``c``) and ``u_new = u_new + u_jump``
       (``d``)
    """

    rate: np.ndarray = array(doc="dt / tau of the voltage")
    sq: np.ndarray = array(0.04, doc="coefficient of v**2")
    mn: np.ndarray = array(5.0, doc="coefficient of v")
    bias: np.ndarray = array(140.0, doc="constant drive")
    recovery_rate: np.ndarray = array(doc="dt / tau times Izhikevich's a")
    coupling: np.ndarray = array(doc="Izhikevich's b: how u follows v")
    threshold: np.ndarray = array(30.0, doc="spike when v exceeds this")
    v_reset: np.ndarray = array(-65.0, doc="Izhikevich's c: the voltage after a spike")
    u_jump: np.ndarray = array(doc="Izhikevich's d: added to u at a spike")
    v_init: np.ndarray = array(-70.0, doc="voltage before the first step")
    u_init: np.ndarray = array(-14.0, doc="recovery before the first step")
    kernel: ClassVar[str | None] = "izhikevich"
    starts: ClassVar[dict[str, str | None]] = {"v": "v_init", "u": "u_init"}

    def step(self, p: dict, x: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, dict]:
        v, u = state["v"], state["u"]
        drive = p["sq"] * v**2 + p["mn"] * v + p["bias"] - u + x
        v_new = v + p["rate"] * drive
        u_new = u + p["recovery_rate"] * (p["coupling"] * v - u)
        s = self._fire(p, v_new, p["threshold"])
        v_new = torch.where(s > 0, p["v_reset"].expand_as(v_new), v_new)
        u_new = torch.where(s > 0, u_new + p["u_jump"], u_new)
        return s, {"v": v_new, "u": u_new}


class QIF(Family, SpikingFields):
    r"""Quadratic integrate-and-fire with an optional adaptation current (SpikingJelly's
    ``QIFNode``, and its ``IzhikevichNode``: a QIF with adaptation).

    State: voltage ``v`` (``v_init``) and adaptation ``w`` (``w_init``). One step with input
    ``x`` (``/`` is a float32 division):

    1. ``h = v + ((x + (a0 * (v - v_rest)) * (v - v_c)) - w) / tau``
    2. ``s = h - threshold >= 0`` (``comparison=">="``) or ``> 0``; the output is ``s``
    3. ``w = (w + (coupling * (h - v_rest) - w) / tau_w) + w_jump * s``, with ``h`` before
       the reset
    4. reset ``"zero"``: ``v = v_reset`` where ``s``, else ``h``; ``"subtract"``:
       ``v = h - s * threshold``

    With ``coupling = w_jump = 0`` and ``w_init = 0``, ``w`` stays 0 and step 1 is exactly
    SpikingJelly's QIF ``v + (x + a0 * (v - v_rest) * (v - v_c)) / tau``.
    """

    tau: np.ndarray = array(doc="membrane time constant in steps (divides the drive)")
    a0: np.ndarray = array(1.0, doc="coefficient of the quadratic")
    v_rest: np.ndarray = array(0.0, doc="rest potential (lower root of the quadratic)")
    v_c: np.ndarray = array(0.8, doc="critical potential (upper root of the quadratic)")
    tau_w: np.ndarray = array(1.0, doc="adaptation time constant in steps (divides)")
    coupling: np.ndarray = array(0.0, doc="subthreshold coupling of w to h - v_rest")
    w_jump: np.ndarray = array(0.0, doc="added to w at a spike")
    comparison: str = choice(">=", (">", ">="), doc="how h is compared to the threshold")
    reset: str = choice("zero", ("zero", "subtract"), doc="what a spike does to v")
    w_init: np.ndarray = array(0.0, doc="adaptation before the first step")
    kernel: ClassVar[str | None] = "qif"
    starts: ClassVar[dict[str, str | None]] = {"v": "v_init", "w": "w_init"}

    def check(self) -> None:
        for name in ("tau", "tau_w"):
            if (getattr(self, name) == 0).any():
                raise ParameterError("divides the drive, so it must not be 0", field=name)

    def step(self, p: dict, x: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, dict]:
        v, w = state["v"], state["w"]
        h = v + (x + p["a0"] * (v - p["v_rest"]) * (v - p["v_c"]) - w) / p["tau"]
        s = self._fire(p, h, p["threshold"])
        w = w + (p["coupling"] * (h - p["v_rest"]) - w) / p["tau_w"] + p["w_jump"] * s
        v = _reset(self.reset, h, s, p["v_reset"], p["threshold"])
        return s, {"v": v, "w": w}


class AlphaLIF(Family, Threshold):
    r"""A neuron driven by a second-order (alpha-shaped) synapse: snnTorch's ``Alpha``.

    State: excitatory current ``e``, inhibitory current ``h`` and voltage ``v`` (all 0), and
    the previous step's voltage ``v_prev``. One step with input ``x``:

    1. ``reset = v - threshold > 0`` (``comparison=">"``) or ``>= 0``, of the *previous*
       voltage: the reset happens in the step after the spike (snnTorch's ``reset_delay``)
    2. ``e_new = alpha * e + x``; ``h_new = beta * h - x``;
       ``v_new = scale * (e_new + h_new)``
    3. reset ``"zero"``: where ``reset``, ``e_new``, ``h_new`` and ``v_new`` are each set to
       ``x - x * 1`` of themselves, that is 0; ``"subtract"`` (snnTorch's form):
       ``e_new = e_new - threshold * reset``, ``h_new = h_new - (beta * h - x) * reset``,
       ``v_new = v_new - (-h) * reset``; ``"none"``: nothing
    4. ``s = v_new - threshold > 0`` (or ``>= 0``); the output is ``s``

    ``scale`` is snnTorch's ``fl(log(alpha) / (log(beta) - log(alpha)) + 1)`` as its float32
    logs compute it, stored as a value so that no logarithm is recomputed.
    """

    alpha: np.ndarray = array(doc="decay of the excitatory current per step")
    beta: np.ndarray = array(doc="decay of the inhibitory current per step")
    scale: np.ndarray = array(doc="gain of e + h into the voltage")
    reset: str = choice("zero", ("zero", "subtract", "none"),
                        doc="what the previous step's spike does to the state")
    kernel: ClassVar[str | None] = "alpha"
    starts: ClassVar[dict[str, str | None]] = {"e": None, "h": None, "v": None}

    def step(self, p: dict, x: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, dict]:
        e, h, v = state["e"], state["h"], state["v"]
        fired = self._fire(p, v, p["threshold"]).detach()
        e_new = p["alpha"] * e + x
        h_new = p["beta"] * h - x
        v_new = p["scale"] * (e_new + h_new)
        if self.reset == "zero":
            e_new, h_new, v_new = (e_new - e_new * fired, h_new - h_new * fired,
                                   v_new - v_new * fired)
        elif self.reset == "subtract":
            e_new = e_new - p["threshold"] * fired
            h_new = h_new - (p["beta"] * h - x) * fired
            v_new = v_new - (-h) * fired
        s = self._fire(p, v_new, p["threshold"])
        return s, {"e": e_new, "h": h_new, "v": v_new}


class SynapseFilter(Family):
    r"""SpikingJelly's ``layer.SynapseFilter``: a current that spikes set and that decays.

    State ``y`` (starts 0). One step with input ``x``:
    ``y = (y - ((1 - x) * y) * rate) + x``, output ``y``. For binary ``x`` this is
    ``y + 1`` on a spike and ``y - y * rate`` otherwise (``rate = 1/tau``).
    """

    spiking: ClassVar[bool] = False
    rate: np.ndarray = array(doc="1 / tau: the fraction of y lost per step without input")
    kernel: ClassVar[str | None] = "filter"
    starts: ClassVar[dict[str, str | None]] = {"y": None}

    def step(self, p: dict, x: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, dict]:
        y = state["y"] - (1.0 - x) * state["y"] * p["rate"] + x
        return y, {"y": y}


class AdExLIF(Family, Threshold):
    r"""Current-based adaptive exponential LIF in Norse's discretisation (``LIFAdExCell``; with
    ``coupling = jump = 0`` its ``LIFExCell``).

    State: current ``i`` (0), voltage ``v`` (``v_init``), adaptation ``a`` (0). One step with
    input ``x``; ``rate``, ``syn_rate``, ``ada_rate`` are ``dt / tau`` of voltage, current and
    adaptation (Norse: ``fl(dt * tau_inv)``), ``exp`` is torch's float32 exponential:

    1. ``j = i + x``
    2. ``e = delta_t * exp((v - threshold) / delta_t)``
    3. ``v_new = v + rate * ((((v_leak - v) + e) + j) - a)``
    4. ``i_new = j + (-syn_rate) * j``
    5. ``a_new = a + ada_rate * (coupling * (v - v_leak) - a)``, with ``v`` before step 3
    6. ``s = v_new - threshold > 0`` (``comparison=">"``) or ``>= 0``; the output is ``s``
    7. where ``s``: ``v_new = v_reset`` and ``a_new = a_new + jump``

    With ``coupling = jump = 0``, ``a`` stays 0 and step 3 is exactly ``LIFExCell``'s.
    """

    rate: np.ndarray = array(doc="dt / tau of the voltage")
    syn_rate: np.ndarray = array(doc="dt / tau of the current")
    ada_rate: np.ndarray = array(0.0, doc="dt / tau of the adaptation")
    delta_t: np.ndarray = array(0.5, doc="sharpness of the exponential")
    v_leak: np.ndarray = array(0.0, doc="rest potential")
    v_reset: np.ndarray = array(0.0, doc="voltage after a spike")
    coupling: np.ndarray = array(0.0, doc="subthreshold coupling of a to v - v_leak")
    jump: np.ndarray = array(0.0, doc="added to a at a spike")
    v_init: np.ndarray = array(0.0, doc="voltage before the first step")
    kernel: ClassVar[str | None] = "adex"
    starts: ClassVar[dict[str, str | None]] = {"i": None, "v": "v_init", "a": None}

    def check(self) -> None:
        if (self.delta_t == 0).any():
            raise ParameterError("divides the exponent, so it must not be 0", field="delta_t")

    def step(self, p: dict, x: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, dict]:
        v, i, a = state["v"], state["i"], state["a"]
        j = i + x
        e = p["delta_t"] * torch.exp((v - p["threshold"]) / p["delta_t"])
        v_new = v + p["rate"] * ((p["v_leak"] - v) + e + j - a)
        i_new = j + (-p["syn_rate"]) * j
        a_new = a + p["ada_rate"] * (p["coupling"] * (v - p["v_leak"]) - a)
        s = self._fire(p, v_new, p["threshold"])
        v_new = torch.where(s > 0, p["v_reset"].expand_as(v_new), v_new)
        a_new = a_new + p["jump"] * s
        return s, {"i": i_new, "v": v_new, "a": a_new}


class EIF(Family, SpikingFields):
    r"""Exponential integrate-and-fire in SpikingJelly's discretisation (``EIFNode``).

    State: voltage ``v`` (``v_init``). One step with input ``x`` (``/`` a float32 division,
    ``exp`` torch's float32 exponential):

    1. ``h = v + (((x + v_rest) - v) + delta_t * exp((v - theta_rh) / delta_t)) / tau``
    2. ``s = h - threshold >= 0`` (``comparison=">="``) or ``> 0``; the output is ``s``
    3. reset ``"zero"``: ``v = v_reset`` where ``s``, else ``h``; ``"subtract"``:
       ``v = h - s * threshold``
    """

    tau: np.ndarray = array(doc="membrane time constant in steps (divides the drive)")
    delta_t: np.ndarray = array(1.0, doc="sharpness of the exponential")
    theta_rh: np.ndarray = array(0.8, doc="rheobase: the exponential's centre")
    v_rest: np.ndarray = array(0.0, doc="rest potential")
    comparison: str = choice(">=", (">", ">="), doc="how h is compared to the threshold")
    reset: str = choice("zero", ("zero", "subtract"), doc="what a spike does to v")
    kernel: ClassVar[str | None] = "eif"
    starts: ClassVar[dict[str, str | None]] = {"v": "v_init"}

    def check(self) -> None:
        for name in ("tau", "delta_t"):
            if (getattr(self, name) == 0).any():
                raise ParameterError("divides, so it must not be 0", field=name)

    def step(self, p: dict, x: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, dict]:
        v = state["v"]
        drive = x + p["v_rest"] - v + p["delta_t"] * torch.exp((v - p["theta_rh"]) / p["delta_t"])
        h = v + drive / p["tau"]
        s = self._fire(p, h, p["threshold"])
        return s, {"v": _reset(self.reset, h, s, p["v_reset"], p["threshold"])}
