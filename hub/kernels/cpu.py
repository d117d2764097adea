"""The fused CPU path: a neuron layer over all time steps in one compiled call.

The reference :meth:`hub.Neuron.step` walks every time step with a dozen torch operations, each
a pass over memory. Here one C++ loop (``neurons.cpp``, compiled with the system's C++ compiler
on first use and cached) keeps a block of neurons in cache while it walks through time, doing the
same float operations in the same order, so the results are bit-identical to the reference
(``-ffp-contract=off``: a fused multiply-add would round once instead of twice). The backward
pass is the reverse recurrence with the surrogate of :mod:`hub.surrogate`; it gives gradients
with respect to the input and the state, so layers before and after a neuron train as usual.
Neurons whose own parameters require a gradient are left to the reference step.

The library is plain C++ called through :mod:`ctypes` (no torch headers); its specialisations
of every convention take a minute or two to build, once. Set ``HUB_KERNEL_CACHE`` to choose where
it is cached and ``CXX`` to choose the compiler.

Large outputs (``HUGE_PAGES_MIN`` bytes and up) are fresh memory from the operating system on
every call, and mapping it page by page costs about as much as the whole computation. On Linux
they are therefore marked for transparent huge pages (``madvise``, as PyTorch does with
``THP_MEM_ALLOC_ENABLE=1``), which halves the time of a large layer; ``HUB_KERNEL_HUGEPAGES=0``
turns that off. It changes where results are stored, never what they are.

Even on huge pages, fresh memory is zeroed by the operating system, which still costs about half
the kernel's time on a large layer. So large buffers (outputs, saved voltages, input gradients)
come from a small cache, as PyTorch's CUDA caching allocator does: a buffer goes back to the
cache only when the last tensor viewing it is gone (its numpy holder is freed with the tensor's
storage), so a tensor still in use never shares memory with a new one. At most
``CACHE_PER_SIZE`` idle buffers of one size, and ``HUB_KERNEL_CACHE_BYTES`` (default 1 GiB) of
idle buffers in all, are kept; ``0`` turns the cache off. :func:`empty_cache` hands the idle ones
back to the operating system.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from ..errors import HubError, ShapeError
from ..families import Family
from ..loihi import LoihiCUBA
from ..neurons import Neuron
from ..over_time import PerNode
from ..surrogate import SLOPE

#: How :attr:`hub.Simulator.paths` names a layer this module runs.
PATH = "the fused C++ kernel"
SOURCE = Path(__file__).with_name("neurons.cpp")
FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-fast-math", "-fopenmp", "-shared",
         "-fPIC", "-std=c++20"]
PARAMS = ("beta", "gain", "v_leak", "alpha", "current_gain", "threshold", "v_reset", "amplitude")
#: ``_Conf.uniform``: which parameters have one value for all neurons (as in neurons.cpp).
UNIFORM_ALL, UNIFORM_LEVELS = 1, 2
LEVELS = ("v_leak", "v_reset", "amplitude")
DTYPES = {torch.float32: 0, torch.float64: 1}
#: Below this many neuron-steps one thread is faster than waking (and spinning) a thread team.
PARALLEL_MIN = 1 << 16
#: Buffers this large get transparent huge pages (module docstring); glibc maps them fresh anyway.
HUGE_PAGES_MIN = 32 << 20
_MADV_HUGEPAGE = 14
_RESETS = {"zero": 0, "subtract": 1, "none": 2}
_MODES = {"binary": 0, "multi": 1, "graded": 2}


class KernelUnavailable(HubError):
    """The fused CPU kernels cannot be built or loaded here (no compiler, or it failed)."""


class _Conf(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int32) for name in (
        "spiking", "leaky", "current", "inclusive", "reset", "timing_next", "mode", "refractory",
        "order_new", "threads", "uniform")] + [("slope", ctypes.c_double)]


_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_failure: str | None = None


def _cache_dir() -> Path:
    base = os.environ.get("HUB_KERNEL_CACHE")
    if base:
        return Path(base)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "snn-hub" / "kernels"


def _cpu_signature() -> str:
    # -march=native code is only valid on a CPU with the same features
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def compiled(source_path: Path, stem: str) -> ctypes.CDLL:
    """``source_path`` compiled with :data:`FLAGS` (cached by content, compiler and CPU) and
    loaded; raises :class:`KernelUnavailable` if it cannot be."""
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if not compiler:
        raise KernelUnavailable("no C++ compiler found (set CXX, or install g++); "
                                "use backend='torch'")
    source = source_path.read_bytes()
    key = hashlib.sha256(b"\0".join([source, compiler.encode(), " ".join(FLAGS).encode(),
                                     _cpu_signature().encode()])).hexdigest()[:16]
    target = _cache_dir() / f"{stem}_{key}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        # build beside the target, then rename: another process may be building the same file
        fd, temp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        try:
            done = subprocess.run([compiler, *FLAGS, str(source_path), "-o", temp],
                                  capture_output=True, text=True, timeout=300)
            if done.returncode:
                raise KernelUnavailable(f"compiling {source_path.name} with {compiler} failed: "
                                        f"{done.stderr.strip()[-2000:]}; use backend='torch'")
            os.replace(temp, target)
        except (OSError, subprocess.SubprocessError) as error:
            raise KernelUnavailable(f"compiling {source_path.name} with {compiler} failed: "
                                    f"{error}; use backend='torch'") from None
        finally:
            if os.path.exists(temp):
                os.unlink(temp)
    return ctypes.CDLL(str(target))


def _build() -> ctypes.CDLL:
    library = compiled(SOURCE, "hub_neurons")
    pointer, i64 = ctypes.c_void_p, ctypes.c_int64
    library.hub_neuron_forward.argtypes = [ctypes.c_int, ctypes.POINTER(_Conf), pointer, i64, i64,
                                           i64] + [pointer] * 8
    library.hub_neuron_backward.argtypes = [ctypes.c_int, ctypes.POINTER(_Conf), pointer, i64,
                                            i64, i64, pointer, i64] + [pointer] * 7
    i32 = ctypes.c_int32
    library.hub_loihi_forward.argtypes = [ctypes.c_int, pointer, i32, i32, i32, i32, i64, i64,
                                          i64] + [pointer] * 5
    library.hub_max_pool2d.argtypes = [ctypes.c_int, i32] + [i64] * 5 + [i32] * 6 + [pointer] * 3
    return library


def library() -> ctypes.CDLL:
    """The compiled kernels, built on first use; raises :class:`KernelUnavailable` if it can't."""
    global _library, _failure
    with _lock:
        if _library is None and _failure is None:
            try:
                _library = _build()
            except KernelUnavailable as error:
                _failure = str(error)
        if _library is None:
            raise KernelUnavailable(_failure or "the fused kernels failed to load")
        return _library


def available() -> tuple[bool, str]:
    """Whether the fused CPU kernels can run here, and if not, why."""
    try:
        library()
    except KernelUnavailable as error:
        return False, str(error)
    return True, ""


def unsupported(node: Neuron, p: dict, x: torch.Tensor) -> str | None:
    """Why ``node`` cannot run fused on input ``x`` with parameters ``p``; None if it can."""
    if isinstance(node, Family):
        from . import families

        return families.unsupported(node, p, x)
    if isinstance(node, LoihiCUBA):
        if type(node).step is not LoihiCUBA.step:
            return f"{type(node).__name__} overrides LoihiCUBA.step"
        if x.device.type != "cpu" or x.dtype not in DTYPES or x.numel() == 0:
            return f"the fused Loihi kernel takes non-empty float CPU inputs, not {x.dtype}"
        return None
    return refusal(node, p, x, device="cpu", dtypes=DTYPES, kernels="the fused kernels")


def refusal(node: Neuron, p: dict, x: torch.Tensor, *, device: str, dtypes: Any,
            kernels: str) -> str | None:
    """Why ``kernels`` on ``device`` with ``dtypes`` cannot run ``node`` on ``x``, or None."""
    if not isinstance(node, Neuron):
        return f"{type(node).__name__} is not a neuron"
    overridden = overridden_step(node)
    if overridden:
        return (f"{type(node).__name__} overrides Neuron.{overridden}, and {kernels} compute "
                "only the built-in equation")
    if x.device.type != device:
        return f"the input is on {x.device}, not {device}"
    if x.dtype not in dtypes:
        return f"dtype {x.dtype} ({kernels} do {' and '.join(map(str, dtypes))})"
    if x.numel() == 0:
        return "the input is empty"
    if torch.is_grad_enabled() and any(t.requires_grad for t in p.values()):
        return f"the neuron's parameters require gradients ({kernels} give input gradients)"
    return None


#: The methods of :class:`hub.Neuron` whose behaviour the kernels reproduce.
STEP_METHODS = ("step", "_integrate", "initial_state")


def overridden_step(node: Neuron) -> str | None:
    """The first of :data:`STEP_METHODS` that ``node``'s type overrides, or None.

    A plugin's neuron type may keep the built-in fields and compute something else; the
    kernels run the built-in equation only, so such a type always steps through its own code.
    """
    cls = type(node)
    for name in STEP_METHODS:
        if getattr(cls, name) is not getattr(Neuron, name):
            return name
    return None


def _conf(node: Neuron) -> _Conf:
    spiking = node.spiking
    return _Conf(
        spiking=spiking, leaky=node.leaky, current=node.current,
        inclusive=spiking and node.comparison == ">=",
        reset=_RESETS[node.reset] if spiking else 2,
        timing_next=spiking and node.reset_timing == "next",
        mode=_MODES[node.spike_mode] if spiking else 0,
        refractory=node.refractory if spiking else 0,
        order_new=node.current and node.current_order == "new",
        threads=1, slope=SLOPE)


def _address(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


_madvise: Any = None


def _libc(name: str, argtypes: list) -> Any:
    """The C library's function ``name`` (returning an int) through ctypes, or False where
    there is none to load."""
    try:
        function = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return False
    function.argtypes, function.restype = argtypes, ctypes.c_int
    return function


def _advise(t: torch.Tensor) -> None:
    """Ask for transparent huge pages under a large CPU tensor (module docstring)."""
    global _madvise
    size = t.numel() * t.element_size()
    if (size < HUGE_PAGES_MIN or t.device.type != "cpu" or not sys.platform.startswith("linux")
            or os.environ.get("HUB_KERNEL_HUGEPAGES", "1") == "0"):
        return
    if _madvise is None:
        _madvise = _libc("madvise", [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int])
    if _madvise:
        huge = 2 << 20
        start = (t.data_ptr() + huge - 1) // huge * huge
        end = (t.data_ptr() + size) // huge * huge
        if end > start:
            _madvise(start, end - start, _MADV_HUGEPAGE)  # only advice: failure changes nothing


#: Idle buffers kept per size by the cache (module docstring).
CACHE_PER_SIZE = 2
_CACHE_DEFAULT = 1 << 30
_NUMPY = {torch.float32: np.float32, torch.float64: np.float64, torch.uint8: np.uint8,
          torch.int32: np.int32}
_cache_lock = threading.RLock()  # re-entrant: a holder may be freed while the lock is held
_idle: list[tuple[int, torch.Tensor]] = []  # (bytes, raw uint8 buffer), oldest first


def _cache_limit() -> int:
    try:
        return max(0, int(os.environ.get("HUB_KERNEL_CACHE_BYTES", _CACHE_DEFAULT)))
    except ValueError:
        return _CACHE_DEFAULT


def _release(nbytes: int, raw: torch.Tensor) -> None:
    """Take back a buffer no tensor uses any more; keep it if the bounds allow."""
    limit = _cache_limit()
    with _cache_lock:
        _idle.append((nbytes, raw))
        while _idle:
            same = [k for k, (n, _) in enumerate(_idle) if n == nbytes]
            if len(same) > CACHE_PER_SIZE:
                del _idle[same[0]]
            elif sum(n for n, _ in _idle) > limit:
                del _idle[0]
            else:
                break


class _Holder:
    """Lends a cached buffer to numpy (and through it to torch); returns it when freed.

    ``torch.from_numpy`` keeps the array alive as long as its storage lives, the array keeps its
    holder alive, and every view of the tensor shares that storage: so ``__del__`` runs only
    after the last tensor using the buffer is gone.
    """

    def __init__(self, nbytes: int, raw: torch.Tensor, shape: tuple[int, ...],
                 dtype: torch.dtype) -> None:
        self.nbytes, self.raw = nbytes, raw
        self.__array_interface__ = {
            "shape": shape, "typestr": np.dtype(_NUMPY[dtype]).str,
            "data": (raw.data_ptr(), False), "version": 3}

    def __del__(self) -> None:
        try:
            _release(self.nbytes, self.raw)
        except Exception:  # e.g. at interpreter exit: the buffer is simply freed
            pass


def empty_cache() -> None:
    """Hand the fused kernels' idle cached buffers back to the operating system."""
    with _cache_lock:
        _idle.clear()


def _empty(like: torch.Tensor, dtype: torch.dtype | None = None,
           shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """An uninitialised tensor shaped like ``like`` (or ``shape``): large ones on huge pages,
    from the cache."""
    dtype = dtype or like.dtype
    shape = tuple(like.shape) if shape is None else shape
    nbytes = math.prod(shape) * dtype.itemsize
    if (nbytes < HUGE_PAGES_MIN or like.device.type != "cpu" or dtype not in _NUMPY
            or _cache_limit() == 0):
        t = torch.empty(shape, dtype=dtype, device=like.device)
        _advise(t)
        return t
    with _cache_lock:
        found = next((k for k in range(len(_idle) - 1, -1, -1) if _idle[k][0] == nbytes), None)
        raw = _idle.pop(found)[1] if found is not None else None
    if raw is None:
        raw = torch.empty(nbytes, dtype=torch.uint8)
        _advise(raw)
    return torch.from_numpy(np.asarray(_Holder(nbytes, raw, shape, dtype)))


#: Each node's last kernel, with what it was built from (dropped with the node).
_built = PerNode()


def _kernel(node: Neuron, p: dict, shape: tuple[int, ...], dtype: torch.dtype) -> _Kernel:
    """The kernel for ``node``: built again only when the shape, the dtype or a parameter's
    bits changed since the last call (compared with a copy: a parameter may be modified in
    place, through ``.data`` too, where no version counter sees it)."""
    found = _built.get(node)
    if found is not None and found[0] == (shape, dtype, tuple(p)) and all(
            _same_bits(a, b) for a, b in zip(found[2], p.values())):
        return found[1]
    kernel = _Kernel(node, p, shape, dtype)
    _built.set(node, ((shape, dtype, tuple(p)), kernel,
                      tuple(t.detach().clone() for t in p.values())))
    return kernel


_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_memcmp: Any = None


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a`` and ``b`` hold the same bits (``b``: a contiguous copy of an earlier
    ``a``). On the CPU one ``memcmp`` of their bytes: run on every call of a layer, where the
    four torch calls of the general comparison cost more than a small layer's kernel."""
    global _memcmp
    if a.dtype != b.dtype or a.shape != b.shape or a.device != b.device:
        return False
    if _memcmp is None:
        _memcmp = _libc("memcmp", [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t])
    if a.numel() == 0:
        return True
    if _memcmp and a.device.type == "cpu" and a.is_contiguous() and b.is_contiguous():
        return _memcmp(a.data_ptr(), b.data_ptr(), a.numel() * a.element_size()) == 0
    if a.is_floating_point():
        bits = _BITS[a.element_size()]
        a, b = a.detach().contiguous().view(bits), b.detach().contiguous().view(bits)
    return torch.equal(a, b)


class _Kernel:
    """The compiled call for one neuron node, its parameters and one neuron shape."""

    #: backward() takes a gradient that is the same at every step as one step's (the CuPy
    #: kernels, which share _Fused, take one per step)
    one_step_gradient = True

    def __init__(self, node: Neuron, p: dict, shape: tuple[int, ...], dtype: torch.dtype) -> None:
        self.conf = _conf(node)
        self.dtype = dtype
        self.code = DTYPES[dtype]
        self.size = int(np.prod(shape, dtype=np.int64))
        # every parameter as K contiguous values; absent ones point at a dummy
        dummy = torch.zeros(self.size, dtype=dtype)
        self.params = [torch.broadcast_to(p[name].detach().to(dtype), shape).reshape(-1)
                       .contiguous() if name in p else dummy for name in PARAMS]
        self.pointers = (ctypes.c_void_p * len(PARAMS))(*[t.data_ptr() for t in self.params])
        # one value for all neurons (bit for bit, so a -0.0 among 0.0s counts as another value):
        # the kernel then keeps it in a register instead of loading it per neuron and step, for
        # every parameter or (the usual case of per-neuron decays or thresholds) for the levels
        bits = torch.int32 if dtype == torch.float32 else torch.int64
        same = {name: bool((t.view(bits) == t.view(bits)[0]).all())
                for name, t in zip(PARAMS, self.params)}
        self.conf.uniform = (UNIFORM_ALL if all(same.values())
                             else UNIFORM_LEVELS if all(same[name] for name in LEVELS) else 0)

    def _threads(self, steps: int, total: int) -> None:
        big = steps * total >= PARALLEL_MIN
        self.conf.threads = max(1, torch.get_num_threads()) if big else 1

    def forward(self, x: torch.Tensor, v: torch.Tensor, i: torch.Tensor, s: torch.Tensor,
                r: torch.Tensor, save: bool, out: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, ...]:
        steps, total = x.shape[0], x[0].numel()
        self._threads(steps, total)
        out = _empty(x) if out is None else out
        save_v = _empty(x) if save else None
        # flags only for a refractory period: otherwise the spike follows from the saved voltage
        flagged = save and self.conf.refractory > 0
        save_f = _empty(x, torch.uint8) if flagged else None
        status = library().hub_neuron_forward(
            self.code, ctypes.byref(self.conf), self.pointers, steps, total, self.size,
            x.data_ptr(), out.data_ptr(), v.data_ptr(), i.data_ptr(), s.data_ptr(), r.data_ptr(),
            _address(save_v), _address(save_f))
        if status:
            raise HubError(f"the fused kernel refused dtype {self.dtype}")
        return out, save_v, save_f

    def backward(self, gout: torch.Tensor, save_v: torch.Tensor, save_f: torch.Tensor,
                 s0: torch.Tensor, gv: torch.Tensor, gi: torch.Tensor,
                 gs: torch.Tensor) -> torch.Tensor:
        """``gout``: [T, *shape] contiguous, or [*shape] where every step has that gradient."""
        steps, total = save_v.shape[0], save_v[0].numel()
        self._threads(steps, total)
        gx = _empty(save_v)
        library().hub_neuron_backward(
            self.code, ctypes.byref(self.conf), self.pointers, steps, total, self.size,
            gout.data_ptr(), total if gout.dim() == save_v.dim() else 0, _address(save_v),
            _address(save_f), s0.data_ptr(), gv.data_ptr(), gi.data_ptr(), gs.data_ptr(),
            gx.data_ptr())
        return gx


class _Fused(torch.autograd.Function):
    """Autograd for the fused forward: gradients for the input and the initial state.

    With an axonal delay (``line``, the last ``delay`` outputs of the call before) the kernel
    writes its steps straight after the line's old outputs, and the outputs and the new line are
    read off that one buffer, as without gradients: a ``torch.cat`` and its slices would copy
    the whole sequence forward and backward through fresh memory.
    """

    @staticmethod
    def forward(ctx, kernel: _Kernel, x, v0, i0, s0, r0, line):  # type: ignore[override]
        v, i, s, r = v0.clone(), i0.clone(), s0.clone(), r0.clone()
        delay, steps = (0 if line is None else line.shape[0]), x.shape[0]
        both = _empty(x, shape=(delay + steps, *x.shape[1:])) if delay else None
        if delay:
            both[:delay].copy_(line)
        out, save_v, save_f = kernel.forward(x, v, i, s, r, save=True,
                                             out=both[delay:] if delay else None)
        ctx.kernel, ctx.delay = kernel, delay
        ctx.save_for_backward(save_v, save_f, s0)  # save_f is None without a refractory period
        ctx.mark_non_differentiable(r)
        if not delay:
            return out, v, i, s, r, None
        return both[:steps], v, i, s, r, both[steps:].clone()

    @staticmethod
    @once_differentiable  # a second derivative through the kernel raises instead of being 0
    def backward(ctx, gout, gv, gi, gs, _gr, gline):  # type: ignore[override]
        save_v, save_f, s0 = ctx.saved_tensors
        like = s0
        delay, g_line = ctx.delay, None
        if delay and (gout is not None or gline is not None):
            # the gradient of the buffer the outputs and the new line were read off
            steps = save_v.shape[0]
            g_both = _empty(save_v, shape=(delay + steps, *save_v.shape[1:]))
            for part, g in ((g_both[:steps], gout), (g_both[steps:], gline)):
                part.copy_(g) if g is not None else part.zero_()
            gout, g_line = g_both[delay:], g_both[:delay].clone()

        def own(g: torch.Tensor | None) -> torch.Tensor:
            # the kernel updates the state gradients in place: never touch autograd's buffers
            return torch.zeros_like(like) if g is None else g.contiguous().clone()

        gout = _gradient(gout, save_v, ctx.kernel)
        gv, gi, gs = own(gv), own(gi), own(gs)
        gx = ctx.kernel.backward(gout, save_v, save_f, s0, gv, gi, gs)
        return None, gx, gv, gi, gs, None, g_line


def _gradient(gout: torch.Tensor | None, like: torch.Tensor, kernel: Any) -> torch.Tensor:
    """The output gradient as ``kernel.backward`` takes it, for outputs shaped like ``like``:
    contiguous, and where it is the same at every step (``out.sum()``'s expanded ones, a loss on
    spike counts) and the kernel reads that, one step's instead of ``T`` copies."""
    one = getattr(kernel, "one_step_gradient", False)
    if gout is None:
        return torch.zeros_like(like[0] if one else like)
    if gout.is_contiguous():
        return gout
    if one and gout.stride(0) == 0:
        return gout[0].contiguous()
    return _empty(gout).copy_(gout)


_LOIHI_PARAMS = ("i_decay", "v_decay", "threshold", "bias")


#: The output modes of the fused Loihi kernel, by ``LoihiCUBA.spike_mode``.
_LOIHI_MODES = {"binary": 0, "graded": 1, "voltage": 2}


def run_loihi(node: LoihiCUBA, p: dict, x: torch.Tensor,
              state: dict[str, Any]) -> tuple[torch.Tensor, dict]:
    """:func:`run` for :class:`hub.LoihiCUBA`: its integer step over a whole sequence, forward
    only (its outputs carry no gradient, as the reference's)."""
    rounded = torch.round(x)
    if not torch.equal(rounded, x):
        raise HubError("LoihiCUBA received a non-integer input: Loihi synapses deliver "
                       "integer sums of integer weights; quantise the weights first "
                       "(hub_plugins.netx.quantize)", field="input")
    shape = tuple(x.shape[2:])
    size = int(np.prod(shape, dtype=np.int64))
    x = x.detach().contiguous()
    params = [torch.broadcast_to(p[name].to(torch.int64), shape).reshape(-1).contiguous()
              for name in _LOIHI_PARAMS]
    pointers = (ctypes.c_void_p * len(params))(*[t.data_ptr() for t in params])
    u, v = (fit(state[n], x.shape[1:]).clone() for n in ("u", "v"))
    r = fit(state["r"], x.shape[1:]).clone() if node.refractory else None
    steps, total = x.shape[0], x[0].numel()
    threads = max(1, torch.get_num_threads()) if steps * total >= PARALLEL_MIN else 1
    delay = node.delay
    both = _empty(x, shape=(delay + steps, *x.shape[1:])) if delay else None
    if delay:
        both[:delay].copy_(state["line"])
    out = both[delay:] if delay else _empty(x)
    library().hub_loihi_forward(
        DTYPES[x.dtype], pointers, node.bias_exp, node.refractory,
        _LOIHI_MODES[node.spike_mode], threads, steps, total, size, x.data_ptr(),
        out.data_ptr(), u.data_ptr(), v.data_ptr(), _address(r))
    new: dict[str, Any] = {"u": u, "v": v}
    if r is not None:
        new["r"] = r
    if delay:
        out, new["line"] = both[:steps], both[steps:].clone()
    return out, new


def run(node: Neuron, p: dict, x: torch.Tensor, state: dict[str, Any], *,
        kernel: Any = None) -> tuple[torch.Tensor, dict]:
    """Run ``node`` over a whole sequence ``x`` ``[T, N, *shape]`` from ``state``.

    Returns the outputs ``[T, N, *shape]`` and the state after the last step, both exactly what
    ``T`` calls of ``node.step(p, x[t], state)`` give. Check :func:`unsupported` first.
    ``kernel`` runs the steps (the CuPy backend passes its own); by default the C++ one.
    """
    if isinstance(node, LoihiCUBA):
        return run_loihi(node, p, x, state)
    if isinstance(node, Family):
        from . import families

        return families.run(node, p, x, state)
    shape = tuple(x.shape[2:])
    dtype = x.dtype
    x = x.contiguous()
    v0, i0, s0, r0 = _state_in(node, state, dtype, tuple(x.shape[1:]))
    kernel = kernel or _kernel(node, p, shape, dtype)
    delay = node.delay if node.spiking else 0
    tracked = torch.is_grad_enabled() and any(
        t.requires_grad for t in (x, v0, i0, s0, *([state["line"]] if delay else [])))
    line = None
    if tracked:
        out, v, i, s, r, line = _Fused.apply(kernel, x, v0, i0, s0, r0,
                                             state["line"] if delay else None)
    else:
        # copy only the state the kernel writes: the current, spike and refractory state of a
        # neuron without them are zeros it never touches
        v = v0.clone()
        i = i0.clone() if node.current else i0
        s = s0.clone() if node.spiking else s0
        r = r0.clone() if "r" in state else r0
        # with a delay, the steps go straight after the line's old outputs (no copy of them)
        both = _empty(x, shape=(delay + x.shape[0], *x.shape[1:])) if delay else None
        if delay:
            both[:delay].copy_(state["line"])
        out, _, _ = kernel.forward(x, v, i, s, r, save=False,
                                   out=both[delay:] if delay else None)
        if delay:
            out = both
    new = _state_out(node, state, v, i, s, r)
    if node.spiking:
        if delay and line is not None:
            new["line"] = line
        elif delay:
            # the line holds the last `delay` outputs; the first `delay` steps emit the old line
            out, new["line"] = out[:x.shape[0]], out[x.shape[0]:].clone()
    return out, new


def fit(state: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """A state tensor as a kernel takes it for one step of shape ``shape`` ``[N, ...]``:
    contiguous, and state kept from a call on fewer samples broadcast as the reference's step
    broadcasts it; state that does not broadcast is refused (the kernel would run past it)."""
    try:
        return torch.broadcast_to(state, shape).contiguous()
    except RuntimeError:
        raise ShapeError(f"the state of the last call has shape {list(state.shape)}, this step "
                         f"{list(shape)}; call reset() before running another batch size"
                         ) from None


def _state_in(node: Neuron, state: dict[str, Any], dtype: torch.dtype,
              shape: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    """The voltage, current, spike and refractory state the kernel takes for one step of shape
    ``shape`` ``[N, ...]``, contiguous (zeros for what ``node`` lacks: the kernel never touches
    them), each fitted to ``shape`` (:func:`fit`)."""
    def fitted(t: torch.Tensor) -> torch.Tensor:
        return fit(t, shape)

    v0 = fitted(state["v"].to(dtype))
    # one tensor of zeros stands for all the absent state (never written): as the refractory
    # counters' int32 it is only a pointer the kernel never follows (twice as long for float64)
    zeros = (None if node.current and node.spiking and "r" in state
             else torch.zeros(v0.shape, dtype=v0.dtype, device=v0.device))
    i0 = fitted(state["i"]) if node.current else zeros
    s0 = fitted(state["s"]) if node.spiking else zeros
    r0 = fitted(state["r"]) if "r" in state else zeros.view(-1).view(torch.int32)
    return v0, i0, s0, r0


def _state_out(node: Neuron, state: dict[str, Any], v: torch.Tensor, i: torch.Tensor,
               s: torch.Tensor, r: torch.Tensor) -> dict[str, Any]:
    """The state the reference step leaves, from the kernel's (its keys, but for a delay line)."""
    new: dict[str, Any] = {}
    if node.current:
        new["i"] = i
    new["v"] = v
    if node.spiking:
        new["s"] = s
        if "r" in state:
            new["r"] = r
    return new


class Stepper:
    """A neuron layer advanced one time step per call on the kernel of :func:`run`, for a
    neuron on a cycle that a recurrent edge closes (each of its steps waits for the step before
    of the other nodes on the cycle).

    ``T`` calls give what :func:`run` gives on the ``T`` steps at once, and so what ``T``
    reference steps give, bit for bit, input and state gradients included: a call is :func:`run`
    with ``T = 1``, less what a call need not do again (finding the kernel, checking its
    parameters' bits, copying the state). Without gradients the state stays in the stepper's own
    buffers, updated in place, and a step is one compiled call that may write its output straight
    into a sequence (``out``). Check :func:`steppable` first; the parameters must not change
    while the stepper is in use.
    """

    def __init__(self, node: Neuron, p: dict, state: dict[str, Any], like: torch.Tensor) -> None:
        self.node, self.start = node, state
        self.kernel = kernel = _kernel(node, p, tuple(like.shape[1:]), like.dtype)
        v0, i0, s0, r0 = _state_in(node, state, like.dtype, tuple(like.shape))
        # copies of what the kernel writes: the state passed in may be shared (zeros)
        self.v, self.s = v0.clone(), s0.clone() if node.spiking else s0
        self.i = i0.clone() if node.current else i0
        self.r = r0.clone() if "r" in state else r0
        # the call's fixed arguments, its own thread count (the kernel sets the shared one per
        # call over all steps): a step costs little more than the compiled call
        conf = _Conf.from_buffer_copy(kernel.conf)
        total = like.numel()
        conf.threads = max(1, torch.get_num_threads()) if total >= PARALLEL_MIN else 1
        self._conf, self.shape = conf, like.shape
        self._fixed = (kernel.code, ctypes.byref(conf), kernel.pointers, 1, total, kernel.size)

    def __call__(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """The output of one step ``x`` ``[N, *shape]``; without gradients, written into
        ``out`` (``[N, *shape]``, contiguous) if given."""
        if x.shape != self.shape or x.dtype != self.kernel.dtype:  # the kernel would run past
            raise ShapeError(f"a step of shape {list(x.shape)} ({x.dtype}) for a stepper of "
                             f"{list(self.shape)} ({self.kernel.dtype}); call reset() before "
                             "running another batch size")
        x = x.contiguous()
        if torch.is_grad_enabled() and any(
                t.requires_grad for t in (x, self.v, self.i, self.s)):
            y, self.v, self.i, self.s, self.r, _ = _Fused.apply(
                self.kernel, x.unsqueeze(0), self.v, self.i, self.s, self.r, None)
            return y[0]
        out = torch.empty_like(x) if out is None else out
        if library().hub_neuron_forward(
                *self._fixed, x.data_ptr(), out.data_ptr(), self.v.data_ptr(),
                self.i.data_ptr(), self.s.data_ptr(), self.r.data_ptr(), None, None):
            raise HubError(f"the fused kernel refused dtype {x.dtype}")
        return out

    def state(self) -> dict[str, Any]:
        """The state after the last step, as the reference step leaves it."""
        return _state_out(self.node, self.start, self.v, self.i, self.s, self.r)


def steppable(node: Any) -> bool:
    """Whether a :class:`Stepper` takes ``node`` (after :func:`unsupported` accepted it): a neuron
    of the built-in family without an axonal delay."""
    return (isinstance(node, Neuron) and not isinstance(node, (Family, LoihiCUBA))
            and not (node.spiking and node.delay))


def max_pool2d(node: Any, x: torch.Tensor) -> torch.Tensor | None:
    """:class:`hub.MaxPool2d` on ``x`` ``[N, C, H, W]`` as ``F.max_pool2d`` computes it on the
    CPU (the same values, and through the same indices the same gradients), in one pass; None
    where this kernel does not apply (then the caller uses torch's)."""
    if (x.device.type != "cpu" or x.dtype not in DTYPES or x.dim() != 4 or not x.numel()
            or not available()[0]):
        return None
    return _MaxPool.apply(x, node)


class _MaxPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, node: Any) -> torch.Tensor:
        x = x.contiguous()
        (kh, kw), (sh, sw), (ph, pw) = node.kernel_size, node.stride, node.padding
        n, c, h, w = x.shape
        oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        out = x.new_empty((n, c, oh, ow))
        index = (torch.empty((n, c, oh, ow), dtype=torch.int64)
                 if ctx.needs_input_grad[0] else None)
        threads = max(1, torch.get_num_threads()) if x.numel() >= PARALLEL_MIN else 1
        library().hub_max_pool2d(DTYPES[x.dtype], threads, n * c, h, w, oh, ow, kh, kw, sh, sw,
                                 ph, pw, x.data_ptr(), out.data_ptr(), _address(index))
        if index is not None:
            ctx.save_for_backward(x, index)
            ctx.node = node
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        x, index = ctx.saved_tensors
        node = ctx.node
        return torch.ops.aten.max_pool2d_with_indices_backward(
            g, x, list(node.kernel_size), list(node.stride), list(node.padding), [1, 1], False,
            index), None
