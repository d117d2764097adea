// Fused multi-step CPU kernels for the neuron families of hub/families.py.
//
// As neurons.cpp does for Neuron.step: one call runs a layer over all T steps, a span of neurons
// at a time, and each step performs the float operations of the family's reference step in the
// same order with one rounding each, so the results are bit-identical to it. Compile with
// -ffp-contract=off and without -ffast-math.
//
// The exponential of EIF and AdExLIF is torch's own: the caller passes the function torch.exp
// dispatches to on this machine (found and checked in hub/kernels/families.py), and the kernels
// call it on a span's arguments at a time, as torch does on a whole tensor.
//
// The backward pass reproduces, number for number, what torch's autograd computes through the
// reference step with the surrogate of hub/surrogate.py: each local derivative as autograd's
// formula writes it, and where a tensor feeds several operations, its gradient summed in the
// order in which autograd's engine delivers the parts (the consumer created last first). The
// forward pass saves each step's incoming state; the backward pass recomputes the step from it.

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

namespace {

const int64_t BLOCK = 1024, SPAN_BYTES = 1 << 20;

// The neurons [0, M) in spans of contiguous neurons that walk through time together, fn(lo, hi)
// for each. Each step reads its input and writes its output over a span as one contiguous run:
// a run of a few kilobytes per step (one row of K, or BLOCK neurons) leaves the hardware
// prefetcher too little to follow, and the loop waits on memory. A span's state (ns arrays of R)
// is about SPAN_BYTES, so that it stays in the core's caches from step to step (measured: spans
// of 32 KiB to 256 KiB of state were slower than 1 MiB, longer ones no faster).
template <typename F>
void spans(int threads, int64_t M, int ns, int64_t size, F fn) {
    int64_t span = std::max<int64_t>(BLOCK, SPAN_BYTES / (std::max(ns, 1) * size));
    if (threads > 1)  // a few spans per thread, for the dynamic schedule to balance
        span = std::min(span, std::max<int64_t>(BLOCK, (M + 4 * threads - 1) / (4 * threads)));
    span = (span + 15) / 16 * 16;
    const int64_t total = (M + span - 1) / span;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int64_t b = 0; b < total; ++b) fn(b * span, std::min(M, (b + 1) * span));
}

// The pieces [a, b) of [lo, hi) within one row of K neurons (so that they share one run of
// parameters, from k0) and of at most BLOCK neurons (whose parameters stay in the first-level
// cache): fn(a, b, k0).
template <typename F>
inline void pieces(int64_t lo, int64_t hi, int64_t K, F fn) {
    for (int64_t a = lo; a < hi;) {
        const int64_t k0 = a % K, b = std::min({hi, a - k0 + K, a + BLOCK});
        fn(a, b, k0);
        a = b;
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
// (0 zero, 1 subtract, 2 none), c[2] current_order "new", c[3] whether every divisor of the
// family's step is a power of two whose reciprocal is a normal float (see divide()), c[4]
// whether every parameter has one value for all neurons (then each is read from its first).
struct Conf {
    int32_t inclusive, reset, order_new, reciprocal, uniform;
};

// The conventions as compile-time constants, so that every loop below vectorises.
template <bool INCLUSIVE, int RESET, bool ORDER_NEW, bool RECIPROCAL, bool UNIFORM>
struct Fixed {
    static constexpr bool inclusive = INCLUSIVE;
    static constexpr int reset = RESET;
    static constexpr bool order_new = ORDER_NEW;
    static constexpr bool reciprocal = RECIPROCAL;
    static constexpr bool uniform = UNIFORM;
};

// a / d, given r = 1 / d. Where d is a power of two and r a normal float, a * r is the same real
// number as a / d, and both operations round it correctly (in any rounding mode, with or without
// flushing subnormals), so they give the same bits for every a, NaN and infinities included; a
// multiplication costs a fraction of a division.
template <typename C, typename R>
inline R divide(R a, R d, R r) { return C::reciprocal ? a * r : a / d; }

template <typename C, typename R>
inline R fire(C, R z) { return (C::inclusive ? z >= R(0) : z > R(0)) ? R(1) : R(0); }

// The surrogate's derivative applied to g: g / (1 + slope |z|)^2, as hub/surrogate.py computes.
template <typename R>
inline R surrogate(R g, R z, R slope) {
    R den = R(1) + slope * std::fabs(z);
    den = den * den;
    return g / den;
}

// What a step function gets: n neurons (at most BLOCK); p the parameters, s the state (in place),
// x and out this step's input and output, all offset to the piece. A family with EXP is called
// without ex before the first step, to write its exponent's arguments to args; then at each step
// with ex, their exponentials (torch's function over the whole span at once), and it writes the
// next step's arguments to args.
template <typename R>
struct Step {
    int64_t n;
    const R* const* p;
    R* const* s;
    const R* __restrict x;
    R* __restrict out;
    R* __restrict args;
    const R* __restrict ex;
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
    R* __restrict args;  // as in Step
    const R* __restrict ex;
    R* __restrict carry;  // a value per neuron kept from step to step, zero before the last
    R slope;
    bool first;  // t == 0
};

// ivdep: the neurons of a piece are independent, so GCC vectorises without testing whether the
// pointers overlap; every neuron's operations stay as written (no contraction, by flag). Not omp
// simd: it would keep the arrays of the loops below in memory, one per lane, and GCC 12 does not
// vectorise loads from those ("no vectype").
#define EACH _Pragma("GCC ivdep") for (int64_t j = 0; j < n; ++j)

template <int N>
using Seq = std::make_integer_sequence<int, N>;

// A family is a struct that states its arithmetic on one neuron, and the loops below run it over
// a piece of a span. It names its parameters (enum, then NP their count) and its state (then NS)
// in the order of its Spec in hub/kernels/families.py (parameters, then the reciprocals of its
// Spec.divisors), and has
//   EXP: whether its step takes exp(exp_arg(p, s)), which the drivers compute for the whole
//        span first, through torch's own function (as torch does on a whole tensor);
//   forward<C>(p, s, x, ex): the step, from parameters p and state s (updated in place) on
//        input x, returning the output;
//   backward<C>(p, s, g, x, go, ex, slope, carry, first): the gradient with respect to x, given
//        the state before the step s, the output's gradient go and the state gradients g (after
//        the step in, before it out); carry: a value per neuron kept from step to step (zero
//        before the last), first: this is the first step.

// The loops take the family's pointers (parameters, then state, then state gradients) as one
// pack of arguments, so that GCC keeps them in registers: read from an array inside the loop
// over neurons, they keep it from vectorising the loop. A neuron's values are gathered into
// one array indexed by constants only (so in registers too), and written back through the
// pointers that are not const.
template <typename R, typename... Q>
inline void write_back(int64_t j, const R* v, Q*... q) {
    int k = 0;
    ([&] {
        if constexpr (!std::is_const_v<Q>) q[j] = v[k];
        ++k;
    }(), ...);
}

// at(q, j): q's value for neuron j; a parameter (index I < F::NP) with C::uniform has one value.
#define AT(I) q[C::uniform && (I) < F::NP ? 0 : j]

template <typename R, typename F, typename C, int... I, typename... Q>
void forward_loop(const Step<R>& a, std::integer_sequence<int, I...>, Q* __restrict... q) {
    const int64_t n = a.n;
    const R *__restrict x = a.x, *__restrict ex = a.ex;
    R *__restrict out = a.out, *__restrict args = a.args;
    if constexpr (F::EXP) {
        if (!ex) {
            EACH {
                const R v[] = {AT(I)...};
                args[j] = F::template exp_arg<C>(v, v + F::NP);
            }
            return;
        }
        // the step, then the next step's arguments from the new state while it is at hand
        EACH {
            R v[] = {AT(I)...};
            out[j] = F::template forward<C>(v, v + F::NP, x[j], ex[j]);
            args[j] = F::template exp_arg<C>(v, v + F::NP);
            write_back(j, v, q...);
        }
        return;
    }
    EACH {
        R v[] = {AT(I)...};
        out[j] = F::template forward<C>(v, v + F::NP, x[j], R(0));
        write_back(j, v, q...);
    }
}

template <typename R, typename F, typename C, int... I, typename... Q>
void backward_loop(const Back<R>& b, std::integer_sequence<int, I...>, Q* __restrict... q) {
    const int64_t n = b.n;
    const R *__restrict x = b.x, *__restrict go = b.go, *__restrict ex = b.ex;
    R *__restrict gx = b.gx, *__restrict args = b.args, *__restrict carry = b.carry;
    if constexpr (F::EXP) {
        if (args) {
            EACH {
                const R v[] = {AT(I)...};
                args[j] = F::template exp_arg<C>(v, v + F::NP);
            }
            return;
        }
    }
    EACH {
        R v[] = {AT(I)...};
        gx[j] = F::template backward<C>(v, v + F::NP, v + F::NP + F::NS, x[j], go[j],
                                        F::EXP ? ex[j] : R(0), b.slope, carry[j], b.first);
        write_back(j, v, q...);
    }
}

template <typename R, typename F, typename C>
void forward_step(const Step<R>& a) {
    [&]<int... P, int... S>(std::integer_sequence<int, P...>, std::integer_sequence<int, S...>) {
        forward_loop<R, F, C>(a, Seq<int(F::NP) + int(F::NS)>{}, a.p[P]..., a.s[S]...);
    }(Seq<F::NP>{}, Seq<F::NS>{});
}

template <typename R, typename F, typename C>
void backward_step(const Back<R>& b) {
    [&]<int... P, int... S>(std::integer_sequence<int, P...>, std::integer_sequence<int, S...>) {
        backward_loop<R, F, C>(b, Seq<int(F::NP) + 2 * int(F::NS)>{}, b.p[P]..., b.sv[S]..., b.g[S]...);
    }(Seq<F::NP>{}, Seq<F::NS>{});
}

#undef EACH
#undef AT

struct Alif {
    enum { alpha, beta, gain, current_gain, v_leak, threshold, threshold_decay, threshold_step,
           refractory_decay, refractory_scale, v_reset, NP };
    enum { i, v, theta, r, NS };
    static constexpr bool EXP = false;

    template <typename C, typename R>
    static R forward(const R* p, R* s, R x, R) {
        constexpr C c{};
        const R inew = p[alpha] * s[i] + p[current_gain] * x;
        const R u = c.order_new ? inew : s[i];
        R vv = (p[v_leak] + p[beta] * (s[v] - p[v_leak])) + p[gain] * u;
        R t2 = p[threshold] + p[threshold_decay] * (s[theta] - p[threshold]);
        R r1 = p[refractory_decay] * s[r];
        const R sp = fire(c, (vv - r1) - t2);
        if (c.reset == 0) vv = sp > R(0) ? p[v_reset] : vv;
        else if (c.reset == 1) vv = vv - t2 * sp;
        r1 = r1 + (p[refractory_scale] * t2) * sp;
        t2 = t2 + p[threshold_step] * sp;
        s[i] = inew; s[v] = vv; s[theta] = t2; s[r] = r1;
        return sp;
    }

    template <typename C, typename R>
    static R backward(const R* p, const R* s, R* g, R x, R go, R, R slope, R&, bool) {
        constexpr C c{};
        const R inew = p[alpha] * s[i] + p[current_gain] * x;
        const R u = c.order_new ? inew : s[i];
        const R vv = (p[v_leak] + p[beta] * (s[v] - p[v_leak])) + p[gain] * u;
        const R t2 = p[threshold] + p[threshold_decay] * (s[theta] - p[threshold]);
        const R r1 = p[refractory_decay] * s[r];
        const R z = (vv - r1) - t2;
        const R sp = fire(c, z);
        const R o2 = p[refractory_scale] * t2;
        // the spike: the output, then theta's step, r's step, and a subtracting reset
        R g_s = go + g[theta] * p[threshold_step];
        g_s = g_s + g[r] * o2;
        R g_t2 = g[theta] + (g[r] * sp) * p[refractory_scale];
        if (c.reset == 1) {
            g_s = g_s + (-g[v]) * t2;
            g_t2 = g_t2 + (-g[v]) * sp;
        }
        const R g_z = surrogate(g_s, z, slope);
        g_t2 = g_t2 + (-g_z);
        const R g_vv = (c.reset == 0 ? (sp > R(0) ? R(0) : g[v]) : g[v]) + g_z;
        g[r] = (g[r] + (-g_z)) * p[refractory_decay];
        g[theta] = g_t2 * p[threshold_decay];
        const R g_u = g_vv * p[gain];
        g[v] = g_vv * p[beta];
        if (c.order_new) {
            const R g_new = g[i] + g_u;
            g[i] = g_new * p[alpha];
            return g_new * p[current_gain];
        }
        const R g_new = g[i];
        g[i] = g_u + g_new * p[alpha];
        return g_new * p[current_gain];
    }
};

struct Izhikevich {
    enum { rate, sq, mn, bias, recovery_rate, coupling, threshold, v_reset, u_jump, NP };
    enum { v, u, NS };
    static constexpr bool EXP = false;

    // the membrane before the spike test, as forward computes it and backward recomputes it
    template <typename R>
    static R voltage(const R* p, R vo, R uo, R x) {
        const R drive = ((((p[sq] * (vo * vo)) + p[mn] * vo) + p[bias]) - uo) + x;
        return vo + p[rate] * drive;
    }

    template <typename C, typename R>
    static R forward(const R* p, R* s, R x, R) {
        constexpr C c{};
        const R vo = s[v], uo = s[u];
        const R vn = voltage(p, vo, uo, x);
        const R un = uo + p[recovery_rate] * (p[coupling] * vo - uo);
        const R sp = fire(c, vn - p[threshold]);
        s[v] = sp > R(0) ? p[v_reset] : vn;
        s[u] = sp > R(0) ? un + p[u_jump] : un;
        return sp;
    }

    template <typename C, typename R>
    static R backward(const R* p, const R* s, R* g, R x, R go, R, R slope, R&, bool) {
        const R vo = s[v], uo = s[u];
        const R vn = voltage(p, vo, uo, x);
        const R z = vn - p[threshold];
        const R sp = fire(C{}, z);
        const bool on = sp > R(0);
        const R g_un = (on ? R(0) : g[u]) + (on ? g[u] : R(0));
        const R g_vn = (on ? R(0) : g[v]) + surrogate(go, z, slope);
        const R g_e2 = g_un * p[recovery_rate];
        const R g_drive = g_vn * p[rate];
        g[u] = (g_un + (-g_e2)) + (-g_drive);
        g[v] = (((g_e2 * p[coupling]) + g_vn) + g_drive * p[mn])
               + (g_drive * p[sq]) * (vo * R(2));
        return g_drive;
    }
};

struct Qif {
    enum { tau, a0, v_rest, v_c, tau_w, coupling, w_jump, threshold, v_reset, inv_tau, inv_tau_w,
           NP };
    enum { v, w, NS };
    static constexpr bool EXP = false;

    template <typename C, typename R>
    static R forward(const R* p, R* s, R x, R) {
        constexpr C c{};
        const R vo = s[v], wo = s[w];
        const R h = vo + divide<C>((x + (p[a0] * (vo - p[v_rest])) * (vo - p[v_c])) - wo,
                                   p[tau], p[inv_tau]);
        const R sp = fire(c, h - p[threshold]);
        s[w] = (wo + divide<C>(p[coupling] * (h - p[v_rest]) - wo, p[tau_w], p[inv_tau_w]))
               + p[w_jump] * sp;
        s[v] = c.reset == 0 ? (sp > R(0) ? p[v_reset] : h) : h - p[threshold] * sp;
        return sp;
    }

    template <typename C, typename R>
    static R backward(const R* p, const R* s, R* g, R x, R go, R, R slope, R&, bool) {
        constexpr C c{};
        const R vo = s[v], wo = s[w];
        const R b2 = p[a0] * (vo - p[v_rest]), b3 = vo - p[v_c];
        const R h = vo + divide<C>((x + b2 * b3) - wo, p[tau], p[inv_tau]);
        const R z = h - p[threshold];
        const R sp = fire(c, z);
        R g_s = go;
        R g_h = g[v];
        if (c.reset == 1) g_s = g_s + (-g[v]) * p[threshold];
        else g_h = sp > R(0) ? R(0) : g_h;
        g_s = g_s + g[w] * p[w_jump];
        const R g_c3 = divide<C>(g[w], p[tau_w], p[inv_tau_w]);
        g_h = (g_h + g_c3 * p[coupling]) + surrogate(g_s, z, slope);
        const R g_b6 = divide<C>(g_h, p[tau], p[inv_tau]);
        g[w] = (g[w] + (-g_c3)) + (-g_b6);
        g[v] = (g_h + g_b6 * b2) + (g_b6 * b3) * p[a0];
        return g_b6;
    }
};

struct AlphaLif {
    enum { alpha, beta, scale, threshold, NP };
    enum { e, h, v, NS };
    static constexpr bool EXP = false;

    template <typename C, typename R>
    static R forward(const R* p, R* s, R x, R) {
        constexpr C c{};
        const R ho = s[h];
        const R fired = fire(c, s[v] - p[threshold]);
        R en = p[alpha] * s[e] + x;
        R hn = p[beta] * ho - x;
        R vn = p[scale] * (en + hn);
        if (c.reset == 0) {
            en = en - en * fired;
            hn = hn - hn * fired;
            vn = vn - vn * fired;
        } else if (c.reset == 1) {
            en = en - p[threshold] * fired;
            hn = hn - (p[beta] * ho - x) * fired;
            vn = vn - (-ho) * fired;
        }
        s[e] = en; s[h] = hn; s[v] = vn;
        return fire(c, vn - p[threshold]);
    }

    template <typename C, typename R>
    static R backward(const R* p, const R* s, R* g, R x, R go, R, R slope, R&, bool) {
        constexpr C c{};
        const R ho = s[h];
        const R fired = fire(c, s[v] - p[threshold]);
        R en = p[alpha] * s[e] + x;
        R hn = p[beta] * ho - x;
        R vn = p[scale] * (en + hn);
        if (c.reset == 0) vn = vn - vn * fired;
        else if (c.reset == 1) vn = vn - (-ho) * fired;
        const R g_vf = g[v] + surrogate(go, vn - p[threshold], slope);
        R g_vn = g_vf, g_hn = g[h], g_en = g[e], x1 = R(0), h1 = R(0), h2 = R(0);
        if (c.reset == 0) {
            g_vn = g_vf + (-g_vf) * fired;
            g_hn = g[h] + (-g[h]) * fired;
            g_en = g[e] + (-g[e]) * fired;
        } else if (c.reset == 1) {
            h1 = -((-g_vf) * fired);
            const R g_t3 = (-g[h]) * fired;
            x1 = -g_t3;
            h2 = g_t3 * p[beta];
        }
        const R g_sm = g_vn * p[scale];
        g_hn = g_hn + g_sm;
        g_en = g_en + g_sm;
        R gx;
        if (c.reset == 1) {
            gx = (x1 + (-g_hn)) + g_en;
            g[h] = (h1 + h2) + g_hn * p[beta];
        } else {
            gx = (-g_hn) + g_en;
            g[h] = g_hn * p[beta];
        }
        g[e] = g_en * p[alpha];
        g[v] = R(0);  // the voltage reaches the next step only through a detached comparison
        return gx;
    }
};

// The output is the state itself, so its gradient gathers the output's part and the next step's
// two parts in that order: the carry holds the second.
struct SynapseFilter {
    enum { rate, NP };
    enum { y, NS };
    static constexpr bool EXP = false;

    template <typename C, typename R>
    static R forward(const R* p, R* s, R x, R) {
        const R yn = (s[y] - ((R(1) - x) * s[y]) * p[rate]) + x;
        s[y] = yn;
        return yn;
    }

    template <typename C, typename R>
    static R backward(const R* p, const R* s, R* g, R x, R go, R, R, R& carry, bool first) {
        const R g_e = (go + g[y]) + carry;
        const R g_b = (-g_e) * p[rate];
        g[y] = g_e;
        carry = g_b * (R(1) - x);
        if (first) g[y] = g[y] + carry;
        return g_e + (-(g_b * s[y]));
    }
};

struct Eif {
    enum { tau, delta_t, theta_rh, v_rest, threshold, v_reset, inv_tau, inv_delta_t, NP };
    enum { v, NS };
    static constexpr bool EXP = true;

    template <typename C, typename R>
    static R exp_arg(const R* p, const R* s) {
        return divide<C>(s[v] - p[theta_rh], p[delta_t], p[inv_delta_t]);
    }

    template <typename C, typename R>
    static R forward(const R* p, R* s, R x, R ex) {
        constexpr C c{};
        const R vo = s[v];
        const R h = vo + divide<C>(((x + p[v_rest]) - vo) + p[delta_t] * ex, p[tau], p[inv_tau]);
        const R sp = fire(c, h - p[threshold]);
        s[v] = c.reset == 0 ? (sp > R(0) ? p[v_reset] : h) : h - p[threshold] * sp;
        return sp;
    }

    template <typename C, typename R>
    static R backward(const R* p, const R* s, R* g, R x, R go, R ex, R slope, R&, bool) {
        constexpr C c{};
        const R vo = s[v];
        const R h = vo + divide<C>(((x + p[v_rest]) - vo) + p[delta_t] * ex, p[tau], p[inv_tau]);
        const R z = h - p[threshold];
        const R sp = fire(c, z);
        R g_s = go;
        R g_h = g[v];
        if (c.reset == 1) g_s = g_s + (-g[v]) * p[threshold];
        else g_h = sp > R(0) ? R(0) : g_h;
        g_h = g_h + surrogate(g_s, z, slope);
        const R g_drive = divide<C>(g_h, p[tau], p[inv_tau]);
        const R g_a3 = divide<C>((g_drive * p[delta_t]) * ex, p[delta_t], p[inv_delta_t]);
        g[v] = (g_h + g_a3) + (-g_drive);
        return g_drive;
    }
};

struct AdEx {
    enum { rate, syn_rate, ada_rate, delta_t, v_leak, threshold, v_reset, coupling, jump,
           inv_delta_t, NP };
    enum { i, v, a, NS };
    static constexpr bool EXP = true;

    template <typename C, typename R>
    static R exp_arg(const R* p, const R* s) {
        return divide<C>(s[v] - p[threshold], p[delta_t], p[inv_delta_t]);
    }

    template <typename C, typename R>
    static R forward(const R* p, R* s, R x, R ex) {
        constexpr C c{};
        const R vo = s[v], ao = s[a];
        const R jj = s[i] + x;
        const R vn = vo + p[rate] * ((((p[v_leak] - vo) + p[delta_t] * ex) + jj) - ao);
        const R inew = jj + (-p[syn_rate]) * jj;
        const R an = ao + p[ada_rate] * (p[coupling] * (vo - p[v_leak]) - ao);
        const R sp = fire(c, vn - p[threshold]);
        s[i] = inew;
        s[v] = sp > R(0) ? p[v_reset] : vn;
        s[a] = an + p[jump] * sp;
        return sp;
    }

    template <typename C, typename R>
    static R backward(const R* p, const R* s, R* g, R x, R go, R ex, R slope, R&, bool) {
        constexpr C c{};
        const R vo = s[v], ao = s[a];
        const R jj = s[i] + x;
        const R vn = vo + p[rate] * ((((p[v_leak] - vo) + p[delta_t] * ex) + jj) - ao);
        const R z = vn - p[threshold];
        const R sp = fire(c, z);
        const R g_s = go + g[a] * p[jump];
        const R g_vn = (sp > R(0) ? R(0) : g[v]) + surrogate(g_s, z, slope);
        const R g_g3 = g[a] * p[ada_rate];
        const R g_f7 = g_vn * p[rate];
        const R g_j = (g[i] + g[i] * (-p[syn_rate])) + g_f7;
        const R g_f1 = divide<C>((g_f7 * p[delta_t]) * ex, p[delta_t], p[inv_delta_t]);
        g[a] = (g[a] + (-g_g3)) + (-g_f7);
        g[v] = (((g_g3 * p[coupling]) + g_vn) + (-g_f7)) + g_f1;
        g[i] = g_j;
        return g_j;
    }
};

// -- drivers -------------------------------------------------------------------------------------

const int MAX_STATE = 4, MAX_PARAMS = 12;

// Forward over T steps. x, out: [T, M]; state: ns pointers to [M], updated in place; saved
// (null, or ns pointers to [T, M]): the state before each step, for the backward pass; exp:
// whether the family takes an exponential.
template <typename R, typename F>
void forward(F step, bool exp, const Exp& e, int threads, int ns, int np,
             const void* const* q, int64_t T, int64_t M, int64_t K, const R* x, R* out,
             R* const* state, R* const* saved) {
    spans(threads, M, ns + 2 * exp, sizeof(R), [&](int64_t lo, int64_t hi) {
        std::vector<R> scratch(exp ? 2 * (hi - lo) : 0);
        R *args = scratch.data(), *ex = args + (hi - lo);
        // step t over the span, piece by piece; first (before step 0) the exponent's arguments
        auto one_step = [&](int64_t t, bool first) {
            pieces(lo, hi, K, [&](int64_t a, int64_t b, int64_t k0) {
                const R* p[MAX_PARAMS];
                R* s[MAX_STATE];
                for (int k = 0; k < np; ++k) p[k] = (const R*)q[k] + k0;
                for (int k = 0; k < ns; ++k) s[k] = state[k] + a;
                step(Step<R>{b - a, p, s, x + t * M + a, out + t * M + a,
                             exp ? args + (a - lo) : nullptr,
                             exp && !first ? ex + (a - lo) : nullptr});
            });
        };
        if (exp) one_step(0, true);
        for (int64_t t = 0; t < T; ++t) {
            if (saved)
                for (int k = 0; k < ns; ++k)
                    std::memcpy(saved[k] + t * M + lo, state[k] + lo, (hi - lo) * sizeof(R));
            if (exp) vexp(e, args, ex, hi - lo);
            one_step(t, false);
        }
    });
}

// Backward over T steps, in reverse. gout, gx: [T, M], but gout_step, the distance between
// gout's steps, is 0 where every step has the same gradient (out.sum()'s: one [M] array); saved:
// the forward's; g: ns pointers to [M], the gradients with respect to the final state in, to the
// initial state out.
template <typename R, typename F>
void backward(F step, bool exp, const Exp& e, int threads, int ns, int np,
              const void* const* q, int64_t T, int64_t M, int64_t K, const R* x, const R* gout,
              int64_t gout_step, R* const* saved, R* const* g, R* gx, R slope) {
    spans(threads, M, 2 * ns + 1 + 2 * exp, sizeof(R), [&](int64_t lo, int64_t hi) {
        std::vector<R> scratch((1 + 2 * exp) * (hi - lo), R(0));
        R *carry = scratch.data(), *args = carry + (hi - lo), *ex = args + (hi - lo);
        auto one_step = [&](int64_t t, bool arguments) {
            pieces(lo, hi, K, [&](int64_t a, int64_t b, int64_t k0) {
                const R* p[MAX_PARAMS];
                const R* sv[MAX_STATE];
                R* gs[MAX_STATE];
                for (int k = 0; k < np; ++k) p[k] = (const R*)q[k] + k0;
                for (int k = 0; k < ns; ++k) {
                    sv[k] = saved[k] + t * M + a;
                    gs[k] = g[k] + a;
                }
                step(Back<R>{b - a, p, sv, x + t * M + a, gout + t * gout_step + a,
                             gx + t * M + a, gs, arguments ? args + (a - lo) : nullptr,
                             exp ? ex + (a - lo) : nullptr, carry + (a - lo), slope, t == 0});
            });
        };
        for (int64_t t = T - 1; t >= 0; --t) {
            if (exp) {
                one_step(t, true);
                vexp(e, args, ex, hi - lo);
            }
            one_step(t, false);
        }
    });
}


// Calls f.operator()<C>() with the Fixed type of c; RESETS, ORDERS, DIVIDES: whether the family
// reads the reset, the current order and the reciprocal flag (else one instance serves all).
template <bool RESETS, bool ORDERS, bool DIVIDES, typename F>
void with_conf(const Conf& c, F&& f) {
    auto inclusive = [&]<bool I>() {
        auto reset = [&]<int S>() {
            auto order = [&]<bool O>() {
                auto reciprocal = [&]<bool D>() {
                    if (c.uniform) f.template operator()<Fixed<I, S, O, D, true>>();
                    else f.template operator()<Fixed<I, S, O, D, false>>();
                };
                if constexpr (DIVIDES) {
                    if (c.reciprocal) { reciprocal.template operator()<true>(); return; }
                }
                reciprocal.template operator()<false>();
            };
            if constexpr (ORDERS) {
                if (!c.order_new) { order.template operator()<false>(); return; }
            }
            order.template operator()<true>();
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

// Calls f(forward, backward, exp, states, params) with the step functions of the family numbered
// family (Spec.index in hub/kernels/families.py) for c.
template <typename R, typename F>
bool with_family(int family, const Conf& c, F&& f) {
    auto call = [&]<typename Family, bool RESETS, bool ORDERS, bool DIVIDES>() {
        with_conf<RESETS, ORDERS, DIVIDES>(c, [&]<typename C>() {
            f(forward_step<R, Family, C>, backward_step<R, Family, C>, Family::EXP,
              int(Family::NS), int(Family::NP));
        });
        return true;
    };
    switch (family) {
        case 0: return call.template operator()<Alif, true, true, false>();
        case 1: return call.template operator()<Izhikevich, false, false, false>();
        case 2: return call.template operator()<Qif, true, false, true>();
        case 3: return call.template operator()<AlphaLif, true, false, false>();
        case 4: return call.template operator()<SynapseFilter, false, false, false>();
        case 5: return call.template operator()<Eif, true, false, true>();
        case 6: return call.template operator()<AdEx, false, false, true>();
    }
    return false;
}

template <typename R>
int run_forward(int family, const int32_t* conf, const Exp* e, int threads, const void* const* q,
                int64_t T, int64_t M, int64_t K, const void* x, void* out, void* const* state,
                void* const* saved) {
    const Conf c{conf[0], conf[1], conf[2], conf[3], conf[4]};
    const bool ok = with_family<R>(family, c, [&](auto fwd, auto, bool exp, int ns, int np) {
        forward<R>(fwd, exp, *e, threads, ns, np, q, T, M, K, (const R*)x, (R*)out,
                   (R* const*)state, (R* const*)saved);
    });
    return ok ? 0 : 2;
}

template <typename R>
int run_backward(int family, const int32_t* conf, const Exp* e, int threads,
                 const void* const* q, int64_t T, int64_t M, int64_t K, const void* x,
                 const void* gout, int64_t gout_step, void* const* saved, void* const* g,
                 void* gx, double slope) {
    const Conf c{conf[0], conf[1], conf[2], conf[3], conf[4]};
    const bool ok = with_family<R>(family, c, [&](auto, auto bwd, bool exp, int ns, int np) {
        backward<R>(bwd, exp, *e, threads, ns, np, q, T, M, K, (const R*)x, (const R*)gout,
                    gout_step, (R* const*)saved, (R* const*)g, (R*)gx, R(slope));
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
    spans(threads, M, 4, sizeof(int64_t), [&](int64_t lo, int64_t hi) {
        for (int64_t t = 0; t < T; ++t) {
            pieces(lo, hi, K, [&](int64_t a, int64_t b, int64_t k0) {
                for (int64_t m = a; m < b; ++m) {
                    const int64_t k = k0 + (m - a);
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
    });
}

}  // namespace

extern "C" {

// dtype: 0 float32, 1 float64. conf: five ints (Conf); q: the family's parameter pointers, K
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
                        const void* gout, int64_t gout_step, void* const* saved,
                        void* const* g, void* gx, double slope) {
    if (dtype == 0) return run_backward<float>(family, conf, e, threads, q, T, M, K, x, gout,
                                               gout_step, saved, g, gx, slope);
    if (dtype == 1) return run_backward<double>(family, conf, e, threads, q, T, M, K, x, gout,
                                                gout_step, saved, g, gx, slope);
    return 1;
}

// dtype of out: 0 float32, 1 float64. conf: the first three ints of Conf; q, drive: as
// alif_fixed above.
int hub_alif_fixed_forward(int dtype, const int32_t* conf, int threads, const int64_t* const* q,
                           int64_t T, int64_t M, int64_t K, const void* drive, void* out,
                           int64_t* i, int64_t* v, int64_t* theta, int64_t* r) {
    const Conf c{conf[0], conf[1], conf[2], 0, 0};
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
