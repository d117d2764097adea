"""The Norse plugin: Norse models import spike-exactly, canonical graphs export to Norse cells."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hub
from hub_conformance.testing import FormatTests

from .conftest import dyadic

norse = pytest.importorskip("norse.torch")
from hub_plugins.norse import (NeuronCell, NorseApproximationWarning, NorseGraph,  # noqa: E402
                               run)

DT = 2.0 ** -10


def load(model, **options) -> hub.Graph:
    """Import as Norse (other installed plugins may also claim torch modules)."""
    return hub.load(model, source="norse", **options)


class TestNorseConformance(FormatTests):
    """Every zoo case along every route between Norse, the hub and NIR files."""

    format = "norse"
    peers = ("hub", "nir")
    tiers = ("exact", "float")


class TestNorseSnnTorchConformance(FormatTests):
    """Norse <-> snnTorch directly and there and back (each run in its own framework)."""

    format = "norse"
    peers = ("snntorch",)
    tiers = ("exact",)


def spikes(*shape: int, seed: int = 0, p: float = 0.5) -> torch.Tensor:
    return torch.as_tensor((np.random.default_rng(seed).random(shape) < p).astype(np.float32))


def linear(out: int, inp: int, weight: np.ndarray | None = None, bias: bool = False):
    layer = torch.nn.Linear(inp, out, bias=bias)
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(dyadic(out, inp) * 2 if weight is None else weight))
        if bias:
            layer.bias.copy_(torch.as_tensor(dyadic(out)))
    return layer


def same_as_norse(model: torch.nn.Module, x: torch.Tensor, readout: bool = False,
                  **options) -> hub.Graph:
    """Import ``model`` and check that the hub's simulator reproduces Norse bit for bit.

    The output must be active: spikes neither absent nor everywhere, or (``readout``) a voltage
    that moved from zero."""
    graph = load(model, **options)
    want = run(model, x)
    got = hub.simulate(graph, x)
    assert got.shape == want.shape
    assert torch.equal(got, want), f"{int((got != want).sum())} of {got.numel()} entries differ"
    active = float((want != 0).float().mean())
    if readout:
        assert active > 0, "the test input must drive the readout"
    else:
        assert 0 < active < 1, "the test input must make it fire"
    return graph


# -- import: each Norse cell, dyadic parameters (exact in float32): bit-identical -------------

def lif_box(reset_method=None, **p):
    from norse.torch.functional.reset import reset_value

    params = {"tau_mem_inv": torch.tensor(256.0), "v_th": torch.tensor(0.5), **p}
    return norse.LIFBoxCell(norse.LIFBoxParameters(reset_method=reset_method or reset_value,
                                                   **params), dt=DT)


CELLS = {
    "LIFCell": lambda: norse.LIFCell(norse.LIFParameters(
        tau_syn_inv=torch.tensor(512.0), tau_mem_inv=torch.tensor(256.0), v_th=torch.tensor(0.5),
        v_reset=torch.tensor(-0.25)), dt=DT),
    "LIFCell-leak": lambda: norse.LIFCell(norse.LIFParameters(
        tau_syn_inv=torch.tensor(256.0), tau_mem_inv=torch.tensor([256.0, 512.0] * 4),
        v_leak=torch.tensor(0.25), v_th=torch.tensor(0.75), method="heaviside"), dt=DT),
    "LIFBoxCell": lambda: lif_box(v_reset=torch.tensor(0.125)),
    "LIFBoxCell-subtract": lambda: lif_box(
        __import__("norse.torch.functional.reset", fromlist=["x"]).reset_subtract),
    "LIFBoxCell-triangle": lambda: lif_box(method="triangle", alpha=torch.tensor(0.3)),
    "IAFCell": lambda: norse.IAFCell(norse.IAFParameters(v_th=torch.tensor(1.5),
                                                         v_reset=torch.tensor(0.25)), dt=DT),
}


@pytest.mark.parametrize("name", sorted(CELLS))
def test_each_cell_imports_bit_identical(name):
    model = norse.SequentialState(linear(8, 6), CELLS[name]())
    same_as_norse(model, spikes(24, 3, 6))


READOUTS = {
    "LICell": lambda: norse.LICell(norse.LIParameters(
        tau_syn_inv=torch.tensor(512.0), tau_mem_inv=torch.tensor(256.0)), dt=DT),
    "LIBoxCell": lambda: norse.LIBoxCell(norse.LIBoxParameters(
        tau_mem_inv=torch.tensor(512.0), v_leak=torch.tensor(0.5)), dt=DT),
}


@pytest.mark.parametrize("name", sorted(READOUTS))
def test_each_readout_imports_bit_identical(name):
    model = norse.SequentialState(linear(8, 6), lif_box(), linear(4, 8, bias=True),
                                  READOUTS[name]())
    # 8 steps: a voltage decaying by 3/4 gains two bits a step, and must stay within float32's
    # 24 for the comparison to be exact whatever order the float operations run in
    same_as_norse(model, spikes(8, 3, 6), readout=True)


def test_time_looping_modules_import_like_their_cells():
    """``LIF``, ``LI``, ``IAF`` take the whole sequence; the plugin runs them in one call."""
    p = norse.LIFParameters(tau_syn_inv=torch.tensor(512.0), tau_mem_inv=torch.tensor(256.0),
                            v_th=torch.tensor(0.5))
    model = norse.SequentialState(linear(8, 6), norse.LIF(p, dt=DT), linear(8, 8),
                                  norse.IAF(norse.IAFParameters(v_th=torch.tensor(1.0)), dt=DT),
                                  linear(3, 8), norse.LI(norse.LIParameters(
                                      tau_syn_inv=torch.tensor(256.0),
                                      tau_mem_inv=torch.tensor(512.0)), dt=DT))
    graph = same_as_norse(model, spikes(8, 2, 6), readout=True)  # 8 steps: see above
    assert [n.type for _, n in graph.walk()] == ["Input", "Linear", "CubaLIF", "Linear", "IF",
                                                 "Linear", "CubaLI", "Output"]


@pytest.mark.parametrize("cls", ["LIFRecurrentCell", "LIFRecurrent"])
def test_recurrent_lif_imports_as_a_recurrent_edge(cls):
    p = norse.LIFParameters(tau_syn_inv=torch.tensor(512.0), tau_mem_inv=torch.tensor(256.0),
                            v_th=torch.tensor(0.5))
    cell = getattr(norse, cls)(6, 8, p, dt=DT, input_weights=torch.as_tensor(dyadic(8, 6) * 2),
                               recurrent_weights=torch.as_tensor(dyadic(8, 8)))
    graph = same_as_norse(norse.SequentialState(cell), spikes(20, 3, 6))
    recurrent = {k: v for k, v in graph.plan().recurrent.items() if v}
    assert recurrent == {"0.lif": ("0.recurrent_weights",)}
    again = hub.convert(graph, to="norse")  # back to Norse's own recurrent cell
    assert isinstance(again[0], norse.LIFRecurrentCell)
    assert torch.equal(again[0].recurrent_weights, cell.recurrent_weights)


def test_recurrent_cubalif_exports_as_lif_recurrent_cell():
    """Linear -> CubaLIF with a recurrent Linear back into it is Norse's LIFRecurrentCell."""
    from hub_conformance.paths import different

    graph = hub.Graph(
        {"input": hub.Input(shape=(4,)), "fc1": hub.Linear(weight=dyadic(6, 4) * 2),
         "n1": hub.CubaLIF(alpha=0.5, beta=0.75, gain=0.25, threshold=0.5),
         "rec": hub.Linear(weight=dyadic(6, 6)), "fc2": hub.Linear(weight=dyadic(3, 6) * 2),
         "n2": hub.LIF(beta=0.5, gain=0.5, threshold=0.5), "output": hub.Output()},
        [("input", "fc1"), ("fc1", "n1"), ("n1", "rec"), ("rec", "n1"), ("n1", "fc2"),
         ("fc2", "n2"), ("n2", "output")], metadata={"dt": DT})
    model = hub.convert(graph, to="norse")
    assert [type(m).__name__ for m in model] == ["LIFRecurrentCell", "Linear", "LIFBoxCell"]
    assert model[0].autapses and torch.equal(model[0].recurrent_weights,
                                             torch.tensor(np.array(graph.nodes["rec"].weight)))
    x = spikes(24, 3, 4)
    want = hub.simulate(graph, x)
    assert torch.equal(run(model, x), want) and 0 < want.mean() < 1
    assert different(graph, load(model)) is None
    two = hub.Graph({**graph.nodes, "spikes": hub.Output()}, [*graph.edges, ("n1", "spikes")],
                    metadata={"dt": DT})
    model = hub.convert(two, to="norse")  # two outputs: a stepped graph, folded all the same
    assert isinstance(model, NorseGraph)
    assert isinstance(model.module("fc1"), norse.LIFRecurrentCell)
    got, want = run(model, x), hub.simulate(two, x)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert different(two, load(model)) is None


def test_conv_model_imports_with_its_input_shape():
    conv = torch.nn.Conv2d(2, 4, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_(torch.as_tensor(dyadic(4, 2, 3, 3)))
        conv.bias.copy_(torch.as_tensor(dyadic(4)))
    model = norse.SequentialState(
        conv, lif_box(), torch.nn.AvgPool2d(2, divisor_override=1), torch.nn.Flatten(),
        linear(5, 36), norse.LIFCell(norse.LIFParameters(
            tau_syn_inv=torch.tensor(512.0), tau_mem_inv=torch.tensor(256.0),
            v_th=torch.tensor(0.5)), dt=DT))
    graph = same_as_norse(model, spikes(12, 2, 2, 6, 6), input_shape=(2, 6, 6))
    assert [n.type for _, n in graph.walk()][2:4] == ["LIF", "SumPool2d"]
    with pytest.raises(hub.HubError, match="input_shape"):
        load(model)


def test_norse_models_are_recognised():
    model = norse.SequentialState(linear(4, 3), norse.LIFBoxCell())
    assert hub.plugins().format("norse").recognizes(model)
    assert not hub.plugins().format("norse").recognizes(torch.nn.Linear(3, 4))
    assert hub.plugins().format("norse").recognizes(hub.convert(hub.Graph(
        {"input": hub.Input(shape=(3,)), "a": hub.Add(), "output": hub.Output()},
        [("input", "a"), ("input", "a"), ("a", "output")]), to="norse"))


def test_norse_parameters_map_to_canonical_fields():
    """beta = 1 - dt*tau_mem_inv (the float32 product), gain = dt*tau_mem_inv, v_init = v_leak."""
    cell = norse.LIFCell(norse.LIFParameters(tau_syn_inv=torch.tensor(200.0),
                                             tau_mem_inv=torch.tensor(100.0),
                                             v_leak=torch.tensor(-0.5), v_th=torch.tensor(0.5),
                                             v_reset=torch.tensor(-1.0)), dt=1e-3)
    node = load(norse.SequentialState(linear(4, 3), cell)).nodes["1"]
    k = np.float32(1e-3) * np.float32(100.0)
    assert node.type == "CubaLIF" and node.current_order == "new"
    assert node.gain == k and node.beta == np.float32(1) - k
    assert node.alpha == np.float32(1) - np.float32(1e-3) * np.float32(200.0)
    assert node.v_leak == node.v_init == -0.5 and node.v_reset == -1.0
    assert node.comparison == ">" and node.reset == "zero" and node.current_gain == 1
    iaf = load(norse.SequentialState(linear(4, 3), norse.IAFCell(
        norse.IAFParameters(v_reset=torch.tensor(0.25))))).nodes["1"]
    assert iaf.v_init == 0.25 and iaf.gain == 1


def test_realistic_norse_model_spikes_identically():
    """Norse's defaults (dt=1e-3, tau_mem_inv=100, tau_syn_inv=200) with float weights: the
    float expressions differ from the canonical ones by rounding only, no spike moves here."""
    torch.manual_seed(0)
    layers = [torch.nn.Linear(10, 16), norse.LIFCell(), torch.nn.Linear(16, 16),
              lif_box(tau_mem_inv=torch.tensor(50.0), v_th=torch.tensor(0.3))]
    readout = [torch.nn.Linear(16, 4), norse.LICell()]
    x = spikes(60, 4, 10, p=0.6) * 8
    spiking = norse.SequentialState(*layers)
    want, got = run(spiking, x), hub.simulate(load(spiking), x)
    assert torch.equal(got, want) and 0 < want.mean() < 1
    model = norse.SequentialState(*layers, *readout)
    torch.testing.assert_close(hub.simulate(load(model), x), run(model, x), rtol=1e-5,
                               atol=1e-6)


def test_norse_model_round_trips_through_the_hub():
    """Norse -> hub -> Norse gives back the same tau_inv, dt and weights."""
    torch.manual_seed(1)
    model = norse.SequentialState(torch.nn.Linear(5, 7), norse.LIFCell(), torch.nn.Linear(7, 3),
                                  lif_box(tau_mem_inv=torch.tensor(100.0)))
    model[3].dt = 1e-3
    again = hub.convert(model, to="norse", source="norse")
    assert isinstance(again[1], norse.LIFCell) and again[1].dt == 1e-3
    assert again[1].p.tau_mem_inv.item() == 100.0 and again[1].p.tau_syn_inv.item() == 200.0
    assert again[3].p.tau_mem_inv.item() == 100.0
    assert torch.equal(again[0].weight, model[0].weight)
    x = spikes(30, 2, 5, p=0.7) * 4
    assert torch.equal(run(again, x), run(model, x))


def test_unsupported_cells_and_methods_are_refused_by_name():
    cell = norse.LIFBoxCell(norse.LIFBoxParameters(method="adjoint"))
    with pytest.raises(hub.UnsupportedError, match="method") as e:
        load(norse.SequentialState(linear(3, 2), cell))
    assert e.value.node == "1" and e.value.field == "method"
    with pytest.raises(hub.UnsupportedError, match="LIFAdExRefracCell"):
        load(norse.SequentialState(linear(3, 2), norse.LIFAdExRefracCell()))


# -- export -----------------------------------------------------------------------------------

def chain(*nodes, shape=(6,), dt=DT) -> hub.Graph:
    return hub.Graph.chain(("input", hub.Input(shape=shape)), *nodes, metadata={"dt": dt})


def test_export_uses_norse_cells_where_they_hold_the_parameters():
    model = hub.convert(chain(("fc", hub.Linear(weight=dyadic(4, 6))),
                              ("n1", hub.LIF(beta=0.75, gain=0.25, threshold=0.5)),
                              ("fc2", hub.Affine(weight=dyadic(4, 4), bias=dyadic(4))),
                              ("n2", hub.CubaLIF(alpha=0.5, beta=0.875, gain=0.125))),
                        to="norse")
    assert isinstance(model, norse.SequentialState)
    assert [type(m).__name__ for m in model] == ["Linear", "LIFBoxCell", "Linear", "LIFCell"]
    lif = model[1]
    assert lif.dt == DT and float(lif.dt * lif.p.tau_mem_inv) == 0.25


def test_export_wraps_gains_and_the_previous_current_in_norse_cells():
    model = hub.convert(chain(("fc", hub.Linear(weight=dyadic(4, 6))),
                              ("n1", hub.LIF(beta=0.75)),
                              ("n2", hub.CubaLIF(alpha=0.5, beta=0.75, current_order="previous",
                                                 reset="subtract"))), to="norse")
    first, second = model[1], model[2]
    assert isinstance(first, NeuronCell) and first.synapse is None
    assert isinstance(first.neuron, norse.LIFBoxCell) and float(first.gain) == 1
    assert isinstance(second.synapse, norse.LIBoxCell) and second.order == "previous"


def test_exported_model_steps_like_a_norse_model():
    graph = chain(("fc", hub.Linear(weight=dyadic(8, 6) * 2)),
                  ("n1", hub.CubaLIF(alpha=0.5, beta=np.float32([0.5, 0.75] * 4),
                                     threshold=0.5)),
                  ("fc2", hub.Linear(weight=dyadic(3, 8) * 2)),
                  ("n2", hub.LIF(beta=0.5, gain=0.5, threshold=0.5, reset="subtract")))
    model = hub.convert(graph, to="norse")
    x = spikes(16, 2, 6)
    state, ys = None, []
    for x_t in x:  # what Norse users write
        y, state = model(x_t, state)
        ys.append(y)
    assert torch.equal(torch.stack(ys).detach(), hub.simulate(graph, x))


def test_dt_is_matched_exactly_by_tau_inv():
    """tau_mem_inv is chosen so that float32 dt*tau_mem_inv is exactly 1 - beta."""
    beta = np.float32(0.875) - np.float32(2.0 ** -20)
    graph = chain(("fc", hub.Linear(weight=dyadic(4, 6))),
                  ("n", hub.LIF(beta=beta, gain=np.float32(1) - beta)), dt=1e-3)
    cell = hub.convert(graph, to="norse")[1]
    assert cell.dt == 1e-3
    assert (cell.dt * cell.p.tau_mem_inv).item() == np.float32(1) - beta
    assert load(hub.convert(graph, to="norse")).nodes["1"].beta == beta


def test_tau_inv_is_the_roundest_that_gives_the_decay():
    """beta = 0.9 at dt = 1e-3: tau_mem_inv = 100 (dt * 100 rounds to a k with fl(1 - k) == 0.9)."""
    graph = chain(("fc", hub.Linear(weight=dyadic(4, 6))),
                  ("n", hub.CubaLIF(alpha=0.8, beta=0.9, gain=np.float32(0.1))), dt=1e-3)
    cell = hub.convert(graph, to="norse")[1]
    assert isinstance(cell, norse.LIFCell)
    assert cell.p.tau_mem_inv.item() == 100 and cell.p.tau_syn_inv.item() == 200


def test_a_decay_no_tau_inv_reaches_at_this_dt_is_refused_or_approximated():
    """At dt=1e-3 the float32 products dt*tau_inv step over every k with fl(1 - k) == beta."""
    beta = np.float32(0.58185595)
    graph = chain(("fc", hub.Linear(weight=dyadic(4, 6))), ("n", hub.LIF(beta=beta)), dt=1e-3)
    with pytest.raises(hub.UnsupportedError, match="power of two") as e:
        hub.convert(graph, to="norse")
    assert (e.value.node, e.value.field) == ("n", "beta")
    with pytest.warns(NorseApproximationWarning, match=r"n\.beta"):
        cell = hub.convert(graph, to="norse", strict=False)[1].neuron
    assert abs((cell.dt * cell.p.tau_mem_inv).item() - (1 - beta)) < 1e-7
    assert hub.convert(graph, to="norse", dt=2.0 ** -10)[1].neuron.dt == 2.0 ** -10


def test_graphs_with_skips_export_as_a_stepped_graph():
    graph = hub.Graph({"input": hub.Input(shape=(6,)), "fc": hub.Linear(weight=dyadic(6, 6)),
                       "n1": hub.LIF(beta=0.5, threshold=0.5), "add": hub.Add(),
                       "n2": hub.LIF(beta=0.75, threshold=0.5), "output": hub.Output()},
                      [("input", "fc"), ("fc", "n1"), ("n1", "add"), ("input", "add"),
                       ("add", "n2"), ("n2", "output")], metadata={"dt": DT})
    model = hub.convert(graph, to="norse")
    assert isinstance(model, NorseGraph)
    x = spikes(16, 2, 6)
    assert torch.equal(run(model, x), hub.simulate(graph, x))
    assert load(model) == graph


@pytest.mark.parametrize("node, field", [
    (hub.LIF(beta=0.5, comparison=">="), "comparison"),
    (hub.LIF(beta=0.5, reset_timing="next"), "reset_timing"),
    (hub.LIF(beta=0.5, reset="none"), "reset"),
    (hub.LIF(beta=0.5, spike_mode="graded"), "spike_mode"),
    (hub.LIF(beta=0.5, amplitude=2.0), "amplitude"),
    (hub.LIF(beta=0.5, refractory=2), "refractory"),
    (hub.LIF(beta=0.5, delay=1), "delay"),
    (hub.IF(reset="subtract"), "reset"),
    (hub.LIF(beta=np.float32(0.1)), "beta"),
    (hub.Integrator(), "type"),
    (hub.Delay(delay=1), "type"),
])
def test_what_norse_cannot_express_is_refused_naming_node_and_field(node, field):
    with pytest.raises(hub.UnsupportedError) as e:
        hub.convert(chain(("fc", hub.Linear(weight=dyadic(4, 6))), ("n", node)), to="norse")
    assert e.value.node == "n" and e.value.field == field


@pytest.mark.parametrize("node", [hub.LIF(beta=0.5, v_init=0.5, threshold=0.75),
                                  hub.LIF(beta=0.75, gain=0.25, v_leak=0.25, threshold=0.5),
                                  hub.IF(v_init=np.float32([0.5, 0, 0.25, 0]), threshold=1.5),
                                  hub.CubaLIF(alpha=0.5, beta=0.5, v_init=-0.5, threshold=0.5)])
def test_a_start_other_than_norses_is_set_on_the_neuron_cell(node):
    graph = chain(("fc", hub.Linear(weight=dyadic(4, 6) * 2)), ("n", node))
    model = hub.convert(graph, to="norse")
    assert isinstance(model[1], NeuronCell) and model[1].v_init is not None
    x = spikes(16, 2, 6)
    assert torch.equal(run(model, x), hub.simulate(graph, x))
    assert load(model).nodes["1"] == node


def test_non_strict_export_approximates_ge_and_says_so():
    graph = chain(("fc", hub.Linear(weight=dyadic(4, 6))),
                  ("n", hub.LIF(beta=0.5, comparison=">=")))
    with pytest.warns(NorseApproximationWarning, match=r"n\.comparison"):
        model = hub.convert(graph, to="norse", strict=False)
    assert load(model).nodes["1"].comparison == ">"


def test_paper_braille_rnn_runs_spike_identically_in_norse(paper):
    """The NIR paper's Braille RNN (CubaLIF, forward Euler, recurrent Affine) at dt=1e-4."""
    from hub_conformance.paths import different

    files = sorted(paper.glob("paper_03_rnn_braille_*.nir"))
    assert files, f"no paper_03_rnn_braille_*.nir in {paper}"
    for path in files:
        graph = hub.load(path, dt=1e-4)
        model = hub.convert(graph, to="norse")
        assert isinstance(model, NorseGraph)
        x = spikes(100, 4, 12, seed=3, p=0.2)
        want = hub.simulate(graph, x)
        assert torch.equal(run(model, x), want), path.name  # bit for bit, no ties needed
        assert want.sum() > 0
        assert different(graph, load(model)) is None


def test_every_paper_graph_that_loads_runs_in_norse(paper):
    """The NIR paper's LIF, CNN and RNN graphs: Norse agrees with the hub (float-tier rule)."""
    from hub_conformance.compare import compare, flat
    from hub_conformance.zoo import paper_cases

    cases = [c for c in paper_cases(paper) if not isinstance(c, tuple)]
    assert len(cases) >= 4
    for case in cases:
        x = torch.as_tensor(case.x)
        model = hub.convert(case.graph, to="norse")
        result = compare(case.graph, x, "paper", flat(hub.simulate(case.graph, x)),
                         flat(run(model, x)))
        assert result.agree, f"{case.name}: {result.detail}"
