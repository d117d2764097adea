"""The CUDA path: the fused neuron update as CuPy raw kernels, one thread per neuron.

Each thread walks its neuron through all time steps with the float operations of
:meth:`hub.Neuron.step` in the same order. Bit-identity with torch's CUDA path needs two things:
no fused multiply-add (``--fmad=false``), and for float16 one rounding to half after every
operation, because torch computes each half-precision elementwise operation in float32 and
rounds its result. ``R`` is the storage type and every intermediate goes through ``rnd``.

UNVERIFIED: this module was written without a GPU or CuPy to run it; the CPU kernels in
``neurons.cpp`` implement the same recurrence and are tested bit for bit against the reference.
``tests/test_kernels.py`` runs these kernels against the reference when CuPy and a GPU exist.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..families import Family
from ..neurons import Neuron
from ..surrogate import SLOPE
from .cpu import PARAMS, refusal

#: How :attr:`hub.Simulator.paths` names a layer this module runs.
PATH = "the fused CuPy kernel"
DTYPES = {torch.float32: "float", torch.float16: "__half"}
_RESETS = {"zero": 0, "subtract": 1, "none": 2}
_MODES = {"binary": 0, "multi": 1, "graded": 2}

SOURCE = r"""
#include <cuda_fp16.h>
typedef R_TYPE R;
__device__ __forceinline__ float rnd(float a) { return (float)(R)a; }  // one rounding per op

struct P { const R *beta, *gain, *v_leak, *alpha, *current_gain, *threshold, *v_reset,
           *amplitude; };

__device__ float integrate(const P& p, long long k, float v, float u) {
    if (LEAKY) {
        float vl = (float)p.v_leak[k];
        float a = rnd(v - vl), b = rnd((float)p.beta[k] * a), c = rnd(vl + b);
        return rnd(c + rnd((float)p.gain[k] * u));
    }
    return rnd(v + rnd((float)p.gain[k] * u));
}

__device__ float multi_count(float v, float th, float s) {
    float n = rnd(floorf(rnd(v / th)));
    n = rnd(n * th) > v ? rnd(n - 1.f) : n;
    n = rnd(rnd(n + 1.f) * th) <= v ? rnd(n + 1.f) : n;
    if (!INCLUSIVE) n = rnd(n * th) == v ? rnd(n - 1.f) : n;
    float m = n < 1.f ? 1.f : n;
    return rnd(s + rnd(rnd(m * s) - s));
}

#define PARAMS_IN const R* beta, const R* gain, const R* v_leak, const R* alpha, \
    const R* current_gain, const R* threshold, const R* v_reset, const R* amplitude
#define PARAMS_STRUCT P p = {beta, gain, v_leak, alpha, current_gain, threshold, v_reset, amplitude}

extern "C" __global__ void forward(PARAMS_IN, long long T, long long M, long long K, const R* x,
        R* out, R* v_, R* i_, R* s_, int* r_, R* save_v, unsigned char* save_f) {
    long long m = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (m >= M) return;
    PARAMS_STRUCT;
    long long k = m % K;
    float v = (float)v_[m], i = (float)i_[m], s = (float)s_[m];
    int r = r_[m];
    for (long long t = 0; t < T; ++t) {
        float xv = (float)x[t * M + m], u = xv;
        if (CURRENT) {
            float inew = rnd(rnd((float)p.alpha[k] * i) + rnd((float)p.current_gain[k] * xv));
            u = ORDER_NEW ? inew : i;
            i = inew;
        }
        if (!SPIKING) { v = integrate(p, k, v, u); out[t * M + m] = (R)v; continue; }
        float th = (float)p.threshold[k];
        float vv = v;
        if (TIMING_NEXT && RESET == 0 && s > 0.f) vv = (float)p.v_reset[k];
        vv = integrate(p, k, vv, u);
        if (TIMING_NEXT && RESET == 1) vv = rnd(vv - rnd(th * s));
        bool resting = REFRACTORY && r > 0;
        if (resting) vv = v;
        float z = rnd(vv - th);
        float sp = (INCLUSIVE ? z >= 0.f : z > 0.f) ? 1.f : 0.f;
        if (REFRACTORY) sp = resting ? 0.f : sp;
        float count = MODE == 1 ? multi_count(vv, th, sp) : sp;
        float o = MODE == 2 ? rnd(count * vv) : count;
        out[t * M + m] = (R)rnd(o * (float)p.amplitude[k]);
        s = TIMING_NEXT ? count : sp;
        if (save_v) save_v[t * M + m] = (R)vv;
        if (save_f) save_f[t * M + m] = (unsigned char)((sp > 0.f) | (resting << 1));
        if (!TIMING_NEXT) {
            if (RESET == 1) vv = rnd(vv - rnd(th * count));
            else if (RESET == 0 && sp > 0.f) vv = (float)p.v_reset[k];
        }
        v = vv;
        if (REFRACTORY) r = sp > 0.f ? REFRACTORY : (r - 1 > 0 ? r - 1 : 0);
    }
    v_[m] = (R)v; i_[m] = (R)i; s_[m] = (R)s; r_[m] = r;
}

extern "C" __global__ void backward(PARAMS_IN, long long T, long long M, long long K, const R* gout,
        const R* save_v, const unsigned char* save_f, const R* s0, R* gv_, R* gi_, R* gs_,
        R* gx) {
    long long m = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (m >= M) return;
    PARAMS_STRUCT;
    long long k = m % K;
    float gv = (float)gv_[m], gi = (float)gi_[m], gs = (float)gs_[m];
    for (long long t = T - 1; t >= 0; --t) {
        float g_int, g_hold = 0.f, go = (float)gout[t * M + m];
        if (!SPIKING) {
            g_int = rnd(go + gv);
        } else {
            float th = (float)p.threshold[k], vv = (float)save_v[t * M + m];
            float z = rnd(vv - th);
            // flags are saved with a refractory period only; else the voltage tells the spike
            unsigned char f = REFRACTORY ? save_f[t * M + m] : 0;
            float sp = (REFRACTORY ? (f & 1) : (INCLUSIVE ? z >= 0.f : z > 0.f)) ? 1.f : 0.f;
            bool resting = f & 2;
            float count = MODE == 1 ? multi_count(vv, th, sp) : sp;
            float g_o = rnd(go * (float)p.amplitude[k]);
            float g_count = MODE == 2 ? rnd(g_o * vv) : g_o;
            float g_reset = gv;
            if (!TIMING_NEXT) {
                if (RESET == 1) g_count = rnd(g_count + rnd(-gv * th));
                else if (RESET == 0 && sp > 0.f) g_reset = 0.f;
            }
            g_count = rnd(g_count + gs);
            float g_s = REFRACTORY ? rnd(g_count * (resting ? 0.f : 1.f)) : g_count;
            float den = rnd(1.f + rnd(SLOPE * fabsf(z)));
            den = rnd(den * den);
            float g_z = rnd(g_s / den);
            float g_vv = MODE == 2 ? rnd(rnd(g_reset + rnd(g_o * count)) + g_z)
                                   : rnd(g_reset + g_z);
            g_int = g_vv;
            if (REFRACTORY) { g_int = resting ? 0.f : g_vv; g_hold = resting ? g_vv : 0.f; }
            gs = (TIMING_NEXT && RESET == 1) ? rnd(-g_int * th) : 0.f;
        }
        float g_u = rnd(g_int * (float)p.gain[k]);
        float g_v = LEAKY ? rnd(g_int * (float)p.beta[k]) : g_int;
        if (SPIKING && TIMING_NEXT && RESET == 0) {
            float zp = t > 0 ? rnd((float)save_v[(t - 1) * M + m] - (float)p.threshold[k]) : 0.f;
            bool prev = t > 0 ? (INCLUSIVE ? zp >= 0.f : zp > 0.f) : ((float)s0[m] > 0.f);
            if (prev) g_v = 0.f;
        }
        gv = REFRACTORY ? rnd(g_v + g_hold) : g_v;
        if (CURRENT) {
            float g_new = ORDER_NEW ? rnd(gi + g_u) : gi;
            gx[t * M + m] = (R)rnd(g_new * (float)p.current_gain[k]);
            gi = ORDER_NEW ? rnd(g_new * (float)p.alpha[k])
                           : rnd(rnd(g_new * (float)p.alpha[k]) + g_u);
        } else {
            gx[t * M + m] = (R)g_u;
        }
    }
    gv_[m] = (R)gv; gi_[m] = (R)gi; gs_[m] = (R)gs;
}
"""

_modules: dict[tuple, Any] = {}


def available() -> tuple[bool, str]:
    """Whether CuPy and a CUDA GPU are present, and if not, why."""
    try:
        import cupy
    except ImportError:
        return False, "CuPy is not installed (pip install cupy-cuda12x)"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return False, "CuPy finds no CUDA GPU"
    except Exception as error:  # CUDA raises its own types when there is no driver
        return False, f"CuPy finds no CUDA GPU ({error})"
    if not torch.cuda.is_available():
        return False, "torch was built without CUDA or sees no GPU"
    return True, ""


def unsupported(node: Neuron, p: dict, x: torch.Tensor) -> str | None:
    """Why ``node`` cannot run in the CuPy kernels on ``x``; None if it can."""
    if isinstance(node, Family):
        from . import cupy_families

        return cupy_families.unsupported(node, p, x)
    return refusal(node, p, x, device="cuda", dtypes=DTYPES, kernels="the CuPy kernels")


def _module(node: Neuron, dtype: torch.dtype) -> Any:
    import cupy

    spiking = node.spiking
    defines = {
        "R_TYPE": DTYPES[dtype], "SPIKING": int(spiking), "LEAKY": int(node.leaky),
        "CURRENT": int(node.current),
        "INCLUSIVE": int(spiking and node.comparison == ">="),
        "RESET": _RESETS[node.reset] if spiking else 2,
        "TIMING_NEXT": int(spiking and node.reset_timing == "next"),
        "MODE": _MODES[node.spike_mode] if spiking else 0,
        "REFRACTORY": node.refractory if spiking else 0,
        "ORDER_NEW": int(node.current and node.current_order == "new"),
        "SLOPE": f"{SLOPE!r}f",
    }
    key = tuple(sorted(defines.items()))
    if key not in _modules:
        header = "".join(f"#define {k} {v}\n" for k, v in defines.items() if k != "R_TYPE")
        source = f"#define R_TYPE {defines['R_TYPE']}\n{header}{SOURCE}"
        _modules[key] = cupy.RawModule(code=source, options=("--fmad=false", "-std=c++14"))
    return _modules[key]


class _Launch:
    """One neuron node's kernels, parameters and shape on the GPU."""

    def __init__(self, node: Neuron, p: dict, shape: tuple[int, ...], x: torch.Tensor) -> None:
        import cupy

        self.module = _module(node, x.dtype)
        self.refractory = bool(node.spiking and node.refractory)
        self.size = int(np.prod(shape, dtype=np.int64))
        dummy = torch.zeros(self.size, dtype=x.dtype, device=x.device)
        self.keep = [torch.broadcast_to(p[n].detach().to(x.dtype), shape).reshape(-1)
                     .contiguous() if n in p else dummy for n in PARAMS]
        self.params = tuple(np.uint64(t.data_ptr()) for t in self.keep)
        self.cupy = cupy

    def _grid(self, total: int) -> tuple[tuple[int], tuple[int]]:
        return ((total + 255) // 256,), (256,)

    def forward(self, x: torch.Tensor, v: torch.Tensor, i: torch.Tensor, s: torch.Tensor,
                r: torch.Tensor, save: bool, out: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, ...]:
        steps, total = x.shape[0], x[0].numel()
        out = torch.empty_like(x) if out is None else out
        save_v = torch.empty_like(x) if save else None
        flagged = save and self.refractory
        save_f = (torch.empty(x.shape, dtype=torch.uint8, device=x.device) if flagged
                  else None)
        kernel = self.module.get_function("forward")
        stream = self.cupy.cuda.ExternalStream(torch.cuda.current_stream(x.device).cuda_stream)
        with stream:
            kernel(*self._grid(total), (*self.params, np.int64(steps), np.int64(total),
                                        np.int64(self.size), _ptr(x), _ptr(out),
                                        _ptr(v), _ptr(i), _ptr(s), _ptr(r),
                                        _ptr(save_v), _ptr(save_f)))
        return out, save_v, save_f

    def backward(self, gout: torch.Tensor, save_v: torch.Tensor, save_f: torch.Tensor,
                 s0: torch.Tensor, gv: torch.Tensor, gi: torch.Tensor,
                 gs: torch.Tensor) -> torch.Tensor:
        steps, total = gout.shape[0], gout[0].numel()
        gx = torch.empty_like(gout)
        kernel = self.module.get_function("backward")
        stream = self.cupy.cuda.ExternalStream(
            torch.cuda.current_stream(gout.device).cuda_stream)
        with stream:
            kernel(*self._grid(total), (*self.params, np.int64(steps), np.int64(total),
                                        np.int64(self.size), _ptr(gout), _ptr(save_v),
                                        _ptr(save_f), _ptr(s0), _ptr(gv),
                                        _ptr(gi), _ptr(gs), _ptr(gx)))
        return gx


def _ptr(t: torch.Tensor | None) -> np.uint64:
    # device pointers go to the kernels as 64-bit integers; a null one for an unused buffer
    return np.uint64(0 if t is None else t.data_ptr())


def run(node: Neuron, p: dict, x: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, dict]:
    """Run ``node`` over ``x`` ``[T, N, *shape]`` on the GPU; as :func:`hub.kernels.cpu.run`."""
    if isinstance(node, Family):
        from . import cupy_families

        return cupy_families.run(node, p, x, state)
    from .cpu import run as run_with

    return run_with(node, p, x, state, kernel=_Launch(node, p, tuple(x.shape[2:]), x))
