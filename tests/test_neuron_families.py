"""The neuron families beyond LIF: each framework class in a small model, run by the framework
itself and by ``hub.simulate``, then exported back and run again."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hub_conformance.compare import compare, flat

import hub
from hub_plugins.norse import run as norse_run  # importable without Norse (imports it lazily)

from .conftest import dyadic

DT = 2.0 ** -10


def spikes(*shape: int, seed: int = 0, p: float = 0.5, scale: float = 1.0) -> torch.Tensor:
    return torch.as_tensor((np.random.default_rng(seed).random(shape) < p).astype(np.float32)
                           * scale)


def agree(graph: hub.Graph, x: torch.Tensor, native: torch.Tensor, tier: str = "exact") -> None:
    """``hub.simulate(graph)`` equals the framework's own run: bit for bit on the exact tier,
    and on the float tier up to threshold ties; and the run must be active."""
    got = hub.simulate(graph, x)
    result = compare(graph, x, tier, flat(native), flat(got))
    assert result.agree or result.tie, result.detail
    active = float((flat(native) != 0).double().mean())
    assert 0 < active < 1, f"the test input must make it fire (active {active})"


def linear(out: int, inp: int, weight: np.ndarray | None = None) -> torch.nn.Linear:
    layer = torch.nn.Linear(inp, out, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(dyadic(out, inp) * 2 if weight is None else weight))
    return layer


# -- Norse: LSNN (adaptive threshold) and Izhikevich -----------------------------------------

norse = pytest.importorskip("norse.torch")


def lsnn_parameters(random: bool = False):
    from norse.torch.functional.lsnn import LSNNParameters

    if random:
        rng = np.random.default_rng(3)

        def t(lo: float, hi: float) -> torch.Tensor:
            return torch.tensor(rng.uniform(lo, hi), dtype=torch.float32)

        return LSNNParameters(tau_syn_inv=t(150, 300), tau_mem_inv=t(300, 600),
                              tau_adapt_inv=t(50, 200), v_th=t(0.3, 0.6),
                              v_leak=t(-0.1, 0.1), v_reset=t(-0.2, 0.0), beta=t(0.1, 0.4))
    return LSNNParameters(tau_syn_inv=torch.tensor(256.0), tau_mem_inv=torch.tensor(512.0),
                          tau_adapt_inv=torch.tensor(128.0), v_th=torch.tensor(0.5),
                          v_reset=torch.tensor(-0.125), beta=torch.tensor(0.25))


def lsnn_recurrent(cls, random: bool = False):
    cell = cls(3, 5, lsnn_parameters(random), dt=DT)
    with torch.no_grad():
        cell.input_weights.copy_(torch.as_tensor(dyadic(5, 3) * 2))
        cell.recurrent_weights.copy_(torch.as_tensor(dyadic(5, 5)))
        cell.recurrent_weights.fill_diagonal_(0.0)
    return cell


NORSE = {
    "LSNNCell": lambda r: norse.SequentialState(linear(4, 3),
                                                norse.LSNNCell(lsnn_parameters(r), dt=DT)),
    "LSNN": lambda r: norse.SequentialState(linear(4, 3), norse.LSNN(lsnn_parameters(r), dt=DT)),
    "LSNNRecurrentCell": lambda r: norse.SequentialState(
        lsnn_recurrent(norse.LSNNRecurrentCell, r)),
    "LSNNRecurrent": lambda r: norse.SequentialState(lsnn_recurrent(norse.LSNNRecurrent, r)),
    "IzhikevichCell": lambda r: norse.SequentialState(
        linear(4, 3, dyadic(4, 3) * 16), norse.IzhikevichCell(_behaviour(r))),
    "Izhikevich": lambda r: norse.SequentialState(
        linear(4, 3, dyadic(4, 3) * 16), norse.Izhikevich(_behaviour(r))),
    "IzhikevichRecurrentCell": lambda r: norse.SequentialState(
        _izhikevich_recurrent(norse.IzhikevichRecurrentCell, r)),
    "LIFExCell": lambda r: norse.SequentialState(linear(4, 3), norse.LIFExCell(
        _ex_parameters(norse.LIFExParameters, r), dt=DT)),
    "LIFAdExCell": lambda r: norse.SequentialState(linear(4, 3), norse.LIFAdExCell(
        _ex_parameters(norse.LIFAdExParameters, r, adaptation_current=torch.tensor(0.5),
                       adaptation_spike=torch.tensor(0.25), tau_ada_inv=torch.tensor(128.0)),
        dt=DT)),
    "LIFAdExRecurrentCell": lambda r: norse.SequentialState(_recurrent(
        norse.LIFAdExRecurrentCell, _ex_parameters(norse.LIFAdExParameters, r))),
    "LIFRefracCell": lambda r: norse.SequentialState(linear(4, 3), norse.LIFRefracCell(
        norse.LIFRefracParameters(lif=norse.LIFParameters(
            tau_syn_inv=torch.tensor(512.0), tau_mem_inv=torch.tensor(256.0),
            v_th=torch.tensor(0.25) if not r else torch.tensor(0.3137),
            v_reset=torch.tensor(-0.125)), rho_reset=torch.tensor(2.0)), dt=DT)),
}


def _ex_parameters(cls, random: bool, **more):
    """Exponential-LIF parameters; their exponential makes every run a float-tier one."""
    v_th = torch.tensor(0.3137 if random else 0.5)
    return cls(delta_T=torch.tensor(0.25), tau_syn_inv=torch.tensor(256.0),
               tau_mem_inv=torch.tensor(512.0), v_th=v_th, v_reset=torch.tensor(-0.125),
               **more)


def _recurrent(cls, p):
    cell = cls(3, 5, p, dt=DT, autapses=False)
    with torch.no_grad():
        cell.input_weights.copy_(torch.as_tensor(dyadic(5, 3) * 2))
        cell.recurrent_weights.copy_(torch.as_tensor(dyadic(5, 5)))
        cell.recurrent_weights.fill_diagonal_(0.0)
    return cell


def _behaviour(random: bool):
    """Norse's tonic spiking, or (``random``) one with parameters off its round numbers."""
    from norse.torch.functional.izhikevich import (
        IzhikevichParameters,
        IzhikevichSpikingBehavior,
        IzhikevichState,
    )

    if not random:
        return norse.tonic_spiking
    p = IzhikevichParameters(a=0.0213, b=0.1873, c=-63.17, d=5.71, v_th=29.3)
    return IzhikevichSpikingBehavior(p=p, s=IzhikevichState(
        v=torch.tensor(-68.4), u=torch.tensor(-68.4) * p.b))


def _izhikevich_recurrent(cls, random: bool):
    cell = cls(3, 5, _behaviour(random), autapses=False)
    with torch.no_grad():
        cell.input_weights.copy_(torch.as_tensor(dyadic(5, 3) * 16))
        cell.recurrent_weights.copy_(torch.as_tensor(dyadic(5, 5) * 8))
        cell.recurrent_weights.fill_diagonal_(0.0)
    return cell


@pytest.mark.parametrize("tier", ["exact", "float"])
@pytest.mark.parametrize("name", sorted(NORSE))
def test_norse_class_imports_matches_and_exports_back(name, tier):
    model = NORSE[name](tier == "float")
    x = spikes(40, 2, 3, scale=1.0 if name.startswith("LSNN") else 4.0)
    graph = hub.load(model, source="norse", input_shape=(3,))
    native = norse_run(model, x)
    agree(graph, x, native, tier)
    back = hub.convert(graph, to="norse")
    assert torch.equal(norse_run(back, x), hub.simulate(graph, x))
    assert hub.load(back, source="norse") .nodes.keys()


def test_norse_lsnn_imports_as_the_adaptive_family():
    graph = hub.load(NORSE["LSNNCell"](False), source="norse", input_shape=(3,))
    neuron = next(n for n in graph.nodes.values() if isinstance(n, hub.ALIF))
    assert neuron.current_order == "previous"
    assert neuron.threshold_step == np.float32(0.25)
    assert neuron.threshold_decay == np.float32(1 - 128 * DT)


def test_norse_refuses_an_alif_in_loihis_integers_naming_the_field():
    """slayer's alif imports as ALIF(arithmetic="fixed"): Norse's LSNNCell computes in float."""
    graph = hub.Graph.chain(hub.Input(shape=(2,)), ("fc", hub.Linear(weight=np.eye(2) * 64)),
                            ("alif", hub.ALIF(beta=0.5, threshold=64.0, current_gain=1.0,
                                              arithmetic="fixed")))
    with pytest.raises(hub.UnsupportedError) as info:
        hub.convert(graph, to="norse")
    assert (info.value.node, info.value.field) == ("alif", "arithmetic")


class LSNNLIFNet(torch.nn.Module):
    """The layer of Norse's memory task (``norse/task/memory.py``, model ``"lsnnlif"``), as it
    writes it: half the neurons recurrent LIF, half recurrent LSNN, their spikes concatenated."""

    def __init__(self, input_features, p_lsnn, p_lif, dt):
        super().__init__()
        self.neurons_per_layer = input_features // 2
        self.lsnn_cell = norse.LSNNRecurrentCell(input_features, self.neurons_per_layer, p_lsnn,
                                                 dt=dt)
        self.lif_cell = norse.LIFRecurrentCell(input_features, self.neurons_per_layer, p_lif,
                                               dt=dt)

    def forward(self, input_spikes, state):
        lif_state, lsnn_state = (None, None) if state is None else state
        lif_out, lif_state = self.lif_cell(input_spikes, lif_state)
        lsnn_out, lsnn_state = self.lsnn_cell(input_spikes, lsnn_state)
        return torch.cat((lif_out, lsnn_out), -1), (lif_state, lsnn_state)


class MemoryNet(torch.nn.Module):
    """The memory task's network (its ``MemoryNet`` without the training loop): the layer
    above read out by an ``LILinearCell``, stepped over time as its forward steps it."""

    def __init__(self, features=8, outputs=2, dt=1e-3):
        super().__init__()
        from norse.torch.functional.lsnn import LSNNParameters

        p_lsnn = LSNNParameters(v_th=torch.as_tensor(0.5),
                                tau_adapt_inv=1 / torch.as_tensor(2000 * dt).exp(),
                                beta=torch.as_tensor(1.8))
        p_lif = norse.LIFParameters(v_th=torch.as_tensor(0.5))
        self.layer = LSNNLIFNet(features, p_lsnn=p_lsnn, p_lif=p_lif, dt=dt)
        self.readout = norse.LILinearCell(features, outputs, p=norse.LIParameters())

    def forward(self, x):
        sl = sr = None
        readouts = []
        for x_step in x.unbind(0):
            spikes, sl = self.layer(x_step, sl)
            v, sr = self.readout(spikes, sr)
            readouts.append(v)
        return torch.stack(readouts)


def test_norse_memory_task_network_imports_and_matches():
    torch.manual_seed(0)
    model = MemoryNet()
    with torch.no_grad():
        for cell in (model.layer.lsnn_cell, model.layer.lif_cell):
            cell.input_weights.mul_(8)  # make the store-recall input drive the layer
    x = spikes(60, 2, 8, p=0.3)
    graph = hub.load(model, source="norse", input_shape=(8,))
    kinds = [n.type for n in graph.flat().nodes.values()]
    assert kinds.count("ALIF") == 1 and kinds.count("CubaLIF") == 1
    assert sum(len(r) for r in graph.plan().recurrent.values()) == 2  # both layers recur
    got, want = hub.simulate(graph, x), model(x).detach()
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)
    assert (want != 0).any()


def test_norse_refractory_cell_is_a_cubalif_with_a_refractory_period():
    graph = hub.load(NORSE["LIFRefracCell"](False), source="norse", input_shape=(3,))
    neuron = next(n for n in graph.nodes.values() if isinstance(n, hub.CubaLIF))
    assert neuron.refractory == 2


def test_norse_refuses_what_it_cannot_express_by_class():
    with pytest.raises(hub.UnsupportedError, match="LIFAdExRefracCell"):
        hub.load(norse.SequentialState(linear(4, 3), norse.LIFAdExRefracCell()),
                 source="norse", input_shape=(3,))
    with pytest.raises(hub.UnsupportedError, match="rho_reset"):
        hub.load(norse.SequentialState(linear(4, 3), norse.LIFRefracCell(
            norse.LIFRefracParameters(rho_reset=torch.tensor(2.5)))), source="norse",
            input_shape=(3,))
    with pytest.raises(hub.UnsupportedError, match="current_order"):
        graph = hub.Graph.chain(("input", hub.Input(shape=(3,))),
                                ("alif", hub.ALIF(beta=0.5, gain=0.5, current_order="new")))
        hub.convert(graph, to="norse")


# -- SpikingJelly: Izhikevich and QIF nodes, the synapse filter, recurrent containers ---------

sj = pytest.importorskip("spikingjelly.activation_based")
# SpikingJelly is optional: its modules can only be imported once the importorskip found it
from spikingjelly.activation_based import functional, layer, neuron, surrogate  # noqa: E402


def sj_run(model, x: torch.Tensor) -> torch.Tensor:
    """SpikingJelly's own run, as its users step it (the format's runner)."""
    return hub.plugins().format("spikingjelly").run(model, x)


def sj_linear(out: int, inp: int, bias: bool = False, scale: float = 2.0) -> torch.nn.Module:
    fc = layer.Linear(inp, out, bias=bias)
    with torch.no_grad():
        fc.weight.copy_(torch.as_tensor(dyadic(out, inp) * scale))
        if bias:
            fc.bias.copy_(torch.as_tensor(dyadic(out)))
    return fc


SJ = {
    "IzhikevichNode": lambda: neuron.IzhikevichNode(tau=2.0, a0=0.5, v_c=0.5, v_rest=-0.125,
                                                     tau_w=4.0, a=0.25, b=0.5),
    "IzhikevichNode-soft": lambda: neuron.IzhikevichNode(v_reset=None, a=0.5, b=0.25),
    "QIFNode": lambda: neuron.QIFNode(tau=4.0, v_c=0.5, a0=0.5, v_reset=-0.125),
    "EIFNode": lambda: neuron.EIFNode(tau=2.0, delta_T=0.5, theta_rh=0.75, v_reset=-0.125),
    "EIFNode-soft": lambda: neuron.EIFNode(tau=4.0, v_reset=None),
}


@pytest.mark.parametrize("mode", ["s", "m"])
@pytest.mark.parametrize("name", sorted(SJ))
def test_spikingjelly_node_imports_and_matches(name, mode):
    model = torch.nn.Sequential(sj_linear(4, 3), SJ[name]())
    functional.set_step_mode(model, mode)
    x = spikes(12, 2, 3)
    graph = hub.load(model, source="spikingjelly")
    assert isinstance(graph.nodes["1"], hub.EIF if name.startswith("EIF") else hub.QIF)
    agree(graph, x, sj_run(model, x))
    back = hub.convert(graph, to="spikingjelly", step_mode=mode)
    assert type(back[1]).__name__ == name.split("-")[0]
    assert torch.equal(sj_run(back, x), hub.simulate(graph, x))
    assert hub.load(back, source="spikingjelly") == graph


class FeedBackNet(torch.nn.Module):
    """SpikingJelly's own recurrent example (``examples/rsnn_sequential_fmnist.py``), small."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Sequential(
            sj_linear(8, 6, bias=True),
            layer.LinearRecurrentContainer(
                neuron.IFNode(surrogate_function=surrogate.ATan(), detach_reset=True),
                in_features=8, out_features=8, bias=True),
            sj_linear(4, 8),
            neuron.IFNode(surrogate_function=surrogate.ATan()))
        with torch.no_grad():
            rc = self.fc[1].rc
            rc.weight.copy_(torch.as_tensor(dyadic(8, 16)))
            rc.bias.copy_(torch.as_tensor(dyadic(8)))

    def forward(self, x):
        return self.fc(x)


class StatefulSynapseNet(torch.nn.Module):
    """The same example's synapse-filter network, small (learnable tau, frozen)."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Sequential(
            sj_linear(8, 6), neuron.IFNode(surrogate_function=surrogate.ATan()),
            layer.SynapseFilter(tau=2.0, learnable=True), sj_linear(4, 8, scale=1.0),
            neuron.IFNode(surrogate_function=surrogate.ATan()))

    def forward(self, x):
        return self.fc(x)


def element_wise():
    return torch.nn.Sequential(sj_linear(5, 3), layer.ElementWiseRecurrentContainer(
        neuron.LIFNode(tau=2.0), element_wise_function=lambda y, x: y + x))


@pytest.mark.parametrize("mode", ["s", "m"])
@pytest.mark.parametrize("build", [FeedBackNet, StatefulSynapseNet], ids=lambda b: b.__name__)
def test_spikingjelly_recurrent_example_networks_match(build, mode):
    model = build()
    functional.set_step_mode(model, mode)
    x = spikes(20, 2, 6)
    graph = hub.load(model, source="spikingjelly", input_shape=(6,))
    native = sj_run(model, x)
    agree(graph, x, native)
    if build is FeedBackNet:
        assert any(graph.plan().recurrent.values()), "the feedback is a recurrent edge"
    back = hub.convert(graph, to="spikingjelly", step_mode=mode)
    assert torch.equal(sj_run(back, x), hub.simulate(graph, x))
    if build is FeedBackNet:
        assert isinstance(back[1], layer.LinearRecurrentContainer)


def test_spikingjelly_element_wise_container_with_addition():
    model = torch.nn.Sequential(sj_linear(5, 3), layer.ElementWiseRecurrentContainer(
        neuron.IFNode(), element_wise_function=torch.add))
    x = spikes(16, 2, 3)
    graph = hub.load(model, source="spikingjelly")
    agree(graph, x, sj_run(model, x))
    back = hub.convert(graph, to="spikingjelly", step_mode="s")
    assert any(isinstance(m, layer.ElementWiseRecurrentContainer) for m in back)
    assert torch.equal(sj_run(back, x), hub.simulate(graph, x))
    with pytest.raises(hub.UnsupportedError, match="element_wise_function"):
        hub.load(torch.nn.Sequential(sj_linear(5, 3), layer.ElementWiseRecurrentContainer(
            neuron.IFNode(), element_wise_function=torch.mul)), source="spikingjelly")


@pytest.mark.parametrize("build,name", [
    (lambda: neuron.KLIFNode(), "KLIFNode"),
    (lambda: neuron.LIAFNode(torch.nn.ReLU(), False), "LIAFNode"),
    (lambda: neuron.GatedLIFNode(T=8, inplane=4), "GatedLIFNode"),
    (lambda: neuron.PSN(T=8), "PSN"), (lambda: neuron.SlidingPSN(k=2), "SlidingPSN")])
def test_spikingjelly_refuses_by_class_and_reason(build, name):
    model = torch.nn.Sequential(sj_linear(4, 3), build())
    functional.set_step_mode(model, "m")
    with pytest.raises(hub.UnsupportedError, match=name):
        hub.load(model, source="spikingjelly")


# -- snnTorch: Alpha (second-order synapse) ----------------------------------------------------

snntorch = pytest.importorskip("snntorch")


def snn_run(model, x: torch.Tensor) -> torch.Tensor:
    return hub.plugins().format("snntorch").run(model, x)


@pytest.mark.parametrize("tier", ["exact", "float"])
@pytest.mark.parametrize("reset", ["zero", "subtract", "none"])
def test_snntorch_alpha_imports_matches_and_exports_back(reset, tier):
    alpha, beta = (0.75, 0.5) if tier == "exact" else (0.8731, 0.6127)
    model = torch.nn.Sequential(linear(4, 3), snntorch.Alpha(
        alpha=alpha, beta=beta, threshold=0.5, reset_mechanism=reset, init_hidden=True))
    x = spikes(30, 2, 3)
    graph = hub.load(model, source="snntorch", input_shape=(3,))
    assert any(isinstance(n, hub.AlphaLIF) for n in graph.nodes.values())
    agree(graph, x, snn_run(model, x), tier)
    back = hub.convert(graph, to="snntorch")
    assert torch.equal(snn_run(back, x), hub.simulate(graph, x))


def test_snntorch_lstm_neurons_are_refused_by_class():
    model = torch.nn.Sequential(snntorch.SLSTM(3, 4, init_hidden=True))
    with pytest.raises(hub.UnsupportedError, match="SLSTM"):
        hub.load(model, source="snntorch", input_shape=(3,))


# -- across frameworks ---------------------------------------------------------------------------


def test_izhikevich_between_norse_and_spikingjelly_is_refused_naming_the_type():
    """Norse's Izhikevich (``Izhikevich``: expanded quadratic, u updated from the voltage before
    the step) and SpikingJelly's (``QIF``: factored quadratic, w from the voltage after it) are
    different float updates: neither exports to the other framework."""
    norse_graph = hub.load(NORSE["IzhikevichCell"](False), source="norse", input_shape=(3,))
    with pytest.raises(hub.UnsupportedError, match="Izhikevich") as e:
        hub.convert(norse_graph, to="spikingjelly")
    assert e.value.field == "type"
    sj_graph = hub.load(torch.nn.Sequential(sj_linear(4, 3), SJ["IzhikevichNode"]()),
                        source="spikingjelly")
    with pytest.raises(hub.UnsupportedError, match="QIF") as e:
        hub.convert(sj_graph, to="norse")
    assert e.value.field == "type"


def test_adaptive_lif_crosses_from_norse_only_where_the_target_has_it():
    graph = hub.load(NORSE["LSNNCell"](False), source="norse", input_shape=(3,))
    for target in ("snntorch", "spikingjelly"):
        with pytest.raises(hub.UnsupportedError, match="ALIF"):
            hub.convert(graph, to=target)


class _InAModel(torch.nn.Module):
    """A class of its own around a module, so that import traces its forward."""

    def __init__(self, *modules):
        super().__init__()
        self.body = torch.nn.Sequential(*modules)

    def forward(self, x):
        return self.body(x)


@pytest.mark.parametrize("build,name", [
    (lambda: neuron.KLIFNode(), "KLIFNode"),
    (lambda: neuron.LIAFNode(torch.nn.ReLU(), False), "LIAFNode"),
])
def test_spikingjelly_refuses_traced_models_by_class_and_reason(build, name):
    model = _InAModel(sj_linear(4, 3), build())
    functional.set_step_mode(model, "m")
    with pytest.raises(hub.UnsupportedError, match=name):
        hub.load(model, source="spikingjelly", input_shape=(3,))


def test_snntorch_refuses_a_surrogate_whose_forward_is_not_a_step():
    """A learnable surrogate shape that changes the forward pass has no discrete meaning."""

    def smooth(x):
        return torch.sigmoid(4 * x)

    model = torch.nn.Sequential(linear(4, 3), snntorch.Alpha(
        alpha=0.75, beta=0.5, spike_grad=smooth, init_hidden=True))
    with pytest.raises(hub.UnsupportedError, match="spike_grad"):
        hub.load(model, source="snntorch", input_shape=(3,))


# -- every backend ---------------------------------------------------------------------------------


def test_the_families_run_fused_with_the_reference_output():
    """The zoo's family cases give the same output on the fused backend (each family's own
    kernel, or the reference where a case's settings keep it there) as on the torch backend."""
    import warnings

    from hub_conformance import zoo

    for case in zoo.family_cases("float"):
        x = torch.as_tensor(case.x)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", hub.KernelWarning)  # no compiler here: reference
            fused = hub.simulate(case.graph, x, backend="fused")
        assert torch.equal(fused, hub.simulate(case.graph, x)), case.name


def test_a_canonical_recurrent_layer_exports_to_spikingjelly_as_a_container():
    """A square dense layer into a neuron with a recurrent Linear from it back is
    ``LinearRecurrentContainer``'s computation: it exports as one, with identical spikes."""
    graph = hub.Graph(
        {"input": hub.Input(shape=(6,)), "fc": hub.Linear(weight=dyadic(6, 6) * 2),
         "n": hub.IF(threshold=0.5, comparison=">="), "rec": hub.Linear(weight=dyadic(6, 6)),
         "output": hub.Output()},
        [("input", "fc"), ("fc", "n"), ("n", "rec"), ("rec", "n"), ("n", "output")])
    model = hub.convert(graph, to="spikingjelly", step_mode="m")
    assert isinstance(model[0], layer.LinearRecurrentContainer)
    x = spikes(20, 2, 6)
    assert torch.equal(sj_run(model, x), hub.simulate(graph, x))
    assert (hub.simulate(graph, x) != 0).any()
