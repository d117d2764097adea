"""The CUDA path of the neuron families: CuPy raw kernels, one thread per neuron.

Each thread walks its neuron through all time steps with the float operations of the family's
reference step in the same order, and back through them for the gradients, as
``families.cpp`` does on the CPU (see :mod:`hub.kernels.families` for the order of the gradient
sums). ``--fmad=false`` keeps every product and sum rounded on its own; the exponential is
CUDA's ``exp`` (``expf`` in float32), the function torch's CUDA kernels call.

UNVERIFIED on a GPU: this module was written without one. ``tests/test_family_kernels.py``
compiles the same source as plain C++ on the CPU (CUDA's keywords stubbed, one "thread" per
neuron in a loop, the exponential torch's own) and checks it bit for bit against the reference,
forward and backward; on a GPU with CuPy it runs the kernels against the reference.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..families import Family
from ..surrogate import SLOPE
from . import families as cpu_families
from .cupy import available  # noqa: F401  (the same requirements as the neuron kernels)

#: How :attr:`hub.Simulator.paths` names a layer this module runs.
PATH = "the fused CuPy kernel"
DTYPES = {torch.float32: "float", torch.float64: "double"}

SOURCE = r"""
typedef R_TYPE R;
#ifndef HUB_EXP
#define HUB_EXP(a) exp(a)
#endif
#define FIRE(z) ((INCLUSIVE ? (z) >= (R)0 : (z) > (R)0) ? (R)1 : (R)0)

__device__ __forceinline__ R surrogate(R g, R z) {
    R den = (R)1 + (R)SLOPE * fabs(z);
    den = den * den;
    return g / den;
}

#if FAMILY == 0  // ALIF: p alpha beta gain current_gain v_leak threshold threshold_decay
                 // threshold_step refractory_decay refractory_scale v_reset; s i v theta r
#define NS 4
__device__ R step(const R* const* p, long long k, R x, R* s) {
    const R al = p[0][k], be = p[1][k], ga = p[2][k], cg = p[3][k], vl = p[4][k], th = p[5][k],
            td = p[6][k], ts = p[7][k], rd = p[8][k], rs = p[9][k], vr = p[10][k];
    const R inew = al * s[0] + cg * x;
    const R u = ORDER_NEW ? inew : s[0];
    R vv = (vl + be * (s[1] - vl)) + ga * u;
    R t2 = th + td * (s[2] - th);
    R r1 = rd * s[3];
    const R sp = FIRE((vv - r1) - t2);
    if (RESET == 0) vv = sp > (R)0 ? vr : vv;
    else if (RESET == 1) vv = vv - t2 * sp;
    r1 = r1 + (rs * t2) * sp;
    t2 = t2 + ts * sp;
    s[0] = inew; s[1] = vv; s[2] = t2; s[3] = r1;
    return sp;
}
__device__ R back(const R* const* p, long long k, R x, const R* s, R go, R* g, bool first,
                  R* carry) {
    const R al = p[0][k], be = p[1][k], ga = p[2][k], cg = p[3][k], vl = p[4][k], th = p[5][k],
            td = p[6][k], ts = p[7][k], rd = p[8][k], rs = p[9][k];
    const R inew = al * s[0] + cg * x;
    const R u = ORDER_NEW ? inew : s[0];
    const R vv = (vl + be * (s[1] - vl)) + ga * u;
    const R t2 = th + td * (s[2] - th);
    const R r1 = rd * s[3];
    const R z = (vv - r1) - t2;
    const R sp = FIRE(z);
    const R o2 = rs * t2;
    R g_s = go + g[2] * ts;
    g_s = g_s + g[3] * o2;
    R g_t2 = g[2] + (g[3] * sp) * rs;
    if (RESET == 1) { g_s = g_s + (-g[1]) * t2; g_t2 = g_t2 + (-g[1]) * sp; }
    const R g_z = surrogate(g_s, z);
    g_t2 = g_t2 + (-g_z);
    const R g_vv = (RESET == 0 ? (sp > (R)0 ? (R)0 : g[1]) : g[1]) + g_z;
    g[3] = (g[3] + (-g_z)) * rd;
    g[2] = g_t2 * td;
    const R g_u = g_vv * ga;
    g[1] = g_vv * be;
    R gx;
    if (ORDER_NEW) { const R g_new = g[0] + g_u; gx = g_new * cg; g[0] = g_new * al; }
    else { const R g_new = g[0]; gx = g_new * cg; g[0] = g_u + g_new * al; }
    return gx;
}

#elif FAMILY == 1  // Izhikevich: p rate sq mn bias recovery_rate coupling threshold v_reset
                   // u_jump; s v u
#define NS 2
__device__ R step(const R* const* p, long long k, R x, R* s) {
    const R vo = s[0], uo = s[1];
    const R drive = ((((p[1][k] * (vo * vo)) + p[2][k] * vo) + p[3][k]) - uo) + x;
    const R vn = vo + p[0][k] * drive;
    const R un = uo + p[4][k] * (p[5][k] * vo - uo);
    const R sp = FIRE(vn - p[6][k]);
    s[0] = sp > (R)0 ? p[7][k] : vn;
    s[1] = sp > (R)0 ? un + p[8][k] : un;
    return sp;
}
__device__ R back(const R* const* p, long long k, R x, const R* s, R go, R* g, bool first,
                  R* carry) {
    const R vo = s[0], uo = s[1];
    const R drive = ((((p[1][k] * (vo * vo)) + p[2][k] * vo) + p[3][k]) - uo) + x;
    const R vn = vo + p[0][k] * drive;
    const R z = vn - p[6][k];
    const bool on = FIRE(z) > (R)0;
    const R g_un = (on ? (R)0 : g[1]) + (on ? g[1] : (R)0);
    const R g_vn = (on ? (R)0 : g[0]) + surrogate(go, z);
    const R g_e2 = g_un * p[4][k];
    const R g_drive = g_vn * p[0][k];
    g[1] = (g_un + (-g_e2)) + (-g_drive);
    g[0] = (((g_e2 * p[5][k]) + g_vn) + g_drive * p[2][k]) + (g_drive * p[1][k]) * (vo * (R)2);
    return g_drive;
}

#elif FAMILY == 2  // QIF: p tau a0 v_rest v_c tau_w coupling w_jump threshold v_reset; s v w
#define NS 2
__device__ R step(const R* const* p, long long k, R x, R* s) {
    const R vo = s[0], wo = s[1], th = p[7][k];
    const R h = vo + ((x + (p[1][k] * (vo - p[2][k])) * (vo - p[3][k])) - wo) / p[0][k];
    const R sp = FIRE(h - th);
    s[1] = (wo + (p[5][k] * (h - p[2][k]) - wo) / p[4][k]) + p[6][k] * sp;
    s[0] = RESET == 0 ? (sp > (R)0 ? p[8][k] : h) : h - th * sp;
    return sp;
}
__device__ R back(const R* const* p, long long k, R x, const R* s, R go, R* g, bool first,
                  R* carry) {
    const R vo = s[0], wo = s[1], th = p[7][k];
    const R b2 = p[1][k] * (vo - p[2][k]), b3 = vo - p[3][k];
    const R h = vo + ((x + b2 * b3) - wo) / p[0][k];
    const R z = h - th;
    const R sp = FIRE(z);
    R g_s = go, g_h = g[0];
    if (RESET == 1) g_s = g_s + (-g[0]) * th;
    else g_h = sp > (R)0 ? (R)0 : g_h;
    g_s = g_s + g[1] * p[6][k];
    const R g_c3 = g[1] / p[4][k];
    g_h = (g_h + g_c3 * p[5][k]) + surrogate(g_s, z);
    const R g_b6 = g_h / p[0][k];
    g[1] = (g[1] + (-g_c3)) + (-g_b6);
    g[0] = (g_h + g_b6 * b2) + (g_b6 * b3) * p[1][k];
    return g_b6;
}

#elif FAMILY == 3  // AlphaLIF: p alpha beta scale threshold; s e h v
#define NS 3
__device__ R step(const R* const* p, long long k, R x, R* s) {
    const R al = p[0][k], be = p[1][k], sc = p[2][k], th = p[3][k], ho = s[1];
    const R fired = FIRE(s[2] - th);
    R en = al * s[0] + x, hn = be * ho - x, vn = sc * (en + hn);
    if (RESET == 0) { en = en - en * fired; hn = hn - hn * fired; vn = vn - vn * fired; }
    else if (RESET == 1) { en = en - th * fired; hn = hn - (be * ho - x) * fired;
                           vn = vn - (-ho) * fired; }
    s[0] = en; s[1] = hn; s[2] = vn;
    return FIRE(vn - th);
}
__device__ R back(const R* const* p, long long k, R x, const R* s, R go, R* g, bool first,
                  R* carry) {
    const R al = p[0][k], be = p[1][k], sc = p[2][k], th = p[3][k], ho = s[1];
    const R fired = FIRE(s[2] - th);
    const R en = al * s[0] + x, hn = be * ho - x;
    R vn = sc * (en + hn);
    if (RESET == 0) vn = vn - vn * fired;
    else if (RESET == 1) vn = vn - (-ho) * fired;
    const R g_vf = g[2] + surrogate(go, vn - th);
    R g_vn = g_vf, g_hn = g[1], g_en = g[0], x1 = (R)0, h1 = (R)0, h2 = (R)0;
    if (RESET == 0) {
        g_vn = g_vf + (-g_vf) * fired;
        g_hn = g[1] + (-g[1]) * fired;
        g_en = g[0] + (-g[0]) * fired;
    } else if (RESET == 1) {
        h1 = -((-g_vf) * fired);
        const R g_t3 = (-g[1]) * fired;
        x1 = -g_t3;
        h2 = g_t3 * be;
    }
    const R g_sm = g_vn * sc;
    g_hn = g_hn + g_sm;
    g_en = g_en + g_sm;
    R gx;
    if (RESET == 1) { gx = (x1 + (-g_hn)) + g_en; g[1] = (h1 + h2) + g_hn * be; }
    else { gx = (-g_hn) + g_en; g[1] = g_hn * be; }
    g[0] = g_en * al;
    g[2] = (R)0;
    return gx;
}

#elif FAMILY == 4  // SynapseFilter: p rate; s y (the output is the state: carry, see the CPU's)
#define NS 1
__device__ R step(const R* const* p, long long k, R x, R* s) {
    s[0] = (s[0] - (((R)1 - x) * s[0]) * p[0][k]) + x;
    return s[0];
}
__device__ R back(const R* const* p, long long k, R x, const R* s, R go, R* g, bool first,
                  R* carry) {
    const R g_e = (go + g[0]) + *carry;
    const R g_b = (-g_e) * p[0][k];
    const R gx = g_e + (-(g_b * s[0]));
    g[0] = g_e;
    *carry = g_b * ((R)1 - x);
    if (first) g[0] = g[0] + *carry;
    return gx;
}

#elif FAMILY == 5  // EIF: p tau delta_t theta_rh v_rest threshold v_reset; s v
#define NS 1
__device__ R step(const R* const* p, long long k, R x, R* s) {
    const R vo = s[0], dt = p[1][k], th = p[4][k];
    const R ex = HUB_EXP((vo - p[2][k]) / dt);
    const R h = vo + (((x + p[3][k]) - vo) + dt * ex) / p[0][k];
    const R sp = FIRE(h - th);
    s[0] = RESET == 0 ? (sp > (R)0 ? p[5][k] : h) : h - th * sp;
    return sp;
}
__device__ R back(const R* const* p, long long k, R x, const R* s, R go, R* g, bool first,
                  R* carry) {
    const R vo = s[0], dt = p[1][k], th = p[4][k];
    const R ex = HUB_EXP((vo - p[2][k]) / dt);
    const R h = vo + (((x + p[3][k]) - vo) + dt * ex) / p[0][k];
    const R z = h - th;
    const R sp = FIRE(z);
    R g_s = go, g_h = g[0];
    if (RESET == 1) g_s = g_s + (-g[0]) * th;
    else g_h = sp > (R)0 ? (R)0 : g_h;
    g_h = g_h + surrogate(g_s, z);
    const R g_drive = g_h / p[0][k];
    const R g_a3 = ((g_drive * dt) * ex) / dt;
    g[0] = (g_h + g_a3) + (-g_drive);
    return g_drive;
}

#elif FAMILY == 6  // AdExLIF: p rate syn_rate ada_rate delta_t v_leak threshold v_reset
                   // coupling jump; s i v a
#define NS 3
__device__ R step(const R* const* p, long long k, R x, R* s) {
    const R vo = s[1], ao = s[2], dt = p[3][k], vl = p[4][k], th = p[5][k];
    const R ex = HUB_EXP((vo - th) / dt);
    const R jj = s[0] + x;
    const R vn = vo + p[0][k] * ((((vl - vo) + dt * ex) + jj) - ao);
    const R inew = jj + (-p[1][k]) * jj;
    const R an = ao + p[2][k] * (p[7][k] * (vo - vl) - ao);
    const R sp = FIRE(vn - th);
    s[0] = inew;
    s[1] = sp > (R)0 ? p[6][k] : vn;
    s[2] = an + p[8][k] * sp;
    return sp;
}
__device__ R back(const R* const* p, long long k, R x, const R* s, R go, R* g, bool first,
                  R* carry) {
    const R vo = s[1], ao = s[2], dt = p[3][k], vl = p[4][k], th = p[5][k];
    const R ex = HUB_EXP((vo - th) / dt);
    const R jj = s[0] + x;
    const R vn = vo + p[0][k] * ((((vl - vo) + dt * ex) + jj) - ao);
    const R z = vn - th;
    const R sp = FIRE(z);
    const R g_s = go + g[2] * p[8][k];
    const R g_vn = (sp > (R)0 ? (R)0 : g[1]) + surrogate(g_s, z);
    const R g_g3 = g[2] * p[2][k];
    const R g_f7 = g_vn * p[0][k];
    const R g_j = (g[0] + g[0] * (-p[1][k])) + g_f7;
    const R g_f1 = ((g_f7 * dt) * ex) / dt;
    g[2] = (g[2] + (-g_g3)) + (-g_f7);
    g[1] = (((g_g3 * p[7][k]) + g_vn) + (-g_f7)) + g_f1;
    g[0] = g_j;
    return g_j;
}
#endif

// p, state, saved, g: device arrays of pointers (parameters K values each; state and its
// gradients M values; saved T * M values, or a null array pointer for none).
extern "C" __global__ void forward(const R* const* p, long long T, long long M, long long K,
        const R* x, R* out, R* const* state, R* const* saved) {
    long long m = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (m >= M) return;
    long long k = m % K;
    R s[NS];
    for (int q = 0; q < NS; ++q) s[q] = state[q][m];
    for (long long t = 0; t < T; ++t) {
        if (saved) for (int q = 0; q < NS; ++q) saved[q][t * M + m] = s[q];
        out[t * M + m] = step(p, k, x[t * M + m], s);
    }
    for (int q = 0; q < NS; ++q) state[q][m] = s[q];
}

extern "C" __global__ void backward(const R* const* p, long long T, long long M, long long K,
        const R* x, const R* gout, R* const* saved, R* const* g, R* gx) {
    long long m = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (m >= M) return;
    long long k = m % K;
    R gs[NS], sv[NS], carry = (R)0;
    for (int q = 0; q < NS; ++q) gs[q] = g[q][m];
    for (long long t = T - 1; t >= 0; --t) {
        for (int q = 0; q < NS; ++q) sv[q] = saved[q][t * M + m];
        gx[t * M + m] = back(p, k, x[t * M + m], sv, gout[t * M + m], gs, t == 0, &carry);
    }
    for (int q = 0; q < NS; ++q) g[q][m] = gs[q];
}
"""

_RESETS = {"zero": 0, "subtract": 1, "none": 2}
_modules: dict[tuple, Any] = {}


def defines(node: Family, dtype: torch.dtype) -> dict[str, str]:
    """The ``#define`` s that specialise :data:`SOURCE` for ``node`` and ``dtype``."""
    spec = cpu_families.SPECS[type(node).kernel]
    return {"R_TYPE": DTYPES[dtype], "FAMILY": str(spec.index),
            "INCLUSIVE": str(int(getattr(node, "comparison", ">") == ">=")),
            "RESET": str(_RESETS[getattr(node, "reset", "zero")]),
            "ORDER_NEW": str(int(getattr(node, "current_order", "new") == "new")),
            "SLOPE": repr(SLOPE)}


def source(node: Family, dtype: torch.dtype) -> str:
    """:data:`SOURCE` specialised for ``node`` and ``dtype``."""
    return "".join(f"#define {k} {v}\n" for k, v in defines(node, dtype).items()) + SOURCE


def unsupported(node: Family, p: dict, x: torch.Tensor) -> str | None:
    """Why ``node`` cannot run on its CuPy kernel on ``x``; None if it can."""
    name = type(node).kernel
    if name is None or name not in cpu_families.SPECS:
        return f"{type(node).__name__} has no fused kernel"
    overridden = cpu_families.overridden_step(node)
    if overridden:
        return (f"{type(node).__name__} overrides {overridden}, and the CuPy kernels compute "
                "only the built-in equation")
    refusal = node.kernel_refusal()
    if refusal:
        return refusal
    if getattr(node, "arithmetic", "float") == "fixed":
        return "arithmetic='fixed' has no CuPy kernel (the CPU's fused kernel has)"
    if x.device.type != "cuda":
        return f"the input is on {x.device}, not cuda"
    if x.dtype not in DTYPES:
        return f"dtype {x.dtype} (the CuPy family kernels do float32 and float64)"
    if x.numel() == 0:
        return "the input is empty"
    if torch.is_grad_enabled() and any(t.requires_grad for t in p.values()):
        return "the neuron's parameters require gradients (the CuPy kernels give input gradients)"
    return None


def _pointers(tensors: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    return torch.tensor([t.data_ptr() for t in tensors], dtype=torch.int64, device=device)


class _Launch:
    """One family node's CuPy kernels, parameters and shape; the interface of the CPU one."""

    def __init__(self, node: Family, p: dict, shape: tuple[int, ...], x: torch.Tensor) -> None:
        import cupy

        key = tuple(sorted(defines(node, x.dtype).items()))
        if key not in _modules:
            _modules[key] = cupy.RawModule(code=source(node, x.dtype),
                                           options=("--fmad=false", "-std=c++14"))
        self.module, self.cupy = _modules[key], cupy
        self.spec = cpu_families.SPECS[type(node).kernel]
        self.keep = [torch.broadcast_to(p[n].detach().to(x.dtype), shape).reshape(-1).contiguous()
                     for n in self.spec.params]
        self.params = _pointers(self.keep, x.device)
        self.size = int(np.prod(shape, dtype=np.int64))

    def _launch(self, name: str, like: torch.Tensor, *args: Any) -> None:
        total = like[0].numel()
        stream = self.cupy.cuda.ExternalStream(torch.cuda.current_stream(like.device).cuda_stream)
        with stream:
            self.module.get_function(name)(((total + 255) // 256,), (256,), args)

    def forward(self, x: torch.Tensor, state: list[torch.Tensor], save: bool
                ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        out = torch.empty_like(x)
        saved = [torch.empty_like(x) for _ in state] if save else None
        keep = [_pointers(state, x.device), _pointers(saved, x.device) if saved else None]
        self._launch("forward", x, _ptr(self.params), np.int64(x.shape[0]),
                     np.int64(x[0].numel()), np.int64(self.size), _ptr(x), _ptr(out),
                     _ptr(keep[0]), _ptr(keep[1]))
        return out, saved

    def backward(self, x: torch.Tensor, gout: torch.Tensor, saved: list[torch.Tensor],
                 grads: list[torch.Tensor]) -> torch.Tensor:
        gx = torch.empty_like(gout)
        keep = [_pointers(saved, x.device), _pointers(grads, x.device)]
        self._launch("backward", x, _ptr(self.params), np.int64(x.shape[0]),
                     np.int64(x[0].numel()), np.int64(self.size), _ptr(x), _ptr(gout),
                     _ptr(keep[0]), _ptr(keep[1]), _ptr(gx))
        return gx


def _ptr(t: torch.Tensor | None) -> np.uint64:
    return np.uint64(0 if t is None else t.data_ptr())


def run(node: Family, p: dict, x: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, dict]:
    """Run ``node`` over ``x`` ``[T, N, *shape]`` on the GPU; as :func:`families.run`."""
    return cpu_families.run(node, p, x, state,
                            kernel=_Launch(node, p, tuple(x.shape[2:]), x))
