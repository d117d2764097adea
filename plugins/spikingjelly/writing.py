"""Export: a canonical graph as SpikingJelly modules (``nn.Sequential`` or
:class:`~hub_plugins.spikingjelly.net.SpikingJellyNet`), one exporter per node type."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable

import numpy as np

import hub
from hub.errors import UnsupportedError
from hub.legalise import ORIGINS
from hub.node import Node
from hub_plugins.torchnn import graph as torch_graph
from hub_plugins.spikingjelly import families as spikingjelly_families
from hub_plugins.spikingjelly.accepts import ACCEPTS
from hub_plugins.spikingjelly.common import GRAPH_META, INPUT_SHAPE, META, _containers, _is_sj
from hub_plugins.spikingjelly.neurons import ROUND_DIGITS, lif_tau, plif_w
from hub_plugins.torchnn.layers import EXPORTED, StepDelay, Threshold, export_layer

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
    from hub_plugins.spikingjelly import SpikingJellyFormat  # which imports this module

    ACCEPTS.check(node)
    if node.type in _EXPORTERS:
        return _EXPORTERS[node.type](node, mode)
    if node.type in EXPORTED:
        return export_layer(node, input_shape)
    raise UnsupportedError(f"SpikingJelly has no counterpart of {node.type}; exported types "
                           f"are {', '.join(sorted(SpikingJellyFormat.exports))}", field="type")
