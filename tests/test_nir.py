"""The NIR plugin: forward-Euler mapping, exact round trips, and the NIR paper's real files."""

from __future__ import annotations

import warnings

import nir
import numpy as np
import pytest
import torch

import hub
from hub_plugins.nir import CARRIED, HubMetadataWarning

from .conftest import EXAMPLES, dyadic, single

# The input spike train of the NIR paper's LIF experiment (its published data): 100 entries,
# each followed by nine empty steps, at dt = 1e-4 s.
PAPER_TRAIN = [0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0,
               1, 0, 0, 0, 1, 1, 0, 0, 1, 0, 1, 0, 0, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
               0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0,
               0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]


def euler_lif_spikes(x, tau, r, v_leak, v_threshold, dt):
    """Forward Euler of NIR's LIF ODE in float64 with NIR's reset to zero (independent code)."""
    v, steps = 0.0, []
    for t, xt in enumerate(x):
        v = v + dt / tau * (v_leak - v + r * xt)
        if v > v_threshold:
            steps.append(t)
            v = 0.0
    return steps


def test_the_papers_lif_graph_spikes_where_forward_euler_does(paper):
    path = paper / "paper_01_lif_lif_norse.nir"
    x = np.zeros(1000)
    x[::10] = PAPER_TRAIN
    graph = hub.load(path, dt=1e-4)
    spikes = hub.simulate(graph, torch.tensor(x, dtype=torch.float32).reshape(-1, 1, 1))
    got = np.flatnonzero(spikes.numpy().ravel()).tolist()
    lif = nir.read(path).nodes["1"]
    want = euler_lif_spikes(x, lif.tau[0], lif.r[0], lif.v_leak[0], lif.v_threshold[0], 1e-4)
    assert got == want
    assert got == [460, 510, 710, 760]  # also where the paper's exact solution spikes


# Every file of the NIR paper, with the dt it was made for and what must happen to it.
PAPER_FILES = {
    "paper_01_lif_lif_norse.nir": (1e-4, "loads"),
    "paper_01_lif_lif_rockpool.nir": (1e-4, r"warns: declares shape \[1, 1, 1\] but receives \[1\]"),
    "paper_01_lif_debug_spike_representation_two_lif_neurons.nir": (1e-4, "loads"),
    "paper_02_cnn_cnn_sinabs.nir": (1.0, "loads"),
    "paper_03_rnn_braille_noDelay_bias_zero.nir": (1e-4, "loads"),
    "paper_03_rnn_braille_noDelay_noBias_subtract.nir": (1e-4, "loads"),
    "paper_03_rnn_extras_braille_noDelay_bias_zero_subgraph.nir": (
        1e-4, "fails: written by nir 0.2.0.*references destination node 'lif'"),
    "paper_03_rnn_extras_braille_noDelay_noBias_subtract_subgraph.nir": (
        1e-4, "fails: written by nir 0.2.0.*references destination node 'lif'"),
}


def test_every_paper_file_is_listed(paper):
    assert {p.name for p in paper.glob("*.nir")} == set(PAPER_FILES)


@pytest.mark.parametrize("name", sorted(PAPER_FILES))
def test_paper_files_load_and_simulate_or_say_what_is_wrong(paper, name):
    dt, outcome = PAPER_FILES[name]
    kind, _, detail = outcome.partition(": ")
    if kind == "fails":
        with pytest.raises(hub.FormatError, match=detail) as e:
            hub.load(paper / name, dt=dt)
        assert e.value.file == str(paper / name)
        return
    if kind == "warns":
        with pytest.warns(UserWarning, match=detail):
            graph = hub.load(paper / name, dt=dt)
    else:
        graph = hub.load(paper / name, dt=dt)
    (input_name,) = graph.inputs
    shape = graph.plan().output_shapes[input_name]
    x = (torch.rand(30, 2, *shape, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    y = hub.simulate(graph, x)
    assert y.shape[:2] == (30, 2)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", ["paper_02_cnn_cnn_sinabs.nir",
                                  "paper_03_rnn_braille_noDelay_bias_zero.nir"])
def test_paper_graphs_survive_hub_nir_hub_exactly(paper, tmp_path, name):
    dt = PAPER_FILES[name][0]
    graph = hub.load(paper / name, dt=dt)
    hub.save(graph, to="nir", out=tmp_path / "again.nir")
    again = hub.load(tmp_path / "again.nir")  # no dt needed: it travels in the metadata
    assert again == graph
    shape = graph.plan().output_shapes[graph.inputs[0]]
    x = (torch.rand(25, 2, *shape, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    assert torch.equal(hub.simulate(again, x), hub.simulate(graph, x))


def test_the_braille_rnn_keeps_its_recurrence(paper):
    graph = hub.load(paper / "paper_03_rnn_braille_noDelay_noBias_subtract.nir", dt=1e-4)
    assert graph.plan().recurrent["lif1.lif"] == ("lif1.w_rec",)
    lif = graph.nodes["lif1.lif"]
    # snnTorch exported beta = 0.85, alpha = 0.75 with dt = 1e-4: forward Euler gives them back
    assert np.allclose(lif.beta, 0.85) and np.allclose(lif.alpha, 0.75)
    assert np.allclose(lif.gain, 1.0) and np.allclose(lif.current_gain, 1.0)


EXPORTABLE = sorted(hub.plugins().format("nir").exports)


#: What NIR has no node for: max pooling, Loihi's fixed-point neuron, and the layers real torch
#: models bring in (batch norm, offsets, ReLU, adaptive pooling, voting, products, concatenation,
#: reshapes other than flattening). The neuron families of hub.families ride in metadata.
NOT_IN_NIR = {"MaxPool2d", "LoihiCUBA", "BatchNorm", "Bias", "ReLU", "AdaptiveAvgPool2d", "Vote",
              "Mul", "Concat", "Reshape"}


def test_nir_converts_every_node_type_nir_has():
    assert set(EXPORTABLE) == set(EXAMPLES) - NOT_IN_NIR
    assert hub.plugins().format("nir").imports == set(EXPORTABLE)


@pytest.mark.parametrize("name", EXPORTABLE)
def test_every_node_type_round_trips_through_a_nir_file(tmp_path, name):
    node, shape = EXAMPLES[name]
    graph = single(node, shape)
    hub.save(graph, to="nir", out=tmp_path / "g.nir", dt=1e-3)
    again = hub.load(tmp_path / "g.nir")
    assert again == graph
    assert again.metadata["dt"] == 1e-3


def test_max_pooling_has_no_nir_counterpart(tmp_path):
    node, shape = EXAMPLES["MaxPool2d"]
    with pytest.raises(hub.UnsupportedError, match="NIR has no MaxPool2d") as e:
        hub.save(single(node, shape), to="nir", out=tmp_path / "g.nir", dt=1e-3)
    assert e.value.node == "node"
    assert not list(tmp_path.iterdir())


def test_plain_nir_follows_nirs_documented_semantics():
    """A NIR graph with no snn-hub metadata: forward Euler, v > threshold, reset to v_reset."""
    lif = nir.LIF(tau=np.array([0.004]), r=np.array([2.0]), v_leak=np.array([0.5]),
                  v_threshold=np.array([1.0]), v_reset=np.array([0.25]))
    graph = hub.load(nir.NIRGraph.from_list(nir.Input(np.array([1])), lif, nir.Output(np.array([1]))),
                     dt=1e-3)
    node = graph.nodes["lif"]
    assert np.isclose(node.beta, 1 - 1e-3 / 0.004)
    assert np.isclose(node.gain, 1e-3 * 2.0 / 0.004)
    assert (node.comparison, node.reset, node.reset_timing) == (">", "zero", "same")
    assert node.v_reset == np.float32(0.25) and node.v_leak == np.float32(0.5)


def test_cubalif_imports_as_forward_euler_with_the_previous_current():
    cuba = nir.CubaLIF(tau_syn=np.array([0.002]), tau_mem=np.array([0.004]), r=np.array([2.0]),
                       v_leak=np.array([0.0]), v_threshold=np.array([1.0]), w_in=np.array([3.0]))
    graph = hub.load(nir.NIRGraph.from_list(nir.Input(np.array([1])), cuba,
                                            nir.Output(np.array([1]))), dt=1e-3)
    node = graph.nodes["cubalif"]
    assert np.isclose(node.alpha, 0.5) and np.isclose(node.current_gain, 1.5)
    assert np.isclose(node.beta, 0.75) and np.isclose(node.gain, 0.5)
    assert node.current_order == "previous"


def test_exported_nir_parameters_follow_the_inverse_mapping():
    graph = single(hub.LIF(beta=0.75, gain=0.5, threshold=1.0), (2,))
    exported = hub.convert(graph, to="nir", dt=1e-3)
    assert isinstance(exported, nir.NIRGraph)
    lif = exported.nodes["node"]
    assert np.allclose(lif.tau, 1e-3 / 0.25) and np.allclose(lif.r, 0.5 / 0.25)
    assert lif.tau.shape == (2,)


def test_discrete_conventions_travel_in_metadata(tmp_path):
    node = hub.LIF(beta=0.5, threshold=0.5, comparison=">=", reset="subtract",
                   reset_timing="next", spike_mode="graded", amplitude=2.0)
    graph = single(node, (3,))
    hub.save(graph, to="nir", out=tmp_path / "g.nir", dt=1e-3)
    meta = nir.read(tmp_path / "g.nir").nodes["node"].metadata["hub"]
    assert meta["comparison"] == ">=" and meta["reset"] == "subtract"
    assert hub.load(tmp_path / "g.nir").nodes["node"] == node


@pytest.mark.parametrize("name", ["Affine", "Linear", "Conv1d", "Conv2d"])
def test_weights_are_written_once_and_come_back_exactly(tmp_path, name):
    node, shape = EXAMPLES[name]
    hub.save(single(node, shape), to="nir", out=tmp_path / "g.nir", dt=1e-3)
    assert hub.load(tmp_path / "g.nir").nodes["node"] == node
    exported = hub.convert(single(node, shape), to="nir", dt=1e-3)
    meta = exported.nodes["node"].metadata["hub"]
    assert "weight" not in meta  # NIR's own weight holds it bit for bit
    meta["weight"] = np.array(node.weight)  # files that carry it in the metadata too still load
    assert hub.load(exported).nodes["node"] == node


def test_metadata_that_disagrees_with_the_nir_parameters_is_not_trusted(tmp_path):
    graph = single(hub.LIF(beta=0.5, threshold=0.5, comparison=">="), (1,))
    exported = hub.convert(graph, to="nir", dt=1e-3)
    exported.nodes["node"].tau = exported.nodes["node"].tau * 2  # edited by another tool
    with pytest.warns(HubMetadataWarning, match="disagrees with the NIR parameter 'tau'"):
        again = hub.load(exported)
    assert np.isclose(again.nodes["node"].beta, 0.75)
    assert again.nodes["node"].comparison == ">"


def test_neurons_need_a_dt_and_say_so():
    lif = nir.LIF(tau=np.array([0.004]), r=np.array([1.0]), v_leak=np.array([0.0]),
                  v_threshold=np.array([1.0]))
    with pytest.raises(hub.HubError, match="pass dt=<seconds>") as e:
        hub.load(nir.NIRGraph.from_list(nir.Input(np.array([1])), lif, nir.Output(np.array([1]))))
    assert (e.value.node, e.value.field) == ("lif", "dt")
    with pytest.raises(hub.ParameterError, match="positive number"):
        hub.load(nir.NIRGraph.from_list(nir.Input(np.array([1])), lif, nir.Output(np.array([1]))),
                 dt=-1)


def test_a_dt_longer_than_a_time_constant_is_refused():
    lif = nir.LIF(tau=np.array([1e-4]), r=np.array([1.0]), v_leak=np.array([0.0]),
                  v_threshold=np.array([1.0]))
    with pytest.raises(hub.ParameterError, match="longer than the time constant") as e:
        hub.load(nir.NIRGraph.from_list(nir.Input(np.array([1])), lif, nir.Output(np.array([1]))),
                 dt=1e-3)
    assert e.value.field == "tau"


def test_a_different_dt_than_the_file_was_made_with_warns(tmp_path):
    graph = single(hub.LIF(beta=0.5), (1,))
    hub.save(graph, to="nir", out=tmp_path / "g.nir", dt=1e-3)
    with pytest.warns(UserWarning, match="exported with dt=0.001, but dt=0.002 was given"):
        again = hub.load(tmp_path / "g.nir", dt=2e-3)
    assert again == graph


def test_delays_convert_between_seconds_and_steps():
    graph = single(hub.Delay(delay=[1, 4]), (2,))
    exported = hub.convert(graph, to="nir", dt=0.5)
    assert exported.nodes["node"].delay.tolist() == [0.5, 2.0]
    exported.nodes["node"].metadata = {}
    exported.nodes["node"].delay = np.array([0.5, 1.2])
    with pytest.raises(hub.UnsupportedError, match="not whole multiples of dt=0.5"):
        hub.load(exported, dt=0.5)


def test_same_and_valid_padding_are_resolved():
    conv = nir.Conv2d(input_shape=(6, 6), weight=dyadic(2, 1, 3, 5), stride=1, padding="same",
                      dilation=1, groups=1, bias=np.zeros(2))
    graph = hub.load(nir.NIRGraph.from_list(nir.Input(np.array([1, 6, 6])), conv,
                                            nir.Output(np.array([2, 6, 6]))))
    assert graph.nodes["conv2d"].padding == (1, 2)
    assert graph.plan().output_shapes["conv2d"] == (2, 6, 6)


def test_same_padding_with_a_stride_is_refused_not_guessed():
    """nir infers another output size than a symmetric pad gives: which is meant is unclear."""
    conv = nir.Conv1d(input_shape=8, weight=dyadic(2, 1, 3), stride=2, padding="same",
                      dilation=1, groups=1, bias=np.zeros(2))
    graph = nir.NIRGraph(nodes={"input": nir.Input(np.array([1, 8])), "conv": conv,
                                "output": nir.Output(np.array([2, 4]))},
                         edges=[("input", "conv"), ("conv", "output")], type_check=False)
    with pytest.raises(hub.UnsupportedError, match="node 'conv', field 'padding': padding="
                       "'same' is defined only for stride 1"):
        hub.load(graph)


def test_beta_of_one_has_no_nir_time_constant():
    with pytest.raises(hub.UnsupportedError, match="no finite positive time constant") as e:
        hub.convert(single(hub.LIF(beta=1.0), (1,)), to="nir", dt=1e-3)
    assert (e.value.node, e.value.field) == ("node", "beta")


def test_converting_does_not_touch_the_source_object():
    graph = single(EXAMPLES["CubaLIF"][0], (3,))
    exported = hub.convert(graph, to="nir", dt=1e-3)
    before = {k: v.copy() for k, v in vars(exported.nodes["node"]).items() if isinstance(v, np.ndarray)}
    hub.convert(exported, to="hub")
    after = vars(exported.nodes["node"])
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_subgraphs_export_as_nested_nir_graphs(tmp_path):
    from .test_graph import subgraph_model

    graph = subgraph_model()
    hub.save(graph, to="nir", out=tmp_path / "g.nir", dt=1e-3)
    assert isinstance(nir.read(tmp_path / "g.nir").nodes["block"], nir.NIRGraph)
    again = hub.load(tmp_path / "g.nir")
    assert again == graph
    x = torch.tensor(dyadic(10, 2, 3))
    with warnings.catch_warnings():
        assert torch.equal(hub.simulate(again, x), hub.simulate(graph, x))


# What NIR itself holds; the rest (comparison, reset kind, amplitude, ...) only travels in
# snn-hub's metadata and is covered by the round-trip tests above.
NIR_HELD = ("weight", "bias", "scale", "threshold", "delay", "beta", "alpha", "gain",
            "current_gain", "v_leak", "v_reset", "kernel_size", "stride", "padding", "dilation",
            "groups", "start_dim", "end_dim", "shape")


@pytest.mark.parametrize("name", [n for n in EXPORTABLE if n not in CARRIED])
def test_what_nir_holds_comes_back_without_the_metadata(name):
    """Export, strip snn-hub's metadata, import: the exporter is the importer's inverse."""
    node, shape = EXAMPLES[name]
    exported = hub.convert(single(node, shape), to="nir", dt=1e-3)
    for nir_node in exported.nodes.values():
        nir_node.metadata = {}
    exported.metadata = {}
    back = hub.load(exported, dt=1e-3).nodes["input" if name == "Input" else "node"]
    assert back.type == ("Scale" if name == "Add" else name)  # Add is exported as Scale(1)
    for field in NIR_HELD:
        if field == "delay" and isinstance(node, hub.Neuron):
            continue  # a neuron's axonal delay is not NIR's Delay node
        if hasattr(node, field) and hasattr(back, field):
            want, got = getattr(node, field), getattr(back, field)
            if isinstance(want, np.ndarray):
                assert np.allclose(np.broadcast_to(want, got.shape), got, rtol=1e-6), field
            else:
                assert want == got, field


@pytest.mark.parametrize("name", sorted(CARRIED))
def test_a_neuron_family_rides_in_metadata_on_its_nir_carrier(tmp_path, name):
    """NIR has no node for these: the file holds NIR's nearest neuron, and snn-hub's node in its
    metadata, which comes back bit for bit; NIR's own runtime refuses to run it as the carrier."""
    node, shape = EXAMPLES[name]
    graph = single(node, shape)
    hub.save(graph, to="nir", out=tmp_path / "g.nir", dt=2.0 ** -10)
    assert hub.load(tmp_path / "g.nir") == graph
    nir_graph = nir.read(tmp_path / "g.nir")
    assert nir_graph.nodes["node"].metadata["hub"]["type"] == name
    with pytest.raises(hub.UnsupportedError, match=f"carries snn-hub's {name}"):
        hub.plugins().format("nir").run(tmp_path / "g.nir", torch.zeros(2, 1, *shape))
    # without the metadata, a NIR reader sees the carrier: another neuron
    nir_graph.nodes["node"].metadata = {}
    assert hub.load(nir_graph, dt=2.0 ** -10).nodes["node"].type != name
