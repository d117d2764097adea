"""The fused CPU path of the neuron families (:mod:`hub.families`): one compiled call per layer.

``families.cpp`` runs each family's reference step over all time steps, a block of neurons at a
time, with the same float operations in the same order, so the results are bit-identical to the
reference in float32 and float64. Its backward pass gives the gradients with respect to the
input and the initial state that autograd computes through the reference step (surrogate
included), bit for bit: each local derivative as autograd writes it, and the parts of a
gradient summed in the order autograd's engine delivers them. Families whose own parameters
require a gradient stay on the reference, as :class:`hub.Neuron` s do. An ALIF in Loihi's
integers (``arithmetic="fixed"``) runs on an integer kernel, forward only, like its reference.

A family type names its kernel with :attr:`hub.Family.kernel`; a subclass that overrides
``step`` (or ``initial_state`` or ``_fire``) runs its own step.

Two facts about a layer's parameters pick faster instances of a kernel without changing a bit:
parameters with one value for all neurons are read once, not per neuron; and where every value
of every divisor of a family's step (:attr:`Spec.divisors`) is a power of two, the kernel
multiplies by the exact reciprocal (:func:`reciprocals`).

EIF and AdExLIF need ``torch.exp``'s exact bits. torch computes it with a vectorised library
function (MKL's ``vmsExp``/``vmdExp`` where torch is built with MKL, else SLEEF's
``Sleef_expf16_u10`` and kin for its CPU capability), exported by ``libtorch_cpu``; the kernels
call that same function, found with ``dlsym``. Before a kernel uses a candidate it is checked
against ``torch.exp`` on random, large, tiny and special values and on lengths that are not a
multiple of any vector width; if none agrees, those two families stay on the reference and
:attr:`hub.Simulator.paths` says why.
"""

from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from ..errors import HubError
from ..families import Family
from ..surrogate import SLOPE
from . import cpu

SOURCE = Path(__file__).with_name("families.cpp")
DTYPES = (torch.float32, torch.float64)
_RESETS = {"zero": 0, "subtract": 1, "none": 2}


@dataclass(frozen=True)
class Spec:
    """One kernel of ``families.cpp``: its number, and the names of its parameters and state in
    the order its code reads them; ``divisors``: the parameters its step divides by, whose
    reciprocals follow the parameters (:func:`reciprocals`)."""

    index: int
    params: tuple[str, ...]
    state: tuple[str, ...]
    exp: bool = False
    divisors: tuple[str, ...] = ()


SPECS = {
    "alif": Spec(0, ("alpha", "beta", "gain", "current_gain", "v_leak", "threshold",
                     "threshold_decay", "threshold_step", "refractory_decay", "refractory_scale",
                     "v_reset"), ("i", "v", "theta", "r")),
    "izhikevich": Spec(1, ("rate", "sq", "mn", "bias", "recovery_rate", "coupling", "threshold",
                           "v_reset", "u_jump"), ("v", "u")),
    "qif": Spec(2, ("tau", "a0", "v_rest", "v_c", "tau_w", "coupling", "w_jump", "threshold",
                    "v_reset"), ("v", "w"), divisors=("tau", "tau_w")),
    "alpha": Spec(3, ("alpha", "beta", "scale", "threshold"), ("e", "h", "v")),
    "filter": Spec(4, ("rate",), ("y",)),
    "eif": Spec(5, ("tau", "delta_t", "theta_rh", "v_rest", "threshold", "v_reset"), ("v",),
                exp=True, divisors=("tau", "delta_t")),
    "adex": Spec(6, ("rate", "syn_rate", "ada_rate", "delta_t", "v_leak", "threshold", "v_reset",
                     "coupling", "jump"), ("i", "v", "a"), exp=True, divisors=("delta_t",)),
}

#: The methods whose behaviour the kernels reproduce; a subclass overriding one steps itself.
STEP_METHODS = ("step", "initial_state", "_fire")


class _Exp(ctypes.Structure):
    _fields_ = [("kind", ctypes.c_int32), ("mode", ctypes.c_int64), ("fn", ctypes.c_void_p)]


_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_failure: str | None = None


def library() -> ctypes.CDLL:
    """The compiled family kernels, built on first use (:func:`hub.kernels.cpu.compiled`)."""
    global _library, _failure
    with _lock:
        if _library is None and _failure is None:
            try:
                lib = cpu.compiled(SOURCE, "hub_families")
                pointer, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
                lib.hub_family_forward.argtypes = [i32, i32, pointer, pointer, i32, pointer, i64,
                                                   i64, i64, pointer, pointer, pointer, pointer]
                lib.hub_family_backward.argtypes = [i32, i32, pointer, pointer, i32, pointer,
                                                    i64, i64, i64, pointer, pointer, i64,
                                                    pointer, pointer, pointer, ctypes.c_double]
                lib.hub_family_exp.argtypes = [i32, pointer, pointer, pointer, i64]
                lib.hub_alif_fixed_forward.argtypes = [i32, pointer, i32, pointer, i64, i64, i64,
                                                       pointer, pointer] + [pointer] * 4
                _library = lib
            except (cpu.KernelUnavailable, OSError, AttributeError) as error:
                _failure = str(error)
        if _library is None:
            raise cpu.KernelUnavailable(_failure or "the family kernels failed to load")
        return _library


# -- torch.exp's function ---------------------------------------------------------------------

# torch's vml.h calls MKL with these flags: high accuracy, no flush to zero, errors ignored
_MKL_MODE = 0x2 | 0x140000 | 0x100
_exp_found: dict[torch.dtype, tuple[_Exp | None, str]] = {}


def _candidates(dtype: torch.dtype) -> list[tuple[int, str]]:
    double = dtype == torch.float64
    found = [(1, "vmdExp" if double else "vmsExp")]
    capability = torch.backends.cpu.get_cpu_capability()
    if capability.startswith("AVX512"):
        found.append((2, "Sleef_expd8_u10" if double else "Sleef_expf16_u10"))
    if capability.startswith(("AVX512", "AVX2")):
        found.append((3, "Sleef_expd4_u10" if double else "Sleef_expf8_u10"))
    return found


def _probe(dtype: torch.dtype) -> torch.Tensor:
    rng = np.random.default_rng(0)
    limit = 709.0 if dtype == torch.float64 else 88.0
    parts = [rng.normal(size=4000) * s for s in (0.5, 3.0, 20.0, limit / 2)]
    parts.append(rng.uniform(-limit * 1.2, limit * 1.05, size=4000))
    tiny = np.finfo(np.float64 if dtype == torch.float64 else np.float32).tiny
    parts.append(np.array([0.0, -0.0, np.inf, -np.inf, np.nan, tiny, -tiny, 1e-30, -1e-30,
                           limit, -limit, 1.0, -1.0, 0.5]))
    return torch.tensor(np.concatenate(parts), dtype=dtype)


def exp_function(dtype: torch.dtype) -> tuple[_Exp | None, str]:
    """torch.exp's function for ``dtype`` on this machine, checked bit for bit; or None and
    why none was found."""
    if dtype in _exp_found:
        return _exp_found[dtype]
    path = Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"
    try:
        torch_cpu = ctypes.CDLL(str(path), mode=os.RTLD_NOW | getattr(os, "RTLD_NOLOAD", 0))
    except OSError as error:
        _exp_found[dtype] = None, f"libtorch_cpu could not be opened to find torch.exp ({error})"
        return _exp_found[dtype]
    x = _probe(dtype)
    want = torch.exp(x)
    lib = library()
    tried = []
    for kind, name in _candidates(dtype):
        address = getattr(torch_cpu, name, None)
        if address is None:
            continue
        tried.append(name)
        spec = _Exp(kind, _MKL_MODE, ctypes.cast(address, ctypes.c_void_p).value)
        agree = True
        for start, length in ((0, x.numel()), (3, 1), (5, 7), (11, 13), (17, 31), (1, 1000)):
            xs, ws = x[start:start + length].contiguous(), want[start:start + length]
            got = torch.empty_like(xs)
            lib.hub_family_exp(0 if dtype == torch.float32 else 1, ctypes.byref(spec),
                               xs.data_ptr(), got.data_ptr(), xs.numel())
            same = (got == ws) | (torch.isnan(got) & torch.isnan(ws))
            if not bool(same.all()):
                agree = False
                break
        if agree:
            _exp_found[dtype] = spec, ""
            return _exp_found[dtype]
    _exp_found[dtype] = None, (
        f"no function in libtorch_cpu computes torch.exp's {dtype} bits (tried "
        f"{', '.join(tried) or 'none found'})")
    return _exp_found[dtype]


def reciprocals(divisors: list[torch.Tensor]) -> list[torch.Tensor] | None:
    """``1 / d`` for each of ``divisors`` if every value of every one is a power of two that,
    like its reciprocal, is a normal float of its dtype, else None. Then ``a * (1 / d)`` is
    ``a / d`` bit for bit for every ``a`` (the same real number, rounded correctly by both
    operations; normal, so that flushing subnormal operands to zero cannot tell them apart),
    and the kernels multiply instead of dividing."""
    found = []
    for d in divisors:
        r = 1 / d
        mantissa, _ = torch.frexp(d)
        tiny = torch.finfo(d.dtype).tiny
        if not bool(((mantissa.abs() == 0.5) & torch.isfinite(r) & (r.abs() >= tiny)
                     & (d.abs() >= tiny)).all()):
            return None
        found.append(r)
    return found


# -- which nodes run fused ----------------------------------------------------------------------


def overridden_step(node: Family) -> str | None:
    """The first of :data:`STEP_METHODS` that ``node``'s type overrides relative to the type
    that declares its kernel, or None."""
    owner = next((c for c in type(node).__mro__ if "kernel" in c.__dict__), Family)
    for name in STEP_METHODS:
        if getattr(type(node), name) is not getattr(owner, name):
            return f"{owner.__name__}.{name}"
    return None


def unsupported(node: Family, p: dict, x: torch.Tensor) -> str | None:
    """Why ``node`` cannot run on its fused CPU kernel on ``x``; None if it can."""
    name = type(node).kernel
    if name is None or name not in SPECS:
        return f"{type(node).__name__} has no fused kernel"
    overridden = overridden_step(node)
    if overridden:
        return (f"{type(node).__name__} overrides {overridden}, and the fused kernel computes "
                "only the built-in equation")
    refusal = node.kernel_refusal()
    if refusal:
        return refusal
    if x.device.type != "cpu":
        return f"the input is on {x.device}, not cpu"
    if x.dtype not in DTYPES:
        return f"dtype {x.dtype} (the fused family kernels do float32 and float64)"
    if x.numel() == 0:
        return "the input is empty"
    if torch.is_grad_enabled() and any(t.requires_grad for t in p.values()):
        return "the neuron's parameters require gradients (the fused kernels give input gradients)"
    try:
        library()
    except cpu.KernelUnavailable as error:
        return str(error)
    if SPECS[name].exp:
        found, why = exp_function(x.dtype)
        if found is None:
            return why
    return None


# -- running ------------------------------------------------------------------------------------


class _Kernel:
    """The compiled call for one family node, its parameters and one neuron shape."""

    #: as cpu._Kernel's (the CuPy family kernels, which share _Fused, read one per step)
    one_step_gradient = True

    def __init__(self, node: Family, p: dict, shape: tuple[int, ...], dtype: torch.dtype) -> None:
        self.spec = SPECS[type(node).kernel]
        self.dtype, self.code = dtype, DTYPES.index(dtype)
        self.size = int(np.prod(shape, dtype=np.int64))
        self.params = [torch.broadcast_to(p[n].detach().to(dtype), shape).reshape(-1).contiguous()
                       for n in self.spec.params]
        divisors = [self.params[self.spec.params.index(n)] for n in self.spec.divisors]
        inverse = reciprocals(divisors)
        self.params += divisors if inverse is None else inverse
        self.pointers = (ctypes.c_void_p * len(self.params))(*[t.data_ptr() for t in self.params])
        conf = (int(getattr(node, "comparison", ">") == ">="),
                _RESETS[getattr(node, "reset", "zero")],
                int(getattr(node, "current_order", "new") == "new"),
                int(inverse is not None),
                int(all(bool((t == t[0]).all()) for t in self.params)))
        self.conf = (ctypes.c_int32 * 5)(*conf)
        self.exp = exp_function(dtype)[0] if self.spec.exp else _Exp(0, 0, None)

    def _threads(self, x: torch.Tensor) -> int:
        big = x.numel() >= cpu.PARALLEL_MIN
        return max(1, torch.get_num_threads()) if big else 1

    def forward(self, x: torch.Tensor, state: list[torch.Tensor], save: bool
                ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        steps, total = x.shape[0], x[0].numel()
        out = cpu._empty(x)
        # one buffer for all saved states: one size of its own in the buffer cache
        saved = (list(cpu._empty(x, shape=(len(state), *x.shape)).unbind(0)) if save
                 else None)
        pointers = (ctypes.c_void_p * len(state))(*[t.data_ptr() for t in state])
        kept = ((ctypes.c_void_p * len(state))(*[t.data_ptr() for t in saved]) if saved
                else None)
        status = library().hub_family_forward(
            self.spec.index, self.code, self.conf, ctypes.byref(self.exp), self._threads(x),
            self.pointers, steps, total, self.size, x.data_ptr(), out.data_ptr(), pointers, kept)
        if status:
            raise HubError(f"the fused family kernel refused dtype {self.dtype}")
        return out, saved

    def backward(self, x: torch.Tensor, gout: torch.Tensor, saved: list[torch.Tensor],
                 grads: list[torch.Tensor]) -> torch.Tensor:
        """``gout``: [T, *shape] contiguous, or [*shape] where every step has that gradient."""
        steps, total = x.shape[0], x[0].numel()
        gx = cpu._empty(x)
        kept = (ctypes.c_void_p * len(saved))(*[t.data_ptr() for t in saved])
        pointers = (ctypes.c_void_p * len(grads))(*[t.data_ptr() for t in grads])
        library().hub_family_backward(
            self.spec.index, self.code, self.conf, ctypes.byref(self.exp), self._threads(x),
            self.pointers, steps, total, self.size, x.data_ptr(), gout.data_ptr(),
            total if gout.dim() == x.dim() else 0, kept, pointers, gx.data_ptr(), SLOPE)
        return gx


class _Fused(torch.autograd.Function):
    """Autograd for a fused family layer: gradients for the input and the initial state."""

    @staticmethod
    def forward(ctx, kernel: _Kernel, x, *state):  # type: ignore[override]
        new = [s.clone() for s in state]
        out, saved = kernel.forward(x, new, save=True)
        ctx.kernel = kernel
        ctx.save_for_backward(x, *saved)
        return (out, *new)

    @staticmethod
    @once_differentiable
    def backward(ctx, gout, *gstate):  # type: ignore[override]
        x, *saved = ctx.saved_tensors
        gout = cpu._gradient(gout, x, ctx.kernel)
        # the kernel updates the state gradients in place: never touch autograd's buffers
        grads = [torch.zeros_like(x[0]) if g is None else g.contiguous().clone() for g in gstate]
        gx = ctx.kernel.backward(x, gout, saved, grads)
        return (None, gx, *grads)


_FIXED_PARAMS = ("alpha", "beta", "threshold_decay", "refractory_decay", "gain", "current_gain",
                 "v_leak", "v_reset", "threshold", "threshold_step", "refractory_scale")


def run_fixed(node: Family, p: dict, x: torch.Tensor, state: dict[str, Any]
              ) -> tuple[torch.Tensor, dict]:
    """:func:`run` for an ALIF in Loihi's integers (``arithmetic="fixed"``): forward only, as
    its reference step, whose outputs carry no gradient."""
    shape = tuple(x.shape[2:])
    decays = node._DECAYS
    q = [torch.broadcast_to(torch.round(p[n].detach().to(torch.float64)
                                        * (4096 if n in decays else 1)).to(torch.int64),
                            shape).reshape(-1).contiguous() for n in _FIXED_PARAMS]
    drive = (p["current_gain"].detach().to(torch.float64) * x.detach().to(torch.float64))
    if not torch.equal(drive, torch.round(drive)):
        raise HubError("an ALIF with fixed arithmetic received an input whose "
                       "current_gain * x is not an integer", field="input")
    drive = drive.contiguous()
    new = {n: cpu.fit(state[n], x.shape[1:]).clone() for n in ("i", "v", "theta", "r")}
    out = cpu._empty(x)
    conf = (ctypes.c_int32 * 3)(int(node.comparison == ">="), _RESETS[node.reset],
                                int(node.current_order == "new"))
    threads = max(1, torch.get_num_threads()) if x.numel() >= cpu.PARALLEL_MIN else 1
    status = library().hub_alif_fixed_forward(
        DTYPES.index(x.dtype), conf, threads,
        (ctypes.c_void_p * len(q))(*[t.data_ptr() for t in q]), x.shape[0], x[0].numel(),
        int(np.prod(shape, dtype=np.int64)), drive.data_ptr(), out.data_ptr(),
        *[new[n].data_ptr() for n in ("i", "v", "theta", "r")])
    if status:
        raise HubError(f"the fused ALIF kernel refused dtype {x.dtype}")
    return out, new


def run(node: Family, p: dict, x: torch.Tensor, state: dict[str, Any], *,
        kernel: Any = None) -> tuple[torch.Tensor, dict]:
    """Run ``node`` over a whole sequence ``x`` ``[T, N, *shape]`` from ``state``: exactly what
    ``T`` calls of ``node.step`` give. Check :func:`unsupported` first. ``kernel`` runs the
    steps (the CuPy backend passes its own); by default the C++ one."""
    if getattr(node, "arithmetic", "float") == "fixed":
        return run_fixed(node, p, x, state)
    kernel = kernel or _Kernel(node, p, tuple(x.shape[2:]), x.dtype)
    x = x.contiguous()
    names = SPECS[type(node).kernel].state
    start = [cpu.fit(state[n].to(x.dtype), x.shape[1:]) for n in names]
    if torch.is_grad_enabled() and (x.requires_grad or any(s.requires_grad for s in start)):
        out, *new = _Fused.apply(kernel, x, *start)
    else:
        new = [s.clone() for s in start]
        out, _ = kernel.forward(x, new, save=False)
    return out, dict(zip(names, new))
