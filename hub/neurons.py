r"""The neuron family: discrete-time neurons with every convention an explicit field.

Frameworks disagree on how a neuron is discretised; these types state each choice as a field so
that no conversion has to guess. One time step with input ``x``, state ``v`` (voltage), ``i``
(current, current-based neurons only) and ``s_prev`` (the previous step's spike count, before
``amplitude``) computes, in this order and with these float operations:

1. Current (``CubaLIF``, ``CubaLI``): ``i_new = alpha * i + current_gain * x``; the voltage is
   driven by ``u = i_new`` (``current_order="new"``) or ``u = i`` (``"previous"``, forward Euler).
   Other neurons: ``u = x``.
2. Reset of the previous spike, ``reset_timing="next"`` only (snnTorch's ``reset_delay``):
   ``reset="zero"`` sets ``v = v_reset`` where ``s_prev`` before the decay.
3. Integration: ``v = v_leak + beta * (v - v_leak) + gain * u`` (``IF`` and ``Integrator``:
   ``v = v + gain * u``). With ``v_leak = 0`` this is exactly ``beta * v + gain * u``.
4. ``reset_timing="next"`` with ``reset="subtract"``: ``v = v - threshold * s_prev``, undecayed.
5. Spike: ``s = v > threshold`` (``comparison=">"``) or ``v >= threshold`` (``">="``).
   ``spike_mode="multi"`` emits ``n`` spikes at once: the number of multiples ``k * threshold``
   (``k >= 1``) that ``v`` reaches (``">="``) or exceeds (``">"``), so ``floor(v / threshold)``
   for ``">="``, one less on an exact multiple for ``">"``, and 0 below threshold.
   ``"graded"`` emits the voltage ``v`` instead of 1. Every output is multiplied by
   ``amplitude``.
6. Reset, ``reset_timing="same"``: ``"zero"`` sets ``v = v_reset`` where it spiked,
   ``"subtract"`` sets ``v = v - threshold * s`` (``n * threshold`` for multi-spikes), ``"none"``
   leaves ``v``.
7. Refractory period: after a spike, for ``refractory`` steps, the voltage is held (steps 2-4
   skipped) and no spike is emitted; the current keeps integrating.
8. Axonal delay: the output leaves the neuron ``delay`` steps later.

The state starts at ``v = v_init``, ``i = 0``, no previous spike. Readouts (``LI``,
``Integrator``, ``CubaLI``) output ``v`` after step 3 and never spike. Every array parameter is
per neuron or a scalar broadcast to all.

Symbols: ``beta`` voltage decay per step, ``alpha`` current decay per step, ``gain`` input gain
into the voltage (snnTorch 1, SpikingJelly ``1/tau``, Norse ``dt/tau``), ``current_gain`` input
gain into the current, ``v_leak`` rest potential the voltage decays towards.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from .errors import ParameterError
from .node import MAX_STEPS, Node, Shape, array, choice, integer
from .nodes import _per_element
from .surrogate import spike


def delayed(out: torch.Tensor, state: dict[str, Any], new: dict[str, Any]) -> torch.Tensor:
    """Axonal delay: push ``out`` into the state's ``line`` (in ``new``) and return the output
    that entered it ``delay`` steps ago."""
    line = state["line"]
    new["line"] = torch.cat([line[1:], out.unsqueeze(0)])
    return line[0]


class Neuron(Node):
    """Shared fields and step of the neuron family; subclasses fix which parts are present."""

    abstract: ClassVar[bool] = True
    v_init: np.ndarray = array(0.0, doc="voltage before the first step")
    stateful: ClassVar[bool] = True
    spiking: ClassVar[bool] = True
    leaky: ClassVar[bool] = True
    current: ClassVar[bool] = False

    def output_shape(self, input_shape: Shape | None) -> Shape:
        names = [n for n, v in self.params().items() if isinstance(v, np.ndarray)]
        return _per_element(self, input_shape, *names)

    def check(self) -> None:
        if self.spiking:
            if self.spike_mode == "multi" and (self.threshold <= 0).any():
                raise ParameterError("multi-spike neurons need a positive threshold",
                                     field="threshold")
            if self.reset_timing == "next" and self.refractory:
                raise ParameterError("a refractory period needs reset_timing='same'",
                                     field="refractory")

    def initial_state(self, shape: tuple[int, ...], like: torch.Tensor) -> dict[str, Any]:
        zeros = like.new_zeros(shape)
        state = {"v": zeros + torch.tensor(np.array(self.v_init), dtype=like.dtype,
                                           device=like.device)}
        if self.current:
            state["i"] = zeros
        if self.spiking:
            state["s"] = zeros
            if self.refractory:
                state["r"] = torch.zeros(shape, dtype=torch.int32, device=like.device)
            if self.delay:
                state["line"] = like.new_zeros((self.delay, *shape))
        return state

    def step(self, p: dict, x: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, dict]:
        v, new = state["v"], {}
        if self.current:
            i_new = p["alpha"] * state["i"] + p["current_gain"] * x
            u = i_new if self.current_order == "new" else state["i"]
            new["i"] = i_new
        else:
            u = x
        if not self.spiking:
            new["v"] = self._integrate(p, v, u)
            return new["v"], new

        s_prev = state["s"]
        timing_next = self.reset_timing == "next"
        integrated = v
        if timing_next and self.reset == "zero":
            integrated = torch.where(s_prev > 0, p["v_reset"].expand_as(v), integrated)
        integrated = self._integrate(p, integrated, u)
        if timing_next and self.reset == "subtract":
            integrated = integrated - p["threshold"] * s_prev
        if self.refractory:
            resting = state["r"] > 0
            v = torch.where(resting, v, integrated)
        else:
            v = integrated

        s = spike(v - p["threshold"], self.comparison == ">=")
        if self.refractory:
            s = s * (~resting).to(s.dtype)
        count = s
        if self.spike_mode == "multi":
            th = p["threshold"]
            n = torch.floor(v / th)
            # the division may round across a multiple; the products settle it
            n = torch.where(n * th > v, n - 1, n)
            n = torch.where((n + 1) * th <= v, n + 1, n)
            if self.comparison == ">":  # exactly on a multiple does not count as crossing it
                n = torch.where(n * th == v, n - 1, n)
            count = s + (torch.clamp(n, min=1) * s - s).detach()
        out = count * v if self.spike_mode == "graded" else count
        out = out * p["amplitude"]
        new["s"] = count if timing_next else s

        if not timing_next:
            if self.reset == "subtract":
                v = v - p["threshold"] * count
            elif self.reset == "zero":
                v = torch.where(s > 0, p["v_reset"].expand_as(v), v)
        new["v"] = v
        if self.refractory:
            new["r"] = torch.where(s > 0, torch.full_like(state["r"], self.refractory),
                                   torch.clamp(state["r"] - 1, min=0))
        if self.delay:
            out = delayed(out, state, new)
        return out, new

    def _integrate(self, p: dict, v: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        if self.leaky:
            return p["v_leak"] + p["beta"] * (v - p["v_leak"]) + p["gain"] * u
        return v + p["gain"] * u


class Threshold(Node):
    """The fields of every spiking type: its firing threshold and how it is compared.

    A mixin outside the :class:`Neuron` hierarchy: the neuron family here and the other
    families (:mod:`hub.families`) both take their spiking fields from it and
    :class:`SpikingFields`.
    """

    abstract: ClassVar[bool] = True
    threshold: np.ndarray = array(1.0, doc="firing threshold")
    comparison: str = choice(">", (">", ">="), doc="how the voltage is compared to threshold")


class SpikingFields(Threshold):
    """:class:`Threshold`, what a spike does to the voltage, and where the voltage starts."""

    abstract: ClassVar[bool] = True
    reset: str = choice("zero", ("zero", "subtract", "none"), doc="what a spike does to v")
    v_reset: np.ndarray = array(0.0, doc="voltage after a reset='zero' spike")
    v_init: np.ndarray = array(0.0, doc="voltage before the first step")


class _SpikingFields(Neuron, SpikingFields):
    """The fields every spiking neuron declares, in one place."""

    abstract: ClassVar[bool] = True
    reset_timing: str = choice("same", ("same", "next"),
                               doc="reset in the spiking step, or in the next one undecayed")
    spike_mode: str = choice("binary", ("binary", "multi", "graded"))
    amplitude: np.ndarray = array(1.0, doc="every output is multiplied by this")
    refractory: int = integer(0, maximum=MAX_STEPS, doc="steps the voltage is held after a spike")
    delay: int = integer(0, maximum=MAX_STEPS, doc="axonal delay of the output, in steps")


class _CurrentFields(Neuron):
    """The fields of the current-based neurons: a decaying current drives a LI voltage."""

    abstract: ClassVar[bool] = True
    current: ClassVar[bool] = True
    alpha: np.ndarray = array(doc="current decay per step")
    beta: np.ndarray = array(doc="voltage decay per step")
    gain: np.ndarray = array(1.0, doc="gain of the current into the voltage")
    current_gain: np.ndarray = array(1.0, doc="gain of the input into the current")
    v_leak: np.ndarray = array(0.0, doc="rest potential")
    current_order: str = choice("new", ("new", "previous"),
                                doc="the voltage sees this step's current or the previous one")


class IF(_SpikingFields):
    """Integrate-and-fire: ``v = v + gain * x``, then spike and reset (module docstring)."""

    leaky: ClassVar[bool] = False
    gain: np.ndarray = array(1.0, doc="input gain")


class LIF(_SpikingFields):
    """Leaky integrate-and-fire: ``v = v_leak + beta * (v - v_leak) + gain * x``, spike, reset."""

    beta: np.ndarray = array(doc="voltage decay per step")
    gain: np.ndarray = array(1.0, doc="input gain")
    v_leak: np.ndarray = array(0.0, doc="rest potential")


class CubaLIF(_SpikingFields, _CurrentFields):
    """Current-based LIF: ``i = alpha * i + current_gain * x`` drives a LIF voltage."""


class LI(Neuron):
    """Leaky integrator readout: ``v = v_leak + beta * (v - v_leak) + gain * x``; outputs v."""

    spiking: ClassVar[bool] = False
    beta: np.ndarray = array(doc="voltage decay per step")
    gain: np.ndarray = array(1.0, doc="input gain")
    v_leak: np.ndarray = array(0.0, doc="rest potential")


class Integrator(Neuron):
    """Integrator readout: ``v = v + gain * x``; outputs v."""

    spiking: ClassVar[bool] = False
    leaky: ClassVar[bool] = False
    gain: np.ndarray = array(1.0, doc="input gain")


class CubaLI(_CurrentFields):
    """Current-based leaky integrator readout: a current drives an LI voltage; outputs v."""

    spiking: ClassVar[bool] = False
