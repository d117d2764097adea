"""The spikingjelly format: SpikingJelly 2.0 models in and out, spike for spike.

Every test that compares runs SpikingJelly itself (``Format.run``: ``functional.reset_net``,
then the model in its own step mode) against ``hub.simulate`` of the canonical graph.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

import hub
from hub_conformance import zoo
from hub_conformance.compare import compare, flat
from hub_conformance.paths import Route, different
from hub_conformance.suite import run_case
from hub_conformance.testing import FormatTests

sj = pytest.importorskip("spikingjelly.activation_based", reason="spikingjelly is not installed")
from spikingjelly.activation_based import functional, layer, neuron, surrogate  # noqa: E402

FMT = "spikingjelly"


def fmt() -> hub.Format:
    return hub.plugins().format(FMT)


def sj_run(model, x: torch.Tensor) -> torch.Tensor:
    return fmt().run(model, x)


def dyadic(rng: np.random.Generator, *shape: int, scale: int = 4) -> np.ndarray:
    return (rng.integers(-scale, scale + 1, size=shape) / scale).astype(np.float32)


def spikes(rng: np.random.Generator, *shape: int) -> torch.Tensor:
    return torch.from_numpy((rng.random(shape) < 0.5).astype(np.float32))


def seq(mode: str, *modules) -> torch.nn.Sequential:
    model = torch.nn.Sequential(*modules)
    functional.set_step_mode(model, mode)
    return model


def dense(mode: str, node, rng: np.random.Generator, n_in: int = 6, n_out: int = 8):
    """A Linear layer of dyadic weights feeding ``node``, in step mode ``mode``."""
    fc = layer.Linear(n_in, n_out, bias=True)
    with torch.no_grad():
        fc.weight.copy_(torch.from_numpy(dyadic(rng, n_out, n_in)))
        fc.bias.copy_(torch.from_numpy(dyadic(rng, n_out)))
    return seq(mode, fc, node)


def assert_same_spikes(model, x: torch.Tensor, tier: str = "exact") -> hub.Graph:
    """Import ``model``, and check SpikingJelly's own output against hub.simulate."""
    graph = hub.load(model)
    ours = sj_run(model, x)
    theirs = hub.simulate(graph, x)
    if tier == "exact":
        assert torch.equal(ours, theirs), \
            f"{int((ours != theirs).sum())} of {ours.numel()} outputs differ"
    else:
        result = compare(graph, x, tier, flat(theirs), flat(ours))
        assert result.agree or result.tie, result.detail
    assert 0 < float(theirs.mean()) < 1, "the test input does not exercise the neuron"
    return graph


# -- conformance ----------------------------------------------------------------------------


def expressible(graph: hub.Graph, rewrites: str = "float-equivalent") -> str | None:
    """Why SpikingJelly cannot express ``graph`` (its exporter's refusal) with the rewrites
    ``rewrites`` allows, or ``None``."""
    try:
        hub.save(graph, to=FMT, rewrites=rewrites)
    except hub.UnsupportedError as e:
        return f"{FMT}: node {e.node!r}: {e.message}"
    return None


class TestSpikingJellyConformance(FormatTests):
    """The zoo along every route between SpikingJelly, the hub and NIR (multi-step export)."""

    format = FMT
    peers = ("hub", "nir")
    tiers = ("exact", "float", "fixed")

    def test_conformance(self, conformance_run) -> None:
        # Every route exports the case's graph (or NIR's identical copy of it) to SpikingJelly:
        # where that export refuses, the route is n/a, which is known before running the case.
        reason = expressible(conformance_run[0].graph) if conformance_run else None
        if reason:
            pytest.skip(f"not expressible: {reason}")
        super().test_conformance(conformance_run)


class TestSpikingJellySingleStepConformance(TestSpikingJellyConformance):
    """The same routes with every SpikingJelly model exported, and so run, in single-step mode.

    The routes call ``hub.save(graph, to="spikingjelly")`` with no options; the format's
    ``step_mode`` attribute is the default export then uses, and this class sets it to "s".
    Only the fixed tier, whose integrate-and-fire models SpikingJelly expresses nearly all of;
    the exact and float tiers' neurons and layers run in single-step mode below
    (``test_zoo_with_spikingjelly_conventions``).
    """

    peers = ("hub",)
    tiers = ("fixed",)

    @pytest.fixture(autouse=True)
    def _single_step(self, monkeypatch) -> None:
        monkeypatch.setattr(fmt(), "step_mode", "s")


# The zoo sweeps conventions SpikingJelly lacks (">" with a subtractive reset in every topology
# case, per-neuron decays), so almost all of it is n/a above. The same graphs with SpikingJelly's
# conventions (">=", one decay per layer) test its layers and neurons along the same routes.

#: route -> the step modes it runs in: both where SpikingJelly runs the model or re-imports it
#: for the round trip.
ROUTES = {Route("hub", FMT): "ms", Route(FMT, "hub"): "m", Route("hub", FMT, back=True): "ms",
          Route("hub", FMT, via="nir"): "m"}


def _sj_conventions(case: zoo.Case) -> zoo.Case | None:
    """``case`` with ``>=`` and per-layer decays, or ``None`` where that is not a test."""
    graph = case.graph.flat()
    out = hub.Graph(metadata=dict(graph.metadata))
    for name, node in graph.nodes.items():
        if isinstance(node, (hub.IF, hub.LIF, hub.CubaLIF)):
            changes = {"comparison": ">="}
            for field in ("beta", "alpha", "v_leak", "v_init", "gain", "current_gain",
                          "v_reset", "threshold"):
                value = getattr(node, field, None)
                if isinstance(value, np.ndarray) and value.size > 1:
                    changes[field] = np.full_like(value, value.ravel()[0])
            node = node.replace(**changes)
        out.add(name, node)
    for source, target in graph.edges:
        out.connect(source, target)
    new = zoo.Case(f"{case.name}-sj", case.tier, out, case.x, case.description)
    x = torch.as_tensor(case.x)
    active = float((hub.simulate(out, x) != 0).float().mean())
    if not 0.02 <= active <= 0.98:
        return None
    if case.tier == "exact" and zoo.check_exact(new) is not None:
        return None
    return new


@functools.cache
def _sj_cases() -> list:
    params = []
    for case in zoo.cases(("exact", "float")):
        new = _sj_conventions(case)
        if new is None:
            continue
        if expressible(new.graph, "exact" if case.tier == "exact" else
                       "float-equivalent") is not None:
            continue
        for route, modes in ROUTES.items():
            for mode in modes:
                params.append(pytest.param(new, route, mode, id=f"{new.id}:{route.label}:{mode}"))
    return params


@pytest.mark.parametrize("case, route, mode", _sj_cases())
def test_zoo_with_spikingjelly_conventions(case, route, mode, monkeypatch):
    monkeypatch.setattr(fmt(), "step_mode", mode)
    outcome = run_case(case, route, gaps={})
    if outcome.status == "n/a" and not outcome.detail.startswith(f"{FMT}:"):
        pytest.skip(f"another format on the route cannot express it: {outcome.detail}")
    allowed = ("pass",) if case.tier == "exact" else ("pass", "tie")
    assert outcome.status in allowed, f"{outcome.id}: {outcome.status}: {outcome.detail}"


def test_zoo_with_spikingjelly_conventions_covers_layers():
    """The adapted zoo really reaches convolutions, pools and flattening in SpikingJelly."""
    expressed = set()
    for param in _sj_cases():
        case, route, mode = param.values
        if route == Route("hub", FMT) and mode == "m" and case.tier == "exact":
            try:
                model = hub.save(case.graph, to=FMT)
            except hub.UnsupportedError:
                continue
            expressed |= {type(m).__name__ for m in model.modules()}
    assert {"Conv1d", "Conv2d", "AvgPool2d", "MaxPool2d", "Flatten", "Linear", "LIFNode",
            "IFNode", "CUBALIFNode"} <= expressed


# -- neurons: SpikingJelly's own output against hub.simulate of the imported graph ----------

MODES = pytest.mark.parametrize("mode", ["m", "s"], ids=["multi-step", "single-step"])


@MODES
@pytest.mark.parametrize("v_reset", [0.0, -0.5, None], ids=["reset-0", "reset-value", "soft"])
def test_if_node_is_bit_exact_for_any_float(mode, v_reset):
    """IFNode computes v + x, the canonical IF's v + 1*x: identical for any float32 input."""
    rng = np.random.default_rng(1)
    fc = layer.Linear(6, 8)
    model = seq(mode, fc, neuron.IFNode(v_threshold=0.8, v_reset=v_reset))
    graph = assert_same_spikes(model, torch.from_numpy(rng.normal(size=(30, 3, 6)).astype(
        np.float32)))
    node = graph.nodes["1"]
    assert isinstance(node, hub.IF) and node.comparison == ">="
    assert node.reset == ("subtract" if v_reset is None else "zero")
    assert float(node.v_init) == (v_reset or 0.0)  # SpikingJelly starts v at v_reset


@MODES
@pytest.mark.parametrize("decay_input", [True, False])
@pytest.mark.parametrize("v_reset", [0.0, -0.25, None], ids=["reset-0", "reset-value", "soft"])
@pytest.mark.parametrize("tau", [2.0, 4.0])
def test_lif_node_is_bit_exact_with_dyadic_values(mode, decay_input, v_reset, tau):
    rng = np.random.default_rng(2)
    node = neuron.LIFNode(tau=tau, decay_input=decay_input, v_threshold=0.5, v_reset=v_reset)
    graph = assert_same_spikes(dense(mode, node, rng), spikes(rng, 16, 3, 6))
    lif = graph.nodes["1"]
    assert float(lif.beta) == 1 - 1 / tau
    assert float(lif.gain) == (1 / tau if decay_input else 1.0)
    assert float(lif.v_leak) == (v_reset or 0.0)


@MODES
@pytest.mark.parametrize("v_reset", [0.0, None], ids=["reset-0", "soft"])
def test_lif_without_decay_input_and_power_of_two_tau_is_bit_exact_for_any_float(mode,
                                                                                v_reset):
    """v - v/tau rounds the same real number as beta*v when tau is a power of two."""
    rng = np.random.default_rng(3)
    model = seq(mode, layer.Linear(6, 8), neuron.LIFNode(tau=4.0, decay_input=False,
                                                         v_reset=v_reset, v_threshold=0.7))
    assert_same_spikes(model, torch.from_numpy(rng.normal(size=(40, 4, 6)).astype(np.float32)))


def test_lif_with_decay_input_rounds_differently_only_at_threshold_ties():
    """v + (x - v)/tau and beta*v + gain*x are different float expressions: the voltages
    differ by rounding, so spikes may part only where a voltage sits on the threshold."""
    rng = np.random.default_rng(4)
    model = seq("m", layer.Linear(6, 8), neuron.LIFNode(tau=3.0, v_threshold=0.3))
    x = torch.from_numpy(rng.normal(size=(40, 4, 6)).astype(np.float32))
    assert_same_spikes(model, x, tier="float")
    # the voltages themselves differ by rounding: the float tier is the honest claim here
    graph = hub.load(model)
    lif = graph.nodes["1"].replace(threshold=np.float32(1e9))  # never spikes: v is the state
    probe = hub.Graph.chain(("input", hub.Input(shape=(6,))), ("fc", graph.nodes["0"]),
                            ("n", hub.LI(beta=lif.beta, gain=lif.gain)))
    voltages = seq("m", layer.Linear(6, 8), neuron.LIFNode(tau=3.0, v_threshold=1e9,
                                                           store_v_seq=True))
    voltages[0].load_state_dict(model[0].state_dict())
    functional.reset_net(voltages)
    with torch.no_grad():
        voltages(x)
    ours = voltages[1].v_seq
    theirs = hub.simulate(probe, x)
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    assert not torch.equal(ours, theirs)


@MODES
@pytest.mark.parametrize("decay_input", [True, False])
@pytest.mark.parametrize("v_reset", [0.0, None], ids=["reset-0", "soft"])
def test_parametric_lif_is_frozen_at_its_current_tau(mode, decay_input, v_reset):
    rng = np.random.default_rng(5)
    node = neuron.ParametricLIFNode(init_tau=4.0, decay_input=decay_input, v_reset=v_reset,
                                    v_threshold=0.5)
    graph = assert_same_spikes(dense(mode, node, rng), spikes(rng, 16, 3, 6))
    assert float(graph.nodes["1"].beta) == 0.75  # sigmoid(w) = 1/tau, exactly 1/4 here


@MODES
@pytest.mark.parametrize("v_reset", [0.0, None], ids=["reset-0", "soft"])
def test_cuba_lif_node_is_bit_exact_for_any_float(mode, v_reset):
    rng = np.random.default_rng(6)
    model = seq(mode, layer.Linear(6, 8), neuron.CUBALIFNode(c_decay=0.6, v_decay=0.8,
                                                             v_threshold=0.5, v_reset=v_reset))
    graph = assert_same_spikes(model, torch.from_numpy(
        rng.normal(size=(30, 3, 6)).astype(np.float32)))
    node = graph.nodes["1"]
    assert isinstance(node, hub.CubaLIF) and node.current_order == "new"


@MODES
@pytest.mark.parametrize("make", [
    lambda: neuron.HalfThresholdIFNode(v_threshold=1.0),
    lambda: neuron.SimpleIFNode(v_threshold=0.5, v_reset=None),
    lambda: neuron.SimpleLIFNode(tau=2.0, decay_input=True, v_threshold=0.5),
    lambda: neuron.SimpleLIFNode(tau=4.0, decay_input=False, v_threshold=0.5, v_reset=-0.25),
    lambda: neuron.LIFNode(tau=2.0, detach_reset=True, store_v_seq=True, v_threshold=0.5),
    lambda: neuron.IFNode(surrogate_function=surrogate.ATan(), detach_reset=True),
], ids=["half-threshold-if", "simple-if", "simple-lif", "simple-lif-no-decay-input",
        "detach-reset-store-v-seq", "atan-surrogate"])
def test_other_nodes_whose_dynamics_map_exactly(mode, make):
    rng = np.random.default_rng(7)
    graph = assert_same_spikes(dense(mode, make(), rng), spikes(rng, 16, 3, 6))
    if isinstance(make(), neuron.HalfThresholdIFNode):
        assert float(graph.nodes["1"].v_init) == 0.5


# -- layers ---------------------------------------------------------------------------------


def _randomise(model: torch.nn.Module, seed: int) -> None:
    """Random weights and BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    model.eval()


@MODES
def test_convolutional_model_with_batchnorm_kept_as_nodes(mode):
    model = seq(mode,
                layer.Conv2d(2, 4, 3, padding=1, bias=False), layer.BatchNorm2d(4),
                neuron.IFNode(v_reset=None), layer.MaxPool2d(2),
                layer.Conv2d(4, 4, 3, padding="same"), neuron.LIFNode(tau=2.0),
                layer.AvgPool2d(2, divisor_override=1), layer.Flatten(),
                layer.Linear(16, 5), layer.BatchNorm1d(5), neuron.IFNode())
    _randomise(model, 0)
    x = torch.from_numpy((np.random.default_rng(8).random((12, 2, 2, 8, 8)) < 0.4).astype(
        np.float32))
    graph = hub.load(model, input_shape=(2, 8, 8))
    types = [n.type for n in graph.nodes.values()]
    assert types == ["Input", "Conv2d", "BatchNorm", "IF", "MaxPool2d", "Conv2d", "LIF",
                     "SumPool2d", "Flatten", "Affine", "BatchNorm", "IF", "Output"]
    ours, theirs = sj_run(model, x), hub.simulate(graph, x)
    result = compare(graph, x, "float", flat(theirs), flat(ours))  # LIFNode's own expression
    assert result.agree or result.tie, result.detail
    again = hub.load(hub.save(graph, to=FMT, step_mode=mode))
    assert again == graph  # hub -> SpikingJelly -> hub: node for node


def test_plain_torch_layers_and_spikingjelly_containers():
    """Plain torch.nn layers in a single-step model, and SeqToANNContainer / MultiStepContainer
    (their children see one step, or time folded into the batch) in a multi-step one."""
    rng = np.random.default_rng(9)
    x = spikes(rng, 10, 2, 2, 6)
    single = torch.nn.Sequential(torch.nn.Conv1d(2, 3, 3, padding=1), torch.nn.Flatten(),
                                 torch.nn.Dropout(0.5), neuron.IFNode(v_reset=None),
                                 torch.nn.Linear(18, 4, bias=False), torch.nn.Identity(),
                                 neuron.LIFNode(tau=2.0))
    multi = torch.nn.Sequential(
        layer.SeqToANNContainer(torch.nn.Conv1d(2, 3, 3, padding=1), torch.nn.Flatten()),
        neuron.IFNode(v_reset=None, step_mode="m"),
        layer.MultiStepContainer(torch.nn.Linear(18, 4, bias=False),
                                 neuron.LIFNode(tau=2.0)))
    for model in (single, multi):
        _randomise(model, 1)
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv1d, torch.nn.Linear)):
                with torch.no_grad():
                    m.weight.copy_(torch.from_numpy(dyadic(rng, *m.weight.shape)))
                    if m.bias is not None:
                        m.bias.copy_(torch.from_numpy(dyadic(rng, *m.bias.shape)))
        graph = hub.load(model, input_shape=(2, 6))
        assert [n.type for n in graph.nodes.values()] == [
            "Input", "Conv1d", "Flatten", "IF", "Linear", "LIF", "Output"]
        assert torch.equal(sj_run(model, x), hub.simulate(graph, x))


@MODES
def test_delay_layer(mode):
    graph = hub.Graph.chain(("input", hub.Input(shape=(3,))),
                            ("fc", hub.Linear(weight=np.eye(3, dtype=np.float32))),
                            ("delay", hub.Delay(delay=np.int64(2))),
                            ("n", hub.IF(threshold=0.5, comparison=">=")))
    model = hub.save(graph, to=FMT, step_mode=mode)
    assert isinstance(model[1], layer.Delay) and model[1].delay_steps == 2
    x = spikes(np.random.default_rng(10), 8, 2, 3)
    assert torch.equal(sj_run(model, x), hub.simulate(graph, x))
    assert different(hub.load(model), graph) is None


def test_input_shape_comes_from_a_leading_linear_or_must_be_given():
    graph = hub.load(seq("m", layer.Linear(5, 3), neuron.IFNode()))
    assert graph.nodes["input"].shape == (5,)
    conv = seq("m", layer.Conv2d(1, 2, 3), neuron.IFNode())
    with pytest.raises(hub.HubError, match="input_shape") as info:
        hub.load(conv)
    assert info.value.field == "input_shape"
    assert hub.load(conv, input_shape=(1, 5, 5)).plan().output_shapes["1"] == (2, 3, 3)


# -- export ---------------------------------------------------------------------------------


def ann_style(threshold: float = 1.0) -> hub.Graph:
    """What ANN-to-SNN conversion gives: IF neurons, reset by subtraction, ">=", float weights."""
    rng = np.random.default_rng(11)
    w = lambda *s: (rng.normal(size=s) * 0.5).astype(np.float32)  # noqa: E731
    return hub.Graph.chain(
        ("input", hub.Input(shape=(2, 8, 8))),
        ("conv", hub.Conv2d(weight=w(4, 2, 3, 3), bias=w(4), padding=(1, 1))),
        ("n1", hub.IF(threshold=0.7, reset="subtract", comparison=">=")),
        ("pool", hub.AvgPool2d(kernel_size=(2, 2), stride=(2, 2))),
        ("flat", hub.Flatten()),
        ("fc", hub.Affine(weight=w(10, 64), bias=w(10))),
        ("n2", hub.IF(threshold=threshold, reset="subtract", comparison=">=")))


@MODES
def test_export_of_an_ann_converted_network_is_bit_exact(mode):
    graph = ann_style()
    model = hub.save(graph, to=FMT, step_mode=mode)
    assert all(m.step_mode == mode for m in model if hasattr(m, "step_mode"))
    assert [type(m).__name__ for m in model] == ["Conv2d", "IFNode", "AvgPool2d", "Flatten",
                                                 "Linear", "IFNode"]
    x = torch.rand(20, 3, 2, 8, 8)
    reference = hub.simulate(graph, x)
    assert 0 < float(reference.mean()) < 1
    assert torch.equal(sj_run(model, x), reference)
    assert different(hub.load(model), graph) is None


def test_convert_picks_the_step_mode_and_never_mutates_the_source():
    graph = ann_style()
    before = graph.to_dict()
    single = hub.convert(graph, to=FMT, step_mode="s")
    assert {m.step_mode for m in single.modules() if hasattr(m, "step_mode")} == {"s"}
    assert graph.to_dict() == before
    with pytest.raises(hub.ParameterError, match="step_mode") as info:
        hub.save(graph, to=FMT, step_mode="multi")
    assert info.value.field == "step_mode"


def test_greater_than_with_a_hard_reset_exports_as_the_next_float32_threshold():
    """v > t is v >= nextafter(t): a voltage exactly on the threshold does not spike."""
    graph = hub.Graph.chain(("input", hub.Input(shape=(2,))),
                            ("fc", hub.Linear(weight=np.eye(2, dtype=np.float32))),
                            ("n", hub.IF(threshold=0.5)))
    x = torch.full((6, 1, 2), 0.25)  # v reaches 0.5 exactly in step 2
    model = hub.save(graph, to=FMT)
    assert model[1].v_threshold == float(np.nextafter(np.float32(0.5), np.float32(1)))
    reference = hub.simulate(graph, x)
    ge = hub.simulate(hub.Graph.chain(("input", hub.Input(shape=(2,))), ("fc", graph.nodes["fc"]),
                                      ("n", graph.nodes["n"].replace(comparison=">="))), x)
    assert not torch.equal(reference, ge)  # the tie decides, so the test can tell them apart
    assert torch.equal(sj_run(model, x), reference)
    assert different(hub.load(model), graph) is None


def test_v_init_is_set_as_the_reset_value():
    graph = hub.Graph.chain(("input", hub.Input(shape=(3,))),
                            ("fc", hub.Linear(weight=np.eye(3, dtype=np.float32))),
                            ("n", hub.LIF(beta=0.5, v_init=0.75, threshold=1.0, comparison=">=")))
    model = hub.save(graph, to=FMT)
    assert model[1].get_reset_value("v") == 0.75
    x = torch.full((5, 1, 3), 0.5)
    assert torch.equal(sj_run(model, x), hub.simulate(graph, x))


def test_edited_export_uses_the_module_and_warns():
    from hub_plugins.spikingjelly import SpikingJellyMetadataWarning

    graph = hub.Graph.chain(("input", hub.Input(shape=(3,))),
                            ("fc", hub.Linear(weight=np.eye(3, dtype=np.float32))),
                            ("n", hub.LIF(beta=np.full(3, 0.5, np.float32), comparison=">=")))
    model = hub.save(graph, to=FMT)
    assert different(hub.load(model), graph) is None  # the stored per-neuron shape comes back
    model[1].tau = 4.0
    with pytest.warns(SpikingJellyMetadataWarning, match="hub_node"):
        edited = hub.load(model)
    assert float(edited.nodes["n"].beta) == 0.75


@pytest.mark.parametrize("node, field", [
    (hub.LIF(beta=np.float32([0.5, 0.75, 0.5]), comparison=">="), "beta"),
    (hub.LIF(beta=0.5, gain=0.25, comparison=">="), "gain"),
    (hub.LIF(beta=0.5, v_leak=0.25, comparison=">="), "v_leak"),
    (hub.LIF(beta=0.5, reset="none", comparison=">="), "reset"),
    (hub.LIF(beta=0.5, reset="subtract"), "comparison"),
    (hub.LIF(beta=0.5, comparison=">=", reset_timing="next"), "reset_timing"),
    (hub.LIF(beta=0.5, comparison=">=", amplitude=2.0), "amplitude"),
    (hub.LIF(beta=0.5, comparison=">=", refractory=1), "refractory"),
    (hub.LIF(beta=1.0, comparison=">="), "beta"),
    (hub.IF(gain=2.0, comparison=">="), "gain"),
    (hub.CubaLIF(alpha=0.5, beta=0.5, comparison=">=", current_order="previous"),
     "current_order"),
    (hub.LI(beta=0.5), "type"),
    (hub.Integrator(), "type"),
], ids=lambda v: v if isinstance(v, str) else v.type)
def test_export_refuses_what_spikingjelly_cannot_express(node, field):
    """Without the core's rewrites (``rewrites="none"``) each of these is refused by name."""
    graph = hub.Graph.chain(("input", hub.Input(shape=(3,))),
                            ("fc", hub.Linear(weight=np.eye(3, dtype=np.float32))), ("x", node))
    with pytest.raises(hub.UnsupportedError) as info:
        hub.save(graph, to=FMT, rewrites="none")
    assert info.value.node == "x" and info.value.field == field


@pytest.mark.parametrize("node", [
    hub.LIF(beta=0.5, gain=0.25, comparison=">="),
    hub.LIF(beta=0.5, v_leak=0.25, comparison=">="),
    hub.LIF(beta=0.5, reset="subtract"),
    hub.LIF(beta=0.5, comparison=">=", reset_timing="next"),
    hub.IF(gain=2.0, comparison=">="),
], ids=["gain", "v_leak", "comparison", "reset_timing", "IF-gain"])
def test_what_a_rewrite_expresses_is_exported_and_reported(node):
    """The same nodes with the rewrites: exported, listed in the report, and their spikes
    those of the graph (up to threshold ties where a rewrite is float-equivalent)."""
    graph = hub.Graph.chain(("input", hub.Input(shape=(3,))),
                            ("fc", hub.Affine(weight=np.eye(3, dtype=np.float32) * 1.5,
                                              bias=np.float32(0.0))), ("x", node))
    model, report = hub.save(graph, to=FMT, report=True)
    assert len(report) >= 1 and all(r.node in ("x", "fc") for r in report)
    x = torch.from_numpy(np.random.default_rng(3).uniform(0, 1, (40, 2, 3)).astype(np.float32))
    got = fmt().run(model, x)
    want = hub.simulate(graph, x)
    if report.exact:
        assert torch.equal(got, want)
    else:
        from hub_conformance.compare import compare, flat
        outcome = compare(graph, x, "float", flat(want), flat(got))
        assert outcome.agree or outcome.tie, outcome.detail


@MODES
def test_graphs_that_are_not_a_chain_export_as_a_net_stepping_the_graph(mode):
    """Recurrence and a skip connection: a SpikingJellyNet, run by SpikingJelly in the step mode
    it was exported in (and switched to the other), spike for spike, and read back as given."""
    from hub_plugins.spikingjelly.net import SpikingJellyNet

    rng = np.random.default_rng(3)
    weights = [rng.integers(-4, 5, (3, 3)).astype(np.float32) / 4 for _ in range(2)]
    nodes = {"input": hub.Input(shape=(3,)), "fc": hub.Linear(weight=weights[0]),
             "n": hub.IF(comparison=">="), "output": hub.Output()}
    # feedback into the dense layer, not beside it into the neuron (which is what a
    # LinearRecurrentContainer computes, and exports as one: see below)
    recurrent = hub.Graph({**nodes, "back": hub.Linear(weight=weights[1])},
                          [("input", "fc"), ("fc", "n"), ("n", "back"), ("back", "fc"),
                           ("n", "output")])
    skip = hub.Graph({**nodes, "add": hub.Add()},
                     [("input", "fc"), ("fc", "n"), ("n", "add"), ("input", "add"),
                      ("add", "output")])
    x = spikes(rng, 12, 2, 3)
    for graph in (recurrent, skip):
        model = hub.save(graph, to=FMT, step_mode=mode)
        assert isinstance(model, SpikingJellyNet) and model.step_mode == mode
        assert torch.equal(sj_run(model, x), hub.simulate(graph, x))
        assert different(graph, hub.load(model)) is None
        other = "s" if mode == "m" else "m"
        functional.set_step_mode(model, other)
        assert {m.step_mode for m in model.modules() if hasattr(m, "step_mode")} == {other}
        assert torch.equal(sj_run(model, x), hub.simulate(graph, x))
    # feedback beside the dense layer into the neuron: a LinearRecurrentContainer, in a net
    # when the graph has a skip as well, spike for spike and read back to the same spikes
    beside = hub.Graph({**nodes, "back": hub.Linear(weight=weights[1]), "add": hub.Add()},
                       [("input", "fc"), ("fc", "n"), ("n", "back"), ("back", "n"),
                        ("n", "add"), ("input", "add"), ("add", "output")])
    for graph in (beside, hub.Graph({**nodes, "back": hub.Linear(weight=weights[1])},
                                    [("input", "fc"), ("fc", "n"), ("n", "back"),
                                     ("back", "n"), ("n", "output")])):
        model = hub.save(graph, to=FMT, step_mode=mode)
        assert any(isinstance(m, layer.LinearRecurrentContainer) for m in model.modules())
        assert torch.equal(sj_run(model, x), hub.simulate(graph, x))
        assert torch.equal(hub.simulate(hub.load(model), x), hub.simulate(graph, x))


@MODES
def test_every_layer_of_the_shared_mapping_exports_in_a_chain_and_comes_back_node_for_node(mode):
    """BatchNorm, ReLU, AdaptiveAvgPool2d, Scale, Bias, Reshape and Vote, which SpikingJelly has
    no layer.* for, export through the shared torch.nn mapping, run spike for spike in
    SpikingJelly, and read back as the same graph."""
    rng = np.random.default_rng(21)

    def w(*shape):
        return (rng.integers(-4, 5, shape) / 4).astype(np.float32)

    graph = hub.Graph.chain(
        ("input", hub.Input(shape=(2, 6, 6))),
        ("conv", hub.Conv2d(weight=w(4, 2, 3, 3), padding=(1, 1))),
        ("bn", hub.BatchNorm(mean=w(4), var=np.full(4, 0.75, np.float32), weight=w(4),
                             bias=w(4), eps=0.25)),
        ("n1", hub.IF(comparison=">=")),
        ("pool", hub.AdaptiveAvgPool2d(output_size=(2, 2))),
        ("flat", hub.Flatten()),
        ("relu", hub.ReLU()),
        ("scale", hub.Scale(scale=np.float32(2))),
        ("bias", hub.Bias(bias=w(16))),
        ("shape", hub.Reshape(shape=(16,))),
        ("fc", hub.Linear(weight=w(8, 16))),
        ("n2", hub.IF(comparison=">=")),
        ("vote", hub.Vote(size=2)),
        ("output", hub.Output()))
    x = spikes(rng, 6, 2, 2, 6, 6)
    model = hub.save(graph, to=FMT, step_mode=mode)
    assert torch.equal(sj_run(model, x), hub.simulate(graph, x))
    back = hub.load(model)
    assert different(graph, back) is None
    assert [type(node).__name__ for node in back.nodes.values()] == \
        [type(node).__name__ for node in graph.nodes.values()]


# -- import refusals ------------------------------------------------------------------------


class _LeakyAnalogNode(neuron.LIFNode):
    """A subclass that changes what fires: its dynamics are not LIFNode's."""


@pytest.mark.parametrize("model, field, match", [
    (lambda: seq("m", layer.Linear(3, 3), _LeakyAnalogNode()), "type", "_LeakyAnalogNode"),
    (lambda: seq("m", layer.Linear(3, 3), torch.nn.BatchNorm1d(3)).eval(), "step_mode",
     "SeqToANNContainer"),
    (lambda: torch.nn.Sequential(layer.Linear(3, 3, step_mode="m"), torch.nn.Conv1d(3, 3, 1),
                                 neuron.IFNode(step_mode="m")), "step_mode", "SeqToANNContainer"),
    (lambda: seq("s", layer.Linear(3, 3), layer.BatchNorm1d(3).train(), neuron.IFNode()),
     "training", "eval"),
    (lambda: seq("s", layer.Linear(3, 3), neuron.IFNode(
        surrogate_function=surrogate.Sigmoid(spiking=False))), "surrogate_function",
     "non-spiking"),
    (lambda: torch.nn.Sequential(layer.Linear(3, 3, step_mode="m"),
                                 neuron.IFNode(step_mode="s")), "step_mode", "mixes"),
    (lambda: seq("s", layer.Linear(3, 3), torch.nn.Flatten(0)), "start_dim", "batch"),
    (lambda: seq("s", layer.Linear(3, 3), layer.AvgPool2d(2, ceil_mode=True)), "ceil_mode",
     "ceil_mode"),
])
def test_import_refuses_what_has_no_exact_counterpart(model, field, match):
    with pytest.raises(hub.UnsupportedError, match=match) as info:
        hub.load(model(), source=FMT, input_shape=(3,))
    assert info.value.field == field


def test_format_is_recognised_and_listed():
    model = seq("m", layer.Linear(3, 3), neuron.IFNode())
    assert hub.load(model).nodes["1"].type == "IF"  # detected without source=
    assert not fmt().recognizes(torch.nn.Sequential(torch.nn.Linear(3, 3)))
    assert "run" in fmt().capabilities and "export" in fmt().capabilities


# -- NIR: SpikingJelly's own exchange against snn-hub's --------------------------------------


def _lif_model(v_reset) -> torch.nn.Sequential:
    fc = layer.Linear(2, 2, bias=False)
    with torch.no_grad():
        fc.weight.copy_(torch.tensor([[2.0, 0.0], [1.0, 1.0]]))
    return seq("m", fc, neuron.LIFNode(tau=2.0, v_reset=v_reset))


def test_spikingjelly_own_nir_export_changes_spikes_and_the_hub_keeps_them(tmp_path):
    """SpikingJelly's nir_exchange writes a LIFNode as a NIR LIF: NIR spikes at v > threshold,
    SpikingJelly at v >= threshold, so any NIR reader sees a different network (here every
    voltage hits the threshold exactly); a soft reset it refuses to export at all. Through
    snn-hub the same model goes to NIR and back, and into NIR's own runtime, spike for spike."""
    nir_exchange = pytest.importorskip("spikingjelly.activation_based.nir_exchange",
                                       reason="spikingjelly's NIR exchange needs nir and nirtorch")
    dt = 1e-4
    x = torch.tensor([[1.0, 1.0]]).repeat(6, 1, 1)
    hard = _lif_model(0.0)
    original = sj_run(hard, x)
    assert original.sum() > 0

    theirs = nir_exchange.export_to_nir(hard, x[:, :1], dt=dt)
    as_nir_reads_it = hub.simulate(hub.load(theirs, dt=dt), x)
    assert not torch.equal(as_nir_reads_it, original)  # the ">=" ties became silent

    path = tmp_path / "lif.nir"
    hub.convert(hard, to="nir", out=path, dt=dt)
    assert torch.equal(hub.plugins().format("nir").run(path, x), original)
    back = hub.convert(path, to=FMT)
    assert torch.equal(sj_run(back, x), original)

    soft = _lif_model(None)
    with pytest.raises(NotImplementedError, match="soft reset"):
        nir_exchange.export_to_nir(soft, x[:, :1], dt=dt)
    hub.convert(soft, to="nir", out=tmp_path / "soft.nir", dt=dt)
    assert torch.equal(sj_run(hub.convert(tmp_path / "soft.nir", to=FMT), x), sj_run(soft, x))
