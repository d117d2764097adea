"""torch.nn pooling layers as canonical nodes: the one mapping the framework plugins share.

snnTorch, Norse and SpikingJelly models hold plain ``torch.nn`` pooling layers (SpikingJelly's
``layer.AvgPool2d``/``MaxPool2d`` subclass them), so their plugins import them here, with the
same refusals everywhere.
"""

from __future__ import annotations

from typing import Any

import hub
from hub.errors import UnsupportedError


def pair(value: Any) -> tuple[int, int]:
    """A torch size argument (an int or a pair) as a pair of ints."""
    if isinstance(value, (tuple, list)):
        return tuple(int(v) for v in value)  # type: ignore[return-value]
    return (int(value), int(value))


def import_pool(module: Any) -> hub.Node:
    """A ``torch.nn.AvgPool2d`` or ``MaxPool2d`` as ``AvgPool2d``, ``SumPool2d`` or
    ``MaxPool2d``; what those cannot express raises ``UnsupportedError`` naming the field."""
    import torch.nn as nn

    if module.ceil_mode:
        raise UnsupportedError("ceil_mode=True pools partial windows, which the canonical "
                               "pools do not", field="ceil_mode")
    kernel = pair(module.kernel_size)
    sizes = {"kernel_size": kernel, "padding": pair(module.padding),
             "stride": pair(module.stride) if module.stride is not None else kernel}
    if isinstance(module, nn.MaxPool2d):
        if pair(module.dilation) != (1, 1):
            raise UnsupportedError("dilated max pooling has no canonical counterpart",
                                   field="dilation")
        if module.return_indices:
            raise UnsupportedError("return_indices=True returns a pair, not a tensor",
                                   field="return_indices")
        return hub.MaxPool2d(**sizes)
    if module.divisor_override == 1:  # the divisor replaces the count: padding is irrelevant
        return hub.SumPool2d(**sizes)
    if module.divisor_override is not None:
        raise UnsupportedError(f"divisor_override={module.divisor_override} has no canonical "
                               "counterpart (1 is SumPool2d, None is AvgPool2d)",
                               field="divisor_override")
    if not module.count_include_pad and any(sizes["padding"]):
        raise UnsupportedError("count_include_pad=False with padding divides the border "
                               "windows by fewer elements, which the canonical AvgPool2d "
                               "cannot express", field="count_include_pad")
    return hub.AvgPool2d(**sizes)
