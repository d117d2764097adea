"""The ``norse`` format: Norse 1.1 models (``SequentialState``, ``nn.Sequential``, cells, graphs).

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
torch.nn mapping (:mod:`hub_plugins.torchnn.layers`); a ``Delay`` is its ``StepDelay`` and a
``Threshold`` spikes through Norse's SuperSpike (``heaviside``, ``z > 0``; ``>=`` as ``>`` on
the next float below, exactly). A chain exports as ``norse.torch.SequentialState`` of cells;
any other graph (skips, branches, concatenation, products, recurrence, nested subgraphs) as
:class:`NorseGraph`, which steps its modules as :mod:`hub_plugins.torchnn.graph` says (the
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
(Norse has no cell that does not leak)."""

from __future__ import annotations

from typing import Any

import torch

import hub
from hub_plugins.torchnn import trace as torch_trace
from hub_plugins.norse.accepts import ACCEPTS
from hub_plugins.norse.common import NORSE_DT, NorseApproximationWarning  # noqa: F401  (public)
from hub_plugins.norse.modules import NeuronCell, NorseGraph  # noqa: F401  (public)
from hub_plugins.norse.reading import framework, import_model  # noqa: F401  (public)
from hub_plugins.norse.runtime import run
from hub_plugins.norse.writing import export_graph
from hub_plugins.torchnn.layers import EXPORTED


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
