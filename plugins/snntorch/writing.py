"""Export: a canonical graph as an :class:`~hub_plugins.snntorch.net.SnnTorchNet` of snnTorch
layers."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

import hub
from hub.errors import UnsupportedError
from hub.node import Node
from hub_plugins.torchnn import graph as torch_graph
from hub_plugins.snntorch import families as snntorch_families
from hub_plugins.snntorch.accepts import ACCEPTS, APPROXIMATED, _reset_delay
from hub_plugins.snntorch.common import _approximate, _t
from hub_plugins.snntorch.net import SnnTorchNet
from hub_plugins.torchnn.layers import EXPORTED, export_layer

# -- export ---------------------------------------------------------------------------------


def _export(graph: hub.Graph, strict: bool) -> SnnTorchNet:
    return SnnTorchNet(*torch_graph.layout(
        graph, lambda name, node, shape: _export_node(node, strict, shape)))


def _export_node(node: Node, strict: bool, input_shape: tuple[int, ...] | None = None
                 ) -> tuple[nn.Module | None, dict[str, Any]]:
    module, role = _export_module(node, strict, input_shape)
    shapes = {k: list(v.shape) for k, v in node.params().items() if isinstance(v, np.ndarray)}
    if shapes and module is not None:
        role["shapes"] = shapes
    return module, role


def _export_module(node: Node, strict: bool, input_shape: tuple[int, ...] | None = None
                   ) -> tuple[nn.Module | None, dict[str, Any]]:
    kind = node.type
    role: dict[str, Any] = {"type": kind}
    if node.operands:
        role["operands"] = True
    # what snnTorch cannot spell is refused here, as ACCEPTS declares it; the core's
    # legalisation has already rewritten what it could (hub.legalise)
    ACCEPTS.check(node, skip=() if strict else APPROXIMATED)
    if kind == "Threshold":
        import snntorch

        return snntorch.Leaky(beta=torch.tensor(0.0), threshold=_t(node.threshold),
                              reset_mechanism="none", init_hidden=True), role
    if isinstance(node, hub.Neuron):
        return _export_neuron(node, strict)
    if kind in EXPORTED:
        return export_layer(node, input_shape), role
    other = snntorch_families.export_neuron(node)
    if other is not None:
        return other, role
    raise UnsupportedError(f"snnTorch has no counterpart of {kind}", field="type")


def _export_neuron(node: Node, strict: bool) -> tuple[nn.Module, dict[str, Any]]:
    import snntorch

    kind = node.type
    role: dict[str, Any] = {"type": kind}
    if getattr(node, "current_order", "new") == "previous":
        role["previous"] = True  # the net delays the input one step: exact, see the docstring
    if not node.spiking:
        role["readout"] = True
        if kind == "CubaLI":
            return snntorch.Synaptic(alpha=_t(node.alpha), beta=_t(node.beta),
                                     reset_mechanism="none", init_hidden=True, output=True), role
        beta = _t(node.beta) if kind == "LI" else torch.tensor(1.0)
        return snntorch.Leaky(beta=beta, reset_mechanism="none", init_hidden=True,
                              output=True), role

    cuba = kind == "CubaLIF"
    if node.reset == "subtract" and node.reset_timing == "same":
        _approximate(strict, "snnTorch's same-step subtraction (reset_delay=False) "
                     "subtracts the threshold again in the step after a reset that left "
                     "the membrane above threshold; reset_timing='next' (snnTorch's "
                     "default reset_delay=True) converts exactly", "reset_timing")
    mechanism, delay = node.reset, _reset_delay(node)
    common = {"threshold": _t(node.threshold), "reset_mechanism": mechanism,
              "reset_delay": delay, "init_hidden": True}
    if cuba:
        neuron = snntorch.Synaptic(alpha=_t(node.alpha), beta=_t(node.beta), **common)
        neuron.graded_spikes_factor = _t(node.amplitude)  # Synaptic's constructor omits it
        return neuron, role
    beta = _t(node.beta) if kind == "LIF" else torch.tensor(1.0)  # IF: 1 * v is exact
    return snntorch.Leaky(beta=beta, graded_spikes_factor=_t(node.amplitude), **common), role
