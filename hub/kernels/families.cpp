// Fused multi-step CPU kernels for the neuron families of hub/families.py.
//
// As neurons.cpp does for Neuron.step: one call runs a layer over all T steps, a block of neurons
// at a time, and each step performs the float operations of the family's reference step in the
// same order with one rounding each, so the results are bit-identical to it. Compile with
// -ffp-contract=off and without -ffast-math.
//
// The exponential of EIF and AdExLIF is torch's own: the caller passes the function torch.exp
// dispatches to on this machine (found and checked in hub/kernels/families.py), and the kernels
// call it on a block of arguments at a time, as torch does on a whole tensor.
//
// The backward pass reproduces, number for number, what torch's autograd computes through the
// reference step with the surrogate of hub/surrogate.py: each local derivative as autograd's
// formula writes it, and where a tensor feeds several operations, its gradient summed in the
// order in which autograd's engine delivers the parts (the consumer created last first). The
// forward pass saves each step's incoming state; the backward pass recomputes the step from it.

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace {

const int64_t BLOCK = 1024;

// Runs fn(lo, hi, k0) over blocks of neurons that share one row of K (as neurons.cpp does).
template <typename F>
void blocks(int threads, int64_t M, int64_t K, F fn) {
    const int64_t per_row = (K + BLOCK - 1) / BLOCK, total = (M / K) * per_row;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 4)
    for (int64_t b = 0; b < total; ++b) {
        const int64_t row = b / per_row, k0 = (b % per_row) * BLOCK;
        fn(row * K + k0, row * K + std::min(K, k0 + BLOCK), k0);
    }
}

// torch.exp's function. kind 1: MKL's vms/vmdExp(n, in, out, mode); 2: SLEEF on 512-bit vectors
// (16 floats, 8 doubles); 3: SLEEF on 256-bit vectors (8 floats, 4 doubles).
struct Exp {
    int32_t kind;
    int64_t mode;
    const void* fn;
};

template <typename V, typename R, int W, typename L, typename S>
inline void lanes(const void* fn, const R* in, R* out, int64_t n, L load, S store) {
    auto f = (V(*)(V))fn;
    int64_t i = 0;
    for (; i + W <= n; i += W) store(out + i, f(load(in + i)));
    if (i < n) {  // the tail in a zero-padded vector, as torch's partial loads do
        alignas(64) R b[W] = {};
        std::memcpy(b, in + i, (n - i) * sizeof(R));
        store(b, f(load(b)));
        std::memcpy(out + i, b, (n - i) * sizeof(R));
    }
}

__attribute__((target("avx512f"))) void exp512(const void* fn, const float* in, float* out,
                                               int64_t n) {
    lanes<__m512, float, 16>(fn, in, out, n, [](const float* p) { return _mm512_loadu_ps(p); },
                             [](float* p, __m512 v) { _mm512_storeu_ps(p, v); });
}
__attribute__((target("avx512f"))) void exp512(const void* fn, const double* in, double* out,
                                               int64_t n) {
    lanes<__m512d, double, 8>(fn, in, out, n, [](const double* p) { return _mm512_loadu_pd(p); },
                              [](double* p, __m512d v) { _mm512_storeu_pd(p, v); });
}
__attribute__((target("avx2"))) void exp256(const void* fn, const float* in, float* out,
                                            int64_t n) {
    lanes<__m256, float, 8>(fn, in, out, n, [](const float* p) { return _mm256_loadu_ps(p); },
                            [](float* p, __m256 v) { _mm256_storeu_ps(p, v); });
}
__attribute__((target("avx2"))) void exp256(const void* fn, const double* in, double* out,
                                            int64_t n) {
    lanes<__m256d, double, 4>(fn, in, out, n, [](const double* p) { return _mm256_loadu_pd(p); },
                              [](double* p, __m256d v) { _mm256_storeu_pd(p, v); });
}

template <typename R>
void vexp(const Exp& e, const R* in, R* out, int64_t n) {
    if (e.kind == 1) ((void (*)(int, const R*, R*, int64_t))e.fn)(int(n), in, out, e.mode);
    else if (e.kind == 2) exp512(e.fn, in, out, n);
    else exp256(e.fn, in, out, n);
}

// The conventions, as small integers (hub/kernels/families.py): c[0] comparison ">=", c[1] reset
// (0 zero, 1 subtract, 2 none), c[2] current_order "new".
struct Conf {
    int32_t inclusive, reset, order_new;
};

// The conventions as compile-time constants, so that every loop below vectorises.
template <bool INCLUSIVE, int RESET, bool ORDER_NEW>
struct Fixed {
    static constexpr bool inclusive = INCLUSIVE;
    static constexpr int reset = RESET;
    static constexpr bool order_new = ORDER_NEW;
};

template <typename C, typename R>
inline R fire(C, R z) { return (C::inclusive ? z >= R(0) : z > R(0)) ? R(1) : R(0); }

// The surrogate's derivative applied to g: g / (1 + slope |z|)^2, as hub/surrogate.py computes.
template <typename R>
inline R surrogate(R g, R z, R slope) {
    R den = R(1) + slope * std::fabs(z);
    den = den * den;
    return g / den;
}

// What a step function gets: n neurons; p the parameters, s the state (in place), x and out this
// step's input and output, all offset to the block; w scratch of 4 * BLOCK values.
template <typename R>
struct Step {
    int64_t n;
    const R* const* p;
    R* const* s;
    const R* __restrict x;
    R* __restrict out;
    R* __restrict w;
    const Exp& e;
};

// What a backward step function gets: the state before the step (sv), this step's input, output
// gradient and input gradient, and the state gradients g (after the step in, before it out).
template <typename R>
struct Back {
    int64_t n;
    const R* const* p;
    const R* const* sv;
    const R* __restrict x;
    const R* __restrict go;
    R* __restrict gx;
    R* const* g;
    R* __restrict w;
    const Exp& e;
    R slope;
    bool first;  // t == 0
};

// omp simd: GCC 12 gives up on some of these loops by itself ("no vectype"); every neuron's
// operations stay as written (no reduction, so nothing is reassociated; no contraction, by flag).
#define EACH _Pragma("omp simd") for (int64_t j = 0; j < n; ++j)

// -- ALIF: p alpha beta gain current_gain v_leak threshold threshold_decay threshold_step
//          refractory_decay refractory_scale v_reset; s i v theta r -------------------------------

template <typename R, typename C>
void alif_forward(const Step<R>& a) {
    constexpr C c{};
    const int64_t n = a.n;
    const R *__restrict al = a.p[0], *__restrict be = a.p[1], *__restrict ga = a.p[2],
            *__restrict cg = a.p[3], *__restrict vl = a.p[4], *__restrict th = a.p[5],
            *__restrict td = a.p[6], *__restrict ts = a.p[7], *__restrict rd = a.p[8],
            *__restrict rs = a.p[9], *__restrict vr = a.p[10];
    R *__restrict i = a.s[0], *__restrict v = a.s[1], *__restrict theta = a.s[2],
      *__restrict r = a.s[3];
    EACH {
        const R inew = al[j] * i[j] + cg[j] * a.x[j];
        const R u = c.order_new ? inew : i[j];
        R vv = (vl[j] + be[j] * (v[j] - vl[j])) + ga[j] * u;
        R t2 = th[j] + td[j] * (theta[j] - th[j]);
        R r1 = rd[j] * r[j];
        const R sp = fire(c, (vv - r1) - t2);
        if (c.reset == 0) vv = sp > R(0) ? vr[j] : vv;
        else if (c.reset == 1) vv = vv - t2 * sp;
        r1 = r1 + (rs[j] * t2) * sp;
        t2 = t2 + ts[j] * sp;
        a.out[j] = sp;
        i[j] = inew; v[j] = vv; theta[j] = t2; r[j] = r1;
    }
}

template <typename R, typename C>
void alif_backward(const Back<R>& b) {
    constexpr C c{};
    const int64_t n = b.n;
    const R *__restrict al = b.p[0], *__restrict be = b.p[1], *__restrict ga = b.p[2],
            *__restrict cg = b.p[3], *__restrict vl = b.p[4], *__restrict th = b.p[5],
            *__restrict td = b.p[6], *__restrict ts = b.p[7], *__restrict rd = b.p[8],
            *__restrict rs = b.p[9];
    const R *__restrict i = b.sv[0], *__restrict v = b.sv[1], *__restrict theta = b.sv[2],
            *__restrict r = b.sv[3];
    R *__restrict gi = b.g[0], *__restrict gv = b.g[1], *__restrict gth = b.g[2],
      *__restrict gr = b.g[3];
    EACH {
        const R inew = al[j] * i[j] + cg[j] * b.x[j];
        const R u = c.order_new ? inew : i[j];
        const R vv = (vl[j] + be[j] * (v[j] - vl[j])) + ga[j] * u;
        const R t2 = th[j] + td[j] * (theta[j] - th[j]);
        const R r1 = rd[j] * r[j];
        const R z = (vv - r1) - t2;
        const R sp = fire(c, z);
        const R o2 = rs[j] * t2;
        // the spike: the output, then theta's step, r's step, and a subtracting reset
        R g_s = b.go[j] + gth[j] * ts[j];
        g_s = g_s + gr[j] * o2;
        R g_t2 = gth[j] + (gr[j] * sp) * rs[j];
        if (c.reset == 1) {
            g_s = g_s + (-gv[j]) * t2;
            g_t2 = g_t2 + (-gv[j]) * sp;
        }
        const R g_z = surrogate(g_s, z, b.slope);
        g_t2 = g_t2 + (-g_z);
        const R g_vv = (c.reset == 0 ? (sp > R(0) ? R(0) : gv[j]) : gv[j]) + g_z;
        gr[j] = (gr[j] + (-g_z)) * rd[j];
        gth[j] = g_t2 * td[j];
        const R g_u = g_vv * ga[j];
        gv[j] = g_vv * be[j];
        if (c.order_new) {
            const R g_new = gi[j] + g_u;
            b.gx[j] = g_new * cg[j];
            gi[j] = g_new * al[j];
        } else {
            const R g_new = gi[j];
            b.gx[j] = g_new * cg[j];
            gi[j] = g_u + g_new * al[j];
        }
    }
}

// -- Izhikevich: p rate sq mn bias recovery_rate coupling threshold v_reset u_jump; s v u --------

template <typename R, typename C>
void izhikevich_forward(const Step<R>& a) {
    constexpr C c{};
    const int64_t n = a.n;
    const R *__restrict rate = a.p[0], *__restrict sq = a.p[1], *__restrict mn = a.p[2],
            *__restrict bias = a.p[3], *__restrict rr = a.p[4], *__restrict cp = a.p[5],
            *__restrict th = a.p[6], *__restrict vr = a.p[7], *__restrict uj = a.p[8];
    R *__restrict v = a.s[0], *__restrict u = a.s[1];
    EACH {
        const R vo = v[j], uo = u[j];
        const R drive = ((((sq[j] * (vo * vo)) + mn[j] * vo) + bias[j]) - uo) + a.x[j];
        const R vn = vo + rate[j] * drive;
        const R un = uo + rr[j] * (cp[j] * vo - uo);
        const R sp = fire(c, vn - th[j]);
        a.out[j] = sp;
        v[j] = sp > R(0) ? vr[j] : vn;
        u[j] = sp > R(0) ? un + uj[j] : un;
    }
}

template <typename R, typename C>
void izhikevich_backward(const Back<R>& b) {
    const int64_t n = b.n;
    const R *__restrict rate = b.p[0], *__restrict sq = b.p[1], *__restrict mn = b.p[2],
            *__restrict bias = b.p[3], *__restrict rr = b.p[4], *__restrict cp = b.p[5],
            *__restrict th = b.p[6];
    const R *__restrict v = b.sv[0], *__restrict u = b.sv[1];
    R *__restrict gv = b.g[0], *__restrict gu = b.g[1];
    EACH {
        const R vo = v[j], uo = u[j];
        const R drive = ((((sq[j] * (vo * vo)) + mn[j] * vo) + bias[j]) - uo) + b.x[j];
        const R vn = vo + rate[j] * drive;
        const R z = vn - th[j];
        const R sp = fire(C{}, z);
        const bool on = sp > R(0);
        const R g_un = (on ? R(0) : gu[j]) + (on ? gu[j] : R(0));
        const R g_vn = (on ? R(0) : gv[j]) + surrogate(b.go[j], z, b.slope);
        const R g_e2 = g_un * rr[j];
        const R g_drive = g_vn * rate[j];
        gu[j] = (g_un + (-g_e2)) + (-g_drive);
        gv[j] = (((g_e2 * cp[j]) + g_vn) + g_drive * mn[j]) + (g_drive * sq[j]) * (vo * R(2));
        b.gx[j] = g_drive;
    }
}

// -- QIF: p tau a0 v_rest v_c tau_w coupling w_jump threshold v_reset; s v w -------------------

template <typename R, typename C>
void qif_forward(const Step<R>& a) {
    constexpr C c{};
    const int64_t n = a.n;
    const R *__restrict tau = a.p[0], *__restrict a0 = a.p[1], *__restrict vrest = a.p[2],
            *__restrict vc = a.p[3], *__restrict tw = a.p[4], *__restrict cp = a.p[5],
            *__restrict wj = a.p[6], *__restrict th = a.p[7], *__restrict vr = a.p[8];
    R *__restrict v = a.s[0], *__restrict w = a.s[1];
    EACH {
        const R vo = v[j], wo = w[j];
        const R h = vo + ((a.x[j] + (a0[j] * (vo - vrest[j])) * (vo - vc[j])) - wo) / tau[j];
        const R sp = fire(c, h - th[j]);
        a.out[j] = sp;
        w[j] = (wo + (cp[j] * (h - vrest[j]) - wo) / tw[j]) + wj[j] * sp;
        v[j] = c.reset == 0 ? (sp > R(0) ? vr[j] : h) : h - th[j] * sp;
    }
}

template <typename R, typename C>
void qif_backward(const Back<R>& b) {
    constexpr C c{};
    const int64_t n = b.n;
    const R *__restrict tau = b.p[0], *__restrict a0 = b.p[1], *__restrict vrest = b.p[2],
            *__restrict vc = b.p[3], *__restrict tw = b.p[4], *__restrict cp = b.p[5],
            *__restrict wj = b.p[6], *__restrict th = b.p[7];
    const R *__restrict v = b.sv[0], *__restrict w = b.sv[1];
    R *__restrict gv = b.g[0], *__restrict gw = b.g[1];
    EACH {
        const R vo = v[j], wo = w[j];
        const R b2 = a0[j] * (vo - vrest[j]), b3 = vo - vc[j];
        const R h = vo + ((b.x[j] + b2 * b3) - wo) / tau[j];
        const R z = h - th[j];
        const R sp = fire(c, z);
        R g_s = b.go[j];
        R g_h = gv[j];
        if (c.reset == 1) g_s = g_s + (-gv[j]) * th[j];
        else g_h = sp > R(0) ? R(0) : g_h;
        g_s = g_s + gw[j] * wj[j];
        const R g_c3 = gw[j] / tw[j];
        g_h = (g_h + g_c3 * cp[j]) + surrogate(g_s, z, b.slope);
        const R g_b6 = g_h / tau[j];
        gw[j] = (gw[j] + (-g_c3)) + (-g_b6);
        gv[j] = (g_h + g_b6 * b2) + (g_b6 * b3) * a0[j];
        b.gx[j] = g_b6;
    }
}

// -- AlphaLIF: p alpha beta scale threshold; s e h v ------------------------------------------

template <typename R, typename C>
void alpha_forward(const Step<R>& a) {
    constexpr C c{};
    const int64_t n = a.n;
    const R *__restrict al = a.p[0], *__restrict be = a.p[1], *__restrict sc = a.p[2],
            *__restrict th = a.p[3];
    R *__restrict e = a.s[0], *__restrict h = a.s[1], *__restrict v = a.s[2];
    EACH {
        const R xj = a.x[j], ho = h[j];
        const R fired = fire(c, v[j] - th[j]);
        R en = al[j] * e[j] + xj;
        R hn = be[j] * ho - xj;
        R vn = sc[j] * (en + hn);
        if (c.reset == 0) {
            en = en - en * fired;
            hn = hn - hn * fired;
            vn = vn - vn * fired;
        } else if (c.reset == 1) {
            en = en - th[j] * fired;
            hn = hn - (be[j] * ho - xj) * fired;
            vn = vn - (-ho) * fired;
        }
        a.out[j] = fire(c, vn - th[j]);
        e[j] = en; h[j] = hn; v[j] = vn;
    }
}

template <typename R, typename C>
void alpha_backward(const Back<R>& b) {
    constexpr C c{};
    const int64_t n = b.n;
    const R *__restrict al = b.p[0], *__restrict be = b.p[1], *__restrict sc = b.p[2],
            *__restrict th = b.p[3];
    const R *__restrict e = b.sv[0], *__restrict h = b.sv[1], *__restrict v = b.sv[2];
    R *__restrict ge = b.g[0], *__restrict gh = b.g[1], *__restrict gv = b.g[2];
    EACH {
        const R xj = b.x[j], ho = h[j];
        const R fired = fire(c, v[j] - th[j]);
        R en = al[j] * e[j] + xj;
        R hn = be[j] * ho - xj;
        R vn = sc[j] * (en + hn);
        if (c.reset == 0) vn = vn - vn * fired;
        else if (c.reset == 1) vn = vn - (-ho) * fired;
        const R g_vf = gv[j] + surrogate(b.go[j], vn - th[j], b.slope);
        R g_vn = g_vf, g_hn = gh[j], g_en = ge[j], x1 = R(0), h1 = R(0), h2 = R(0);
        if (c.reset == 0) {
            g_vn = g_vf + (-g_vf) * fired;
            g_hn = gh[j] + (-gh[j]) * fired;
            g_en = ge[j] + (-ge[j]) * fired;
        } else if (c.reset == 1) {
            h1 = -((-g_vf) * fired);
            const R g_t3 = (-gh[j]) * fired;
            x1 = -g_t3;
            h2 = g_t3 * be[j];
        }
        const R g_sm = g_vn * sc[j];
        g_hn = g_hn + g_sm;
        g_en = g_en + g_sm;
        if (c.reset == 1) {
            b.gx[j] = (x1 + (-g_hn)) + g_en;
            gh[j] = (h1 + h2) + g_hn * be[j];
        } else {
            b.gx[j] = (-g_hn) + g_en;
            gh[j] = g_hn * be[j];
        }
        ge[j] = g_en * al[j];
        gv[j] = R(0);  // the voltage reaches the next step only through a detached comparison
    }
}

// -- SynapseFilter: p rate; s y. The output is the state itself, so its gradient gathers the
// output's part and the next step's two parts in that order: the carry holds the second. -------

template <typename R, typename C>
void filter_forward(const Step<R>& a) {
    const int64_t n = a.n;
    const R* __restrict rate = a.p[0];
    R* __restrict y = a.s[0];
    EACH {
        const R xj = a.x[j];
        const R yn = (y[j] - ((R(1) - xj) * y[j]) * rate[j]) + xj;
        a.out[j] = yn;
        y[j] = yn;
    }
}

template <typename R, typename C>
void filter_backward(const Back<R>& b) {
    const int64_t n = b.n;
    const R* __restrict rate = b.p[0];
    const R* __restrict y = b.sv[0];
    R* __restrict gy = b.g[0];
    R* __restrict carry = b.w;  // zeroed by the driver before the last step
    EACH {
        const R xj = b.x[j];
        const R g_e = (b.go[j] + gy[j]) + carry[j];
        const R g_b = (-g_e) * rate[j];
        b.gx[j] = g_e + (-(g_b * y[j]));
        gy[j] = g_e;
        carry[j] = g_b * (R(1) - xj);
        if (b.first) gy[j] = gy[j] + carry[j];
    }
}

// -- EIF: p tau delta_t theta_rh v_rest threshold v_reset; s v ---------------------------------

template <typename R, typename C>
void eif_forward(const Step<R>& a) {
    constexpr C c{};
    const int64_t n = a.n;
    const R *__restrict tau = a.p[0], *__restrict dt = a.p[1], *__restrict trh = a.p[2],
            *__restrict vrest = a.p[3], *__restrict th = a.p[4], *__restrict vr = a.p[5];
    R* __restrict v = a.s[0];
    R *__restrict arg = a.w, *__restrict ex = a.w + BLOCK;
    EACH arg[j] = (v[j] - trh[j]) / dt[j];
    vexp(a.e, arg, ex, n);
    EACH {
        const R vo = v[j];
        const R h = vo + (((a.x[j] + vrest[j]) - vo) + dt[j] * ex[j]) / tau[j];
        const R sp = fire(c, h - th[j]);
        a.out[j] = sp;
        v[j] = c.reset == 0 ? (sp > R(0) ? vr[j] : h) : h - th[j] * sp;
    }
}

template <typename R, typename C>
void eif_backward(const Back<R>& b) {
    constexpr C c{};
    const int64_t n = b.n;
    const R *__restrict tau = b.p[0], *__restrict dt = b.p[1], *__restrict trh = b.p[2],
            *__restrict vrest = b.p[3], *__restrict th = b.p[4];
    const R* __restrict v = b.sv[0];
    R* __restrict gv = b.g[0];
    R *__restrict arg = b.w, *__restrict ex = b.w + BLOCK;
    EACH arg[j] = (v[j] - trh[j]) / dt[j];
    vexp(b.e, arg, ex, n);
    EACH {
        const R vo = v[j];
        const R h = vo + (((b.x[j] + vrest[j]) - vo) + dt[j] * ex[j]) / tau[j];
        const R z = h - th[j];
        const R sp = fire(c, z);
        R g_s = b.go[j];
        R g_h = gv[j];
        if (c.reset == 1) g_s = g_s + (-gv[j]) * th[j];
        else g_h = sp > R(0) ? R(0) : g_h;
        g_h = g_h + surrogate(g_s, z, b.slope);
        const R g_drive = g_h / tau[j];
        const R g_a3 = ((g_drive * dt[j]) * ex[j]) / dt[j];
        gv[j] = (g_h + g_a3) + (-g_drive);
        b.gx[j] = g_drive;
    }
}

// -- AdExLIF: p rate syn_rate ada_rate delta_t v_leak threshold v_reset coupling jump;
//             s i v a ----------------------------------------------------------------------------

template <typename R, typename C>
void adex_forward(const Step<R>& a) {
    constexpr C c{};
    const int64_t n = a.n;
    const R *__restrict rate = a.p[0], *__restrict sr = a.p[1], *__restrict ar = a.p[2],
            *__restrict dt = a.p[3], *__restrict vl = a.p[4], *__restrict th = a.p[5],
            *__restrict vr = a.p[6], *__restrict cp = a.p[7], *__restrict jump = a.p[8];
    R *__restrict i = a.s[0], *__restrict v = a.s[1], *__restrict ad = a.s[2];
    R *__restrict arg = a.w, *__restrict ex = a.w + BLOCK;
    EACH arg[j] = (v[j] - th[j]) / dt[j];
    vexp(a.e, arg, ex, n);
    EACH {
        const R vo = v[j], ao = ad[j];
        const R jj = i[j] + a.x[j];
        const R vn = vo + rate[j] * ((((vl[j] - vo) + dt[j] * ex[j]) + jj) - ao);
        const R inew = jj + (-sr[j]) * jj;
        const R an = ao + ar[j] * (cp[j] * (vo - vl[j]) - ao);
        const R sp = fire(c, vn - th[j]);
        a.out[j] = sp;
        i[j] = inew;
        v[j] = sp > R(0) ? vr[j] : vn;
        ad[j] = an + jump[j] * sp;
    }
}

template <typename R, typename C>
void adex_backward(const Back<R>& b) {
    constexpr C c{};
    const int64_t n = b.n;
    const R *__restrict rate = b.p[0], *__restrict sr = b.p[1], *__restrict ar = b.p[2],
            *__restrict dt = b.p[3], *__restrict vl = b.p[4], *__restrict th = b.p[5],
            *__restrict cp = b.p[7], *__restrict jump = b.p[8];
    const R *__restrict i = b.sv[0], *__restrict v = b.sv[1], *__restrict ad = b.sv[2];
    R *__restrict gi = b.g[0], *__restrict gv = b.g[1], *__restrict ga = b.g[2];
    R *__restrict arg = b.w, *__restrict ex = b.w + BLOCK;
    EACH arg[j] = (v[j] - th[j]) / dt[j];
    vexp(b.e, arg, ex, n);
    EACH {
        const R vo = v[j], ao = ad[j];
        const R jj = i[j] + b.x[j];
        const R vn = vo + rate[j] * ((((vl[j] - vo) + dt[j] * ex[j]) + jj) - ao);
        const R z = vn - th[j];
        const R sp = fire(c, z);
        const R g_s = b.go[j] + ga[j] * jump[j];
        const R g_vn = (sp > R(0) ? R(0) : gv[j]) + surrogate(g_s, z, b.slope);
        const R g_g3 = ga[j] * ar[j];
        const R g_f7 = g_vn * rate[j];
        const R g_j = (gi[j] + gi[j] * (-sr[j])) + g_f7;
        const R g_f1 = ((g_f7 * dt[j]) * ex[j]) / dt[j];
        ga[j] = (ga[j] + (-g_g3)) + (-g_f7);
        gv[j] = (((g_g3 * cp[j]) + g_vn) + (-g_f7)) + g_f1;
        gi[j] = g_j;
        b.gx[j] = g_j;
    }
}

#undef EACH

// -- drivers -------------------------------------------------------------------------------------

const int MAX_STATE = 4, MAX_PARAMS = 12;

// Forward over T steps. x, out: [T, M]; state: ns pointers to [M], updated in place; saved
// (null, or ns pointers to [T, M]): the state before each step, for the backward pass.
template <typename R, typename F>
void forward(F step, const Exp& e, int threads, int ns, int np,
             const void* const* q, int64_t T, int64_t M, int64_t K, const R* x, R* out,
             R* const* state, R* const* saved) {
    blocks(threads, M, K, [&](int64_t lo, int64_t hi, int64_t k0) {
        const int64_t n = hi - lo;
        const R* p[MAX_PARAMS];
        R* s[MAX_STATE];
        for (int k = 0; k < np; ++k) p[k] = (const R*)q[k] + k0;
        for (int k = 0; k < ns; ++k) s[k] = state[k] + lo;
        alignas(64) R w[4 * BLOCK];
        for (int64_t t = 0; t < T; ++t) {
            if (saved)
                for (int k = 0; k < ns; ++k) std::memcpy(saved[k] + t * M + lo, s[k], n * sizeof(R));
            step(Step<R>{n, p, s, x + t * M + lo, out + t * M + lo, w, e});
        }
    });
}

// Backward over T steps, in reverse. gout, gx: [T, M]; saved: the forward's; g: ns pointers to
// [M], the gradients with respect to the final state in, to the initial state out.
template <typename R, typename F>
void backward(F step, const Exp& e, int threads, int ns, int np,
              const void* const* q, int64_t T, int64_t M, int64_t K, const R* x, const R* gout,
              R* const* saved, R* const* g, R* gx, R slope) {
    blocks(threads, M, K, [&](int64_t lo, int64_t hi, int64_t k0) {
        const int64_t n = hi - lo;
        const R* p[MAX_PARAMS];
        const R* sv[MAX_STATE];
        R* gs[MAX_STATE];
        for (int k = 0; k < np; ++k) p[k] = (const R*)q[k] + k0;
        for (int k = 0; k < ns; ++k) gs[k] = g[k] + lo;
        alignas(64) R w[4 * BLOCK] = {};
        for (int64_t t = T - 1; t >= 0; --t) {
            for (int k = 0; k < ns; ++k) sv[k] = saved[k] + t * M + lo;
            step(Back<R>{n, p, sv, x + t * M + lo, gout + t * M + lo, gx + t * M + lo, gs, w, e,
                         slope, t == 0});
        }
    });
}

// The families by number (hub/kernels/families.py): state and parameter counts.
const int STATES[] = {4, 2, 2, 3, 1, 1, 3};
const int PARAMS[] = {11, 9, 9, 4, 1, 6, 9};

// Calls f.operator()<C>() with the Fixed type of c; RESETS, ORDERS: whether the family reads
// the reset and the current order (else one instance serves all).
template <bool RESETS, bool ORDERS, typename F>
void with_conf(const Conf& c, F&& f) {
    auto inclusive = [&]<bool I>() {
        auto reset = [&]<int S>() {
            if constexpr (ORDERS) {
                if (!c.order_new) { f.template operator()<Fixed<I, S, false>>(); return; }
            }
            f.template operator()<Fixed<I, S, true>>();
        };
        if constexpr (RESETS) {
            if (c.reset == 1) { reset.template operator()<1>(); return; }
            if (c.reset == 2) { reset.template operator()<2>(); return; }
        }
        reset.template operator()<0>();
    };
    if (c.inclusive) inclusive.template operator()<true>();
    else inclusive.template operator()<false>();
}

// Calls f(forward, backward) with family's step functions for c.
template <typename R, typename F>
bool with_family(int family, const Conf& c, F&& f) {
#define HUB_FAMILY(N, NAME, RESETS, ORDERS)                                              \
    case N:                                                                             \
        with_conf<RESETS, ORDERS>(c, [&]<typename C>() {                                \
            f(NAME##_forward<R, C>, NAME##_backward<R, C>);                             \
        });                                                                             \
        return true;
    switch (family) {
        HUB_FAMILY(0, alif, true, true)
        HUB_FAMILY(1, izhikevich, false, false)
        HUB_FAMILY(2, qif, true, false)
        HUB_FAMILY(3, alpha, true, false)
        HUB_FAMILY(4, filter, false, false)
        HUB_FAMILY(5, eif, true, false)
        HUB_FAMILY(6, adex, false, false)
    }
#undef HUB_FAMILY
    return false;
}

template <typename R>
int run_forward(int family, const int32_t* conf, const Exp* e, int threads, const void* const* q,
                int64_t T, int64_t M, int64_t K, const void* x, void* out, void* const* state,
                void* const* saved) {
    const Conf c{conf[0], conf[1], conf[2]};
    const bool ok = with_family<R>(family, c, [&](auto fwd, auto) {
        forward<R>(fwd, *e, threads, STATES[family], PARAMS[family], q, T, M, K, (const R*)x,
                   (R*)out, (R* const*)state, (R* const*)saved);
    });
    return ok ? 0 : 2;
}

template <typename R>
int run_backward(int family, const int32_t* conf, const Exp* e, int threads,
                 const void* const* q, int64_t T, int64_t M, int64_t K, const void* x,
                 const void* gout, void* const* saved, void* const* g, void* gx, double slope) {
    const Conf c{conf[0], conf[1], conf[2]};
    const bool ok = with_family<R>(family, c, [&](auto, auto bwd) {
        backward<R>(bwd, *e, threads, STATES[family], PARAMS[family], q, T, M, K, (const R*)x,
                    (const R*)gout, (R* const*)saved, (R* const*)g, (R*)gx, R(slope));
    });
    return ok ? 0 : 2;
}

// -- ALIF in Loihi's integers (ALIF.arithmetic == "fixed"), forward only: its outputs carry no
// gradient. Every product and sum wraps as torch's int64 does; decay(d, y) is
// sign(y * d) * (|y * d| >> 12). q: alpha beta threshold_decay refractory_decay (times 4096), then
// gain current_gain v_leak v_reset threshold threshold_step refractory_scale, K values each (int64);
// drive: current_gain * x in float64 (integers, checked by the caller). ---------------------------

inline int64_t wadd(int64_t a, int64_t b) { return int64_t(uint64_t(a) + uint64_t(b)); }
inline int64_t wsub(int64_t a, int64_t b) { return int64_t(uint64_t(a) - uint64_t(b)); }
inline int64_t wmul(int64_t a, int64_t b) { return int64_t(uint64_t(a) * uint64_t(b)); }
inline int64_t decay(int64_t d, int64_t y) {
    const int64_t p = wmul(y, d);
    const int64_t m = (p < 0 ? wsub(0, p) : p) >> 12;
    return p < 0 ? wsub(0, m) : (p > 0 ? m : 0);
}

template <typename R>
void alif_fixed(const Conf& c, int threads, const int64_t* const* q, int64_t T, int64_t M,
                int64_t K, const double* drive, R* out, int64_t* i, int64_t* v, int64_t* theta,
                int64_t* r) {
    blocks(threads, M, K, [&](int64_t lo, int64_t hi, int64_t k0) {
        for (int64_t t = 0; t < T; ++t)
            for (int64_t m = lo; m < hi; ++m) {
                const int64_t k = k0 + (m - lo);
                const int64_t al = q[0][k], be = q[1][k], td = q[2][k], rd = q[3][k],
                              ga = q[4][k], vl = q[6][k], vr = q[7][k], th = q[8][k],
                              ts = q[9][k], rs = q[10][k];
                const int64_t inew = wadd(decay(al, i[m]), int64_t(drive[t * M + m]));
                const int64_t u = c.order_new ? inew : i[m];
                int64_t vv = wadd(wadd(vl, decay(be, wsub(v[m], vl))), wmul(ga, u));
                int64_t t2 = wadd(th, decay(td, wsub(theta[m], th)));
                int64_t r1 = decay(rd, r[m]);
                const int64_t lhs = wsub(vv, r1);
                const bool fired = c.inclusive ? lhs >= t2 : lhs > t2;
                const int64_t f = fired;
                if (c.reset == 0) vv = fired ? vr : vv;
                else if (c.reset == 1) vv = wsub(vv, wmul(t2, f));
                r1 = wadd(r1, wmul(wmul(rs, t2), f));
                t2 = wadd(t2, wmul(ts, f));
                out[t * M + m] = fired ? R(1) : R(0);
                i[m] = inew; v[m] = vv; theta[m] = t2; r[m] = r1;
            }
    });
}

}  // namespace

extern "C" {

// dtype: 0 float32, 1 float64. conf: three ints (Conf); q: the family's parameter pointers, K
// values each; state, saved: as forward() above. Returns 0, or nonzero for an unknown dtype or
// family.
int hub_family_forward(int family, int dtype, const int32_t* conf, const Exp* e, int threads,
                       const void* const* q, int64_t T, int64_t M, int64_t K, const void* x,
                       void* out, void* const* state, void* const* saved) {
    if (dtype == 0) return run_forward<float>(family, conf, e, threads, q, T, M, K, x, out, state,
                                              saved);
    if (dtype == 1) return run_forward<double>(family, conf, e, threads, q, T, M, K, x, out,
                                               state, saved);
    return 1;
}

int hub_family_backward(int family, int dtype, const int32_t* conf, const Exp* e, int threads,
                        const void* const* q, int64_t T, int64_t M, int64_t K, const void* x,
                        const void* gout, void* const* saved, void* const* g, void* gx,
                        double slope) {
    if (dtype == 0) return run_backward<float>(family, conf, e, threads, q, T, M, K, x, gout,
                                               saved, g, gx, slope);
    if (dtype == 1) return run_backward<double>(family, conf, e, threads, q, T, M, K, x, gout,
                                                saved, g, gx, slope);
    return 1;
}

// dtype of out: 0 float32, 1 float64. conf, q, drive: as alif_fixed above.
int hub_alif_fixed_forward(int dtype, const int32_t* conf, int threads, const int64_t* const* q,
                           int64_t T, int64_t M, int64_t K, const void* drive, void* out,
                           int64_t* i, int64_t* v, int64_t* theta, int64_t* r) {
    const Conf c{conf[0], conf[1], conf[2]};
    if (dtype == 0)
        alif_fixed<float>(c, threads, q, T, M, K, (const double*)drive, (float*)out, i, v, theta, r);
    else if (dtype == 1)
        alif_fixed<double>(c, threads, q, T, M, K, (const double*)drive, (double*)out, i, v,
                           theta, r);
    else
        return 1;
    return 0;
}

// torch.exp's function applied to n values, for checking that it is the one torch calls.
int hub_family_exp(int dtype, const Exp* e, const void* in, void* out, int64_t n) {
    if (dtype == 0) vexp(*e, (const float*)in, (float*)out, n);
    else if (dtype == 1) vexp(*e, (const double*)in, (double*)out, n);
    else return 1;
    return 0;
}

}  // extern "C"
