"""The ``snntorch`` format: snnTorch models (``torch.nn.Module`` s holding snnTorch neurons).

Import takes an :class:`SnnTorchNet` (what export produces, read from its recorded structure)
or any other module, read from what its ``forward`` computes by the shared tracer
(:mod:`hub_plugins.torchnn.trace`): tutorial classes that loop over time with explicit state,
functional pooling and reshapes, ``nn.Sequential`` s of neurons with ``init_hidden=True``; the
import is proved against the model's own run. Export produces an :class:`SnnTorchNet`: the graph's
layers as ``torch.nn`` layers and its neurons as snnTorch neurons with ``init_hidden=True``, each
registered on the net under its node's name, and a forward that advances one time step.

Every neuron update below is derived from snnTorch 1.0.0's source
(``snntorch/_neurons/{neurons,leaky,synaptic,rleaky,rsynaptic,lapicque}.py``). With ``H(z)`` the
spike function (every snnTorch surrogate's forward pass is ``(z > 0).float()``), ``m`` the stored
membrane, ``c`` the stored synaptic current, ``x`` the input, ``th`` the threshold and ``g`` the
``graded_spikes_factor``, one forward call computes::

    r   = H(m - th)                      # the reset signal, from the *stored* membrane
    Leaky:     m' = clamp(beta,0,1)*m + x        - r*th            (subtract)
               m' = clamp(beta,0,1)*((1-r)*m) + x                  (zero: before integrating)
    Synaptic:  c' = clamp(alpha,0,1)*c + x ;  m' = clamp(beta,0,1)*m + c'
               m' = m' - r*th (subtract),  m' = m' - r*m' (zero: after integrating)
    RLeaky:    m' = (clamp(beta,0,1)*m + x) + rec(spk_prev), resets as Synaptic's
    RSynaptic: c' = (clamp(alpha,0,1)*c + x) + rec(spk_prev), then as Synaptic
    Lapicque:  m' = x*R*(1/(R*C))*dt + (1 - dt/(R*C))*m, resets as Synaptic's
    spk = H(m' - th) * g

and with ``reset_delay=False`` (Leaky, Synaptic, RLeaky) then ``m = m' - (spk/g - r)*th``
(subtract) or ``m = m' - (spk/g - r)*m'`` (zero); otherwise ``m = m'``. So, in canonical fields
(``comparison=">"``, ``gain=1``, ``current_gain=1``, ``v_leak=0``, ``v_reset=0``,
``amplitude=g``, ``current_order="new"``):

=====================================  =====================================================
snnTorch                               canonical neuron
=====================================  =====================================================
Leaky subtract, reset_delay=True       LIF reset="subtract", reset_timing="next"
Leaky zero, reset_delay=True           LIF reset="zero", reset_timing="next"
Leaky zero, reset_delay=False          LIF reset="zero", reset_timing="same"
Synaptic/RLeaky/RSynaptic/Lapicque     reset="zero", reset_timing="same", refractory=1: the
  zero, reset delayed                    step after a spike the membrane is zeroed *after*
                                         integrating, so it stays 0 and cannot spike
Synaptic/RLeaky zero, reset_delay=     reset="zero", reset_timing="same"
  False
any, reset_mechanism="none"            reset="none" (timing recorded from reset_delay)
subtract, reset_delay=False            not expressible: a reset that leaves m above th makes
                                         the next step subtract th again before testing the
                                         spike (``r`` is 1), so it equals a same-step
                                         subtraction only while no reset leaves m above th.
                                         Refused; ``strict=False`` converts it as
                                         reset_timing="same" with a warning
RLeaky / RSynaptic recurrence           a recurrent edge neuron -> rec -> neuron: ``Scale(V)``
                                         (one-to-one), ``Linear``/``Conv2d`` (all-to-all); the
                                         recurrent layer's bias, which snnTorch adds from the
                                         first step on, becomes a zero-weight Affine/Conv2d fed
                                         forward (a recurrent edge carries 0 at the first step)
Lapicque                               LIF with beta = 1 - dt/(R*C) and gain = R*(1/(R*C))*dt
                                         as snnTorch computes them in float32; exact when R and
                                         dt are powers of two (else refused, or approximated
                                         with ``strict=False``)
=====================================  =====================================================

RSynaptic's ``reset_delay=False`` has no effect in snnTorch 1.0.0 (its no-delay branch writes a
local variable), so it imports as the delayed reset. Rounding: RLeaky and RSynaptic add the
recurrent term after the input, ``(beta*m + x) + rec``, where the canonical neuron adds its summed
input, ``beta*m + (x + rec)``; ``nn.Conv1d/2d`` add their bias inside the convolution where the
canonical ``Conv`` adds it after. Both agree bit for bit on the exact tier's dyadic values and to
float32 rounding otherwise. Gradients: snnTorch detaches the reset signal, the hub's simulator
lets the surrogate gradient flow through it (spikes are the same).

Export maps back: LIF/IF (``beta=1``) -> Leaky, CubaLIF -> Synaptic, LI/Integrator (``beta=1``)
-> Leaky with ``reset_mechanism="none"`` and ``output=True`` read as its membrane, CubaLI ->
Synaptic likewise, Threshold -> Leaky with ``beta=0`` and no reset. ``current_order="previous"``
(NIR's forward Euler) is exact as a Synaptic whose input the net delays by one step. Refused
(:class:`hub.UnsupportedError` naming node and field): ``comparison=">="``, ``v_leak``,
``v_init``, ``v_reset`` other than 0, ``gain``/``current_gain`` other than 1, multi and graded
spikes, refractory periods (but the one above), axonal delays, decays outside [0, 1] (snnTorch
clamps them), negative thresholds (snnTorch's first reset signal would fire), LIF
``reset="zero"`` with refractory and CubaLIF ``reset="zero"`` with ``reset_timing="next"``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import hub
from hub.errors import FormatError
from hub.graph import check_dt
from hub.layout import as_input
from hub_plugins.torchnn import trace as torch_trace
from hub_plugins.snntorch.accepts import ACCEPTS, APPROXIMATED  # noqa: F401  (re-exported)
from hub_plugins.snntorch.common import SnnTorchApproximationWarning  # noqa: F401  (re-exported)
from hub_plugins.snntorch.net import SnnTorchNet
from hub_plugins.snntorch.reading import _import_net, framework
from hub_plugins.snntorch.writing import _export
from hub_plugins.torchnn.layers import EXPORTED
from hub_plugins.torchnn.layers import Scale  # noqa: F401  (re-exported: where it lived before)


# -- the format -----------------------------------------------------------------------------


class SnnTorchFormat(hub.Format):
    name = "snntorch"
    aliases = ("snn",)
    description = "snnTorch models (nn.Sequential or nn.Module with snnTorch neurons)"
    requires = ("snntorch",)
    install_hint = "snntorch"
    load_options = ("strict", "input_shape", "dt")
    save_options = ("strict",)
    exports = EXPORTED | frozenset({"Delay", "Threshold", "IF", "LIF", "CubaLIF", "LI", "AlphaLIF",
                                    "CubaLI", "Integrator"})
    imports = exports | torch_trace.TRACED
    accepts = ACCEPTS

    def recognizes(self, obj: Any) -> bool:
        import snntorch

        if isinstance(obj, SnnTorchNet):
            return True
        return isinstance(obj, nn.Module) and any(
            isinstance(m, snntorch.SpikingNeuron) for m in obj.modules())

    def load(self, obj: Any, strict: bool = True, input_shape: tuple[int, ...] | None = None,
             dt: float | None = None) -> hub.Graph:
        """Import ``obj``; ``dt`` (seconds per step, which snnTorch models do not record; its
        own NIR export assumes 1e-4) is stored in the graph for exports that need it (NIR)."""
        if not isinstance(obj, nn.Module):
            raise FormatError(f"expected a torch.nn.Module, got {type(obj).__name__}")
        if isinstance(obj, SnnTorchNet):
            graph = _import_net(obj, strict)
        else:
            graph = torch_trace.import_model(obj, framework(strict),
                                             input_shape=input_shape).graph
        if dt is not None:
            graph.metadata["dt"] = check_dt(dt, field="dt")
        return graph

    def export(self, graph: hub.Graph, strict: bool = True) -> SnnTorchNet:
        return _export(graph, strict)

    def run(self, native: nn.Module, x: Any) -> torch.Tensor:
        """Run ``native`` in snnTorch on ``x`` ``[T, N, *in]``: an :class:`SnnTorchNet` through
        its ``run``; another module (a copy) called as its forward wants, one call per step, one
        call on the sequence, or one call on a static input (``torch_trace.run_native``)."""
        x = as_input(x)
        with torch.no_grad():
            if isinstance(native, SnnTorchNet):
                return native.run(x)
            return torch_trace.run_native(native, framework(False), x)


@hub.hookimpl
def hub_register_formats(register) -> None:
    register(SnnTorchFormat())
