"""The snnTorch plugin: each neuron option against snnTorch itself, refusals, the zoo, the paper.

Every comparison runs the model in snnTorch (its own neurons, called step by step as snnTorch
users call them) and the imported or exported graph in the hub's simulator.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import snntorch as snn
import torch
from torch import nn

import hub
from hub_conformance import zoo
from hub_conformance.compare import compare, flat
from hub_conformance.paths import different
from hub_conformance.testing import FormatTests
from hub_plugins.snntorch import SnnTorchApproximationWarning, SnnTorchNet

FMT = "snntorch"


class TestSnntorchConformance(FormatTests):
    """The exact tier along every route between snnTorch, the canonical graph and NIR (directly,
    there and back, through .hub.json and .nir files)."""

    format = FMT
    peers = ("hub", "nir")
    tiers = ("exact",)


class TestSnntorchFloatConformance(FormatTests):
    """The float, fixed and paper tiers between snnTorch and the canonical graph (NIR routes add
    little to what the exact tier covers and would double the running time)."""

    format = FMT
    peers = ("hub",)
    tiers = ("float", "fixed", "paper")


def run_snntorch(net, x):
    return hub.plugins().format(FMT).run(net, x)


# -- user-written snnTorch models: import, then compare with snnTorch's own run -----------------

rng = np.random.default_rng(1)


def dyadic(*shape, scale=4):
    return torch.tensor(rng.integers(-scale, scale + 1, size=shape) / scale, dtype=torch.float32)


class Stepwise(nn.Module):
    """A tutorial-style model: a Linear then a neuron, state passed explicitly or kept inside."""

    def __init__(self, neuron, n_in=6, n=8, weights=None):
        super().__init__()
        self.fc = nn.Linear(n_in, n)
        if weights is not None:
            with torch.no_grad():
                self.fc.weight.copy_(weights[0])
                self.fc.bias.copy_(weights[1])
        self.lif = neuron
        self._state = None

    def forward(self, x):
        """One step. The neuron keeps its state (snnTorch 1.0 neurons do without init_hidden),
        but RSynaptic, which snnTorch 1.0 runs with explicit state only: the net keeps it."""
        cur = self.fc(x)
        if isinstance(self.lif, snn.RSynaptic) and not self.lif.init_hidden:
            state = self._state or (torch.zeros_like(cur),) * 3
            self._state = self.lif(cur, *state)
            return self._state[0]
        out = self.lif(cur)
        return out[0] if isinstance(out, tuple) else out

    def reset_mem(self):
        """Forget the state the net keeps (the hub resets every module that has this)."""
        self._state = None

    def run(self, x):
        """snnTorch's own loop over time, as its tutorials write it."""
        lif = self.lif
        state = None
        out = []
        with torch.no_grad():
            for xt in x:
                cur = self.fc(xt)
                if lif.init_hidden:
                    spk = lif(cur)
                    spk = spk[0] if isinstance(spk, tuple) else spk
                elif isinstance(lif, snn.RSynaptic):
                    state = state or (torch.zeros_like(cur),) * 3
                    spk, syn, mem = lif(cur, *state)
                    state = (spk, syn, mem)
                elif isinstance(lif, snn.RLeaky):
                    state = state or (torch.zeros_like(cur),) * 2
                    spk, mem = lif(cur, *state)
                    state = (spk, mem)
                elif isinstance(lif, snn.Synaptic):
                    state = state or (torch.zeros_like(cur),) * 2
                    spk, syn, mem = lif(cur, *state)
                    state = (syn, mem)
                else:
                    state = state if state is not None else torch.zeros_like(cur)
                    spk, state = lif(cur, state)
                out.append(spk)
        return torch.stack(out)


def assert_same_as_snntorch(model, x, exact=True):
    graph = hub.load(model)
    want = model.run(x)
    got = hub.simulate(graph, x)
    if exact:
        assert torch.equal(got, want), f"{int((got != want).sum())} of {got.numel()} differ"
    else:
        c = compare(graph, x, "float", flat(want), flat(got))
        assert c.agree or c.tie, c.detail
    return graph


def spikes(T=30, N=3, n=6, p=0.5):
    return (torch.rand(T, N, n) < p).float()


BETA = torch.tensor([0.5, 0.75, 0.875, 1.0, 0.25, 0.5, 0.75, 0.9375])
THRESH = torch.tensor([1.0, 0.5, 0.75, 1.25, 1.0, 0.25, 2.0, 1.0])

LEAKY_OPTIONS = {
    "subtract-delay": dict(reset_mechanism="subtract"),
    "zero-delay": dict(reset_mechanism="zero"),
    "zero-same": dict(reset_mechanism="zero", reset_delay=False),
    "none-delay": dict(reset_mechanism="none"),
    "none-same": dict(reset_mechanism="none", reset_delay=False),
    "graded": dict(graded_spikes_factor=torch.tensor(2.5)),
    "graded-zero-same": dict(graded_spikes_factor=torch.tensor(-0.5), reset_mechanism="zero",
                             reset_delay=False),
    "learned": dict(learn_beta=True, learn_threshold=True, learn_graded_spikes_factor=True),
    "surrogate": dict(spike_grad=snn.surrogate.fast_sigmoid(slope=10)),
    "no-surrogate": dict(surrogate_disable=True),
}


@pytest.mark.parametrize("init_hidden", [False, True], ids=["explicit-state", "init_hidden"])
@pytest.mark.parametrize("option", LEAKY_OPTIONS)
def test_leaky_options_import_bit_for_bit(option, init_hidden):
    torch.manual_seed(0)
    kwargs = {**LEAKY_OPTIONS[option], "init_hidden": init_hidden}
    model = Stepwise(snn.Leaky(beta=BETA.clone(), threshold=THRESH.clone(), **kwargs))
    assert_same_as_snntorch(model, spikes() * 2)


SYNAPTIC_OPTIONS = {
    "subtract-delay": dict(reset_mechanism="subtract"),
    "zero-delay": dict(reset_mechanism="zero"),  # zeroes after integrating: refractory 1
    "zero-same": dict(reset_mechanism="zero", reset_delay=False),
    "none": dict(reset_mechanism="none"),
}


@pytest.mark.parametrize("init_hidden", [False, True], ids=["explicit-state", "init_hidden"])
@pytest.mark.parametrize("option", SYNAPTIC_OPTIONS)
def test_synaptic_options_import_bit_for_bit(option, init_hidden):
    torch.manual_seed(1)
    neuron = snn.Synaptic(alpha=torch.rand(8), beta=BETA.clone(), threshold=THRESH.clone(),
                          init_hidden=init_hidden, **SYNAPTIC_OPTIONS[option])
    graph = assert_same_as_snntorch(Stepwise(neuron), spikes() * 2)
    node = graph.nodes["lif"]
    assert node.current_order == "new"
    if option == "zero-delay":
        assert (node.reset, node.reset_timing, node.refractory) == ("zero", "same", 1)


@pytest.mark.parametrize("cls", ["RLeaky", "RSynaptic"])
@pytest.mark.parametrize("recurrence", ["linear", "one-to-one", "one-to-one-scalar"])
@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
def test_recurrent_neurons_import_exactly_on_dyadic_values(cls, recurrence, reset):
    """RLeaky/RSynaptic add the recurrent term after the input (a rounding order the canonical
    neuron does not share), so bit-for-bit agreement is checked on dyadic values."""
    n = 8
    options = {"linear": dict(linear_features=n),
               "one-to-one": dict(all_to_all=False, V=dyadic(n)),
               "one-to-one-scalar": dict(all_to_all=False, V=torch.tensor(-0.5))}[recurrence]
    decays = dict(alpha=torch.tensor(0.5)) if cls == "RSynaptic" else {}
    neuron = getattr(snn, cls)(beta=torch.tensor(0.75), reset_mechanism=reset, **decays,
                               **options)
    if recurrence == "linear":
        with torch.no_grad():
            neuron.recurrent.weight.copy_(dyadic(n, n))
            neuron.recurrent.bias.copy_(dyadic(n))  # added from the first step on
    model = Stepwise(neuron, weights=(dyadic(n, 6), dyadic(n)))
    graph = assert_same_as_snntorch(model, spikes())
    assert any(name.endswith("_rec") for name in graph.nodes)


@pytest.mark.parametrize("cls", ["RLeaky", "RSynaptic"])
def test_convolutional_recurrence_imports_exactly_on_dyadic_values(cls):
    decays = dict(alpha=torch.tensor(0.5)) if cls == "RSynaptic" else {}
    neuron = getattr(snn, cls)(beta=0.5, conv2d_channels=3, kernel_size=3, init_hidden=True,
                               **decays)
    conv = nn.Conv2d(2, 3, 3, padding=1)
    with torch.no_grad():
        for layer, shapes in ((conv, ((3, 2, 3, 3), (3,))), (neuron.recurrent,
                                                               ((3, 3, 3, 3), (3,)))):
            layer.weight.copy_(dyadic(*shapes[0]))
            layer.bias.copy_(dyadic(*shapes[1]))
    model = nn.Sequential(conv, neuron)
    x = (torch.rand(16, 2, 2, 5, 5) < 0.5).float()
    graph = hub.load(model, input_shape=(2, 5, 5))
    assert {"Conv2d"} == {graph.nodes[n].type for n in ("0", "1_rec", "1_bias")}
    assert torch.equal(hub.simulate(graph, x), run_snntorch(model, x))


def test_recurrent_neurons_import_within_float_rounding():
    torch.manual_seed(3)
    model = Stepwise(snn.RLeaky(beta=0.9, linear_features=8))
    graph = assert_same_as_snntorch(model, spikes(T=40), exact=False)
    # the canonical graph runs in snnTorch again, exactly as the hub runs it
    x = spikes(T=40)
    assert torch.equal(run_snntorch(hub.save(graph, to=FMT), x), hub.simulate(graph, x))


def test_rsynaptic_reset_delay_false_is_the_delayed_reset_it_computes():
    neuron = snn.RSynaptic(alpha=0.5, beta=0.5, all_to_all=False, V=0.5, reset_delay=False)
    graph = assert_same_as_snntorch(Stepwise(neuron, weights=(dyadic(8, 6), dyadic(8))),
                                    spikes())
    assert graph.nodes["lif"].reset_timing == "next"


@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
def test_lapicque_imports_with_its_forward_euler_decay(reset):
    torch.manual_seed(4)
    neuron = snn.Lapicque(R=2.0, C=3.0, time_step=0.5, threshold=0.5, reset_mechanism=reset)
    graph = assert_same_as_snntorch(Stepwise(neuron), spikes())
    node = graph.nodes["lif"]
    assert node.beta == np.float32(1 - np.float32(0.5) / np.float32(6.0))
    assert node.gain != 1


def test_lapicque_with_gains_that_round_is_refused_or_approximated():
    neuron = snn.Lapicque(R=3.0, C=0.7, time_step=0.1)
    with pytest.raises(hub.UnsupportedError, match="field 'R'.*powers of two"):
        hub.load(Stepwise(neuron))
    with pytest.warns(SnnTorchApproximationWarning, match="R:"):
        graph = hub.load(Stepwise(neuron), strict=False)
    assert graph.nodes["lif"].type == "LIF"


def test_beta_is_clamped_as_snntorch_clamps_it():
    model = Stepwise(snn.Leaky(beta=torch.tensor([1.5, -0.25] * 4)))
    graph = assert_same_as_snntorch(model, spikes() * 2)
    assert graph.nodes["lif"].beta.tolist() == [1.0, 0.0] * 4


# -- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize("neuron, field", [
    (lambda: snn.Leaky(beta=0.5, inhibition=True), "inhibition"),
    (lambda: snn.Leaky(beta=0.5, state_quant=lambda v: v.round()), "state_quant"),
    (lambda: snn.Leaky(beta=0.5, threshold=-1.0), "threshold"),
    (lambda: snn.Leaky(beta=0.5, spike_grad=lambda v: (v >= 0).float()), "spike_grad"),
    (lambda: snn.Leaky(beta=0.5, reset_delay=False), "reset_delay"),
    (lambda: snn.Synaptic(alpha=0.5, beta=0.5, reset_delay=False), "reset_delay"),
    (lambda: snn.Alpha(alpha=0.6, beta=0.5, inhibition=True), "inhibition"),
], ids=["inhibition", "state_quant", "negative-threshold", "spike-ge", "subtract-same",
        "synaptic-subtract-same", "alpha-inhibition"])
def test_inexpressible_snntorch_options_are_refused_naming_module_and_field(neuron, field):
    with warnings.catch_warnings():
        # snnTorch warns that inhibition is unstable when the neuron is built
        warnings.filterwarnings("ignore", "Inhibition is an unstable feature", UserWarning)
        model = Stepwise(neuron())
    with pytest.raises(hub.UnsupportedError) as info:
        hub.load(model)
    assert info.value.node == "lif" and info.value.field == field


def test_subtract_without_delay_converts_approximately_when_not_strict():
    torch.manual_seed(5)
    model = Stepwise(snn.Leaky(beta=0.5, reset_delay=False))
    with pytest.warns(SnnTorchApproximationWarning, match="reset_delay"):
        graph = hub.load(model, strict=False)
    node = graph.nodes["lif"]
    assert (node.reset, node.reset_timing) == ("subtract", "same")
    # snnTorch re-tests a membrane a reset left above threshold: small inputs never leave one
    x = spikes() * 0.25
    assert torch.equal(hub.simulate(graph, x), model.run(x))


def lif(**fields):
    return hub.Graph.chain(("input", hub.Input(shape=(3,))),
                           ("fc", hub.Linear(weight=np.eye(3, dtype=np.float32))),
                           ("n", hub.LIF(**{"beta": 0.5, "reset_timing": "next", **fields})))


@pytest.mark.parametrize("fields, field", [
    (dict(comparison=">="), "comparison"),
    (dict(v_leak=0.5), "v_leak"),
    (dict(v_init=0.5), "v_init"),
    (dict(v_reset=0.5), "v_reset"),
    (dict(gain=0.5), "gain"),
    (dict(beta=1.5), "beta"),
    (dict(threshold=-1.0), "threshold"),
    (dict(spike_mode="multi", reset="subtract"), "spike_mode"),
    (dict(refractory=1, reset_timing="same"), "refractory"),
    (dict(delay=2), "delay"),
    (dict(reset="subtract", reset_timing="same"), "reset_timing"),
])
def test_inexpressible_canonical_fields_are_refused_naming_node_and_field(fields, field):
    with pytest.raises(hub.UnsupportedError) as info:
        hub.save(lif(**fields), to=FMT)
    assert info.value.node == "n" and info.value.field == field


def test_cubalif_zero_reset_timing_next_is_refused():
    graph = hub.Graph.chain(("input", hub.Input(shape=(2,))),
                            ("n", hub.CubaLIF(alpha=0.5, beta=0.5, reset_timing="next")))
    with pytest.raises(hub.UnsupportedError, match="refractory=1") as info:
        hub.save(graph, to=FMT)
    assert info.value.field == "reset_timing"


def test_same_step_subtraction_exports_approximately_when_not_strict():
    graph = lif(reset="subtract", reset_timing="same")
    with pytest.warns(SnnTorchApproximationWarning, match="reset_timing"):
        net = hub.save(graph, to=FMT, strict=False)
    assert net.n.reset_delay is False and net.n.reset_mechanism == "subtract"


# -- export: the zoo's topologies with neurons snnTorch expresses ---------------------------

# The zoo's topologies use a same-step subtractive reset, which snnTorch cannot express (see
# the refusal above); here they run with snnTorch's own default (subtract, reset_delay=True),
# reset to zero, and the current-based neuron in both current orders.
BASES = ("lif-next-subtract", "lif", "cubalif", "cubalif-previous")
READOUTS = ("li", "cubali", "cubali-previous")


def topology_cases():
    seed = 500
    for base in BASES:
        for name, build in zoo.TOPOLOGIES.items():
            if name == "threshold":
                continue  # its ">=" Threshold is refused; the ">" one runs in test_threshold
            seed += 1
            yield pytest.param(base, name, build, seed, True, id=f"{name}-{base}")
    for readout in READOUTS:
        seed += 1
        yield pytest.param("lif-next-subtract", f"dense-{readout}",
                           lambda p, n, r=readout: zoo._dense(p, n, zoo.READOUTS[r]), seed,
                           False, id=f"dense-{readout}")


@pytest.mark.parametrize("base, name, build, seed, spiking", list(topology_cases()))
def test_topologies_export_and_run_in_snntorch_bit_for_bit(base, name, build, seed, spiking):
    case = zoo._case(name, "exact", zoo._Dyadic, lambda p: build(p, zoo.NEURONS[base]), seed,
                     spiking)
    x = torch.as_tensor(case.x)
    net = hub.save(case.graph, to=FMT)
    assert isinstance(net, SnnTorchNet)
    assert torch.equal(flat(run_snntorch(net, x)), flat(hub.simulate(case.graph, x)))
    assert different(case.graph, hub.load(net)) is None


def test_threshold_runs_as_a_memoryless_leaky():
    graph = hub.Graph.chain(("input", hub.Input(shape=(4,))),
                            ("t", hub.Threshold(threshold=np.float32([0.0, 0.5, 1.0, 0.25]))))
    net = hub.save(graph, to=FMT)
    x = torch.randn(10, 2, 4)
    assert torch.equal(run_snntorch(net, x), hub.simulate(graph, x))
    assert different(graph, hub.load(net)) is None


def test_exported_net_steps_like_an_snntorch_model():
    """The documented way to run an export: reset, then one call per time step."""
    case = next(c for c in zoo.exact_cases() if c.name == "dense-lif-next-subtract")
    net = hub.save(case.graph, to=FMT)
    assert isinstance(net.n1, snn.Leaky) and net.n1.init_hidden
    x = torch.as_tensor(case.x)
    net.reset()
    stepped = torch.stack([net(xt) for xt in x])
    assert torch.equal(stepped, hub.simulate(case.graph, x))
    assert torch.equal(net.run(x), stepped)  # run() resets first


def test_fine_tuned_weights_come_back_on_import():
    case = next(c for c in zoo.exact_cases() if c.name == "dense-lif")
    net = hub.save(case.graph, to=FMT)
    with torch.no_grad():
        net.fc1.weight.mul_(2)
    assert np.array_equal(hub.load(net).nodes["fc1"].weight, case.graph.nodes["fc1"].weight * 2)


def test_sequential_of_conv_pool_flatten_imports_and_matches_snntorch():
    torch.manual_seed(6)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, bias=False), snn.Leaky(beta=0.5, init_hidden=True),
        nn.MaxPool2d(2), nn.AvgPool2d(1), nn.Flatten(), nn.Dropout(0.0),
        nn.Linear(36, 5), snn.Synaptic(alpha=0.25, beta=0.5, init_hidden=True, output=True))
    x = (torch.rand(20, 2, 2, 6, 6) < 0.5).float()
    graph = hub.load(model, input_shape=(2, 6, 6))
    assert [n.type for n in graph.nodes.values()] == [
        "Input", "Conv2d", "LIF", "MaxPool2d", "AvgPool2d", "Flatten", "Affine", "CubaLIF",
        "Output"]
    assert torch.equal(hub.simulate(graph, x), run_snntorch(model, x))


def test_a_time_step_given_on_import_reaches_nir():
    model = nn.Sequential(nn.Linear(3, 2), snn.Leaky(beta=0.75, init_hidden=True))
    nir_graph = hub.convert(model, to="nir", dt=1e-4)
    assert np.allclose(nir_graph.nodes["1"].tau, 1e-4 / 0.25)
    with pytest.raises(hub.HubError, match="dt"):
        hub.convert(model, to="nir")


def test_a_conv_model_needs_its_input_shape():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), snn.Leaky(beta=0.5, init_hidden=True))
    with pytest.raises(hub.HubError, match="input_shape"):
        hub.load(model)


def test_unknown_layers_are_refused_naming_the_module():
    model = nn.Sequential(nn.Linear(3, 3), nn.Tanh(), snn.Leaky(beta=0.5, init_hidden=True))
    with pytest.raises(hub.UnsupportedError, match="tanh") as info:
        hub.load(model)
    assert info.value.node == "1"


# -- the NIR paper's Braille RNN --------------------------------------------------------------


@pytest.mark.parametrize("name", ["paper_03_rnn_braille_noDelay_bias_zero.nir",
                                  "paper_03_rnn_braille_noDelay_noBias_subtract.nir"])
def test_the_papers_braille_rnn_runs_in_snntorch_spike_for_spike(paper, name):
    graph = hub.load(paper / name, dt=1e-4)
    net = hub.save(graph, to=FMT)
    assert isinstance(net.lif1__lif, snn.Synaptic) and net.roles["lif1__lif"]["previous"]
    x = (torch.rand(256, 4, 12, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    assert torch.equal(run_snntorch(net, x), hub.simulate(graph, x))
    assert different(graph, hub.load(net)) is None


# -- the example: train in snnTorch, convert to Norse and back ---------------------------------


def test_the_digits_example_keeps_every_prediction():
    from examples.snntorch_digits import convert_and_score

    result = convert_and_score(epochs=1, steps=8, hidden=16, seed=0)
    assert result["original"] == result["converted"] == result["back"]
    assert result["identical_predictions"]
