"""The fused kernels: bit-identical to the reference step, forward and backward, everywhere.

Every neuron type with every convention field is run three ways: the reference
:meth:`hub.Neuron.step` in a loop, the fused CPU kernel over the whole sequence, and whole graphs
through :class:`hub.Simulator` with each backend. Spikes, voltages, states and input gradients
must be equal with ``torch.equal``, in float32 and float64.
"""

from __future__ import annotations

import ctypes
import hashlib
import itertools
import os
import shutil
import subprocess
from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import hub
from hub.errors import HubError
from hub.kernels import cpu
from hub.node import _REGISTRY
from hub.simulate import KernelWarning, _auto

from .conftest import EXAMPLES


def dyadic(*shape: int, scale: int = 8, _rng=np.random.default_rng(1)) -> np.ndarray:
    """As conftest's, from a generator of this module: drawing from the shared one would change
    the values other modules' tests get."""
    return (_rng.integers(-scale, scale + 1, size=shape) / scale).astype(np.float32)

ok, reason = cpu.available()
needs_compiler = pytest.mark.skipif(not ok, reason=f"fused CPU kernels unavailable: {reason}")

SHAPE = (2, 5)
SPIKING = {"IF": hub.IF, "LIF": hub.LIF, "CubaLIF": hub.CubaLIF}
READOUTS = {"LI": hub.LI, "Integrator": hub.Integrator, "CubaLI": hub.CubaLI}
DTYPES = [torch.float32, torch.float64]


def make(kind: str, rng: np.random.Generator, exact: bool, shared: bool = False,
         **fields) -> hub.Neuron:
    """A neuron of type ``kind`` with per-neuron parameters that make its fields matter
    (``shared``: one value of each parameter for all neurons).

    ``exact`` picks dyadic values, so voltages land exactly on thresholds and the comparison
    and multi-spike rounding are exercised; otherwise values are random floats, so any change
    in the order of operations would show in the last bits.
    """
    cls = {**SPIKING, **READOUTS}[kind]

    def values(low: float, high: float, scalar: bool = False):
        if exact:
            v = rng.integers(int(low * 8), int(high * 8) + 1,
                             size=() if scalar or shared else SHAPE) / 8
        else:
            v = rng.uniform(low, high, size=() if scalar or shared else SHAPE)
        return np.asarray(v, dtype=np.float32)

    params = {"v_init": values(-0.5, 0.5), "gain": values(0.5, 1.5)}
    names = {f.name for f in cls.__dataclass_fields__.values()}
    if "beta" in names:
        params |= {"beta": values(0.25, 1.0), "v_leak": values(-0.25, 0.25, scalar=True)}
    if "alpha" in names:
        params |= {"alpha": values(0.0, 0.875), "current_gain": values(0.5, 1.5)}
    if "threshold" in names:
        params |= {"threshold": values(0.25, 1.0), "v_reset": values(-0.25, 0.25),
                   "amplitude": values(0.5, 2.0, scalar=True)}
    return cls(**params, **{k: v for k, v in fields.items() if k in names})


def reference(node: hub.Neuron, p: dict, x: torch.Tensor, state: dict):
    outs = []
    for t in range(x.shape[0]):
        out, state = node.step(p, x[t], state)
        outs.append(out)
    return torch.stack(outs), state


def tensors(node: hub.Neuron, dtype: torch.dtype) -> dict:
    return {k: torch.tensor(np.array(v), dtype=dtype) for k, v in node.params().items()
            if isinstance(v, np.ndarray)}


def inputs(rng: np.random.Generator, exact: bool, dtype: torch.dtype, steps: int = 16,
           batch: int = 3) -> torch.Tensor:
    if exact:
        x = rng.integers(-4, 9, size=(steps, batch, *SHAPE)) / 8
    else:
        x = rng.normal(0.3, 0.6, size=(steps, batch, *SHAPE))
    return torch.tensor(x, dtype=dtype)


def assert_same(node: hub.Neuron, dtype: torch.dtype, rng: np.random.Generator, exact: bool,
                grad: bool = True) -> None:
    """The fused run equals the reference: outputs, final state, and the input gradient."""
    p = tensors(node, dtype)
    x = inputs(rng, exact, dtype)
    batch = (x.shape[1], *SHAPE)
    where = f"{node!r} {dtype} exact={exact}"
    with torch.no_grad():
        want, want_state = reference(node, p, x, node.initial_state(batch, x))
        got, got_state = cpu.run(node, p, x, node.initial_state(batch, x))
    assert torch.equal(got, want), where
    assert set(got_state) == set(want_state), where
    for key in want_state:
        assert torch.equal(got_state[key], want_state[key]), f"{where} state {key!r}"
    if not grad:
        return
    # two calls in a row, so the gradient also crosses the state between calls
    g = torch.tensor(rng.normal(size=x.shape), dtype=dtype)
    grads = []
    for run in (reference, cpu.run):
        xg = x.clone().requires_grad_()
        first, state = run(node, p, xg[:7], node.initial_state(batch, x))
        second, _ = run(node, p, xg[7:], state)
        torch.cat([first, second]).backward(g)
        grads.append(xg.grad)
    assert torch.equal(grads[1], grads[0]), f"{where} gradient"
    # and out.sum()'s gradient, the same at every step, which the kernel reads as one step's
    grads = []
    for run in (reference, cpu.run):
        xg = x.clone().requires_grad_()
        run(node, p, xg, node.initial_state(batch, x))[0].sum().backward()
        grads.append(xg.grad)
    assert torch.equal(grads[1], grads[0]), f"{where} gradient of out.sum()"


fused_run = cpu.run
CONVENTIONS = list(itertools.product((">", ">="), ("binary", "multi", "graded"), (0, 2), (0, 2)))


@needs_compiler
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("timing", ["same", "next"])
@pytest.mark.parametrize("reset", ["zero", "subtract", "none"])
@pytest.mark.parametrize("kind", ["IF", "LIF", "CubaLIF/new", "CubaLIF/previous"])
def test_spiking_neurons_match_the_reference_for_every_convention(kind, reset, timing, dtype):
    kind, _, order = kind.partition("/")
    rng = np.random.default_rng(abs(hash((kind, reset, timing, order))) % 2**32)
    for comparison, mode, refractory, delay in CONVENTIONS:
        if timing == "next" and refractory:
            continue  # a refractory period needs reset_timing="same"
        for exact in (True, False):
            node = make(kind, rng, exact, comparison=comparison, reset=reset,
                        reset_timing=timing, spike_mode=mode, refractory=refractory,
                        delay=delay, current_order=order or "new")
            assert_same(node, dtype, rng, exact)


@needs_compiler
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", ["IF", "LIF", "CubaLIF/new", "CubaLIF/previous"])
def test_parameters_shared_by_all_neurons_match_the_reference_for_every_convention(kind, dtype):
    """One value per parameter, which the kernels hold in a register instead of loading it per
    neuron: its own specialisations of every convention."""
    kind, _, order = kind.partition("/")
    rng = np.random.default_rng(abs(hash((kind, order, "shared"))) % 2**32)
    for reset, timing, (comparison, mode, refractory, delay) in itertools.product(
            ("zero", "subtract", "none"), ("same", "next"), CONVENTIONS):
        if timing == "next" and refractory:
            continue
        for exact in (True, False):
            node = make(kind, rng, exact, shared=True, comparison=comparison, reset=reset,
                        reset_timing=timing, spike_mode=mode, refractory=refractory,
                        delay=delay, current_order=order or "new")
            assert cpu._kernel(node, tensors(node, dtype), SHAPE, dtype).conf.uniform
            assert_same(node, dtype, rng, exact)


@needs_compiler
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", ["LI", "Integrator", "CubaLI/new", "CubaLI/previous"])
def test_readouts_match_the_reference(kind, dtype):
    kind, _, order = kind.partition("/")
    rng = np.random.default_rng(7)
    for exact in (True, False):
        assert_same(make(kind, rng, exact, current_order=order or "new"), dtype, rng, exact)


@needs_compiler
@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(sorted(SPIKING)), comparison=st.sampled_from([">", ">="]),
       reset=st.sampled_from(["zero", "subtract", "none"]),
       timing=st.sampled_from(["same", "next"]),
       mode=st.sampled_from(["binary", "multi", "graded"]),
       refractory=st.integers(0, 3), delay=st.integers(0, 20),
       order=st.sampled_from(["new", "previous"]), exact=st.booleans(),
       seed=st.integers(0, 2**32 - 1), double=st.booleans())
def test_random_neurons_match_the_reference(kind, comparison, reset, timing, mode, refractory,
                                            delay, order, exact, seed, double):
    """Delays longer than the sequence and long refractory periods included."""
    rng = np.random.default_rng(seed)
    if timing == "next":
        refractory = 0
    node = make(kind, rng, exact, comparison=comparison, reset=reset, reset_timing=timing,
                spike_mode=mode, refractory=refractory, delay=delay, current_order=order)
    assert_same(node, torch.float64 if double else torch.float32, rng, exact)


@needs_compiler
@pytest.mark.parametrize("kind", ["LIF", "CubaLIF", "IF"])
def test_large_layers_split_across_threads_and_blocks_identically(kind):
    """Wide enough for several threads and a ragged last block; fast and general paths."""
    rng = np.random.default_rng(3)
    width = 1500
    for fields in ({}, {"spike_mode": "multi", "refractory": 1}):
        node = {"LIF": hub.LIF, "CubaLIF": hub.CubaLIF, "IF": hub.IF}[kind](
            threshold=rng.uniform(0.5, 1.0, width).astype(np.float32),
            **({"beta": rng.uniform(0.5, 1.0, width).astype(np.float32)} if kind != "IF"
               else {}),
            **({"alpha": np.float32(0.75)} if kind == "CubaLIF" else {}), **fields)
        p = tensors(node, torch.float32)
        x = torch.tensor(rng.normal(0.3, 0.5, size=(50, 2, width)), dtype=torch.float32)
        assert x.numel() >= cpu.PARALLEL_MIN
        grads = []
        for run in (reference, cpu.run):
            xg = x.clone().requires_grad_()
            out, state = run(node, p, xg, node.initial_state((2, width), x))
            out.backward(torch.ones_like(out))
            grads.append((out.detach(), state["v"].detach(), xg.grad))
        for got, want in zip(grads[1], grads[0]):
            assert torch.equal(got, want), fields


def same_bits(got: torch.Tensor, want: torch.Tensor) -> bool:
    """Bit for bit, the sign of a zero included; any NaN equals any NaN (torch's and the
    kernel's operations may hand on another NaN's payload)."""
    if got.shape != want.shape or got.dtype != want.dtype:
        return False
    nan = torch.isnan(want)
    if not torch.equal(torch.isnan(got), nan):
        return False
    if not got.is_floating_point():
        return torch.equal(got, want)
    bits = _BITS[got.element_size()]
    return torch.equal(got[~nan].view(bits), want[~nan].view(bits))


_BITS = {4: torch.int32, 8: torch.int64}


def assert_same_bits(node: hub.Neuron, p: dict, x: torch.Tensor, where: str,
                     v0: torch.Tensor | None = None, grad: bool = True) -> None:
    """As :func:`assert_same` for given parameters and input (and initial voltage ``v0``),
    compared with :func:`same_bits`: outputs, final state and (over two calls in a row) the
    input gradient."""
    batch = tuple(x.shape[1:])

    def initial() -> dict:
        state = node.initial_state(batch, x)
        if v0 is not None:
            state["v"] = v0.expand(batch).clone()
        return state

    with torch.no_grad():
        want, want_state = reference(node, p, x, initial())
        got, got_state = cpu.run(node, p, x, initial())
    assert same_bits(got, want), where
    assert set(got_state) == set(want_state), where
    for key in want_state:
        assert same_bits(got_state[key], want_state[key]), f"{where} state {key!r}"
    if not grad:
        return
    g = torch.linspace(-1, 1, x.numel(), dtype=x.dtype).reshape(x.shape)
    half = x.shape[0] // 2
    grads = []
    for run in (reference, cpu.run):
        xg = x.clone().requires_grad_()
        first, state = run(node, p, xg[:half], initial())
        second, _ = run(node, p, xg[half:], state)
        torch.cat([first, second]).backward(g)
        grads.append(xg.grad)
    assert same_bits(grads[1], grads[0]), f"{where} gradient"


@needs_compiler
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_a_layer_of_several_spans_matches_the_reference(dtype, threads, one_step_gradients):
    """The forward and backward passes walk spans of blocks (about 2 MiB of state each) through
    time together: a layer of several spans whose rows of per-neuron parameters end inside a
    block, on one and on two threads; shared and per-neuron thresholds, multi-spike counts with
    bursts (each block of a span keeps its own steps left to divide), a refractory period, a
    next-step zero reset (whose backward pass reads the step before); without gradients and with
    them (the pass that saves the voltages), outputs and state bit for bit, and the input
    gradients of four losses: one with a gradient per step and neuron; ``out.sum()``, whose
    gradient is one value expanded over all steps and neurons, and one on spike counts, whose
    gradient is the same at every step (expanded over time, transposed in memory), both of which
    the kernel reads as one step's; and one whose gradient is transposed in memory, which is
    copied."""
    one_step = one_step_gradients  # per backward pass: one step's gradient?
    rng = np.random.default_rng(17)
    width, batch, steps = 1500, 200, 6
    x = rng.integers(-4, 13, size=(steps, batch, width)) / 8
    x[2, ::7] += rng.integers(0, 64, size=x[2, ::7].shape) / 4  # multi-spike counts far above 1
    x = torch.tensor(x, dtype=dtype)
    per_neuron = (rng.integers(2, 9, width) / 8).astype(np.float32)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for threshold, fields in itertools.product(
                (np.float32(0.5), per_neuron),
                ({}, {"spike_mode": "multi"}, {"spike_mode": "multi", "reset_timing": "next"},
                 {"refractory": 2}, {"reset": "zero", "reset_timing": "next"})):
            node = hub.LIF(threshold=threshold, beta=np.float32(0.75), **fields)
            p = tensors(node, dtype)
            where = f"{fields} threshold {np.shape(threshold)}"
            for grad in (False, True):
                with torch.set_grad_enabled(grad):
                    xs = x.clone().requires_grad_(grad)
                    want, want_state = reference(node, p, xs, node.initial_state(x.shape[1:], x))
                    got, got_state = cpu.run(node, p, xs, node.initial_state(x.shape[1:], x))
                assert same_bits(got.detach(), want.detach()), f"{where} grad={grad}"
                for key in want_state:
                    assert same_bits(got_state[key].detach(), want_state[key].detach()), key
            # the gradients through the last (grad=True) runs of both, which read the same xs
            per_step = torch.tensor(rng.normal(size=x.shape), dtype=dtype)
            per_neuron_t = torch.tensor(rng.normal(size=(width, batch)), dtype=dtype).t()
            for loss, read_once in ((lambda out: (out * per_step).sum(), False),
                                    (lambda out: out.sum(), True),
                                    (lambda out: (out.sum(0) * per_neuron_t).sum(), True),
                                    (lambda out: (out * per_neuron_t).sum(), False)):
                one_step.clear()
                grads = [torch.autograd.grad(loss(out), xs, retain_graph=True)[0]
                         for out in (want, got)]
                assert same_bits(grads[1], grads[0]), f"{where} gradient"
                assert grads[0].abs().sum() > 0, f"{where}: no gradient to compare"
                assert one_step == [read_once], f"{where}: one step's gradient {one_step}"
            if fields.get("spike_mode") == "multi":
                assert (want.abs() > 2).any(), "no count above 2"
    finally:
        torch.set_num_threads(before)


def multi_spike_conventions() -> list[dict]:
    return [dict(comparison=comparison, reset=reset, reset_timing=timing, refractory=refractory)
            for comparison in (">", ">=") for reset in ("zero", "subtract", "none")
            for timing in ("same", "next") for refractory in (0, 2)
            if not (timing == "next" and refractory)]


@needs_compiler
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", ["IF", "LIF", "CubaLIF"])
def test_multi_spike_counts_of_every_size_match_the_reference(kind, dtype):
    """The kernel takes a multi-spike's count to be the spike where the voltage stays below
    twice the threshold, and divides only where it does not: counts of 0, 1 and many, voltages
    exactly on a multiple of the threshold (dyadic values), large inputs at a few steps among
    small ones (so that a layer switches between both ways of counting, and back), per-neuron
    and shared thresholds."""
    rng = np.random.default_rng(5)
    steps, batch = 48, 3
    small = rng.integers(-2, 5, size=(steps, batch, *SHAPE)) / 8
    large = rng.integers(0, 64, size=(steps, batch, *SHAPE)) / 4
    burst = np.zeros((steps, 1, 1, 1), dtype=bool)
    burst[[6, 7, 30]] = True  # every lane; then one lane alone, long after
    one = np.zeros((steps, batch, *SHAPE), dtype=bool)
    one[[20, 40], 1, 0, 3] = True
    x = torch.tensor(np.where(burst | one, large, small), dtype=dtype)
    for fields in multi_spike_conventions():
        for shared in (False, True):
            node = make(kind, rng, exact=True, shared=shared, spike_mode="multi", **fields)
            p = tensors(node, dtype)
            out, _ = reference(node, p, x, node.initial_state(x.shape[1:], x))
            assert (out.abs() > 2 * p["amplitude"].abs()).any(), "no count above 2"
            assert_same_bits(node, p, x, f"{node!r} {dtype}")


@needs_compiler
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_multi_spike_counts_at_the_edges_of_float_match_the_reference(dtype):
    """NaN and infinite voltages and inputs, -0, values far beyond or below the threshold, the
    smallest and the largest thresholds (twice one is infinite), and the kernel's own inputs
    beyond what a node allows (zero, negative, infinite and NaN thresholds; their values only:
    the backward pass of a next-step zero reset takes the previous spike from the voltage, which
    a NaN count, as 0 / 0 gives, does not follow). Each batch row is a block of the kernel of its
    own, and every pair of voltage and threshold meets at the first step of a call, where the
    kernel always tries the count without the division first."""
    info = torch.finfo(dtype)
    values = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 0.0, info.max,
                           -info.max, info.tiny, info.tiny / 4, 0.5, 1.0, 3.0, 1e30],
                          dtype=dtype)
    n = len(values)
    allowed = torch.tensor([info.max, info.max / 2, info.tiny, info.tiny / 4, 1.0, 0.75, 0.5,
                            3.0, 1e-30, 1e30, 0.25, 2.0], dtype=dtype)
    beyond = torch.tensor([0.0, -0.0, -1.0, -info.tiny, float("inf"), float("nan")],
                          dtype=dtype)
    t, b = torch.arange(4)[:, None], torch.arange(n)[None, :]
    for th in (allowed, allowed[4:5], torch.cat([allowed[:6], beyond])):
        grad = bool((th > 0).all() & th.isfinite().all())
        k = torch.arange(len(th))
        x = values[(b + 5 * t) % n][..., None].expand(4, n, len(th)).clone()
        v0 = values[(b.T + k) % n]
        for fields in multi_spike_conventions():
            node = hub.LIF(beta=0.5, spike_mode="multi", **fields)
            p = tensors(node, dtype) | {"threshold": th}
            assert_same_bits(node, p, x, f"{node!r} {dtype} threshold={th.tolist()}", v0=v0,
                             grad=grad)


#: Each parameter that a spiking kind has, and the groups the kernel tells apart.
MIXES = [("beta",), ("gain",), ("threshold",), ("alpha",), ("current_gain",), ("v_leak",),
         ("v_reset",), ("amplitude",), ("beta", "threshold"), ("beta", "gain", "alpha"),
         ("threshold", "v_reset"), ("beta", "gain", "v_leak", "alpha", "current_gain",
                                    "threshold", "v_reset", "amplitude")]


@needs_compiler
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", ["IF", "LIF", "CubaLIF"])
def test_parameters_per_neuron_among_shared_ones_match_the_reference(kind, dtype):
    """Some parameters per neuron and the rest shared: the kernel loads per neuron only what
    must be (the levels v_leak, v_reset and amplitude stay in registers while they are shared);
    every mix, every spike mode and reset, against the reference."""
    rng = np.random.default_rng(13)
    names = {f.name for f in SPIKING[kind].__dataclass_fields__.values()}
    for mix in MIXES:
        if not set(mix) <= names:
            continue
        for mode, reset, timing, refractory in itertools.product(
                ("binary", "multi", "graded"), ("zero", "subtract", "none"), ("same", "next"),
                (0, 2)):
            if timing == "next" and refractory:
                continue
            exact = bool(rng.integers(2))
            fields = dict(spike_mode=mode, reset=reset, reset_timing=timing,
                          refractory=refractory, comparison=(">", ">=")[rng.integers(2)])
            shared = make(kind, rng, exact, shared=True, **fields)
            each = make(kind, rng, exact, **fields)
            node = shared.replace(**{name: getattr(each, name) for name in mix})
            if "v_leak" in mix or "amplitude" in mix:  # make's are scalars: spread them
                node = node.replace(**{name: getattr(node, name) + rng.integers(
                    0, 3, SHAPE).astype(np.float32) / 8 for name in ("v_leak", "amplitude")
                    if name in mix})
            kernel = cpu._kernel(node, tensors(node, dtype), SHAPE, dtype)
            levels = {"v_leak", "v_reset", "amplitude"}
            assert kernel.conf.uniform == (0 if levels & set(mix) else cpu.UNIFORM_LEVELS)
            assert_same(node, dtype, rng, exact)


@needs_compiler
def test_a_negative_zero_among_zeros_is_another_value_for_the_kernel():
    """Shared means the same bits: a -0.0 rest potential among 0.0s is loaded per neuron."""
    v_leak = np.zeros(SHAPE, dtype=np.float32)
    v_leak[1, 2] = -0.0
    node = hub.LIF(beta=np.full(SHAPE, 0.5, np.float32), v_leak=v_leak, threshold=0.5)
    p = tensors(node, torch.float32)
    assert cpu._kernel(node, p, SHAPE, torch.float32).conf.uniform == 0
    assert_same(node, torch.float32, np.random.default_rng(2), exact=False)


@needs_compiler
@pytest.mark.parametrize("huge", ["1", "0"])
def test_outputs_on_huge_pages_hold_the_same_values(huge, monkeypatch):
    monkeypatch.setenv("HUB_KERNEL_HUGEPAGES", huge)
    node = hub.LIF(beta=0.875, threshold=0.5, reset="subtract")
    p = tensors(node, torch.float32)
    x = torch.tensor(dyadic(64, 4, 32768))  # 32 MiB: large enough for huge pages
    assert x.numel() * 4 >= cpu.HUGE_PAGES_MIN
    with torch.no_grad():
        want, _ = reference(node, p, x, node.initial_state((4, 32768), x))
        got, _ = cpu.run(node, p, x, node.initial_state((4, 32768), x))
    assert torch.equal(got, want)


@needs_compiler
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("fields", [{}, {"refractory": 2}, {"spike_mode": "graded"},
                                    {"delay": 3, "refractory": 1, "bias_exp": 3}],
                         ids=["plain", "refractory", "graded", "delay"])
def test_the_loihi_integer_neuron_matches_its_reference_step(fields, dtype):
    """Per-neuron decays (0 keeps, 4096 clears), thresholds and biases; inputs large enough
    to reach the 24-bit wrap of the current and the clamp of the voltage."""
    from hub.loihi import LoihiCUBA

    rng = np.random.default_rng(11)
    node = LoihiCUBA(i_decay=rng.integers(0, 4097, SHAPE), v_decay=rng.choice([0, 300, 4096],
                                                                             SHAPE),
                     threshold=rng.integers(0, 300, SHAPE), bias=rng.integers(-8, 9, SHAPE),
                     **fields)
    p = {k: torch.as_tensor(np.array(v)) for k, v in node.params().items()
         if isinstance(v, np.ndarray)}
    for scale in (40, 200_000, 500_000):
        x = torch.tensor(rng.integers(-scale, scale, (30, 3, *SHAPE)), dtype=dtype)
        state = node.initial_state((3, *SHAPE), x)
        want, want_state = reference(node, p, x[:17], state)
        got, got_state = cpu.run(node, p, x[:17], state)
        more_want, want_state = reference(node, p, x[17:], want_state)
        more_got, got_state = cpu.run(node, p, x[17:], got_state)
        assert torch.equal(torch.cat([got, more_got]), torch.cat([want, more_want])), scale
        assert want.any() and set(got_state) == set(want_state)
        for key in want_state:
            assert torch.equal(got_state[key], want_state[key]), key
    with pytest.raises(HubError, match="non-integer"):
        cpu.run(node, p, x + 0.5, node.initial_state((3, *SHAPE), x))
    graph = hub.Graph.chain(hub.Input(shape=SHAPE), node)
    sim = hub.Simulator(graph, dtype=dtype)
    assert torch.equal(sim(x), hub.simulate(graph, x, dtype=dtype, backend="torch"))
    assert sim.paths["loihicuba1"] == cpu.PATH


def test_unsupported_cases_are_named():
    node = hub.LIF(beta=0.5)
    p = tensors(node, torch.float32)
    assert "float16" in cpu.unsupported(node, p, torch.zeros(2, 1, 3, dtype=torch.float16))
    trained = {k: v.clone().requires_grad_() for k, v in p.items()}
    assert "gradients" in cpu.unsupported(node, trained, torch.zeros(2, 1, 3))
    assert cpu.unsupported(node, p, torch.zeros(2, 1, 3)) is None


# Whole graphs through the simulator: every backend gives the reference's outputs.


def feedforward() -> hub.Graph:
    return hub.Graph.chain(
        hub.Input(shape=(2, 8, 8)),
        hub.Conv2d(weight=dyadic(4, 2, 3, 3), bias=dyadic(4), padding=(1, 1)),
        hub.IF(threshold=0.5, reset="subtract"),
        hub.SumPool2d(kernel_size=(2, 2), stride=(2, 2)),
        hub.Flatten(),
        hub.Affine(weight=dyadic(16, 64), bias=dyadic(16)),
        hub.CubaLIF(alpha=0.5, beta=0.75, threshold=0.5, delay=2, refractory=1),
        hub.Affine(weight=dyadic(5, 16)),
        hub.LI(beta=0.875),
    )


def recurrent() -> hub.Graph:
    return hub.Graph(
        {"in": hub.Input(shape=(3,)), "aff": hub.Affine(weight=dyadic(4, 3)),
         "lif": hub.LIF(beta=0.75, threshold=0.25), "rec": hub.Linear(weight=dyadic(4, 4)),
         "out": hub.Output()},
        [("in", "aff"), ("aff", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "out")])


@needs_compiler
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("build", [feedforward, recurrent])
def test_fused_backend_runs_whole_graphs_identically(build, dtype, monkeypatch):
    graph = build()
    shape = graph.plan().output_shapes[graph.inputs[0]]
    x = torch.tensor(dyadic(12, 3, *shape) + 0.25, dtype=dtype)
    want = hub.simulate(graph, x, dtype=dtype)
    fused = []
    monkeypatch.setattr(cpu, "run", lambda *a, **k: fused.append(a[0]) or fused_run(*a, **k))
    assert torch.equal(hub.simulate(graph, x, dtype=dtype, backend="fused"), want)
    # the neuron on the cycle a recurrent edge closes steps; otherwise each neuron layer runs fused
    assert len(fused) == (3 if build is feedforward else 0)
    # state carries over between calls and into single steps, as in the reference
    sim = hub.Simulator(graph, dtype=dtype, backend="fused")
    parts = [sim(x[:5]), torch.stack([sim.step(x[5]), sim.step(x[6])]), sim(x[7:])]
    assert torch.equal(torch.cat(parts), want)


@needs_compiler
def test_fused_backend_trains_like_the_reference():
    """The input's gradient has the reference's bits; the weights' gradients, which the layers
    over all steps sum in one call's order (:mod:`hub.over_time`), are the reference's up to
    rounding."""
    graph = feedforward()
    x = torch.tensor(dyadic(10, 2, 2, 8, 8) + 0.25)
    runs = []
    for backend in ("torch", "fused"):
        sim = hub.Simulator(graph, trainable=True, backend=backend)
        # the neurons' own parameters stay fixed so the fused kernels are used for them
        for name, param in sim.named_parameters():
            param.requires_grad_(not any(k in name for k in ("beta", "alpha", "threshold",
                                                              "v_", "gain", "amplitude")))
        xg = x.clone().requires_grad_()
        sim(xg).square().sum().backward()
        runs.append((xg.grad, {n: q.grad for n, q in sim.named_parameters()
                               if q.grad is not None}))
    (want_x, want), (got_x, got) = runs
    assert torch.equal(got_x, want_x) and want_x.abs().sum() > 0
    assert want.keys() == got.keys() and want
    eps = torch.finfo(torch.float32).eps
    for name in want:
        error = (got[name] - want[name]).abs().max()
        assert error <= 64 * x.shape[0] * eps * want[name].abs().max(), name


@needs_compiler
def test_trainable_neuron_parameters_fall_back_to_the_reference():
    graph = feedforward()
    x = torch.tensor(dyadic(6, 2, 2, 8, 8) + 0.25)
    want = hub.Simulator(graph, trainable=True)(x)
    got = hub.Simulator(graph, trainable=True, backend="fused")(x)
    assert torch.equal(got, want)
    got.sum().backward()  # the gradients reach the neuron parameters through the reference


@needs_compiler
def test_an_input_passed_straight_out_is_a_copy_as_when_stepping():
    graph = hub.Graph.chain(hub.Input(shape=(3,)), hub.Output())
    x = torch.tensor(dyadic(4, 2, 3))
    out = hub.simulate(graph, x, backend="fused")
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()


@pytest.fixture
def never_spikes():
    """A plugin's neuron type: a LIF whose own step never spikes (its voltage still moves)."""

    class NeverSpikes(hub.LIF):
        def step(self, p, x, state):
            out, new = super().step(p, x, state)
            return torch.zeros_like(out), new

    yield NeverSpikes
    _REGISTRY.pop("NeverSpikes", None)


@needs_compiler
@pytest.mark.parametrize("backend", ["fused", "auto"])
def test_a_neuron_that_overrides_step_runs_its_own_step(backend, never_spikes):
    fields = {"beta": 0.75, "threshold": 0.25}
    x = torch.tensor(dyadic(8, 2, 6) + 0.5)
    quiet = hub.Graph.chain(hub.Input(shape=(6,)), never_spikes(**fields))
    builtin = hub.Graph.chain(hub.Input(shape=(6,)), hub.LIF(**fields))
    assert hub.simulate(builtin, x, backend=backend).sum() > 0  # the built-in one spikes here
    sim = hub.Simulator(quiet, backend=backend)
    out = sim(x)
    assert torch.equal(out, hub.simulate(quiet, x, backend="torch")) and not out.any()
    assert "overrides Neuron.step" in sim.paths["neverspikes1"]
    assert "overrides Neuron.step" in cpu.unsupported(quiet.nodes["neverspikes1"], {}, x)


@needs_compiler
def test_auto_runs_each_layer_on_the_fastest_identical_path(monkeypatch, caplog):
    graph = feedforward()
    x = torch.tensor(dyadic(12, 3, 2, 8, 8) + 0.25)
    want = hub.simulate(graph, x, backend="torch")
    fused = []
    monkeypatch.setattr(cpu, "run", lambda *a, **k: fused.append(a[0]) or fused_run(*a, **k))
    with caplog.at_level("DEBUG", logger="hub.simulate"):
        sim = hub.Simulator(graph)  # "auto" is the default
        assert sim.backend == "auto"
        assert torch.equal(sim(x), want)
    assert len(fused) == 3
    neurons = [n for n, node in graph.flat().nodes.items() if isinstance(node, hub.Neuron)]
    assert set(sim.paths) == set(neurons)
    assert set(sim.paths.values()) == {cpu.PATH}
    assert all(any(name in r.getMessage() and cpu.PATH in r.getMessage() for r in caplog.records)
               for name in neurons)
    # gradients with respect to the input come from the kernels' backward, bit for bit
    grads = []
    for backend in ("torch", "auto"):
        xg = x.clone().requires_grad_()
        hub.simulate(graph, xg, backend=backend).square().sum().backward()
        grads.append(xg.grad)
    assert torch.equal(grads[1], grads[0])


@needs_compiler
def test_max_pooling_runs_once_over_all_steps_with_the_same_values_and_gradients(monkeypatch):
    """Spikes pooled: ties everywhere, so the gradient must go where stepping sends it."""
    graph = hub.Graph.chain(
        hub.Input(shape=(2, 8, 8)),
        hub.Conv2d(weight=dyadic(4, 2, 3, 3), padding=(1, 1)),
        hub.IF(threshold=0.25),
        hub.MaxPool2d(kernel_size=(2, 2), stride=(2, 2)),
        hub.Flatten(),
        hub.Affine(weight=dyadic(5, 64)),
        hub.LIF(beta=0.75, threshold=0.5))
    x = torch.tensor(dyadic(9, 3, 2, 8, 8) + 0.25)
    calls, pooled = [], []
    step, pool = hub.MaxPool2d.step, cpu.max_pool2d
    monkeypatch.setattr(hub.MaxPool2d, "step", lambda *a: calls.append(a[2].shape) or step(*a))
    monkeypatch.setattr(cpu, "max_pool2d", lambda n, x: pooled.append(x.shape) or pool(n, x))
    g = torch.tensor(dyadic(9, 3, 5))
    results = []
    for backend in ("torch", "auto"):
        xg = x.clone().requires_grad_()
        out = hub.simulate(graph, xg, backend=backend)
        out.backward(g)
        results.append((out.detach(), xg.grad))
    # the reference steps torch's max pooling; "auto" runs the compiled one on all steps at once
    assert calls[0] == (3, 4, 8, 8) and pooled[-1] == (9 * 3, 4, 8, 8)
    assert results[0][0].any()
    for got, want in zip(results[1], results[0]):
        assert torch.equal(got, want)


@needs_compiler
def test_auto_steps_where_running_node_by_node_would_exceed_the_memory_limit():
    """Node by node keeps whole sequences; stepping keeps one step: under a limit that only
    stepping fits, "auto" steps (and says so) while a forced kernel is refused."""
    graph = hub.Graph.chain(hub.Input(shape=(64,)), hub.Affine(weight=dyadic(64, 64)),
                            hub.LIF(beta=0.5, threshold=0.5), hub.Affine(weight=dyadic(8, 64)),
                            hub.LIF(beta=0.5, threshold=0.5))
    x = torch.tensor(dyadic(200, 4, 64))
    want = hub.simulate(graph, x, backend="torch")
    try:
        for exponent in range(10, 30):  # the smallest power of two that stepping fits in
            hub.limits.configure(max_state_bytes=2 ** exponent)
            try:
                hub.simulate(graph, x, backend="torch")
                break
            except HubError:
                continue
        with pytest.raises(HubError, match="max_state_bytes"):
            hub.simulate(graph, x, backend="fused")
        sim = hub.Simulator(graph)
        assert torch.equal(sim(x), want)
        assert len(sim.paths) == 2
        assert all("max_state_bytes" in path for path in sim.paths.values())
    finally:
        hub.limits.configure()


@needs_compiler
def test_auto_leaves_trainable_neurons_to_the_reference_and_steps_a_cycle_on_the_kernel(
        monkeypatch):
    monkeypatch.setattr(cpu, "run", lambda *a, **k: pytest.fail("the kernel ran"))
    x = torch.tensor(dyadic(6, 2, 2, 8, 8) + 0.25)
    graph = feedforward()
    sim = hub.Simulator(graph, trainable=True)
    out = sim(x)
    assert torch.equal(out, hub.Simulator(graph, trainable=True, backend="torch")(x))
    assert all("require gradients" in path for path in sim.paths.values())
    out.sum().backward()
    assert all(q.grad is not None for name, q in sim.named_parameters()
               if name.endswith(("beta", "threshold")))
    # a neuron on a cycle steps, one kernel call per step (not over all steps: cpu.run)
    graph = recurrent()
    sim = hub.Simulator(graph)
    y = torch.tensor(dyadic(6, 2, 3))
    assert torch.equal(sim(y), hub.simulate(graph, y, backend="torch"))
    assert sim.paths["lif"].startswith(f"{cpu.PATH}, one step at a time")
    assert "recurrent" in sim.paths["lif"]
    sim = hub.Simulator(graph, trainable=True)
    assert torch.equal(sim(y), hub.simulate(graph, y, backend="torch"))
    assert sim.paths["lif"].startswith("reference (on a cycle")


def test_auto_without_a_compiler_steps_quietly(monkeypatch, recwarn):
    monkeypatch.setattr(_auto, "_found", {})
    monkeypatch.setattr(cpu, "available", lambda: (False, "no C++ compiler found"))
    graph = feedforward()
    x = torch.tensor(dyadic(4, 1, 2, 8, 8))
    sim = hub.Simulator(graph)
    assert torch.equal(sim(x), hub.simulate(graph, x, backend="torch"))
    assert not [w for w in recwarn if issubclass(w.category, KernelWarning)]
    assert all("no C++ compiler" in path for path in sim.paths.values())


def test_without_a_compiler_the_fused_backend_warns_and_steps(monkeypatch):
    monkeypatch.setattr(cpu, "available", lambda: (False, "no C++ compiler found"))
    graph = feedforward()
    x = torch.tensor(dyadic(4, 1, 2, 8, 8))
    with pytest.warns(KernelWarning, match="no C.. compiler"):
        got = hub.simulate(graph, x, backend="fused")
    assert torch.equal(got, hub.simulate(graph, x))


def test_dtypes_the_kernels_lack_step_through_the_reference():
    graph = feedforward()
    x = torch.tensor(dyadic(5, 2, 2, 8, 8), dtype=torch.float16)
    want = hub.simulate(graph, x, dtype=torch.float16)
    assert torch.equal(hub.simulate(graph, x, dtype=torch.float16, backend="fused"), want)


def test_unknown_backend_is_refused():
    with pytest.raises(HubError, match="backend"):
        hub.Simulator(feedforward(), backend="numba")


def test_cupy_backend_says_why_it_cannot_run():
    from hub.kernels import cupy as cupy_kernels

    ok, why = cupy_kernels.available()
    if ok:
        pytest.skip("CuPy and a GPU are present; the GPU tests below cover it")
    with pytest.raises(HubError, match="cupy"):
        hub.Simulator(feedforward(), backend="cupy")
    assert why


def test_cupy_kernels_match_the_reference():
    from hub.kernels import cupy as cupy_kernels

    ok, why = cupy_kernels.available()
    if not ok:
        pytest.skip(f"backend='cupy' needs CuPy and a CUDA GPU: {why}")
    graph = feedforward()
    for dtype in (torch.float32, torch.float16):
        x = torch.tensor(dyadic(12, 3, 2, 8, 8) + 0.25, dtype=dtype, device="cuda")
        want = hub.simulate(graph, x, dtype=dtype, device="cuda")
        assert torch.equal(hub.simulate(graph, x, dtype=dtype, device="cuda", backend="cupy"),
                           want)


# The CUDA source has no GPU to run on here, so it is also compiled as plain C++ (CUDA's keywords
# stubbed, one "thread" per neuron in a loop) and checked bit for bit, float32 forward and
# backward, on a few conventions; HUB_EMULATE_ALL=1 checks the whole convention space (slow).

_STUB = r"""
#include <cmath>
#define __global__
#define __device__
#define __forceinline__ inline
struct Dim { long long x; };
static Dim blockIdx, blockDim = {1}, threadIdx = {0};
"""
_DRIVER = r"""
extern "C" void run_forward(long long M, PARAMS_IN, long long T, long long K, const R* x,
        R* out, R* v, R* i, R* s, int* r, R* sv, unsigned char* sf) {
    for (long long m = 0; m < M; ++m) { blockIdx.x = m; forward(beta, gain, v_leak, alpha,
        current_gain, threshold, v_reset, amplitude, T, M, K, x, out, v, i, s, r, sv, sf); } }
extern "C" void run_backward(long long M, PARAMS_IN, long long T, long long K, const R* go,
        const R* sv, const unsigned char* sf, const R* s0, R* gv, R* gi, R* gs, R* gx) {
    for (long long m = 0; m < M; ++m) { blockIdx.x = m; backward(beta, gain, v_leak, alpha,
        current_gain, threshold, v_reset, amplitude, T, M, K, go, sv, sf, s0, gv, gi, gs, gx); } }
"""


class _EmulatedCuda:
    """The CuPy kernels' source compiled for the CPU, with the launch interface of cpu._Kernel."""

    def __init__(self, node: hub.Neuron, p: dict, directory) -> None:
        from hub.kernels import cupy as cupy_kernels

        spiking = node.spiking
        defines = {
            "R_TYPE": "float", "SPIKING": int(spiking), "LEAKY": int(node.leaky),
            "CURRENT": int(node.current),
            "INCLUSIVE": int(spiking and node.comparison == ">="),
            "RESET": cupy_kernels._RESETS[node.reset] if spiking else 2,
            "TIMING_NEXT": int(spiking and node.reset_timing == "next"),
            "MODE": cupy_kernels._MODES[node.spike_mode] if spiking else 0,
            "REFRACTORY": node.refractory if spiking else 0,
            "ORDER_NEW": int(node.current and node.current_order == "new"), "SLOPE": "25.0f"}
        source = ("".join(f"#define {k} {v}\n" for k, v in defines.items()) + _STUB
                  + cupy_kernels.SOURCE.replace("#include <cuda_fp16.h>", "") + _DRIVER)
        name = directory / hashlib.sha1(source.encode()).hexdigest()[:12]
        if not name.with_suffix(".so").exists():
            name.with_suffix(".cpp").write_text(source)
            subprocess.run([shutil.which("g++") or "c++", "-O1", "-ffp-contract=off", "-shared",
                            "-fPIC", "-std=c++14", str(name.with_suffix(".cpp")), "-o",
                            str(name.with_suffix(".so"))], check=True)
        self.lib = ctypes.CDLL(str(name.with_suffix(".so")))
        self.size = int(np.prod(SHAPE))
        dummy = torch.zeros(self.size)
        self.keep = [torch.broadcast_to(p[n], SHAPE).reshape(-1).contiguous() if n in p
                     else dummy for n in cpu.PARAMS]
        self.refractory = bool(spiking and node.refractory)

    def _call(self, fn, total: int, steps: int, *tensors) -> None:
        ptr = [ctypes.c_void_p(None if t is None else t.data_ptr()) for t in tensors]
        params = [ctypes.c_void_p(t.data_ptr()) for t in self.keep]
        fn(ctypes.c_longlong(total), *params, ctypes.c_longlong(steps),
           ctypes.c_longlong(self.size), *ptr)

    def forward(self, x, v, i, s, r, save, out=None):
        out = torch.empty_like(x) if out is None else out
        save_v = torch.empty_like(x) if save else None
        save_f = torch.empty(x.shape, dtype=torch.uint8) if save and self.refractory else None
        self._call(self.lib.run_forward, x[0].numel(), x.shape[0], x, out, v, i, s, r, save_v,
                   save_f)
        return out, save_v, save_f

    def backward(self, gout, save_v, save_f, s0, gv, gi, gs):
        gx = torch.empty_like(gout)
        self._call(self.lib.run_backward, gout[0].numel(), gout.shape[0], gout, save_v, save_f,
                   s0, gv, gi, gs, gx)
        return gx


EMULATED = [
    ("LIF", dict(comparison=">", reset="zero", spike_mode="binary", delay=1)),
    ("CubaLIF", dict(comparison=">=", reset="subtract", spike_mode="multi", refractory=2,
                     current_order="previous")),
    ("IF", dict(reset="zero", reset_timing="next", spike_mode="graded")),
    ("CubaLIF", dict(reset="subtract", reset_timing="next", spike_mode="graded")),
    ("LIF", dict(reset="none", spike_mode="multi", comparison=">=")),
    ("CubaLI", dict(current_order="new")),
]
if os.environ.get("HUB_EMULATE_ALL"):
    EMULATED = [(kind, dict(comparison=c, reset=r, reset_timing=t, spike_mode=m, refractory=f,
                            delay=d, current_order=o))
                for kind, c, r, t, m, f, d, o in itertools.product(
                    SPIKING, (">", ">="), ("zero", "subtract", "none"), ("same", "next"),
                    ("binary", "multi", "graded"), (0, 2), (0, 2), ("new", "previous"))
                if not (t == "next" and f) and (kind == "CubaLIF" or o == "new")]


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="no C++ compiler")
@pytest.mark.parametrize("kind, fields", EMULATED)
def test_cupy_source_emulated_on_the_cpu_matches_the_reference(kind, fields, tmp_path_factory):
    directory = tmp_path_factory.getbasetemp() / "emulated-cuda"
    directory.mkdir(exist_ok=True)
    rng = np.random.default_rng(11)
    for exact in (True, False):
        node = make(kind, rng, exact, **fields)
        p = tensors(node, torch.float32)
        x = inputs(rng, exact, torch.float32)
        g = torch.tensor(rng.normal(size=x.shape), dtype=torch.float32)
        results = []
        for emulated in (False, True):
            def run(n, q, xs, state, emulated=emulated):
                if not emulated:
                    return reference(n, q, xs, state)
                return cpu.run(n, q, xs, state, kernel=_EmulatedCuda(n, q, directory))
            xg = x.clone().requires_grad_()
            first, state = run(node, p, xg[:7], node.initial_state((3, *SHAPE), x))
            second, state = run(node, p, xg[7:], state)
            out = torch.cat([first, second])
            out.backward(g)
            # and a gradient that is the same at every step, which this kernel takes per step
            xs = x.clone().requires_grad_()
            run(node, p, xs, node.initial_state((3, *SHAPE), x))[0].sum().backward()
            results.append((out.detach(), state["v"].detach(), xg.grad, xs.grad))
        for got, want in zip(results[1], results[0]):
            assert torch.equal(got, want), f"{node!r} exact={exact}"


def chain() -> hub.Graph:
    return hub.Graph.chain(hub.Input(shape=(3,)), hub.Affine(weight=dyadic(6, 3), bias=dyadic(6)),
                           hub.LIF(beta=0.75, threshold=0.25, refractory=1),
                           hub.Linear(weight=dyadic(4, 6)),
                           hub.CubaLIF(alpha=0.5, beta=0.75, threshold=0.25))


def one_neuron(kind: str) -> Callable[[], hub.Graph]:
    def build() -> hub.Graph:
        node, shape = EXAMPLES[kind]
        return hub.Graph.chain(hub.Input(shape=shape), node)
    build.__name__ = kind
    return build


@needs_compiler
@pytest.mark.parametrize("build", [chain, recurrent, *map(one_neuron, ("LoihiCUBA", "AlphaLIF",
                                                                         "QIF"))],
                         ids=lambda build: build.__name__)
def test_a_run_continued_on_another_batch_size_broadcasts_or_is_refused(build):
    """The state of one sample goes on for several, as the reference's step broadcasts it; a
    state that does not broadcast is refused, not run past by the kernel (which corrupted the
    heap)."""
    graph = build()
    shape = graph.plan().output_shapes[graph.inputs[0]]
    one, four = (torch.tensor(dyadic(5, n, *shape) * 8 + 2) for n in (1, 4))
    runs, sims = [], [hub.Simulator(graph, backend=backend) for backend in ("auto", "torch")]
    for sim in sims:
        runs.append([sim(one), sim(four), sim(four)])
    assert all(torch.equal(a, b) for a, b in zip(*runs))
    assert all(path.startswith(cpu.PATH) for path in sims[0].paths.values())
    sim = hub.Simulator(graph)
    sim(torch.tensor(dyadic(5, 2, *shape) * 8))
    with pytest.raises(hub.errors.ShapeError, match="reset()"):
        sim(torch.tensor(dyadic(5, 3, *shape) * 8))
