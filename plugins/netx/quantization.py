"""Quantisation of float IF/LIF/CubaLIF graphs to Loihi's fixed-point neuron."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

import hub
from hub.errors import UnsupportedError
from hub.loihi import DECAY_UNITY, LoihiCUBA
from hub_plugins.netx.accepts import one_value
from hub_plugins.netx.write import _chain


class QuantizationWarning(UserWarning):
    """A float graph was written to netx with ``strict=False``: the quantisation report."""


def _summary(report: dict[str, Any]) -> str:
    parts = []
    for name, layer in report["layers"].items():
        notes = "; ".join(layer["approximations"])
        parts.append(f"{name}: scale {layer['scale']:g}, weight error {layer['weight_error']:.3g}"
                     f", threshold error {layer['threshold_error']:.3g}, decay error "
                     f"{layer['decay_error']:.3g}{'; ' + notes if notes else ''}")
    if "agreement" in report:
        parts.append(f"outputs agree on {report['agreement']:.2%} of x")
    return "quantised for Loihi: " + " | ".join(parts)


def quantize(graph: hub.Graph, x: Any = None, *, weight_bits: int = 8) -> tuple[hub.Graph, dict]:
    """A Loihi fixed-point copy of a float LIF/IF/CubaLIF graph, and a report of what changed.

    Each neuron layer gets one integer scale ``k`` (a power of two, the largest that keeps its
    incoming weights within ``weight_bits`` signed bits): weights become ``round(w * gain * k)``
    (``gain * current_gain`` for CubaLIF), the threshold mantissa ``round(threshold * k)``,
    decays ``round((1 - beta) * 4096)`` and ``round((1 - alpha) * 4096)`` (an LIF's current
    is cleared every step: ``i_decay = 4096``; an IF keeps its voltage: ``v_decay = 0``). Only
    what Loihi's neuron can mean is converted: reset to zero at ``v_reset = 0``, no leak
    potential; ``>=`` becomes ``>`` (reported). The report has, per neuron, ``scale``,
    ``weight_error`` (largest absolute error of a weight, in float units),
    ``threshold_error``, ``decay_error``, the approximations made, and, when ``x`` is given, the
    spike agreement of the float and the quantised graph on ``x`` (``agreement``).
    """
    g = graph.flat()
    chain, rec = _chain(g)
    nodes = dict(g.nodes)
    report: dict[str, Any] = {"layers": {}}
    feeders: list[str] = []
    for name, node in chain:
        if isinstance(node, (hub.Linear, hub.Affine, hub.Conv2d)):
            feeders.append(name)
            continue
        if isinstance(node, (hub.Input, hub.Flatten, hub.SumPool2d)):
            continue
        if not isinstance(node, (hub.IF, hub.LIF, hub.CubaLIF)):
            raise UnsupportedError("quantize converts IF, LIF and CubaLIF neurons; not "
                                   f"{node.type}", node=name, field="type")
        layer = _quantize_layer(name, node, [*feeders, *([rec[name][0]] if name in rec else [])],
                                nodes, weight_bits)
        report["layers"][name] = layer
        feeders = []
    out = hub.Graph(nodes, g.edges, metadata=dict(g.metadata))
    if x is not None:
        x = torch.as_tensor(np.asarray(x, dtype=np.float32))
        a = hub.simulate(g, x)
        b = hub.simulate(out, x)
        report["agreement"] = float((a == b).double().mean())
        differ = (a != b).nonzero()
        report["first_divergence"] = differ[0].tolist() if len(differ) else None
    return out, report


def _quantize_layer(name: str, node: hub.Node, feeders: list[str], nodes: dict[str, hub.Node],
                    weight_bits: int) -> dict[str, Any]:
    notes = []
    if node.reset != "zero" or node.reset_timing != "same" or np.any(node.v_reset != 0):
        raise UnsupportedError("Loihi resets the voltage to zero in the spiking step",
                               node=name, field="reset")
    if node.spike_mode != "binary" or np.any(node.amplitude != 1):
        raise UnsupportedError("netx's Loihi neuron emits binary spikes", node=name,
                               field="spike_mode")
    if np.any(node.v_init != 0):
        raise UnsupportedError("Loihi's voltage starts at zero", node=name, field="v_init")
    if node.refractory:
        raise UnsupportedError("netx's LIF has no refractory period", node=name,
                               field="refractory")
    if isinstance(node, hub.CubaLIF) and node.current_order != "new":
        raise UnsupportedError("Loihi's voltage sees this step's current", node=name,
                               field="current_order")
    if getattr(node, "v_leak", np.zeros(())).any():
        raise UnsupportedError("Loihi's voltage decays to zero", node=name, field="v_leak")
    if node.comparison == ">=":
        notes.append("'>=' becomes Loihi's '>'")
    gains = ["gain", *(["current_gain"] if isinstance(node, hub.CubaLIF) else [])]
    gain = 1.0
    for field in gains:
        one_value(node, name, field, "quantize needs one gain per layer")
        gain *= float(np.asarray(getattr(node, field), dtype=np.float64).reshape(-1)[0])
    largest = max((np.abs(np.asarray(nodes[f].weight, dtype=np.float64)).max() for f in feeders),
                  default=0.0) * abs(gain)
    for f in feeders:
        if isinstance(nodes[f], (hub.Affine, hub.Conv2d)) and nodes[f].bias.any():
            largest = max(largest, float(np.abs(nodes[f].bias).max()) * abs(gain))
    limit = (1 << (weight_bits - 1)) - 1
    scale = 2.0 ** np.floor(np.log2(limit / largest)) if largest > 0 else 1.0
    one_value(node, name, "threshold", "netx takes one threshold per layer")
    threshold = np.asarray(node.threshold, dtype=np.float64)
    mant = int(np.round(float(threshold.reshape(-1)[0]) * scale))
    weight_error = 0.0
    for f in feeders:
        op = nodes[f]
        w = np.asarray(op.weight, dtype=np.float64) * gain * scale
        q = np.round(w)
        weight_error = max(weight_error, float(np.abs(q - w).max()) / scale)
        changes: dict[str, Any] = {"weight": q.astype(np.float32)}
        if isinstance(op, (hub.Affine, hub.Conv2d)):
            b = np.asarray(op.bias, dtype=np.float64) * gain * scale
            changes["bias"] = np.round(b).astype(np.float32)
            weight_error = max(weight_error, float(np.abs(np.round(b) - b).max()) / scale)
        nodes[f] = op.replace(**changes)
    beta = np.asarray(getattr(node, "beta", 1.0), dtype=np.float64)
    alpha = np.asarray(getattr(node, "alpha", 0.0), dtype=np.float64)
    v_decay = np.round((1 - beta) * DECAY_UNITY)
    i_decay = np.round((1 - alpha) * DECAY_UNITY)
    decay_error = float(max(np.abs(v_decay - (1 - beta) * DECAY_UNITY).max(),
                            np.abs(i_decay - (1 - alpha) * DECAY_UNITY).max())) / DECAY_UNITY
    decays = LoihiCUBA(i_decay=i_decay.astype(np.int64), v_decay=v_decay.astype(np.int64),
                       threshold=mant)  # the rounded decays: one per layer, as netx takes them
    for field in ("v_decay", "i_decay"):
        one_value(decays, name, field, "netx takes one decay per layer")
    nodes[name] = LoihiCUBA(i_decay=int(i_decay.reshape(-1)[0]),
                            v_decay=int(v_decay.reshape(-1)[0]), threshold=mant,
                            delay=node.delay)  # the same axonal delay: netx writes it exactly
    return {"scale": scale, "weight_error": weight_error,
            "threshold_error": abs(mant / scale - float(threshold.reshape(-1)[0])),
            "decay_error": decay_error, "approximations": notes}

