r"""The ``spikingjelly`` format: SpikingJelly 2.0 ``activation_based`` models.

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
mapping (:mod:`hub_plugins.torch_layers`). A ``">"`` comparison with a reset to
``v_reset`` becomes ``>=`` against the next float32 above the threshold: ``v > t`` and
``v >= nextafter(t)`` are the same test for every float32 ``v``, which is what SpikingJelly
computes in (its CPU kernels cast to float32); with a subtractive reset the threshold is also
what is subtracted, so ``">"`` is refused there.

Each exported module carries the canonical node it came from (attribute ``hub_node``), and the
model its input shape (``hub_input_shape``) and the graph's metadata (``hub_metadata``, with
``dt``): import uses the stored node when the module still computes exactly what that node
would export to, so hub -> SpikingJelly -> hub gives back identical parameters. ``BatchNorm``
(eval mode, running statistics) imports as a ``BatchNorm`` node, exactly what torch computes.
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from typing import Any, Callable, Iterator

import numpy as np

import hub
from hub.errors import FormatError, HubError, ParameterError, UnsupportedError
from hub.layout import as_input
from hub_plugins import torch_graph, torch_trace
from hub_plugins.spikingjelly import families as spikingjelly_families
from hub_plugins.torch_layers import (EXPORTED, LAYERS, Bias, Scale, StepDelay, Threshold,
                                      export_layer, import_layer, import_module, is_layer)
from hub.legalise import (ORIGINS, Accepts, equal, legalise_node, one_of, rule,
                          uniform)
from hub.node import Node

#: Attribute of an exported module holding the canonical node it was made from (plain data).
META = "hub_node"
#: Attribute of an exported model holding its input shape (one sample, no batch or time axis).
INPUT_SHAPE = "hub_input_shape"
#: Attribute of an exported model holding the graph's metadata (its ``dt``, for NIR).
GRAPH_META = "hub_metadata"
STEP_MODES = ("s", "m")


class SpikingJellyMetadataWarning(UserWarning):
    """A module's ``hub_node`` disagrees with what the module computes and was ignored."""


# -- what SpikingJelly accepts ------------------------------------------------------------------

_SPIKING = ("IF", "LIF", "CubaLIF")


def _leak_ok(n: Node) -> bool:
    rest = n.v_reset if n.reset == "zero" else 0.0
    return bool(np.all(n.v_leak == rest))


def _lif_gain_ok(n: Node) -> bool:
    flat_b, flat_g = np.ravel(n.beta), np.ravel(n.gain)
    if not (flat_b.size and flat_g.size and (flat_b == flat_b[0]).all()
            and (flat_g == flat_g[0]).all()):
        return True  # refused as per-neuron values by the 'uniform' rules
    return lif_tau(flat_b[0], flat_g[0]) is not None


#: What SpikingJelly's neurons compute (see the module docstring), per node type and field.
ACCEPTS = Accepts({
    tuple(sorted(EXPORTED)): (),
    _SPIKING: (
        one_of("comparison", ">=", why="SpikingJelly spikes where v - v_threshold >= 0"),
        one_of("reset_timing", "same", why="SpikingJelly resets in the spiking step"),
        one_of("spike_mode", "binary", why="SpikingJelly's nodes emit binary spikes"),
        equal("amplitude", 1, why="SpikingJelly's spikes are 1"),
        one_of("refractory", 0, why="SpikingJelly's IF/LIF nodes have no refractory period"),
        one_of("delay", 0, why="SpikingJelly's nodes have no axonal delay (a layer.Delay after "
               "the neuron would be a different graph)"),
        one_of("reset", "zero", "subtract", why="SpikingJelly's nodes always reset (v_reset a "
               "value, or None to subtract)"),
        uniform("threshold", why="SpikingJelly's neuron parameters are one value for all"),
        uniform("v_reset", why="SpikingJelly's neuron parameters are one value for all"),
        uniform("v_init", why="SpikingJelly's neuron parameters are one value for all"),
    ),
    "IF": (equal("gain", 1, why="IFNode adds its input unscaled"),),
    "LIF": (
        uniform("beta", why="LIFNode has one tau for all neurons"),
        uniform("gain", why="LIFNode has one tau for all neurons"),
        rule("beta", "in (0, 1): tau = 1/(1 - beta) > 1", lambda n: bool(
            np.all((n.beta > 0) & (n.beta < 1))), why="LIFNode decays by 1/tau"),
        rule("gain", "1 (decay_input=False) or 1/tau (decay_input=True)", _lif_gain_ok,
             why="LIFNode scales its input by one of these"),
        rule("v_leak", "v_reset (a hard reset) or 0 (a soft one)", _leak_ok,
             why="LIFNode decays toward v_reset"),
    ),
    "CubaLIF": (
        uniform("alpha", why="CUBALIFNode has one c_decay"),
        uniform("beta", why="CUBALIFNode has one v_decay"),
        equal("gain", 1, why="CUBALIFNode adds its current unscaled"),
        equal("current_gain", 1, why="CUBALIFNode adds its input unscaled"),
        equal("v_leak", 0, why="CUBALIFNode decays toward 0"),
        one_of("current_order", "new", why="CUBALIFNode's voltage sees this step's current"),
    ),
    # the families' exporters (spikingjelly_families) check their own fields
    ("QIF", "SynapseFilter", "EIF"): (),
}, topology="any", name="SpikingJelly", notes=[
    ("LIF is exported as LIFNode with the roundest tau that import reads back as the same beta "
     "and gain (SpikingJelly's own arithmetic); a gain no round tau gives, as a "
     "ParametricLIFNode")])


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
            type(m).__module__.startswith(("spikingjelly.", __name__ + "_net"))
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


# -- walking a model ------------------------------------------------------------------------


def _traced(model: Any) -> bool:
    """Whether ``model`` computes more than its containers say: a class of its own (a model
    zoo's or a user's) anywhere in it, whose ``forward`` only tracing reads."""
    import torch.nn as nn
    from spikingjelly.activation_based import base

    seq_to_ann, multi_step = _containers()
    if type(model) in (nn.Sequential, seq_to_ann, multi_step):
        return any(_traced(child) for child in model.children())
    return not (isinstance(model, (base.MemoryModule, base.StepModule)) or is_layer(model)
                or not any(True for _ in model.children()))


def _is_net(model: Any) -> bool:
    """Whether ``model`` is the hub's own export of a graph that is not a chain."""
    from hub_plugins.spikingjelly.net import SpikingJellyNet

    return isinstance(model, SpikingJellyNet)


def _conventions(model: Any) -> tuple[str, ...]:
    if model_step_mode(model) == "m":
        return ("sequence", "static", "step")
    return ("step", "sequence", "static")


def framework() -> Any:
    """SpikingJelly as the shared tracer sees it: neurons keep their state inside."""
    from spikingjelly.activation_based import base, functional, layer, neuron

    def is_neuron(module: Any) -> bool:
        return isinstance(module, (neuron.BaseNode, *spikingjelly_families.STATEFUL_LAYERS()))

    def piece(call: torch_trace.Call) -> torch_trace.Piece:
        other = spikingjelly_families.piece(call, lambda m: _module_node(m, "s"))
        if other is not None:
            return other
        if type(call.module) not in _NEURONS:
            raise UnsupportedError(f"SpikingJelly's {type(call.module).__name__} has no "
                                   f"canonical counterpart; {_supported()}", field="type")
        return torch_trace.Piece({"": _NEURONS[type(call.module)](call.module)})

    def refused(module: Any) -> str | None:
        why = spikingjelly_families.refusal(module)
        if why is not None:
            return why
        if isinstance(module, base.MemoryModule) and not (
                is_neuron(module) or _is_net(module)
                or isinstance(module, (layer.Delay, layer.Dropout))):
            return (f"SpikingJelly's {type(module).__name__} keeps state from step to step, "
                    "which no canonical node expresses")
        return None

    return torch_trace.Framework(
        "spikingjelly", is_neuron, piece, lambda m, args, kwargs: (args[0], None),
        {layer.VotingLayer: lambda m: hub.Vote(size=int(m.voting_size)),
         layer.Delay: lambda m: hub.Delay(delay=np.int64(m.delay_steps)),
         # its mask is drawn once per sequence in training, and it is the identity in eval()
         layer.Dropout: lambda m: None, layer.Dropout2d: lambda m: None},
        functional.reset_net, refused)


def _is_sj(module: Any) -> bool:
    return type(module).__module__.startswith("spikingjelly.")


def _containers() -> tuple[type, type]:
    from spikingjelly.activation_based import layer

    return layer.SeqToANNContainer, layer.MultiStepContainer


def model_step_mode(model: Any) -> str:
    """``"m"`` or ``"s"``: the step mode of the SpikingJelly modules in ``model``.

    Modules inside ``SeqToANNContainer``/``MultiStepContainer`` do not count (the container is
    multi-step). A model whose modules disagree is refused; one with none is single-step.
    """
    modes = {mode for _, _, mode, _ in _leaves(model, "", None)}
    modes.discard(None)
    if len(modes) > 1:
        raise UnsupportedError("the model mixes single-step and multi-step modules; set one "
                               "mode with spikingjelly.activation_based.functional."
                               "set_step_mode(model, 'm')", field="step_mode")
    return modes.pop() if modes else "s"


def _leaves(module: Any, path: str, inner: str | None) -> Iterator[tuple[str, Any, str | None,
                                                                            str | None]]:
    """``(path, module, its step mode, the mode of its container)`` for each leaf module.

    A leaf's own step mode is its ``step_mode`` attribute (SpikingJelly modules) or ``None``
    (plain torch modules); ``inner`` is ``"s"`` inside a SpikingJelly container, whose children
    see one step (or the time-flattened batch) at a time.
    """
    import torch.nn as nn

    seq_to_ann, multi_step = _containers()
    if isinstance(module, (seq_to_ann, multi_step)):
        yield path, module, "m", None  # the container itself takes [T, N, *]
        children = list(module.named_children())
        for name, child in children:
            # the only child of a container is named as the container (as export wraps it)
            inner_path = path if len(children) == 1 and path else _join(path, name)
            for leaf in _leaves(child, inner_path, "s"):
                yield (*leaf[:2], None, "s")
        return
    if type(module) is nn.Sequential:
        for name, child in module.named_children():
            yield from _leaves(child, _join(path, name), inner)
        return
    mode = getattr(module, "step_mode", None) if _is_sj(module) or _is_net(module) else None
    yield path, module, (mode if inner is None else None), inner


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


# -- import ---------------------------------------------------------------------------------


def _import_model(model: Any, input_shape: Any) -> hub.Graph:
    mode = model_step_mode(model)
    nodes: list[tuple[str, Node]] = []
    seq_to_ann, multi_step = _containers()
    for path, module, own, inner in _leaves(model, "", None):
        if isinstance(module, (seq_to_ann, multi_step)):
            continue
        name = path.replace(".", "_") or type(module).__name__.lower()
        # what one call of this module sees: one step [N, *] or the sequence [T, N, *]
        sees = inner or own or mode
        try:
            node = _container_node(module, spikingjelly_families.shape_after(nodes))
            if node is None:
                node = _leaf_node(module, sees)
        except HubError as e:
            raise e.at(node=path or type(module).__name__)
        if node is not None:
            nodes.append((name, node))
    shape = _input_shape(model, input_shape, nodes)
    meta = getattr(model, GRAPH_META, None)
    return hub.Graph.chain(("input", hub.Input(shape=shape)), *nodes,
                           metadata=dict(meta) if isinstance(meta, dict) else None)


def _input_shape(model: Any, given: Any, nodes: list[tuple[str, Node]]) -> tuple[int, ...]:
    if given is None:
        given = getattr(model, INPUT_SHAPE, None)
    if given is not None:
        try:
            return tuple(int(s) for s in given)
        except (TypeError, ValueError):
            raise ParameterError(f"expected a shape of integers, got {given!r}",
                                 field="input_shape") from None
    first = nodes[0][1] if nodes else None
    if isinstance(first, (hub.Linear, hub.Affine)):
        return (int(first.weight.shape[1]),)
    raise HubError("the model does not say its input shape (only a leading Linear layer "
                   "does): pass input_shape=(C, H, W), one sample without batch or time axes",
                   field="input_shape")


def _container_node(module: Any, shape: tuple[int, ...] | None) -> hub.Graph | None:
    """A recurrent container as its subgraph (``shape``: what enters it, which an
    ``ElementWiseRecurrentContainer`` does not say); ``None`` for any other module."""
    return spikingjelly_families.container_graph(module, lambda m: _module_node(m, "s"), shape)


def _leaf_node(module: Any, sees: str) -> Node | None:
    """The canonical node of one leaf module (its stored ``hub_node`` where the module computes
    exactly what that node exports to), ``None`` for one that does nothing at inference."""
    import torch.nn as nn

    meta = getattr(module, META, None)
    if isinstance(module, nn.Identity) and isinstance(meta, dict) and meta.get("type") == "Add":
        return hub.Add()  # an exported junction, kept so round trips match
    node = _module_node(module, sees)
    if node is not None and isinstance(meta, dict):
        node = _stored(meta, node, sees)
    return node


def _import_net(net: Any) -> hub.Graph:
    """The hub's own export of a graph: its layout, each module read as it is now."""

    def node_of(name: str, module: Any, role: dict) -> Node:
        if "container" in role:
            return _container_node(module, tuple(role["container"]))
        node = _leaf_node(module, "s")  # the net applies plain modules per sample
        if node is None:
            raise UnsupportedError(f"{type(module).__name__} passes its input through; an "
                                   "exported net holds no such module", field="type")
        return node

    graph = torch_graph.read(net, node_of)
    meta = getattr(net, GRAPH_META, None)
    if isinstance(meta, dict):
        graph.metadata.update(meta)
    return graph


def _stored(meta: dict, node: Node, sees: str) -> Node:
    """The stored canonical node if ``module`` is exactly what it exports to, else ``node``."""
    try:
        stored = hub.node_from_dict(meta)
        again = _export_node(legalise_node(stored, ACCEPTS), "s" if sees == "s" else "m", None)
        same = again is not None and _module_node(again, sees) == node
    except HubError:
        same = False
    if same:
        return stored
    warnings.warn(f"the module's {META!r} does not match what it computes (was it edited after "
                  "export?); using the module's own parameters", SpikingJellyMetadataWarning,
                  stacklevel=6)
    return node


def _module_node(module: Any, sees: str) -> Node | None:
    """The canonical node of one leaf module, ``None`` for one that does nothing at inference."""
    import torch.nn as nn
    from spikingjelly.activation_based import layer

    # SpikingJelly's stateless wrappers apply per sample in either step mode; a plain torch
    # layer given [T, N, *] sees the time axis as data
    per_sample = _is_sj(module) or sees == "s"
    kind = type(module)
    if kind in _NEURONS:
        return _NEURONS[kind](module)
    if isinstance(module, nn.Identity):
        return None
    if isinstance(module, (nn.Dropout, layer.Dropout)):
        if module.training and module.p > 0:
            raise UnsupportedError("dropout is active in training mode; call model.eval()",
                                   field="training")
        return None
    if isinstance(module, nn.Linear):
        return import_layer(module)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training:
        raise UnsupportedError(f"{kind.__name__} in training mode normalises with each batch's "
                               "statistics; call model.eval() to use the running ones",
                               field="training")
    if isinstance(module, nn.Flatten) and kind in (nn.Flatten, layer.Flatten):
        return import_layer(module, lead=1 if per_sample else 2)
    if kind is layer.Delay:
        return hub.Delay(delay=np.int64(module.delay_steps))
    if kind is layer.SynapseFilter:
        return spikingjelly_families.synapse_filter(module)
    if kind is layer.VotingLayer:
        if not per_sample:
            raise UnsupportedError(_plain_in_m(module), field="step_mode")
        return hub.Vote(size=int(module.voting_size))
    if isinstance(module, (nn.ReLU, Scale, Bias, Threshold)):  # elementwise: any layout
        return import_module(module)
    if is_layer(module) and not isinstance(module, nn.Flatten):
        if not per_sample:
            raise UnsupportedError(_plain_in_m(module), field="step_mode")
        return import_module(module)
    refused = spikingjelly_families.refusal(module)
    if refused is not None:
        raise UnsupportedError(refused, field="type")
    raise UnsupportedError(f"{kind.__module__}.{kind.__qualname__} has no canonical "
                           f"counterpart; supported are {_supported()}", field="type")


def _plain_in_m(module: Any) -> str:
    kind = type(module).__name__
    return (f"a plain torch.nn.{kind} in a multi-step model is given [T, N, ...] and fails or "
            f"mixes time into space; use spikingjelly's layer.{kind}(step_mode='m') or wrap it "
            "in layer.SeqToANNContainer")


def _supported() -> str:
    return (", ".join(t.__name__ for t in LAYERS) + ", VotingLayer, layer.Delay, the hub's "
            "own small modules (Scale, Bias, Reshape, Vote, Product, Concatenate, Threshold, "
            "StepDelay), and the neurons "
            f"{', '.join(sorted(c.__name__ for c in _NEURONS))}")


def _array(tensor: Any, field: str) -> np.ndarray:
    import torch

    value = tensor.detach().cpu()
    if value.dtype != torch.float32:
        raise UnsupportedError(f"parameters are {value.dtype}; the hub computes in float32: "
                               "call model.float() first", field=field)
    out = value.numpy().copy()
    if not np.isfinite(out).all():
        bad = int((~np.isfinite(out)).sum())
        raise ParameterError(f"NaN or infinite value in {bad} of {out.size} values", field=field)
    return out


# -- neurons --------------------------------------------------------------------------------


def _spiking(module: Any) -> dict[str, Any]:
    """The fields every SpikingJelly spiking node sets: threshold, reset and initial voltage."""
    from spikingjelly.activation_based import surrogate

    sg = getattr(module, "surrogate_function", None)
    if not isinstance(sg, surrogate.SurrogateFunctionBase) or not _is_sj(sg):
        raise UnsupportedError(f"surrogate_function {type(sg).__name__} is not one of "
                               "spikingjelly's; its forward may not be the heaviside step",
                               field="surrogate_function")
    if not sg.spiking:
        raise UnsupportedError("the surrogate function is in non-spiking mode "
                               "(set_spiking_mode(False)): it emits its smooth primitive, not "
                               "spikes; call set_spiking_mode(True)", field="surrogate_function")
    if getattr(module, "_neuron_precision", None) is not None:
        raise UnsupportedError("an explicit neuron precision (low-precision state, CUDA only) "
                               "is set", field="neuron_precision")
    v_reset = module.v_reset
    init = module._memories_rv.get("v")
    return {"threshold": _scalar(module.v_threshold, "v_threshold"),
            "comparison": ">=",
            "reset": "subtract" if v_reset is None else "zero",
            "v_reset": 0.0 if v_reset is None else _scalar(v_reset, "v_reset"),
            "v_init": _scalar(init, "v_init")}


def _scalar(value: Any, field: str) -> float:
    import torch

    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise UnsupportedError(f"a tensor of shape {list(value.shape)}; only one value for "
                                   "all neurons is supported", field=field)
        value = value.item()
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"expected a number, got {value!r}", field=field) from None
    if not math.isfinite(out):
        raise ParameterError(f"{out} is not a finite number", field=field)
    return out


def _leak(fields: dict[str, Any]) -> float:
    """SpikingJelly's LIF decays toward v_reset, or 0 with a soft reset."""
    return fields["v_reset"] if fields["reset"] == "zero" else 0.0


def _import_if(module: Any) -> Node:
    return hub.IF(gain=1.0, **_spiking(module))


def _lif_fields(module: Any, inv_tau: Any) -> dict[str, Any]:
    """beta and gain from ``1/tau`` (a float64, or SpikingJelly's float32 sigmoid(w))."""
    fields = _spiking(module)
    inv = np.float64(inv_tau)
    return {"beta": np.float32(1.0 - inv),
            "gain": np.float32(inv) if module.decay_input else np.float32(1.0),
            "v_leak": _leak(fields), **fields}


def _import_lif(module: Any) -> Node:
    tau = _scalar(module.tau, "tau")
    if tau < 1:
        raise UnsupportedError(f"tau={tau} < 1 makes the voltage overshoot its rest "
                               "potential (a negative decay)", field="tau")
    if type(module).__name__ == "SimpleLIFNode" and module.v_reset is None:
        raise UnsupportedError("SimpleLIFNode computes v_reset - v, which fails for "
                               "v_reset=None; use LIFNode for a soft reset", field="v_reset")
    return hub.LIF(**_lif_fields(module, 1.0 / tau))


def _import_plif(module: Any) -> Node:
    import torch

    w = module.w.detach().cpu().float()
    if w.numel() != 1:
        raise UnsupportedError(f"w of shape {list(w.shape)}; only one value is supported",
                               field="w")
    q = torch.sigmoid(w).item()  # float32, as SpikingJelly computes it
    return hub.LIF(**_lif_fields(module, q))


def _import_cubalif(module: Any) -> Node:
    fields = _spiking(module)
    if _scalar(module._memories_rv.get("c"), "c_init") != 0:
        raise UnsupportedError("the synaptic current starts away from 0", field="c_init")
    return hub.CubaLIF(alpha=_scalar(module.c_decay, "c_decay"),
                       beta=_scalar(module.v_decay, "v_decay"), gain=1.0, current_gain=1.0,
                       v_leak=0.0, current_order="new", **fields)


def _neuron_table() -> dict[type, Callable[[Any], Node]]:
    from spikingjelly.activation_based import neuron

    return {neuron.IFNode: _import_if, neuron.SimpleIFNode: _import_if,
            neuron.HalfThresholdIFNode: _import_if,
            neuron.LIFNode: _import_lif, neuron.SimpleLIFNode: _import_lif,
            neuron.ParametricLIFNode: _import_plif, neuron.CUBALIFNode: _import_cubalif,
            **spikingjelly_families.neuron_table()}


class _Lazy(dict):
    """A table filled on first use: the plugin imports SpikingJelly only when it is needed."""

    def __init__(self, fill: Callable[[], dict]) -> None:
        super().__init__()
        self._fill = fill

    def _ready(self) -> None:
        if not dict.__len__(self):
            self.update(self._fill())

    def __contains__(self, key: object) -> bool:
        self._ready()
        return dict.__contains__(self, key)

    def __getitem__(self, key: Any) -> Any:
        self._ready()
        return dict.__getitem__(self, key)

    def __iter__(self):
        self._ready()
        return dict.__iter__(self)


_NEURONS: dict[type, Callable[[Any], Node]] = _Lazy(_neuron_table)


# -- export ---------------------------------------------------------------------------------


def _export_graph(graph: hub.Graph, mode: str) -> Any:
    """An ``nn.Sequential`` for a chain, a :class:`SpikingJellyNet` for any other graph."""
    import torch.nn as nn

    origins = getattr(graph, ORIGINS, {})
    # recurrent containers, each in the place of a junction that stands for it
    flat, containers = spikingjelly_families.fold_containers(graph.flat(), mode)

    def export(name: str, node: Node, shape: tuple[int, ...] | None) -> tuple[Any, dict]:
        if name in containers:  # read back with the shape its subgraph's input has
            return containers[name], {"container": list(shape or ())}
        module = _export_node(node, mode, shape)
        if module is not None:
            # the node before the core's rewrites, which import gives back (see _stored)
            setattr(module, META, origins.get(name, node).to_dict())
        return module, {}

    modules, lay = torch_graph.layout(flat, export)
    # a StepDelay keeps its line itself, which neither reset_net nor a multi-step call of an
    # nn.Sequential knows: only a net steps and resets it
    if lay.is_chain() and not any(isinstance(m, StepDelay) for m in modules.values()):
        # named as the nodes, so that the graph comes back with its own names
        model = nn.Sequential(OrderedDict(
            (n, _in_mode(modules[n], mode)) for n in lay.line()[1:-1]))
    else:
        from hub_plugins.spikingjelly.net import SpikingJellyNet

        model = SpikingJellyNet(modules, lay, mode)
    setattr(model, INPUT_SHAPE, tuple(int(s) for s in lay.shapes[lay.inputs[0]]))
    setattr(model, GRAPH_META, dict(graph.metadata))
    return model


def _in_mode(module: Any, mode: str) -> Any:
    """A module of a chain as a multi-step ``nn.Sequential`` needs it: a plain torch module
    wrapped in ``SeqToANNContainer`` (time folded into the batch), an identity as it is."""
    import torch.nn as nn

    if mode == "s" or _is_sj(module) or isinstance(module, nn.Identity):
        return module
    seq_to_ann, _ = _containers()
    return seq_to_ann(module)


def _uniform(node: Node, field: str, what: str = "") -> float:
    """The one value of a per-neuron parameter, refusing differing values."""
    value = np.asarray(getattr(node, field))
    flat = value.ravel()
    if flat.size == 0:
        raise UnsupportedError("an empty parameter", field=field)
    if not (flat == flat[0]).all():
        raise UnsupportedError(f"{np.unique(flat).size} different values; SpikingJelly's "
                               f"{what or 'neuron'} parameters are one value for all neurons",
                               field=field)
    return float(flat[0])


def _spiking_kwargs(node: Node) -> dict[str, Any]:
    """v_threshold and v_reset of a spiking canonical node that ACCEPTS allows."""
    v_reset = _uniform(node, "v_reset") if node.reset == "zero" else None
    return {"v_threshold": _uniform(node, "threshold"), "v_reset": v_reset}


def _set_init(module: Any, node: Node) -> None:
    """Start the voltage at v_init where SpikingJelly's default start differs."""
    v_init = _uniform(node, "v_init")
    if module._memories_rv.get("v") != v_init:
        module.set_reset_value("v", v_init)
        module.v = v_init


def _export_if(node: Node, mode: str) -> Any:
    from spikingjelly.activation_based import neuron

    module = neuron.IFNode(**_spiking_kwargs(node), step_mode=mode)
    _set_init(module, node)
    return module


def lif_tau(beta: Any, gain: Any) -> tuple[float, bool] | None:
    """The ``(tau, decay_input)`` of the ``LIFNode`` that import reads as ``LIF(beta, gain)``,
    with the fewest significant digits, or ``None`` where there is none.

    Import computes ``beta = fl(1 - 1/tau)`` and ``gain = fl(1/tau)`` (or 1); many ``tau`` give
    the same pair, and SpikingJelly's own arithmetic divides by ``tau`` itself, so the roundest
    one (``3.0``, not ``2.9999999``) is the one a SpikingJelly model was built with: a model
    comes back bit for bit whatever its ``tau``.
    """
    b, g = np.float32(beta), np.float32(gain)
    decay_input = bool(g != 1)
    if not 0 < b < 1:
        return None
    seeds = [1.0 / (1.0 - float(b))] + ([1.0 / float(g)] if decay_input and g > 0 else [])
    for digits in range(1, 18):
        for seed in seeds:
            tau = float(f"{seed:.{digits}g}")
            if tau <= 1:
                continue
            inv = np.float64(1.0 / tau)
            if np.float32(1.0 - inv) == b and (np.float32(inv) == g or not decay_input):
                return tau, decay_input
    return None


#: A ``tau`` with more significant digits than this is no hand-written ``LIFNode``'s: such a
#: ``LIF(beta, gain=q)`` exports as a ``ParametricLIFNode`` with ``sigmoid(w) == q``.
ROUND_DIGITS = 7


def plif_w(q: Any) -> float | None:
    """A float32 ``w`` with ``sigmoid(w) == q`` as SpikingJelly computes it (float32), or
    ``None``: the ``ParametricLIFNode`` that import reads as ``gain = q``."""
    import torch

    q = float(np.float32(q))
    if not 0 < q < 1:
        return None
    w = torch.tensor(math.log(q / (1 - q)), dtype=torch.float32)
    up = down = w
    for _ in range(64):
        for candidate in (up, down):
            if float(torch.sigmoid(candidate)) == q:
                return float(candidate)
        up = torch.nextafter(up, torch.tensor(math.inf))
        down = torch.nextafter(down, torch.tensor(-math.inf))
    return None


def _export_lif(node: Node, mode: str) -> Any:
    import torch
    from spikingjelly.activation_based import neuron

    gain = _uniform(node, "gain")
    tau, decay_input = lif_tau(_uniform(node, "beta"), gain)
    digits = len(repr(tau).split("e")[0].replace(".", "").strip("0"))  # significant ones
    w = plif_w(gain) if decay_input and digits > ROUND_DIGITS else None
    if w is not None and np.float32(1.0 - np.float64(np.float32(gain))) == np.float32(
            _uniform(node, "beta")):
        # a trained ParametricLIFNode: its own arithmetic, (x - (v - v_reset)) * sigmoid(w)
        module = neuron.ParametricLIFNode(decay_input=True, **_spiking_kwargs(node),
                                          step_mode=mode)
        with torch.no_grad():
            module.w.copy_(torch.tensor(w))
    else:
        module = neuron.LIFNode(tau=tau, decay_input=decay_input, **_spiking_kwargs(node),
                                step_mode=mode)
    _set_init(module, node)
    return module


def _export_cubalif(node: Node, mode: str) -> Any:
    from spikingjelly.activation_based import neuron

    kwargs = _spiking_kwargs(node)
    module = neuron.CUBALIFNode(c_decay=_uniform(node, "alpha"),
                                v_decay=_uniform(node, "beta"), **kwargs)
    module.step_mode = mode
    _set_init(module, node)
    return module


def _export_linear(node: Node, mode: str) -> Any:
    import torch
    from spikingjelly.activation_based import layer

    out, inp = node.weight.shape
    bias = isinstance(node, hub.Affine)
    module = layer.Linear(inp, out, bias=bias, step_mode=mode)
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(np.array(node.weight)))
        if bias:
            module.bias.copy_(torch.from_numpy(np.broadcast_to(node.bias, (out,)).copy()))
    return module


def _export_conv(node: Node, mode: str) -> Any:
    import torch
    from spikingjelly.activation_based import layer

    cls = layer.Conv1d if isinstance(node, hub.Conv1d) else layer.Conv2d
    out = node.weight.shape[0]
    bias = bool((node.bias != 0).any()) or node.bias.shape != ()
    module = cls(node.weight.shape[1] * node.groups, out, tuple(node.weight.shape[2:]),
                 stride=node.stride, padding=node.padding, dilation=node.dilation,
                 groups=node.groups, bias=bias, step_mode=mode)
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(np.array(node.weight)))
        if bias:
            module.bias.copy_(torch.from_numpy(np.broadcast_to(node.bias, (out,)).copy()))
    return module


def _export_pool(node: Node, mode: str) -> Any:
    from spikingjelly.activation_based import layer

    args = dict(kernel_size=node.kernel_size, stride=node.stride, padding=node.padding,
                step_mode=mode)
    if isinstance(node, hub.MaxPool2d):
        return layer.MaxPool2d(**args)
    return layer.AvgPool2d(**args, count_include_pad=True,
                           divisor_override=1 if isinstance(node, hub.SumPool2d) else None)


def _export_flatten(node: Node, mode: str) -> Any:
    from spikingjelly.activation_based import layer

    def shift(d: int) -> int:  # SpikingJelly's Flatten counts the batch axis
        return d + 1 if d >= 0 else d

    return layer.Flatten(start_dim=shift(node.start_dim), end_dim=shift(node.end_dim),
                         step_mode=mode)


def _export_delay(node: Node, mode: str) -> Any:
    """``layer.Delay`` for one delay for all; the shared ``StepDelay`` for delays per element."""
    from spikingjelly.activation_based import layer

    delays = np.asarray(node.delay).ravel()
    if delays.size and (delays == delays[0]).all():
        return layer.Delay(int(delays[0]), step_mode=mode)
    return export_layer(node, None)


def _export_threshold(node: Node, mode: str) -> Any:
    """A Threshold spiking through SpikingJelly's sigmoid surrogate (``heaviside``: ``z >= 0``)."""
    import torch
    from spikingjelly.activation_based import surrogate

    return Threshold(torch.from_numpy(np.array(node.threshold, dtype=np.float32)),
                     node.comparison, surrogate.Sigmoid(), inclusive=True)


_EXPORTERS: dict[str, Callable[[Any, str], Any]] = {
    "Input": lambda n, m: None,
    "Output": lambda n, m: None,
    # on a chain a junction passes its one input on; it stays (as nn.Identity) so that the
    # graph comes back with the same nodes
    "Add": lambda n, m: __import__("torch").nn.Identity(),
    "Linear": _export_linear,
    "Affine": _export_linear,
    "Conv1d": _export_conv,
    "Conv2d": _export_conv,
    "AvgPool2d": _export_pool,
    "SumPool2d": _export_pool,
    "MaxPool2d": _export_pool,
    "Flatten": _export_flatten,
    "Delay": _export_delay,
    "Threshold": _export_threshold,
    "IF": _export_if,
    "LIF": _export_lif,
    "CubaLIF": _export_cubalif,
}


_EXPORTERS.update(spikingjelly_families.EXPORTERS)


def _export_node(node: Node, mode: str, input_shape: tuple[int, ...] | None) -> Any:
    """The SpikingJelly module of one canonical node (``None`` for Input and Output):
    SpikingJelly's own layer or neuron where it has one, else the shared torch.nn mapping."""
    ACCEPTS.check(node)
    if node.type in _EXPORTERS:
        return _EXPORTERS[node.type](node, mode)
    if node.type in EXPORTED:
        return export_layer(node, input_shape)
    raise UnsupportedError(f"SpikingJelly has no counterpart of {node.type}; exported types "
                           f"are {', '.join(sorted(SpikingJellyFormat.exports))}", field="type")
