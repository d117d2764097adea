"""slayer's upsampling blocks, cuba ``ConvT`` and ``Unpool``, as :class:`hub.ConvTranspose2d`.

``block.base.AbstractConvT.forward`` is its synapse (``synapse.ConvTranspose``: torch's
``conv_transpose3d`` with a ``[kh, kw, 1]`` kernel, so per time step a 2-d transposed
convolution of the integer weight mantissas), then the CUBA neuron, ``delay_shift`` and axonal
delays, as a ``Conv`` block: ``ConvTranspose2d(weight[..., 0])`` → ``LoihiCUBA`` → ``[Delay]``.

``synapse.Unpool`` is a transposed convolution of one constant kernel (``weight_scale``, on the
8-bit grid) over ``[N, 1, C * H, W, T]``: the channels merged with the rows. Where its stride
is its kernel, with no padding and no dilation, each input value becomes a ``kh x kw`` block of
its own channel, so it is the depthwise ``ConvTranspose2d`` of that kernel with
``stride = kernel``; it imports that way and exports back as a grouped ``ConvT`` block (as
``Pool`` does as a grouped ``Conv``). Other Unpool geometries overlap rows of neighbouring
channels and are refused.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

import hub
from hub_plugins.lava.slayer_common import DEFAULT_SCALE, _slayer
from hub_plugins.lava.slayer_import import _block_delay, _import_neuron, _weights

#: The kinds of block this module maps.
KINDS = ("ConvT", "Unpool")


def import_block(block: Any, keep_shift: bool, shape: tuple[int, ...]
                 ) -> list[tuple[str, hub.Node]]:
    """The nodes of a cuba ``ConvT`` or ``Unpool`` block (``shape``: its input's)."""
    if len(shape) != 3:
        raise hub.UnsupportedError(f"a {type(block).__name__} block needs a [C, H, W] input, "
                                   f"got {list(shape)}")
    s = block.synapse
    if s.kernel_size[2] != 1 or s.stride[2] != 1 or s.padding[2] != 0 or \
            tuple(s.output_padding)[2:] not in ((), (0,)):
        raise hub.UnsupportedError("a transposed convolution over time is not mapped",
                                   field="synapse")
    weight = _weights(s, block)
    if type(block).__name__ == "Unpool":
        synapse = _unpool(block, weight, shape)
    else:
        synapse = hub.ConvTranspose2d(
            weight=weight[..., 0], stride=tuple(s.stride[:2]), padding=tuple(s.padding[:2]),
            output_padding=tuple(s.output_padding[:2]), dilation=tuple(s.dilation[:2]),
            groups=s.groups)
    nodes: list[tuple[str, hub.Node]] = [("synapse", synapse)]
    try:
        nodes.append(("neuron", _import_neuron(block.neuron, channels_first=True)))
    except hub.HubError as e:
        raise e.at(node="neuron") from None
    delay = _block_delay(block, keep_shift, conv=True)
    if delay is not None:
        nodes.append(("delay", delay))
    return nodes


def _unpool(block: Any, weight: np.ndarray, shape: tuple[int, ...]) -> hub.ConvTranspose2d:
    s = block.synapse
    kernel = tuple(int(k) for k in s.kernel_size[:2])
    if tuple(s.stride[:2]) != kernel or tuple(s.padding[:2]) != (0, 0) or \
            tuple(s.dilation[:2]) != (1, 1):
        raise hub.UnsupportedError(
            "slayer unpools channels merged with rows; it is per-channel unpooling only with "
            "stride = kernel, no padding or dilation", field="synapse")
    if weight.size and not (weight == weight.reshape(-1)[0]).all():
        raise hub.UnsupportedError("an unpooling kernel of different weights", field="weight")
    channels = int(shape[0])
    return hub.ConvTranspose2d(
        weight=np.full((channels, 1, *kernel), weight.reshape(-1)[0], dtype=np.float32),
        stride=kernel, groups=channels)


def export_block(name: str, synapse: hub.ConvTranspose2d, neuron_name: str, neuron: hub.Node,
                 out_shape: tuple[int, ...], delay: tuple[str, hub.Delay] | None) -> Any:
    """A cuba ``ConvT`` block of ``synapse`` → ``neuron`` → ``[delay]``."""
    from hub_plugins.lava.slayer_export import (
        _even_mantissas, _export_timing, _neuron_params, _norm_mean, _set_decays)

    if not isinstance(neuron, hub.LoihiCUBA):
        raise hub.UnsupportedError("slayer's ConvT block is a cuba block: a LoihiCUBA neuron "
                                   "after the transposed convolution", node=neuron_name)
    if np.any(synapse.bias != 0):
        raise hub.UnsupportedError("slayer's CUBA synapses have no bias", node=name,
                                   field="bias")
    if any(synapse.output_padding):
        raise hub.UnsupportedError("slayer's ConvT block has no output_padding", node=name,
                                   field="output_padding")
    weight = _even_mantissas(name, synapse.weight)
    params = _neuron_params(neuron_name, neuron, bias=True)
    if neuron.i_decay.size > 1 or neuron.v_decay.size > 1:
        raise hub.UnsupportedError("per-channel decays map to slayer only in Dense blocks",
                                   node=neuron_name, field="i_decay")
    shift, axonal = _export_timing(neuron_name, neuron, delay, True, int(out_shape[0]))
    if neuron.bias.any() and neuron.bias_exp != 6:
        raise hub.UnsupportedError("slayer's bias (a norm's mean) has bias_exp=6",
                                   node=neuron_name, field="bias_exp")
    mean = _norm_mean(neuron_name, neuron.bias, int(out_shape[0]), True)
    if mean is not None:
        params["norm"] = _slayer().neuron.norm.MeanOnlyBatchNorm
    block = _slayer().block.cuba.ConvT(
        params, int(weight.shape[0]), int(weight.shape[1] * synapse.groups),
        tuple(int(k) for k in weight.shape[2:]), stride=tuple(synapse.stride),
        padding=tuple(synapse.padding), dilation=tuple(synapse.dilation),
        groups=synapse.groups, delay=axonal is not None, delay_shift=shift)
    with torch.no_grad():
        block.synapse.weight.copy_(torch.tensor(weight[..., None] / DEFAULT_SCALE,
                                                dtype=torch.float32))
    _set_decays(block.neuron, neuron, False, 1)
    if mean is not None:
        block.neuron.norm.num_features = len(mean)
        block.neuron.norm.running_mean = torch.tensor(mean, dtype=torch.float32)
    if axonal is not None:
        block.delay.delay.data = torch.tensor(axonal.astype(np.float32))
        block.delay.init = True
    block.neuron.shape = torch.Size(out_shape)
    block.neuron.num_neurons = int(np.prod(out_shape))
    return block
