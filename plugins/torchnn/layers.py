"""torch.nn layers as canonical nodes: the one mapping every torch-based plugin shares.

snnTorch, Norse, SpikingJelly and plain ReLU networks hold ``torch.nn`` layers (SpikingJelly's
``layer.*`` subclass them), so a layer imports the same whatever framework it came from, with the
same refusals everywhere. Each layer maps to the node that computes what torch computes:

=========================================  ================================================
torch.nn                                   canonical node
=========================================  ================================================
Linear                                     Linear (no bias) or Affine
Conv1d, Conv2d (any padding form)          Conv1d, Conv2d; ``padding="same"`` resolved when
                                             it pads evenly; only ``padding_mode="zeros"``
BatchNorm1d, BatchNorm2d                   BatchNorm with the running statistics (inference)
MaxPool2d, AvgPool2d                       MaxPool2d, AvgPool2d, SumPool2d (divisor 1)
AdaptiveAvgPool2d                          AdaptiveAvgPool2d (a fixed output size)
Flatten                                    Flatten (its axes counted without the batch)
ReLU                                       ReLU
Identity, Dropout, Dropout2d (inference)   nothing: the value passes through
=========================================  ================================================

``lead`` is the number of leading axes the tensor a layer is applied to has before a sample's
own: 1 for ``[N, *]``, 2 for a sequence ``[T, N, *]`` given to a plain layer.

Export (:func:`export_layer`) is the inverse, with small modules of this file where torch has
no layer: ``Scale``, ``Bias``, ``Reshape``, ``Vote``, ``Product`` (``Mul``), ``Concatenate``
(``Concat``), ``StepDelay`` (``Delay``, one call per step) and ``Threshold`` (spiking through
the framework's own spike function, which each plugin passes in).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

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


def is_layer(module: nn.Module) -> bool:
    """Whether ``module`` is a layer :func:`import_module` maps (torch.nn's, or this file's)."""
    return isinstance(module, LAYERS + tuple(_OWN))


def array(tensor: Any, field: str) -> np.ndarray:
    """A parameter as a float32 array, refusing other dtypes by field."""
    if not isinstance(tensor, torch.Tensor):
        tensor = torch.as_tensor(tensor)
    if tensor.dtype != torch.float32:
        raise UnsupportedError(f"dtype {tensor.dtype}: the canonical graph computes in float32; "
                               "convert the model with .float() first", field=field)
    return tensor.detach().cpu().numpy().copy()


def import_layer(module: nn.Module, *, lead: int = 1, per_step: bool = False) -> hub.Node | None:
    """The canonical node of a torch.nn layer, or None where it passes its input through.

    ``lead`` counts the axes before a sample's own in the tensor it is applied to; a
    ``per_step`` layer (SpikingJelly's multi-step ``layer.*``) means its per-step self whatever
    it is given. A subclass maps as the torch.nn layer it extends (:data:`_IMPORTERS`).
    """
    importer = _lookup(_IMPORTERS, module)
    if importer is None:
        raise UnsupportedError(f"{type(module).__module__}.{type(module).__qualname__} has no "
                               "canonical counterpart; the torch.nn layers the hub maps are "
                               + ", ".join(t.__name__ for t in LAYERS), field="type")
    return importer(module, 1 if per_step else lead)


def _lookup(table: dict[type, Any], module: Any) -> Any:
    """The entry of ``table`` for ``module``'s class or the nearest class it derives from."""
    for cls in type(module).__mro__:
        if cls in table:
            return table[cls]
    return None


def _import_linear(module: nn.Linear, lead: int) -> hub.Node:
    weight = array(module.weight, "weight")
    if module.bias is None:
        return hub.Linear(weight=weight)
    return hub.Affine(weight=weight, bias=array(module.bias, "bias"))


def _import_adaptive(module: nn.AdaptiveAvgPool2d, lead: int) -> hub.Node:
    size = pair(module.output_size) if None not in _tuple(module.output_size) else None
    if size is None:
        raise UnsupportedError("an output size of None keeps the input's size, which the "
                               "canonical AdaptiveAvgPool2d does not", field="output_size")
    return hub.AdaptiveAvgPool2d(output_size=size)


def _passes(module: nn.Module, lead: int) -> None:
    return None


#: torch.nn layer class -> its importer ``(module, lead) -> node`` (None: passes through).
_IMPORTERS: dict[type, Callable[[Any, int], hub.Node | None]] = {
    **dict.fromkeys((nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d), _passes),
    nn.ReLU: lambda module, lead: hub.ReLU(),
    nn.Linear: _import_linear,
    **dict.fromkeys((nn.Conv1d, nn.Conv2d), lambda module, lead: import_conv(module)),
    **dict.fromkeys((nn.BatchNorm1d, nn.BatchNorm2d),
                    lambda module, lead: import_batchnorm(module)),
    **dict.fromkeys((nn.AvgPool2d, nn.MaxPool2d), lambda module, lead: import_pool(module)),
    nn.AdaptiveAvgPool2d: _import_adaptive,
    nn.Flatten: lambda module, lead: import_flatten(module.start_dim, module.end_dim, lead),
}

#: The layers :func:`import_layer` maps; anything else is not a layer to this module.
LAYERS: tuple[type, ...] = tuple(_IMPORTERS)


def _tuple(value: Any) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def import_flatten(start: int, end: int, lead: int) -> hub.Node:
    """``flatten(start, end)`` of a tensor with ``lead`` axes before a sample's own."""
    if 0 <= start < lead or 0 <= end < lead:
        raise UnsupportedError(f"flattening axes {start}..{end} merges the batch (or time) axis "
                               "into a sample, which no canonical node does", field="start_dim")
    return hub.Flatten(start_dim=start - lead if start >= 0 else start,
                       end_dim=end - lead if end >= 0 else end)


def import_conv(module: nn.Module) -> hub.Node:
    """``nn.Conv1d``/``Conv2d`` with every padding form torch has, zero padding only."""
    dims = 1 if isinstance(module, nn.Conv1d) else 2
    if module.padding_mode != "zeros":
        raise UnsupportedError(f"padding_mode={module.padding_mode!r}: only zero padding has a "
                               "canonical Conv", field="padding_mode")
    padding = module.padding
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0,) * dims
        else:  # 'same', stride 1 (torch's rule)
            total = [d * (k - 1) for k, d in zip(module.kernel_size, module.dilation)]
            if any(t % 2 for t in total):
                raise UnsupportedError("padding='same' with an even kernel pads unevenly, "
                                       "which the canonical Conv cannot express", field="padding")
            padding = tuple(t // 2 for t in total)
    cls = hub.Conv1d if dims == 1 else hub.Conv2d
    bias = 0.0 if module.bias is None else array(module.bias, "bias")
    return cls(weight=array(module.weight, "weight"), bias=bias, stride=module.stride,
               padding=padding, dilation=module.dilation, groups=module.groups)


def import_batchnorm(module: nn.Module) -> hub.Node:
    """Batch norm in inference, with its running statistics (as in ``eval()``)."""
    if not module.track_running_stats or module.running_mean is None:
        raise UnsupportedError("track_running_stats=False normalises with each batch's own "
                               "statistics, so a sample's output depends on the batch",
                               field="track_running_stats")
    channels = module.num_features
    weight = array(module.weight, "weight") if module.weight is not None else 1.0
    bias = array(module.bias, "bias") if module.bias is not None else 0.0
    return hub.BatchNorm(mean=array(module.running_mean, "running_mean"),
                         var=array(module.running_var, "running_var"),
                         weight=np.broadcast_to(weight, (channels,)).copy(),
                         bias=np.broadcast_to(bias, (channels,)).copy(), eps=float(module.eps))


# -- export: canonical layer nodes as torch.nn modules ---------------------------------------


class Scale(nn.Module):
    """``x * scale``, elementwise: the canonical ``Scale`` as a torch module."""

    def __init__(self, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class Reshape(nn.Module):
    """A sample's values in a new shape (the batch axis kept)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)


class Bias(nn.Module):
    """``x + bias``: the canonical ``Bias`` as a torch module."""

    def __init__(self, bias: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias


class Vote(nn.Module):
    """The mean of each group of ``size`` values (SpikingJelly's ``VotingLayer``)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool1d(x.unsqueeze(1), self.size, self.size).squeeze(1)


class Product(nn.Module):
    """The elementwise product of its inputs, in order (SEW's AND and IAND)."""

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out * x
        return out


class Concatenate(nn.Module):
    """``torch.cat`` of its inputs along a sample's axis ``dim`` (the batch axis not counted)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=self.dim + 1)


class Threshold(nn.Module):
    """The canonical ``Threshold`` (``x > threshold`` or ``x >= threshold``) spiking through a
    framework's own spike function, so that its surrogate gradient trains it.

    ``heaviside(z)`` is that function: 1 where ``z > 0`` (or ``z >= 0`` when ``inclusive``),
    with its surrogate gradient; the default is the hub's. It is applied to ``x - at``, where
    ``at`` is the threshold, or its float32 neighbour when the function's comparison is not the
    node's: ``x >= t`` is ``x > nextafter(t, -inf)`` and ``x > t`` is
    ``x >= nextafter(t, +inf)`` for every float32 ``x``, and ``x - at > 0`` is ``x > at``
    exactly (a difference of two distinct floats never rounds to 0).
    """

    def __init__(self, threshold: torch.Tensor, comparison: str = ">",
                 heaviside: Any = None, inclusive: bool = False) -> None:
        super().__init__()
        if comparison not in (">", ">="):
            raise ValueError(f"comparison must be '>' or '>=', got {comparison!r}")
        self.comparison = comparison
        self.inclusive = inclusive
        self.heaviside = heaviside
        self.register_buffer("threshold", threshold)
        at = threshold
        if comparison == ">" and inclusive:
            at = torch.nextafter(threshold, torch.tensor(np.inf, dtype=threshold.dtype))
        elif comparison == ">=" and not inclusive:
            at = torch.nextafter(threshold, torch.tensor(-np.inf, dtype=threshold.dtype))
        self.register_buffer("at", at)

    def extra_repr(self) -> str:
        return f"comparison={self.comparison!r}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.heaviside is None:
            from hub.surrogate import spike

            return spike(x - self.at, self.inclusive)
        return self.heaviside(x - self.at)


class StepDelay(nn.Module):
    """``y[t] = x[t - delay]`` per element, in calls (one call is one time step), zeros before
    the first input, as the canonical ``Delay``; ``reset()`` forgets what it holds."""

    def __init__(self, delay: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("delay", delay)
        self.reset()

    def reset(self) -> None:
        self._buffer: torch.Tensor | None = None
        self._t = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        depth = int(self.delay.max()) + 1 if self.delay.numel() else 1
        if self._buffer is None:
            self._buffer = x.new_zeros((depth, *x.shape))
        buffer = self._buffer.clone()
        buffer[self._t % depth] = x
        index = ((self._t - self.delay) % depth).expand(x.shape[1:])
        y = torch.gather(buffer, 0, index.unsqueeze(0).unsqueeze(1).expand(1, *x.shape))[0]
        self._buffer, self._t = buffer, self._t + 1
        return y


def _t(value: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(value, dtype=np.float32))


def export_layer(node: hub.Node, input_shape: tuple[int, ...] | None) -> nn.Module | None:
    """The torch module computing a canonical layer node on ``[N, *sample]`` bit for bit as the
    reference simulator does, None for a junction (Input, Output, Add), or ``UnsupportedError``
    for a node that is not a layer. ``Delay`` is a :class:`StepDelay` (one call per step) and
    ``Threshold`` spikes through the hub's surrogate; a plugin passes its framework's own spike
    function to :class:`Threshold` instead. The inverse of :func:`import_layer` (and of
    :func:`import_module` for the modules of this file)."""
    exporter = _EXPORTERS.get(node.type)
    if exporter is None:
        raise UnsupportedError(f"{node.type} is not a layer with a torch.nn counterpart",
                               field="type")
    return exporter(node, input_shape)


def _export_dense(node: hub.Node, input_shape: tuple[int, ...] | None) -> nn.Module:
    out_features, in_features = node.weight.shape
    affine = node.type == "Affine"
    layer = nn.Linear(in_features, out_features, bias=affine)
    with torch.no_grad():
        layer.weight.copy_(_t(node.weight))
        if affine:
            layer.bias.copy_(_t(np.broadcast_to(node.bias, (out_features,))))
    return layer


def _export_conv(node: hub.Node, input_shape: tuple[int, ...] | None) -> nn.Module:
    cls = nn.Conv1d if node.type == "Conv1d" else nn.Conv2d
    w = node.weight
    # the default scalar zero bias is no bias, so that it reads back as the default
    bias = not (node.bias.ndim == 0 and node.bias == 0)
    layer = cls(w.shape[1] * node.groups, w.shape[0], tuple(w.shape[2:]), stride=node.stride,
                padding=node.padding, dilation=node.dilation, groups=node.groups, bias=bias)
    with torch.no_grad():
        layer.weight.copy_(_t(w))
        if bias:
            layer.bias.copy_(_t(np.broadcast_to(node.bias, (w.shape[0],))))
    return layer


def _export_avgpool(node: hub.Node, input_shape: tuple[int, ...] | None) -> nn.Module:
    return nn.AvgPool2d(node.kernel_size, node.stride, node.padding, count_include_pad=True,
                        divisor_override=1 if node.type == "SumPool2d" else None)


def _export_flatten(node: hub.Node, input_shape: tuple[int, ...] | None) -> nn.Module:
    start = node.start_dim + 1 if node.start_dim >= 0 else node.start_dim
    end = node.end_dim + 1 if node.end_dim >= 0 else node.end_dim
    return nn.Flatten(start, end)


def _export_batchnorm(node: hub.Node, input_shape: tuple[int, ...] | None) -> nn.Module:
    channels = node.mean.shape[0]
    cls = nn.BatchNorm2d if input_shape is not None and len(input_shape) == 3 else nn.BatchNorm1d
    layer = cls(channels, eps=node.eps)
    with torch.no_grad():
        layer.running_mean.copy_(_t(node.mean))
        layer.running_var.copy_(_t(node.var))
        layer.weight.copy_(_t(np.broadcast_to(node.weight, (channels,))))
        layer.bias.copy_(_t(np.broadcast_to(node.bias, (channels,))))
    return layer.eval()


#: Node type -> its exporter ``(node, input shape) -> module`` (None: a junction).
_EXPORTERS: dict[str, Callable[[Any, Any], nn.Module | None]] = {
    **dict.fromkeys(("Input", "Output", "Add"), lambda node, shape: None),
    **dict.fromkeys(("Affine", "Linear"), _export_dense),
    **dict.fromkeys(("Conv1d", "Conv2d"), _export_conv),
    **dict.fromkeys(("SumPool2d", "AvgPool2d"), _export_avgpool),
    "MaxPool2d": lambda node, shape: nn.MaxPool2d(node.kernel_size, node.stride, node.padding),
    "AdaptiveAvgPool2d": lambda node, shape: nn.AdaptiveAvgPool2d(node.output_size),
    "Flatten": _export_flatten,
    "ReLU": lambda node, shape: nn.ReLU(),
    "BatchNorm": _export_batchnorm,
    "Scale": lambda node, shape: Scale(_t(node.scale)),
    "Reshape": lambda node, shape: Reshape(node.shape),
    "Bias": lambda node, shape: Bias(_t(node.bias)),
    "Vote": lambda node, shape: Vote(node.size),
    "Mul": lambda node, shape: Product(),
    "Concat": lambda node, shape: Concatenate(node.dim),
    "Delay": lambda node, shape: StepDelay(torch.from_numpy(np.array(node.delay,
                                                                     dtype=np.int64))),
    "Threshold": lambda node, shape: Threshold(_t(node.threshold), node.comparison),
}


def import_module(module: nn.Module) -> hub.Node | None:
    """The node of a module :func:`export_layer` makes (this file's own modules included)."""
    own = _lookup(_OWN, module)
    return own(module) if own is not None else import_layer(module)


#: This file's modules -> the node each computes.
_OWN: dict[type, Callable[[Any], hub.Node]] = {
    Scale: lambda m: hub.Scale(scale=array(m.scale, "scale")),
    Reshape: lambda m: hub.Reshape(shape=m.shape),
    Bias: lambda m: hub.Bias(bias=array(m.bias, "bias")),
    Vote: lambda m: hub.Vote(size=m.size),
    Product: lambda m: hub.Mul(),
    Concatenate: lambda m: hub.Concat(dim=m.dim),
    Threshold: lambda m: hub.Threshold(threshold=array(m.threshold, "threshold"),
                                       comparison=m.comparison),
    StepDelay: lambda m: hub.Delay(delay=m.delay.cpu().numpy().astype(np.int64)),
}


#: The node types :func:`export_layer` gives a module for (junctions included).
EXPORTED = frozenset(_EXPORTERS)
