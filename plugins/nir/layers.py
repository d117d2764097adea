"""NIR nodes for the layers real torch models bring in (see docs/nir.md).

Each canonical node goes out as the standard NIR node that computes it where NIR has one, and
as a NIR junction (``Scale`` by 1) where it has none; either way the node itself travels in the
metadata under ``"hub"``, so hub -> NIR -> hub gives it back bit for bit.

=================  ===========================================================================
canonical node     NIR node (what another reader computes)
=================  ===========================================================================
Bias               ``Affine`` with an identity weight on a vector; a 1x1 ``Conv1d``/``Conv2d``
                   with an identity weight on ``[C, L]``/``[C, H, W]`` when the bias is per
                   channel (exact: ``1 * x + 0 * ... + b``)
BatchNorm          the same shapes with weight ``s = weight / sqrt(var + eps)`` and bias
                   ``bias - mean * s`` (equal in real arithmetic; rounding may differ)
AdaptiveAvgPool2d  ``AvgPool2d`` when the windows are fixed (input size a multiple of the output)
Vote               ``Linear`` averaging each group (bit for bit on spikes with a power-of-two
                   group size; up to rounding otherwise)
Reshape            ``Flatten`` when it merges neighbouring axes
ReLU, Mul,         a ``Scale`` by 1: NIR has no rectifier, product, concatenation or maximum;
Concat, MaxPool2d  readers that do not read the metadata refuse it (nirtorch maps no
and the rest       ``Scale``; where the shape changes, nir's own type check fails) or see a
                   sum
=================  ===========================================================================

The node's input shape travels with it (``"in"`` in the metadata): the windows of an adaptive
pooling and the channels of a per-channel bias depend on it, and NIR does not keep it for pooling
or grouped convolutions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from hub.node import Node, Shape

#: The metadata key of the input shape a node was exported for.
INPUT = "in"
#: The most channels (or vector entries) an identity or diagonal weight is written for; a
#: larger one (its square in the file) goes out as a junction.
MAX_DIAGONAL = 2048


def first_shape(shape: Any) -> Shape | None:
    """The shape of a node's input (the first operand's, for an operand node)."""
    if shape is not None and len(shape) and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return None if shape is None else tuple(int(s) for s in shape)


def junction(node: Node, dt: float | None, shape: Any) -> Any:
    """A NIR ``Scale`` by 1 of the input's shape: the node's place in the graph."""
    import nir

    first = first_shape(shape)
    return nir.Scale(scale=np.ones(first if first is not None else (), np.float32))


def _eye_affine(scale: np.ndarray, bias: np.ndarray) -> Any:
    import nir

    return nir.Affine(weight=np.diag(scale).astype(np.float32), bias=bias.astype(np.float32))


def _diagonal_conv(scale: np.ndarray, bias: np.ndarray, shape: Shape) -> Any:
    """A 1x1 convolution whose output channel ``c`` is ``scale[c]`` times input channel ``c``
    plus ``bias[c]`` (a diagonal weight, not a grouped one: nir infers a grouped convolution's
    input type wrongly, and several readers refuse groups)."""
    import nir

    spatial = len(shape) - 1
    cls = nir.Conv1d if spatial == 1 else nir.Conv2d
    weight = np.diag(scale.astype(np.float32)).reshape(*np.diag(scale).shape, *(1,) * spatial)
    sizes = shape[1] if spatial == 1 else tuple(shape[1:])
    return cls(input_shape=sizes, weight=weight, stride=(1,) * spatial, padding=(0,) * spatial,
               dilation=(1,) * spatial, groups=1, bias=bias.astype(np.float32))


def _channelwise(scale: np.ndarray, bias: np.ndarray, shape: Shape) -> Any:
    """``scale * x + bias`` per channel (axis 0) as NIR computes it, for 1 to 3 axes."""
    if len(shape) == 1:
        return _eye_affine(scale, bias)
    return _diagonal_conv(scale, bias, shape)


def _per_channel(value: np.ndarray, shape: Shape) -> np.ndarray | None:
    """One entry per channel (axis 0) if ``value``, broadcast onto ``shape``, is constant over
    every other axis."""
    full = np.broadcast_to(value, shape).reshape(shape[0], -1)
    if (full == full[:, :1]).all():
        return full[:, 0].copy()
    return None


def export_bias(node: Node, dt: float | None, shape: Any) -> Any:
    shape = first_shape(shape)
    if shape is not None and 1 <= len(shape) <= 3 and shape[0] <= MAX_DIAGONAL:
        if len(shape) == 1:
            return _eye_affine(np.ones(shape[0], np.float32),
                               np.broadcast_to(node.bias, shape).astype(np.float32))
        bias = _per_channel(node.bias, shape)
        if bias is not None:
            return _diagonal_conv(np.ones(shape[0], np.float32), bias, shape)
    return junction(node, dt, shape)


def batch_norm_affine(node: Node) -> tuple[np.ndarray, np.ndarray]:
    """BatchNorm in inference as ``s * x + b`` per channel (float32, torch's arithmetic)."""
    channels = node.mean.shape[0]
    mean, var = torch.tensor(node.mean), torch.tensor(node.var)
    weight = torch.tensor(node.weight).expand(channels)
    bias = torch.tensor(node.bias).expand(channels)
    scale = weight / torch.sqrt(var + node.eps)
    return scale.numpy(), (bias - mean * scale).numpy()


def export_batch_norm(node: Node, dt: float | None, shape: Any) -> Any:
    shape = first_shape(shape)
    if shape is None or not 1 <= len(shape) <= 3 or shape[0] > MAX_DIAGONAL:
        return junction(node, dt, shape)
    return _channelwise(*batch_norm_affine(node), shape)


def export_adaptive_avg_pool(node: Node, dt: float | None, shape: Any) -> Any:
    import nir

    shape = first_shape(shape)
    if shape is None or len(shape) != 3 or any(n % o for n, o in zip(shape[1:],
                                                                      node.output_size)):
        return junction(node, dt, shape)
    kernel = np.array([n // o for n, o in zip(shape[1:], node.output_size)])
    return nir.AvgPool2d(kernel_size=kernel, stride=kernel.copy(), padding=np.zeros(2, np.int64))


def export_vote(node: Node, dt: float | None, shape: Any) -> Any:
    import nir

    shape = first_shape(shape)
    if shape is None or len(shape) != 1 or shape[0] ** 2 // node.size > MAX_DIAGONAL ** 2:
        return junction(node, dt, shape)
    groups = shape[0] // node.size
    weight = np.zeros((groups, shape[0]), np.float32)
    for g in range(groups):
        weight[g, g * node.size:(g + 1) * node.size] = np.float32(1.0) / np.float32(node.size)
    return nir.Linear(weight=weight)


def export_reshape(node: Node, dt: float | None, shape: Any) -> Any:
    import nir

    shape = first_shape(shape)
    if shape is not None:
        for start in range(len(shape)):
            for end in range(start, len(shape)):
                merged = (*shape[:start], math.prod(shape[start:end + 1]), *shape[end + 1:])
                if merged == tuple(node.shape):
                    return nir.Flatten(input_type={"input": np.array(shape)}, start_dim=start,
                                       end_dim=end)
    return junction(node, dt, shape)


EXPORTERS: dict[str, Callable[[Any, float | None, Any], Any]] = {
    "Bias": export_bias,
    "BatchNorm": export_batch_norm,
    "AdaptiveAvgPool2d": export_adaptive_avg_pool,
    "Vote": export_vote,
    "Reshape": export_reshape,
    "ReLU": junction,
    "Mul": junction,
    "Concat": junction,
    "MaxPool2d": junction,
}

#: The NIR node types each canonical type above may go out as (for the runtime's check of
#: the metadata it is given).
NIR_TYPES = {
    "Bias": {"Affine", "Conv1d", "Conv2d", "Scale"},
    "BatchNorm": {"Affine", "Conv1d", "Conv2d", "Scale"},
    "AdaptiveAvgPool2d": {"AvgPool2d", "Scale"},
    "Vote": {"Linear", "Scale"},
    "Reshape": {"Flatten", "Scale"},
    "ReLU": {"Scale"},
    "Mul": {"Scale"},
    "Concat": {"Scale"},
    "MaxPool2d": {"Scale"},
}
