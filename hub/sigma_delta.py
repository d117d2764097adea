r"""Sigma-delta neurons: graded spikes that carry the change of an activation.

A sigma-delta layer sends, instead of its activation ``a[t]``, the change ``a[t] - a[t-1]``
wherever that change is large enough, and its receiver sums the changes back up. These types
mirror the three processes of Lava's ``lava.proc.sdn`` (lava-nc 0.10), which netx builds for a
layer whose neuron ``type`` is ``SDNN``, and lava-dl slayer's ``neuron.sigma_delta`` with its
``dendrite.Sigma`` and ``axon.Delta``:

- :class:`SigmaDelta`: sigma decoder, activation and delta encoder (slayer's ``Dense``,
  ``Conv``, ``Pool`` ... blocks of ``block.sigma_delta``; netx's ``SigmaDelta`` process);
- :class:`Delta`: the delta encoder alone (slayer's sigma-delta ``Input`` block; the process
  netx builds for an ``input`` layer with an ``SDNN`` neuron);
- :class:`Sigma`: the sigma decoder alone, a non-spiking readout (slayer's sigma-delta
  ``Output`` block; netx's ``Sigma`` process for a neuron with ``sigma_output``);

plus :class:`Quantize`, the rounding onto a grid that slayer's ``quantize_8bit`` applies to an
``Input`` block's input.

Each has two arithmetics. ``arithmetic="float"`` is slayer's forward in float32, operation by
operation; ``"fixed"`` is Lava's bit-accurate integer model (``PySigmaDeltaModelFixed`` and
friends under ``Loihi2SimCfg(select_tag="fixed_pt")``), with int64 state. The two describe the
same network at different scales (``docs/lava.md``): slayer's values are Lava's divided by
``2**18`` inside a neuron and by ``2**12`` on the wire, so a slayer layer with weights ``w``,
threshold ``th`` and bias ``b`` is the fixed layer with weights ``64 * w``, threshold mantissa
``64 * th`` and bias mantissa ``64 * b``, while every float32 value stays exact. Nothing here
converts between the two: slayer's blocks import as ``"float"``, netx files as ``"fixed"``.

These types run on the reference step under every backend (no fused kernel computes them).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from .errors import HubError, ParameterError
from .families import Family
from .node import Node, Shape, array, choice, integer, number
from .nodes import _per_element

#: The activations slayer's sigma-delta neuron is built with that Lava's model knows:
#: ``ActivationMode.RELU`` and ``UNIT`` (no activation).
ACTIVATIONS = ("relu", "identity")


def _integers(x: torch.Tensor, node: str) -> torch.Tensor:
    rounded = torch.round(x.to(torch.float64))
    if not torch.equal(rounded, x.to(torch.float64)):
        raise HubError(f"a {node} with fixed arithmetic received a non-integer input: Lava's "
                       "fixed-point model takes integer graded spikes and integer synaptic sums "
                       "(integer weights)", field="input")
    return rounded.to(torch.int64)


def _mantissas(p: dict, names: tuple[str, ...], like: torch.Tensor) -> dict[str, torch.Tensor]:
    return {k: torch.round(torch.as_tensor(p[k], device=like.device).to(torch.float64)
                           ).to(torch.int64) for k in names}


class _Delta(Family):
    """The delta encoder's fields and step, shared by :class:`Delta` and :class:`SigmaDelta`."""

    abstract: ClassVar[bool] = True
    threshold: np.ndarray = array(doc="delta threshold: send where |change| >= threshold "
                                      "(fixed: a mantissa compared as threshold << 12)")
    cum_error: str = choice("off", ("off", "on"),
                            doc="'on': compare the error accumulated since the last send")
    resolution: float = number(1.0 / 4096,
                               doc="float: the output is floored to multiples of this (0: not)")
    spike_exp: int = integer(6, maximum=16, doc="fixed: Lava's spike_exp (netx: 6)")
    state_exp: int = integer(6, maximum=16, doc="fixed: Lava's state_exp (netx: 6)")
    arithmetic: str = choice("float", ("float", "fixed"),
                             doc="slayer's float32 forward, or Lava's fixed-point integers")

    def check(self) -> None:
        if self.threshold.size and (self.threshold < 0).any():
            raise ParameterError("the delta threshold must not be negative", field="threshold")
        if self.resolution < 0:
            raise ParameterError("the output resolution must be 0 (none) or positive",
                                 field="resolution")
        if self.arithmetic == "fixed":
            for name in self._MANTISSAS:
                value = np.asarray(getattr(self, name), dtype=np.float64)
                if value.size and np.any(value != np.round(value)):
                    raise ParameterError("fixed arithmetic takes integer mantissas", field=name)

    _MANTISSAS: ClassVar[tuple[str, ...]] = ("threshold",)

    def initial_state(self, shape: tuple[int, ...], like: torch.Tensor) -> dict[str, Any]:
        if self.arithmetic == "fixed":
            zeros = torch.zeros(shape, dtype=torch.int64, device=like.device)
        else:
            zeros = like.new_zeros(shape)
        state = {"act": zeros, "residue": zeros.clone()}
        if self.cum_error == "on":
            state["error"] = zeros.clone()
        return state

    def _delta(self, act: torch.Tensor, threshold: torch.Tensor, state: dict[str, Any]
               ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Steps 3-6 of :class:`SigmaDelta`: the unquantised output and the new state."""
        delta = act - state["act"] + state["residue"]
        new = {"act": act}
        if self.cum_error == "on":
            error = state["error"] + delta
            out = torch.where(torch.abs(error) >= threshold, delta, torch.zeros_like(delta))
            new["error"] = error * (1 - (torch.abs(out) > 0).to(error.dtype))
        else:
            out = torch.where(torch.abs(delta) >= threshold, delta, torch.zeros_like(delta))
        new["residue"] = delta - out
        return out, new

    def _send(self, out: torch.Tensor, p: dict, like: torch.Tensor) -> torch.Tensor:
        if self.arithmetic == "fixed":
            return (out >> self.state_exp).to(like.dtype)
        if self.resolution:
            step = torch.tensor(self.resolution, dtype=out.dtype, device=out.device)
            return torch.floor(out / step) * step
        return out


class SigmaDelta(_Delta):
    r"""A sigma-delta neuron: sigma decoder, bias, activation and delta encoder.

    State: the sum ``sigma`` of the inputs, the previous activation ``act``, the residue ``r``
    and, with ``cum_error="on"``, the error ``e`` (all start at 0). One step with input ``x``:

    1. ``sigma = sigma + x``
    2. ``a = activation(sigma + bias)`` (``relu``: ``max(., 0)``; ``identity``: unchanged)
    3. ``d = (a - act) + r``
    4. ``cum_error="off"``: ``y = d`` where ``|d| >= threshold``, else 0;
       ``"on"``: ``e = e + d``, ``y = d`` where ``|e| >= threshold``, else 0, and ``e = 0``
       where ``y != 0``
    5. ``r = d - y``; ``act = a``
    6. the output: ``floor(y / resolution) * resolution`` (``resolution = 0``: ``y``)

    ``arithmetic="float"`` is slayer's ``sigma_delta.Neuron`` forward in float32 (its
    ``Sigma``, ``bias`` (``set_bias``), activation, ``Delta`` and its ``quantize(...,
    step=1/s_scale, mode=FLOOR)``), except step 1: slayer's sigma is ``torch.cumsum``, which on
    the CPU accumulates in float64 and rounds each step's sum to float32; ``sigma`` is held the
    same way (float64, read as float32), on every device (torch's CUDA cumsum accumulates in
    float32, so slayer on a GPU can differ where the sums round).

    ``arithmetic="fixed"`` is Lava's ``PySigmaDeltaModelFixed`` (``lava/proc/sdn/models.py``)
    with the exponents netx gives it: ``x`` is the integer synaptic sum, ``bias`` and
    ``threshold`` are mantissas that the process scales by ``<< (spike_exp + state_exp)``
    (``SigmaDelta.__init__``), every state is an integer, and step 6 is ``y >> state_exp``
    (an arithmetic shift: floor). Lava declares 24-bit registers but its Python model does not
    wrap them, so neither does this.
    """

    bias: np.ndarray = array(0.0, doc="added to sigma before the activation (fixed: a mantissa "
                                      "scaled by << 12)")
    activation: str = choice("relu", ACTIVATIONS, doc="applied to sigma + bias")
    _MANTISSAS: ClassVar[tuple[str, ...]] = ("threshold", "bias")

    def initial_state(self, shape: tuple[int, ...], like: torch.Tensor) -> dict[str, Any]:
        state = super().initial_state(shape, like)
        dtype = torch.int64 if self.arithmetic == "fixed" else torch.float64
        state["sigma"] = torch.zeros(shape, dtype=dtype, device=like.device)
        return state

    def step(self, p: dict, x: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, dict]:
        if self.arithmetic == "fixed":
            q = _mantissas(p, ("threshold", "bias"), x)
            shift = self.spike_exp + self.state_exp
            sigma = state["sigma"] + _integers(x, self.type)
            act = sigma + (q["bias"] << shift)
            threshold = q["threshold"] << shift
        else:
            sigma = state["sigma"] + x.to(torch.float64)
            act = sigma.to(x.dtype) + p["bias"]
            threshold = p["threshold"]
        if self.activation == "relu":
            act = torch.relu(act)
        out, new = self._delta(act, threshold, state)
        new["sigma"] = sigma
        return self._send(out, p, x), new


class Delta(_Delta):
    r"""A delta encoder: sends the change of its input where it is large enough.

    State as :class:`SigmaDelta` without ``sigma``. One step with input ``x``: ``a = x``, then
    steps 3 to 6 of :class:`SigmaDelta`.

    ``arithmetic="float"`` is slayer's ``axon.Delta`` (the sigma-delta ``Input`` block's
    neuron, which runs neither sigma nor activation). ``"fixed"`` is Lava's
    ``PyDeltaModelFixed``, which netx builds for an ``input`` layer with an ``SDNN`` neuron:
    ``a = x << (spike_exp + state_exp)`` for an integer input ``x``, the threshold mantissa
    scaled the same way, and the output ``y >> state_exp``.
    """

    def step(self, p: dict, x: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, dict]:
        if self.arithmetic == "fixed":
            shift = self.spike_exp + self.state_exp
            act = _integers(x, self.type) << shift
            threshold = _mantissas(p, ("threshold",), x)["threshold"] << shift
        else:
            act, threshold = x, p["threshold"]
        out, new = self._delta(act, threshold, state)
        return self._send(out, p, x), new


class Sigma(Family):
    r"""A sigma decoder: outputs the running sum of its inputs, ``sigma = sigma + x``.

    ``arithmetic="float"`` is slayer's ``dendrite.Sigma`` (``torch.cumsum``: the sum kept in
    float64 and read as the input's float type); ``"fixed"`` is Lava's ``PySigmaModelFixed``
    (integer inputs, an integer sum). A non-spiking readout: slayer's sigma-delta ``Output``
    block, netx's neuron with ``sigma_output``.
    """

    spiking: ClassVar[bool] = False
    arithmetic: str = choice("float", ("float", "fixed"),
                             doc="slayer's float32 forward, or Lava's fixed-point integers")

    def output_shape(self, input_shape: Shape | None) -> Shape:
        return _per_element(self, input_shape)

    def initial_state(self, shape: tuple[int, ...], like: torch.Tensor) -> dict[str, Any]:
        dtype = torch.int64 if self.arithmetic == "fixed" else torch.float64
        return {"sigma": torch.zeros(shape, dtype=dtype, device=like.device)}

    def step(self, p: dict, x: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, dict]:
        if self.arithmetic == "fixed":
            sigma = state["sigma"] + _integers(x, self.type)
        else:
            sigma = state["sigma"] + x.to(torch.float64)
        return sigma.to(x.dtype), {"sigma": sigma}


class Quantize(Node):
    r"""Rounding onto a grid, then clamping: ``y = clamp(round(x / grid) * grid, low, high)``.

    ``round`` is torch's (half to even). This is slayer's ``quantize_8bit`` (``grid = 2 /
    w_scale``, ``low = -256 / w_scale``, ``high = 254 / w_scale``), which a sigma-delta ``Input``
    block applies to its input before the delta encoder.
    """

    grid: float = number(doc="grid spacing (positive)")
    low: float = number(doc="smallest output")
    high: float = number(doc="largest output")

    def check(self) -> None:
        if not self.grid > 0:
            raise ParameterError("the grid spacing must be positive", field="grid")
        if self.low > self.high:
            raise ParameterError("low must be at most high", field="low")

    def step(self, p: dict, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        grid = torch.tensor(self.grid, dtype=x.dtype, device=x.device)
        return torch.clamp(torch.round(x / grid) * grid, self.low, self.high), state
