r"""Quantisation-aware training for Loihi: torch blocks whose forward is what Loihi computes.

The blocks are plain ``torch.nn.Module`` s, so they train with any torch optimiser inside any
float framework's model (a snnTorch or SpikingJelly network, or plain torch), and
:func:`to_graph` turns a model built from them into a canonical graph of ``Linear``,
``Conv2d``, ``SumPool2d``, ``Flatten`` and :class:`hub.LoihiCUBA` nodes, losslessly: the graph's
``hub.simulate`` and Lava's netx run of ``hub.save(graph, to="netx", ...)`` give the spikes the
module's forward gave, bit for bit.

>>> from hub import qat
>>> model = torch.nn.Sequential(
...     qat.LoihiConv2d(1, 8, 3, padding=1), qat.LoihiNeuron(v_decay=1024, threshold=64),
...     qat.SumPool2d(2), qat.LoihiNeuron(threshold=0),
...     qat.Flatten(), qat.LoihiDense(128, 10), qat.LoihiNeuron(threshold=64))
>>> spikes = model(x)                              # x: [T, N, 1, 8, 8] integer spikes
>>> graph = qat.to_graph(model, input_shape=(1, 8, 8))
>>> hub.save(graph, to="netx", out="digits.net")

**Synapses** (:class:`LoihiDense`, :class:`LoihiConv2d`, :class:`SumPool2d`) hold float weights
``w`` and compute with Loihi's weight mantissas ``q = clamp(round(w * scale), -2**(bits-1),
2**(bits-1) - 1)`` (8 bits by default, the range netx's weight optimisation and Lava's conv
synapse deliver exactly). Rounding and clamping pass the gradient straight through (the
straight-through estimator), so ``w`` trains while the forward only ever sees integers. The
output is the synaptic activation, the integer sum of mantissas times (integer) input spikes:
exact in float32 while the partial sums stay below ``2**24``.

**The neuron** (:class:`LoihiNeuron`) is :class:`hub.LoihiCUBA` (Lava's ``PyLifModelBitAcc``,
see ``hub/loihi.py``) step for step, on integers carried in float64 tensors (exact: every value
stays below ``2**53``; ``u * (4096 - decay)`` is below ``2**37``). With input ``a``::

    u = trunc(u * (4096 - i_decay) / 4096) + 64 * a      # trunc: rounds toward zero, as Lava
    u = wrap24(u)
    v = clip24(trunc(v * (4096 - v_decay) / 4096) + u)
    s = v > threshold * 64;  v = where(s, 0, v)

Gradients: ``trunc`` and the 24-bit wrap are straight-through (identity), the spike uses
``hub.surrogate.spike`` on ``(v - 64 * threshold) / (64 * max(threshold, 1))`` (the fast-sigmoid
surrogate in units of the threshold; the forward compares the integers), and the reset is
detached, as snnTorch does by default. Only gradients are approximated.

**Time.** Every block takes ``step_mode``: ``"m"`` (the default) takes ``[T, N, *features]``
and runs the ``T`` steps from a fresh state; ``"s"`` takes one step ``[N, *features]`` per call
and keeps the neuron's state until :meth:`LoihiNeuron.reset` (as a snnTorch loop or a
SpikingJelly single-step network does; SpikingJelly's ``functional.set_step_mode`` sets the
attribute). Synapses and pooling treat leading axes alike, so they work in either mode.

Neuron parameters are Loihi's integers (``i_decay``, ``v_decay`` 0..4096, the threshold mantissa)
and are not trained; what trains is the weights. Lava's latency (one step per synapse layer) is
transport, not model, and the netx bridge removes it (``docs/lava.md``), as here.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F

from .errors import HubError, UnsupportedError
from .graph import Graph
from .loihi import DECAY_UNITY, MAX_UV, VTH_SHIFT, LoihiCUBA
from .nodes import Conv2d, Flatten as FlattenNode, Input, Linear, SumPool2d as SumPoolNode
from .surrogate import spike

__all__ = ["Flatten", "LoihiConv2d", "LoihiDense", "LoihiNeuron", "SumPool2d", "quantize_weight",
           "to_graph"]

#: Largest threshold mantissa a QAT neuron takes: ``threshold << 6`` stays below ``2**23``, so
#: ``v - (threshold << 6)`` is exact in float32 too.
MAX_THRESHOLD = (1 << 17) - 1
STEP_MODES = ("s", "m")


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` forward, identity backward."""
    return x + (torch.round(x) - x).detach()


def _trunc_ste(x: torch.Tensor) -> torch.Tensor:
    """``x`` rounded toward zero forward (Lava's shift of the magnitude), identity backward."""
    return x + (torch.trunc(x) - x).detach()


def quantize_weight(weight: torch.Tensor, scale: float, bits: int) -> torch.Tensor:
    """Loihi's integer weight mantissas of ``weight``: ``clamp(round(weight * scale))`` to
    ``bits`` signed bits, with the straight-through estimator for the gradient."""
    limit = 1 << (bits - 1)
    scaled = weight * scale
    clamped = scaled + (torch.clamp(scaled, -limit, limit - 1) - scaled).detach()
    return _round_ste(clamped)


def _check_mode(owner: str, step_mode: str) -> str:
    if step_mode not in STEP_MODES:
        raise HubError(f"{owner}: step_mode is 's' (one step per call) or 'm' ([T, N, ...]), "
                       f"got {step_mode!r}", field="step_mode")
    return step_mode


class _Synapse(torch.nn.Module):
    """Shared by the weighted synapses: the mantissa grid, its scale and bits."""

    def __init__(self, scale: float, weight_bits: int, step_mode: str) -> None:
        super().__init__()
        if not 2 <= weight_bits <= 8:
            raise HubError(f"{type(self).__name__}: Loihi weight mantissas have 2 to 8 bits, got "
                           f"{weight_bits}", field="weight_bits")
        if not scale > 0:
            raise HubError(f"{type(self).__name__}: scale must be positive, got {scale}",
                           field="scale")
        self.scale = float(scale)
        self.weight_bits = int(weight_bits)
        self.step_mode = _check_mode(type(self).__name__, step_mode)

    def mantissas(self) -> torch.Tensor:
        """The integer weights Loihi holds (as a float tensor; differentiable by STE)."""
        return quantize_weight(self.weight, self.scale, self.weight_bits)

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}, weight_bits={self.weight_bits}, step_mode={self.step_mode!r}"


class LoihiDense(_Synapse):
    """A dense synapse with Loihi's integer weights: ``x @ mantissas().T``, no bias.

    ``weight`` (float, ``[out, in]``) is initialised as torch's ``Linear`` is, times
    ``init_gain``; the forward uses ``round(weight * scale)`` clamped to ``weight_bits``.
    """

    def __init__(self, in_features: int, out_features: int, *, scale: float = 64.0,
                 weight_bits: int = 8, init_gain: float = 1.0, step_mode: str = "m") -> None:
        super().__init__(scale, weight_bits, step_mode)
        linear = torch.nn.Linear(in_features, out_features, bias=False)
        self.weight = torch.nn.Parameter(linear.weight.detach() * init_gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.mantissas().to(x.dtype))


class LoihiConv2d(_Synapse):
    """A 2-d convolution with Loihi's integer weights (torch's ``Conv2d`` arguments, no bias).

    Takes ``[N, C, H, W]`` (``step_mode="s"``) or ``[T, N, C, H, W]`` (``"m"``).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int], *,
                 stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0,
                 dilation: int | Sequence[int] = 1, groups: int = 1, scale: float = 64.0,
                 weight_bits: int = 8, init_gain: float = 1.0, step_mode: str = "m") -> None:
        super().__init__(scale, weight_bits, step_mode)
        if isinstance(padding, str):
            raise HubError(f"LoihiConv2d: padding {padding!r}: give the padding in pixels (netx "
                           "stores integers)", field="padding")
        conv = torch.nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                               padding=padding, dilation=dilation, groups=groups, bias=False)
        self.weight = torch.nn.Parameter(conv.weight.detach() * init_gain)
        self.stride, self.padding = conv.stride, conv.padding
        self.dilation, self.groups = conv.dilation, conv.groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _per_step(self, x, lambda y: F.conv2d(
            y, self.mantissas().to(y.dtype), None, self.stride, self.padding, self.dilation,
            self.groups))


class SumPool2d(torch.nn.Module):
    """Sum pooling (unit weights): what netx runs as a depthwise conv layer with weights 1."""

    def __init__(self, kernel_size: int | Sequence[int], stride: int | Sequence[int] | None = None,
                 padding: int | Sequence[int] = 0, *, step_mode: str = "m") -> None:
        super().__init__()
        self.kernel_size = torch.nn.modules.utils._pair(kernel_size)
        self.stride = torch.nn.modules.utils._pair(kernel_size if stride is None else stride)
        self.padding = torch.nn.modules.utils._pair(padding)
        self.step_mode = _check_mode("SumPool2d", step_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _per_step(self, x, lambda y: F.avg_pool2d(
            y, self.kernel_size, self.stride, self.padding, count_include_pad=True,
            divisor_override=1))


class Flatten(torch.nn.Module):
    """Flattens the feature axes ``C, H, W`` (torch's order, as netx), in either step mode."""

    def __init__(self, *, step_mode: str = "m") -> None:
        super().__init__()
        self.step_mode = _check_mode("Flatten", step_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2 if self.step_mode == "m" else 1)


def _per_step(module: torch.nn.Module, x: torch.Tensor, op: Any) -> torch.Tensor:
    """Apply a per-sample 2-d operation to ``[N, C, H, W]`` or, folding time, ``[T, N, ...]``."""
    if module.step_mode == "s":
        return op(x)
    if x.dim() != 5:
        raise HubError(f"{type(module).__name__} (step_mode='m') takes [T, N, C, H, W], got "
                       f"{list(x.shape)}", field="input")
    y = op(x.flatten(0, 1))
    return y.reshape(*x.shape[:2], *y.shape[1:])


class LoihiNeuron(torch.nn.Module):
    """Loihi's CUBA neuron (:class:`hub.LoihiCUBA`) with a surrogate gradient (module docstring).

    ``i_decay``, ``v_decay``: 12-bit decays, 0 (none) to 4096 (cleared each step);
    ``threshold``: the mantissa, spikes where ``v > threshold << 6``. One value each (netx's
    neuron takes one per layer).
    """

    def __init__(self, *, i_decay: int = DECAY_UNITY, v_decay: int = 0, threshold: int = 64,
                 step_mode: str = "m") -> None:
        super().__init__()
        for name, value, top in (("i_decay", i_decay, DECAY_UNITY),
                                 ("v_decay", v_decay, DECAY_UNITY),
                                 ("threshold", threshold, MAX_THRESHOLD)):
            if int(value) != value or not 0 <= value <= top:
                raise HubError(f"LoihiNeuron: {name} is an integer 0 to {top}, got {value!r}",
                               field=name)
        self.i_decay, self.v_decay, self.threshold = int(i_decay), int(v_decay), int(threshold)
        self.step_mode = _check_mode("LoihiNeuron", step_mode)
        self.state: tuple[torch.Tensor, torch.Tensor] | None = None

    def reset(self) -> None:
        """Forget the state (``step_mode="s"``): the next call starts from zero."""
        self.state = None

    def extra_repr(self) -> str:
        return (f"i_decay={self.i_decay}, v_decay={self.v_decay}, threshold={self.threshold}, "
                f"step_mode={self.step_mode!r}")

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        if self.step_mode == "m":
            state = self._zeros(a[0])
            out = []
            for t in range(a.shape[0]):
                s, state = self._step(a[t], state)
                out.append(s)
            return torch.stack(out)
        if self.state is None:
            self.state = self._zeros(a)
        elif self.state[0].shape != a.shape:
            raise HubError(f"LoihiNeuron: the input's shape {list(a.shape)} differs from the "
                           f"state's {list(self.state[0].shape)}; call reset() between sequences",
                           field="input")
        s, self.state = self._step(a, self.state)
        return s

    @staticmethod
    def _zeros(like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        zeros = torch.zeros(like.shape, dtype=torch.float64, device=like.device)
        return zeros, zeros.clone()

    def _step(self, a: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
              ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        u, v = state
        u = _trunc_ste(u * ((DECAY_UNITY - self.i_decay) / DECAY_UNITY)) + a.double() * 64
        # the 24-bit wrap as Lava writes it (the second test sees the first), identity backward
        wrapped = torch.where(u > MAX_UV, u - 2 * MAX_UV, u)
        wrapped = torch.where(wrapped <= -MAX_UV, u + 2 * MAX_UV, wrapped)
        u = u + (wrapped - u).detach()
        v = _trunc_ste(v * ((DECAY_UNITY - self.v_decay) / DECAY_UNITY)) + u
        v = torch.clamp(v, -MAX_UV + 1, MAX_UV - 1)
        vth = float(self.threshold << VTH_SHIFT)
        s = spike((v - vth) / max(vth, 64.0))
        v = v * (1 - s.detach())
        return s.to(a.dtype), (u, v)


# -- to the canonical graph -----------------------------------------------------------------


def _layers(model: torch.nn.Module, prefix: str = "") -> Iterator[tuple[str, torch.nn.Module]]:
    if isinstance(model, (torch.nn.Sequential, torch.nn.ModuleList)):
        for name, child in model.named_children():
            yield from _layers(child, f"{prefix}{name}.")
        return
    yield prefix.rstrip(".") or type(model).__name__, model


def to_graph(model: torch.nn.Module, input_shape: Sequence[int]) -> Graph:
    """The canonical graph of a model of QAT blocks, computing exactly what its forward does.

    ``model``: a block, or a ``torch.nn.Sequential`` / ``ModuleList`` of them (nested ones are
    flattened), run in order: :class:`LoihiDense`, :class:`LoihiConv2d`, :class:`SumPool2d`,
    :class:`Flatten` (or ``torch.nn.Flatten`` over all feature axes), :class:`LoihiNeuron`;
    ``torch.nn.Identity`` and ``torch.nn.Dropout`` (identity in evaluation) are skipped.
    ``input_shape``: one sample's features, e.g. ``(1, 8, 8)``. Anything else raises
    :class:`hub.UnsupportedError` naming the module.
    """
    shape = tuple(int(s) for s in input_shape)
    nodes: list[tuple[str, Any]] = [("input", Input(shape=shape))]
    for name, module in _layers(model):
        key = name.replace(".", "_")
        if isinstance(module, (torch.nn.Identity, torch.nn.Dropout)):
            continue
        if isinstance(module, LoihiDense):
            node: Any = Linear(weight=module.mantissas().detach().cpu().numpy())
        elif isinstance(module, LoihiConv2d):
            node = Conv2d(weight=module.mantissas().detach().cpu().numpy(), stride=module.stride,
                          padding=module.padding, dilation=module.dilation, groups=module.groups)
        elif isinstance(module, SumPool2d):
            node = SumPoolNode(kernel_size=module.kernel_size, stride=module.stride,
                               padding=module.padding)
        elif isinstance(module, Flatten):
            node = FlattenNode()
        elif isinstance(module, torch.nn.Flatten):
            current = Graph.chain(*nodes).plan().output_shapes[nodes[-1][0]]
            if (module.start_dim, module.end_dim) != (-len(current), -1):
                raise UnsupportedError(f"a torch Flatten maps to the graph's only where it "
                                       f"flattens every feature axis: start_dim="
                                       f"{-len(current)}, end_dim=-1 here (or use "
                                       "hub.qat.Flatten)", node=name, field="start_dim")
            node = FlattenNode()
        elif isinstance(module, LoihiNeuron):
            node = LoihiCUBA(i_decay=module.i_decay, v_decay=module.v_decay,
                             threshold=module.threshold)
        else:
            raise UnsupportedError(f"{type(module).__name__} is not a QAT block; build the model "
                                   "from hub.qat's LoihiDense, LoihiConv2d, SumPool2d, Flatten "
                                   "and LoihiNeuron", node=name, field="type")
        nodes.append((key, node))
    if len(nodes) < 2:
        raise UnsupportedError("the model has no QAT blocks", node=type(model).__name__)
    graph = Graph.chain(*nodes)
    graph.plan()  # the shapes must fit together
    return graph
