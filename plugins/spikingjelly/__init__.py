"""The ``spikingjelly`` format: SpikingJelly 2.0 ``activation_based`` models.

A SpikingJelly model is an ``nn.Sequential`` (nested ones, and SpikingJelly's
``SeqToANNContainer``/``MultiStepContainer``, are fine) of ``layer.*`` stateless layers, plain
``torch.nn`` layers and ``neuron.*`` nodes, in single-step (``"s"``, one ``[N, *]`` step per
call) or multi-step (``"m"``, the whole ``[T, N, *]`` sequence in one call) mode.

The neurons' updates, as the installed source computes them (``spikingjelly/_ops/lif/cpu.py``,
``_ops/if_/cpu.py``, ``_ops/plif/cpu.py``, ``_ops/reset.py``, ``functional/neuron.py``
``cuba_lif_step``, ``neuron/base_node.py``; float32 on the CPU kernels, Python-float parameters
rounded to float32 when they meet a float32 tensor), with ``vr = v_reset`` (0 for a soft reset)::

    IFNode, SimpleIFNode, HalfThresholdIFNode   h = v + x
    LIFNode(decay_input=True)                   h = v + (x - (v - vr)) / tau
    LIFNode(decay_input=False)                  h = v - (v - vr) / tau + x
    SimpleLIFNode(decay_input=True)             h = v + (vr - v + x) / tau
    SimpleLIFNode(decay_input=False)            h = v + (vr - v) / tau + x
    ParametricLIFNode (q = sigmoid(w), float32) h = v + (x - (v - vr)) * q   (decay_input)
                                                h = v - (v - vr) * q + x     (otherwise)
    CUBALIFNode                                 c = c * c_decay + x;  h = v * v_decay + c
    every node                                  s = h >= v_threshold  (heaviside: x >= 0)
                                                v = s * v_reset + (1 - s) * h  (v_reset a number)
                                                v = h - s * v_threshold        (v_reset None)

``detach_reset`` and ``store_v_seq`` change gradients and what is recorded, never the spikes. The
state starts at the memory's reset value: ``v_reset`` for a hard reset, 0 for a soft one (and
for every ``Simple*`` node), ``v_threshold / 2`` for ``HalfThresholdIFNode``, or whatever
``set_reset_value("v", ...)`` set.

Onto the canonical neurons (``hub.neurons``)::

    SpikingJelly                        canonical
    IFNode(v_threshold, v_reset)        IF(gain=1, threshold, comparison=">=",
                                           reset="zero", v_reset | reset="subtract")
    LIFNode(tau, decay_input, ...)      LIF(beta = 1 - 1/tau, gain = 1/tau | 1,
                                            v_leak = v_reset (0 for a soft reset), ...)
    ParametricLIFNode(w, ...)           LIF(beta = 1 - sigmoid(w), gain = sigmoid(w) | 1, ...),
                                           frozen at its current w
    CUBALIFNode(c_decay, v_decay, ...)  CubaLIF(alpha=c_decay, beta=v_decay, gain=1,
                                                current_gain=1, current_order="new", ...)
    memory reset value of v             v_init

Bit for bit: ``IF`` (``v + 1*x == v + x``) and ``CUBALIFNode`` (``0 + beta*(v - 0) + 1*u ==
v*v_decay + c``) compute the canonical update's exact float operations, so they agree with
``hub.simulate`` for any float32 values. ``LIFNode`` is a different float expression:
it agrees bit for bit when ``decay_input=False``, the reset is soft or to 0, and ``tau`` is a
power of two (then ``v/tau`` is exact and ``v - v/tau`` rounds the same real number as
``beta*v``), and whenever every intermediate is exact (the conformance suite's exact tier:
dyadic weights and inputs, ``tau`` in {2, 4}). Otherwise the two round differently and may
part only where a voltage sits within rounding of the threshold (a threshold tie).

Export makes the reverse choices and refuses, with :class:`hub.UnsupportedError` naming the node
and field, what SpikingJelly cannot express: per-neuron parameters (its are scalars), a gain
other than ``1`` or ``1/tau``, a rest potential other than the reset potential, ``reset="none"``,
reset in the next step, multi-spikes, graded spikes, amplitudes, refractory periods, axonal
delays and readouts. A chain exports as an ``nn.Sequential`` of modules named after its nodes;
any other graph as a :class:`~hub_plugins.spikingjelly.net.SpikingJellyNet` stepping the graph
(either step mode). In both, a recurrent layer or a neuron fed back its own output becomes
SpikingJelly's recurrent container in its place (:mod:`hub_plugins.spikingjelly.families`).
Layers SpikingJelly has no ``layer.*`` for come from the shared torch.nn
mapping (:mod:`hub_plugins.torchnn.layers`). A ``">"`` comparison with a reset to
``v_reset`` becomes ``>=`` against the next float32 above the threshold: ``v > t`` and
``v >= nextafter(t)`` are the same test for every float32 ``v``, which is what SpikingJelly
computes in (its CPU kernels cast to float32); with a subtractive reset the threshold is also
what is subtracted, so ``">"`` is refused there.

Each exported module carries the canonical node it came from (attribute ``hub_node``), and the
model its input shape (``hub_input_shape``) and the graph's metadata (``hub_metadata``, with
``dt``): import uses the stored node when the module still computes exactly what that node
would export to, so hub -> SpikingJelly -> hub gives back identical parameters. ``BatchNorm``
(eval mode, running statistics) imports as a ``BatchNorm`` node, exactly what torch computes."""

from __future__ import annotations
from typing import Any

import hub
from hub.errors import FormatError, ParameterError
from hub.layout import as_input
from hub_plugins.torchnn import trace as torch_trace
from hub_plugins.spikingjelly.accepts import ACCEPTS
from hub_plugins.spikingjelly.common import STEP_MODES
from hub_plugins.spikingjelly.common import SpikingJellyMetadataWarning  # noqa: F401  (public)
from hub_plugins.spikingjelly.neurons import lif_tau, plif_w  # noqa: F401  (public)
from hub_plugins.spikingjelly.reading import (_conventions, _import_model, _import_net, _is_net,
                                              _traced, framework, model_step_mode)
from hub_plugins.spikingjelly.writing import _export_graph
from hub_plugins.torchnn.layers import EXPORTED


class SpikingJellyFormat(hub.Format):
    name = "spikingjelly"
    aliases = ("sj",)
    description = "SpikingJelly 2.0 activation_based models (layer.*, neuron.*, torch.nn)"
    requires = ("spikingjelly", "torch")
    install_hint = "spikingjelly"
    load_options = ("input_shape",)
    save_options = ("step_mode",)
    exports = EXPORTED | frozenset({"IF", "LIF", "CubaLIF", "QIF", "SynapseFilter", "EIF"})
    imports = exports | torch_trace.TRACED | {"Vote"}
    accepts = ACCEPTS
    #: The step mode ``export`` gives a model when no ``step_mode`` option is passed.
    step_mode = "m"

    def recognizes(self, obj: Any) -> bool:
        import torch.nn as nn

        return isinstance(obj, nn.Module) and any(
            type(m).__module__.startswith(("spikingjelly.", __name__ + ".net"))
            for m in obj.modules())

    def load(self, obj: Any, input_shape: Any = None) -> hub.Graph:
        import torch.nn as nn

        if not isinstance(obj, nn.Module):
            raise FormatError(f"a SpikingJelly model is a torch.nn.Module, got "
                              f"{type(obj).__name__}")
        if _is_net(obj):
            graph = _import_net(obj)
        elif _traced(obj):
            return torch_trace.import_model(obj, framework(), input_shape=input_shape,
                                            conventions=_conventions(obj)).graph
        else:
            graph = _import_model(obj, input_shape)
        if len(graph.inputs) == 1:  # the proof runs one probe input
            torch_trace.prove_outputs(
                graph, lambda x: self.run(torch_trace.copy_model(obj).eval(), x))
        return graph

    def export(self, graph: hub.Graph, step_mode: str | None = None) -> Any:
        mode = self.step_mode if step_mode is None else step_mode
        if mode not in STEP_MODES:
            raise ParameterError(f"step_mode must be 's' (single-step) or 'm' (multi-step), "
                                 f"got {mode!r}", field="step_mode")
        return _export_graph(graph, mode)

    def run(self, native: Any, x: Any) -> Any:
        """Run ``native`` in SpikingJelly on ``x`` (``[T, N, *]``) in the model's own step mode:
        the whole sequence at once (``"m"``) or step by step (``"s"``), after ``reset_net``."""
        import torch
        from spikingjelly.activation_based import functional

        x = as_input(x)
        if _traced(native):  # a class of its own: called as its forward wants
            return torch_trace.run_native(native, framework(), x)
        mode = model_step_mode(native)
        functional.reset_net(native)
        try:
            with torch.no_grad():
                if mode == "m":
                    y = native(x)
                else:
                    y = torch.stack([native(x[t]) for t in range(x.shape[0])])
        finally:
            functional.reset_net(native)
        return y


@hub.hookimpl
def hub_register_formats(register) -> None:
    register(SpikingJellyFormat())
