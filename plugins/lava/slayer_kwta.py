"""slayer's ``KWTA`` block (k winners take all) as the recurrent network it computes.

``block.base.AbstractKWTA.forward`` runs its neuron one step at a time (``persistent_state``)
on ``W s_in[t] + R s_out[t-1] + b``, where ``R = quantize_8bit((1 + a) I - 1)`` (self-excitation
``a``, clamped to ``[0, 1]``, on the diagonal and ``-1`` elsewhere, on slayer's 8-bit weight
grid) and ``b = quantize_8bit(threshold * (N - 2K) / N / w_scale)``, a constant input; then its
``delay_shift``. That is a ``Linear`` of ``W``, a ``Bias`` of ``b`` (where it is not 0) and the
block's neuron with a recurrent ``Linear`` of ``R`` on it: the graph of a ``Recurrent`` block
with a bias, with these fixed weights, in the same integer mantissas. The ``cuba`` and
``alif`` KWTA blocks run in lava-dl 0.6 and import this way; the resonator families' KWTA does
not run there (``slayer_resonators``). There is no KWTA block on the way back: a graph of this
shape exports as the ``Recurrent`` block that computes it where ``b`` is 0, and netx, whose
reader has no KWTA layer (slayer's ``export_hdf5`` writes nothing for one), gets a
``dense_rec`` layer the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

import hub
from hub_plugins.lava.slayer_import import _block_delay, _import_alif, _import_neuron, _weights


def import_kwta(block: Any, family: str, keep_shift: bool
                ) -> tuple[list[tuple[str, hub.Node]], list[tuple[str, hub.Node, str]]]:
    """The nodes of a cuba or alif ``KWTA`` block, and its recurrent synapse."""
    neuron = block.neuron
    if getattr(block, "bias", None) is not None:
        raise hub.UnsupportedError("a KWTA block's bias is not mapped", field="bias")
    if getattr(neuron, "norm", None) is not None:
        raise hub.UnsupportedError("a norm in a KWTA block is not mapped", node="neuron",
                                   field="norm")
    weight = _weights(block.synapse, block)
    count, winners = int(block.num_neurons), int(block.num_winners)
    with torch.no_grad():  # the forward's clamp() changes the parameter; a copy here
        excitation = block.self_excitation.detach().clone().clamp(0, 1)
        recurrent = (1 + excitation) * torch.eye(count) - 1
        rec = neuron.quantize_8bit(recurrent, descale=True).numpy().astype(np.float64)
        offset = neuron.threshold * (count - 2 * winners) / count / neuron.w_scale
        bias = float(neuron.quantize_8bit(torch.FloatTensor([offset]), descale=True)[0])
    if not (np.all(rec == np.round(rec)) and bias == round(bias)):
        raise hub.UnsupportedError("the lateral weights are not integer mantissas",
                                   field="self_excitation")
    nodes: list[tuple[str, hub.Node]] = [
        ("synapse", hub.Linear(weight=weight.reshape(weight.shape[:2])))]
    if bias:
        nodes.append(("bias", hub.Bias(bias=np.float32(bias))))
    read = _import_alif if family == "alif" else _import_neuron
    try:
        nodes.append(("neuron", read(neuron, False, recurrent=True)))
    except hub.HubError as e:
        raise e.at(node="neuron") from None
    delay = _block_delay(block, keep_shift, conv=False)
    if delay is not None:
        nodes.append(("delay", delay))
    return nodes, [("recurrent", hub.Linear(weight=rec.astype(np.float32)), "neuron")]
