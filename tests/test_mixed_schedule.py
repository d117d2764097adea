"""Graphs with recurrent edges: the nodes on a cycle step together, the rest run over all steps.

Every run is compared, bit for bit, with the same graph stepped whole (as ``backend="torch"``
steps it, and as the default backend did before): outputs, input gradients, the state left
behind, the last values, and a run continued from that state.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hub
from hub import over_time
from hub.simulate import _tensors
from hub.kernels import cpu

ok, reason = cpu.available()
needs_compiler = pytest.mark.skipif(not ok, reason=f"fused CPU kernels unavailable: {reason}")


def floats(*shape: int, seed: int = 0) -> np.ndarray:
    """Random floats that are not dyadic, so that a different summation order would show."""
    return np.random.default_rng(seed).normal(0, 0.6, shape).astype(np.float32)


def behind() -> hub.Graph:
    """Feed-forward layers, then a cycle (a neuron and its recurrent weight), then more layers."""
    return hub.Graph(
        {"in": hub.Input(shape=(7,)), "fc1": hub.Affine(weight=floats(9, 7), bias=floats(9)),
         "lif1": hub.LIF(beta=0.8, threshold=0.4),
         "fc2": hub.Linear(weight=floats(6, 9, seed=1)),
         "lif2": hub.LIF(beta=0.7, threshold=0.3),
         "rec": hub.Linear(weight=floats(6, 6, seed=2)),
         "fc3": hub.Affine(weight=floats(5, 6, seed=3), bias=floats(5, seed=3)),
         "lif3": hub.CubaLIF(alpha=0.5, beta=0.75, threshold=0.25), "out": hub.Output()},
        [("in", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"), ("lif2", "rec"),
         ("rec", "lif2"), ("lif2", "fc3"), ("fc3", "lif3"), ("lif3", "out")])


def in_front() -> hub.Graph:
    """A cycle of two neurons first (one read out after it before the other runs in the
    graph's order), then feed-forward layers, with a skip from the input around the cycle."""
    return hub.Graph(
        {"in": hub.Input(shape=(7,)), "a": hub.LIF(beta=0.9, threshold=0.5),
         "ab": hub.Linear(weight=floats(7, 7, seed=4)), "b": hub.IF(threshold=0.35),
         "ba": hub.Linear(weight=floats(7, 7, seed=5)),
         "read": hub.Affine(weight=floats(4, 7, seed=6), bias=floats(4, seed=6)),
         "skip": hub.Linear(weight=floats(4, 7, seed=7)),
         "lif": hub.LIF(beta=0.5, threshold=0.2), "out": hub.Output(), "spikes": hub.Output()},
        [("in", "a"), ("a", "read"), ("a", "ab"), ("ab", "b"), ("b", "ba"), ("ba", "a"),
         ("in", "skip"), ("read", "lif"), ("skip", "lif"), ("lif", "out"), ("b", "spikes")])


def tensors(value) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in _tensors(value).items()}


def run(graph: hub.Graph, x: torch.Tensor, how: str, monkeypatch) -> dict:
    """Output, input gradient, state, last values, and a continued run, for one way to run."""
    with monkeypatch.context() as m:
        if how == "stepped":  # the whole graph steps, as it did for any recurrent edge
            m.setattr(hub.Simulator, "_stepped",
                      lambda self, like: dict.fromkeys(self.graph.nodes, "reference"))
        sim = hub.Simulator(graph, backend="torch" if how == "torch" else "auto")
        xg = x.clone().requires_grad_()
        y = sim(xg)
        outs = list(y.values()) if isinstance(y, dict) else [y]
        sum(((o * torch.linspace(-1, 1, o.numel()).reshape(o.shape)).sum() for o in outs)
            ).backward()
        state = {name: tensors(s) for name, s in sim._state.items()}
        values = {k: v.detach() for k, v in sim.values.items()}
        with torch.no_grad():
            more = sim(x.flip(0))
            stepped = sim.step(x[0])
        return {"out": y, "grad": xg.grad, "state": state, "values": values, "more": more,
                "step": stepped, "paths": dict(sim.paths)}


def same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(u, v) for u, v in zip(a, b))
    return torch.equal(a, b)


def assert_runs_alike(graph: hub.Graph, x: torch.Tensor, monkeypatch) -> dict:
    want = run(graph, x, "stepped", monkeypatch)
    spikes = torch.cat([o.flatten() for o in (want["out"].values() if isinstance(
        want["out"], dict) else [want["out"]])])
    assert 0 < float((spikes != 0).float().mean()) < 1, "the test input must make it fire"
    for how in ("auto", "torch"):
        got = run(graph, x, how, monkeypatch)
        for part in ("out", "grad", "state", "values", "more", "step"):
            assert same(got[part], want[part]), f"{how}: {part} differs from stepping's"
    return run(graph, x, "auto", monkeypatch)["paths"]


@needs_compiler
@pytest.mark.parametrize("build", [behind, in_front])
def test_a_cycle_steps_and_the_rest_runs_over_all_steps_with_stepping_bits(build, monkeypatch):
    graph = build()
    x = torch.tensor(floats(13, 3, 7, seed=9)).abs()
    paths = assert_runs_alike(graph, x, monkeypatch)
    cycle = {"behind": ("lif2",), "in_front": ("a", "b")}[build.__name__]
    for name, path in paths.items():
        if name in cycle:
            assert "on a cycle" in path and all(n in path for n in cycle), path
        else:
            assert path == cpu.PATH, f"{name} runs {path}"


@needs_compiler
def test_the_layers_off_the_cycle_run_once_over_all_steps(monkeypatch):
    """Counted: each layer off the cycle is called once on the whole sequence; the cycle's
    nodes step together, and only the sequence read after the cycle is stacked."""
    graph = behind()
    x = torch.tensor(floats(11, 2, 7, seed=3)).abs()
    hub.simulate(graph, x)  # the one-time checks of the layers over all steps, done here
    calls: dict[str, list[int]] = {}
    sim = hub.Simulator(graph)
    names = {id(node): name for name, node in sim.graph.nodes.items()}
    # a layer runs in one call (over_time.run), through a kernel (cpu.run), or, where one call
    # was not verified to give stepping's bits, stepped on its own sequence (over_time.step)
    for module, way in ((over_time, "run"), (cpu, "run"), (over_time, "step")):
        def counted(node, p, total, state, _call=getattr(module, way)):
            calls.setdefault(names[id(node)], []).append(total.shape[0])
            return _call(node, p, total, state)
        monkeypatch.setattr(module, way, counted)
    cycles, stepper = [], hub.Simulator._cycle
    monkeypatch.setattr(hub.Simulator, "_cycle", lambda self, names, stacked, steps, *rest: (
        cycles.append((names, stacked, steps)), stepper(self, names, stacked, steps, *rest)))
    sim(x)
    assert calls == {name: [11] for name in ("fc1", "lif1", "fc2", "fc3", "lif3")}
    assert cycles == [(("lif2", "rec"), ("lif2",), 11)]  # rec is read on the cycle alone


@needs_compiler
def test_the_debug_log_says_which_nodes_step_together(caplog):
    with caplog.at_level("DEBUG", logger="hub.simulate"):
        hub.Simulator(in_front())(torch.ones(3, 1, 7))
    assert "a, ab, b, ba step together" in caplog.text


def test_without_kernels_a_recurrent_graph_steps_whole():
    sim = hub.Simulator(behind(), backend="torch")
    sim(torch.ones(3, 1, 7))
    assert set(sim.paths.values()) == {"reference"}


@needs_compiler
def test_the_memory_check_counts_what_the_mixed_run_keeps():
    """Running node by node keeps every sequence off the cycle; stepping keeps the outputs only:
    a limit between the two makes the default backend step the whole graph, as it says."""
    graph = behind()
    x = torch.ones(50, 64, 7)
    sim = hub.Simulator(graph)
    with torch.no_grad():
        layered, _ = sim._memory_need(64, 50, x, False, True)
        stepping, _ = sim._memory_need(64, 50, x, False, False)
    assert stepping < layered
    per_step = 64 * 4
    # fc1 and lif1 (9 values), fc2 (6), fc3 and lif3 (5 each) kept for 50 steps; lif2 (6)
    # stacked from its steps; the input (7) kept; the output (5) stacked twice
    kept = 50 * per_step * (7 + 9 + 9 + 6 + 2 * 6 + 5 + 5 + 2 * 5)
    assert layered - stepping == kept - 50 * per_step * 2 * 5
    try:
        hub.limits.configure(max_state_bytes=(layered + stepping) // 2)
        with torch.no_grad():
            assert torch.equal(sim(x), hub.simulate(graph, x, backend="torch"))
    finally:
        hub.limits.configure()
    assert all("max_state_bytes" in path for path in sim.paths.values())


@needs_compiler
def test_snntorch_rleaky_between_layers_runs_with_stepping_bits(monkeypatch):
    snn = pytest.importorskip("snntorch")
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(7, 12), snn.RLeaky(beta=0.8, linear_features=12,
                                                       init_hidden=True),
                          nn.Linear(12, 5), snn.Leaky(beta=0.6, init_hidden=True))
    graph = hub.load(model, input_shape=(7,))
    assert any(graph.plan().recurrent.values())
    x = (torch.rand(16, 4, 7) < 0.5).float()
    paths = assert_runs_alike(graph, x, monkeypatch)
    assert sum(path == cpu.PATH for path in paths.values()) == 1
    assert sum("on a cycle" in path for path in paths.values()) == 1
    # and the schedule's run is snnTorch's own, step by step (more input: more spikes)
    from snntorch import utils

    utils.reset(model)
    with torch.no_grad():
        want = torch.stack([model(3 * xt) for xt in x])
    assert want.sum() >= 10 and torch.equal(hub.simulate(graph, 3 * x), want)


@needs_compiler
def test_norse_lif_recurrent_before_a_layer_runs_with_stepping_bits(monkeypatch):
    norse = pytest.importorskip("norse.torch")

    torch.manual_seed(1)
    p = norse.LIFParameters(tau_syn_inv=torch.tensor(200.0), tau_mem_inv=torch.tensor(100.0),
                            v_th=torch.tensor(0.3))
    model = norse.SequentialState(norse.LIFRecurrentCell(6, 10, p),
                                  torch.nn.Linear(10, 4), norse.LIFCell(p))
    graph = hub.load(model, source="norse", input_shape=(6,))
    assert any(graph.plan().recurrent.values())
    x = (torch.rand(30, 3, 6) < 0.6).float() * 4
    paths = assert_runs_alike(graph, x, monkeypatch)
    assert sum(path == cpu.PATH for path in paths.values()) == 1
    # and the schedule's run is Norse's own, step by step
    with torch.no_grad():
        state, outs = None, []
        for xt in x:
            out, state = model(xt, state)
            outs.append(out)
    want = torch.stack(outs)
    assert want.sum() >= 10 and torch.equal(hub.simulate(graph, x), want)
