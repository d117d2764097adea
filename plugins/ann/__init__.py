r"""The ``ann`` format: trained ReLU networks, converted to rate-coded spiking networks.

``hub.load(relu_net, source="ann", calibration=loader)`` (or ``hub.convert(..., source="ann")``)
turns a trained torch ReLU network into a canonical graph of integrate-and-fire neurons whose
firing rates approximate the ReLU activations, by data-based normalisation (Diehl et al. 2015,
Rueckauer et al. 2017). It only imports: there is no export back to an ANN.

What it takes
-------------
An ``nn.Sequential`` or any module that ``torch.fx`` can trace, built from:
``Conv1d``/``Conv2d``/``Linear``; ``BatchNorm1d``/``BatchNorm2d`` right after one of those (folded
into it with the running statistics, as in eval mode); ``ReLU`` (module, ``F.relu``,
``torch.relu``, ``.relu()``); the sum of two activations (``a + b``, ``a += b``, ``torch.add``:
residual skip connections); ``AvgPool2d``; ``AdaptiveAvgPool2d`` at the traced input size where
the output is the input (dropped), where each input side is a multiple of the output side (an
``AvgPool2d``), or, any sizes, right before a ``Flatten`` and a ``Linear`` (folded into that
``Linear``, below); ``Flatten``, ``torch.flatten``, ``.view``/``.reshape`` that merge sample
axes (which axes is read from the shapes, so ``[N, C, 1, 1]`` to ``[N, C]`` is a Flatten);
``Dropout`` and ``Identity`` (dropped: eval mode). ``MaxPool2d`` is refused unless
``maxpool="approximate"``. Anything else (another activation, a concatenation, a product, a
softmax) is refused with :class:`hub.UnsupportedError` naming the module. Converting never
changes the model: it works on a copy in eval mode.

The method
----------
Split the chain at its ReLUs. Layer ``l`` is the affine map between ReLU ``l-1`` (or the input)
and ReLU ``l``: exactly one convolution or linear layer, with any pooling and flattening around
it. Its ANN activation is ``a_l = relu(W_l a_{l-1} + b_l)`` (pooling is linear and commutes with
the scale, so it is left out here).

*Neurons.* Each ReLU becomes an ``IF`` neuron per element: ``v = v + z``; spike when
``v > 1`` (``comparison=">"``, or ``">="``); on a spike ``v = v - 1`` (reset by subtraction, in
the same step); ``v`` starts at ``v_init``. With a constant input current ``0 <= z <= 1`` and
threshold 1, write ``w_t = v_init + t z``; then ``v_t = w_t - n_t`` where ``n_t`` is the number of
spikes so far, and by induction over the steps (``v`` gains at most 1 per step, so it crosses at
most one threshold) ``n_t = floor(w_t)`` for ``">="`` (``v_t`` stays in ``[0, 1)``) and
``n_t = max(0, ceil(w_t) - 1)`` for ``">"`` (``v_t`` in ``[0, 1]``); the two differ only where
``w_t`` is a whole number. So the rate ``n_t / t`` is ``z + (v_init - v_t) / t``: ``z`` to within
``1/t``, and within ``1/(2t)`` for ``v_init = 0.5``. Input above 1 gives a spike every step (the
rate saturates at 1). Reset by subtraction keeps the remainder ``v_t``, so no input is lost
(reset to zero would throw away up to one threshold per spike and bias every rate low);
negative input drives ``v`` below zero and gives no spikes, which is the ReLU's zero.
``v_init = 0.5`` (the default) centres the error, rounding ``t z`` to the nearest whole spike
instead of down (Bu et al. 2022); ``v_init=0`` is the classic choice.
``reset_timing="next"`` subtracts the threshold at the start of the next step instead (snnTorch's
``reset_delay``): the same spikes in exact arithmetic, possibly not in float. The options exist
so that a target framework can be met exactly: snnTorch needs ``v_init=0, reset_timing="next"``,
SpikingJelly ``comparison=">="`` and ``readout="spikes"`` (docs/ann2snn.md).

*Normalisation.* Pick a scale ``lambda_l`` per layer from the calibration data: the largest
activation of ReLU ``l`` (``mode="max"``), a percentile ``p`` of its positive activations
(``mode="99.9%"``: a few outliers no longer compress every other rate into a few spikes; what
lies above saturates at one spike per step), or a fraction ``f`` of the largest
(``mode=0.5``). Then ``W'_l = W_l lambda_{l-1} / lambda_l`` and ``b'_l = b_l / lambda_l``, with
``lambda_0 = 1`` (the input is not rescaled). If layer ``l-1`` fires at rate
``r_{l-1} ~ a_{l-1} / lambda_{l-1}``, layer ``l``'s mean input current is
``(W_l a_{l-1} + b_l) / lambda_l``, so its rate is ``~ a_l / lambda_l``, clipped at 1: by
induction every layer's rate, times ``lambda_l``, approximates its ReLU activation. Bias terms
are a constant current each step.

*Skip connections.* Every value between neurons is a linear function of the spikes of the
neuron layers (or the input) it comes from, so it is kept in a known unit. Before any weight
layer a value is in the units of its source ``s``: the ANN's value is ``lambda_s`` times it
(pooling and flattening keep that). A weight layer on the way to neuron layer ``d`` gets
``W' = W lambda_s / lambda_d``, ``b' = b / lambda_d``: its output is in ``d``'s units. An
addition ``z = u + v`` feeding ``d`` must add values in one unit, so each branch is brought to
``d``'s units: a branch with a weight layer is already there; a branch with none (a ResNet's
identity shortcut, from neuron layer ``s``) is multiplied by ``lambda_s / lambda_d``. Then ``d``
receives ``(u + v) / lambda_d = z / lambda_d``, its rate approximates ``relu(z) / lambda_d``,
and the induction above goes on through the block. Without the factor the shortcut would arrive
``lambda_s / lambda_d`` times too strong or weak (``tests/test_ann.py`` shows the rate check
failing for it). The factor is a per-channel 1x1 convolution (a diagonal ``Affine`` for
vectors): each output is one product ``w x``, exactly ``ratio * x`` in float32, and every torch
target has the layer (``Scale`` would say the same, but fewer formats export it); an addition
of two values already in one unit needs none. A ``ReLU`` whose input has no weight layer
between it and a neuron layer is dropped (its input is never negative). Each path from a
neuron layer to the next holds at most one weight layer, and a value after a weight layer may
feed only one neuron layer (or the output): it is scaled for that one.

*Adaptive pooling before a Linear.* Average pooling to any size is a linear map ``P`` per
channel, from ``h*w`` positions to ``k*l``, so ``W flatten(pool(x)) = W' flatten(x)`` with
``W'[o, c, :] = W[o, c, :] P``: exact in real arithmetic, computed in float64. VGG's
``AdaptiveAvgPool2d(7)`` after a 1x1 map (a 32x32 input) replicates each channel 49 times; its
``W'`` sums the 49 weights of each channel, and ``Linear(25088, 4096)`` becomes
``Linear(512, 4096)``. Anywhere else, adaptive pooling with windows of different sizes is
refused.

*Input.* The analog input ``x`` is applied unchanged as the first layer's input current at every
time step: feed ``present(x, steps)``, i.e. ``x`` repeated ``T`` times along a new time axis
(``[T, N, *x.shape[1:]]``).

*Readout* (``readout=``). ``"integrate"`` (default): the last layer (no ReLU after it, as in a
classifier's logits) becomes a non-spiking ``Integrator`` (``v = v + z``, gain 1, i.e. an LI with
beta 1) fed by ``W_L lambda_{L-1} s + b_L``; after ``T`` steps ``v / T`` approximates the ANN's
output itself (unclipped, negative values included), so ``argmax(v)`` is the prediction. This is
the most accurate readout: it never saturates and has no spike-count ties. If the network ends
with a ReLU, the integrator sums that last IF layer's spikes with gain ``lambda_L`` instead.
``"spikes"``: the last layer spikes too (normalised like the others, by the statistics of
``relu`` of the output), and the prediction is the neuron with the most spikes; positive outputs
only, ties possible, a little less accurate.

Graph metadata ``"ann"`` records the options and each layer's ``lambda``.
"""

from __future__ import annotations

import copy
import math
import operator
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

import hub
from hub.errors import FormatError, HubError, UnsupportedError
from hub_plugins.torch_layers import import_conv, import_layer

MODES_HELP = ("mode='max', a percentile string like '99.9%', or a fraction of the maximum in "
              "(0, 1] like 0.5")
#: At most this many positive activations per layer are kept for a percentile; beyond it a
#: uniform random sample of them is kept (the maximum is always exact).
MAX_SAMPLES = 1 << 24
#: Node types the converter produces.
PRODUCES = frozenset({"Input", "Output", "Conv1d", "Conv2d", "Affine", "AvgPool2d", "MaxPool2d",
                      "Flatten", "Add", "IF", "Integrator"})


class ANNFormat(hub.Format):
    name = "ann"
    aliases = ("relu",)
    description = ("trained torch ReLU networks, converted to rate-coded IF networks with "
                   "calibration data (import only)")
    requires = ("torch",)
    install_hint = "torch"
    load_options = ("calibration", "mode", "maxpool", "readout", "comparison", "v_init",
                    "reset_timing", "progress")
    imports = PRODUCES

    def recognizes(self, obj: Any) -> bool:
        """A torch module built only from layers this converter takes, with at least one ReLU."""
        import torch.nn as nn

        if not isinstance(obj, nn.Module):
            return False
        leaves = [m for m in obj.modules() if not list(m.children())]
        return (any(isinstance(m, nn.ReLU) for m in leaves)
                and all(isinstance(m, _known_leaves()) for m in leaves))

    def load(self, obj: Any, calibration: Any = None, mode: str | float = "99.9%",
             maxpool: str = "refuse", readout: str = "integrate", comparison: str = ">",
             v_init: float = 0.5, reset_timing: str = "same",
             progress: bool | None = None) -> hub.Graph:
        return convert(obj, calibration, mode=mode, maxpool=maxpool, readout=readout,
                       comparison=comparison, v_init=v_init, reset_timing=reset_timing,
                       progress=progress)


# -- the public helpers ------------------------------------------------------------------------


def convert(model: Any, calibration: Any, *, mode: str | float = "99.9%",
            maxpool: str = "refuse", readout: str = "integrate", comparison: str = ">",
            v_init: float = 0.5, reset_timing: str = "same",
            progress: bool | None = None) -> hub.Graph:
    """Convert the ReLU network ``model`` with ``calibration`` data (module docstring).

    ``calibration`` is an iterable of input batches ``[N, *in]`` or of ``(x, y, ...)`` tuples
    (a ``DataLoader``), or one tensor holding a batch. ``progress`` shows a bar during
    calibration: ``None`` shows it on a terminal only.
    """
    fraction, percentile = _parse_mode(mode)
    if maxpool not in ("refuse", "approximate"):
        raise HubError(f"maxpool={maxpool!r}: expected 'refuse' (the default) or 'approximate'")
    if readout not in ("integrate", "spikes"):
        raise HubError(f"readout={readout!r}: expected 'integrate' (the default) or 'spikes'")
    if comparison not in (">", ">="):
        raise HubError(f"comparison={comparison!r}: expected '>' (the default) or '>='")
    if reset_timing not in ("same", "next"):
        raise HubError(f"reset_timing={reset_timing!r}: expected 'same' (the default) or 'next'")
    if isinstance(v_init, bool) or not isinstance(v_init, (int, float)) \
            or not 0.0 <= float(v_init) < 1.0:
        raise HubError(f"v_init={v_init!r}: expected a number in [0, 1), a fraction of the "
                       "threshold (0.5 centres the rate error, 0 is the classic choice)")
    if calibration is None:
        raise HubError("the 'ann' format needs calibration=<data>: an iterable of input batches "
                       "(or (x, y) tuples, e.g. a DataLoader) to measure each layer's activations")
    batches = _batches(calibration)
    first = next(batches, None)
    if first is None:
        raise HubError("calibration: the data loader is empty; give it at least one batch")
    net = trace(model, first, maxpool=maxpool)
    plan = _plan(net, readout)
    stats = _calibrate(net, plan, first, batches, percentile=percentile is not None,
                       show=progress, total=_samples(calibration))
    scales = {key: stat.scale(fraction, percentile, _scale_name(net, key))
              for key, stat in stats.items()}
    return _build(net, plan, scales, mode=mode, readout=readout, comparison=comparison,
                  v_init=float(v_init), reset_timing=reset_timing)


def present(x: Any, steps: int) -> Any:
    """The analog input ``x`` (``[N, *in]``) as a constant current for ``steps`` time steps."""
    import torch

    x = torch.as_tensor(x)
    return x.unsqueeze(0).expand(steps, *x.shape)


def folded(model: Any, example: Any, *, maxpool: str = "refuse") -> Any:
    """The network as the converter sees it: batch norm folded into the layers before it,
    dropout and identities gone, adaptive pooling as ``AvgPool2d`` or folded into the ``Linear``
    after it. A chain is an ``nn.Sequential``; a network with additions a module that runs the
    same steps. It computes what ``model`` computes in eval mode, up to float rounding.
    ``example`` is one input batch, for tracing shapes."""
    import torch.nn as nn

    net = trace(model, _as_batch(example, "example"), maxpool=maxpool)
    keys = list(net.steps)
    if all(step.kind != "add" and step.inputs == [prev]
           for step, prev in zip(net.steps.values(), ["input", *keys])):
        return nn.Sequential(OrderedDict((_node_name(s), s.module) for s in net.steps.values()))
    return _Folded(net)


# -- reading the network -----------------------------------------------------------------------


@dataclass
class _Step:
    """One operation: ``name`` in the ANN, what it is, a torch module doing it, the keys of the
    steps it reads (``"input"`` for the network's input) and its output shape (batch first)."""

    name: str
    kind: str  # "weight", "relu", "avgpool", "maxpool", "flatten", "add", "adaptive", "bn"
    module: Any
    inputs: list[str] = field(default_factory=list)
    shape: tuple[int, ...] = ()
    bn: str | None = None  # the batch norm folded into it


@dataclass
class _Net:
    """The traced network: its steps by key (the torch.fx node name; a module called twice gives
    two steps), in an order where each step comes after the ones it reads, and which step's
    value it returns."""

    steps: dict[str, _Step]
    output: str
    in_shape: tuple[int, ...]  # of one sample, without the batch axis

    def consumers(self) -> dict[str, list[str]]:
        users: dict[str, list[str]] = {key: [] for key in ["input", *self.steps]}
        for key, step in self.steps.items():
            for source in dict.fromkeys(step.inputs):
                users[source].append(key)
        return users

    def run(self, x: Any, seen: Any = None) -> Any:
        """The network's output for ``x``; ``seen(key, value)`` sees each step's value."""
        values, users = {"input": x}, self.consumers()
        left = {key: len(found) for key, found in users.items()}
        for key, step in self.steps.items():
            args = [values[source] for source in step.inputs]
            values[key] = sum(args[1:], args[0]) if step.kind == "add" else step.module(*args)
            if seen is not None:
                seen(key, values[key])
            for source in dict.fromkeys(step.inputs):  # free what no later step reads
                left[source] -= 1
                if not left[source] and source != self.output:
                    del values[source]
        return values[self.output]


def _Folded(net: _Net) -> Any:
    """An ``nn.Module`` that runs the folded steps of ``net`` (for networks with additions)."""
    import torch.nn as nn

    class Folded(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            self.layers = nn.ModuleDict({_node_name(s).replace(".", "_") + f"_{i}": s.module
                                         for i, s in enumerate(net.steps.values())
                                         if s.module is not None})

        def forward(self, x: Any) -> Any:
            return self.net.run(x)

    return Folded()


def _known_leaves() -> tuple[type, ...]:
    import torch.nn as nn

    return (nn.Conv1d, nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU,
            nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.MaxPool2d, nn.Flatten, nn.Dropout,
            nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity)


def trace(model: Any, example: Any, *, maxpool: str = "refuse") -> _Net:
    """The operations of ``model`` (a copy, in eval mode, batch norm and adaptive pooling
    folded) and how they connect."""
    import torch
    import torch.fx
    import torch.nn as nn
    from torch.fx.passes.shape_prop import ShapeProp

    if not isinstance(model, nn.Module):
        raise FormatError(f"the 'ann' format converts torch.nn.Module networks, got "
                          f"{type(model).__name__}")
    net = copy.deepcopy(model).eval()
    try:
        gm = torch.fx.symbolic_trace(net)
    except Exception as e:
        raise UnsupportedError(f"torch.fx cannot trace {type(model).__name__}: "
                               f"{type(e).__name__}: {e}. Pass an nn.Sequential, or a module "
                               "whose forward has no data-dependent control flow") from None
    example = example.to(_device(net), torch.float32)
    gm = gm.float()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(example)
    except Exception as e:
        raise FormatError(f"running {type(model).__name__} on a calibration batch of shape "
                          f"{list(example.shape)} failed: {type(e).__name__}: {e}") from None

    steps: dict[str, _Step] = {}
    value: dict[Any, str | None] = {}  # fx node -> the key of the step whose value it is
    users: dict[str, int] = {}  # step key -> how many fx nodes read it
    output = None
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            if value:
                raise UnsupportedError("the network takes several inputs; only one is supported",
                                       node=node.name)
            value[node] = "input"
            continue
        if node.op == "output":
            result = node.args[0]
            if not isinstance(result, torch.fx.Node) or value.get(result) is None:
                raise UnsupportedError("the network's output is not one tensor (several "
                                       "outputs, or a tuple); return one tensor", node=node.name)
            output = value[result]
            break
        if node.op == "get_attr":
            raise UnsupportedError(f"the forward uses the tensor {node.target!r} directly; only "
                                   "layers (modules) and activations can be converted",
                                   node=node.name)
        if _meta(node) is None:  # x.size(0) and the like: plain numbers for a reshape
            if isinstance(node.meta.get("tensor_meta"), (tuple, list)):
                raise UnsupportedError(f"{_describe(gm, node)} returns several tensors; the "
                                       f"'ann' format takes {_SUPPORTED}", node=_where(node))
            continue
        tensors = [a for a in node.all_input_nodes if _meta(a) is not None]
        for a in tensors:
            if value[a] is None:
                raise UnsupportedError(f"{_describe(gm, node)} reads {a.name!r} before the "
                                       "batch norm after it, which is folded into that layer; "
                                       "only the batch norm may read a layer it folds into",
                                       node=_where(node))
            users[value[a]] = users.get(value[a], 0) + 1
        step = _step(gm, node, tensors, maxpool)
        if step is None:  # vanishes in eval mode: its value is its input's
            value[node] = value[tensors[0]]
            continue
        step.shape = tuple(_meta(node).shape)
        if step.kind == "bn":
            source = _fold(steps, users, step, value[tensors[0]])
            for a, key in list(value.items()):
                if key == source:
                    value[a] = None  # the value before the batch norm is gone
            value[node] = source
            continue
        args = node.args[:2] if step.kind == "add" else tensors
        step.inputs = [value[a] for a in args]
        steps[node.name] = step
        value[node] = node.name
    if output is None or output == "input":
        raise UnsupportedError("the network returns its input unchanged; there is nothing to "
                               "convert")
    net = _Net(_reaching(steps, output), output, tuple(example.shape[1:]))
    _fold_adaptive(net)
    return net


def _reaching(steps: dict[str, _Step], output: str) -> dict[str, _Step]:
    """The steps that the output depends on (a value computed and never used is left out)."""
    needed, stack = set(), [output]
    while stack:
        key = stack.pop()
        if key in needed or key == "input":
            continue
        needed.add(key)
        stack.extend(steps[key].inputs)
    return {key: step for key, step in steps.items() if key in needed}


def _meta(node: Any) -> Any:
    from torch.fx.passes.shape_prop import TensorMetadata

    meta = node.meta.get("tensor_meta")
    return meta if isinstance(meta, TensorMetadata) else None


def _where(node: Any) -> str:
    return str(node.target) if node.op == "call_module" else node.name


def _describe(gm: Any, node: Any) -> str:
    if node.op == "call_module":
        return f"module {node.target!r} ({type(gm.get_submodule(node.target)).__name__})"
    if node.op == "call_method":
        return f"method call .{node.target}() ({node.name!r})"
    target = getattr(node.target, "__name__", str(node.target))
    return f"function {target}() ({node.name!r})"


_SUPPORTED = ("Conv1d, Conv2d, Linear, BatchNorm1d/2d right after a convolution or linear layer, "
              "ReLU, additions of two activations (skip connections), AvgPool2d, "
              "AdaptiveAvgPool2d (sizes that divide, or right before Flatten and Linear), "
              "MaxPool2d (with maxpool='approximate'), Flatten/view/reshape, Dropout, Identity")


def _step(gm: Any, node: Any, tensors: list[Any], maxpool: str) -> _Step | None:
    """The step for one traced call, ``None`` for those that vanish in eval mode."""
    import torch
    import torch.fx
    import torch.nn as nn
    import torch.nn.functional as F

    name = _where(node)
    target = node.target
    if node.op == "call_function" and target in (operator.add, operator.iadd, torch.add) \
            or node.op == "call_method" and target in ("add", "add_"):
        if len(node.args) != 2 or set(node.kwargs) - {"out"} or node.kwargs.get("out") \
                or not all(isinstance(a, torch.fx.Node) and a in tensors for a in node.args):
            raise UnsupportedError(f"{_describe(gm, node)}: only the sum of two activations "
                                   "converts (a skip connection); adding a constant or a scaled "
                                   "tensor (alpha=) does not", node=name)
        shapes = {tuple(_meta(a).shape) for a in node.args}
        if len(shapes) > 1:
            raise UnsupportedError(f"{_describe(gm, node)} adds tensors of shapes "
                                   f"{' and '.join(str(list(s)) for s in shapes)}; only "
                                   "same-shape additions convert (no broadcasting)", node=name)
        return _Step(name, "add", None)
    if len(tensors) != 1:
        raise UnsupportedError(
            f"{_describe(gm, node)} takes {len(tensors)} tensor inputs "
            f"({', '.join(repr(a.name) for a in tensors)}); only additions of two activations "
            "(skip connections) join branches, no concatenations or products", node=name)
    in_shape, out_shape = tuple(_meta(tensors[0]).shape), tuple(_meta(node).shape)
    if node.op == "call_module":
        mod = gm.get_submodule(node.target)
        if isinstance(mod, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
                            nn.AlphaDropout, nn.FeatureAlphaDropout, nn.Identity)):
            return None
        if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            return _Step(name, "weight", _weight_copy(mod, name, in_shape))
        if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
            return _Step(name, "bn", mod)
        if isinstance(mod, nn.ReLU):
            return _Step(name, "relu", nn.ReLU())
        if isinstance(mod, nn.AvgPool2d):
            if mod.divisor_override is not None:
                raise UnsupportedError("divisor_override has no canonical equivalent",
                                       node=name, field="divisor_override")
            return _pool(name, "avgpool", mod.kernel_size, mod.stride, mod.padding, in_shape,
                         out_shape, exclude_pad=not mod.count_include_pad)
        if isinstance(mod, nn.AdaptiveAvgPool2d):
            return _adaptive(name, mod, in_shape, out_shape)
        if isinstance(mod, nn.MaxPool2d):
            if mod.return_indices or _pair(mod.dilation) != (1, 1):
                raise UnsupportedError("max pooling with dilation or return_indices cannot be "
                                       "converted", node=name)
            _maxpool_allowed(name, maxpool)
            return _pool(name, "maxpool", mod.kernel_size, mod.stride, mod.padding, in_shape,
                         out_shape)
        if isinstance(mod, nn.Flatten):
            return _flatten(name, in_shape, out_shape)
        if isinstance(mod, tuple(_activations())):
            raise UnsupportedError(
                f"{type(mod).__name__} activation cannot be converted: only ReLU has a "
                "rate-coded IF equivalent (an IF neuron's rate is a ReLU clipped at one spike "
                "per step); retrain with nn.ReLU", node=name)
        raise UnsupportedError(f"{type(mod).__name__} cannot be converted to spiking neurons; "
                               f"the 'ann' format takes {_SUPPORTED}", node=name)
    if node.op == "call_function" and target in (F.relu, torch.relu, torch.relu_) \
            or node.op == "call_method" and target in ("relu", "relu_"):
        return _Step(name, "relu", nn.ReLU())
    if node.op == "call_function" and target in (F.dropout, F.dropout1d, F.dropout2d,
                                                 F.alpha_dropout):
        training = node.kwargs.get("training", node.args[2] if len(node.args) > 2 else True)
        if training is not False:
            raise UnsupportedError("functional dropout with training=True drops units even in "
                                   "eval mode; pass training=self.training", node=name)
        return None
    if node.op == "call_method" and target in ("contiguous", "clone"):
        return None
    if node.op == "call_function" and target in (torch.flatten, torch.reshape) \
            or node.op == "call_method" and target in ("flatten", "view", "reshape"):
        return _flatten(name, in_shape, out_shape)
    if node.op == "call_function" and target in (F.max_pool2d, torch.max_pool2d):
        _maxpool_allowed(name, maxpool)
        raise UnsupportedError("the functional max_pool2d cannot be converted; use "
                               "nn.MaxPool2d", node=name)
    if node.op == "call_function" and target in (operator.sub, torch.sub, operator.mul,
                                                 torch.mul, operator.truediv, torch.div):
        raise UnsupportedError(f"{_describe(gm, node)}: arithmetic on activations other than "
                               "the sum of two of them cannot be converted; the 'ann' format "
                               f"takes {_SUPPORTED}", node=name)
    fname = getattr(target, "__name__", str(target))
    if fname in _ACTIVATION_FUNCTIONS:
        raise UnsupportedError(f"{fname} activation cannot be converted: only ReLU has a "
                               "rate-coded IF equivalent; retrain with ReLU", node=name)
    raise UnsupportedError(f"{_describe(gm, node)} cannot be converted to spiking neurons; the "
                           f"'ann' format takes {_SUPPORTED}", node=name)


def _activations() -> list[type]:
    import torch.nn as nn
    import torch.nn.modules.activation as act

    return [c for c in vars(act).values()
            if isinstance(c, type) and issubclass(c, nn.Module) and c is not nn.Module]


_ACTIVATION_FUNCTIONS = {"sigmoid", "tanh", "gelu", "silu", "elu", "selu", "celu", "leaky_relu",
                         "relu6", "hardtanh", "softplus", "softmax", "log_softmax", "mish",
                         "hardswish", "hardsigmoid", "prelu", "softsign", "tanhshrink",
                         "threshold", "logsigmoid", "rrelu", "glu"}


def _maxpool_allowed(name: str, maxpool: str) -> None:
    if maxpool != "approximate":
        raise UnsupportedError(
            "max pooling has no exact rate-coded equivalent. Pass maxpool='approximate' to take "
            "the maximum over each window of the incoming spikes (which fires at least as often "
            "as the busiest input, more when inputs fire out of step), or retrain with "
            "nn.AvgPool2d", node=name)


def _pair(value: Any) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _pool(name: str, kind: str, kernel: Any, stride: Any, padding: Any, in_shape: tuple,
          out_shape: tuple, exclude_pad: bool = False) -> _Step:
    import torch.nn as nn

    if len(in_shape) != 4:
        raise UnsupportedError(f"2-d pooling of a {len(in_shape) - 1}-d sample cannot be "
                               "converted; only [C, H, W] inputs", node=name)
    kernel = _pair(kernel)
    stride = _pair(stride) if stride not in (None, ()) else kernel
    padding = _pair(padding)
    floor = tuple((n + 2 * p - k) // s + 1
                  for n, k, s, p in zip(in_shape[2:], kernel, stride, padding))
    if floor != tuple(out_shape[2:]):  # ceil_mode added a partial window
        raise UnsupportedError(f"ceil_mode gives output {list(out_shape[2:])} where the canonical "
                               f"pooling gives {list(floor)}; use ceil_mode=False", node=name,
                               field="ceil_mode")
    if exclude_pad and any(padding):
        raise UnsupportedError("count_include_pad=False with padding cannot be converted; the "
                               "canonical AvgPool2d counts the padding", node=name,
                               field="count_include_pad")
    module = (nn.AvgPool2d(kernel, stride, padding) if kind == "avgpool"
              else nn.MaxPool2d(kernel, stride, padding))
    return _Step(name, kind, module)


def _adaptive(name: str, mod: Any, in_shape: tuple, out_shape: tuple) -> _Step | None:
    """Adaptive average pooling at the traced size: nothing where the output is the input, an
    ``AvgPool2d`` where each output side divides the input side; otherwise a step that
    :func:`_fold_adaptive` folds into the ``Linear`` after it, or refuses."""
    sizes, outs = in_shape[2:], out_shape[2:]
    if len(sizes) != 2:
        raise UnsupportedError(f"2-d pooling of a {len(in_shape) - 1}-d sample cannot be "
                               "converted; only [C, H, W] inputs", node=name)
    if sizes == outs:
        return None
    if not any(n % o for n, o in zip(sizes, outs)):
        kernel = tuple(n // o for n, o in zip(sizes, outs))
        return _pool(name, "avgpool", kernel, kernel, (0, 0), in_shape, out_shape)
    return _Step(name, "adaptive", mod)


def _fold_adaptive(net: _Net) -> None:
    """Fold each adaptive pooling that is no ``AvgPool2d`` into the ``Linear`` it feeds through
    a ``Flatten`` of all its axes: pooling is a linear map ``P`` from ``[C, h*w]`` to
    ``[C, k*l]`` (per channel), so ``W (flatten(P x))`` is ``W' flatten(x)`` with
    ``W'[o, c, :] = W[o, c, :] P``, exact in real arithmetic. (A 1x1 map replicated to k x k,
    as VGG's ``AdaptiveAvgPool2d(7)`` does at small inputs, makes ``W'`` the sum of ``W`` over
    the k x k positions.)"""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    users = net.consumers()
    for key, step in list(net.steps.items()):
        if step.kind != "adaptive":
            continue
        source = step.inputs[0]
        in_shape = net.steps[source].shape if source != "input" else (1, *net.in_shape)
        flat = users[key][0] if len(users[key]) == 1 else None
        linear = users[flat][0] if flat is not None and len(users[flat]) == 1 else None
        sizes, outs = list(in_shape[2:]), list(step.shape[2:])
        if (flat is None or net.steps[flat].kind != "flatten" or len(net.steps[flat].shape) != 2
                or linear is None or not isinstance(net.steps[linear].module, nn.Linear)
                or key == net.output or flat == net.output):
            raise UnsupportedError(
                f"adaptive average pooling from {sizes} to {outs} has windows of different "
                "sizes: it converts only where each output side divides the input side (an "
                "AvgPool2d), or right before a Flatten and a Linear layer (folded into its "
                "weights)", node=step.name)
        layer = net.steps[linear].module
        channels = in_shape[1]
        basis = torch.eye(sizes[0] * sizes[1], dtype=torch.float64).reshape(-1, 1, *sizes)
        pool = F.adaptive_avg_pool2d(basis, outs).reshape(len(basis), -1).T  # [k*l, h*w]
        weight = layer.weight.detach().reshape(layer.out_features, channels, -1)
        new = nn.Linear(channels * len(basis), layer.out_features, device="meta")
        new = new.to_empty(device=layer.weight.device)
        with torch.no_grad():
            for rows in range(0, layer.out_features, 256):  # in float64, a slice at a time
                part = weight[rows:rows + 256].double() @ pool.to(weight.device)
                new.weight[rows:rows + 256] = part.reshape(len(part), -1).float()
            new.bias.copy_(layer.bias)
        for p in new.parameters():
            p.requires_grad_(False)
        net.steps[linear].module = new
        net.steps[flat] = _flatten(net.steps[flat].name, tuple(in_shape),
                                   (in_shape[0], channels * len(basis)))
        net.steps[flat].inputs, net.steps[flat].shape = [source], (in_shape[0], new.in_features)
        del net.steps[key]


def _flatten(name: str, in_shape: tuple, out_shape: tuple) -> _Step | None:
    """A reshape that merges consecutive sample axes, as a Flatten; ``None`` if it is a no-op.

    Decided by the shapes alone: a reshape keeps the elements in order, so any ``start..end``
    whose merging gives ``out_shape`` is the reshape (with axes of size 1 several do, and all
    give the same tensor: ``[N, 32, 1, 1]`` to ``[N, 32]`` is merging axes 1..3)."""
    import torch.nn as nn

    if in_shape == out_shape:
        return None
    sample = in_shape[1:]
    if out_shape[:1] == in_shape[:1]:
        for start in range(len(sample)):
            for end in range(start + 1, len(sample)):
                merged = (*sample[:start], math.prod(sample[start:end + 1]), *sample[end + 1:])
                if merged == tuple(out_shape[1:]):
                    return _Step(name, "flatten", nn.Flatten(start + 1, end + 1))
    raise UnsupportedError(f"the reshape from {list(in_shape)} to {list(out_shape)} is not a "
                           "flattening of sample axes (the batch axis must stay first)",
                           node=name)


def _device(net: Any) -> Any:
    import torch

    for p in net.parameters():
        return p.device
    return torch.device("cpu")


def _weight_copy(mod: Any, name: str, in_shape: tuple) -> Any:
    """A float32 copy of a convolution or linear layer in the form the canonical nodes have."""
    import torch
    import torch.nn as nn

    if isinstance(mod, nn.Linear):  # on "meta": no random initialisation to overwrite
        new = nn.Linear(mod.in_features, mod.out_features, bias=True, device="meta")
    else:
        try:  # the shared mapping's padding rules (zero padding; 'same' where it is even)
            padding = import_conv(mod).padding
        except UnsupportedError as e:
            raise e.at(node=name) from None
        cls = nn.Conv2d if isinstance(mod, nn.Conv2d) else nn.Conv1d
        new = cls(mod.in_channels, mod.out_channels, mod.kernel_size, stride=mod.stride,
                  padding=padding, dilation=mod.dilation, groups=mod.groups, bias=True,
                  device="meta")
    new = new.to_empty(device=mod.weight.device)
    with torch.no_grad():
        new.weight.copy_(mod.weight.detach().float())
        if mod.bias is not None:
            new.bias.copy_(mod.bias.detach().float())
        else:
            new.bias.zero_()
    for p in new.parameters():
        p.requires_grad_(False)
    return new


def _fold(steps: dict[str, _Step], users: dict[str, int], bn_step: _Step, source: str) -> str:
    """Fold the eval-mode batch norm ``bn_step`` into the convolution or linear layer ``source``
    it reads: ``W' = W * g``, ``b' = (b - mean) * g + beta`` with ``g = gamma / sqrt(var + eps)``.
    Returns the key of the layer, whose output is now the batch norm's."""
    import torch
    import torch.nn as nn

    bn, name = bn_step.module, bn_step.name
    prev = steps.get(source)
    if prev is None or prev.kind != "weight" or prev.bn is not None:
        raise UnsupportedError("a BatchNorm folds only into the convolution or linear layer right "
                               "before it; move it after one, or fold it by hand", node=name)
    if users.get(source, 0) > 1:
        raise UnsupportedError(f"a BatchNorm folds only into a layer nothing else reads; the "
                               f"output of {prev.name!r} also goes elsewhere", node=name)
    if not bn.track_running_stats or bn.running_mean is None:
        raise UnsupportedError("a BatchNorm without running statistics normalises with each "
                               "batch's own statistics even in eval mode, so it cannot be folded",
                               node=name, field="track_running_stats")
    layer = prev.module
    want = 4 if isinstance(layer, nn.Conv2d) else 3 if isinstance(layer, nn.Conv1d) else 2
    if len(bn_step.shape) != want or bn.num_features != layer.weight.shape[0]:
        raise UnsupportedError(f"{type(bn).__name__}({bn.num_features}) does not fit "
                               f"{prev.name!r} ({type(layer).__name__} with "
                               f"{layer.weight.shape[0]} outputs)", node=name)
    mean = bn.running_mean.detach().double()
    var = bn.running_var.detach().double()
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(mean)
    g = gamma / torch.sqrt(var + bn.eps)
    with torch.no_grad():
        w = layer.weight.double() * g.reshape(-1, *([1] * (layer.weight.dim() - 1)))
        b = (layer.bias.double() - mean) * g + beta
        layer.weight.copy_(w.float())
        layer.bias.copy_(b.float())
    prev.bn = name
    return source


_DST = ""  # the unit of a value already scaled for the neurons it feeds


@dataclass
class _Plan:
    """Which ReLUs become IF layers, and in whose units each value is (module docstring).

    ``unit[key]`` is the key of the neuron layer (or ``"input"``) whose rate the value is in,
    before any weight layer: values there are the ANN's divided by that layer's scale; or
    ``_DST``, the units of the one destination ``dest[key]`` it feeds: a neuron layer, or
    ``"output"``."""

    neurons: list[str]
    dropped: set[str]
    unit: dict[str, str]
    dest: dict[str, str]
    spiking_output: bool


def _plan(net: _Net, readout: str) -> _Plan:
    unit, weight = {"input": "input"}, {"input": None}
    neurons: list[str] = []
    dropped: set[str] = set()
    for key, step in net.steps.items():
        first = step.inputs[0]
        if step.kind == "relu":
            if unit[first] == _DST:
                neurons.append(key)
                unit[key], weight[key] = key, None
            elif unit[first] != "input":  # relu(pool(relu(x))) = pool(relu(x)): signs kept
                dropped.add(key)
                unit[key], weight[key] = unit[first], None
            else:
                raise UnsupportedError(f"no convolution or linear layer comes before "
                                       f"{step.name!r}; a ReLU straight on the input cannot be "
                                       "converted", node=step.name)
        elif step.kind == "weight":
            if weight[first] is not None:
                raise UnsupportedError(f"{weight[first]!r} and {step.name!r} follow each other "
                                       "with no ReLU between; each spiking layer holds one "
                                       "weight layer on each path. Merge them or put a ReLU "
                                       "between", node=step.name)
            unit[key], weight[key] = _DST, step.name
        elif step.kind == "add":
            units = {unit[source] for source in step.inputs}
            unit[key] = units.pop() if len(units) == 1 else _DST
            weight[key] = next((weight[i] for i in step.inputs if weight[i] is not None), None)
        else:
            unit[key], weight[key] = unit[first], weight[first]
    if not neurons:
        raise UnsupportedError("the network has no ReLU after a weight layer, so it is not a "
                               "ReLU network; only ReLU activations have a rate-coded IF "
                               "equivalent")

    users = net.consumers()
    reach: dict[str, set[str]] = {}
    for key in reversed(list(net.steps)):
        found = {"output"} if key == net.output else set()
        for user in users[key]:
            found |= {user} if user in neurons else reach[user]
        reach[key] = found
    dest = {}
    for key, step in net.steps.items():
        if unit[key] != _DST:
            continue
        if len(reach[key]) > 1:
            names = sorted("the output" if d == "output" else repr(net.steps[d].name)
                           for d in reach[key])
            raise UnsupportedError(
                f"the output of {step.name!r} feeds {' and '.join(names)} with no ReLU between: "
                "a weighted sum can be scaled for one spiking layer only. Put a ReLU after it "
                "(only a neuron's spikes fan out to layers of different scales)", node=step.name)
        dest[key] = reach[key].pop()
    spiking_output = readout == "spikes" and unit[net.output] == _DST
    if readout == "spikes" and unit[net.output] != _DST and net.output not in neurons:
        raise UnsupportedError("readout='spikes' needs the network to end with a weight layer "
                               f"or a ReLU, not with {net.steps[net.output].name!r}; use "
                               "readout='integrate'", node=net.steps[net.output].name)
    return _Plan(neurons, dropped, unit, dest, spiking_output)


def _scale_name(net: _Net, key: str) -> str:
    return net.steps[net.output if key == "output" else key].name


# -- calibration ---------------------------------------------------------------------------------


def _as_batch(item: Any, where: str) -> Any:
    import torch

    if isinstance(item, (tuple, list)):
        if not item:
            raise HubError(f"{where} is an empty tuple; expected a batch or (x, y)")
        item = item[0]
    if isinstance(item, np.ndarray):
        item = torch.from_numpy(item)
    if not isinstance(item, torch.Tensor):
        raise HubError(f"{where} is a {type(item).__name__}; expected a tensor [N, *in] or an "
                       "(x, y) tuple")
    if item.dim() < 2 or item.shape[0] == 0:
        raise HubError(f"{where} has shape {list(item.shape)}; expected a batch [N, *in] with "
                       "N >= 1 (add the batch axis)")
    if not item.is_floating_point():
        item = item.float()
    if not bool(torch.isfinite(item).all()):
        raise HubError(f"{where} contains NaN or infinite values")
    return item.float()


def _batches(calibration: Any) -> Iterable[Any]:
    import torch

    if isinstance(calibration, (torch.Tensor, np.ndarray)):
        calibration = [calibration]
    try:
        items = iter(calibration)
    except TypeError:
        raise HubError(f"calibration: a {type(calibration).__name__} is not iterable; give a "
                       "DataLoader, a list of batches, or one tensor") from None
    return (_as_batch(item, f"calibration batch {i}") for i, item in enumerate(items))


class _Stats:
    """The largest activation of a layer, and a uniform sample of its positive ones."""

    def __init__(self, keep: bool, seed: int) -> None:
        self.max = 0.0
        self.count = 0
        self.keep = keep
        self.samples: list[Any] = []
        self.kept = 0
        self.level = 0  # each value is kept with probability 2**-level
        self.seed = seed
        self.gen = None

    def add(self, y: Any) -> None:
        positive = y[y > 0].detach().float().flatten()
        if not positive.numel():
            return
        self.count += positive.numel()
        self.max = max(self.max, float(positive.max()))
        if not self.keep:
            return
        positive = positive.cpu()
        if self.level:
            positive = positive[self._coins(positive.numel(), self.level)]
        self.samples.append(positive)
        self.kept += positive.numel()
        while self.kept > MAX_SAMPLES:  # halve: every value now kept with probability 2**-level
            self.level += 1
            self.samples = [s[self._coins(s.numel(), 1)] for s in self.samples]
            self.kept = sum(s.numel() for s in self.samples)

    def _coins(self, n: int, level: int) -> Any:
        import torch

        if self.gen is None:
            self.gen = torch.Generator().manual_seed(self.seed)
        return torch.rand(n, generator=self.gen) < 0.5 ** level

    def scale(self, fraction: float | None, percentile: float | None, name: str) -> float:
        if self.count == 0:
            raise HubError(f"layer {name!r} is never active on the calibration data (every "
                           "output is <= 0), so no scale can be derived; the layer is dead or the "
                           "calibration data does not reach it", node=name)
        if percentile is not None:
            values = np.concatenate([s.numpy() for s in self.samples]).astype(np.float64)
            value = float(np.percentile(values, percentile)) if values.size else self.max
            return value if value > 0 else self.max
        return self.max * fraction


def _samples(calibration: Any) -> int | None:
    """How many samples a DataLoader (or one batch) holds, if it says; for the progress bar."""
    dataset = getattr(calibration, "dataset", None)
    try:
        return len(dataset) if dataset is not None else int(calibration.shape[0])
    except (TypeError, AttributeError, IndexError):
        return None


def _calibrate(net: _Net, plan: _Plan, first: Any, rest: Iterable[Any], *, percentile: bool,
               show: bool | None, total: int | None) -> dict[str, _Stats]:
    """Run the folded network over the calibration data; statistics per neuron layer (and of
    ``relu`` of the output for a spiking readout, under ``"output"``)."""
    import torch

    keys = plan.neurons + (["output"] if plan.spiking_output else [])
    stats = {key: _Stats(percentile, seed=i) for i, key in enumerate(keys)}
    device = next(s.module.weight.device for s in net.steps.values() if s.kind == "weight")
    shape = tuple(first.shape[1:])

    def seen(key: str, y: Any) -> None:
        if not bool(torch.isfinite(y).all()):
            raise HubError(f"the output of {net.steps[key].name!r} has NaN or infinite values on "
                           f"calibration batch {index}; check the weights and the input",
                           node=net.steps[key].name)
        if key in stats:
            stats[key].add(y)

    with _Progress(show, total) as bar, torch.no_grad():
        for index, x in enumerate(_chain([first], rest)):
            if tuple(x.shape[1:]) != shape:
                raise HubError(f"calibration batch {index} has samples of shape "
                               f"{list(x.shape[1:])}, the first had {list(shape)}")
            y = net.run(x.to(device), seen)
            if plan.spiking_output:
                stats["output"].add(torch.relu(y))
            bar(x.shape[0])
    return stats


def _chain(*parts: Iterable[Any]) -> Iterable[Any]:
    for part in parts:
        yield from part


class _Progress:
    """A rich progress bar over the calibration samples, on stderr: shown on a terminal, or
    wherever ``show`` is true; a finished bar stays only where it cannot be redrawn."""

    def __init__(self, show: bool | None, total: int | None) -> None:
        self.show = show
        self.total = total
        self.bar = None

    def __enter__(self) -> Any:
        from rich.console import Console

        console = Console(stderr=True)
        show = console.is_terminal if self.show is None else bool(self.show)
        if not show:
            return lambda n: None
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("calibrating"), BarColumn(),
                            TextColumn("{task.completed} samples"), TimeElapsedColumn(),
                            console=console, transient=console.is_terminal)
        self.bar.start()
        task = self.bar.add_task("calibrating", total=self.total)
        return lambda n: self.bar.advance(task, n)

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.stop()


# -- building the graph ------------------------------------------------------------------------


def _parse_mode(mode: Any) -> tuple[float | None, float | None]:
    """``(fraction of the max, None)`` or ``(None, percentile)``."""
    if isinstance(mode, str):
        text = mode.strip().lower()
        if text == "max":
            return 1.0, None
        match = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)\s*%", text)
        if match:
            p = float(match.group(1))
            if 0 < p <= 100:
                return None, p
        raise HubError(f"mode={mode!r}: expected {MODES_HELP}")
    if isinstance(mode, (int, float)) and not isinstance(mode, bool) \
            and math.isfinite(mode) and 0 < mode <= 1:
        return float(mode), None
    raise HubError(f"mode={mode!r}: expected {MODES_HELP}")


def _node_name(step: _Step, prefix: str = "") -> str:
    name = re.sub(r"\W", "_", step.name)
    if not name or not (name[0].isalpha() or name[0] == "_") or prefix:
        kind = type(step.module).__name__.lower() if step.kind == "weight" else step.kind
        name = f"{prefix or kind}_{name}"
    return name


def _build(net: _Net, plan: _Plan, scales: dict[str, float], *, mode: Any, readout: str,
           comparison: str, v_init: float, reset_timing: str) -> hub.Graph:
    graph = hub.Graph(metadata={"ann": {
        "mode": mode if isinstance(mode, str) else float(mode), "readout": readout,
        "comparison": comparison, "v_init": v_init, "reset_timing": reset_timing,
        "input": "the analog input as a constant current at every step",
        "scales": {}}})
    graph.add("input", hub.Input(shape=net.in_shape))
    used, names = {"input"}, {"input": "input"}

    def add(name: str, node: hub.Node, sources: list[str]) -> str:
        base, k = name, 1
        while name in used:
            k += 1
            name = f"{base}_{k}"
        used.add(name)
        graph.add(name, node)
        for source in sources:
            graph.connect(source, name)
        return name

    def neuron() -> hub.IF:
        return hub.IF(threshold=1.0, comparison=comparison, reset="subtract",
                      reset_timing=reset_timing, v_init=v_init)

    def scale(unit: str) -> float:  # what a value of 1 in this unit is in the ANN
        return 1.0 if unit == "input" else scales[unit]

    def target(key: str) -> float:  # the scale of the layer a weighted value feeds
        d = plan.dest[key]
        return scales[d] if d != "output" else scales["output"] if plan.spiking_output else 1.0

    for key, step in net.steps.items():
        sources = [names[source] for source in step.inputs]
        if key in plan.dropped:
            names[key] = sources[0]
            continue
        if step.kind == "relu":
            names[key] = add(_node_name(step, "if"), neuron(), sources)
            graph.metadata["ann"]["scales"][names[key]] = scales[key]
        elif step.kind == "weight":
            unit = plan.unit[step.inputs[0]]
            w_mul = (1.0 if unit == _DST else scale(unit)) / target(key)
            names[key] = add(_node_name(step), _node(step, w_mul, 1.0 / target(key)), sources)
        elif step.kind == "add":
            joined = []
            for source, name in zip(step.inputs, sources):
                unit = plan.unit[source]
                ratio = 1.0 if plan.unit[key] != _DST or unit == _DST \
                    else scale(unit) / target(key)
                if ratio != 1.0:  # a branch with no weight layer: rescale it
                    shape = net.steps[source].shape[1:] if source != "input" else net.in_shape
                    name = add(f"{_node_name(step)}_{name}_scale",
                               _rescale(shape, ratio, step.name), [name])
                joined.append(name)
            names[key] = add(_node_name(step), hub.Add(), joined)
        else:
            names[key] = add(_node_name(step), _node(step, 1.0, 1.0), sources)

    last, unit = names[net.output], plan.unit[net.output]
    if plan.spiking_output:
        last = add(_node_name(net.steps[net.output], "if"), neuron(), [last])
        graph.metadata["ann"]["scales"][last] = scales["output"]
    elif readout == "integrate":  # in ANN units: gain 1; in a layer's rate: its scale
        last = add("readout", hub.Integrator(gain=1.0 if unit == _DST else scale(unit)), [last])
    add("output", hub.Output(), [last])
    return graph.validate()


def _rescale(shape: tuple[int, ...], ratio: float, where: str) -> hub.Node:
    """``y = ratio * x`` as a layer every torch target has: a per-channel (depthwise) 1x1
    convolution, or a diagonal ``Affine`` for vectors. Each output is one product ``w * x``
    plus zeros, so it is exactly ``ratio * x`` with ``ratio`` rounded to float32."""
    channels = shape[0]
    w = np.full(channels, ratio, dtype=np.float32)
    zero = np.zeros(channels, dtype=np.float32)
    if len(shape) == 1:
        return hub.Affine(weight=np.diag(w), bias=zero)
    if len(shape) == 2:
        return hub.Conv1d(weight=w.reshape(-1, 1, 1), bias=zero, groups=channels)
    if len(shape) == 3:
        return hub.Conv2d(weight=w.reshape(-1, 1, 1, 1), bias=zero, groups=channels)
    raise UnsupportedError(f"a skip connection of samples of shape {list(shape)} cannot be "
                           "rescaled; only [F], [C, L] and [C, H, W] activations", node=where)


def _node(step: _Step, w_mul: float, b_mul: float) -> hub.Node:
    """The step's node by the shared torch.nn mapping, a weight layer's weights normalised."""
    mod = step.module
    if step.kind == "weight":
        w = (mod.weight.detach().double().cpu().numpy() * w_mul).astype(np.float32)
        b = (mod.bias.detach().double().cpu().numpy() * b_mul).astype(np.float32)
        return import_layer(mod).replace(weight=w, bias=b)
    return import_layer(mod)


@hub.hookimpl
def hub_register_formats(register) -> None:
    register(ANNFormat())

