r"""snnTorch's second-order neuron ``Alpha``, and what snnTorch offers that is refused.

``Alpha`` (``snntorch/_neurons/alpha.py``), one step with input ``x``, float32, decays clamped
to [0, 1] as every forward clamps them:

    reset = H(mem - threshold)                      (the previous step's membrane)
    e' = alpha*e + x ;  h' = beta*h - x
    scale = log(alpha) / (log(beta) - log(alpha)) + 1   (float32 logs, every step)
    mem' = scale * (e' + h')
    zero reset:      e' -= e'*reset ; h' -= h'*reset ; mem' -= mem'*reset
    subtract reset:  e' -= threshold*reset ; h' -= (beta*h - x)*reset ; mem' -= (-h)*reset
    spk = H(mem' - threshold) * graded_spikes_factor

which is the canonical ``AlphaLIF(alpha, beta, scale, threshold, comparison=">", reset)``
operation for operation, so it is exact for any float32 values. Export builds ``snn.Alpha``
and refuses, naming the field, a ``scale`` that snnTorch's logarithms do not give for the
node's ``alpha`` and ``beta``, and a ``">="`` comparison.

Refused by class and reason: ``SLSTM``, ``SConv2dLSTM`` (an LSTM cell's gates drive the
membrane: no discrete neuron family), ``SpikingNeuron`` subclasses the hub does not know, and
``Alpha`` with ``graded_spikes_factor != 1`` or a learnable surrogate whose forward is not the
Heaviside step (checked on a probe, as for every snnTorch neuron).
"""

from __future__ import annotations

import numpy as np
import torch

import hub
from hub.errors import UnsupportedError
from hub.node import Node

#: snnTorch classes refused whole, with why.
REFUSED = {
    "SLSTM": "an LSTM cell's gates (sigmoid and tanh of learned weights) drive its membrane, "
             "which no discrete neuron family expresses",
    "SConv2dLSTM": "a convolutional LSTM cell's gates drive its membrane, which no discrete "
                   "neuron family expresses",
}


def _f32(t: torch.Tensor) -> np.ndarray:
    return np.array(t.detach().cpu().float().numpy(), dtype=np.float32)


def _scale(alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """snnTorch's ``tau_alpha`` as its forward computes it (float32 logs)."""
    a, b = alpha.detach().float().clamp(0, 1), beta.detach().float().clamp(0, 1)
    return torch.log(a) / (torch.log(b) - torch.log(a)) + 1


def import_neuron(m: torch.nn.Module) -> list[tuple[str, Node]] | None:
    """The canonical node of a snnTorch neuron of these families (or a refusal); None else."""
    import snntorch

    kind = type(m).__name__
    if kind in REFUSED and type(m).__module__.startswith("snntorch"):
        raise UnsupportedError(f"snnTorch's {kind} is refused: {REFUSED[kind]}", field="type")
    if not isinstance(m, snntorch.Alpha):
        return None
    from hub_plugins.snntorch.reading import _check_neuron

    _check_neuron(m)
    if not np.all(_f32(torch.as_tensor(m.graded_spikes_factor)) == 1):
        raise UnsupportedError("graded spikes of an Alpha neuron have no canonical field",
                               field="graded_spikes_factor")
    reset = {"zero": "zero", "subtract": "subtract", "none": "none"}[m.reset_mechanism]
    alpha, beta = m.alpha.detach().float().clamp(0, 1), m.beta.detach().float().clamp(0, 1)
    return [("", hub.AlphaLIF(alpha=_f32(alpha), beta=_f32(beta), scale=_f32(_scale(alpha, beta)),
                              threshold=_f32(m.threshold), comparison=">", reset=reset))]


def export_neuron(node: Node) -> torch.nn.Module | None:
    """``snn.Alpha`` for an ``AlphaLIF``; None for other node types."""
    import snntorch

    if not isinstance(node, hub.AlphaLIF):
        if isinstance(node, hub.Family):
            raise UnsupportedError(f"snnTorch has no neuron computing {node.type}'s step",
                                   field="type")
        return None
    if node.comparison != ">":
        raise UnsupportedError("snnTorch spikes where the membrane exceeds the threshold (>)",
                               field="comparison")
    for field in ("alpha", "beta"):
        value = getattr(node, field)
        if ((value < 0) | (value > 1)).any():
            raise UnsupportedError("snnTorch clamps it to [0, 1]", field=field)
    alpha, beta = torch.as_tensor(np.array(node.alpha)), torch.as_tensor(np.array(node.beta))
    shape = np.broadcast_shapes(node.scale.shape, node.alpha.shape, node.beta.shape)
    if not np.array_equal(_f32(_scale(alpha, beta)), np.broadcast_to(node.scale, shape)):
        raise UnsupportedError("snnTorch computes the scale as log(alpha) / (log(beta) - "
                               "log(alpha)) + 1; this node's differs", field="scale")
    return snntorch.Alpha(alpha=alpha, beta=beta,
                          threshold=torch.as_tensor(np.array(node.threshold)),
                          reset_mechanism=node.reset, init_hidden=True)
