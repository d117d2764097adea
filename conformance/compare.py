"""Comparing a runtime's output with the reference, the way each tier demands.

``exact`` and ``fixed``: every output entry must be bit-identical. ``float`` and ``paper``: an
entry agrees when it is equal within float32 rounding (``RTOL``, ``ATOL``, which only matters for
voltages and graded spikes; a spike is 0 or 1 either way). Where they disagree, the first
divergence is classified: it is a **threshold tie** when moving every threshold in the
reference by ``TIE_RTOL`` (up or down) reproduces the runtime's output at that step, that is, some
neuron sat within rounding of its threshold, so two correct implementations that round
differently may part there. Any other divergence is a bug. Divergences after the first follow
from it (the two runs' states differ from then on), so the first one decides.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

import hub

RTOL = 1e-5
ATOL = 1e-6
#: How far (relative) a threshold may move for a divergence to count as a tie: some hundred
#: float32 ulps, the rounding a few dozen steps of reordered sums can accumulate.
TIE_RTOL = 1e-5
EXACT_TIERS = ("exact", "fixed")


@dataclasses.dataclass
class Comparison:
    """How a runtime's output compares with the reference."""

    agree: bool
    agreement: float  # fraction of output entries that agree
    first: tuple[int, ...] | None = None  # [t, n, k] of the first divergence, by time
    tie: bool | None = None  # whether that divergence is a threshold tie (float tiers)
    detail: str = ""


def flat(y: Any) -> torch.Tensor:
    """Outputs as one ``[T, N, K]`` float64 tensor (several outputs side by side, by name)."""
    if isinstance(y, dict):
        return torch.cat([flat(y[k]) for k in sorted(y)], dim=2)
    y = torch.as_tensor(y).detach()
    return y.reshape(y.shape[0], y.shape[1], -1).to(torch.float64)


def compare(graph: hub.Graph, x: torch.Tensor, tier: str, reference: torch.Tensor,
            result: torch.Tensor) -> Comparison:
    """Compare ``result`` with ``reference`` (both from :func:`flat`) under ``tier``'s rules."""
    if result.shape != reference.shape:
        return Comparison(False, 0.0, detail=f"output shape {list(result.shape)}, expected "
                          f"{list(reference.shape)} ([T, N, outputs])")
    if tier in EXACT_TIERS:
        same = (result == reference) | (result.isnan() & reference.isnan())
    else:
        same = torch.isclose(result, reference, rtol=RTOL, atol=ATOL, equal_nan=True)
    agreement = float(same.double().mean()) if same.numel() else 1.0
    if bool(same.all()):
        return Comparison(True, agreement)
    first = tuple((~same).nonzero()[0].tolist())  # nonzero is row-major: the earliest step
    t, n, k = first
    got, want = result[first].item(), reference[first].item()
    detail = (f"first divergence at step {t}, sample {n}, output {k}: {got:g} instead of "
              f"{want:g}; {agreement:.2%} of entries agree")
    if tier in EXACT_TIERS:
        return Comparison(False, agreement, first, None, detail)
    tie = is_tie(graph, x, result, reference, t)
    detail += (" (a threshold tie)" if tie else
               " (not a threshold tie: no threshold within rounding explains it)")
    return Comparison(False, agreement, first, tie, detail)


def is_tie(graph: hub.Graph, x: torch.Tensor, result: torch.Tensor, reference: torch.Tensor,
           t: int) -> bool:
    """Whether the graph, run as it is and with its thresholds nudged up and down by rounding,
    gives both ``result`` and ``reference`` at step ``t`` (so which one a runtime computes is a
    matter of rounding at a threshold).

    Only the entries that differ at step ``t`` are checked, and the steps before it agreed. When
    the reference is the graph's own run this asks whether a nudge reproduces ``result``; when it
    is an original model's own run, whether the graph can reproduce that run at all.
    """
    differs = ~torch.isclose(result[t], reference[t], rtol=RTOL, atol=ATOL, equal_nan=True)
    runs = [flat(hub.simulate(graph, x))] + [flat(hub.simulate(nudge(graph, sign * TIE_RTOL), x))
                                             for sign in (1, -1)]

    def reproduced(target: torch.Tensor) -> bool:
        return any(run.shape == target.shape and bool(torch.isclose(
            run[t][differs], target[t][differs], rtol=RTOL, atol=ATOL).all()) for run in runs)

    return reproduced(result) and reproduced(reference)


def nudge(graph: hub.Graph, rel: float) -> hub.Graph:
    """``graph`` (flattened) with every threshold multiplied by ``1 + rel``."""
    flat_graph = graph.flat()
    out = hub.Graph(metadata=dict(flat_graph.metadata))
    for name, node in flat_graph.nodes.items():
        threshold = getattr(node, "threshold", None)
        if isinstance(threshold, np.ndarray) and threshold.dtype.kind == "f":
            moved = threshold.astype(np.float64) + np.abs(threshold.astype(np.float64)) * rel
            node = node.replace(threshold=moved.astype(threshold.dtype))
        out.add(name, node)
    for source, target in flat_graph.edges:
        out.connect(source, target)
    return out
