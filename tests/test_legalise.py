"""Legalisation: each rewrite proven on random graphs, and the frameworks' default neurons
carried between snnTorch, Norse and SpikingJelly and back, run in each framework itself.

A rewrite classified exact must give bit-identical outputs in ``hub.simulate`` for every input;
one classified float-equivalent may part from the original only at a threshold tie (the
conformance suite's own test, :func:`hub_conformance.compare.compare`, decides).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import torch
from hub_conformance.compare import compare, flat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hub
from hub import legalise
from hub.legalise import EXACT, FLOAT, Accepts, equal, one_of

pytest.importorskip("snntorch")
pytest.importorskip("norse")
pytest.importorskip("spikingjelly")

import snntorch as snn
from norse.torch import LIFCell, SequentialState
from spikingjelly.activation_based import functional, layer, neuron
from torch import nn

STEPS = {step.name: step for step in legalise.STEPS}
PROPERTY = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def agrees(graph: hub.Graph, x: torch.Tensor, reference: torch.Tensor, result: torch.Tensor,
           kind: str) -> tuple[bool, str]:
    """Whether ``result`` is what ``kind`` promises: bit-identical, or identical up to a
    threshold tie of ``graph`` on ``x``."""
    if kind == EXACT:
        return torch.equal(reference, result), "not bit-identical"
    outcome = compare(graph, x, "float", flat(reference), flat(result))
    if outcome.agree or outcome.tie:
        return True, outcome.detail
    if isinstance(graph.nodes.get("n"), (hub.LI, hub.Integrator, hub.CubaLI)):
        # a readout voltage keeps the rounding of every step: equal in real arithmetic means
        # within what T steps of sums of n + 2 terms can accumulate in float32
        steps, terms = x.shape[0], x.shape[-1] + 2
        bound = steps * terms * float(np.finfo(np.float32).eps) * (1 + float(reference.abs().max()))
        if torch.allclose(result, reference, rtol=0, atol=bound):
            return True, f"within the accumulated rounding bound {bound:.2g}"
    return False, outcome.detail


# -- each rewrite, on random graphs and inputs --------------------------------------------------

floats = st.floats(min_value=0.0625, max_value=0.96875, width=32)
thresholds = st.floats(min_value=0.25, max_value=2.0, width=32)
powers = st.sampled_from([0.125, 0.25, 0.5, 2.0, 4.0])
gains = st.one_of(powers, st.floats(min_value=0.0625, max_value=3.0, width=32)).filter(
    lambda g: g != 1)


def power_of_two(value: float) -> bool:
    return float(np.frexp(abs(value))[0]) == 0.5


def dense(neuron_node: hub.Node, seed: int, n_in: int = 5, n_out: int = 4) -> hub.Graph:
    rng = np.random.default_rng(seed)
    return hub.Graph.chain(
        ("input", hub.Input(shape=(n_in,))),
        ("fc", hub.Affine(weight=rng.normal(0, 0.8, (n_out, n_in)).astype(np.float32),
                          bias=rng.normal(0, 0.2, n_out).astype(np.float32))),
        ("n", neuron_node))


def inputs(seed: int, n_in: int = 5, steps: int = 40) -> torch.Tensor:
    rng = np.random.default_rng(seed + 1)
    return torch.from_numpy(rng.uniform(-0.5, 1.5, (steps, 3, n_in)).astype(np.float32))


def check_rewrite(name: str, graph: hub.Graph, seed: int) -> str | None:
    """Apply rewrite ``name`` to node ``n`` of ``graph`` and check its classification; the
    kind it claimed, or ``None`` where it does not apply."""
    work = legalise._copy(graph)
    outcome = STEPS[name].apply(work, "n", work.nodes["n"])
    if outcome is None:
        return None
    kind, detail = outcome
    assert kind in (EXACT, FLOAT) and detail
    work.validate()
    x = inputs(seed)
    ok, why = agrees(graph, x, hub.simulate(graph, x), hub.simulate(work, x), kind)
    assert ok, f"{name} ({kind}): {why}; {graph.nodes['n']} -> {work.nodes['n']}"
    return kind


@PROPERTY
@given(beta=floats, th=thresholds, reset=st.sampled_from(["zero", "subtract"]),
       seed=st.integers(0, 2**16))
def test_reset_timing_rewrites_keep_their_classification(beta, th, reset, seed):
    node = hub.LIF(beta=beta, threshold=th, reset=reset, reset_timing="next")
    name = "zero-reset-same-step" if reset == "zero" else "subtract-reset-same-step"
    kind = check_rewrite(name, dense(node, seed), seed)
    assert kind == (EXACT if reset == "zero" else FLOAT)
    same = node.replace(reset_timing="same")
    back = "zero-reset-next-step" if reset == "zero" else "subtract-reset-next-step"
    assert check_rewrite(back, dense(same, seed), seed) == kind


@PROPERTY
@given(th=thresholds, reset=st.sampled_from(["zero", "subtract", "none"]),
       comparison=st.sampled_from([">", ">="]), seed=st.integers(0, 2**16),
       cuba=st.booleans())
def test_the_comparison_rewrite_is_exact_unless_the_reset_subtracts(th, reset, comparison,
                                                                    seed, cuba):
    node = (hub.CubaLIF(alpha=0.5, beta=0.75, threshold=th, reset=reset, comparison=comparison)
            if cuba else hub.LIF(beta=0.75, threshold=th, reset=reset, comparison=comparison))
    kind = check_rewrite("comparison-next-float", dense(node, seed), seed)
    assert kind == (FLOAT if reset == "subtract" else EXACT)


@PROPERTY
@given(gain=gains, beta=floats, reset=st.sampled_from(["zero", "subtract"]),
       seed=st.integers(0, 2**16))
def test_a_gain_folds_into_the_threshold(gain, beta, reset, seed):
    node = hub.LIF(beta=beta, gain=gain, threshold=0.5, reset=reset, v_reset=0.0)
    kind = check_rewrite("gain-into-threshold", dense(node, seed), seed)
    assert kind == (EXACT if power_of_two(gain) else FLOAT)


@PROPERTY
@given(current_gain=gains, seed=st.integers(0, 2**16))
def test_a_current_gain_folds_into_the_gain(current_gain, seed):
    node = hub.CubaLIF(alpha=0.5, beta=0.75, current_gain=current_gain, threshold=0.5)
    kind = check_rewrite("current-gain-into-gain", dense(node, seed), seed)
    assert kind == (EXACT if power_of_two(current_gain) else FLOAT)


@PROPERTY
@given(leak=st.floats(min_value=-1, max_value=1, width=32), beta=floats, gain=gains,
       seed=st.integers(0, 2**16))
def test_a_rest_potential_moves_into_the_bias(leak, beta, gain, seed):
    node = hub.LIF(beta=beta, gain=gain, v_leak=leak, threshold=0.5)
    kind = check_rewrite("leak-into-bias", dense(node, seed), seed)
    assert kind in (None, FLOAT) and (kind is not None or leak == 0)


@PROPERTY
@given(scale=gains, conv=st.booleans(), seed=st.integers(0, 2**16))
def test_a_scale_folds_into_the_weights_before_it(scale, conv, seed):
    rng = np.random.default_rng(seed)
    if conv:
        layer = hub.Conv2d(weight=rng.normal(0, 0.5, (2, 1, 3, 3)).astype(np.float32),
                           bias=rng.normal(0, 0.2, 2).astype(np.float32))
        shape = (1, 5, 5)
    else:
        layer = hub.Affine(weight=rng.normal(0, 0.8, (4, 5)).astype(np.float32),
                           bias=rng.normal(0, 0.2, 4).astype(np.float32))
        shape = (5,)
    graph = hub.Graph.chain(("input", hub.Input(shape=shape)), ("fc", layer),
                            ("s", hub.Scale(scale=scale)), ("n", hub.LIF(beta=0.75)))
    work = legalise._copy(graph)
    kind, _ = STEPS["scale-into-weights"].apply(work, "s", work.nodes["s"])
    assert "s" not in work.nodes and kind == (EXACT if power_of_two(scale) else FLOAT)
    x = torch.from_numpy(rng.uniform(-0.5, 1.5, (30, 2, *shape)).astype(np.float32))
    ok, why = agrees(graph, x, hub.simulate(graph, x), hub.simulate(work, x), kind)
    assert ok, why


@PROPERTY
@given(scale=gains, per_input=st.booleans(), kind_=st.sampled_from(["affine", "linear", "conv",
                                                                     "grouped"]),
       seed=st.integers(0, 2**16))
def test_a_scale_folds_into_the_weights_after_it(scale, per_input, kind_, seed):
    """Input -> Scale -> layer -> LIF: the Scale goes into the layer's weights (per input
    feature or channel), and the bias stays."""
    rng = np.random.default_rng(seed)
    if kind_ in ("conv", "grouped"):
        groups = 2 if kind_ == "grouped" else 1
        layer: hub.Node = hub.Conv2d(
            weight=rng.normal(0, 0.5, (4, 4 // groups, 3, 3)).astype(np.float32),
            bias=rng.normal(0, 0.2, 4).astype(np.float32), groups=groups, padding=(1, 1))
        shape = (4, 5, 5)
    else:
        weight = rng.normal(0, 0.8, (4, 5)).astype(np.float32)
        layer = (hub.Linear(weight=weight) if kind_ == "linear" else
                 hub.Affine(weight=weight, bias=rng.normal(0, 0.2, 4).astype(np.float32)))
        shape = (5,)
    value: Any = np.float32(scale)
    if per_input:  # one factor per input feature or channel, uniform over positions
        per = (rng.choice([0.25, 0.5, 2.0], shape[0]) if power_of_two(scale) else
               rng.uniform(0.1, 3.0, shape[0])).astype(np.float32)
        value = per.reshape((-1,) + (1,) * (len(shape) - 1)) * np.ones(shape, np.float32)
    graph = hub.Graph.chain(("input", hub.Input(shape=shape)), ("s", hub.Scale(scale=value)),
                            ("fc", layer), ("n", hub.LIF(beta=0.75)))
    work = legalise._copy(graph)
    assert STEPS["scale-into-weights"].apply(work, "s", work.nodes["s"]) is None  # no layer before
    kind, detail = STEPS["scale-into-next-weights"].apply(work, "s", work.nodes["s"])
    assert "s" not in work.nodes and ("input", "fc") in work.edges and "'fc' after it" in detail
    exact = power_of_two(scale) and (not per_input or all(map(power_of_two, value.ravel())))
    assert kind == (EXACT if exact else FLOAT)
    assert np.array_equal(getattr(work.nodes["fc"], "bias", 0), getattr(layer, "bias", 0))
    work.validate()
    x = torch.from_numpy(rng.uniform(-0.5, 1.5, (30, 2, *shape)).astype(np.float32))
    ok, why = agrees(graph, x, hub.simulate(graph, x), hub.simulate(work, x), kind)
    assert ok, why


def test_a_scale_after_a_branch_or_before_a_sum_stays():
    """Folding into the layer after is for a Scale that is all the layer sees."""
    rng = np.random.default_rng(0)
    fc = hub.Affine(weight=rng.normal(0, 0.8, (4, 5)).astype(np.float32))
    graph = hub.Graph({"input": hub.Input(shape=(5,)), "s": hub.Scale(scale=0.5), "fc": fc,
                       "n": hub.LIF(beta=0.75), "out": hub.Output()},
                      [("input", "s"), ("s", "fc"), ("input", "fc"), ("fc", "n"), ("n", "out")])
    assert STEPS["scale-into-next-weights"].apply(legalise._copy(graph), "s",
                                                  graph.nodes["s"]) is None
    graph.edges = [("input", "s"), ("s", "fc"), ("s", "out"), ("fc", "n"), ("n", "out")]
    assert STEPS["scale-into-next-weights"].apply(legalise._copy(graph), "s",
                                                  graph.nodes["s"]) is None


def test_legalise_folds_a_scale_into_the_layer_after_where_there_is_none_before():
    accepts = Accepts({("Input", "Output", "Affine", "LIF"): ()}, name="dense-only")
    rng = np.random.default_rng(1)
    graph = hub.Graph.chain(
        ("input", hub.Input(shape=(5,))), ("s", hub.Scale(scale=0.25)),
        ("fc", hub.Affine(weight=rng.normal(0, 0.8, (4, 5)).astype(np.float32))),
        ("n", hub.LIF(beta=0.75)))
    done, report = legalise.legalise(graph, accepts)
    assert [r.name for r in report] == ["scale-into-next-weights"] and report.exact
    x = inputs(1)
    assert torch.equal(hub.simulate(graph, x), hub.simulate(done, x))


@PROPERTY
@given(v_reset=st.floats(min_value=-1, max_value=1, width=32),
       v_init=st.floats(min_value=-1, max_value=1, width=32), beta=floats,
       reset=st.sampled_from(["zero", "none"]), seed=st.integers(0, 2**16))
def test_a_voltage_offset_moves_reset_and_start_to_zero(v_reset, v_init, beta, reset, seed):
    node = hub.LIF(beta=beta, v_reset=v_reset, v_init=v_init, v_leak=v_reset, threshold=1.25,
                   reset=reset)
    kind = check_rewrite("voltage-offset", dense(node, seed), seed)
    assert kind in (None, FLOAT)


def test_spikingjellys_reset_potential_reaches_snntorch_as_an_offset():
    """A neuron resetting to and starting at -0.5, resting at -0.25: snnTorch resets to 0,
    starts at 0 and decays to 0; the offset and the bias carry the difference."""
    node = hub.LIF(beta=0.5, gain=0.5, v_reset=-0.5, v_leak=-0.25, v_init=-0.5, threshold=0.25,
                   comparison=">=")
    graph = dense(node, 3)
    model, report = hub.save(graph, to="snntorch", report=True)
    assert {"voltage-offset", "leak-into-bias"} <= {r.name for r in report}
    x = inputs(3)
    ok, why = agrees(graph, x, hub.simulate(graph, x), hub.formats()["snntorch"].run(model, x),
                     FLOAT)
    assert ok, why


@PROPERTY
@given(gain=gains, seed=st.integers(0, 2**16), readout=st.booleans())
def test_a_current_neurons_gain_moves_into_its_current(gain, seed, readout):
    node = (hub.CubaLI(alpha=0.5, beta=0.75, gain=gain) if readout else
            hub.CubaLIF(alpha=0.5, beta=0.75, gain=gain, threshold=0.5))
    kind = check_rewrite("gain-into-current-gain", dense(node, seed), seed)
    assert kind == (EXACT if power_of_two(gain) else FLOAT)


@PROPERTY
@given(gain=gains, seed=st.integers(0, 2**16),
       kind_=st.sampled_from(["LI", "LIF", "Integrator", "CubaLI"]))
def test_an_input_gain_folds_into_the_weights_before_it(gain, seed, kind_):
    node = {"LI": lambda: hub.LI(beta=0.75, gain=gain),
            "LIF": lambda: hub.LIF(beta=0.75, gain=gain, threshold=0.5, spike_mode="graded"),
            "Integrator": lambda: hub.Integrator(gain=gain),
            "CubaLI": lambda: hub.CubaLI(alpha=0.5, beta=0.75, current_gain=gain)}[kind_]()
    kind = check_rewrite("input-gain-into-weights", dense(node, seed), seed)
    assert kind == (EXACT if power_of_two(gain) else FLOAT)


def test_norses_li_readout_reaches_snntorch():
    """Norse's default LICell readout: its gain dt*tau_mem_inv moves into the current and then
    into the weights before it, since snnTorch's Synaptic readout takes both unscaled."""
    from norse.torch import LICell

    torch.manual_seed(4)
    model = SequentialState(nn.Linear(6, 4), LICell())
    out, report = hub.convert(model, to="snntorch", input_shape=(6,), report=True)
    assert {"gain-into-current-gain", "input-gain-into-weights"} <= {r.name for r in report}
    x = torch.rand(30, 2, 6, generator=torch.Generator().manual_seed(5))
    want = hub.formats()["norse"].run(model, x)
    got = hub.formats()["snntorch"].run(out, x)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(target=st.sampled_from(["snntorch", "norse", "spikingjelly"]),
       comparison=st.sampled_from([">", ">="]), reset=st.sampled_from(["zero", "subtract"]),
       timing=st.sampled_from(["same", "next"]), beta=floats, gain=gains | st.just(1.0),
       leak=st.sampled_from([0.0, 0.25, -0.5]), v_reset=st.sampled_from([0.0, -0.25]),
       seed=st.integers(0, 2**16))
def test_every_legalised_graph_keeps_what_its_report_promises(target, comparison, reset, timing,
                                                             beta, gain, leak, v_reset, seed):
    """Random neurons legalised for each torch framework: the rewritten graph, simulated,
    is bit-identical to the original where the report says exact, else differs at ties only."""
    node = hub.LIF(beta=beta, gain=gain, v_leak=leak, v_reset=v_reset, v_init=0.0,
                   threshold=0.75, comparison=comparison, reset=reset, reset_timing=timing)
    graph = dense(node, seed)
    try:
        out, report = legalise.legalise(graph, hub.formats()[target].accepts, target=target)
    except hub.UnsupportedError:
        return  # nothing to prove: refused, naming node and field
    assert not hub.formats()[target].accepts.violations(out.nodes["n"])
    x = inputs(seed)
    ok, why = agrees(graph, x, hub.simulate(graph, x), hub.simulate(out, x),
                     EXACT if report.exact else FLOAT)
    assert ok, f"{why}\n{report}"


def test_the_leak_stays_where_the_layer_before_feeds_others_too():
    graph = hub.Graph({"input": hub.Input(shape=(3,)),
                       "fc": hub.Affine(weight=np.eye(3, dtype=np.float32), bias=0.0),
                       "n": hub.LIF(beta=0.5, v_leak=0.25), "m": hub.LIF(beta=0.5),
                       "output": hub.Output()},
                      [("input", "fc"), ("fc", "n"), ("fc", "m"), ("n", "output"),
                       ("m", "output")])
    assert STEPS["leak-into-bias"].apply(legalise._copy(graph), "n", graph.nodes["n"]) is None


# -- the pass and its report ----------------------------------------------------------------------

STRICT_GT = Accepts({("Input", "Output", "Affine", "Linear"): (),
                     "LIF": (one_of("comparison", ">"), one_of("reset_timing", "same"),
                             equal("gain", 1))})


def test_legalise_lists_each_rewrite_and_leaves_the_graph_alone():
    graph = dense(hub.LIF(beta=0.5, gain=0.5, comparison=">=", reset_timing="next"), 0)
    before = graph.to_dict()
    out, report = legalise.legalise(graph, STRICT_GT, target="t")
    assert graph.to_dict() == before
    assert [r.name for r in report] == ["zero-reset-same-step", "comparison-next-float",
                                        "gain-into-threshold"]
    assert report.exact and "3 rewrite(s), exact" in str(report)
    x = inputs(0)
    assert torch.equal(hub.simulate(graph, x), hub.simulate(out, x))


def test_exact_only_refuses_a_float_equivalent_rewrite_naming_node_and_field():
    graph = dense(hub.LIF(beta=0.5, gain=0.3), 0)
    with pytest.raises(hub.UnsupportedError) as e:
        legalise.legalise(graph, STRICT_GT, rewrites="exact")
    assert (e.value.node, e.value.field) == ("n", "gain")
    _, report = legalise.legalise(graph, STRICT_GT)
    assert not report.exact and [r.kind for r in report] == [FLOAT]


def test_nothing_to_do_returns_the_graph_itself():
    graph = dense(hub.LIF(beta=0.5), 0)
    out, report = legalise.legalise(graph, STRICT_GT)
    assert out is graph and len(report) == 0 and "no rewrites" in str(report)


def test_convert_with_report_returns_the_model_and_the_report():
    graph = dense(hub.LIF(beta=0.5, comparison=">="), 0)
    converted = hub.convert(graph, to="snntorch", report=True)
    model, report = converted
    assert converted.result is model and isinstance(report, legalise.Report)
    assert [r.name for r in report] == ["comparison-next-float"] and report.exact
    with pytest.raises(hub.UnsupportedError):
        hub.convert(graph, to="snntorch", rewrites="none")


def test_every_torch_format_declares_what_it_accepts():
    for name in ("snntorch", "norse", "spikingjelly"):
        accepts = hub.formats()[name].accepts
        assert isinstance(accepts, Accepts)
        text = accepts.describe()
        assert "LIF" in text and "comparison" in text and "topology" in text


# -- the frameworks' default neurons, there and back ----------------------------------------------

SHAPES = {"dense": (16,), "conv": (1, 8, 8)}


def snntorch_net(kind: str) -> nn.Module:
    if kind == "dense":
        return nn.Sequential(nn.Linear(16, 12), snn.Leaky(beta=0.9, init_hidden=True),
                             nn.Linear(12, 5), snn.Leaky(beta=0.9, init_hidden=True))
    return nn.Sequential(nn.Conv2d(1, 4, 3), snn.Leaky(beta=0.9, init_hidden=True), nn.Flatten(),
                         nn.Linear(144, 5), snn.Leaky(beta=0.9, init_hidden=True))


def spikingjelly_net(kind: str) -> nn.Module:
    if kind == "dense":
        model = nn.Sequential(layer.Linear(16, 12), neuron.LIFNode(), layer.Linear(12, 5),
                              neuron.LIFNode())
    else:
        model = nn.Sequential(layer.Conv2d(1, 4, 3), neuron.LIFNode(), layer.Flatten(),
                              layer.Linear(144, 5), neuron.LIFNode())
    functional.set_step_mode(model, "m")
    return model


def norse_net(kind: str) -> nn.Module:
    if kind == "dense":
        return SequentialState(nn.Linear(16, 12), LIFCell(), nn.Linear(12, 5), LIFCell())
    return SequentialState(nn.Conv2d(1, 4, 3), LIFCell(), nn.Flatten(), nn.Linear(144, 5),
                           LIFCell())


NETS = {"snntorch": snntorch_net, "spikingjelly": spikingjelly_net, "norse": norse_net}
#: How far the random weights are scaled for the outputs to spike a fair share of the steps:
#: SpikingJelly's default LIFNode halves its input, Norse's LIFCell takes a tenth of its current.
SCALE = {"snntorch": 4.0, "spikingjelly": 12.0, "norse": 25.0}
FRAMEWORK_PAIRS = [(a, b) for a in NETS for b in NETS if a != b]


def default_net(source: str, kind: str) -> nn.Module:
    torch.manual_seed(7)
    model = NETS[source](kind)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(SCALE[source])
    return model


@pytest.mark.parametrize("kind", ["dense", "conv"])
@pytest.mark.parametrize("source, target", FRAMEWORK_PAIRS,
                         ids=[f"{a}-{b}" for a, b in FRAMEWORK_PAIRS])
def test_default_neurons_convert_there_and_back_spike_identically(source, target, kind):
    """snnTorch's default Leaky, SpikingJelly's default LIFNode and Norse's default LIFCell:
    converted to each other framework and back, each run in its own framework, give the
    original's spikes bit for bit where every rewrite is exact, else up to threshold ties."""
    formats = hub.formats()
    model = default_net(source, kind)
    shape = SHAPES[kind]
    x = torch.rand(40, 3, *shape, generator=torch.Generator().manual_seed(1))
    graph = hub.load(model, input_shape=shape)
    reference = formats[source].run(model, x)
    assert 0.02 < float(reference.mean()) < 0.98, "the test needs outputs that spike"

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        there, report = hub.convert(model, to=target, input_shape=shape, report=True)
        back, report_back = hub.convert(there, to=source, report=True)
    for result, done in ((formats[target].run(there, x), report),
                         (formats[source].run(back, x), report_back)):
        kind_ = EXACT if report.exact and report_back.exact else FLOAT
        ok, why = agrees(graph, x, reference, result, kind_)
        assert ok, f"{source}->{target}: {why}\n{report}\n{report_back}"


# -- SpikingJelly's LIF in SpikingJelly's own arithmetic -------------------------------------------


def spikingjelly_lif(node: nn.Module) -> nn.Module:
    torch.manual_seed(2)
    model = nn.Sequential(layer.Linear(6, 5), node)
    with torch.no_grad():
        model[0].weight.mul_(6)
    functional.set_step_mode(model, "m")
    return model


@pytest.mark.parametrize("decay_input", [True, False])
@pytest.mark.parametrize("tau", [2.0, 3.0, 5.0, 10.0, 100.0, 7.3])
def test_spikingjelly_lif_round_trips_bit_for_bit_whatever_its_tau(tau, decay_input):
    """1/tau is inexact in float32 for tau = 3, 5, 10, 100: export still finds that tau."""
    model = spikingjelly_lif(neuron.LIFNode(tau=tau, decay_input=decay_input))
    back, report = hub.convert(model, to="spikingjelly", input_shape=(6,), report=True)
    assert back[1].tau == tau and back[1].decay_input == decay_input and len(report) == 0
    x = torch.rand(60, 2, 6, generator=torch.Generator().manual_seed(3)) * 2
    run = hub.formats()["spikingjelly"].run
    spikes = run(model, x)
    assert 0 < float(spikes.mean()) < 1
    assert torch.equal(run(back, x), spikes)


@pytest.mark.parametrize("w", [0.3, -1.234, 2.5])
def test_a_trained_parametric_lif_round_trips_as_itself(w):
    model = spikingjelly_lif(neuron.ParametricLIFNode())
    with torch.no_grad():
        model[1].w.fill_(w)
    back = hub.convert(model, to="spikingjelly", input_shape=(6,))
    assert isinstance(back[1], neuron.ParametricLIFNode)
    assert torch.sigmoid(back[1].w) == torch.sigmoid(model[1].w)
    x = torch.rand(60, 2, 6, generator=torch.Generator().manual_seed(3)) * 2
    run = hub.formats()["spikingjelly"].run
    assert torch.equal(run(back, x), run(model, x))


# -- the command line ------------------------------------------------------------------------------


def test_hub_plugins_accepts_prints_the_declaration(capsys):
    from hub.cli import main

    assert main(["plugins", "--accepts", "snntorch"]) == 0
    text = capsys.readouterr().out
    assert "snntorch accepts" in text and "comparison: '>'" in text and "topology" in text


def test_hub_convert_verbose_prints_the_report(tmp_path, capsys):
    from hub.cli import main

    src = tmp_path / "net.hub.json"
    hub.save(dense(hub.LIF(beta=0.5), 0), out=src)
    assert main(["convert", str(src), "-o", str(tmp_path / "net.nir"), "--dt", "1e-3",
                 "-v"]) == 0
    assert "conversion to 'nir': no rewrites needed" in capsys.readouterr().out
