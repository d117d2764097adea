// Fused multi-step CPU kernels for the canonical neuron family (hub/neurons.py).
//
// One call runs a neuron layer over all T steps: the state of a block of neurons stays in cache
// while the block walks through time, instead of one pass over memory per operation per step.
// Each step performs the float operations of Neuron.step in the same order, one rounding per
// operation, so the results are bit-identical to the reference. That is why this file must be
// compiled with -ffp-contract=off (no fused multiply-add) and without -ffast-math.
//
// The backward pass is the reverse of the same recurrence for the input and the state (not for
// the parameters): it reproduces the surrogate gradient of hub/surrogate.py. The entry points take
// raw pointers and are called through ctypes, so no torch headers are needed to build this file.

#include <cmath>
#include <cstdint>
#include <algorithm>

namespace {

// The convention fields of one neuron, as small integers (see hub/kernels/cpu.py).
struct Conf {
    int32_t spiking, leaky, current;
    int32_t inclusive;       // comparison ">="
    int32_t reset;           // 0 zero, 1 subtract, 2 none
    int32_t timing_next;     // reset_timing "next"
    int32_t mode;            // 0 binary, 1 multi, 2 graded
    int32_t refractory;      // steps, 0 for none
    int32_t order_new;       // current_order "new"
    int32_t threads;
    double slope;            // of the fast-sigmoid surrogate
};

// Per-neuron parameters, each K values (the neuron shape, broadcast); a neuron type's unused ones
// point at zeros.
template <typename R>
struct Params {
    const R *beta, *gain, *v_leak, *alpha, *current_gain, *threshold, *v_reset, *amplitude;
};

// Neurons per block: a block's state stays in L2 through time, and each step reads and writes
// runs of 4 KiB (one page) of x and out.
const int64_t BLOCK = 1024;

// The spike count of spike_mode="multi", with the same operations as Neuron.step.
template <typename R>
inline R multi_count(R v, R th, R s, int inclusive) {
    R n = std::floor(v / th);
    n = (n * th > v) ? n - R(1) : n;
    n = ((n + R(1)) * th <= v) ? n + R(1) : n;
    if (!inclusive) n = (n * th == v) ? n - R(1) : n;
    R m = (n < R(1)) ? R(1) : n;  // torch.clamp(n, min=1), NaN stays NaN
    return s + (m * s - s);
}

template <typename R>
inline bool spikes(const Conf& c, R z) { return c.inclusive ? z >= R(0) : z > R(0); }

template <typename R>
inline R integrate(const Conf& c, const Params<R>& p, int64_t k, R v, R u) {
    if (c.leaky) return (p.v_leak[k] + p.beta[k] * (v - p.v_leak[k])) + p.gain[k] * u;
    return v + p.gain[k] * u;
}

// Runs fn(lo, hi) over blocks of neurons [lo, hi) that share one row of K, in parallel; within a
// block the index k of neuron m is k0 + (m - lo), so no modulo in the inner loops.
template <typename F>
void blocks(int threads, int64_t M, int64_t K, F fn) {
    const int64_t per_row = (K + BLOCK - 1) / BLOCK, total = (M / K) * per_row;
    // dynamic: on a shared machine one thread may be slowed down, the other takes over its blocks
#pragma omp parallel for num_threads(threads) schedule(dynamic, 4)
    for (int64_t b = 0; b < total; ++b) {
        const int64_t row = b / per_row, k0 = (b % per_row) * BLOCK;
        fn(row * K + k0, row * K + std::min(K, k0 + BLOCK), k0);
    }
}

// The common case, specialised so that the compiler can vectorise it: binary spikes reset in the
// same step, no refractory period. The same operations as forward() and backward() below. One
// call is one time step of one block, kept out of line, where GCC vectorises it.
template <typename R, bool LEAKY, bool CURRENT, bool ORDER_NEW, int RESET, bool INCLUSIVE>
__attribute__((noinline)) void fast_step(
        int64_t n, const R* __restrict xt, R* __restrict ot, R* __restrict vb,
        R* __restrict ib, R* __restrict sb, R* __restrict save, const R* __restrict beta,
        const R* __restrict gain, const R* __restrict vl, const R* __restrict alpha,
        const R* __restrict cg, const R* __restrict th, const R* __restrict vr,
        const R* __restrict amp) {
    for (int64_t j = 0; j < n; ++j) {
        const R xj = xt[j];
        R u = xj;
        if (CURRENT) {
            const R inew = alpha[j] * ib[j] + cg[j] * xj;
            u = ORDER_NEW ? inew : ib[j];
            ib[j] = inew;
        }
        R vv = LEAKY ? (vl[j] + beta[j] * (vb[j] - vl[j])) + gain[j] * u : vb[j] + gain[j] * u;
        if (save) save[j] = vv;
        const R z = vv - th[j];
        const R sp = (INCLUSIVE ? (z >= R(0)) : (z > R(0))) ? R(1) : R(0);
        ot[j] = sp * amp[j];
        sb[j] = sp;
        if (RESET == 1) vv = vv - th[j] * sp;
        else if (RESET == 0) vv = sp > R(0) ? vr[j] : vv;
        vb[j] = vv;
    }
}

template <typename R, bool LEAKY, bool CURRENT, bool ORDER_NEW, int RESET, bool INCLUSIVE>
__attribute__((noinline)) void fast_back_step(
        int64_t n, const R* __restrict go, const R* __restrict saved, R* __restrict gxt,
        R* __restrict gv, R* __restrict gi, R* __restrict gs, const R* __restrict beta,
        const R* __restrict gain, const R* __restrict alpha, const R* __restrict cg,
        const R* __restrict th, const R* __restrict amp, const R slope) {
    for (int64_t j = 0; j < n; ++j) {
        const R vv = saved[j];
        const R z = vv - th[j];
        const R sp = (INCLUSIVE ? (z >= R(0)) : (z > R(0))) ? R(1) : R(0);
        R g_count = go[j] * amp[j];
        R g_reset = gv[j];
        if (RESET == 1) g_count = g_count + (-gv[j]) * th[j];
        else if (RESET == 0) g_reset = sp > R(0) ? R(0) : g_reset;
        g_count = g_count + gs[j];
        R den = R(1) + slope * std::fabs(z);
        den = den * den;
        const R g_int = g_reset + g_count / den;
        gs[j] = R(0);
        const R g_u = g_int * gain[j];
        gv[j] = LEAKY ? g_int * beta[j] : g_int;
        if (CURRENT) {
            const R g_new = ORDER_NEW ? gi[j] + g_u : gi[j];
            gxt[j] = g_new * cg[j];
            gi[j] = ORDER_NEW ? g_new * alpha[j] : g_new * alpha[j] + g_u;
        } else {
            gxt[j] = g_u;
        }
    }
}

// Calls f.operator()<LEAKY, CURRENT, ORDER_NEW, RESET, INCLUSIVE>() for c, if c is the common
// case of fast_step; returns whether it did.
template <typename F>
bool dispatch(const Conf& c, F&& f) {
    if (!c.spiking || c.timing_next || c.mode != 0 || c.refractory) return false;
    if (c.current && !c.leaky) return false;
    auto reset = [&]<bool LEAKY, bool CURRENT, bool ORDER_NEW>() {
        auto cmp = [&]<int RESET>() {
            if (c.inclusive) f.template operator()<LEAKY, CURRENT, ORDER_NEW, RESET, true>();
            else f.template operator()<LEAKY, CURRENT, ORDER_NEW, RESET, false>();
        };
        if (c.reset == 0) cmp.template operator()<0>();
        else if (c.reset == 1) cmp.template operator()<1>();
        else cmp.template operator()<2>();
    };
    if (c.current && c.order_new) reset.template operator()<true, true, true>();
    else if (c.current) reset.template operator()<true, true, false>();
    else if (c.leaky) reset.template operator()<true, false, false>();
    else reset.template operator()<false, false, false>();
    return true;
}

template <typename R>
bool fast_forward(const Conf& c, const Params<R>& p, int64_t T, int64_t M, int64_t K,
                  const R* x, R* out, R* v, R* i, R* s, R* save_v) {
    return dispatch(c, [&]<bool LEAKY, bool CURRENT, bool ORDER_NEW, int RESET, bool INCL>() {
        blocks(c.threads, M, K, [&](int64_t lo, int64_t hi, int64_t k0) {
            for (int64_t t = 0; t < T; ++t)
                fast_step<R, LEAKY, CURRENT, ORDER_NEW, RESET, INCL>(
                    hi - lo, x + t * M + lo, out + t * M + lo, v + lo, i + lo, s + lo,
                    save_v ? save_v + t * M + lo : nullptr, p.beta + k0, p.gain + k0,
                    p.v_leak + k0, p.alpha + k0, p.current_gain + k0, p.threshold + k0,
                    p.v_reset + k0, p.amplitude + k0);
        });
    });
}

template <typename R>
bool fast_backward(const Conf& c, const Params<R>& p, int64_t T, int64_t M, int64_t K,
                   const R* gout, const R* save_v, R* gv, R* gi, R* gs, R* gx) {
    return dispatch(c, [&]<bool LEAKY, bool CURRENT, bool ORDER_NEW, int RESET, bool INCL>() {
        blocks(c.threads, M, K, [&](int64_t lo, int64_t hi, int64_t k0) {
            for (int64_t t = T - 1; t >= 0; --t)
                fast_back_step<R, LEAKY, CURRENT, ORDER_NEW, RESET, INCL>(
                    hi - lo, gout + t * M + lo, save_v + t * M + lo, gx + t * M + lo, gv + lo,
                    gi + lo, gs + lo, p.beta + k0, p.gain + k0, p.alpha + k0,
                    p.current_gain + k0, p.threshold + k0, p.amplitude + k0, R(c.slope));
        });
    });
}

// Forward over T steps. x, out: [T, M]; v, i, s, r: [M] state, updated in place; save_v and
// save_f ([T, M], may be null) keep what the backward pass needs: the voltage that was compared
// to the threshold, and flags (bit 0 spiked, bit 1 resting), needed with a refractory period only:
// without one the spike follows from the voltage.
template <typename R>
void forward(const Conf& c, const Params<R>& p, int64_t T, int64_t M, int64_t K, const R* x,
             R* out, R* v, R* i, R* s, int32_t* r, R* save_v, uint8_t* save_f) {
    if (fast_forward(c, p, T, M, K, x, out, v, i, s, save_v)) return;
    blocks(c.threads, M, K, [&](int64_t lo, int64_t hi, int64_t k0) {
        for (int64_t t = 0; t < T; ++t) {
            const R* xt = x + t * M;
            R* ot = out + t * M;
            for (int64_t m = lo, k = k0; m < hi; ++m, ++k) {
                R u = xt[m];
                if (c.current) {
                    const R inew = p.alpha[k] * i[m] + p.current_gain[k] * xt[m];
                    u = c.order_new ? inew : i[m];
                    i[m] = inew;
                }
                if (!c.spiking) {
                    const R vn = integrate(c, p, k, v[m], u);
                    v[m] = vn;
                    ot[m] = vn;
                    continue;
                }
                const R th = p.threshold[k];
                const R sprev = s[m];
                R vv = v[m];
                if (c.timing_next && c.reset == 0 && sprev > R(0)) vv = p.v_reset[k];
                vv = integrate(c, p, k, vv, u);
                if (c.timing_next && c.reset == 1) vv = vv - th * sprev;
                bool resting = false;
                if (c.refractory) {
                    resting = r[m] > 0;
                    if (resting) vv = v[m];
                }
                const R z = vv - th;
                R sp = (c.inclusive ? (z >= R(0)) : (z > R(0))) ? R(1) : R(0);
                if (c.refractory) sp = sp * (resting ? R(0) : R(1));
                const R count = c.mode == 1 ? multi_count(vv, th, sp, c.inclusive) : sp;
                const R o = c.mode == 2 ? count * vv : count;
                ot[m] = o * p.amplitude[k];
                s[m] = c.timing_next ? count : sp;
                if (save_v) save_v[t * M + m] = vv;
                if (save_f) save_f[t * M + m] = uint8_t((sp > R(0)) | (resting << 1));
                if (!c.timing_next) {
                    if (c.reset == 1) vv = vv - th * count;
                    else if (c.reset == 0 && sp > R(0)) vv = p.v_reset[k];
                }
                v[m] = vv;
                if (c.refractory) r[m] = sp > R(0) ? c.refractory : std::max(r[m] - 1, 0);
            }
        }
    });
}

// Backward over T steps, in reverse: the gradient of the loss with respect to the input and the
// initial state, given that with respect to the output (gout) and the final state (gv, gi, gs,
// updated in place to the gradient with respect to the initial state). s0: the initial spike
// state, read only for reset_timing="next" with reset="zero". graded_order picks the order in
// which the three gradients of a graded voltage are summed (the order autograd sums them in).
template <typename R>
void backward(const Conf& c, const Params<R>& p, int64_t T, int64_t M, int64_t K, const R* gout,
              const R* save_v, const uint8_t* save_f, const R* s0, R* gv, R* gi, R* gs, R* gx) {
    if (fast_backward(c, p, T, M, K, gout, save_v, gv, gi, gs, gx)) return;
    const R slope = R(c.slope);
    blocks(c.threads, M, K, [&](int64_t lo, int64_t hi, int64_t k0) {
        for (int64_t t = T - 1; t >= 0; --t) {
            const R* go = gout + t * M;
            R* gxt = gx + t * M;
            for (int64_t m = lo, k = k0; m < hi; ++m, ++k) {
                R g_int;  // gradient of the integrated voltage
                R g_hold = R(0);
                if (!c.spiking) {
                    g_int = go[m] + gv[m];
                } else {
                    const R th = p.threshold[k];
                    const R vv = save_v[t * M + m];
                    const R z = vv - th;
                    const uint8_t f = c.refractory ? save_f[t * M + m] : 0;
                    const R sp = (c.refractory ? (f & 1) : spikes(c, z)) ? R(1) : R(0);
                    const bool resting = f & 2;
                    const R count = c.mode == 1 ? multi_count(vv, th, sp, c.inclusive) : sp;
                    const R g_o = go[m] * p.amplitude[k];
                    R g_count = c.mode == 2 ? g_o * vv : g_o;
                    R g_reset = gv[m];
                    if (!c.timing_next) {
                        if (c.reset == 1) g_count = g_count + (-gv[m]) * th;
                        else if (c.reset == 0 && sp > R(0)) g_reset = R(0);
                    }
                    g_count = g_count + gs[m];  // the spike state is the count or the spike
                    R g_s = g_count;
                    if (c.refractory) g_s = g_s * (resting ? R(0) : R(1));
                    R den = R(1) + slope * std::fabs(z);
                    den = den * den;
                    const R g_z = g_s / den;
                    R g_vv;
                    if (c.mode == 2) g_vv = (g_reset + g_o * count) + g_z;
                    else g_vv = g_reset + g_z;
                    g_int = g_vv;
                    if (c.refractory) {
                        g_int = resting ? R(0) : g_vv;
                        g_hold = resting ? g_vv : R(0);
                    }
                    gs[m] = (c.timing_next && c.reset == 1) ? (-g_int) * th : R(0);
                }
                const R g_u = g_int * p.gain[k];
                R g_v = c.leaky ? g_int * p.beta[k] : g_int;
                if (c.spiking && c.timing_next && c.reset == 0) {
                    // next timing has no refractory period: the spike follows from the voltage
                    const bool prev = t > 0 ? spikes(c, save_v[(t - 1) * M + m] - p.threshold[k])
                                            : s0[m] > R(0);
                    if (prev) g_v = R(0);
                }
                gv[m] = c.refractory ? g_v + g_hold : g_v;
                if (c.current) {
                    const R g_new = c.order_new ? gi[m] + g_u : gi[m];
                    gxt[m] = g_new * p.current_gain[k];
                    gi[m] = c.order_new ? g_new * p.alpha[k] : g_new * p.alpha[k] + g_u;
                } else {
                    gxt[m] = g_u;
                }
            }
        }
    });
}

template <typename R>
Params<R> params(const void* const* q) {
    return Params<R>{(const R*)q[0], (const R*)q[1], (const R*)q[2], (const R*)q[3],
                     (const R*)q[4], (const R*)q[5], (const R*)q[6], (const R*)q[7]};
}

}  // namespace

extern "C" {

// dtype: 0 float32, 1 float64. q: the eight parameter pointers in the order of Params.
int hub_neuron_forward(int dtype, const Conf* c, const void* const* q, int64_t T, int64_t M,
                       int64_t K, const void* x, void* out, void* v, void* i, void* s, int32_t* r,
                       void* save_v, uint8_t* save_f) {
    if (dtype == 0)
        forward<float>(*c, params<float>(q), T, M, K, (const float*)x, (float*)out, (float*)v,
                       (float*)i, (float*)s, r, (float*)save_v, save_f);
    else if (dtype == 1)
        forward<double>(*c, params<double>(q), T, M, K, (const double*)x, (double*)out,
                        (double*)v, (double*)i, (double*)s, r, (double*)save_v, save_f);
    else
        return 1;
    return 0;
}

int hub_neuron_backward(int dtype, const Conf* c, const void* const* q, int64_t T, int64_t M,
                        int64_t K, const void* gout, const void* save_v, const uint8_t* save_f,
                        const void* s0, void* gv, void* gi, void* gs, void* gx) {
    if (dtype == 0)
        backward<float>(*c, params<float>(q), T, M, K, (const float*)gout, (const float*)save_v,
                        save_f, (const float*)s0, (float*)gv, (float*)gi, (float*)gs,
                        (float*)gx);
    else if (dtype == 1)
        backward<double>(*c, params<double>(q), T, M, K, (const double*)gout,
                         (const double*)save_v, save_f, (const double*)s0, (double*)gv,
                         (double*)gi, (double*)gs, (double*)gx);
    else
        return 1;
    return 0;
}

int hub_abi_version(void) { return 1; }

}  // extern "C"
