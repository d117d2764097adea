"""Import: a SpikingJelly model, read from what its forward computes, or an exported one."""

from __future__ import annotations

import warnings
from typing import Any, Iterator

import numpy as np

import hub
from hub.errors import HubError, ParameterError, UnsupportedError
from hub.legalise import legalise_node
from hub.node import Node
from hub_plugins.torchnn import graph as torch_graph
from hub_plugins.torchnn import trace as torch_trace
from hub_plugins.spikingjelly import families as spikingjelly_families
from hub_plugins.spikingjelly.accepts import ACCEPTS
from hub_plugins.spikingjelly.common import (
    GRAPH_META,
    INPUT_SHAPE,
    META,
    SpikingJellyMetadataWarning,
    _containers,
    _is_sj,
)
from hub_plugins.spikingjelly.neurons import _NEURONS
from hub_plugins.torchnn.layers import (
    LAYERS,
    Bias,
    Scale,
    Threshold,
    import_layer,
    import_module,
    is_layer,
)

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
    from hub_plugins.spikingjelly.writing import _export_node  # which imports this module


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
