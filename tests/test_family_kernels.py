"""The fused CPU kernels of the neuron families: bit-identical to each family's reference step.

Every family, with its convention fields varied and random per-neuron (or scalar) parameters,
runs through :class:`hub.Simulator` on the reference (``backend="torch"``) and on the default
path; outputs, final states and the gradients of a loss on both with respect to the input must be
equal with ``torch.equal``, in float32 and float64.
"""

from __future__ import annotations

import ctypes
import dataclasses
import zlib

import numpy as np
import pytest
import torch

import hub
from hub.kernels import cpu
from hub.kernels import families as family_kernels
from hub.node import _REGISTRY

ok, reason = cpu.available()
pytestmark = pytest.mark.skipif(not ok, reason=f"fused CPU kernels unavailable: {reason}")

WIDTH = 37  # not a multiple of any vector width: the kernels' tails are exercised
DTYPES = [torch.float32, torch.float64]


def make(kind: str, rng: np.random.Generator, per_neuron: bool = True, **fields) -> hub.Family:
    """A ``kind`` node whose parameters are random floats in ranges that make it fire."""
    def u(low: float, high: float) -> np.ndarray:
        return np.asarray(rng.uniform(low, high, size=WIDTH if per_neuron else ()))

    if kind == "ALIF":
        return hub.ALIF(alpha=u(0.5, 0.9), beta=u(0.6, 0.95), gain=u(0.5, 1.5),
                        current_gain=u(0.5, 1.5), v_leak=u(-0.1, 0.1), v_init=u(-0.2, 0.2),
                        threshold=u(0.3, 0.8), threshold_decay=u(0.8, 0.99),
                        threshold_step=u(0.05, 0.3), refractory_decay=u(0, 0.5),
                        refractory_scale=u(0, 2), v_reset=u(-0.2, 0), **fields)
    if kind == "Izhikevich":
        return hub.Izhikevich(rate=u(0.1, 0.5), recovery_rate=u(0.005, 0.03),
                              coupling=u(0.1, 0.3), u_jump=u(2, 8), v_init=u(-70, -60),
                              u_init=u(-15, -12), **fields)
    if kind == "QIF":
        return hub.QIF(tau=u(2, 5), a0=u(0.5, 1.5), v_c=u(0.5, 0.9), tau_w=u(2, 10),
                       coupling=u(0, 0.5), w_jump=u(0, 0.3), threshold=u(0.8, 1.2),
                       v_reset=u(-0.2, 0.1), v_init=u(-0.1, 0.1), w_init=u(0, 0.1), **fields)
    if kind == "AlphaLIF":
        alpha = u(0.6, 0.9)
        return hub.AlphaLIF(alpha=alpha, beta=alpha - u(0.1, 0.3), scale=u(1, 3),
                            threshold=u(0.3, 0.8), **fields)
    if kind == "SynapseFilter":
        return hub.SynapseFilter(rate=u(0.1, 0.5), **fields)
    if kind == "EIF":
        return hub.EIF(tau=u(2, 5), delta_t=u(0.5, 1.5), theta_rh=u(0.5, 0.9),
                       v_rest=u(-0.1, 0.1), threshold=u(0.9, 1.3), v_reset=u(-0.2, 0),
                       v_init=u(-0.1, 0.1), **fields)
    assert kind == "AdExLIF"
    return hub.AdExLIF(rate=u(0.05, 0.3), syn_rate=u(0.1, 0.4), ada_rate=u(0.01, 0.1),
                       delta_t=u(0.3, 0.8), v_leak=u(-0.1, 0.1), threshold=u(0.8, 1.2),
                       v_reset=u(-0.2, 0), coupling=u(0, 0.5), jump=u(0, 0.3),
                       v_init=u(-0.1, 0.1), **fields)


def drive(kind: str, rng: np.random.Generator, steps: int, batch: int,
          dtype: torch.dtype) -> torch.Tensor:
    """An input that makes ``kind`` fire some of the time (or, for the filter, spike-like)."""
    if kind == "SynapseFilter":
        x = (rng.random((steps, batch, WIDTH)) < 0.3) + rng.normal(size=(steps, batch, WIDTH)) * 0.1
    elif kind == "Izhikevich":
        x = rng.normal(size=(steps, batch, WIDTH)) * 10 + 5
    else:
        x = rng.normal(size=(steps, batch, WIDTH)) + 0.4
    return torch.tensor(x, dtype=dtype)


CASES = [
    ("ALIF", {}), ("ALIF", {"reset": "subtract", "comparison": ">="}),
    ("ALIF", {"reset": "none", "current_order": "previous"}),
    ("Izhikevich", {}), ("Izhikevich", {"comparison": ">="}),
    ("QIF", {}), ("QIF", {"reset": "subtract", "comparison": ">"}),
    ("AlphaLIF", {}), ("AlphaLIF", {"reset": "subtract"}),
    ("AlphaLIF", {"reset": "none", "comparison": ">="}),
    ("SynapseFilter", {}),
    ("EIF", {}), ("EIF", {"reset": "subtract", "comparison": ">"}),
    ("AdExLIF", {}), ("AdExLIF", {"comparison": ">="}),
]


def same(got: torch.Tensor, want: torch.Tensor) -> bool:
    """Equal bit for bit as numbers, NaN where NaN (an EIF that subtracts its threshold may run
    away to infinity, and then both paths give NaN)."""
    return bool(torch.equal(got.isnan(), want.isnan())
                and torch.equal(got.nan_to_num(), want.nan_to_num()))


def run(graph: hub.Graph, x: torch.Tensor, backend: str, weights: dict[str, torch.Tensor]
        ) -> tuple[torch.Tensor, dict, torch.Tensor, dict]:
    """Two calls (the state carries over), then the gradient of a loss on the outputs and on
    the final state; returns outputs, final state, input gradient and the paths taken."""
    sim = hub.Simulator(graph, dtype=x.dtype, backend=backend)
    xg = x.clone().requires_grad_()
    out = torch.cat([sim(xg[:9]), sim(xg[9:])])
    name = next(n for n, node in graph.nodes.items() if isinstance(node, hub.Family))
    state = sim._state[name]
    loss = (out * weights["out"]).sum() + sum((v * weights[k]).sum() for k, v in state.items())
    loss.backward()
    return out.detach(), {k: v.detach() for k, v in state.items()}, xg.grad, sim.paths


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("per_neuron", [True, False], ids=["per-neuron", "scalar"])
@pytest.mark.parametrize("kind, fields", CASES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(CASES)])
def test_fused_family_equals_its_reference_step_bit_for_bit(kind, fields, per_neuron, dtype):
    rng = np.random.default_rng(zlib.crc32(f"{kind}{fields}{per_neuron}".encode()))
    node = make(kind, rng, per_neuron, **fields)
    graph = hub.Graph.chain(hub.Input(shape=(WIDTH,)), node)
    x = drive(kind, rng, 21, 4, dtype)
    want_out = compare(graph, x, int(rng.integers(2**31)))
    if kind != "SynapseFilter":
        active = float((want_out != 0).double().mean())
        assert 0 < active < 1, f"the test input must make it fire (active {active})"


@pytest.mark.parametrize("kind", sorted({kind for kind, _ in CASES}))
def test_a_gradient_the_same_at_every_step_is_read_as_one_steps(kind, one_step_gradients):
    """``out.sum()`` hands the backward pass one value expanded over every step and neuron, and
    a loss on spike counts one step's gradient (transposed in memory) expanded over time; the
    kernel reads both as one step's instead of copying them out: the input gradients still equal
    the reference's bit for bit."""
    rng = np.random.default_rng(zlib.crc32(kind.encode()))
    graph = hub.Graph.chain(hub.Input(shape=(WIDTH,)), make(kind, rng))
    x = drive(kind, rng, 15, 6, torch.float32)
    counts = torch.tensor(rng.normal(size=(WIDTH, 6)), dtype=x.dtype).t()
    one_step = one_step_gradients  # per backward pass: one step's gradient?
    for loss in (lambda out: out.sum(), lambda out: (out.sum(0) * counts).sum()):
        one_step.clear()
        grads = []
        for backend in ("torch", "auto"):
            sim = hub.Simulator(graph, backend=backend)
            xg = x.clone().requires_grad_()
            loss(sim(xg)).backward()
            grads.append(xg.grad)
        assert set(sim.paths.values()) == {cpu.PATH}
        assert grads[0].abs().sum() > 0
        assert same(grads[1], grads[0])
        assert one_step == [True]


def compare(graph: hub.Graph, x: torch.Tensor, seed: int) -> torch.Tensor:
    """Runs ``graph`` on ``x`` on the reference and on the default path (two calls, then the
    gradient of a random loss on outputs and final state) and asserts that outputs, final states
    and input gradients are equal bit for bit; returns the reference's output."""
    rng = np.random.default_rng(seed)
    node = next(v for v in graph.nodes.values() if isinstance(v, hub.Family))
    shape = {k: tuple(x.shape[1:]) for k in node.starts} | {"out": tuple(x.shape)}
    weights = {k: torch.tensor(rng.normal(size=s), dtype=x.dtype) for k, s in shape.items()}
    want_out, want_state, want_grad, _ = run(graph, x, "torch", weights)
    out, state, grad, paths = run(graph, x, "auto", weights)
    assert set(paths.values()) == {cpu.PATH}
    assert same(out, want_out)
    for key in want_state:
        assert same(state[key], want_state[key]), key
    assert same(grad, want_grad)
    return want_out


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind, fields", CASES[::2], ids=[k for k, _ in CASES[::2]])
def test_a_layer_of_many_spans_equals_its_reference(kind, fields, dtype):
    """A layer larger than the kernels' spans of neurons (which walk through time together),
    whose spans end in the middle of a row of the layer's per-neuron parameters."""
    rng = np.random.default_rng(zlib.crc32(f"spans{kind}{fields}".encode()))
    graph = hub.Graph.chain(hub.Input(shape=(WIDTH,)), make(kind, rng, **fields))
    compare(graph, drive(kind, rng, 12, 7500, dtype), 11)


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("kind, fields", CASES[::2], ids=[k for k, _ in CASES[::2]])
def test_spans_shared_among_threads_equal_the_reference(kind, fields, two_threads):
    """Above cpu.PARALLEL_MIN neuron-steps the spans are shared among threads, and are shorter
    (a few per thread), so that they end in the middle of rows."""
    rng = np.random.default_rng(zlib.crc32(f"threads{kind}{fields}".encode()))
    graph = hub.Graph.chain(hub.Input(shape=(WIDTH,)), make(kind, rng, **fields))
    x = drive(kind, rng, 12, 200, torch.float32)
    assert x[:9].numel() >= cpu.PARALLEL_MIN
    compare(graph, x, 13)


def test_a_power_of_two_divides_as_its_exact_reciprocal_multiplies():
    """What the kernels rely on when every divisor is a power of two: ``a * (1 / d)`` is
    ``a / d`` bit for bit, for every ``a`` (signed zeros, subnormals, the largest floats,
    infinities, NaN), as long as ``1 / d`` is a normal float."""
    for dtype in DTYPES:
        info = torch.finfo(dtype)
        a = torch.tensor([0.0, -0.0, info.tiny, info.tiny / 3, -info.tiny / 2**10, info.max,
                          -info.max, info.eps, 1.0, -1.5, 3.0, np.inf, -np.inf, np.nan],
                         dtype=dtype)
        a = torch.cat([a, torch.randn(10_000, dtype=dtype) * 10.0 ** torch.randint(
            -30, 30, (10_000,)).to(dtype)])
        for k in (-120, -5, -1, 0, 1, 2, 7, 120):
            for d in (2.0**k, -(2.0**k)):
                divisor = torch.full_like(a, d)
                inverse = family_kernels.reciprocals([divisor])
                assert inverse is not None
                assert same(a * inverse[0], a / divisor), (dtype, d)


def test_only_exact_reciprocals_replace_a_division():
    reciprocals = family_kernels.reciprocals
    f32 = torch.float32
    assert reciprocals([torch.tensor([2.0, 0.25, -4.0], dtype=f32)]) is not None
    assert reciprocals([torch.tensor([2.0, 3.0], dtype=f32)]) is None  # 1/3 is not exact
    assert reciprocals([torch.tensor([2.0], dtype=f32), torch.tensor([5.0], dtype=f32)]) is None
    assert reciprocals([torch.tensor([2.0**127], dtype=f32)]) is None  # 2**-127 is subnormal
    assert reciprocals([torch.tensor([2.0**-127], dtype=f32)]) is None  # 2**-127 is subnormal
    assert reciprocals([torch.tensor([2.0**127], dtype=torch.float64)]) is not None
    assert reciprocals([torch.tensor([np.inf], dtype=f32)]) is None
    assert reciprocals([torch.tensor([0.0], dtype=f32)]) is None


def _kernel_conf(node: hub.Family, x: torch.Tensor) -> tuple[int, ...]:
    sim = hub.Simulator(hub.Graph.chain(hub.Input(shape=tuple(x.shape[2:])), node))
    sim(x)
    name = next(n for n, v in sim.graph.nodes.items() if isinstance(v, hub.Family))
    return tuple(family_kernels._Kernel(node, sim._p[name], tuple(x.shape[2:]), x.dtype).conf)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", ["QIF", "EIF", "AdExLIF"])
@pytest.mark.parametrize("per_neuron", [True, False], ids=["per-neuron", "scalar"])
def test_power_of_two_divisors_multiply_and_stay_exact(kind, per_neuron, dtype):
    """With every divisor a power of two (per neuron or one for all), the kernels multiply by
    the reciprocals instead of dividing: outputs, states and gradients stay the reference's."""
    rng = np.random.default_rng(zlib.crc32(f"pow2{kind}{per_neuron}".encode()))
    size = WIDTH if per_neuron else ()
    powers = {"QIF": {"tau": rng.choice([2.0, 4.0, 8.0], size),
                      "tau_w": rng.choice([1.0, 2.0, 16.0], size)},
              "EIF": {"tau": rng.choice([2.0, 4.0], size),
                      "delta_t": rng.choice([0.5, 1.0, 2.0], size)},
              "AdExLIF": {"delta_t": rng.choice([0.25, 0.5, 1.0], size)}}[kind]
    node = dataclasses.replace(make(kind, rng, per_neuron), **powers)
    x = drive(kind, rng, 21, 4, dtype)
    assert _kernel_conf(node, x)[3] == 1  # the reciprocal path
    graph = hub.Graph.chain(hub.Input(shape=(WIDTH,)), node)
    compare(graph, x, 3)
    other = dataclasses.replace(node, **{name: np.asarray(value) * 3
                                         for name, value in powers.items()})
    assert _kernel_conf(other, x)[3] == 0  # 3 * 2**k divides


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind, fields", CASES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(CASES)])
def test_infinities_and_nan_in_the_input_match_the_reference(kind, fields, dtype):
    """Parameters and inputs on a grid of eighths and quarters, with infinities and NaN in a
    few neurons' input: the fused path gives the reference's outputs, states and gradients,
    NaN where it gives NaN."""
    rng = np.random.default_rng(zlib.crc32(f"ties{kind}{fields}".encode()))
    node = make(kind, rng, False, **fields)
    dyadic = {f.name: np.round(np.asarray(getattr(node, f.name)) * 8) / 8
              for f in dataclasses.fields(node)
              if isinstance(getattr(node, f.name), np.ndarray)}
    dyadic = {k: np.where(v == 0, 0.125, v) if k in ("tau", "tau_w", "delta_t") else v
              for k, v in dyadic.items()}
    node = dataclasses.replace(node, **dyadic)
    x = torch.tensor(rng.integers(-4, 12, size=(21, 4, WIDTH)) / 4, dtype=dtype)
    if kind == "SynapseFilter":
        x = (x > 1).to(dtype)
    x[3:, 0, 0] = np.inf
    x[5:, 1, 1] = -np.inf
    x[7:, 2, 2] = np.nan
    compare(hub.Graph.chain(hub.Input(shape=(WIDTH,)), node), x, 5)


#: Families whose first steps are exact in float arithmetic, with an input that puts the
#: membrane exactly on the threshold: (node, the input that ties at the step given).
TIES = {
    "ALIF": (lambda c: hub.ALIF(beta=0.5, threshold=0.75, threshold_decay=0.5,
                                threshold_step=0.25, comparison=c), 0.75),
    "Izhikevich": (lambda c: hub.Izhikevich(rate=1.0, sq=0.0, mn=0.0, bias=0.0,
                                            recovery_rate=0.5, coupling=0.25, u_jump=1.0,
                                            threshold=2.0, v_init=0.0, u_init=0.0,
                                            comparison=c), 2.0),
    "QIF": (lambda c: hub.QIF(tau=2.0, threshold=1.0, v_reset=0.0, v_init=0.0,
                              comparison=c), 2.0),
    "AlphaLIF": (lambda c: hub.AlphaLIF(alpha=0.75, beta=0.5, scale=2.0, threshold=0.5,
                                        comparison=c), 1.0),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("comparison", [">", ">="])
@pytest.mark.parametrize("kind", sorted(TIES))
def test_a_membrane_exactly_on_the_threshold_fires_as_the_reference(kind, comparison, dtype):
    """Ties: inputs that put the membrane exactly on the threshold (where ``>`` and ``>=``
    differ), mixed with others, with one value for every parameter (the uniform path)."""
    build, tie = TIES[kind]
    rng = np.random.default_rng(zlib.crc32(f"tie{kind}{comparison}".encode()))
    x = torch.tensor(rng.choice([0.0, 0.5, tie, tie, 2 * tie], size=(21, 4, WIDTH)), dtype=dtype)
    graph = hub.Graph.chain(hub.Input(shape=(WIDTH,)), build(comparison))
    compare(graph, x, 7)
    other = build(">=" if comparison == ">" else ">")
    flipped = hub.simulate(hub.Graph.chain(hub.Input(shape=(WIDTH,)), other), x,
                           backend="torch")
    assert not torch.equal(hub.simulate(graph, x, backend="torch"), flipped), "no tie happened"


@pytest.mark.parametrize("kind", sorted({k for k, _ in CASES}))
def test_auto_runs_every_family_on_its_fused_kernel_between_other_layers(kind):
    """Inside a network (behind a dense layer), the default path runs the family fused, with
    the same outputs and the same input gradients as the reference."""
    rng = np.random.default_rng(5)
    node = make(kind, rng)
    weight = np.eye(WIDTH) + rng.normal(size=(WIDTH, WIDTH)) / WIDTH
    graph = hub.Graph.chain(hub.Input(shape=(WIDTH,)), hub.Linear(weight=weight), node)
    x = drive(kind, rng, 15, 3, torch.float32)
    results = []
    for backend in ("torch", "auto"):
        sim = hub.Simulator(graph, backend=backend)
        xg = x.clone().requires_grad_()
        out = sim(xg)
        out.square().sum().backward()
        results.append((out.detach(), xg.grad, sim.paths))
    assert torch.equal(results[1][0], results[0][0])
    assert torch.equal(results[1][1], results[0][1])
    family = next(n for n, v in graph.nodes.items() if isinstance(v, hub.Family))
    assert results[1][2][family] == cpu.PATH


@pytest.fixture
def quiet_eif():
    """A plugin's family type: an EIF whose own step never spikes."""

    class QuietEIF(hub.EIF):
        def step(self, p, x, state):
            out, new = super().step(p, x, state)
            return torch.zeros_like(out), new

    yield QuietEIF
    _REGISTRY.pop("QuietEIF", None)


def test_a_family_that_overrides_step_runs_its_own_step(quiet_eif):
    fields = {"tau": 2.0, "threshold": 0.5}
    x = torch.tensor(np.random.default_rng(2).normal(size=(10, 2, 6)) + 1.0, dtype=torch.float32)
    builtin = hub.Graph.chain(hub.Input(shape=(6,)), hub.EIF(**fields))
    assert hub.simulate(builtin, x).sum() > 0  # the built-in one fires here
    quiet = hub.Graph.chain(hub.Input(shape=(6,)), quiet_eif(**fields))
    sim = hub.Simulator(quiet)
    out = sim(x)
    assert not out.any()
    assert "overrides EIF.step" in next(iter(sim.paths.values()))


def test_parameters_that_require_gradients_stay_on_the_reference():
    rng = np.random.default_rng(4)
    graph = hub.Graph.chain(hub.Input(shape=(WIDTH,)), make("QIF", rng))
    x = drive("QIF", rng, 8, 2, torch.float32)
    sim = hub.Simulator(graph, trainable=True)
    out = sim(x)
    assert "parameters require gradients" in next(iter(sim.paths.values()))
    assert torch.equal(out, hub.simulate(graph, x, backend="torch"))


@pytest.mark.parametrize("batch", [3, 1000])  # 1000: more neurons than one span
@pytest.mark.parametrize("fields", [{}, {"reset": "subtract", "comparison": ">="},
                                    {"reset": "none", "current_order": "previous"}])
def test_an_alif_in_fixed_arithmetic_runs_fused_with_the_reference_integers(fields, batch):
    """Loihi's integer ALIF (slayer's alif): the fused kernel gives the reference's spikes and
    integer state, and refuses a non-integer drive as the reference does."""
    rng = np.random.default_rng(zlib.crc32(str(fields).encode()))

    def decay(size: int = WIDTH) -> np.ndarray:
        return rng.integers(0, 4097, size=size) / 4096

    def integer(low: int, high: int) -> np.ndarray:
        return rng.integers(low, high, size=WIDTH).astype(np.float64)

    node = hub.ALIF(alpha=decay(), beta=decay(), threshold_decay=decay(),
                    refractory_decay=decay(), gain=integer(1, 3), current_gain=integer(1, 64),
                    v_leak=integer(-5, 5), v_init=integer(-20, 20), v_reset=integer(-10, 1),
                    threshold=integer(200, 900), threshold_step=integer(0, 300),
                    refractory_scale=integer(0, 3), arithmetic="fixed", **fields)
    graph = hub.Graph.chain(hub.Input(shape=(WIDTH,)), node)
    x = torch.tensor(rng.integers(-3, 12, size=(40, batch, WIDTH)), dtype=torch.float32)
    want = hub.Simulator(graph, backend="torch")
    sim = hub.Simulator(graph)
    out = sim(x)
    assert next(iter(sim.paths.values())) == cpu.PATH
    assert torch.equal(out, want(x))
    for key, value in want._state["alif1"].items():
        assert torch.equal(sim._state["alif1"][key], value), key
    assert 0 < float(out.mean()) < 1
    with pytest.raises(hub.HubError, match="not an integer"):
        hub.simulate(graph, x + 0.5)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_the_kernels_exponential_is_torch_exp_bit_for_bit(dtype):
    """The function the kernels call for EIF and AdExLIF gives torch.exp's bits on values the
    probe did not see: any length (vector tails), huge, tiny, infinite and NaN arguments."""
    found, why = family_kernels.exp_function(dtype)
    assert found is not None, why
    rng = np.random.default_rng(99)
    limit = 720.0 if dtype == torch.float64 else 90.0
    values = np.concatenate([rng.normal(size=50_001) * s for s in (1.0, 10.0, limit / 3)]
                            + [rng.uniform(-limit, limit, size=20_000),
                               [np.inf, -np.inf, np.nan, 0.0, -0.0, 1e-300, -1e-45]])
    x = torch.tensor(values, dtype=dtype)
    want = torch.exp(x)
    for length in (x.numel(), 1, 3, 15, 17, 33, 1023):
        part = x[-length:].contiguous()
        got = torch.empty_like(part)
        family_kernels.library().hub_family_exp(family_kernels.DTYPES.index(dtype),
                                                ctypes.byref(found), part.data_ptr(),
                                                got.data_ptr(), part.numel())
        assert torch.equal(got.nan_to_num(), want[-length:].nan_to_num()), length
        assert torch.equal(got.isnan(), want[-length:].isnan())


# The CUDA source has no GPU to run on here, so it is compiled as plain C++ (CUDA's keywords
# stubbed, one "thread" per neuron in a loop, the exponential torch's own function) and checked
# bit for bit, forward and backward, against the reference step.

_STUB = r"""
#include <cmath>
#include <cstdint>
using std::exp;
using std::fabs;
#define __global__
#define __device__
#define __forceinline__ inline
struct Dim { long long x; };
static Dim blockIdx, blockDim = {1}, threadIdx = {0};
static void* hub_exp_fn;
static long long hub_exp_mode;
template <typename T> T hub_exp(T a) {
    T out;
    ((void (*)(int, const T*, T*, long long))hub_exp_fn)(1, &a, &out, hub_exp_mode);
    return out;
}
#define HUB_EXP(a) hub_exp<R>(a)
"""
_DRIVER = r"""
extern "C" void set_exp(void* fn, long long mode) { hub_exp_fn = fn; hub_exp_mode = mode; }
extern "C" void run_forward(long long M, const R* const* p, long long T, long long K,
        const R* x, R* out, R* const* state, R* const* saved) {
    for (long long m = 0; m < M; ++m) { blockIdx.x = m; forward(p, T, M, K, x, out, state, saved); }
}
extern "C" void run_backward(long long M, const R* const* p, long long T, long long K,
        const R* x, const R* gout, R* const* saved, R* const* g, R* gx) {
    for (long long m = 0; m < M; ++m) {
        blockIdx.x = m;
        backward(p, T, M, K, x, gout, saved, g, gx);
    }
}
"""


def _addresses(tensors):
    return (ctypes.c_void_p * len(tensors))(*[t.data_ptr() for t in tensors])


class _EmulatedCuda:
    """The CuPy family kernels' source compiled for the CPU, with the CPU kernel's interface."""

    def __init__(self, node: hub.Family, p: dict, dtype: torch.dtype, directory) -> None:
        import hashlib
        import shutil
        import subprocess

        from hub.kernels import cupy_families

        source = _STUB + cupy_families.source(node, dtype) + _DRIVER
        name = directory / hashlib.sha1(source.encode()).hexdigest()[:12]
        if not name.with_suffix(".so").exists():
            name.with_suffix(".cpp").write_text(source)
            subprocess.run([shutil.which("g++") or "c++", "-O1", "-ffp-contract=off", "-shared",
                            "-fPIC", "-std=c++14", str(name.with_suffix(".cpp")), "-o",
                            str(name.with_suffix(".so"))], check=True)
        self.lib = ctypes.CDLL(str(name.with_suffix(".so")))
        found, _ = family_kernels.exp_function(dtype)
        if family_kernels.SPECS[type(node).kernel].exp:
            if found is None or found.kind != 1:
                pytest.skip("the emulation calls torch's exp through MKL's vm?Exp only")
            self.lib.set_exp(ctypes.c_void_p(found.fn), ctypes.c_longlong(found.mode))
        spec = family_kernels.SPECS[type(node).kernel]
        self.keep = [torch.broadcast_to(p[n].to(dtype), (WIDTH,)).contiguous()
                     for n in spec.params]
        self.params = _addresses(self.keep)

    def forward(self, x, state, save):
        out = torch.empty_like(x)
        saved = [torch.empty_like(x) for _ in state] if save else None
        self.lib.run_forward(ctypes.c_longlong(x[0].numel()), self.params,
                             ctypes.c_longlong(x.shape[0]), ctypes.c_longlong(WIDTH),
                             ctypes.c_void_p(x.data_ptr()), ctypes.c_void_p(out.data_ptr()),
                             _addresses(state), _addresses(saved) if saved else None)
        return out, saved

    def backward(self, x, gout, saved, grads):
        gx = torch.empty_like(gout)
        self.lib.run_backward(ctypes.c_longlong(x[0].numel()), self.params,
                              ctypes.c_longlong(x.shape[0]), ctypes.c_longlong(WIDTH),
                              ctypes.c_void_p(x.data_ptr()), ctypes.c_void_p(gout.data_ptr()),
                              _addresses(saved), _addresses(grads), ctypes.c_void_p(gx.data_ptr()))
        return gx


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind, fields", CASES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(CASES)])
def test_cupy_family_source_emulated_on_the_cpu_matches_the_reference(kind, fields, dtype,
                                                                        tmp_path_factory):
    directory = tmp_path_factory.getbasetemp() / "emulated-cuda-families"
    directory.mkdir(exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(f"cuda{kind}{fields}".encode()))
    node = make(kind, rng, **fields)
    p = {k: torch.tensor(v, dtype=dtype) for k, v in node.params().items()
         if isinstance(v, np.ndarray)}
    x = drive(kind, rng, 17, 3, dtype)
    names = list(node.starts)
    weights = {k: torch.tensor(rng.normal(size=(3, WIDTH)), dtype=dtype) for k in names}
    gout = torch.tensor(rng.normal(size=x.shape), dtype=dtype)
    results = []
    for emulated in (False, True):
        xg = x.clone().requires_grad_()
        state = node.initial_state((3, WIDTH), x)
        if emulated:
            kernel = _EmulatedCuda(node, p, dtype, directory)
            out, state = family_kernels.run(node, p, xg, state, kernel=kernel)
        else:
            outs = []
            for xt in xg.unbind(0):
                o, state = node.step(p, xt, state)
                outs.append(o)
            out = torch.stack(outs)
        loss = (out * gout).sum() + sum((state[k] * weights[k]).sum() for k in names)
        loss.backward()
        results.append((out.detach(), {k: v.detach() for k, v in state.items()}, xg.grad))
    (want_out, want_state, want_grad), (got_out, got_state, got_grad) = results
    assert same(got_out, want_out)
    for key in names:
        assert same(got_state[key], want_state[key]), key
    assert same(got_grad, want_grad)
