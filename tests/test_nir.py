"""The NIR plugin: forward-Euler mapping, exact round trips, and the NIR paper's real files."""

from __future__ import annotations

import math
import warnings

import nir
import numpy as np
import pytest
import torch
from hub_plugins.nir import layers as nir_layers
from hub_plugins.nir import HubMetadataWarning

import hub
from hub_plugins.nir import CARRIED

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
    "paper_01_lif_lif_rockpool.nir": (1e-4,
                                      r"warns: declares shape \[1, 1, 1\] but receives \[1\]"),
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


#: What NIR cannot carry: Loihi's fixed-point neuron. (The layers NIR has no node for go out as
#: a NIR junction with the node in the metadata: hub_plugins.nir.layers.)
NOT_IN_NIR = {"LoihiCUBA", "SigmaDelta", "Delta", "Sigma", "Quantize", "ConvTranspose2d"}
#: The layers of real torch models, each exported as the NIR node that computes it, if any.
LAYERS = sorted(nir_layers.EXPORTERS)


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


def test_loihis_fixed_point_neuron_has_no_nir_counterpart(tmp_path):
    node, shape = EXAMPLES["LoihiCUBA"]
    with pytest.raises(hub.UnsupportedError, match="NIR has no LoihiCUBA") as e:
        hub.save(single(node, shape), to="nir", out=tmp_path / "g.nir", dt=1e-3)
    assert e.value.node == "node"
    assert not list(tmp_path.iterdir())


def test_plain_nir_follows_nirs_documented_semantics():
    """A NIR graph with no snn-hub metadata: forward Euler, v > threshold, reset to v_reset."""
    lif = nir.LIF(tau=np.array([0.004]), r=np.array([2.0]), v_leak=np.array([0.5]),
                  v_threshold=np.array([1.0]), v_reset=np.array([0.25]))
    graph = hub.load(nir.NIRGraph.from_list(nir.Input(np.array([1])), lif,
                                            nir.Output(np.array([1]))),
                     dt=1e-3)
    node = graph.nodes["lif"]
    assert np.isclose(node.beta, 1 - 1e-3 / 0.004)
    assert np.isclose(node.gain, 1e-3 * 2.0 / 0.004)
    assert (node.comparison, node.reset, node.reset_timing) == (">", "zero", "same")
    assert node.v_reset == np.float32(0.25) and node.v_leak == np.float32(0.5)


def _cuba_graph() -> nir.NIRGraph:
    cuba = nir.CubaLIF(tau_syn=np.array([0.002]), tau_mem=np.array([0.004]), r=np.array([2.0]),
                       v_leak=np.array([0.0]), v_threshold=np.array([1.0]), w_in=np.array([3.0]))
    return nir.NIRGraph.from_list(nir.Input(np.array([1])), cuba, nir.Output(np.array([1])))


def test_cubalif_reads_the_new_current_by_default_and_forward_euler_on_request():
    """The voltage sees this step's current, as snnTorch, Norse and SpikingJelly read NIR;
    ``current_order="previous"`` is forward Euler of both equations."""
    node = hub.load(_cuba_graph(), dt=1e-3).nodes["cubalif"]
    assert np.isclose(node.alpha, 0.5) and np.isclose(node.current_gain, 1.5)
    assert np.isclose(node.beta, 0.75) and np.isclose(node.gain, 0.5)
    assert node.current_order == "new"
    euler = hub.load(_cuba_graph(), dt=1e-3, current_order="previous").nodes["cubalif"]
    assert euler == node.replace(current_order="previous")
    x = torch.ones(3, 1, 1)
    # new: i = 1.5, 2.25, 2.625 and v = 0.75, 1.6875 (spike, reset), 1.3125 (spike);
    # previous: v = 0, 0.75, 0.5625 + 0.5*2.25 = 1.6875 (spike), a step later
    assert hub.simulate(hub.load(_cuba_graph(), dt=1e-3), x).ravel().tolist() == [0, 1, 1]
    assert hub.simulate(hub.load(_cuba_graph(), dt=1e-3, current_order="previous"),
                        x).ravel().tolist() == [0, 0, 1]


def test_the_current_order_option_is_checked_and_metadata_wins():
    with pytest.raises(hub.ParameterError, match="'new', 'previous'") as e:
        hub.load(_cuba_graph(), dt=1e-3, current_order="old")
    assert e.value.field == "current_order"
    graph = single(hub.CubaLIF(alpha=0.5, beta=0.75, current_order="previous"), (1,))
    exported = hub.convert(graph, to="nir", dt=1e-3)  # the hub's own file says which
    assert hub.load(exported, current_order="new") == graph


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
    before = {k: v.copy() for k, v in vars(exported.nodes["node"]).items()
              if isinstance(v, np.ndarray)}
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


@pytest.mark.parametrize("name", sorted(set(EXPORTABLE) - set(LAYERS) - CARRIED))
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


# -- the NIR paper's Braille networks, as the ecosystem's NIR readers run them ----------------

BRAILLE = ["paper_03_rnn_braille_noDelay_bias_zero.nir",
           "paper_03_rnn_braille_noDelay_noBias_subtract.nir"]


def braille_probe() -> torch.Tensor:
    """300 steps of 16 random spike trains on the 12 Braille channels."""
    return (torch.rand(300, 16, 12, generator=torch.Generator().manual_seed(0)) < 0.2).float()


def _step_with_state(net, x):
    out, state = [], None
    with torch.no_grad():
        for t in range(x.shape[0]):
            y, state = net(x[t], state)
            out.append(y)
    return torch.stack(out)


def snntorch_reader(path, x):
    """snnTorch's ``import_from_nir``: Synaptic/RSynaptic neurons, ``syn = alpha*syn + x``,
    ``mem = beta*mem + syn`` (the new current), reset to zero in the same step."""
    import contextlib
    import io

    from snntorch.import_nir import import_from_nir

    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = import_from_nir(nir.read(path))
    out = []
    with torch.no_grad():
        for t in range(x.shape[0]):
            y = net(x[t])
            out.append(y[0] if isinstance(y, tuple) else y)
    return torch.stack(out)


def norse_reader(path, x):
    """Norse's ``from_nir``: ``syn += dt/tau_syn * (v_leak - syn + w_in*x)``, then the LIF box
    cell on ``r * syn`` (the new current), ``v > v_th``, reset to 0."""
    import norse.torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = norse.torch.from_nir(nir.read(path), dt=1e-4)
        return _step_with_state(net, x)


def spikingjelly_reader(path, x):
    """SpikingJelly's ``nir_exchange.import_from_nir``: CUBALIFNode, ``c = c*c_decay + x``,
    ``v = v*v_decay + c`` (the new current), ``v >= v_threshold``, hard reset."""
    from spikingjelly.activation_based.nir_exchange import import_from_nir

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = import_from_nir(nir.read(path), dt=1e-4)
        return _step_with_state(net, x)


READERS = {"snntorch": snntorch_reader, "norse": norse_reader,
           "spikingjelly": spikingjelly_reader}


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize("name", BRAILLE)
def test_braille_spikes_as_the_frameworks_own_nir_readers_give_them(paper, name, reader):
    x = braille_probe()
    try:
        theirs = READERS[reader](paper / name, x)
    except Exception as e:  # noqa: BLE001 (the reader itself cannot load or run the file)
        pytest.skip(f"{reader}'s NIR reader cannot run {name}: {type(e).__name__}: {e}")
    ours = hub.simulate(hub.load(paper / name, dt=1e-4), x)
    assert theirs.sum() > 0
    assert torch.equal(theirs, ours)
    euler = hub.simulate(hub.load(paper / name, dt=1e-4, current_order="previous"), x)
    assert not torch.equal(theirs, euler)  # what the option reads is another network


@pytest.mark.parametrize("name", BRAILLE)
@pytest.mark.parametrize("order", ["new", "previous"])
def test_nirs_runtime_reads_the_current_as_the_plugin_does(paper, name, order):
    from hub_plugins.nir.runtime import run

    x = braille_probe()[:100]
    ours = hub.simulate(hub.load(paper / name, dt=1e-4, current_order=order), x)
    assert torch.equal(run(paper / name, x, dt=1e-4, current_order=order), ours)


# -- a NIR file's own parameters survive NIR -> hub -> NIR ------------------------------------


def _nir_parameters(graph, prefix=""):
    """Every parameter of every node of a NIR graph, by dotted node name and field."""
    out = {}
    for name, node in graph.nodes.items():
        if isinstance(node, nir.NIRGraph):
            out.update(_nir_parameters(node, f"{prefix}{name}."))
            continue
        for field, value in vars(node).items():
            if field not in ("metadata", "input_type", "output_type"):
                out[f"{prefix}{name}.{field}"] = value
    return out


def _identical(a, b) -> bool:
    if isinstance(a, (np.ndarray, np.generic)) or isinstance(b, (np.ndarray, np.generic)):
        a2, b2 = np.asarray(a), np.asarray(b)
        return (type(a) is type(b) and a2.dtype == b2.dtype and a2.shape == b2.shape
                and a2.tobytes() == b2.tobytes())
    return type(a) is type(b) and a == b


LOADABLE = sorted(n for n, (_, outcome) in PAPER_FILES.items() if not outcome.startswith("fails"))


@pytest.mark.parametrize("name", LOADABLE)
def test_resaving_a_paper_file_gives_back_every_parameter_bit_for_bit(paper, tmp_path, name):
    from hub_plugins.nir import read_nir

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the Rockpool file's declared Output shape
        graph = hub.load(paper / name, dt=PAPER_FILES[name][0])
    hub.save(graph, to="nir", out=tmp_path / "again.nir")
    before = _nir_parameters(read_nir(paper / name))
    after = _nir_parameters(read_nir(tmp_path / "again.nir"))
    assert before.keys() <= after.keys()
    changed = [k for k in before if not _identical(before[k], after[k])]
    assert not changed
    assert hub.load(tmp_path / "again.nir") == graph  # and the hub reads the same graph back


def test_kept_parameters_survive_a_hub_json_file(paper, tmp_path):
    from hub_plugins.nir import read_nir

    name = BRAILLE[1]
    hub.convert(paper / name, out=tmp_path / "b.hub.json", dt=1e-4)
    hub.convert(tmp_path / "b.hub.json", out=tmp_path / "b.nir")
    before = _nir_parameters(read_nir(paper / name))
    after = _nir_parameters(read_nir(tmp_path / "b.nir"))
    assert all(_identical(before[k], after[k]) for k in before)


def _plain_lif_file() -> nir.NIRGraph:
    """A LIF as SpikingJelly's NIR export writes ``LIFNode(tau=1000.)`` at dt = 1e-3:
    ``r = 1``, which float32 ``beta`` and ``gain`` give back only as 1.0000129."""
    lif = nir.LIF(tau=np.array([1.0]), r=np.array([1.0]), v_leak=np.array([0.0]),
                  v_threshold=np.array([1.0]), v_reset=np.array([0.0]))
    return nir.NIRGraph.from_list(nir.Input(np.array([1])), lif, nir.Output(np.array([1])))


def test_parameters_follow_the_node_once_it_changes():
    graph = hub.load(_plain_lif_file(), dt=1e-3)
    assert hub.convert(graph, to="nir").nodes["lif"].r.tolist() == [1.0]
    rebuilt = hub.convert(graph, to="nir", dt=2e-3).nodes["lif"]  # another dt: recomputed
    assert not np.array_equal(rebuilt.r, [1.0])
    lif = graph.nodes["lif"]
    graph.nodes["lif"] = lif.replace(beta=np.float32(0.5))
    changed = hub.convert(graph, to="nir").nodes["lif"]
    assert np.allclose(changed.tau, 2e-3) and not np.array_equal(changed.r, [1.0])


def test_kept_parameters_that_no_longer_mean_the_node_are_not_written():
    graph = hub.load(_plain_lif_file(), dt=1e-3)
    graph.metadata["nir_source"]["lif"]["fields"]["r"]["array"] = [5.0]  # tampered
    assert np.isclose(hub.convert(graph, to="nir").nodes["lif"].r, 1.0, rtol=1e-4)


def test_spikingjelly_still_reads_a_file_the_hub_resaved(tmp_path):
    """SpikingJelly's reader wants ``r`` equal to 1 (or ``tau/dt``) within 1e-6: a re-save that
    rebuilt ``r`` from float32 ``beta`` and ``gain`` (1.0000129) made it refuse the file."""
    nir_exchange = pytest.importorskip("spikingjelly.activation_based.nir_exchange",
                                       reason="spikingjelly's NIR exchange needs nirtorch")
    nir.write(tmp_path / "theirs.nir", _plain_lif_file())
    nir_exchange.import_from_nir(nir.read(tmp_path / "theirs.nir"), dt=1e-3)
    graph = hub.load(tmp_path / "theirs.nir", dt=1e-3)
    hub.save(graph, to="nir", out=tmp_path / "again.nir")
    again = nir.read(tmp_path / "again.nir")
    assert again.nodes["lif"].r.tolist() == [1.0]
    nir_exchange.import_from_nir(again, dt=1e-3)
    del graph.metadata["nir_source"]  # what the parameters alone give back
    hub.save(graph, to="nir", out=tmp_path / "rebuilt.nir")
    with pytest.raises(ValueError, match="r must equal 1 or tau / dt"):
        nir_exchange.import_from_nir(nir.read(tmp_path / "rebuilt.nir"), dt=1e-3)


# -- the layers of real models: a NIR node where NIR has one, the node itself in the metadata ---

#: What a reader without snn-hub's metadata reads each example layer as, and whether it then
#: computes the same values bit for bit (``True``), up to rounding (``False``) or not at all
#: (``None``: a junction, a NIR Scale by 1, in place of a layer NIR has no node for).
WITHOUT_METADATA = {
    "Bias": ("Affine", True), "BatchNorm": ("Conv1d", False), "Vote": ("Linear", True),
    "AdaptiveAvgPool2d": ("AvgPool2d", True), "Reshape": ("Scale", None),  # [2, 3] -> [3, 2]
    "ReLU": ("Scale", None), "Mul": ("Scale", None), "Concat": ("Scale", None),
    "MaxPool2d": ("Scale", None),
}


def test_every_layer_says_how_it_is_read_without_metadata():
    assert set(WITHOUT_METADATA) == set(LAYERS)


@pytest.mark.parametrize("name", LAYERS)
def test_layers_round_trip_exactly_and_read_sensibly_without_metadata(tmp_path, name):
    from hub_plugins.nir.runtime import run

    node, shape = EXAMPLES[name]
    graph = single(node, shape)
    hub.save(graph, to="nir", out=tmp_path / "g.nir", dt=1e-3)
    assert hub.load(tmp_path / "g.nir") == graph
    x = torch.randn(5, 2, *shape, generator=torch.Generator().manual_seed(2))
    want = hub.simulate(graph, x)
    # NIR's runtime computes it from the NIR node (or, for a junction, from the metadata)
    assert torch.allclose(run(tmp_path / "g.nir", x), want, rtol=1e-6, atol=1e-6)
    exported = hub.convert(graph, to="nir", dt=1e-3)
    kind, exact = WITHOUT_METADATA[name]
    assert type(exported.nodes["node"]).__name__ == kind
    for nir_node in exported.nodes.values():
        nir_node.metadata = {}
    exported.metadata = {}
    out = graph.plan().output_shapes["node"]
    if exact is None and out != shape:  # a sum keeps the shape; the Output declares another
        if math.prod(out) == math.prod(shape):
            with pytest.warns(UserWarning, match="declares shape"):
                hub.load(exported, dt=1e-3)
        else:
            with pytest.raises(hub.ShapeError, match="declares shape"):
                hub.load(exported, dt=1e-3)
        return
    plain = hub.load(exported, dt=1e-3)
    assert plain.nodes["node"].type == kind
    if exact is None:
        return
    got = hub.simulate(plain, x)
    assert torch.equal(got, want) if exact else torch.allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("node, shape, kind", [
    (hub.Bias(bias=np.array([[[0.5]], [[-0.25]]], np.float32)), (2, 3, 3), "Conv2d"),
    (hub.Bias(bias=np.arange(6, dtype=np.float32).reshape(2, 3)), (2, 3), "Scale"),
    (hub.BatchNorm(mean=dyadic(3), var=np.ones(3, np.float32)), (3,), "Affine"),
    (hub.BatchNorm(mean=dyadic(2), var=np.ones(2, np.float32)), (2, 4, 4), "Conv2d"),
    (hub.AdaptiveAvgPool2d(output_size=(2, 2)), (1, 5, 5), "Scale"),
    (hub.Reshape(shape=(6,)), (2, 3), "Flatten"),
])
def test_each_layer_takes_the_nir_node_its_settings_allow(tmp_path, node, shape, kind):
    graph = single(node, shape)
    assert type(hub.convert(graph, to="nir", dt=1e-3).nodes["node"]).__name__ == kind
    hub.save(graph, to="nir", out=tmp_path / "g.nir", dt=1e-3)
    assert hub.load(tmp_path / "g.nir") == graph


def test_a_junction_is_refused_by_readers_that_do_not_read_the_metadata(tmp_path):
    """snnTorch's NIR reader (nirtorch) has no mapping for a NIR Scale: a clear error, not a
    network without its ReLU."""
    from snntorch.import_nir import import_from_nir

    graph = hub.Graph.chain(("input", hub.Input(shape=(3,))),
                            ("fc", hub.Affine(weight=dyadic(3, 3), bias=dyadic(3))),
                            ("relu", hub.ReLU()))
    hub.save(graph, to="nir", out=tmp_path / "g.nir", dt=1e-3)
    with pytest.raises(ValueError, match="Unknown node type.*Scale"):
        import_from_nir(nir.read(tmp_path / "g.nir"))


@pytest.mark.parametrize("name", ["sew-iand", "concat-vote"])
@pytest.mark.parametrize("tier", ["exact", "float"])
def test_real_model_layer_cases_go_through_a_nir_file_and_back_exactly(tmp_path, name, tier):
    from hub_conformance import zoo

    (case,) = [c for c in zoo.cases((tier,)) if c.name.startswith(name)][:1]
    hub.save(case.graph, to="nir", out=tmp_path / "g.nir")
    again = hub.load(tmp_path / "g.nir")
    assert again == case.graph
    x = torch.as_tensor(case.x)
    assert torch.equal(hub.simulate(again, x), hub.simulate(case.graph, x))


@pytest.mark.parametrize("name", ["sew-iand", "concat-vote"])
def test_conformance_routes_through_nir_pass_for_the_real_model_layer_cases(name):
    """Every route through NIR (A -> NIR, round trips, NIR files) between the torch formats,
    run in each target's own runtime: nothing fails; what is not expressible is only that
    SpikingJelly exports chains."""
    from hub_conformance import zoo
    from hub_conformance.paths import routes, usable
    from hub_conformance.suite import run_case

    formats = usable(["hub", "nir", "snntorch", "norse", "spikingjelly"])
    through_nir = [r for r in routes(formats) if "nir" in r.formats]
    (case,) = [c for c in zoo.cases(("exact",)) if c.name == name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # frameworks' deprecation notices
        outcomes = [run_case(case, route) for route in through_nir]
    assert not [(o.id, o.status, o.detail) for o in outcomes
                if o.status not in ("pass", "n/a")]
    missing = {o.detail for o in outcomes if o.status == "n/a"}
    assert all("an exported SpikingJelly model is a chain" in d for d in missing), missing
    assert sum(o.status == "pass" for o in outcomes) >= 36


@pytest.mark.parametrize("build", ["spiking_resnet18", "sew_resnet18-IAND"])
def test_spikingjelly_resnets_go_through_a_nir_file_and_back_exactly(tmp_path, build):
    pytest.importorskip("spikingjelly")
    from spikingjelly.activation_based import functional, neuron
    from spikingjelly.activation_based.model import sew_resnet, spiking_resnet

    torch.manual_seed(5)
    if build == "spiking_resnet18":
        model = spiking_resnet.spiking_resnet18(spiking_neuron=neuron.IFNode)
    else:
        model = sew_resnet.sew_resnet18(cnf="IAND", spiking_neuron=neuron.IFNode)
    functional.set_step_mode(model, "m")
    graph = hub.load(model, input_shape=(3, 16, 16))  # proved against SpikingJelly's own run
    hub.save(graph, to="nir", out=tmp_path / "resnet.nir", dt=1e-3)
    again = hub.load(tmp_path / "resnet.nir")
    assert again == graph
    x = torch.rand(3, 2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    readout = hub.simulate(graph, x)  # the last Linear's output, fed by the spikes
    assert readout.abs().sum() > 0
    assert torch.equal(hub.simulate(again, x), readout)


@pytest.mark.parametrize("name", EXPORTABLE)
def test_resaving_a_hub_written_file_changes_no_parameter(tmp_path, name):
    from hub_plugins.nir import read_nir

    node, shape = EXAMPLES[name]
    hub.save(single(node, shape), to="nir", out=tmp_path / "a.nir", dt=1e-3)
    hub.save(hub.load(tmp_path / "a.nir"), to="nir", out=tmp_path / "b.nir")
    before = _nir_parameters(read_nir(tmp_path / "a.nir"))
    after = _nir_parameters(read_nir(tmp_path / "b.nir"))
    assert before.keys() == after.keys()
    assert all(_identical(before[k], after[k]) for k in before)


def test_a_layer_whose_nir_weight_would_be_huge_goes_out_as_a_junction(tmp_path):
    graph = single(hub.Bias(bias=np.float32(0.5)), (nir_layers.MAX_DIAGONAL + 1,))
    assert type(hub.convert(graph, to="nir", dt=1e-3).nodes["node"]).__name__ == "Scale"
    hub.save(graph, to="nir", out=tmp_path / "g.nir", dt=1e-3)
    assert hub.load(tmp_path / "g.nir") == graph
