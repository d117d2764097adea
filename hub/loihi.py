r"""Loihi's fixed-point CUBA neuron: integer state, 12-bit decays, shifts that round toward zero.

:class:`LoihiCUBA` computes what Lava's bit-accurate LIF process model computes
(``lava.proc.lif.models.PyLifModelBitAcc``, lava-nc 0.10, the model that lava-dl's netx builds
for a ``CUBA`` neuron group under ``select_tag="fixed_pt"``), step for step, in integers.
With input ``a`` (the synaptic activation: the integer sum of the weights of the spikes that
arrived, see below), current ``u``, voltage ``v``, all integers:

1. ``u = rtz(u * (4096 - i_decay) / 4096)``, where ``rtz(p / 4096)`` is
   ``sign(p) * (|p| >> 12)``: the magnitude is shifted, so the division rounds toward zero
   (``AbstractPyLifModelFixed.subthr_dynamics``: ``np.sign(d) * np.right_shift(np.abs(d), 12)``).
   netx stores ``du = iDecay - 1`` and the model adds ``ds_offset = 1``, so the factor is
   ``4096 - iDecay``: ``i_decay = 0`` keeps the current, ``4096`` clears it every step.
2. ``u = u + (a << 6)``: the hardware left-shifts the synaptic input by ``act_shift = 6``.
3. ``u`` wraps to 24 bits as Lava writes it: ``u - 2**24`` where ``u > 2**23``, then
   ``u + 2**24`` where ``u <= -2**23``.
4. ``v = rtz(v * (4096 - v_decay) / 4096) + u + (bias << bias_exp)`` (``dm_offset = 0``; netx
   sets ``bias_exp = 6``), then ``v`` is clipped to ``[-(2**23 - 1), 2**23 - 1]``.
5. Spike where ``v > threshold << 6`` (``vth_shift = 6``; strictly greater, as
   ``PyLifModelBitAcc.spiking_activation``); spiking neurons' ``v`` is set to 0.

Two Loihi features that Lava's bit-accurate model leaves out (its docstring lists them as
missing) are fields here, in the hub's conventions, so that slayer and hardware descriptions
can be held: ``refractory`` (after a spike, for that many steps ``v`` is held at 0, no spike,
the current keeps integrating) and ``delay`` (the output leaves ``delay`` steps later).
``spike_mode="graded"`` emits ``v / 64`` (the voltage in threshold-mantissa units) instead of 1,
as slayer's ``graded_spike``; ``spike_mode="voltage"`` emits ``v / 64`` at every step (the
integrated voltage, before a spike's reset, whether it spikes or not): a voltage readout, as
slayer's ``Affine`` block with ``dynamics=True`` returns it (with a threshold of ``1 << 17`` or
more it never spikes, so never resets). netx's LIF emits binary spikes only, so its writer
refuses both.

Where the synapse arithmetic lives: Loihi weights are 8-bit mantissas with a per-layer exponent,
and the synapse delivers ``sum(w_mant << (weight_exp + shift)) >> shift``; for the weights netx
writes (``netx.utils.optimize_weight_bits``) that is exactly the integer sum of the stored
weights. So the layers before a ``LoihiCUBA`` (``Linear``, ``Conv2d``, ``SumPool2d``) hold the
integer weights and compute that sum exactly, and the neuron applies the ``<< 6``. The input
must therefore be integer: a non-integer input is refused at the step (quantise the weights
first, ``hub_plugins.netx.quantize``).

Integer exactness: the state is int64 tensors and every operation above is an integer
operation in torch (multiply, shift, compare), so the result does not depend on the simulation
dtype. The input arrives in the simulation's float dtype; sums of integer weights times integer
spikes are exact in float32 while below ``2**24``, which Loihi's 16-bit activations never reach.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from .errors import HubError, ParameterError
from .node import MAX_STEPS, Node, Shape, array, choice, integer
from .neurons import delayed
from .nodes import _per_element

#: 12-bit decays: a decay of ``DECAY_UNITY`` clears the state each step.
DECAY_SHIFT = 12
DECAY_UNITY = 1 << DECAY_SHIFT
#: The threshold mantissa and the synaptic input are shifted left by 6 bits.
VTH_SHIFT = 6
ACT_SHIFT = 6
#: ``u`` and ``v`` are 24-bit registers.
UV_BITS = 24
MAX_UV = 1 << (UV_BITS - 1)
#: Largest threshold mantissa accepted. Lava declares ``vth`` 17 bits but its Python models do
#: not enforce it, and netx files use ``1 << 17`` (netx's default) or ``2**18 - 1`` (slayer's
#: "never spikes"); above ``2**17`` the voltage, clipped to 24 bits, never reaches it.
MAX_VTH = (1 << 24) - 1


def shift_toward_zero(p: torch.Tensor, bits: int) -> torch.Tensor:
    """``p / 2**bits`` rounded toward zero, as Lava computes it: ``sign(p) * (|p| >> bits)``."""
    return torch.sign(p) * (torch.abs(p) >> bits)


class LoihiCUBA(Node):
    """Loihi's fixed-point current-based LIF neuron (module docstring: the exact step)."""

    stateful: ClassVar[bool] = True
    spiking: ClassVar[bool] = True
    i_decay: np.ndarray = array(dtype="int64", doc="current decay, 0 (none) to 4096 (full)")
    v_decay: np.ndarray = array(dtype="int64", doc="voltage decay, 0 (none) to 4096 (full)")
    threshold: np.ndarray = array(dtype="int64",
                                  doc="threshold mantissa: spikes where v > threshold << 6")
    bias: np.ndarray = array(0, dtype="int64", doc="bias mantissa, added to v as bias << bias_exp")
    bias_exp: int = integer(6, maximum=16, doc="bias exponent (netx uses 6)")
    refractory: int = integer(0, maximum=MAX_STEPS, doc="steps v is held at 0 after a spike")
    delay: int = integer(0, maximum=MAX_STEPS, doc="axonal delay of the output, in steps")
    spike_mode: str = choice("binary", ("binary", "graded", "voltage"),
                             doc="emit 1, or v / 64 (graded), where it spikes; or v / 64 at "
                                 "every step (voltage, a readout)")

    def check(self) -> None:
        for name in ("i_decay", "v_decay"):
            value = getattr(self, name)
            if value.size and (value.min() < 0 or value.max() > DECAY_UNITY):
                raise ParameterError(f"12-bit decays are 0 to {DECAY_UNITY}, got "
                                     f"{value.min()} to {value.max()}", field=name)
        if self.threshold.size and (self.threshold.min() < 0 or self.threshold.max() > MAX_VTH):
            raise ParameterError(f"the threshold mantissa is 0 to {MAX_VTH}, got "
                                 f"{self.threshold.min()} to {self.threshold.max()}",
                                 field="threshold")
        limit = 1 << 23
        if self.bias.size and np.abs(self.bias.astype(np.int64) << self.bias_exp).max() >= limit:
            raise ParameterError(f"bias << bias_exp must stay within 24 bits (below 2**23), "
                                 f"got up to {np.abs(self.bias).max()} << {self.bias_exp}",
                                 field="bias")

    def output_shape(self, input_shape: Shape | None) -> Shape:
        return _per_element(self, input_shape, "i_decay", "v_decay", "threshold", "bias")

    def initial_state(self, shape: tuple[int, ...], like: torch.Tensor) -> dict[str, Any]:
        zeros = torch.zeros(shape, dtype=torch.int64, device=like.device)
        state = {"u": zeros, "v": zeros.clone()}
        if self.refractory:
            state["r"] = zeros.clone()
        if self.delay:
            state["line"] = like.new_zeros((self.delay, *shape))
        return state

    def step(self, p: dict, x: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, dict]:
        rounded = torch.round(x)
        if not torch.equal(rounded, x):
            raise HubError("LoihiCUBA received a non-integer input: Loihi synapses deliver "
                           "integer sums of integer weights; quantise the weights first "
                           "(hub_plugins.netx.quantize)", field="input")
        a = rounded.to(torch.int64)
        u, v = state["u"], state["v"]
        u = shift_toward_zero(u * (DECAY_UNITY - p["i_decay"]), DECAY_SHIFT) + (a << ACT_SHIFT)
        # the 24-bit wrap exactly as PyLifModelBitAcc writes it (the second test sees the first)
        wrapped = torch.where(u > MAX_UV, u - 2 * MAX_UV, u)
        u = torch.where(wrapped <= -MAX_UV, u + 2 * MAX_UV, wrapped)
        integrated = (shift_toward_zero(v * (DECAY_UNITY - p["v_decay"]), DECAY_SHIFT) + u
                      + (p["bias"] << self.bias_exp))
        integrated = torch.clamp(integrated, -MAX_UV + 1, MAX_UV - 1)
        if self.refractory:
            resting = state["r"] > 0
            v = torch.where(resting, v, integrated)
        else:
            v = integrated
        fired = v > (p["threshold"] << VTH_SHIFT)
        if self.refractory:
            fired = fired & ~resting
        if self.spike_mode == "voltage":
            out = v.to(x.dtype) / (1 << VTH_SHIFT)
        elif self.spike_mode == "graded":
            out = torch.where(fired, v, torch.zeros_like(v)).to(x.dtype) / (1 << VTH_SHIFT)
        else:
            out = fired.to(x.dtype)
        new = {"u": u, "v": torch.where(fired, torch.zeros_like(v), v)}
        if self.refractory:
            new["r"] = torch.where(fired, torch.full_like(state["r"], self.refractory),
                                   torch.clamp(state["r"] - 1, min=0))
        if self.delay:
            out = delayed(out, state, new)
        return out, new
