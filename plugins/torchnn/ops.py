"""The torch functions, tensor methods and operators a forward may apply, as canonical nodes.

:mod:`hub_plugins.torchnn.trace` hands every torch call it records at the model's own level (not
inside a leaf layer or neuron) to :func:`record`. A call on constants only (factories, shape
queries, parameters) is not part of the graph. A call on recorded values maps by its name:

===========================================  ==============================================
forward                                      canonical
===========================================  ==============================================
``a + b``, ``a - b`` (values)                 an ``Add`` junction (``-b`` as ``Scale(-1)``)
``x + c``, ``x - c``, ``c - x`` (constant)    ``Bias`` (``c - x``: ``Scale(-1)``, ``Bias(c)``)
``a * b``; ``x * c``; ``x / 2**k``; ``-x``    ``Mul``; ``Scale``
``torch.cat``                                ``Concat``
``relu``, ``max_pool2d``, ``avg_pool2d``,     ``ReLU``, pools, ``AdaptiveAvgPool2d``,
``adaptive_avg_pool2d``, ``linear``,          ``Affine``/``Linear``, ``Conv1d``/``Conv2d``
``conv1d``, ``conv2d``
``view``, ``reshape``, ``flatten``,           ``Flatten`` (neighbouring axes merged),
``unflatten``, ``squeeze``, ``unsqueeze``      ``Reshape`` (any other shape of a sample), or
                                               nothing when a sample keeps its shape
``contiguous``, ``clone``, ``float``,         nothing: the value passes through
``dropout`` (inference)
===========================================  ==============================================

and the operations on time: ``x[t]``, ``x.select(0, t)``, ``x.unbind(0)`` (a step of a sequence),
``torch.stack(steps)`` and ``buffer[t] = y`` (a sequence of steps),
``x.unsqueeze(0).expand(T, ...)``/``.repeat(T, ...)`` (a static input at every step),
``flatten(0, 1)`` and back (SpikingJelly's multi-step containers), and ``mean(0)``/``sum(0)``
over a sequence as the forward's result (a readout the runner reports before the reduction).
Anything else on a recorded value is refused, naming the function and the module it is in.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch
from torch import nn

import hub
from hub.errors import UnsupportedError

from .layers import array, import_conv, import_layer
from .recorder import LIFTED, MERGED, REDUCED, SEQ, STATIC, STEP, Value, _lead

PASS = {"contiguous", "clone", "detach", "float", "to", "type_as", "requires_grad_", "dropout",
        "dropout1d", "dropout2d", "alpha_dropout", "feature_alpha_dropout", "__pos__"}
ADD = {"add", "__add__", "__radd__", "__iadd__", "add_"}
SUB = {"sub", "__sub__", "__isub__", "sub_", "subtract"}
MUL = {"mul", "__mul__", "__rmul__", "__imul__", "mul_", "multiply"}
DIV = {"div", "__truediv__", "__itruediv__", "div_", "true_divide"}
RESHAPE = {"view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze"}
LIKE = {"zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like",
        "new_zeros", "new_ones", "new_full", "new_empty", "new_tensor"}


def _name(func: Any) -> str:
    return getattr(func, "__name__", "") or repr(func)


def _bind(args: tuple, kwargs: dict, params: list[str]) -> dict[str, Any]:
    """Arguments by name, for the functional forms whose signature we know."""
    bound = dict(zip(params, args))
    bound.update(kwargs)
    return bound


def record(rec: Any, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
    """Record one call (see the module docstring); refuse what has no canonical meaning."""
    name = _name(func)
    flat = [a for a in args if isinstance(a, torch.Tensor)] + [
        t for a in args if isinstance(a, (list, tuple)) for t in a if isinstance(t, torch.Tensor)]
    values = [rec.value(t) for t in flat]
    if name == "__setitem__":
        _setitem(rec, args)
        return
    if not any(v is not None for v in values) or name in LIKE:
        return  # constants only (or a new tensor shaped like a value): not part of the graph
    if name in ("__get__", "size", "dim", "numel", "__len__", "__bool__", "item", "tolist",
                "__format__", "__repr__", "__hash__", "ndimension", "is_floating_point",
                "get_device", "data_ptr", "element_size", "nelement", "__array__", "numpy",
                "cpu", "stride", "is_contiguous", "storage_offset", "_is_view"):
        return
    if name == "unbind":
        _unbind(rec, args, kwargs, out)
        return
    if not isinstance(out, torch.Tensor):
        raise UnsupportedError(f"torch function {name!r} has no canonical counterpart (it "
                               f"returns a {type(out).__name__}, not a tensor)", node=rec.where())
    x = args[0] if args else None
    v = rec.value(x)
    try:
        handled = _map(rec, name, func, args, kwargs, out, v)
    except UnsupportedError as e:
        if e.node is None:
            e.at(node=rec.where())
        raise
    if not handled:
        raise UnsupportedError(f"torch function {name!r} has no canonical counterpart (in the "
                               f"forward of {rec.where()!r}); the hub maps the operations listed "
                               "in hub_plugins.torchnn.ops", node=rec.where())


def _const(value: Any, sample: tuple[int, ...], what: str) -> np.ndarray:
    """A constant operand as an array that broadcasts onto one sample."""
    c = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    c = np.asarray(c, np.float32)
    if c.ndim > len(sample):
        if all(d == 1 for d in c.shape[:c.ndim - len(sample)]):
            c = c.reshape(c.shape[c.ndim - len(sample):])
        else:
            raise UnsupportedError(f"a constant of shape {list(c.shape)} {what} differs per "
                                   "sample or step", field="constant")
    return c


def _map(rec: Any, name: str, func: Any, args: tuple, kwargs: dict, out: torch.Tensor,
         v: Value | None) -> bool:
    if name in PASS:
        if name in ("to", "float", "type_as") and out.dtype != torch.float32:
            raise UnsupportedError(f"{name!r} converts to {out.dtype}; the canonical graph "
                                   "computes in float32")
        if "dropout" in name:
            b = _bind(args, kwargs, ["input", "p", "training"])
            if b.get("training", True) and b.get("p", 0.5) > 0:
                raise UnsupportedError(f"{name} in training mode drops random values; pass "
                                       "training=self.training so that eval() turns it off")
        rec.op(name, None, [v], None, out)
        return True
    if name in ("relu", "relu_"):
        rec.op("relu", hub.ReLU(), [v], None, out)
        return True
    if name in ADD | SUB | MUL | DIV or name in ("__rsub__", "rsub", "neg", "__neg__",
                                                   "negative"):
        return _arithmetic(rec, name, args, kwargs, out)
    if name in ("cat", "concat", "concatenate"):
        tensors = list(args[0])
        dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
        vals = [rec.value(t) for t in tensors]
        if any(x is None for x in vals):
            raise UnsupportedError("torch.cat of a constant and a value; the hub concatenates "
                                   "values only")
        lead = _lead(vals[0])
        dim = dim + tensors[0].dim() if dim < 0 else dim
        if dim < lead:
            raise UnsupportedError(f"concatenating along axis {dim} joins batches or steps, not "
                                   "samples")
        rec.op("cat", hub.Concat(dim=dim - lead), vals, None, out)
        return True
    if name == "stack":
        return _stack(rec, args, kwargs, out)
    if name == "__getitem__":
        return _getitem(rec, args, out)
    if name == "select":  # x.select(0, t): x[t]
        b = _bind(args, kwargs, ["input", "dim", "index"])
        return b["dim"] == 0 and _getitem(rec, (b["input"], b["index"]), out)
    if name in ("unsqueeze", "expand", "repeat", "expand_as"):
        return _lift(rec, name, args, out)
    if name in ("mean", "sum"):
        dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
        if v is not None and v.layout == SEQ and dim in (0, (0,), [0]) \
                and not kwargs.get("keepdim"):
            rec.remember(out, dataclasses.replace(v, layout=REDUCED, reduction=name))
            return True
        return False
    if name in RESHAPE:
        return _reshape(rec, name, args, out, v)
    if name in ("max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "max_pool2d_with_indices",
                "_max_pool2d"):
        return _pool(rec, name, func, args, kwargs, out, v)
    if name in ("linear", "conv1d", "conv2d"):
        return _weighted(rec, name, args, kwargs, out, v)
    return False


def _arithmetic(rec: Any, name: str, args: tuple, kwargs: dict, out: torch.Tensor) -> bool:
    a = args[0]
    b = args[1] if len(args) > 1 else kwargs.get("other")
    if kwargs.get("alpha", 1) != 1:
        raise UnsupportedError(f"{name} with alpha={kwargs['alpha']}")
    va, vb = rec.value(a), rec.value(b)
    if name in ("neg", "__neg__", "negative"):
        rec.op("neg", hub.Scale(scale=-1.0), [va], None, out)
        return True
    if name in ("__rsub__", "rsub"):  # b - a
        if vb is not None:
            return False
        sample = tuple(a.shape[_lead(va):])
        neg = torch.neg(a)
        rec.op("neg", hub.Scale(scale=-1.0), [va], None, neg)
        rec.op("rsub", hub.Bias(bias=_const(b, sample, "subtracted from")), [rec.value(neg)],
               None, out)
        return True
    if va is None:  # c + x, c * x: the value is the second operand
        a, b, va, vb = b, a, vb, va
        if name in SUB | DIV:
            return False
    sample = tuple(out.shape[_lead(va):])
    if vb is not None:
        if name in ADD:
            rec.op("add", hub.Add(), [va, vb], None, out)
        elif name in MUL:
            rec.op("mul", hub.Mul(), [va, vb], None, out)
        elif name in SUB:
            neg = torch.neg(b)
            rec.op("neg", hub.Scale(scale=-1.0), [vb], None, neg)
            rec.op("sub", hub.Add(), [va, rec.value(neg)], None, out)
        else:
            return False
        return True
    c = _const(b, sample, "in an arithmetic operation")
    if name in ADD:
        rec.op("bias", hub.Bias(bias=c), [va], None, out)
    elif name in SUB:
        rec.op("bias", hub.Bias(bias=-c), [va], None, out)
    elif name in MUL:
        rec.op("scale", hub.Scale(scale=c), [va], None, out)
    else:
        inverse = np.float32(1) / c
        if not np.all(np.frexp(c)[0] == 0.5):  # x / c equals x * (1/c) for powers of two only
            raise UnsupportedError("dividing by a constant that is not a power of two rounds "
                                   "differently from any canonical Scale; multiply instead")
        rec.op("scale", hub.Scale(scale=inverse), [va], None, out)
    return True


def _stack(rec: Any, args: tuple, kwargs: dict, out: torch.Tensor) -> bool:
    tensors = list(args[0])
    dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
    vals = [rec.value(t) for t in tensors]
    if dim != 0 or any(x is None for x in vals):
        return False
    if all(x.layout == STEP for x in vals) and [x.time for x in vals] == list(range(len(vals))):
        rec.remember(out, Value(vals[0].ref, SEQ, steps=len(vals)))
        return True
    if all(x.layout == STATIC and x.ref == vals[0].ref for x in vals):
        rec.remember(out, Value(vals[0].ref, SEQ, steps=len(vals)))
        return True
    raise UnsupportedError("torch.stack of values that are not the steps 0, 1, ... of one "
                           "computation")


def _setitem(rec: Any, args: tuple) -> None:
    buffer, index, value = args
    v = rec.value(value) if isinstance(value, torch.Tensor) else None
    if v is None:
        if rec.value(buffer) is not None:
            raise UnsupportedError("a recorded value is overwritten in place with a constant",
                                   node=rec.where())
        return
    t = index[0] if isinstance(index, tuple) and index else index
    rest = index[1:] if isinstance(index, tuple) else ()
    if v.layout != STEP or not isinstance(t, int) or any(r != slice(None) for r in rest):
        raise UnsupportedError("only whole steps can be written into a buffer "
                               "(buffer[t] = y, y the value of step t)", node=rec.where())
    if t != v.time:
        raise UnsupportedError(f"step {v.time}'s value is written to position {t}",
                               node=rec.where())
    if t == 0:
        rec.remember(buffer, Value(v.ref, SEQ, steps=buffer.shape[0]))


def _getitem(rec: Any, args: tuple, out: torch.Tensor) -> bool:
    x, index = args
    v = rec.value(x)
    t = index[0] if isinstance(index, tuple) and index else index
    rest = index[1:] if isinstance(index, tuple) else ()
    if isinstance(t, torch.Tensor) and t.dim() == 0 and not t.is_floating_point():
        t = int(t)
    whole = all(r == slice(None) or r is Ellipsis for r in rest)
    if v.layout == SEQ and isinstance(t, int) and whole:
        t = t + v.steps if t < 0 else t
        rec.remember(out, Value(v.ref, STEP, time=t))
        return True
    if v.layout == LIFTED and t == 0 and whole:
        rec.remember(out, dataclasses.replace(v, layout=STATIC, steps=None))
        return True
    raise UnsupportedError(f"indexing with {index!r} selects within a sample; the hub follows "
                           "whole steps (x[t]) only")


def _unbind(rec: Any, args: tuple, kwargs: dict, out: Any) -> None:
    v = rec.value(args[0])
    dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
    if v.layout != SEQ or dim != 0:
        raise UnsupportedError("unbinding anything but the time axis of a sequence",
                               node=rec.where())
    for t, item in enumerate(out):
        rec.remember(item, Value(v.ref, STEP, time=t))


def _lift(rec: Any, name: str, args: tuple, out: torch.Tensor) -> bool:
    v = rec.value(args[0])
    if name == "unsqueeze":
        dim = args[1]
        if dim == 0 and v.layout in (STATIC, STEP):
            rec.remember(out, dataclasses.replace(v, layout=LIFTED, steps=1))
            return True
        return _reshape(rec, name, args, out, v)
    if v.layout != LIFTED:
        return False
    if out.shape[1:] != args[0].shape[1:]:
        raise UnsupportedError(f"{name} changes more than the time axis")
    if v.time is not None:
        raise UnsupportedError("a step's value repeated over time")
    rec.remember(out, Value(v.ref, SEQ, steps=out.shape[0]))
    return True


def _reshape(rec: Any, name: str, args: tuple, out: torch.Tensor, v: Value) -> bool:
    x = args[0]
    if v.layout == SEQ and out.dim() == x.dim() - 1 and out.shape[0] == x.shape[0] * x.shape[1] \
            and tuple(out.shape[1:]) == tuple(x.shape[2:]):
        rec.remember(out, dataclasses.replace(v, layout=MERGED))
        return True
    if v.layout == MERGED and out.dim() == x.dim() + 1 and out.shape[0] == v.steps \
            and out.shape[0] * out.shape[1] == x.shape[0] and tuple(out.shape[2:]) == tuple(
                x.shape[1:]):
        rec.remember(out, dataclasses.replace(v, layout=SEQ))
        return True
    lead = _lead(v)
    if tuple(out.shape[:lead]) != tuple(x.shape[:lead]):
        raise UnsupportedError(f"{name} from {list(x.shape)} to {list(out.shape)} moves values "
                               "between samples (or steps)")
    before, after = tuple(x.shape[lead:]), tuple(out.shape[lead:])
    if before == after:
        rec.op(name, None, [v], None, out)
        return True
    for start in range(len(before)):
        for end in range(start, len(before)):
            merged = before[:start] + (math.prod(before[start:end + 1]),) + before[end + 1:]
            if merged == after:
                rec.op("flatten", hub.Flatten(start_dim=start, end_dim=end), [v], None, out)
                return True
    rec.op(name, hub.Reshape(shape=after), [v], None, out)
    return True


def _pool(rec: Any, name: str, func: Any, args: tuple, kwargs: dict, out: torch.Tensor,
          v: Value) -> bool:
    if name == "adaptive_avg_pool2d":
        b = _bind(args, kwargs, ["input", "output_size"])
        module: nn.Module = nn.AdaptiveAvgPool2d(b["output_size"])
    elif "max" in name:
        b = _bind(args, kwargs, ["input", "kernel_size", "stride", "padding", "dilation",
                                       "ceil_mode", "return_indices"])
        module = nn.MaxPool2d(b["kernel_size"], b.get("stride") or None, b.get("padding", 0),
                              b.get("dilation", 1), b.get("return_indices", False),
                              b.get("ceil_mode", False))
    else:
        b = _bind(args, kwargs, ["input", "kernel_size", "stride", "padding", "ceil_mode",
                                       "count_include_pad", "divisor_override"])
        module = nn.AvgPool2d(b["kernel_size"], b.get("stride") or None, b.get("padding", 0),
                              b.get("ceil_mode", False), b.get("count_include_pad", True),
                              b.get("divisor_override"))
    if v.layout in (SEQ, LIFTED):
        raise UnsupportedError(f"{name} of a [T, N, ...] sequence")
    rec.op(name, import_layer(module), [v], None, out)
    return True


def _weighted(rec: Any, name: str, args: tuple, kwargs: dict, out: torch.Tensor,
              v: Value) -> bool:
    params = {"linear": ["input", "weight", "bias"],
              "conv1d": ["input", "weight", "bias", "stride", "padding", "dilation", "groups"],
              "conv2d": ["input", "weight", "bias", "stride", "padding", "dilation", "groups"]}
    b = _bind(args, kwargs, params[name])
    if rec.value(b["weight"]) is not None or rec.value(b.get("bias")) is not None:
        raise UnsupportedError(f"{name} whose weights are computed from the input")
    if name == "linear":
        weight = array(b["weight"], "weight")
        node = hub.Linear(weight=weight) if b.get("bias") is None else hub.Affine(
            weight=weight, bias=array(b["bias"], "bias"))
    else:
        cls = nn.Conv1d if name == "conv1d" else nn.Conv2d
        w = b["weight"]
        module = cls(w.shape[1] * b.get("groups", 1), w.shape[0], tuple(w.shape[2:]),
                     stride=b.get("stride", 1), padding=b.get("padding", 0),
                     dilation=b.get("dilation", 1), groups=b.get("groups", 1),
                     bias=b.get("bias") is not None)
        with torch.no_grad():
            module.weight.copy_(w)
            if b.get("bias") is not None:
                module.bias.copy_(b["bias"])
        node = import_conv(module)
    rec.op(name, node, [v], None, out)
    return True
