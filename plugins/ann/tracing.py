"""Reading a trained ReLU network with ``torch.fx``: its steps, batch norm folded into the layer
before, pools and flattening mapped, anything else refused naming the module."""

from __future__ import annotations

import copy
import math
import operator
import re
from dataclasses import dataclass, field
from typing import Any

from hub.errors import FormatError, UnsupportedError
from hub_plugins.torchnn.layers import import_conv

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


def _node_name(step: _Step, prefix: str = "") -> str:
    name = re.sub(r"\W", "_", step.name)
    if not name or not (name[0].isalpha() or name[0] == "_") or prefix:
        kind = type(step.module).__name__.lower() if step.kind == "weight" else step.kind
        name = f"{prefix or kind}_{name}"
    return name
