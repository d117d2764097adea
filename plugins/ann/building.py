"""The spiking graph: each layer's weights rescaled by the ``lambda`` of the ReLUs around it, IF
neurons in place of the ReLUs, the readout the options ask for."""

from __future__ import annotations

from typing import Any

import numpy as np

import hub
from hub.errors import UnsupportedError
from hub_plugins.ann.calibration import _DST, _Plan
from hub_plugins.ann.tracing import _Net, _node_name, _Step
from hub_plugins.torchnn.layers import import_layer

#: Node types the converter produces.
PRODUCES = frozenset({"Input", "Output", "Conv1d", "Conv2d", "Affine", "AvgPool2d", "MaxPool2d",
                      "Flatten", "Add", "IF", "Integrator"})


def _build(net: _Net, plan: _Plan, scales: dict[str, float], *, mode: Any, readout: str,
           comparison: str, v_init: float, reset_timing: str) -> hub.Graph:
    graph = hub.Graph(metadata={"ann": {
        "mode": mode if isinstance(mode, str) else float(mode), "readout": readout,
        "comparison": comparison, "v_init": v_init, "reset_timing": reset_timing,
        "input": "the analog input as a constant current at every step",
        "scales": {}}})
    graph.add("input", hub.Input(shape=net.in_shape))
    used, names = {"input"}, {"input": "input"}

    def add(name: str, node: hub.Node, sources: list[str]) -> str:
        base, k = name, 1
        while name in used:
            k += 1
            name = f"{base}_{k}"
        used.add(name)
        graph.add(name, node)
        for source in sources:
            graph.connect(source, name)
        return name

    def neuron() -> hub.IF:
        return hub.IF(threshold=1.0, comparison=comparison, reset="subtract",
                      reset_timing=reset_timing, v_init=v_init)

    def scale(unit: str) -> float:  # what a value of 1 in this unit is in the ANN
        return 1.0 if unit == "input" else scales[unit]

    def target(key: str) -> float:  # the scale of the layer a weighted value feeds
        d = plan.dest[key]
        return scales[d] if d != "output" else scales["output"] if plan.spiking_output else 1.0

    for key, step in net.steps.items():
        sources = [names[source] for source in step.inputs]
        if key in plan.dropped:
            names[key] = sources[0]
            continue
        if step.kind == "relu":
            names[key] = add(_node_name(step, "if"), neuron(), sources)
            graph.metadata["ann"]["scales"][names[key]] = scales[key]
        elif step.kind == "weight":
            unit = plan.unit[step.inputs[0]]
            w_mul = (1.0 if unit == _DST else scale(unit)) / target(key)
            names[key] = add(_node_name(step), _node(step, w_mul, 1.0 / target(key)), sources)
        elif step.kind == "add":
            joined = []
            for source, name in zip(step.inputs, sources):
                unit = plan.unit[source]
                ratio = 1.0 if plan.unit[key] != _DST or unit == _DST \
                    else scale(unit) / target(key)
                if ratio != 1.0:  # a branch with no weight layer: rescale it
                    shape = net.steps[source].shape[1:] if source != "input" else net.in_shape
                    name = add(f"{_node_name(step)}_{name}_scale",
                               _rescale(shape, ratio, step.name), [name])
                joined.append(name)
            names[key] = add(_node_name(step), hub.Add(), joined)
        else:
            names[key] = add(_node_name(step), _node(step, 1.0, 1.0), sources)

    last, unit = names[net.output], plan.unit[net.output]
    if plan.spiking_output:
        last = add(_node_name(net.steps[net.output], "if"), neuron(), [last])
        graph.metadata["ann"]["scales"][last] = scales["output"]
    elif readout == "integrate":  # in ANN units: gain 1; in a layer's rate: its scale
        last = add("readout", hub.Integrator(gain=1.0 if unit == _DST else scale(unit)), [last])
    add("output", hub.Output(), [last])
    return graph.validate()


def _rescale(shape: tuple[int, ...], ratio: float, where: str) -> hub.Node:
    """``y = ratio * x`` as a layer every torch target has: a per-channel (depthwise) 1x1
    convolution, or a diagonal ``Affine`` for vectors. Each output is one product ``w * x``
    plus zeros, so it is exactly ``ratio * x`` with ``ratio`` rounded to float32."""
    channels = shape[0]
    w = np.full(channels, ratio, dtype=np.float32)
    zero = np.zeros(channels, dtype=np.float32)
    if len(shape) == 1:
        return hub.Affine(weight=np.diag(w), bias=zero)
    if len(shape) == 2:
        return hub.Conv1d(weight=w.reshape(-1, 1, 1), bias=zero, groups=channels)
    if len(shape) == 3:
        return hub.Conv2d(weight=w.reshape(-1, 1, 1, 1), bias=zero, groups=channels)
    raise UnsupportedError(f"a skip connection of samples of shape {list(shape)} cannot be "
                           "rescaled; only [F], [C, L] and [C, H, W] activations", node=where)


def _node(step: _Step, w_mul: float, b_mul: float) -> hub.Node:
    """The step's node by the shared torch.nn mapping, a weight layer's weights normalised."""
    mod = step.module
    if step.kind == "weight":
        w = (mod.weight.detach().double().cpu().numpy() * w_mul).astype(np.float32)
        b = (mod.bias.detach().double().cpu().numpy() * b_mul).astype(np.float32)
        return import_layer(mod).replace(weight=w, bias=b)
    return import_layer(mod)
