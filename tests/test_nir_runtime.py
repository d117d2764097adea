"""NIR's native runtime: an independent interpreter of NIR graphs that agrees with the hub.

On exact models (dyadic weights, inputs and thresholds, decays ``1 - 2**-k``, gains powers of two,
``dt = 2**-10``) float32 arithmetic is exact in any evaluation order, so the runtime's forward
Euler form and the reference simulator's discrete update must give identical outputs.
"""

from __future__ import annotations

import itertools
import warnings

import nir
import numpy as np
import pytest
import torch

import hub
from hub_plugins.nir import CARRIED, HubMetadataWarning
from hub_plugins.nir.runtime import run

from .conftest import EXAMPLES, dyadic, single
from .test_graph import subgraph_model
from .test_nir import PAPER_FILES

DT = 2.0 ** -10
T = 16


def inputs(graph: hub.Graph, steps: int = T, batch: int = 2, scale: int = 8) -> torch.Tensor:
    shape = graph.plan().output_shapes[graph.inputs[0]]
    return torch.tensor(dyadic(steps, batch, *shape, scale=scale))


def assert_runs_exactly(graph: hub.Graph, x: torch.Tensor) -> torch.Tensor:
    """Export to NIR, run in NIR's runtime, and demand the hub's output bit for bit."""
    want = hub.simulate(graph, x)
    # the witness that the model is exact: float64 gives the same, so no step rounded
    assert torch.equal(hub.simulate(graph, x, dtype=torch.float64).float(), want)
    got = run(hub.convert(graph, to="nir", dt=DT), x)
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert torch.equal(got, want)
    return got


# Exact versions of the node types whose conftest example is not exact under forward Euler
# (there, 1 - alpha is not a power of two, so w_in = current_gain / (1 - alpha) is not dyadic).
EXACT = dict(EXAMPLES) | {
    "CubaLIF": (hub.CubaLIF(alpha=np.array([0.5, 0.75, 0.875]), beta=0.875, current_gain=0.5,
                            gain=0.125, threshold=0.25, reset="subtract", reset_timing="next",
                            current_order="previous", spike_mode="multi"), (3,)),
    "CubaLI": (hub.CubaLI(alpha=0.5, beta=0.5, gain=0.25, current_gain=0.25, v_leak=0.25,
                          current_order="new"), (3,)),
}
#: The neuron families ride in snn-hub's metadata on a carrier NIR neuron: no NIR runtime
#: computes them (tests/test_nir.py checks that this one refuses them).
EXPORTABLE = sorted(hub.plugins().format("nir").exports - CARRIED)


@pytest.mark.parametrize("name", EXPORTABLE)
def test_every_node_type_runs_exactly_as_the_hub_simulates(name):
    node, shape = EXACT[name]
    graph = single(node, shape)
    assert_runs_exactly(graph, inputs(graph))


CONVENTIONS = list(itertools.product((">", ">="), ("zero", "subtract", "none"), ("same", "next"),
                                     ("binary", "multi", "graded")))


@pytest.mark.parametrize("comparison, reset, timing, mode", CONVENTIONS)
def test_every_spiking_convention_in_the_metadata_is_honoured(comparison, reset, timing, mode):
    conventions = dict(comparison=comparison, reset=reset, reset_timing=timing, spike_mode=mode)
    graph = hub.Graph.chain(
        ("in", hub.Input(shape=(4,))),
        ("fc", hub.Affine(weight=dyadic(4, 4, scale=4), bias=dyadic(4, scale=4))),
        ("lif", hub.LIF(beta=0.5, gain=0.5, v_leak=0.25, threshold=0.25, v_reset=-0.25,
                        amplitude=2.0, delay=1, **conventions)),
        ("cuba", hub.CubaLIF(alpha=0.5, beta=0.5, current_gain=0.5, gain=0.5, threshold=0.5,
                             current_order="new", **conventions)),
        ("if", hub.IF(gain=0.5, threshold=0.5, **conventions)))
    x = inputs(graph, scale=4)
    assert_runs_exactly(graph, x)


def test_refractory_periods_and_initial_voltages_are_honoured():
    graph = hub.Graph.chain(
        hub.Input(shape=(3,)),
        hub.LIF(beta=0.5, threshold=0.25, refractory=3, v_init=0.5, comparison=">="),
        hub.Scale(scale=0.5),
        hub.IF(threshold=0.25, refractory=1, reset="subtract", v_init=np.array([0, 0.25, 0.5])))
    got = assert_runs_exactly(graph, torch.full((T, 1, 3), 0.25))
    assert got.sum() > 0


def test_a_recurrent_graph_feeds_back_one_step_late():
    graph = hub.Graph(
        {"in": hub.Input(shape=(3,)), "fc": hub.Linear(weight=dyadic(4, 3)),
         "lif": hub.CubaLIF(alpha=0.5, beta=0.5, threshold=0.5, current_gain=0.5),
         "rec": hub.Affine(weight=dyadic(4, 4), bias=dyadic(4)),
         "delay": hub.Delay(delay=np.array([1, 2, 0, 3])), "li": hub.LI(beta=0.5, gain=0.5),
         "out": hub.Output()},
        [("in", "fc"), ("fc", "lif"), ("lif", "rec"), ("rec", "delay"), ("delay", "lif"),
         ("lif", "li"), ("li", "out")])
    assert graph.plan().recurrent["lif"] == ("delay",)
    assert_runs_exactly(graph, inputs(graph))


def test_a_skip_connection_sums_at_a_junction():
    graph = hub.Graph(
        {"in": hub.Input(shape=(1, 4, 4)),
         "conv": hub.Conv2d(weight=dyadic(2, 1, 3, 3), bias=dyadic(2), padding=(1, 1)),
         "lif": hub.LIF(beta=0.75, threshold=0.5, reset="subtract"),
         "pool": hub.SumPool2d(kernel_size=(2, 2), stride=(2, 2)),
         "flat": hub.Flatten(), "fc": hub.Affine(weight=dyadic(3, 8), bias=dyadic(3)),
         "skip": hub.Flatten(), "proj": hub.Linear(weight=dyadic(3, 16)),
         "add": hub.Add(), "if": hub.IF(threshold=0.5), "out": hub.Output()},
        [("in", "conv"), ("conv", "lif"), ("lif", "pool"), ("pool", "flat"), ("flat", "fc"),
         ("fc", "add"), ("in", "skip"), ("skip", "proj"), ("proj", "add"), ("add", "if"),
         ("if", "out")])
    assert_runs_exactly(graph, inputs(graph))


def test_nested_nir_graphs_run_inlined():
    graph = subgraph_model()
    exported = hub.convert(graph, to="nir", dt=DT)
    assert any(isinstance(n, nir.NIRGraph) for n in exported.nodes.values())
    assert_runs_exactly(graph, inputs(graph))


def test_several_inputs_and_outputs_go_by_name():
    graph = hub.Graph(
        {"a": hub.Input(shape=(2,)), "b": hub.Input(shape=(2,)), "lif": hub.LIF(beta=0.5),
         "x": hub.Output(), "y": hub.Output()},
        [("a", "lif"), ("b", "lif"), ("lif", "x"), ("b", "y")])
    x = {"a": torch.tensor(dyadic(T, 2, 2)), "b": dyadic(T, 2, 2)}  # a tensor and an array
    got = run(hub.convert(graph, to="nir", dt=DT), x)
    want = hub.simulate(graph, {k: torch.as_tensor(v) for k, v in x.items()})
    assert got.keys() == want.keys() == {"x", "y"}
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_the_format_runs_nir_objects_and_files(tmp_path):
    graph = single(*EXACT["CubaLIF"])
    x = inputs(graph)
    hub.save(graph, to="nir", out=tmp_path / "g.nir", dt=DT)
    fmt = hub.plugins().format("nir")
    assert "run" in fmt.capabilities
    from_file = fmt.run(tmp_path / "g.nir", x)
    assert torch.equal(from_file, hub.simulate(graph, x))
    assert torch.equal(fmt.run(str(tmp_path / "g.nir"), x.numpy()), from_file)


def strip(nir_graph: nir.NIRGraph) -> nir.NIRGraph:
    """The graph as another NIR tool would write it: no snn-hub metadata anywhere."""
    nir_graph.metadata = {}
    for node in nir_graph.nodes.values():
        node.metadata = {}
    return nir_graph


def test_plain_nir_follows_nirs_semantics_by_forward_euler():
    """No metadata: spike when v > v_threshold, reset to v_reset in the same step."""
    tau, r, v_leak, v_th, v_reset = 4 * DT, 2.0, 0.25, 1.0, 0.125
    lif = nir.LIF(tau=np.full(2, tau), r=np.full(2, r), v_leak=np.full(2, v_leak),
                  v_threshold=np.full(2, v_th), v_reset=np.full(2, v_reset))
    graph = nir.NIRGraph.from_list(nir.Input(np.array([2])), lif, nir.Output(np.array([2])))
    x = dyadic(40, 1, 2, scale=4) + 0.5
    got = run(graph, x, dt=DT).numpy()

    # forward Euler of tau dv/dt = (v_leak - v) + r I, written out independently
    v, want = np.zeros(2), np.zeros((40, 1, 2))
    for t in range(40):
        v = v + DT / tau * ((v_leak - v) + r * x[t, 0].astype(np.float64))
        want[t, 0] = v > v_th
        v = np.where(v > v_th, v_reset, v)
    assert got.tolist() == want.tolist()
    assert 0 < got.sum() < 40 * 2
    assert torch.equal(torch.as_tensor(got), hub.simulate(hub.load(graph, dt=DT),
                                                          torch.as_tensor(x)))


def test_without_metadata_a_hub_neuron_falls_back_to_nirs_conventions():
    node = hub.LIF(beta=0.5, threshold=0.5, comparison=">=", reset="subtract")
    graph = single(node, (3,))
    x = torch.full((T, 1, 3), 0.5)
    plain = run(strip(hub.convert(graph, to="nir", dt=DT)), x, dt=DT)
    nir_semantics = single(hub.LIF(beta=0.5, threshold=0.5), (3,))
    assert torch.equal(plain, hub.simulate(nir_semantics, x))
    assert not torch.equal(plain, hub.simulate(graph, x))  # v reaches 0.5 exactly: >= differs


def test_a_graph_without_a_time_step_is_refused():
    exported = strip(hub.convert(single(hub.LIF(beta=0.5), (2,)), to="nir", dt=DT))
    with pytest.raises(hub.FormatError, match="needs a time step.*pass dt=") as e:
        run(exported, torch.zeros(3, 1, 2))
    assert e.value.field == "dt"
    with pytest.raises(hub.ParameterError, match="made for dt=0.0009765625, but dt=0.001"):
        run(hub.convert(single(hub.LIF(beta=0.5), (2,)), to="nir", dt=DT), torch.zeros(3, 1, 2),
            dt=1e-3)


def test_bad_dialect_metadata_names_the_node_and_field():
    exported = hub.convert(single(hub.LIF(beta=0.5), (2,)), to="nir", dt=DT)
    exported.nodes["node"].metadata["hub"]["reset"] = "sideways"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HubMetadataWarning)  # the hub's import distrusts it too
        with pytest.raises(hub.FormatError, match="'sideways' is not one of") as e:
            run(exported, torch.zeros(3, 1, 2))
    assert (e.value.node, e.value.field) == ("node", "reset")


def test_metadata_for_another_node_type_is_ignored_with_a_warning():
    exported = hub.convert(single(hub.LIF(beta=0.5, comparison=">="), (2,)), to="nir", dt=DT)
    exported.nodes["node"].metadata["hub"]["type"] = "IF"
    with pytest.warns(HubMetadataWarning, match="metadata of type 'IF' on a NIR LIF"):
        y = run(exported, torch.full((4, 1, 2), 1.0))
    assert torch.equal(y, hub.simulate(single(hub.LIF(beta=0.5), (2,)), torch.full((4, 1, 2), 1.0)))


def test_unrunnable_padding_names_the_node_and_field():
    conv = nir.Conv1d(input_shape=8, weight=dyadic(2, 1, 3), stride=2, padding="same",
                      dilation=1, groups=1, bias=np.zeros(2))
    graph = nir.NIRGraph(nodes={"input": nir.Input(np.array([1, 8])), "conv1d": conv,
                                "output": nir.Output(np.array([2, 4]))},
                         edges=[("input", "conv1d"), ("conv1d", "output")], type_check=False)
    with pytest.raises(hub.UnsupportedError, match="only for stride 1") as e:
        run(graph, torch.zeros(2, 1, 1, 8), dt=DT)
    assert (e.value.node, e.value.field) == ("conv1d", "padding")


def test_same_padding_runs_as_nir_says():
    conv = nir.Conv2d(input_shape=(5, 5), weight=dyadic(2, 1, 3, 5), stride=1, padding="same",
                      dilation=1, groups=1, bias=dyadic(2))
    graph = nir.NIRGraph.from_list(nir.Input(np.array([1, 5, 5])), conv,
                                   nir.Output(np.array([2, 5, 5])))
    x = torch.tensor(dyadic(3, 2, 1, 5, 5))
    assert torch.equal(run(graph, x, dt=DT), hub.simulate(hub.load(graph), x))


def test_a_damaged_file_is_a_format_error_naming_it(tmp_path):
    path = tmp_path / "bad.nir"
    path.write_bytes(b"not hdf5")
    with pytest.raises(hub.FormatError, match="not an HDF5 file") as e:
        run(path, torch.zeros(2, 1, 1))
    assert e.value.file == str(path)


LOADABLE = sorted(n for n, (_, outcome) in PAPER_FILES.items() if not outcome.startswith("fails"))


@pytest.mark.parametrize("name", LOADABLE)
def test_the_papers_graphs_run_and_agree_with_the_hub(paper, name):
    dt = PAPER_FILES[name][0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # rockpool's declared output shape
        graph = hub.load(paper / name, dt=dt)
    shape = graph.plan().output_shapes[graph.inputs[0]]
    x = (torch.rand(30, 2, *shape, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    want = hub.simulate(graph, x)
    got = run(paper / name, x, dt=dt)
    assert got.shape == want.shape
    # float models: the two evaluation orders may round apart, at worst at a threshold tie
    assert (torch.isclose(got, want, rtol=1e-4, atol=1e-5).float().mean() >= 0.99)


def test_paper_files_nir_cannot_build_fail_as_the_hub_reader_does(paper):
    name = "paper_03_rnn_extras_braille_noDelay_bias_zero_subgraph.nir"
    with pytest.raises(hub.FormatError, match="references destination node 'lif'") as e:
        run(paper / name, torch.zeros(2, 1, 12), dt=1e-4)
    assert e.value.file == str(paper / name)
