"""What the SpikingJelly plugin's reading and writing share: metadata keys, step modes, float32
values."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hub.errors import ParameterError, UnsupportedError

#: Attribute of an exported module holding the canonical node it was made from (plain data).
META = "hub_node"
#: Attribute of an exported model holding its input shape (one sample, no batch or time axis).
INPUT_SHAPE = "hub_input_shape"
#: Attribute of an exported model holding the graph's metadata (its ``dt``, for NIR).
GRAPH_META = "hub_metadata"
STEP_MODES = ("s", "m")


class SpikingJellyMetadataWarning(UserWarning):
    """A module's ``hub_node`` disagrees with what the module computes and was ignored."""


def _is_sj(module: Any) -> bool:
    return type(module).__module__.startswith("spikingjelly.")


def _containers() -> tuple[type, type]:
    from spikingjelly.activation_based import layer

    return layer.SeqToANNContainer, layer.MultiStepContainer


def _array(tensor: Any, field: str) -> np.ndarray:
    import torch

    value = tensor.detach().cpu()
    if value.dtype != torch.float32:
        raise UnsupportedError(f"parameters are {value.dtype}; the hub computes in float32: "
                               "call model.float() first", field=field)
    out = value.numpy().copy()
    if not np.isfinite(out).all():
        bad = int((~np.isfinite(out)).sum())
        raise ParameterError(f"NaN or infinite value in {bad} of {out.size} values", field=field)
    return out


def _scalar(value: Any, field: str) -> float:
    import torch

    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise UnsupportedError(f"a tensor of shape {list(value.shape)}; only one value for "
                                   "all neurons is supported", field=field)
        value = value.item()
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"expected a number, got {value!r}", field=field) from None
    if not math.isfinite(out):
        raise ParameterError(f"{out} is not a finite number", field=field)
    return out
