"""The reference simulator: time-major, stateful, single- and multi-step identical, trainable."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hub

from .conftest import EXAMPLES, dyadic, single


def conv_net() -> hub.Graph:
    return hub.Graph.chain(
        hub.Input(shape=(2, 8, 8)),
        hub.Conv2d(weight=dyadic(4, 2, 3, 3), bias=dyadic(4), padding=(1, 1)),
        hub.IF(threshold=0.5, reset="subtract"),
        hub.SumPool2d(kernel_size=(2, 2), stride=(2, 2)),
        hub.Flatten(),
        hub.Affine(weight=dyadic(5, 64), bias=dyadic(5)),
        hub.LIF(beta=0.75, threshold=0.5),
    )


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_single_step_equals_multi_step_for_every_node_type(name):
    node, shape = EXAMPLES[name]
    graph = single(node, shape)
    x = torch.tensor(dyadic(9, 2, *shape))
    if name == "LoihiCUBA":
        x = x * 8  # Loihi's synapses deliver integers
    sim = hub.Simulator(graph)
    stepped = torch.stack([sim.step(x[t]) for t in range(9)])
    assert torch.equal(stepped, hub.simulate(graph, x))


def test_state_carries_over_between_calls_until_reset():
    graph = conv_net()
    x = torch.tensor(dyadic(10, 3, 2, 8, 8))
    whole = hub.simulate(graph, x)
    sim = hub.Simulator(graph)
    halves = torch.cat([sim(x[:4]), sim(x[4:])])
    assert torch.equal(halves, whole)
    sim.reset()
    assert torch.equal(sim(x), whole)


def test_recurrent_edges_deliver_the_previous_step():
    """lif spikes at step 0 on its input alone; the recurrent weight of 1 then re-excites it."""
    graph = hub.Graph(
        {"in": hub.Input(shape=(1,)), "lif": hub.LIF(beta=0.0, threshold=0.5),
         "rec": hub.Linear(weight=[[1.0]]), "out": hub.Output()},
        [("in", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "out")])
    x = torch.tensor([1.0, 0.0, 0.0]).reshape(3, 1, 1)
    # step 0: v = 1 -> spike; step 1: v = rec(s[0]) = 1 -> spike; and so on forever
    assert hub.simulate(graph, x).ravel().tolist() == [1.0, 1.0, 1.0]
    graph.nodes["rec"] = hub.Linear(weight=[[0.0]])
    assert hub.simulate(graph, x).ravel().tolist() == [1.0, 0.0, 0.0]


def test_skip_connections_sum_at_a_junction():
    graph = hub.Graph(
        {"in": hub.Input(shape=(2,)), "a": hub.Scale(scale=2.0), "b": hub.Scale(scale=0.5),
         "sum": hub.Add(), "out": hub.Output()},
        [("in", "a"), ("in", "b"), ("a", "sum"), ("b", "sum"), ("in", "sum"), ("sum", "out")])
    x = torch.tensor([[[1.0, 2.0]]])
    assert hub.simulate(graph, x).tolist() == [[[3.5, 7.0]]]


def test_several_inputs_and_outputs_are_dicts_by_name():
    graph = hub.Graph(
        {"a": hub.Input(shape=(2,)), "b": hub.Input(shape=(2,)), "lif": hub.LIF(beta=0.5),
         "spikes": hub.Output(), "sum": hub.Output()},
        [("a", "lif"), ("b", "lif"), ("lif", "spikes"), ("a", "sum"), ("b", "sum")])
    x = {"a": torch.ones(3, 1, 2), "b": torch.full((3, 1, 2), 0.5)}
    y = hub.simulate(graph, x)
    assert set(y) == {"spikes", "sum"}
    assert torch.equal(y["sum"], torch.full((3, 1, 2), 1.5))
    assert y["spikes"][:, 0, 0].tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(hub.HubError, match="pass a dict"):
        hub.simulate(graph, torch.ones(3, 1, 2))


def test_wrong_input_shapes_say_what_was_expected():
    with pytest.raises(hub.ShapeError, match=r"expected input of shape \[T, N, 2, 8, 8\]"):
        hub.simulate(conv_net(), torch.zeros(4, 2, 8, 8))


def test_integer_inputs_are_accepted_as_spikes():
    graph = single(hub.IF(threshold=0.5), (2,))
    y = hub.simulate(graph, torch.tensor([[[1, 0]]], dtype=torch.int64))
    assert y.tolist() == [[[1.0, 0.0]]]


def test_float64_simulation_is_available():
    y = hub.simulate(conv_net(), torch.tensor(dyadic(3, 1, 2, 8, 8)), dtype=torch.float64)
    assert y.dtype == torch.float64


def test_lava_layout_helpers_move_time_last_and_back():
    x = torch.arange(2 * 3 * 4).reshape(2, 3, 4)  # [T, N, C]
    lava = hub.to_lava(x)
    assert lava.shape == (3, 4, 2)
    assert lava[1, 2, 0] == x[0, 1, 2]
    assert torch.equal(hub.from_lava(lava), x)


def test_the_simulator_trains_with_surrogate_gradients():
    torch.manual_seed(0)
    weight = [[0.25, -0.25, 0.5, 0.0], [0.5, 0.25, -0.5, 0.25]]  # fixed: no shared generator
    graph = hub.Graph.chain(hub.Input(shape=(4,)), ("fc", hub.Linear(weight=weight)),
                            hub.LIF(beta=0.5, threshold=0.5))
    sim = hub.Simulator(graph, trainable=True)
    x = (torch.rand(20, 8, 4) < 0.5).float()
    target = torch.zeros(20, 8, 2)
    target[..., 0] = 1.0  # neuron 0 should always fire, neuron 1 never
    optimizer = torch.optim.Adam(sim.parameters(), lr=0.05)
    losses = []
    for _ in range(30):
        sim.reset()
        loss = ((sim(x) - target) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_a_simulator_copies_and_pickles_with_its_state(backend):
    """deepcopy and torch.save (as EMA or checkpointing code does) keep the backend and state."""
    import copy
    import io

    graph = hub.Graph.chain(hub.Input(shape=(3,)), hub.Affine(weight=np.eye(3, dtype=np.float32)),
                            hub.LIF(beta=0.5, threshold=0.75))
    x = torch.tensor(np.random.default_rng(0).uniform(0, 1, (8, 2, 3)), dtype=torch.float32)
    sim = hub.Simulator(graph, backend=backend)
    sim(x[:4])
    buffer = io.BytesIO()
    torch.save(sim, buffer)
    buffer.seek(0)
    copies = [copy.deepcopy(sim), torch.load(buffer, weights_only=False)]
    want = sim(x[4:])
    for other in copies:
        assert other.backend == backend
        assert torch.equal(other(x[4:]), want)



def test_running_node_by_node_leaves_each_nodes_last_step_as_its_value():
    """Sequences let go while later nodes run free memory that later sequences reuse: each node's
    last value is still its own (a chain of layers of different sizes, several calls)."""
    rng = np.random.default_rng(0)

    def floats(*shape):  # not dyadic: layers over all steps then round as they may
        return rng.normal(0, 0.6, shape).astype(np.float32)

    graph = hub.Graph.chain(
        hub.Input(shape=(7,)), hub.Affine(weight=floats(9, 7), bias=floats(9)),
        hub.LIF(beta=0.8, threshold=0.4), hub.Linear(weight=floats(6, 9)),
        hub.LIF(beta=0.7, threshold=0.3), hub.Affine(weight=floats(5, 6), bias=floats(5)),
        hub.LIF(beta=0.75, threshold=0.25))
    x = torch.tensor(np.abs(floats(13, 3, 7)))
    for _ in range(3):
        sims = [hub.Simulator(graph), hub.Simulator(graph, backend="torch")]
        with torch.no_grad():
            for sim in sims:
                sim(x)
        got, want = (sim.values for sim in sims)
        assert got.keys() == want.keys()
        for name in want:
            assert got[name].shape == want[name].shape and torch.equal(got[name], want[name])
