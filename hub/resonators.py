r"""Resonate-and-fire neurons: a decaying rotation of a two-variable (real, imaginary) state.

:class:`Resonator` is the one canonical type of lava-dl slayer's four resonator families
(``rf``, ``rf_iz``, ``adrf``, ``adrf_iz``) and of Lava's ``RF`` and ``RF_IZ`` processes. Its
state is a complex voltage ``z = re + i im`` that each step rotates by the angle ``phi`` and
shrinks by ``1 - decay``: the two factors of the rotation are the node's fields
``sin_decay = (1 - decay) sin(phi)`` and ``cos_decay = (1 - decay) cos(phi)`` (slayer's
``period`` is ``2 pi / phi``; ``sinDecay``/``cosDecay`` in a netx file are these times 4096).

The input is the real and the imaginary input concatenated along the first axis of a sample:
for ``C`` neurons (channels) the node takes ``2C`` values (``C x H x W`` neurons take
``2C x H x W``), the first half driving ``re``, the second ``im``: slayer's complex synapses
(``synapse.real`` and ``synapse.imag``) are one ``Linear`` or ``Conv2d`` with the two weight
sets stacked.

How slayer's ``rf``, ``rf_iz``, ``adrf`` and ``adrf_iz`` neurons and Lava's processes map onto
the fields is in :class:`Resonator`'s docstring; the derivation is in ``docs/lava.md``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from .errors import HubError, ParameterError, ShapeError
from .families import Family, _decayed
from .node import Shape, _required, array, choice
from .surrogate import spike


class Resonator(Family):
    r"""Resonate-and-fire neuron with an optional adaptive threshold and refractory voltage.

    State: ``re`` and ``im`` (start 0), threshold ``theta`` (starts at ``threshold``) and
    refractory voltage ``r`` (0). One step with input ``x`` (``x_re``: its first half along
    the sample's first axis, ``x_im``: the second half):

    1. ``r = refractory_decay * r``
    2. ``theta = threshold + threshold_decay * (theta - threshold)``
    3. ``re_new = ((cos_decay * re) - (sin_decay * im)) + gain * x_re``
       ``im_new = ((sin_decay * re) + (cos_decay * im)) + gain * x_im``
    4. the spike, with ``bound = theta + r`` and ``>=`` (``comparison=">="``) or ``>``:
       ``spike_rule="phase"``: ``re_new >= bound`` and ``im_new >= 0`` and ``im < 0`` (the
       state crosses the positive real axis anticlockwise above the bound; ``im`` is the
       previous step's); ``"imag"``: ``im_new >= bound`` (Izhikevich's rule). The output is
       ``s``.
    5. ``reset="imag"``: where ``s``, ``re_new = 0`` and ``im_new = imag_reset``;
       ``"none"``: the state stays.
    6. ``r = r + (refractory_scale * theta) * s``; ``theta = theta + threshold_step * s``
    7. ``re = re_new``, ``im = im_new``

    With ``threshold_step = refractory_scale = 0`` (the defaults) ``theta`` stays at
    ``threshold`` and ``r`` at 0, so ``bound`` is ``threshold`` exactly: the plain RF and
    RF-Izhikevich neurons. Steps 1, 2 and 6 are :class:`hub.ALIF`'s adaptation, with its
    fields' names and meanings.

    ``arithmetic="fixed"`` is Loihi's fixed point, as slayer's resonator dynamics
    (``slayer/neuron/dynamics/resonator.py``, ``adaptive_resonator.py``,
    ``adaptive_phase_th.py``) and Lava's ``PyRFModelFixed`` / ``PyRF_IZModelFixed`` compute
    it: every state is an integer (int64), the four decays are multiples of ``1/4096`` and
    each product ``decay * y`` in steps 1 to 3 is ``(y * round(4096 * decay)) >> 12`` rounded
    toward zero (each of the four products of step 3 on its own); ``gain``, ``threshold``,
    ``threshold_step``, ``refractory_scale`` and ``imag_reset`` must be integers, and so must
    ``gain * x`` (``input_rounding="exact"``, the default: Lava's synaptic sums are integers),
    or it is rounded toward zero (``"toward_zero"``: slayer's ``(s_scale * x).to(int64)``,
    which matters where graded values, a sigma-delta block's output, reach a resonator
    block). ``"float"`` (the default) computes the steps in the input's float type as
    written (Lava's ``floating_pt`` models, with ``gain = 1``).

    The slayer families (``arithmetic="fixed"``, ``gain = 64``: the synaptic sum of weight
    mantissas shifted by 6 bits; ``threshold`` the threshold mantissa times 64; slayer's
    threshold and refractory decays ``d`` are ``threshold_decay = 1 - d`` and
    ``refractory_decay = 1 - d``):

    - ``rf`` (Lava ``RF``, netx ``RF_PHASE``): ``spike_rule="phase"``, ``reset="none"``;
    - ``rf_iz`` (Lava ``RF_IZ``, netx ``RF_IZHIKEVICH``): ``spike_rule="imag"``,
      ``reset="imag"``, ``imag_reset = threshold - 1``;
    - ``adrf``: ``"phase"``, ``"none"``, ``threshold_step`` its ``vThStep``,
      ``refractory_scale = 2``;
    - ``adrf_iz``: ``"imag"``, ``"none"`` (its state is not reset), the same adaptation.

    Lava clips ``re`` and ``im`` to ``[-(2**23 - 1), 2**23 - 1]`` after step 3; slayer does
    not, and neither does this node: the two agree while the state stays in 24 bits.
    """

    sin_decay: np.ndarray = array(doc="(1 - decay) * sin(phi): the rotation's sine factor")
    cos_decay: np.ndarray = array(doc="(1 - decay) * cos(phi): the rotation's cosine factor")
    gain: np.ndarray = array(1.0, doc="gain of the input into re and im")
    threshold: np.ndarray = array(1.0, doc="base threshold the adaptive one decays towards")
    spike_rule: str = choice("phase", ("phase", "imag"),
                             doc="spike on re at the phase crossing, or on im (Izhikevich)")
    comparison: str = choice(">=", (">", ">="), doc="how re (or im) is compared to theta + r")
    reset: str = choice("none", ("none", "imag"),
                        doc="state kept, or re = 0 and im = imag_reset at a spike")
    imag_reset: np.ndarray = array(0.0, doc="im after a spike, reset='imag'")
    threshold_decay: np.ndarray = array(1.0, doc="per-step decay of theta - threshold")
    threshold_step: np.ndarray = array(0.0, doc="increase of theta per spike")
    refractory_decay: np.ndarray = array(0.0, doc="per-step decay of the refractory voltage")
    refractory_scale: np.ndarray = array(0.0, doc="r grows by this times theta per spike")
    arithmetic: str = choice("float", ("float", "fixed"),
                             doc="float steps, or Loihi's integer steps with 12-bit decays")
    input_rounding: str = choice("exact", ("exact", "toward_zero"),
                                 doc="fixed arithmetic: gain * x must be an integer, or is "
                                     "rounded toward zero (slayer's graded input)")
    starts: ClassVar[dict[str, str | None]] = {"re": None, "im": None, "theta": "threshold",
                                               "r": None}
    _DECAYS: ClassVar[tuple[str, ...]] = ("sin_decay", "cos_decay", "threshold_decay",
                                          "refractory_decay")
    _INTEGERS: ClassVar[tuple[str, ...]] = ("gain", "threshold", "threshold_step",
                                            "refractory_scale", "imag_reset")

    def check(self) -> None:
        if self.arithmetic != "fixed":
            return
        for name in self._DECAYS:
            value = np.asarray(getattr(self, name), dtype=np.float64)
            low = -1 if name in ("sin_decay", "cos_decay") else 0
            if value.size and (value.min() < low or value.max() > 1
                               or np.any(value * 4096 != np.round(value * 4096))):
                raise ParameterError(f"fixed arithmetic takes decays that are multiples of "
                                     f"1/4096 in [{low}, 1]", field=name)
        for name in self._INTEGERS:
            value = np.asarray(getattr(self, name), dtype=np.float64)
            if value.size and np.any(value != np.round(value)):
                raise ParameterError("fixed arithmetic takes integer values", field=name)

    def output_shape(self, input_shape: Shape | None) -> Shape:
        shape = _required(input_shape, self)
        if not shape or shape[0] % 2:
            raise ShapeError(f"a Resonator takes its real and imaginary inputs concatenated "
                             f"along the first axis, so that axis is even; got {list(shape)}")
        out = (shape[0] // 2, *shape[1:])
        names = [n for n, v in self.params().items() if isinstance(v, np.ndarray)]
        for name in names:
            value = getattr(self, name)
            try:
                if np.broadcast_shapes(value.shape, out) != out:
                    raise ValueError
            except ValueError:
                raise ShapeError(f"shape {list(value.shape)} does not broadcast to the "
                                 f"neurons' shape {list(out)}", field=name) from None
        return out

    def initial_state(self, shape: tuple[int, ...], like: torch.Tensor) -> dict[str, Any]:
        state = super().initial_state(shape, like)
        if self.arithmetic == "fixed":
            state = {k: torch.round(v.to(torch.float64)).to(torch.int64) for k, v in state.items()}
        return state

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        half = x.shape[1] // 2
        return x[:, :half], x[:, half:]

    def _fires(self, value: torch.Tensor, bound: torch.Tensor, im_new: torch.Tensor,
               im: torch.Tensor) -> torch.Tensor:
        """Where the spike rule holds (booleans), without the surrogate."""
        fired = value >= bound if self.comparison == ">=" else value > bound
        if self.spike_rule == "phase":
            fired = fired & (im_new >= 0) & (im < 0)
        return fired

    def step(self, p: dict, x: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, dict]:
        if self.arithmetic == "fixed":
            return self._fixed_step(p, x, state)
        re, im = state["re"], state["im"]
        x_re, x_im = self._split(x)
        r = p["refractory_decay"] * state["r"]
        theta = p["threshold"] + p["threshold_decay"] * (state["theta"] - p["threshold"])
        re_new = p["cos_decay"] * re - p["sin_decay"] * im + p["gain"] * x_re
        im_new = p["sin_decay"] * re + p["cos_decay"] * im + p["gain"] * x_im
        bound = theta + r
        value = re_new if self.spike_rule == "phase" else im_new
        s = spike(value - bound, self.comparison == ">=")
        if self.spike_rule == "phase":
            s = s * ((im_new >= 0) & (im < 0)).to(s.dtype)
        if self.reset == "imag":
            fired = s > 0
            re_new = torch.where(fired, torch.zeros_like(re_new), re_new)
            im_new = torch.where(fired, p["imag_reset"].expand_as(im_new), im_new)
        r = r + (p["refractory_scale"] * theta) * s
        theta = theta + p["threshold_step"] * s
        return s, {"re": re_new, "im": im_new, "theta": theta, "r": r}

    def _fixed_step(self, p: dict, x: torch.Tensor, state: dict[str, Any]
                    ) -> tuple[torch.Tensor, dict]:
        q = {k: torch.round(torch.as_tensor(v, device=x.device).to(torch.float64)
                            * (4096 if k in self._DECAYS else 1)).to(torch.int64)
             for k, v in p.items() if k in self._DECAYS + self._INTEGERS}
        drive = p["gain"].to(torch.float64) * x.to(torch.float64)
        if self.input_rounding == "toward_zero":
            drive = torch.trunc(drive)
        elif not torch.equal(drive, torch.round(drive)):
            raise HubError("a Resonator with fixed arithmetic received an input whose "
                           "gain * x is not an integer", field="input")
        d_re, d_im = self._split(drive.to(torch.int64))
        re, im = state["re"], state["im"]
        r = _decayed(q["refractory_decay"], state["r"])
        theta = q["threshold"] + _decayed(q["threshold_decay"], state["theta"] - q["threshold"])
        re_new = _decayed(q["cos_decay"], re) - _decayed(q["sin_decay"], im) + d_re
        im_new = _decayed(q["sin_decay"], re) + _decayed(q["cos_decay"], im) + d_im
        fired = self._fires(re_new if self.spike_rule == "phase" else im_new, theta + r,
                            im_new, im)
        f = fired.to(torch.int64)
        if self.reset == "imag":
            re_new = torch.where(fired, torch.zeros_like(re_new), re_new)
            im_new = torch.where(fired, q["imag_reset"].expand_as(im_new), im_new)
        r = r + q["refractory_scale"] * theta * f
        theta = theta + q["threshold_step"] * f
        return fired.to(x.dtype), {"re": re_new, "im": im_new, "theta": theta, "r": r}
