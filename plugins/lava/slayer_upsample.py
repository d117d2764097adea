"""The synapse of slayer's upsampling blocks, ``ConvT`` and ``Unpool``: a ConvTranspose2d.

``block.base.AbstractConvT.forward`` is its synapse (``synapse.ConvTranspose``: torch's
``conv_transpose3d`` with a ``[kh, kw, 1]`` kernel, so per time step a 2-d transposed
convolution of the integer weight mantissas), then the family's neuron, ``delay_shift`` and
axonal delays, as a ``Conv`` block: ``ConvTranspose2d(weight[..., 0])`` → neuron → ``[Delay]``
(in every family whose blocks run: cuba, alif, sigma_delta, and the resonators' complex
synapse as two halves). The neuron and timing are the family's, read and written where its
``Conv`` block's are.

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

import hub
from hub_plugins.lava.slayer_import import _weights

def synapse(block: Any, shape: tuple[int, ...], synapse: Any = None) -> hub.ConvTranspose2d:
    """The synapse of a ``ConvT`` or ``Unpool`` block (``shape``: its input's) of any family:
    ``block.synapse``, or ``synapse`` (one half of a resonator block's complex synapse)."""
    s = block.synapse if synapse is None else synapse
    if len(shape) != 3:
        raise hub.UnsupportedError(f"a {type(block).__name__} block needs a [C, H, W] input, "
                                   f"got {list(shape)}")
    if s.kernel_size[2] != 1 or s.stride[2] != 1 or s.padding[2] != 0 or \
            tuple(s.output_padding)[2:] not in ((), (0,)):
        raise hub.UnsupportedError("a transposed convolution over time is not mapped",
                                   field="synapse")
    weight = _weights(s, block)
    if type(block).__name__ == "Unpool":
        return _unpool(s, weight, shape)
    return hub.ConvTranspose2d(
        weight=weight[..., 0], stride=tuple(s.stride[:2]), padding=tuple(s.padding[:2]),
        output_padding=tuple(s.output_padding[:2]), dilation=tuple(s.dilation[:2]),
        groups=s.groups)


def _unpool(s: Any, weight: np.ndarray, shape: tuple[int, ...]) -> hub.ConvTranspose2d:
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
