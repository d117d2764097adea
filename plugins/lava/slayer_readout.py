"""slayer's non-spiking readout blocks: ``Affine`` (a voltage or synaptic readout) and ``Average``.

``block.base.AbstractAffine.forward`` is the block's dense synapse ``z`` (integer weight
mantissas ``w`` on slayer's grid of ``1 / w_scale``), then, with ``dynamics=True``, its CUBA
neuron's ``dynamics`` with the threshold set to ``-1``: the same integer current and voltage as
a spiking block (``leaky_integrator``: states at the scale ``s_scale = 64 * w_scale``) but
never a spike or a reset, and the block returns the voltage ``v / s_scale``; with
``dynamics=False`` it returns ``z`` itself. An Affine block has no ``delay_shift`` and no axonal
delays. So, canonically:

- ``dynamics=True``: ``Linear(w)`` into a :class:`hub.LoihiCUBA` with ``spike_mode="voltage"``
  (it emits ``v / 64`` every step) and a threshold of ``1 << 17`` (its 24-bit voltage never
  passes ``1 << 23``: it never spikes, so never resets), then ``Scale(1 / w_scale)``;
- ``dynamics=False``: ``Linear(w)`` then ``Scale(1 / w_scale)``.

Both are exact while the states stay within 24 bits (slayer keeps them in int32 and returns
float32: ``v / s_scale`` is exact for ``|v| < 2**24``), with ``w_scale`` a power of two.

``block.base.AbstractAverage.forward`` is ``torch.mean(x.reshape(N, num_outputs, -1, T),
dim=2)``: the flattened input in ``num_outputs`` consecutive groups, each group's mean. That is
:class:`hub.Vote` (``avg_pool1d`` over groups of ``size``) after a ``Flatten`` where the input
has more than one axis. Both sum a group and divide once by its size, so they agree bit for bit
wherever the group sums are exact in float32 (spikes, integer counts, slayer's voltages on its
grid): the ways the two order the additions differ only in rounding.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

import hub
from hub_plugins.lava.slayer_common import DEFAULT_SCALE, _slayer, expect_neuron
from hub_plugins.lava.slayer_import import _decay, _norm_bias, _weights

#: The threshold mantissa of a readout neuron: ``(1 << 17) << 6`` is above the largest 24-bit
#: voltage, so it never spikes (netx's own default ``vThMant`` for "no spikes").
NEVER = 1 << 17
#: The kinds of block this module maps.
KINDS = ("Affine", "Average")


def import_block(block: Any, family: str, shape: tuple[int, ...]
                 ) -> list[tuple[str, hub.Node]]:
    """The nodes of a cuba ``Affine`` or any family's ``Average`` block (``shape``: its
    input's)."""
    kind = type(block).__name__
    if kind == "Average":
        return _import_average(block, shape)
    if family != "cuba":
        raise hub.UnsupportedError(f"slayer.block.{family}.Affine is not mapped (the cuba "
                                   "Affine is)")
    return _import_affine(block, shape)


def _import_average(block: Any, shape: tuple[int, ...]) -> list[tuple[str, hub.Node]]:
    size = int(np.prod(shape))
    groups = int(block.num_outputs)
    if groups < 1 or size % groups:
        raise hub.UnsupportedError(f"slayer's Average splits its {size} inputs into "
                                   f"{groups} equal groups; {size} does not divide",
                                   field="num_outputs")
    nodes: list[tuple[str, hub.Node]] = []
    if len(shape) > 1:
        nodes.append(("flatten", hub.Flatten()))
    nodes.append(("average", hub.Vote(size=size // groups)))
    return nodes


def _import_affine(block: Any, shape: tuple[int, ...]) -> list[tuple[str, hub.Node]]:
    if len(shape) != 1:
        raise hub.UnsupportedError(f"an Affine block takes a vector, got {list(shape)}: put a "
                                   "Flatten block before it")
    if block.mask is not None:
        raise hub.UnsupportedError("an Affine block's mask is applied to its weights in place "
                                   "by its forward; apply it to the weights first",
                                   field="mask")
    neuron = block.neuron
    scale = int(neuron.w_scale)
    if scale & (scale - 1) or int(neuron.s_scale) != scale << 6:
        raise hub.UnsupportedError(f"the neuron's scale {scale} is not a power of two (its "
                                   "voltage readout would not be exact)", field="scale")
    weight = _weights(block.synapse, block)
    nodes: list[tuple[str, hub.Node]] = [
        ("synapse", hub.Linear(weight=weight.reshape(weight.shape[:2])))]
    if block.dynamics:
        try:
            nodes.append(("neuron", _readout_neuron(neuron)))
        except hub.HubError as e:
            raise e.at(node="neuron") from None
    nodes.append(("scale", hub.Scale(scale=np.float32(1.0 / scale))))
    return nodes


def _readout_neuron(neuron: Any) -> hub.LoihiCUBA:
    """The Affine block's CUBA neuron as a voltage readout (it never spikes)."""
    expect_neuron(neuron, "cuba", "CUBA")
    if neuron.persistent_state:
        raise hub.UnsupportedError("persistent_state carries the neuron's state from one "
                                   "forward call to the next; the hub's model starts each run "
                                   "at rest", field="persistent_state")
    # slayer draws per-neuron decays (shared_param=False) in the first forward of a neuron
    # without a shape; an Affine block sets its neuron's shape, so it keeps the decays it holds
    if neuron.shape is None and getattr(neuron, "current_decay_min", None) is not None:
        raise hub.UnsupportedError("per-neuron decays (shared_param=False) are drawn at random "
                                   "on the block's first forward: run the network once first",
                                   field="shared_param")
    return hub.LoihiCUBA(i_decay=_decay(neuron.current_decay, "current_decay",
                                        int(neuron.p_scale)),
                         v_decay=_decay(neuron.voltage_decay, "voltage_decay",
                                        int(neuron.p_scale)),
                         threshold=np.int64(NEVER), bias=_norm_bias(neuron, False),
                         spike_mode="voltage")


# -- export ---------------------------------------------------------------------------------


def is_readout(chain: list[tuple[str, hub.Node]], i: int) -> bool:
    """Whether the chain holds an Average (a ``Vote``) or an Affine block at ``i``."""
    node = chain[i][1]
    if isinstance(node, hub.Vote):
        return True
    if not isinstance(node, hub.Linear) or i + 1 >= len(chain):
        return False
    after = chain[i + 1][1]
    if isinstance(after, hub.LoihiCUBA) and after.spike_mode == "voltage":
        return True
    return isinstance(after, hub.Scale)


def export_block(chain: list[tuple[str, hub.Node]], i: int, shape: tuple[int, ...]
                 ) -> tuple[Any, int]:
    """The slayer block at ``chain[i]`` (see :func:`is_readout`) and the index after it."""
    cuba = _slayer().block.cuba
    name, node = chain[i]
    if isinstance(node, hub.Vote):
        size = int(np.prod(shape))
        if len(shape) != 1 or size % node.size:
            raise hub.UnsupportedError(f"slayer's Average takes equal groups of the whole "
                                       f"input; {list(shape)} is not {node.size} times a "
                                       "number of groups", node=name, field="size")
        return cuba.Average(size // node.size), i + 1
    from hub_plugins.lava.slayer_export import _even_mantissas, _norm_mean, _set_decays

    weight = _even_mantissas(name, node.weight)
    j = i + 1
    neuron = None
    if isinstance(chain[j][1], hub.LoihiCUBA):
        neuron, j = chain[j], j + 1
    if j >= len(chain) or not isinstance(chain[j][1], hub.Scale) or \
            not np.all(np.asarray(chain[j][1].scale) == np.float32(1.0 / DEFAULT_SCALE)):
        where = chain[min(j, len(chain) - 1)][0]
        raise hub.UnsupportedError(f"slayer's Affine block returns its voltage (or synaptic "
                                   f"input) in units of 1/{DEFAULT_SCALE}: a Scale of "
                                   f"1/{DEFAULT_SCALE} after it", node=where, field="scale")
    params: dict[str, Any] = {"threshold": 1.0, "current_decay": 0.0, "voltage_decay": 0.0}
    mean = None
    if neuron is not None:
        _check_readout(*neuron)
        mean = _norm_mean(neuron[0], neuron[1].bias, int(weight.shape[0]), False)
    if mean is not None:  # the bias is a norm's mean, as in a Dense block
        params["norm"] = _slayer().neuron.norm.MeanOnlyBatchNorm
    per_neuron = neuron is not None and (neuron[1].i_decay.size > 1 or
                                         neuron[1].v_decay.size > 1)
    if per_neuron:
        params["shared_param"] = False
    block = cuba.Affine(params, int(weight.shape[1]), int(weight.shape[0]),
                        dynamics=neuron is not None)
    with torch.no_grad():
        block.synapse.weight.copy_(torch.tensor(weight[..., None, None, None] / DEFAULT_SCALE,
                                                dtype=torch.float32))
        if mean is not None:
            block.neuron.norm.num_features = len(mean)
            block.neuron.norm.running_mean = torch.tensor(mean, dtype=torch.float32)
    if neuron is not None:
        _set_decays(block.neuron, neuron[1], per_neuron, int(weight.shape[0]))
    return block, j + 1


def _check_readout(name: str, node: hub.LoihiCUBA) -> None:
    for field, bad, why in (
            ("threshold", bool(np.any(node.threshold < NEVER)),
             f"it never spikes (a threshold of at least {NEVER})"),
            ("refractory", bool(node.refractory), "no refractory period"),
            ("delay", bool(node.delay), "no delay"),
            ("bias_exp", bool(np.any(node.bias)) and node.bias_exp != 6, "bias_exp 6")):
        if bad:
            raise hub.UnsupportedError(f"slayer's Affine block is a voltage readout with {why}",
                                       node=name, field=field)
