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
            # without gradients from the start (a cycle's sequences are then written in place)
            fresh = hub.Simulator(graph, backend="torch" if how == "torch" else "auto")
            alone = fresh(x)
            alone_state = {name: tensors(s) for name, s in fresh._state.items()}
        return {"out": y, "grad": xg.grad, "state": state, "values": values, "more": more,
                "step": stepped, "alone": alone, "alone state": alone_state,
                "paths": dict(sim.paths)}


def same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(u, v) for u, v in zip(a, b))
    if a is None or b is None:
        return a is b
    if a.is_floating_point():  # bit for bit: torch.equal takes -0.0 for 0.0
        bits = {4: torch.int32, 8: torch.int64}[a.element_size()]
        return (a.dtype == b.dtype and a.shape == b.shape
                and torch.equal(a.contiguous().view(bits), b.contiguous().view(bits)))
    return torch.equal(a, b)


def assert_runs_alike(graph: hub.Graph, x: torch.Tensor, monkeypatch) -> dict:
    want = run(graph, x, "stepped", monkeypatch)
    spikes = torch.cat([o.flatten() for o in (want["out"].values() if isinstance(
        want["out"], dict) else [want["out"]])])
    assert 0 < float((spikes != 0).float().mean()) < 1, "the test input must make it fire"
    for how in ("auto", "torch"):
        got = run(graph, x, how, monkeypatch)
        for part in ("out", "grad", "state", "values", "more", "step", "alone", "alone state"):
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


# -- a cycle's neurons step on the fused kernel, one call per step ------------------------------

#: Neurons on a cycle, with every convention the kernel steps (all with stepping's bits).
CYCLE_NEURONS = {
    "snntorch": lambda: hub.LIF(beta=0.8, threshold=0.4, reset="subtract", reset_timing="next"),
    "zero-reset": lambda: hub.LIF(beta=0.7, threshold=0.3, v_reset=-0.125, v_init=0.1),
    "refractory": lambda: hub.LIF(beta=0.9, threshold=0.3, refractory=2, v_leak=0.05),
    "multi": lambda: hub.IF(threshold=0.3, spike_mode="multi", comparison=">=", gain=0.7),
    "graded": lambda: hub.LIF(beta=0.6, threshold=0.2, spike_mode="graded", amplitude=0.5,
                              reset="none"),
    "cuba-new": lambda: hub.CubaLIF(alpha=0.5, beta=0.75, threshold=0.25),
    "cuba-previous": lambda: hub.CubaLIF(alpha=0.6, beta=0.8, threshold=0.2,
                                         current_order="previous", reset="zero",
                                         reset_timing="next", current_gain=1.5),
    "per-neuron": lambda: hub.LIF(beta=np.linspace(0.5, 0.95, 9).astype(np.float32),
                                  threshold=np.linspace(0.2, 0.6, 9).astype(np.float32)),
}


def recurrent_neuron(neuron: hub.Node, seed: int) -> hub.Graph:
    """A neuron with its recurrent weight between layers."""
    return hub.Graph(
        {"in": hub.Input(shape=(7,)),
         "fc": hub.Affine(weight=floats(9, 7, seed=seed), bias=floats(9, seed=seed + 1)),
         "n": neuron, "rec": hub.Linear(weight=floats(9, 9, seed=seed + 2)),
         "read": hub.Affine(weight=floats(5, 9, seed=seed + 3), bias=floats(5, seed=seed + 4)),
         "lif": hub.LIF(beta=0.5, threshold=0.2), "out": hub.Output()},
        [("in", "fc"), ("fc", "n"), ("n", "rec"), ("rec", "n"), ("n", "read"), ("read", "lif"),
         ("lif", "out")])


def two_neurons(seed: int) -> hub.Graph:
    """A cycle of two neurons of which only the second is read after it (the first's steps are
    not kept), fed by two layers whose sum the first neuron adds to its recurrent input."""
    return hub.Graph(
        {"in": hub.Input(shape=(7,)), "fa": hub.Affine(weight=floats(8, 7, seed=seed),
                                                       bias=floats(8, seed=seed + 1)),
         "fb": hub.Linear(weight=floats(8, 7, seed=seed + 2)),
         "a": hub.CubaLIF(alpha=0.5, beta=0.875, threshold=0.3),
         "ab": hub.Linear(weight=floats(6, 8, seed=seed + 3)),
         "b": hub.LIF(beta=0.75, threshold=0.25, reset="subtract", reset_timing="next"),
         "ba": hub.Linear(weight=floats(8, 6, seed=seed + 4)), "out": hub.Output()},
        [("in", "fa"), ("in", "fb"), ("fa", "a"), ("fb", "a"), ("a", "ab"), ("ab", "b"),
         ("b", "ba"), ("ba", "a"), ("b", "out")])


def assert_cycle_steps_on_the_kernel(graph: hub.Graph, x: torch.Tensor, neurons: tuple[str, ...],
                                     monkeypatch) -> None:
    """The graph runs with stepping's bits (:func:`assert_runs_alike`), the neurons ``neurons``
    of its cycle step on the kernel (never on the reference step), and they fire."""
    paths = assert_runs_alike(graph, x, monkeypatch)
    for name in neurons:
        assert paths[name].startswith(f"{cpu.PATH}, one step at a time (on a cycle"), paths[name]
    stepped: dict[str, list[str]] = {"auto": [], "torch": []}
    step = hub.Neuron.step
    for how, names in stepped.items():
        sim = hub.Simulator(graph, backend=how)
        which = {id(node): name for name, node in sim.graph.nodes.items()}
        monkeypatch.setattr(hub.Neuron, "step", lambda self, *a: (
            names.append(which[id(self)]), step(self, *a))[1])
        with torch.no_grad():
            sim(x)
    assert not set(neurons) & set(stepped["auto"]) and set(neurons) <= set(stepped["torch"])
    monkeypatch.undo()
    stepper = hub.Simulator(graph, backend="torch")
    with torch.no_grad():
        for name, values in zip(neurons, zip(*[(
                stepper.step(xt), [stepper.values[n] for n in neurons])[1] for xt in x])):
            fired = float((torch.stack(values) != 0).float().mean())
            assert 0 < fired < 1, f"{name} must fire at times, not always"


@needs_compiler
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("kind", CYCLE_NEURONS)
def test_a_neuron_on_a_cycle_steps_on_the_kernel_with_stepping_bits(kind, seed, monkeypatch):
    """Every convention the kernel takes, on a cycle: outputs, input gradients, state, last
    values, a continued run and a run without gradients, bit for bit; a batch of 3 x 9 values
    puts the steps of the sequence written in place off the 64-byte alignment."""
    graph = recurrent_neuron(CYCLE_NEURONS[kind](), seed)
    x = torch.tensor(floats(17, 3, 7, seed=10 + seed)).abs()
    assert_cycle_steps_on_the_kernel(graph, x, ("n",), monkeypatch)


@needs_compiler
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_readout_on_a_cycle_steps_on_the_kernel_without_gradients(seed):
    """A readout's output is its state, and the reference adds the gradients reaching it from
    its readers and from its next step in autograd's order, which the kernel's backward does
    not follow: with gradients it steps on the reference, as before; without, on the kernel,
    with stepping's values and state."""
    graph = recurrent_neuron(hub.LI(beta=0.7), seed)
    x = torch.tensor(floats(17, 3, 7, seed=10 + seed)).abs()
    want = hub.Simulator(graph, backend="torch")
    with torch.no_grad():
        want_out = want(x)
    sim = hub.Simulator(graph)
    with torch.no_grad():
        assert same(sim(x), want_out)
    assert sim.paths["n"].startswith(f"{cpu.PATH}, one step at a time (on a cycle")
    assert same({k: tensors(v) for k, v in sim._state.items()},
                {k: tensors(v) for k, v in want._state.items()})
    sim = training(graph)
    out = sim(x)
    assert sim.paths["n"].startswith("reference (on a cycle") and same(out.detach(), want_out)


@needs_compiler
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_two_neurons_on_a_cycle_step_on_the_kernel_with_stepping_bits(seed, monkeypatch):
    x = torch.tensor(floats(19, 4, 7, seed=20 + seed)).abs()
    assert_cycle_steps_on_the_kernel(two_neurons(seed), x, ("a", "b"), monkeypatch)


@needs_compiler
@pytest.mark.parametrize("seed", [0, 1])
def test_three_inputs_into_a_cycle_are_added_in_stepping_s_order(seed, monkeypatch):
    """Three layers feed the cycle's neuron: added over all steps before the cycle steps, as
    ``(a + b) + c`` (which ``a + (b + c)`` is not, in floats), then the recurrent input."""
    graph = hub.Graph(
        {"in": hub.Input(shape=(7,)), "out": hub.Output(),
         **{f"f{i}": hub.Linear(weight=floats(8, 7, seed=seed + i) * 10 ** (i - 1))
            for i in range(3)},
         "n": hub.LIF(beta=0.75, threshold=0.5), "rec": hub.Linear(weight=floats(8, 8, seed=9))},
        [("in", "f0"), ("in", "f1"), ("in", "f2"), ("f0", "n"), ("f1", "n"), ("f2", "n"),
         ("n", "rec"), ("rec", "n"), ("n", "out")])
    assert graph.plan().forward["n"] == ("f0", "f1", "f2")
    x = torch.tensor(floats(15, 3, 7, seed=30 + seed)).abs() / 4
    assert_cycle_steps_on_the_kernel(graph, x, ("n",), monkeypatch)


@needs_compiler
def test_a_cycle_in_float64_steps_on_the_kernel_with_stepping_bits():
    dtype = torch.float64
    graph = recurrent_neuron(CYCLE_NEURONS["cuba-new"](), 5)
    x = torch.tensor(floats(15, 2, 7, seed=5), dtype=dtype).abs()
    sim = hub.Simulator(graph, dtype=dtype)
    xg = x.clone().requires_grad_()
    got = sim(xg)
    got.sum().backward()
    want_sim = hub.Simulator(graph, dtype=dtype, backend="torch")
    xw = x.clone().requires_grad_()
    want = want_sim(xw)
    want.sum().backward()
    assert sim.paths["n"].startswith(cpu.PATH)
    assert same(got, want) and same(xg.grad, xw.grad)


def training(graph: hub.Graph) -> hub.Simulator:
    """A simulator whose weights train and whose neurons' own parameters stay fixed (so that
    the neurons may run on the kernels), as a network's trainer sets it up."""
    sim = hub.Simulator(graph, trainable=True)
    for name, param in sim.named_parameters():
        node = sim.graph.nodes[sim.plan.order[int(name.split(".")[1][1:])]]
        param.requires_grad_(not isinstance(node, hub.Neuron))
    return sim


@needs_compiler
def test_the_weights_on_a_cycle_get_stepping_s_gradients_bit_for_bit(monkeypatch):
    """Trainable weights (the neurons' own parameters fixed, so that they take the kernel): the
    recurrent weight's gradient, summed over steps on the cycle as stepping sums it, has
    stepping's bits; those of the layers over all steps are float-equivalent (hub.over_time)."""
    graph = behind()
    x = torch.tensor(floats(21, 3, 7, seed=4)).abs()
    grads = {}
    for how in ("stepped", "auto"):
        with monkeypatch.context() as m:
            if how == "stepped":
                m.setattr(hub.Simulator, "_stepped",
                          lambda self, like: dict.fromkeys(self.graph.nodes, "reference"))
            sim = training(graph)
            out = sim(x)
            (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
            grads[how] = {name: sim.params[sim._keys[name]].weight.grad
                          for name in ("fc1", "fc2", "rec", "fc3")}
            if how == "auto":
                assert sim.paths["lif2"].startswith(f"{cpu.PATH}, one step at a time")
    assert same(grads["auto"]["rec"], grads["stepped"]["rec"])
    for name in ("fc1", "fc2", "fc3"):
        assert torch.allclose(grads["auto"][name], grads["stepped"][name], rtol=1e-5,
                              atol=1e-6), name


@needs_compiler
def test_a_graph_with_neurons_only_on_its_cycle_runs_node_by_node():
    """The kernel steps the cycle's neuron, so the layers around the cycle run over all steps
    rather than the whole graph stepping on the reference."""
    graph = hub.Graph(
        {"in": hub.Input(shape=(7,)), "fc": hub.Affine(weight=floats(9, 7), bias=floats(9)),
         "n": hub.LIF(beta=0.8, threshold=0.3), "rec": hub.Linear(weight=floats(9, 9, seed=1)),
         "read": hub.Linear(weight=floats(4, 9, seed=2)), "out": hub.Output()},
        [("in", "fc"), ("fc", "n"), ("n", "rec"), ("rec", "n"), ("n", "read"), ("read", "out")])
    x = torch.tensor(floats(12, 2, 7, seed=3)).abs()
    calls = []
    sim = hub.Simulator(graph)
    layer = hub.Simulator._layer
    sim._layer = lambda name, *a: (calls.append(name), layer(sim, name, *a))[1]
    with torch.no_grad():
        got = sim(x)
    assert torch.equal(got, hub.simulate(graph, x, backend="torch"))
    assert {"fc", "read"} <= set(calls) and sim.paths["n"].startswith(cpu.PATH)


# -- the frameworks' own recurrent neurons, run by the hub and by themselves --------------------

def dyadic_weights(model: torch.nn.Module, seed: int) -> None:
    """Multiples of 1/8 for every weight, so that the layers' sums are exact in any order: the
    spikes cannot differ from the framework's own by a threshold tie rounded another way."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("weight", "bias", "recurrent_weights", "input_weights")):
                param.copy_(torch.randint(-8, 9, param.shape, generator=gen) / 8)


def snntorch_recurrent(cls: str, options: dict, seed: int) -> torch.nn.Module:
    snn = pytest.importorskip("snntorch")
    from torch import nn

    torch.manual_seed(seed)
    decays = dict(alpha=0.5) if cls == "RSynaptic" else {}
    model = nn.Sequential(nn.Linear(7, 12), getattr(snn, cls)(
        beta=0.75, init_hidden=True, **decays, **options), nn.Linear(12, 5),
        snn.Leaky(beta=0.5, threshold=0.5, init_hidden=True))
    with torch.no_grad():  # so that the output layer fires too
        model[2].weight.mul_(3)
    return model


SNNTORCH_OPTIONS = {
    "linear": dict(linear_features=12),
    "linear-zero-reset": dict(linear_features=12, reset_mechanism="zero"),
    "linear-zero-reset-now": dict(linear_features=12, reset_mechanism="zero",
                                  reset_delay=False),
    "one-to-one": dict(all_to_all=False, V=0.5),
}


@needs_compiler
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("cls, options", [
    (cls, options) for cls in ("RLeaky", "RSynaptic") for options in SNNTORCH_OPTIONS
    # snnTorch 1.0's own RSynaptic(reset_delay=False) fails in its forward (None / Tensor)
    if (cls, options) != ("RSynaptic", "linear-zero-reset-now")])
def test_snntorch_recurrent_neurons_step_on_the_kernel_as_snntorch_runs_them(cls, options, seed,
                                                                             monkeypatch):
    """Random weights: the hub's run (the recurrent neuron on the kernel, step by step) has
    stepping's bits, gradients included. Weights in eighths: the hub's spikes are snnTorch's own
    step-by-step run's, with and without gradients."""
    from snntorch import utils

    model = snntorch_recurrent(cls, SNNTORCH_OPTIONS[options], seed)
    graph = hub.load(model, input_shape=(7,))
    x = (torch.rand(24, 4, 7, generator=torch.Generator().manual_seed(seed)) < 0.5).float()
    assert_cycle_steps_on_the_kernel(graph, 3 * x, ("1",), monkeypatch)
    dyadic_weights(model, seed)
    graph = hub.load(model, input_shape=(7,))
    utils.reset(model)
    with torch.no_grad():
        want = torch.stack([model(2 * xt) for xt in x])
    assert 0 < float(want.mean()) < 1
    sim = hub.Simulator(graph)
    with torch.no_grad():
        assert torch.equal(sim(2 * x), want)
    sim = training(graph)
    got = sim(2 * x)
    assert got.requires_grad and torch.equal(got.detach(), want)
    assert sim.paths["1"].startswith(cpu.PATH)


NORSE_CELLS = ("LIFRecurrentCell", "LIFRecurrent")


@needs_compiler
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("cls", NORSE_CELLS)
def test_norse_recurrent_cells_step_on_the_kernel_as_norse_runs_them(cls, seed, monkeypatch):
    """As for snnTorch: stepping's bits with random weights, gradients included, and Norse's
    own run's spikes, with and without gradients."""
    norse = pytest.importorskip("norse.torch")

    torch.manual_seed(seed)
    p = norse.LIFParameters(tau_syn_inv=torch.tensor(200.0), tau_mem_inv=torch.tensor(100.0),
                            v_th=torch.tensor(0.3))
    if cls == "LIFRecurrent":  # the layer form runs a whole sequence: the graph's only layer
        model = norse.SequentialState(norse.LIFRecurrent(6, 10, p))
    else:
        model = norse.SequentialState(norse.LIFRecurrentCell(6, 10, p), torch.nn.Linear(10, 4),
                                      norse.LIFCell(p))
        with torch.no_grad():  # so that the output layer fires too
            model[1].weight.mul_(3)
    graph = hub.load(model, source="norse", input_shape=(6,))
    recurrent = next(name for name, node in graph.nodes.items()
                     if isinstance(node, hub.CubaLIF) and graph.plan().recurrent[name])
    x = (torch.rand(30, 3, 6, generator=torch.Generator().manual_seed(seed)) < 0.6).float() * 4
    assert_cycle_steps_on_the_kernel(graph, x, (recurrent,), monkeypatch)
    with torch.no_grad():
        if cls == "LIFRecurrent":
            want, _ = model(x)
        else:
            state, outs = None, []
            for xt in x:
                out, state = model(xt, state)
                outs.append(out)
            want = torch.stack(outs)
    assert want.sum() >= 10
    with torch.no_grad():
        assert torch.equal(hub.simulate(graph, x), want)
    sim = training(graph)
    got = sim(x)
    assert got.requires_grad and torch.equal(got.detach(), want)
    assert sim.paths[recurrent].startswith(cpu.PATH)


@needs_compiler
@pytest.mark.parametrize("kind", ["snntorch", "cuba-new", "multi"])
def test_a_cycle_on_the_kernel_keeps_stepping_s_bits_on_hostile_values(kind, monkeypatch):
    """Infinities, NaN, and inputs on the threshold: the kernel's steps give stepping's bits
    (NaN included), the recurrent weights carry them around the cycle."""
    graph = recurrent_neuron(CYCLE_NEURONS[kind](), 7)
    x = torch.tensor(floats(9, 3, 7, seed=8)).abs()
    x[2, 0, 1], x[4, 1, 3], x[6, 2, 0] = float("inf"), float("nan"), -float("inf")
    got, want = (hub.Simulator(graph, backend=how) for how in ("auto", "torch"))
    with torch.no_grad():
        assert same(got(x), want(x))
        assert same({k: tensors(v) for k, v in got._state.items()},
                    {k: tensors(v) for k, v in want._state.items()})
    assert got.paths["n"].startswith(cpu.PATH)
    # a neuron input exactly on the threshold (the layer before it passes the input through)
    node = graph.nodes["n"]
    ties = hub.Graph({"in": hub.Input(shape=(9,)), "n": node, "rec": graph.nodes["rec"],
                      "out": hub.Output()},
                     [("in", "n"), ("n", "rec"), ("rec", "n"), ("n", "out")])
    x = torch.full((6, 2, 9), float(np.asarray(node.threshold).flat[0]))
    with torch.no_grad():
        assert same(hub.simulate(ties, x), hub.simulate(ties, x, backend="torch"))
