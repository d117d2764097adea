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
delays, readouts and graphs that are not a chain. A ``">"`` comparison with a reset to
``v_reset`` becomes ``>=`` against the next float32 above the threshold: ``v > t`` and
``v >= nextafter(t)`` are the same test for every float32 ``v``, which is what SpikingJelly
computes in (its CPU kernels cast to float32); with a subtractive reset the threshold is also
what is subtracted, so ``">"`` is refused there.

Each exported module carries the canonical node it came from (attribute ``hub_node``), and the
model its input shape (``hub_input_shape``) and the graph's metadata (``hub_metadata``, with
``dt``): import uses the stored node when the module still computes exactly what that node
would export to, so hub -> SpikingJelly -> hub gives back identical parameters. ``BatchNorm``
(eval mode, running statistics) is folded into the convolution or linear layer before it, which
changes float rounding (float tier at best).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Iterator

import numpy as np

import hub
from hub.errors import FormatError, HubError, ParameterError, UnsupportedError
from hub.layout import as_input
from hub_plugins import spikingjelly_families, torch_trace
from hub_plugins.torch_layers import import_layer
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


class SpikingJellyFormat(hub.Format):
    name = "spikingjelly"
    aliases = ("sj",)
    description = "SpikingJelly 2.0 activation_based models (layer.*, neuron.*, torch.nn)"
    requires = ("spikingjelly", "torch")
    install_hint = "spikingjelly"
    load_options = ("input_shape",)
    save_options = ("step_mode",)
    exports = frozenset({"Input", "Output", "Add", "Affine", "Linear", "Conv1d",
                                   "Conv2d", "AvgPool2d", "SumPool2d", "MaxPool2d", "Flatten",
                                   "Delay", "IF", "LIF", "CubaLIF", "QIF", "SynapseFilter",
                                   "EIF"})
    imports = exports | torch_trace.TRACED | {"Vote"}
    #: The step mode ``export`` gives a model when no ``step_mode`` option is passed.
    step_mode = "m"

    def recognizes(self, obj: Any) -> bool:
        import torch.nn as nn

        return isinstance(obj, nn.Module) and any(
            type(m).__module__.startswith("spikingjelly.") for m in obj.modules())

    def load(self, obj: Any, input_shape: Any = None) -> hub.Graph:
        import torch.nn as nn

        if not isinstance(obj, nn.Module):
            raise FormatError(f"a SpikingJelly model is a torch.nn.Module, got "
                              f"{type(obj).__name__}")
        if _traced(obj):
            return torch_trace.import_model(obj, framework(), input_shape=input_shape,
                                            conventions=_conventions(obj)).graph
        graph = _import_model(obj, input_shape)
        torch_trace.prove_outputs(graph, lambda x: self.run(torch_trace.copy_model(obj).eval(), x))
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
    return not (isinstance(model, (base.MemoryModule, base.StepModule))
                or not any(True for _ in model.children()))


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
                is_neuron(module) or isinstance(module, (layer.Delay, layer.Dropout))):
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
        for name, child in module.named_children():
            for leaf in _leaves(child, _join(path, name), "s"):
                yield (*leaf[:2], None, "s")
        return
    if type(module) is nn.Sequential:
        for name, child in module.named_children():
            yield from _leaves(child, _join(path, name), inner)
        return
    mode = getattr(module, "step_mode", None) if _is_sj(module) else None
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
            _import_module(module, sees, name, nodes)
        except HubError as e:
            raise e.at(node=path or type(module).__name__)
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


def _import_module(module: Any, sees: str, name: str, nodes: list[tuple[str, Node]]) -> None:
    """Append the canonical node(s) of ``module`` to ``nodes`` (or fold it into the last)."""
    import torch.nn as nn

    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        _fold_batchnorm(module, sees, nodes)
        return
    meta = getattr(module, META, None)
    if isinstance(module, nn.Identity) and isinstance(meta, dict) and meta.get("type") == "Add":
        nodes.append((name, hub.Add()))  # an exported junction, kept so round trips match
        return
    container = spikingjelly_families.container_graph(
        module, lambda m: _module_node(m, "s"), spikingjelly_families.shape_after(nodes))
    if container is not None:
        nodes.append((name, container))
        return
    node = _module_node(module, sees)
    if node is None:
        return
    if isinstance(meta, dict):
        node = _stored(meta, node, sees)
    nodes.append((name, node))


def _stored(meta: dict, node: Node, sees: str) -> Node:
    """The stored canonical node if ``module`` is exactly what it exports to, else ``node``."""
    try:
        stored = hub.node_from_dict(meta)
        again = _export_node(stored, "s" if sees == "s" else "m")
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
    if kind in _CONVS or kind in _POOLS:
        if not per_sample:
            raise UnsupportedError(_plain_in_m(module), field="step_mode")
        return import_layer(module)
    if isinstance(module, nn.Flatten) and kind in (nn.Flatten, layer.Flatten):
        return import_layer(module, lead=1 if per_sample else 2)
    if kind is layer.Delay:
        return hub.Delay(delay=np.int64(module.delay_steps))
    if kind is layer.SynapseFilter:
        return spikingjelly_families.synapse_filter(module)
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
    return ("Linear, Conv1d, Conv2d, AvgPool2d, MaxPool2d, Flatten, BatchNorm1d/2d (folded), "
            "Dropout (eval), Identity, layer.Delay, and the neurons "
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


def _fold_batchnorm(bn: Any, sees: str, nodes: list[tuple[str, Node]]) -> None:
    """Fold an eval-mode BatchNorm into the convolution or linear layer right before it."""
    import torch

    kind = type(bn).__name__
    if bn.training:
        raise UnsupportedError(f"{kind} in training mode normalises with each batch's "
                               "statistics; call model.eval() to use the running ones",
                               field="training")
    if bn.running_mean is None or bn.running_var is None:
        raise UnsupportedError(f"{kind} without running statistics (track_running_stats="
                               "False) normalises with each batch's; it cannot be folded",
                               field="track_running_stats")
    if not _is_sj(bn) and sees == "m":
        raise UnsupportedError(_plain_in_m(bn), field="step_mode")
    prev = nodes[-1][1] if nodes else None
    if not isinstance(prev, (hub.Linear, hub.Affine, hub.Conv1d, hub.Conv2d)):
        after = f"the {prev.type} node {nodes[-1][0]!r}" if prev is not None else "the input"
        raise UnsupportedError(f"{kind} follows {after}; it can only be folded into a "
                               "Conv1d, Conv2d or Linear layer right before it",
                               field="type")
    out = prev.weight.shape[0]
    if bn.num_features != out:
        raise UnsupportedError(f"{kind} normalises {bn.num_features} channels but the layer "
                               f"before has {out}", field="num_features")
    with torch.no_grad():
        mean = bn.running_mean.double().cpu().numpy()
        var = bn.running_var.double().cpu().numpy()
        gamma = (bn.weight.double().cpu().numpy() if bn.weight is not None
                 else np.ones(out))
        beta = bn.bias.double().cpu().numpy() if bn.bias is not None else np.zeros(out)
    scale = gamma / np.sqrt(var + bn.eps)
    shape = (out,) + (1,) * (prev.weight.ndim - 1)
    weight = (prev.weight.astype(np.float64) * scale.reshape(shape)).astype(np.float32)
    bias = np.broadcast_to(getattr(prev, "bias", np.float32(0)), (out,)).astype(np.float64)
    bias = ((bias - mean) * scale + beta).astype(np.float32)
    name = nodes[-1][0]
    if isinstance(prev, (hub.Linear, hub.Affine)):
        nodes[-1] = (name, hub.Affine(weight=weight, bias=bias))
    else:
        nodes[-1] = (name, prev.replace(weight=weight, bias=bias))


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


def _conv_types() -> dict[type, Any]:
    import torch.nn as nn
    from spikingjelly.activation_based import layer

    return {nn.Conv1d: None, nn.Conv2d: None, layer.Conv1d: None, layer.Conv2d: None}


def _pool_types() -> dict[type, Any]:
    import torch.nn as nn
    from spikingjelly.activation_based import layer

    return {nn.AvgPool2d: None, nn.MaxPool2d: None, layer.AvgPool2d: None,
            layer.MaxPool2d: None}


_CONVS = _Lazy(_conv_types)
_POOLS = _Lazy(_pool_types)


# -- export ---------------------------------------------------------------------------------


def _export_graph(graph: hub.Graph, mode: str) -> Any:
    import torch.nn as nn

    flat, containers = spikingjelly_families.fold_containers(graph.flat(), mode)
    plan = flat.plan()
    chain = _chain(flat, plan)
    modules = []
    for name, node in chain:
        if name in containers:  # a recurrent container in the junction's place
            modules.append(containers[name])
            continue
        try:
            module = _export_node(node, mode)
        except HubError as e:
            raise e.at(node=name)
        if module is not None:
            setattr(module, META, node.to_dict())
            modules.append(module)
    model = nn.Sequential(*modules)
    setattr(model, INPUT_SHAPE, tuple(int(s) for s in flat.nodes[flat.inputs[0]].shape))
    setattr(model, GRAPH_META, dict(graph.metadata))
    return model


def _chain(flat: hub.Graph, plan: Any) -> list[tuple[str, Node]]:
    """The nodes from the input to the output, refusing anything that is not a chain."""
    for target, sources in plan.recurrent.items():
        if sources:
            raise UnsupportedError(f"a recurrent edge {sources[0]!r} -> {target!r}; an "
                                   "exported SpikingJelly model is a feed-forward nn.Sequential",
                                   node=target, field="edges")
    if len(flat.inputs) != 1 or len(flat.outputs) != 1:
        raise UnsupportedError(f"{len(flat.inputs)} inputs and {len(flat.outputs)} outputs; "
                               "an nn.Sequential has one of each", field="edges")
    successors: dict[str, list[str]] = {n: [] for n in flat.nodes}
    for target, sources in plan.forward.items():
        if len(sources) > 1:
            raise UnsupportedError(f"{len(sources)} edges meet here ({', '.join(sources)}); "
                                   "an exported SpikingJelly model is a chain (nn.Sequential)",
                                   node=target, field="edges")
        for source in sources:
            successors[source].append(target)
    out, name = [], flat.inputs[0]
    while True:
        out.append((name, flat.nodes[name]))
        nxt = successors[name]
        if len(nxt) > 1:
            raise UnsupportedError(f"its output goes to {len(nxt)} nodes ({', '.join(nxt)}); "
                                   "an exported SpikingJelly model is a chain (nn.Sequential)",
                                   node=name, field="edges")
        if not nxt:
            break
        name = nxt[0]
    if len(out) != len(flat.nodes):
        unreached = sorted(set(flat.nodes) - {n for n, _ in out})
        raise UnsupportedError(f"nodes {', '.join(unreached)} are not on the chain from the "
                               "input to the output", field="edges")
    return out


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


def _require(node: Node, field: str, wanted: Any, why: str) -> None:
    value = getattr(node, field)
    if isinstance(value, np.ndarray):
        same = bool((value == wanted).all())
    else:
        same = value == wanted
    if not same:
        shown = value.ravel()[0] if isinstance(value, np.ndarray) else value
        raise UnsupportedError(f"{field}={shown!r}: {why}", field=field)


def _spiking_kwargs(node: Node) -> dict[str, Any]:
    """v_threshold and v_reset of a spiking canonical node, refusing what SpikingJelly lacks."""
    _require(node, "reset_timing", "same", "SpikingJelly resets in the spiking step")
    _require(node, "spike_mode", "binary", "SpikingJelly's nodes emit binary spikes")
    _require(node, "amplitude", 1.0, "SpikingJelly's spikes are 1")
    _require(node, "refractory", 0, "SpikingJelly's IF/LIF nodes have no refractory period")
    _require(node, "delay", 0, "SpikingJelly's nodes have no axonal delay (a layer.Delay "
                               "after the neuron would be a different graph)")
    threshold = _uniform(node, "threshold")
    if node.reset == "none":
        raise UnsupportedError("SpikingJelly's nodes always reset (v_reset a value, or None "
                               "to subtract)", field="reset")
    if node.comparison == ">":
        if node.reset == "subtract":
            raise UnsupportedError("'>' with a subtractive reset: SpikingJelly compares with "
                                   ">= and subtracts the same threshold it compares with",
                                   field="comparison")
        # v > t is v >= (the next float32 above t), for every float32 v
        threshold = float(np.nextafter(np.float32(threshold), np.float32(np.inf)))
    v_reset = _uniform(node, "v_reset") if node.reset == "zero" else None
    return {"v_threshold": threshold, "v_reset": v_reset}


def _set_init(module: Any, node: Node) -> None:
    """Start the voltage at v_init where SpikingJelly's default start differs."""
    v_init = _uniform(node, "v_init")
    if module._memories_rv.get("v") != v_init:
        module.set_reset_value("v", v_init)
        module.v = v_init


def _export_if(node: Node, mode: str) -> Any:
    from spikingjelly.activation_based import neuron

    _require(node, "gain", 1.0, "SpikingJelly's IFNode adds its input unscaled")
    module = neuron.IFNode(**_spiking_kwargs(node), step_mode=mode)
    _set_init(module, node)
    return module


def _export_lif(node: Node, mode: str) -> Any:
    from spikingjelly.activation_based import neuron

    kwargs = _spiking_kwargs(node)
    beta = _uniform(node, "beta")
    if not 0 < beta < 1:
        raise UnsupportedError(f"beta={beta}: SpikingJelly's LIFNode needs tau = 1/(1-beta) "
                               "> 1, that is 0 < beta < 1", field="beta")
    tau = 1.0 / (1.0 - beta)
    gain = _uniform(node, "gain")
    if gain == 1.0:
        decay_input = False
    elif gain == float(np.float32(1.0 / tau)):
        decay_input = True
    else:
        raise UnsupportedError(f"gain={gain}: SpikingJelly's LIFNode scales its input by 1 "
                               f"(decay_input=False) or 1/tau = {np.float32(1.0 / tau)} "
                               "(decay_input=True)", field="gain")
    leak = kwargs["v_reset"] if kwargs["v_reset"] is not None else 0.0
    if _uniform(node, "v_leak") != leak:
        raise UnsupportedError(f"v_leak={_uniform(node, 'v_leak')}: SpikingJelly's LIFNode "
                               f"decays toward v_reset ({leak})", field="v_leak")
    module = neuron.LIFNode(tau=tau, decay_input=decay_input, **kwargs, step_mode=mode)
    _set_init(module, node)
    return module


def _export_cubalif(node: Node, mode: str) -> Any:
    from spikingjelly.activation_based import neuron

    kwargs = _spiking_kwargs(node)
    _require(node, "gain", 1.0, "CUBALIFNode adds its current unscaled")
    _require(node, "current_gain", 1.0, "CUBALIFNode adds its input unscaled")
    _require(node, "v_leak", 0.0, "CUBALIFNode decays toward 0")
    _require(node, "current_order", "new", "CUBALIFNode's voltage sees this step's current")
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
    from spikingjelly.activation_based import layer

    steps = int(_uniform(node, "delay", "layer.Delay"))
    return layer.Delay(steps, step_mode=mode)


def _unsupported(node: Node, mode: str) -> Any:
    raise UnsupportedError(f"SpikingJelly has no counterpart of {node.type}; exported types "
                           f"are {', '.join(sorted(SpikingJellyFormat.exports))}", field="type")


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
    "IF": _export_if,
    "LIF": _export_lif,
    "CubaLIF": _export_cubalif,
}


_EXPORTERS.update(spikingjelly_families.EXPORTERS)


def _export_node(node: Node, mode: str) -> Any:
    """The SpikingJelly module of one canonical node (``None`` for junctions)."""
    return _EXPORTERS.get(node.type, _unsupported)(node, mode)
