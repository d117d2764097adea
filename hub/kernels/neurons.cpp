// Fused multi-step CPU kernels for the canonical neuron family (hub/neurons.py).
//
// One call runs a neuron layer over all T steps: the state of a span of neurons stays in cache
// while the span walks through time, forward and backward, instead of one pass over memory per
// operation per step.
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
#include <limits>
#include <type_traits>
#include <vector>

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
    int32_t uniform;         // 0 per neuron, UNIFORM_ALL or UNIFORM_LEVELS (below)
    double slope;            // of the fast-sigmoid surrogate
};

// Per-neuron parameters, each K values (the neuron shape, broadcast); a neuron type's unused ones
// point at zeros.
template <typename R>
struct Params {
    const R *beta, *gain, *v_leak, *alpha, *current_gain, *threshold, *v_reset, *amplitude;
};

// Which parameters have one value for all neurons (Conf.uniform): every one, or the levels
// v_leak, v_reset and amplitude (the usual case where decays, gains or thresholds are per neuron).
const int32_t UNIFORM_ALL = 1, UNIFORM_LEVELS = 2;

// Neurons per block: the unit of the loops, whose parameters stay in L1. The common cases walk
// spans of blocks through time (spans below), forward and backward; the general loops (readouts)
// walk single blocks, their state in L2.
const int64_t BLOCK = 1024;
// After a step whose multi-spike counts needed the division (multi_single), a block divides for
// every neuron for this many steps: redoing a step costs more than dividing in the first place.
const int32_t MULTI_WAIT = 8;

// std::floor, in operations GCC vectorises (it leaves std::floor scalar): truncation through an
// integer where that is exact, and every number at least 1/epsilon in magnitude (also an infinity
// or NaN) is its own floor. Only the sign of a zero may differ, which multi_count cannot see.
template <typename R>
inline R floor_exact(R q) {
    using I = std::conditional_t<sizeof(R) == 4, int32_t, int64_t>;
    const R t = R(I(q));
    const R f = t > q ? t - R(1) : t;
    return std::fabs(q) < R(1) / std::numeric_limits<R>::epsilon() ? f : q;
}

// The spike count of spike_mode="multi", with the same operations as Neuron.step.
template <typename R>
inline R multi_count(R v, R th, R s, bool inclusive) {
    R n = floor_exact(v / th);
    n = (n * th > v) ? n - R(1) : n;
    n = ((n + R(1)) * th <= v) ? n + R(1) : n;
    n = (!inclusive && n * th == v) ? n - R(1) : n;
    R m = (n < R(1)) ? R(1) : n;  // torch.clamp(n, min=1), NaN stays NaN
    return s + (m * s - s);
}

// Whether multi_count(v, th, s) is s itself (bit for bit, for either spike s, +0 or 1), so that
// the division can be skipped: where th > 0 and v < th + th (false for a NaN). Then the quotient
// v / th is below 2 and no NaN, so its floor n is at most 2, a 2 is taken back by the first test
// (2 * th > v; a doubling is exact or infinite), and the second never adds one: the final n is at
// most 1, so m = 1 when s = 1 and m is a finite m >= 1 when s = +0, and s + (m * s - s) is s.
// Negative, zero and NaN thresholds, infinities and NaN voltages take multi_count.
template <typename R>
inline bool multi_single(R v, R th) { return (th > R(0)) & (v < th + th); }

// z > 0, or with inclusive z >= 0: a runtime choice in operations that vectorise, so that the
// comparison does not double the specialisations below.
template <typename R>
inline bool spikes(R z, bool inclusive) { return (z > R(0)) | (inclusive & (z == R(0))); }

template <typename R>
inline R integrate(const Conf& c, const Params<R>& p, int64_t k, R v, R u) {
    if (c.leaky) return (p.v_leak[k] + p.beta[k] * (v - p.v_leak[k])) + p.gain[k] * u;
    return v + p.gain[k] * u;
}

// Block b of the neurons [0, M) in rows of K: the neurons [lo, hi), at most BLOCK of them within
// one row, so that within a block the index k of neuron m is k0 + (m - lo), no modulo in the inner
// loops.
struct Block {
    int64_t lo, hi, k0;
};
inline Block block_at(int64_t b, int64_t K) {
    const int64_t per_row = (K + BLOCK - 1) / BLOCK, k0 = (b % per_row) * BLOCK;
    const int64_t row = b / per_row;
    return {row * K + k0, row * K + std::min(K, k0 + BLOCK), k0};
}
inline int64_t block_count(int64_t M, int64_t K) { return (M / K) * ((K + BLOCK - 1) / BLOCK); }

// Runs fn(lo, hi, k0) over the blocks, in parallel.
template <typename F>
void blocks(int threads, int64_t M, int64_t K, F fn) {
    const int64_t total = block_count(M, K);
    // dynamic: on a shared machine one thread may be slowed down, the other takes over its blocks
#pragma omp parallel for num_threads(threads) schedule(dynamic, 4)
    for (int64_t b = 0; b < total; ++b) {
        const Block k = block_at(b, K);
        fn(k.lo, k.hi, k.k0);
    }
}

// Runs fn(b0, b1) over spans of consecutive blocks [b0, b1) that walk through time together, in
// parallel: each step then reads its input and writes its output over a span as one contiguous
// run, where one block's run of 4 KiB per step leaves the hardware prefetcher too little to follow
// and the loop waits on memory. A span's state (state_bytes per neuron) is about SPAN_BYTES, so
// that it stays in the core's caches from step to step. Measured on one LIF layer of 131072
// neurons (T=100, one thread), forward: one block at a time 10.2 ms, spans of 256 KiB 8.1 ms,
// 1 MiB 6.5 ms, 2 MiB 6.5 ms (CubaLIF and a refractory period, with more state: 2 MiB best);
// on four times the neurons, 1 MiB to 16 MiB all took the same time.
const int64_t SPAN_BYTES = 2 << 20;
template <typename F>
void spans(int threads, int64_t M, int64_t K, int64_t state_bytes, F fn) {
    const int64_t total = block_count(M, K);
    int64_t span = std::max<int64_t>(1, SPAN_BYTES / (BLOCK * state_bytes));
    if (threads > 1)  // a few spans per thread, for the dynamic schedule to balance
        span = std::min(span, std::max<int64_t>(1, (total + 4 * threads - 1) / (4 * threads)));
    const int64_t count = (total + span - 1) / span;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int64_t b = 0; b < count; ++b) fn(b * span, std::min(total, (b + 1) * span));
}

// The common cases, specialised so that the compiler can vectorise them: every convention except
// a current without a leak, each spike mode (MODE 0 binary, 1 multi, 2 graded), with or without
// a refractory period (REFR; reset in the same step then), the reset in the same step or (NEXT,
// snnTorch's default) in the next. The same operations as general_step and general_back_step
// below, which remain for the rest. One call is one time step of one block, kept out of line,
// where GCC vectorises it.
// A parameter of neuron j: where it has the same value for every neuron the first, which the
// compiler keeps in a register instead of loading a value per neuron per step. U is Conf.uniform;
// PL is for the levels (v_leak, v_reset, amplitude), PK for the rest.
#define PK(a) (U == UNIFORM_ALL ? (a)[0] : (a)[j])
#define PL(a) (U != 0 ? (a)[0] : (a)[j])

// rb: the refractory counters, rest the steps of a refractory period. SAVE: keep what the backward
// pass needs, the voltage in save and (REFR) in flags bit 0 spiked, bit 1 resting. A template
// argument, not a test in the loop: GCC unswitches only short loops itself, and the stores to a
// scratch block instead cost a tenth of the time of a step without a backward pass.
// A multi-spike step with SINGLE takes each count to be the spike, as multi_single allows almost
// always, and if it does not allow it for some neuron, counts again from the voltage kept in pre;
// without SINGLE it divides for every neuron. Returns whether some count needed the division
// (without SINGLE an estimate: whether some count differs from the spike).
template <typename R, bool LEAKY, bool CURRENT, bool ORDER_NEW, int RESET, bool NEXT, int U,
          int MODE, bool REFR, bool SAVE, bool SINGLE = false>
__attribute__((noinline)) bool fast_step(
        int64_t n, const bool inclusive, const R* __restrict xt, R* __restrict ot, R* __restrict vb,
        R* __restrict ib, R* __restrict sb, int32_t* __restrict rb, int32_t rest,
        R* __restrict save, uint8_t* __restrict flags, const R* __restrict beta,
        const R* __restrict gain, const R* __restrict vl, const R* __restrict alpha,
        const R* __restrict cg, const R* __restrict th, const R* __restrict vr,
        const R* __restrict amp) {
    constexpr bool MULTI = MODE == 1;
    alignas(64) R scratch[MULTI && SINGLE && !SAVE ? BLOCK : 1];
    R* __restrict pre = SAVE ? save : scratch;
    // an int, not a bool: GCC vectorises a reduction only in lanes as wide as the floats'
    std::conditional_t<sizeof(R) == 4, int32_t, int64_t> divide = 0;
    for (int64_t j = 0; j < n; ++j) {
        // read before any select: a load inside one is not if-converted, so not vectorised
        const R reset_to = PL(vr);
        const R xj = xt[j];
        R u = xj;
        if (CURRENT) {
            const R inew = PK(alpha) * ib[j] + PK(cg) * xj;
            u = ORDER_NEW ? inew : ib[j];
            ib[j] = inew;
        }
        const R held = vb[j];
        R vv = held;
        if (NEXT && RESET == 0) vv = sb[j] > R(0) ? reset_to : vv;
        vv = LEAKY ? (PL(vl) + PK(beta) * (vv - PL(vl))) + PK(gain) * u : vv + PK(gain) * u;
        if (NEXT && RESET == 1) vv = vv - PK(th) * sb[j];
        const int32_t rj = REFR ? rb[j] : 0;
        const bool resting = REFR && rj > 0;
        if (REFR) vv = resting ? held : vv;  // held while resting
        if (SAVE) save[j] = vv;
        const R z = vv - PK(th);
        R sp = spikes(z, inclusive) ? R(1) : R(0);
        // times 0 while resting, as the reference; in integers, where GCC if-converts it
        if (REFR) sp = sp * R(1 - std::clamp(rj, 0, 1));
        // a multi-spike's count; the spike state is the count when the reset is next step's
        if (MULTI && SINGLE) divide |= !multi_single(vv, PK(th));
        if (MULTI && SINGLE && !SAVE) pre[j] = vv;
        const R count = MULTI && !SINGLE ? multi_count(vv, PK(th), sp, inclusive) : sp;
        if (MULTI && !SINGLE) divide |= count != sp;
        ot[j] = MODE == 2 ? (count * vv) * PL(amp) : count * PL(amp);
        sb[j] = NEXT ? count : sp;
        if (REFR && SAVE) flags[j] = uint8_t((sp > R(0)) | (resting << 1));
        if (!NEXT && RESET == 1) vv = vv - PK(th) * count;
        else if (!NEXT && RESET == 0) vv = sp > R(0) ? reset_to : vv;
        vb[j] = vv;
        if (REFR) rb[j] = sp > R(0) ? rest : std::max(rj - 1, 0);
    }
    if (MULTI && SINGLE && divide) {
        // the exact counts, from what the loop left: sb holds the spike, vb the voltage after a
        // reset by the spike (only a subtraction depends on the count)
        for (int64_t j = 0; j < n; ++j) {
            const R vv = pre[j];
            const R count = multi_count(vv, PK(th), sb[j], inclusive);
            ot[j] = count * PL(amp);
            if (NEXT) sb[j] = count;
            if (!NEXT && RESET == 1) vb[j] = vv - PK(th) * count;
        }
    }
    return divide != 0;
}

// prev: the previous step's saved voltage, read for a next-step zero reset, but at the FIRST step
// s0 holds the previous spike; flags: this step's saved flags (REFR only). A multi-spike's
// backward is that of a binary one: the count beyond the first spike carries no gradient.
template <typename R, bool LEAKY, bool CURRENT, bool ORDER_NEW, int RESET, bool NEXT, int U,
          bool GRADED, bool REFR, bool FIRST>
__attribute__((noinline)) void fast_back_step(
        int64_t n, const bool inclusive, const R* __restrict go, const R* __restrict saved,
        const uint8_t* __restrict flags, R* __restrict gxt, R* __restrict gv, R* __restrict gi,
        R* __restrict gs, const R* __restrict beta, const R* __restrict gain,
        const R* __restrict alpha, const R* __restrict cg, const R* __restrict th,
        const R* __restrict amp, const R slope, const R* __restrict prev,
        const R* __restrict s0) {
    for (int64_t j = 0; j < n; ++j) {
        const R vv = saved[j];
        const R z = vv - PK(th);
        const uint8_t f = REFR ? flags[j] : 0;
        const bool resting = REFR && (f & 2);
        const R sp = (REFR ? bool(f & 1) : spikes(z, inclusive)) ? R(1) : R(0);
        const R g_o = go[j] * PK(amp);
        R g_count = GRADED ? g_o * vv : g_o;
        R g_reset = gv[j];
        if (!NEXT && RESET == 1) g_count = g_count + (-gv[j]) * PK(th);
        else if (!NEXT && RESET == 0) g_reset = sp > R(0) ? R(0) : g_reset;
        g_count = g_count + gs[j];
        if (REFR) g_count = g_count * (resting ? R(0) : R(1));
        R den = R(1) + slope * std::fabs(z);
        den = den * den;
        g_count = g_count / den;
        R g_int = GRADED ? (g_reset + g_o * sp) + g_count : g_reset + g_count;
        const R g_hold = resting ? g_int : R(0);
        if (REFR) g_int = resting ? R(0) : g_int;
        gs[j] = (NEXT && RESET == 1) ? (-g_int) * PK(th) : R(0);
        const R g_u = g_int * PK(gain);
        R g_v = LEAKY ? g_int * PK(beta) : g_int;
        if (NEXT && RESET == 0) {
            const R thj = PK(th);
            const bool before = FIRST ? s0[j] > R(0) : spikes(prev[j] - thj, inclusive);
            g_v = before ? R(0) : g_v;
        }
        if (REFR) g_v = g_v + g_hold;
        gv[j] = g_v;
        if (CURRENT) {
            const R g_new = ORDER_NEW ? gi[j] + g_u : gi[j];
            gxt[j] = g_new * PK(cg);
            gi[j] = ORDER_NEW ? g_new * PK(alpha) : g_new * PK(alpha) + g_u;
        } else {
            gxt[j] = g_u;
        }
    }
}

// Calls f.operator()<LEAKY, CURRENT, ORDER_NEW, RESET, NEXT, U, MODE, REFR>() for c if c is a
// case of fast_step (or, BACKWARD, of fast_back_step, where a multi-spike is MODE 0 and only
// UNIFORM_ALL is told apart: the backward pass reads no level but the amplitude); returns whether
// it did. Only the combinations that can occur are instantiated.
template <bool BACKWARD, typename F>
bool dispatch(const Conf& c, F&& f) {
    if (!c.spiking || (c.current && !c.leaky) || (c.refractory && c.timing_next)) return false;
    const int mode = BACKWARD && c.mode == 1 ? 0 : c.mode;
    // without a reset the timing only says which spike state a multi-spike keeps
    const bool next = c.timing_next && (c.reset != 2 || mode == 1);
    auto modes = [&]<bool LEAKY, bool CURRENT, bool ORDER_NEW, int RESET, bool NEXT, int U>() {
        auto call = [&]<int MODE, bool REFR>() {
            if constexpr (!(REFR && NEXT) && !(RESET == 2 && NEXT && MODE != 1)
                          && !(BACKWARD && MODE == 1))
                f.template operator()<LEAKY, CURRENT, ORDER_NEW, RESET, NEXT, U, MODE, REFR>();
        };
        auto refr = [&]<int MODE>() {
            if (c.refractory) call.template operator()<MODE, true>();
            else call.template operator()<MODE, false>();
        };
        if (mode == 1) refr.template operator()<1>();
        else if (mode == 2) refr.template operator()<2>();
        else refr.template operator()<0>();
    };
    auto uniform = [&]<bool LEAKY, bool CURRENT, bool ORDER_NEW, int RESET, bool NEXT>() {
        if (c.uniform == UNIFORM_ALL)
            modes.template operator()<LEAKY, CURRENT, ORDER_NEW, RESET, NEXT, UNIFORM_ALL>();
        else if (c.uniform == UNIFORM_LEVELS && !BACKWARD)
            modes.template operator()<LEAKY, CURRENT, ORDER_NEW, RESET, NEXT, UNIFORM_LEVELS>();
        else
            modes.template operator()<LEAKY, CURRENT, ORDER_NEW, RESET, NEXT, 0>();
    };
    auto reset = [&]<bool LEAKY, bool CURRENT, bool ORDER_NEW>() {
        if (c.reset == 0 && next) uniform.template operator()<LEAKY, CURRENT, ORDER_NEW, 0, true>();
        else if (c.reset == 0) uniform.template operator()<LEAKY, CURRENT, ORDER_NEW, 0, false>();
        else if (c.reset == 1 && next)
            uniform.template operator()<LEAKY, CURRENT, ORDER_NEW, 1, true>();
        else if (c.reset == 1) uniform.template operator()<LEAKY, CURRENT, ORDER_NEW, 1, false>();
        else if (next) uniform.template operator()<LEAKY, CURRENT, ORDER_NEW, 2, true>();
        else uniform.template operator()<LEAKY, CURRENT, ORDER_NEW, 2, false>();
    };
    if (c.current && c.order_new) reset.template operator()<true, true, true>();
    else if (c.current) reset.template operator()<true, true, false>();
    else if (c.leaky) reset.template operator()<true, false, false>();
    else reset.template operator()<false, false, false>();
    return true;
}

template <typename R>
bool fast_forward(const Conf& c, const Params<R>& p, int64_t T, int64_t M, int64_t K,
                  const R* x, R* out, R* v, R* i, R* s, int32_t* r, R* save_v,
                  uint8_t* save_f) {
    return dispatch<false>(c, [&]<bool LEAKY, bool CURRENT, bool ORDER_NEW, int RESET, bool NEXT,
                                  int UNIFORM, int MODE, bool REFR>() {
        auto steps = [&]<bool SAVE>() {
            // Only float32 forward passes without a backward one (inference, as the benchmarks)
            // have loops of their own for shared levels and for multi-spike counts without the
            // division: for every dtype and pass, each set would add about half again to the
            // time this file takes to compile. Elsewhere shared levels are loaded as per-neuron
            // ones, and every count divides.
            constexpr bool LEAN = std::is_same_v<R, float> && !SAVE;
            constexpr int U = !LEAN && UNIFORM == UNIFORM_LEVELS ? 0 : UNIFORM;
            // the state per neuron: voltage, spike, current, refractory counter
            const int64_t state_bytes = (2 + CURRENT) * sizeof(R) + (REFR ? 4 : 0);
            spans(c.threads, M, K, state_bytes, [&](int64_t b0, int64_t b1) {
                auto step = [&]<bool SINGLE>(int64_t b, int64_t t) {
                    const auto [lo, hi, k0] = block_at(b, K);
                    return fast_step<R, LEAKY, CURRENT, ORDER_NEW, RESET, NEXT, U, MODE, REFR,
                                     SAVE, SINGLE>(
                        hi - lo, c.inclusive, x + t * M + lo, out + t * M + lo, v + lo, i + lo,
                        s + lo, r + lo, c.refractory, SAVE ? save_v + t * M + lo : nullptr,
                        SAVE && REFR ? save_f + t * M + lo : nullptr, p.beta + k0, p.gain + k0,
                        p.v_leak + k0, p.alpha + k0, p.current_gain + k0, p.threshold + k0,
                        p.v_reset + k0, p.amplitude + k0);
                };
                if constexpr (MODE == 1 && LEAN) {
                    // per block, the steps left to divide for every neuron (MULTI_WAIT)
                    std::vector<int32_t> wait(b1 - b0, 0);
                    for (int64_t t = 0; t < T; ++t)
                        for (int64_t b = b0; b < b1; ++b) {
                            int32_t& w = wait[b - b0];
                            const bool divided = w ? step.template operator()<false>(b, t)
                                                   : step.template operator()<true>(b, t);
                            w = divided ? MULTI_WAIT : std::max(w - 1, 0);
                        }
                } else {
                    for (int64_t t = 0; t < T; ++t)
                        for (int64_t b = b0; b < b1; ++b) step.template operator()<false>(b, t);
                }
            });
        };
        if (save_v) steps.template operator()<true>();
        else steps.template operator()<false>();
    });
}

template <typename R>
bool fast_backward(const Conf& c, const Params<R>& p, int64_t T, int64_t M, int64_t K,
                   const R* gout, int64_t gout_step, const R* save_v, const uint8_t* save_f,
                   const R* s0, R* gv, R* gi, R* gs, R* gx) {
    return dispatch<true>(c, [&]<bool LEAKY, bool CURRENT, bool ORDER_NEW, int RESET, bool NEXT,
                                 int U, int MODE, bool REFR>() {
        // the state per neuron: the gradients of voltage, spike and current
        const int64_t state_bytes = (2 + CURRENT) * sizeof(R);
        spans(c.threads, M, K, state_bytes, [&](int64_t b0, int64_t b1) {
            auto step = [&]<bool FIRST>(int64_t b, int64_t t) {
                const auto [lo, hi, k0] = block_at(b, K);
                fast_back_step<R, LEAKY, CURRENT, ORDER_NEW, RESET, NEXT, U, MODE == 2, REFR,
                               FIRST>(
                    hi - lo, c.inclusive, gout + t * gout_step + lo, save_v + t * M + lo,
                    REFR ? save_f + t * M + lo : nullptr, gx + t * M + lo, gv + lo, gi + lo,
                    gs + lo, p.beta + k0, p.gain + k0, p.alpha + k0, p.current_gain + k0,
                    p.threshold + k0, p.amplitude + k0, R(c.slope),
                    t > 0 ? save_v + (t - 1) * M + lo : nullptr, s0 + lo);
            };
            // only a next-step zero reset reads the previous spike
            constexpr bool READS = NEXT && RESET == 0;
            for (int64_t t = T - 1; t >= (READS ? 1 : 0); --t)
                for (int64_t b = b0; b < b1; ++b) step.template operator()<false>(b, t);
            if constexpr (READS)
                for (int64_t b = b0; b < b1; ++b) step.template operator()<true>(b, 0);
        });
    });
}

// The general case, in phases: the readouts, and a current without a leak (no built-in type has
// one). One call is one time step of one block of neurons; each phase is one plain loop over the
// block, and which phases run (the conventions) is decided outside the loops, so that every loop
// vectorises and the block's temporaries stay in L1. Each neuron still goes through the operations
// of Neuron.step in their order, with one rounding each: the phases only change which neuron is
// worked on when. t1 (bool) and w (BLOCK values each) are scratch.
#define EACH for (int64_t j = 0; j < n; ++j)

template <typename R>
__attribute__((noinline)) void general_step(
        const Conf& c, int64_t n, const R* __restrict xt, R* __restrict ot, R* __restrict vs,
        R* __restrict is, R* __restrict ss, int32_t* __restrict rs, R* __restrict sv,
        uint8_t* __restrict sf, const R* __restrict beta, const R* __restrict gain,
        const R* __restrict vl, const R* __restrict alpha, const R* __restrict cg,
        const R* __restrict th, const R* __restrict vr, const R* __restrict amp,
        R* __restrict u, R* __restrict vv, R* __restrict sp, R* __restrict cnt) {
    const R* in = xt;
    if (c.current) {  // 1. the current, and which current drives the voltage
        if (c.order_new) EACH { const R inew = alpha[j] * is[j] + cg[j] * xt[j]; is[j] = inew;
                                u[j] = inew; }
        else EACH { const R inew = alpha[j] * is[j] + cg[j] * xt[j]; u[j] = is[j];
                    is[j] = inew; }
        in = u;
    }
    // 2-3. integration, from v_reset where the previous spike resets to zero in this step
    const bool pre_zero = c.spiking && c.timing_next && c.reset == 0;
    if (c.leaky && pre_zero)
        EACH { const R a = ss[j] > R(0) ? vr[j] : vs[j];
               vv[j] = (vl[j] + beta[j] * (a - vl[j])) + gain[j] * in[j]; }
    else if (c.leaky) EACH vv[j] = (vl[j] + beta[j] * (vs[j] - vl[j])) + gain[j] * in[j];
    else if (pre_zero) EACH vv[j] = (ss[j] > R(0) ? vr[j] : vs[j]) + gain[j] * in[j];
    else EACH vv[j] = vs[j] + gain[j] * in[j];
    if (!c.spiking) {
        EACH { vs[j] = vv[j]; ot[j] = vv[j]; }
        return;
    }
    if (c.timing_next && c.reset == 1) EACH vv[j] = vv[j] - th[j] * ss[j];  // 4.
    if (c.refractory) EACH vv[j] = rs[j] > 0 ? vs[j] : vv[j];  // 7. held while resting
    // 5. the spike, and the count of a multi-spike
    if (c.inclusive) EACH sp[j] = (vv[j] - th[j] >= R(0)) ? R(1) : R(0);
    else EACH sp[j] = (vv[j] - th[j] > R(0)) ? R(1) : R(0);
    if (c.refractory) EACH sp[j] = sp[j] * (rs[j] > 0 ? R(0) : R(1));
    const R* count = sp;
    if (c.mode == 1) {
        EACH cnt[j] = multi_count(vv[j], th[j], sp[j], bool(c.inclusive));
        count = cnt;
    }
    if (c.mode == 2) EACH ot[j] = (count[j] * vv[j]) * amp[j];
    else EACH ot[j] = count[j] * amp[j];
    if (c.timing_next) EACH ss[j] = count[j];
    else EACH ss[j] = sp[j];
    if (sv) EACH sv[j] = vv[j];
    if (sf) EACH sf[j] = uint8_t((sp[j] > R(0)) | ((rs[j] > 0) << 1));
    // 6. reset in the same step
    if (!c.timing_next && c.reset == 1) EACH vs[j] = vv[j] - th[j] * count[j];
    else if (!c.timing_next && c.reset == 0) EACH vs[j] = sp[j] > R(0) ? vr[j] : vv[j];
    else EACH vs[j] = vv[j];
    if (c.refractory) {
        const int32_t rest = c.refractory;
        EACH rs[j] = sp[j] > R(0) ? rest : std::max(rs[j] - 1, 0);
    }
}

// Forward over T steps. x, out: [T, M]; v, i, s, r: [M] state, updated in place; save_v and
// save_f ([T, M], may be null) keep what the backward pass needs: the voltage that was compared
// to the threshold, and flags (bit 0 spiked, bit 1 resting), needed with a refractory period only:
// without one the spike follows from the voltage.
template <typename R>
void forward(const Conf& c, const Params<R>& p, int64_t T, int64_t M, int64_t K, const R* x,
             R* out, R* v, R* i, R* s, int32_t* r, R* save_v, uint8_t* save_f) {
    if (fast_forward(c, p, T, M, K, x, out, v, i, s, r, save_v, save_f)) return;
    blocks(c.threads, M, K, [&](int64_t lo, int64_t hi, int64_t k0) {
        alignas(64) R u[BLOCK], vv[BLOCK], sp[BLOCK], cnt[BLOCK];
        for (int64_t t = 0; t < T; ++t)
            general_step<R>(c, hi - lo, x + t * M + lo, out + t * M + lo, v + lo, i + lo, s + lo,
                            r + lo, save_v ? save_v + t * M + lo : nullptr,
                            save_f ? save_f + t * M + lo : nullptr, p.beta + k0, p.gain + k0,
                            p.v_leak + k0, p.alpha + k0, p.current_gain + k0, p.threshold + k0,
                            p.v_reset + k0, p.amplitude + k0, u, vv, sp, cnt);
    });
}

// One step of backward() for one block, in phases as general_step: gv, gi, gs are the state
// gradients of this block, updated in place; sv, sf this step's saved voltage and flags, svp the
// previous step's voltage (null at the first step: then s0 tells the previous spike).
template <typename R>
__attribute__((noinline)) void general_back_step(
        const Conf& c, int64_t n, const R* __restrict go, const R* __restrict sv,
        const uint8_t* __restrict sf, const R* __restrict svp, const R* __restrict s0,
        R* __restrict gxt, R* __restrict gv, R* __restrict gi, R* __restrict gs,
        const R* __restrict beta, const R* __restrict gain, const R* __restrict alpha,
        const R* __restrict cg, const R* __restrict th, const R* __restrict amp, R slope,
        R* __restrict sp, R* __restrict cnt, R* __restrict g_o, R* __restrict g_count,
        R* __restrict g_reset, R* __restrict g_int, R* __restrict g_hold) {
    if (!c.spiking) {
        EACH g_int[j] = go[j] + gv[j];
    } else {
        if (c.refractory) EACH sp[j] = (sf[j] & 1) ? R(1) : R(0);
        else if (c.inclusive) EACH sp[j] = (sv[j] - th[j] >= R(0)) ? R(1) : R(0);
        else EACH sp[j] = (sv[j] - th[j] > R(0)) ? R(1) : R(0);
        const R* count = sp;
        if (c.mode == 1) {
            EACH cnt[j] = multi_count(sv[j], th[j], sp[j], bool(c.inclusive));
            count = cnt;
        }
        EACH g_o[j] = go[j] * amp[j];
        if (c.mode == 2) EACH g_count[j] = g_o[j] * sv[j];
        else EACH g_count[j] = g_o[j];
        if (!c.timing_next && c.reset == 1) {
            EACH { g_count[j] = g_count[j] + (-gv[j]) * th[j]; g_reset[j] = gv[j]; }
        } else if (!c.timing_next && c.reset == 0) {
            EACH g_reset[j] = sp[j] > R(0) ? R(0) : gv[j];
        } else {
            EACH g_reset[j] = gv[j];
        }
        EACH g_count[j] = g_count[j] + gs[j];  // the spike state is the count or the spike
        if (c.refractory) EACH g_count[j] = g_count[j] * ((sf[j] & 2) ? R(0) : R(1));
        // the surrogate: d spike / d z = 1 / (1 + slope |z|)^2
        EACH { R den = R(1) + slope * std::fabs(sv[j] - th[j]); den = den * den;
               g_count[j] = g_count[j] / den; }
        if (c.mode == 2) EACH g_int[j] = (g_reset[j] + g_o[j] * count[j]) + g_count[j];
        else EACH g_int[j] = g_reset[j] + g_count[j];
        if (c.refractory)
            EACH { const bool resting = sf[j] & 2; g_hold[j] = resting ? g_int[j] : R(0);
                   g_int[j] = resting ? R(0) : g_int[j]; }
        if (c.timing_next && c.reset == 1) EACH gs[j] = (-g_int[j]) * th[j];
        else EACH gs[j] = R(0);
    }
    // the gradient into the voltage before this step (g_count is free again: it holds g_u)
    R* g_u = g_count;
    EACH g_u[j] = g_int[j] * gain[j];
    if (c.leaky) EACH gv[j] = g_int[j] * beta[j];
    else EACH gv[j] = g_int[j];
    if (c.spiking && c.timing_next && c.reset == 0) {
        // next timing has no refractory period: the spike follows from the voltage
        if (!svp) EACH gv[j] = s0[j] > R(0) ? R(0) : gv[j];
        else if (c.inclusive) EACH gv[j] = (svp[j] - th[j] >= R(0)) ? R(0) : gv[j];
        else EACH gv[j] = (svp[j] - th[j] > R(0)) ? R(0) : gv[j];
    }
    if (c.spiking && c.refractory) EACH gv[j] = gv[j] + g_hold[j];
    if (c.current) {
        if (c.order_new) EACH { const R g_new = gi[j] + g_u[j]; gxt[j] = g_new * cg[j];
                                gi[j] = g_new * alpha[j]; }
        else EACH { const R g_new = gi[j]; gxt[j] = g_new * cg[j];
                    gi[j] = g_new * alpha[j] + g_u[j]; }
    } else {
        EACH gxt[j] = g_u[j];
    }
}
#undef EACH

// Backward over T steps, in reverse: the gradient of the loss with respect to the input and the
// initial state, given that with respect to the output (gout) and the final state (gv, gi, gs,
// updated in place to the gradient with respect to the initial state). gout_step: the distance
// between gout's steps, M, or 0 where every step has the same gradient (out.sum()'s, a [M]
// array instead of T copies of it). s0: the initial spike state, read only for
// reset_timing="next" with reset="zero".
template <typename R>
void backward(const Conf& c, const Params<R>& p, int64_t T, int64_t M, int64_t K, const R* gout,
              int64_t gout_step, const R* save_v, const uint8_t* save_f, const R* s0, R* gv,
              R* gi, R* gs, R* gx) {
    if (fast_backward(c, p, T, M, K, gout, gout_step, save_v, save_f, s0, gv, gi, gs, gx))
        return;
    blocks(c.threads, M, K, [&](int64_t lo, int64_t hi, int64_t k0) {
        alignas(64) R w[7][BLOCK];
        for (int64_t t = T - 1; t >= 0; --t)
            general_back_step<R>(
                c, hi - lo, gout + t * gout_step + lo, c.spiking ? save_v + t * M + lo : nullptr,
                c.refractory ? save_f + t * M + lo : nullptr,
                c.spiking && t > 0 ? save_v + (t - 1) * M + lo : nullptr, s0 + lo,
                gx + t * M + lo, gv + lo, gi + lo, gs + lo, p.beta + k0, p.gain + k0,
                p.alpha + k0, p.current_gain + k0, p.threshold + k0, p.amplitude + k0,
                R(c.slope), w[0], w[1], w[2], w[3], w[4], w[5], w[6]);
    });
}

template <typename R>
Params<R> params(const void* const* q) {
    return Params<R>{(const R*)q[0], (const R*)q[1], (const R*)q[2], (const R*)q[3],
                     (const R*)q[4], (const R*)q[5], (const R*)q[6], (const R*)q[7]};
}

// Loihi's fixed-point CUBA neuron (hub/loihi.py, LoihiCUBA.step), forward only: its outputs carry
// no gradient. Integer arithmetic, so any order gives the reference's values; the operations are
// still those of the reference, one for one. q: i_decay, v_decay, threshold, bias (K values each).
const int64_t LOIHI_UNITY = 4096, LOIHI_MAX = int64_t(1) << 23;

inline int64_t toward_zero(int64_t p, int bits) {  // sign(p) * (|p| >> bits)
    const int64_t m = (p < 0 ? -p : p) >> bits;
    return p < 0 ? -m : m;
}

template <typename R>
void loihi_forward(const int64_t* const* q, int32_t bias_exp, int32_t refractory, int32_t graded,
                   int32_t threads, int64_t T, int64_t M, int64_t K, const R* x, R* out,
                   int64_t* u, int64_t* v, int64_t* r) {
    blocks(threads, M, K, [&](int64_t lo, int64_t hi, int64_t k0) {
        const int64_t n = hi - lo;
        const int64_t* __restrict idec = q[0] + k0;
        const int64_t* __restrict vdec = q[1] + k0;
        const int64_t* __restrict th = q[2] + k0;
        const int64_t* __restrict bias = q[3] + k0;
        int64_t* __restrict ub = u + lo;
        int64_t* __restrict vb = v + lo;
        int64_t* __restrict rb = refractory ? r + lo : nullptr;
        for (int64_t t = 0; t < T; ++t) {
            const R* __restrict xt = x + t * M + lo;
            R* __restrict ot = out + t * M + lo;
            for (int64_t j = 0; j < n; ++j) {
                const int64_t a = int64_t(xt[j]);
                int64_t uu = toward_zero(ub[j] * (LOIHI_UNITY - idec[j]), 12) + (a << 6);
                // the 24-bit wrap as the reference writes it: the second test sees the first
                const int64_t wrapped = uu > LOIHI_MAX ? uu - 2 * LOIHI_MAX : uu;
                uu = wrapped <= -LOIHI_MAX ? uu + 2 * LOIHI_MAX : wrapped;
                int64_t vi = toward_zero(vb[j] * (LOIHI_UNITY - vdec[j]), 12) + uu
                             + (bias[j] << bias_exp);
                vi = std::min(std::max(vi, -LOIHI_MAX + 1), LOIHI_MAX - 1);
                const bool resting = refractory && rb[j] > 0;
                const int64_t vv = resting ? vb[j] : vi;
                const bool fired = vv > (th[j] << 6) && !resting;
                // graded: 0 binary, 1 graded, 2 the voltage at every step (a readout)
                ot[j] = graded == 2 ? R(vv) / R(64)
                        : graded ? (fired ? R(vv) : R(0)) / R(64) : (fired ? R(1) : R(0));
                ub[j] = uu;
                vb[j] = fired ? 0 : vv;
                if (refractory) rb[j] = fired ? refractory : std::max(rb[j] - 1, int64_t(0));
            }
        }
    });
}


// The common 2x2 window with stride 2 and no padding, in the same scan order, without branches
// so that the compiler vectorises it.
template <typename R>
void pool_2x2(const R* in, int64_t W, int64_t OH, int64_t OW, R* o, int64_t* ix) {
    for (int64_t oh = 0; oh < OH; ++oh) {
        const R* r0 = in + 2 * oh * W;
        const R* r1 = r0 + W;
        R* row = o + oh * OW;
        if (!ix) {
            for (int64_t ow = 0; ow < OW; ++ow) {
                R m = r0[2 * ow];  // beats the initial -inf unless it is -inf: the same value
                const R b = r0[2 * ow + 1], c = r1[2 * ow], d = r1[2 * ow + 1];
                m = ((b > m) | (b != b)) ? b : m;
                m = ((c > m) | (c != c)) ? c : m;
                m = ((d > m) | (d != d)) ? d : m;
                row[ow] = m;
            }
            continue;
        }
        int64_t* irow = ix + oh * OW;
        for (int64_t ow = 0; ow < OW; ++ow) {
            const int64_t at = 2 * oh * W + 2 * ow;
            R m = -std::numeric_limits<R>::infinity();
            int64_t best = at;
            const R v[4] = {r0[2 * ow], r0[2 * ow + 1], r1[2 * ow], r1[2 * ow + 1]};
            const int64_t k[4] = {at, at + 1, at + W, at + W + 1};
            for (int j = 0; j < 4; ++j) {
                const bool take = (v[j] > m) | (v[j] != v[j]);
                m = take ? v[j] : m;
                best = take ? k[j] : best;
            }
            row[ow] = m;
            irow[ow] = best;
        }
    }
}

// Max pooling of planes [P, H, W] (P = samples x channels), as torch's CPU max_pool2d computes it
// on contiguous NCHW input: windows scanned row by row, the first maximum wins ties, a NaN wins
// over any number (the last NaN), and the index is the flat position in the input plane (the
// indices torch's backward takes). No rounding: the same bits in any batch.
template <typename R>
void max_pool(int threads, int64_t P, int64_t H, int64_t W, int64_t OH, int64_t OW, int32_t kh,
              int32_t kw, int32_t sh, int32_t sw, int32_t ph, int32_t pw, const R* x, R* out,
              int64_t* index) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t plane = 0; plane < P; ++plane) {
        const R* in = x + plane * H * W;
        R* o = out + plane * OH * OW;
        int64_t* ix = index ? index + plane * OH * OW : nullptr;
        if (kh == 2 && kw == 2 && sh == 2 && sw == 2 && ph == 0 && pw == 0) {
            pool_2x2(in, W, OH, OW, o, ix);
            continue;
        }
        for (int64_t oh = 0; oh < OH; ++oh) {
            int64_t h0 = oh * sh - ph;
            const int64_t h1 = std::min(h0 + kh, H);
            h0 = std::max<int64_t>(h0, 0);
            for (int64_t ow = 0; ow < OW; ++ow) {
                int64_t w0 = ow * sw - pw;
                const int64_t w1 = std::min(w0 + kw, W);
                w0 = std::max<int64_t>(w0, 0);
                int64_t best = h0 * W + w0;
                R most = -std::numeric_limits<R>::infinity();
                for (int64_t h = h0; h < h1; ++h)
                    for (int64_t w = w0; w < w1; ++w) {
                        // without branches: spikes make the comparison a coin toss
                        const R v = in[h * W + w];
                        const bool take = (v > most) | (v != v);
                        most = take ? v : most;
                        best = take ? h * W + w : best;
                    }
                o[oh * OW + ow] = most;
                if (ix) ix[oh * OW + ow] = best;
            }
        }
    }
}

}  // namespace

extern "C" {

// dtype of x and out: 0 float32, 1 float64. x must hold integers (checked by the caller).
int hub_loihi_forward(int dtype, const int64_t* const* q, int32_t bias_exp, int32_t refractory,
                      int32_t graded, int32_t threads, int64_t T, int64_t M, int64_t K,
                      const void* x, void* out, int64_t* u, int64_t* v, int64_t* r) {
    if (dtype == 0)
        loihi_forward<float>(q, bias_exp, refractory, graded, threads, T, M, K, (const float*)x,
                             (float*)out, u, v, r);
    else if (dtype == 1)
        loihi_forward<double>(q, bias_exp, refractory, graded, threads, T, M, K,
                              (const double*)x, (double*)out, u, v, r);
    else
        return 1;
    return 0;
}


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
                        int64_t K, const void* gout, int64_t gout_step, const void* save_v,
                        const uint8_t* save_f, const void* s0, void* gv, void* gi, void* gs,
                        void* gx) {
    if (dtype == 0)
        backward<float>(*c, params<float>(q), T, M, K, (const float*)gout, gout_step,
                        (const float*)save_v, save_f, (const float*)s0, (float*)gv, (float*)gi,
                        (float*)gs, (float*)gx);
    else if (dtype == 1)
        backward<double>(*c, params<double>(q), T, M, K, (const double*)gout, gout_step,
                         (const double*)save_v, save_f, (const double*)s0, (double*)gv,
                         (double*)gi, (double*)gs, (double*)gx);
    else
        return 1;
    return 0;
}

// dtype: 0 float32, 1 float64; index may be null (no gradient needed).
int hub_max_pool2d(int dtype, int32_t threads, int64_t P, int64_t H, int64_t W, int64_t OH,
                   int64_t OW, int32_t kh, int32_t kw, int32_t sh, int32_t sw, int32_t ph,
                   int32_t pw, const void* x, void* out, int64_t* index) {
    if (dtype == 0)
        max_pool<float>(threads, P, H, W, OH, OW, kh, kw, sh, sw, ph, pw, (const float*)x,
                        (float*)out, index);
    else if (dtype == 1)
        max_pool<double>(threads, P, H, W, OH, OW, kh, kw, sh, sw, ph, pw, (const double*)x,
                         (double*)out, index);
    else
        return 1;
    return 0;
}

int hub_abi_version(void) { return 1; }

}  // extern "C"
