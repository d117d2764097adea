"""The canonical graph: structure, shapes, recurrence, subgraphs, serialisation."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import hub

from hub.limits import configure

from .conftest import EXAMPLES, dyadic, single


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_node_type_infers_its_output_shape(name):
    node, shape = EXAMPLES[name]
    plan = single(node, shape).plan()
    expected = {
        "Affine": (4,), "Linear": (4,), "Conv1d": (4, 5), "Conv2d": (4, 6, 4),
        "SumPool2d": (2, 2, 2), "AvgPool2d": (2, 5, 5), "MaxPool2d": (2, 3, 3),
        "Flatten": (2, 12), "AdaptiveAvgPool2d": (2, 2, 3), "Vote": (3,), "Concat": (2, 6),
        "Reshape": (3, 2), "Resonator": (3,), "ConvTranspose2d": (4, 6, 7),
    }.get(name, shape)
    last = "input" if name == "Input" else "node"
    assert plan.output_shapes[last] == expected


def test_shape_inference_agrees_with_what_the_simulator_computes():
    for name, (node, shape) in EXAMPLES.items():
        graph = single(node, shape)
        y = hub.simulate(graph, torch.zeros(2, 3, *shape))
        assert tuple(y.shape[2:]) == graph.plan().output_shapes[graph.outputs[0]], name


def test_chain_names_nodes_and_adds_an_output():
    graph = hub.Graph.chain(hub.Input(shape=(2,)), hub.Linear(weight=np.eye(2)), hub.LIF(beta=0.5))
    assert list(graph.nodes) == ["input0", "linear1", "lif2", "output"]
    assert graph.edges == [("input0", "linear1"), ("linear1", "lif2"), ("lif2", "output")]


def test_a_shape_mismatch_names_the_node():
    graph = hub.Graph.chain(("x", hub.Input(shape=(3,))),
                            ("fc", hub.Linear(weight=np.ones((2, 4)))))
    with pytest.raises(hub.ShapeError, match=r"input shape \[3\] does not match") as e:
        graph.validate()
    assert e.value.node == "fc"


def test_per_neuron_parameters_must_fit_the_layer():
    graph = hub.Graph.chain(hub.Input(shape=(3,)), ("lif", hub.LIF(beta=[0.5, 0.5])))
    with pytest.raises(hub.ShapeError) as e:
        graph.validate()
    assert (e.value.node, e.value.field) == ("lif", "beta")


def test_edges_must_name_existing_nodes():
    graph = hub.Graph({"in": hub.Input(shape=(1,)), "out": hub.Output()}, [("in", "ouT")])
    with pytest.raises(hub.GraphError, match="no such node; nodes are in, out"):
        graph.validate()


def test_inputs_and_outputs_are_required():
    with pytest.raises(hub.GraphError, match="no Input"):
        hub.Graph({"out": hub.Output()}).validate()
    with pytest.raises(hub.GraphError, match="no Output"):
        hub.Graph({"in": hub.Input(shape=(1,))}).validate()


def test_inputs_of_different_shapes_cannot_meet():
    graph = hub.Graph({"a": hub.Input(shape=(2,)), "b": hub.Input(shape=(3,)), "sum": hub.Add(),
                       "out": hub.Output()}, [("a", "sum"), ("b", "sum"), ("sum", "out")])
    with pytest.raises(hub.ShapeError, match="inputs of different shapes") as e:
        graph.validate()
    assert e.value.node == "sum"


def recurrent(rec_node: hub.Node) -> hub.Graph:
    return hub.Graph(
        {"in": hub.Input(shape=(2,)), "lif": hub.LIF(beta=0.5), "rec": rec_node,
         "out": hub.Output()},
        [("in", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "out")])


def test_the_edge_closing_a_cycle_is_recurrent():
    plan = recurrent(hub.Linear(weight=np.eye(2))).plan()
    assert plan.recurrent["lif"] == ("rec",)
    assert plan.forward["lif"] == ("in",)
    assert plan.order.index("lif") < plan.order.index("rec")


def test_a_cycle_without_state_is_refused():
    graph = hub.Graph({"in": hub.Input(shape=(2,)), "a": hub.Linear(weight=np.eye(2)),
                       "b": hub.Scale(scale=0.5), "out": hub.Output()},
                      [("in", "a"), ("a", "b"), ("b", "a"), ("b", "out")])
    with pytest.raises(hub.GraphError, match="cycle a -> b -> a has no neuron or delay"):
        graph.validate()
    # a delay of at least one step breaks the algebraic loop
    graph.add("d", hub.Delay(delay=1))
    graph.edges.remove(("b", "a"))
    graph.connect("b", "d").connect("d", "a")
    graph.validate()


def subgraph_model() -> hub.Graph:
    block = hub.Graph(
        {"x": hub.Input(shape=(2,)), "lif": hub.LIF(beta=0.5, threshold=0.5),
         "w": hub.Linear(weight=np.array([[0.0, 0.25], [0.25, 0.0]])), "y": hub.Output()},
        [("x", "lif"), ("lif", "w"), ("w", "lif"), ("lif", "y")])
    return hub.Graph(
        {"in": hub.Input(shape=(3,)), "fc": hub.Linear(weight=dyadic(2, 3)), "block": block,
         "out": hub.Output()},
        [("in", "fc"), ("fc", "block"), ("block", "out")])


def test_subgraphs_flatten_to_dotted_names_and_simulate_the_same():
    graph = subgraph_model()
    flat = graph.flat()
    assert {"block.x", "block.lif", "block.w", "block.y"} <= set(flat.nodes)
    assert ("fc", "block.x") in flat.edges and ("block.y", "out") in flat.edges
    assert [n for n, _ in graph.walk()] == ["in", "fc", "block.x", "block.lif", "block.w",
                                            "block.y", "out"]
    x = torch.tensor(dyadic(12, 2, 3))
    assert torch.equal(hub.simulate(graph, x), hub.simulate(flat, x))


def test_subgraph_ports_can_be_named():
    graph = subgraph_model()
    graph.edges = [("in", "fc"), ("fc", "block.x"), ("block.y", "out")]
    graph.validate()
    graph.edges = [("in", "fc"), ("fc", "block.nope"), ("block", "out")]
    with pytest.raises(hub.GraphError, match="subgraph 'block' has no node 'nope'"):
        graph.validate()


def test_as_chain_reads_a_line_from_input_to_output_through_subgraphs():
    graph = subgraph_model()
    chain = graph.as_chain(loops=hub.Linear)
    assert [n for n, _ in chain.nodes] == ["in", "fc", "block.x", "block.lif", "block.y", "out"]
    assert [n for n, _ in chain.loops.values()] == ["block.w"]
    assert list(chain.loops) == ["block.lif"]
    assert chain.nodes[1][1] is graph.nodes["fc"]
    assert hub.Graph.chain(hub.Input(shape=(2,)), hub.LIF(beta=0.5)).is_chain()


def _branch_and_merge() -> hub.Graph:
    return hub.Graph(
        {"in": hub.Input(shape=(2,)), "a": hub.Scale(scale=0.5), "b": hub.Scale(scale=2.0),
         "sum": hub.Add(), "out": hub.Output()},
        [("in", "a"), ("in", "b"), ("a", "sum"), ("b", "sum"), ("sum", "out")])


@pytest.mark.parametrize("case, node, message", [
    ("branch", "in", r"this node feeds 2 nodes \(a, b\): a branch"),
    ("merge", "sum", r"this node has 2 inputs \(a, b\): a merge"),
    ("recurrence", "lif", r"feeds 'rec' back|has 2 inputs"),
    ("two inputs", None, r"this graph has 2 inputs \(in, in2\) and 1 outputs"),
    ("off the line", "stray", "off the line from 'in' to 'out'"),
    ("dead end", "a", "feeds nothing"),
])
def test_as_chain_names_the_node_where_a_graph_is_not_a_chain(case, node, message):
    if case in ("branch", "merge"):
        graph = _branch_and_merge()
        if case == "merge":  # b fed from nowhere: no branch, only the merge
            graph.edges.remove(("in", "b"))
    elif case == "recurrence":  # a recurrent weight is a loop only where loops are allowed
        graph = recurrent(hub.Linear(weight=np.eye(2)))
        assert [n for n, _ in graph.as_chain(loops=(hub.Linear,)).nodes] == ["in", "lif", "out"]
    elif case == "two inputs":
        graph = hub.Graph.chain(("in", hub.Input(shape=(2,))), ("out", hub.Output()))
        graph.add("in2", hub.Input(shape=(2,))).connect("in2", "out")
    elif case == "off the line":
        graph = hub.Graph.chain(("in", hub.Input(shape=(2,))), ("out", hub.Output()))
        graph.add("stray", hub.Scale(scale=0.5))
    else:
        graph = hub.Graph({"in": hub.Input(shape=(2,)), "a": hub.Scale(scale=0.5),
                           "out": hub.Output()}, [("in", "a")])
    with pytest.raises(hub.UnsupportedError, match="mine needs a chain of layers") as e:
        graph.as_chain(what="mine")
    assert e.value.node == node
    assert re.search(message, str(e.value))
    assert not graph.is_chain()


def test_graphs_round_trip_through_plain_data_with_subgraphs():
    graph = subgraph_model()
    graph.metadata["dt"] = 1e-3
    again = hub.Graph.from_dict(graph.to_dict())
    assert again == graph
    assert again.metadata == {"dt": 1e-3}
    assert isinstance(again.nodes["block"], hub.Graph)


def test_a_copy_is_the_round_trip_through_plain_data_sharing_only_immutable_nodes():
    graph = subgraph_model()
    graph.metadata["dt"] = 1e-3
    block = graph.nodes["block"]
    block.metadata["origin"] = "a block"
    graph.add("again", block)  # one subgraph in two places: two copies, as from_dict gives
    graph.connect("fc", "again")
    before = graph.to_dict()
    copied = graph.copy()
    assert copied == graph == hub.Graph.from_dict(graph.to_dict())
    assert copied.metadata == {"dt": 1e-3} and copied.nodes["block"].metadata == {
        "origin": "a block"}
    assert copied.nodes["fc"] is graph.nodes["fc"]  # frozen, with read-only arrays
    assert copied.nodes["block"].nodes["lif"] is block.nodes["lif"]
    inner = (copied.nodes["block"], copied.nodes["again"])
    assert inner[0] is not inner[1] and all(g is not block for g in inner)
    # what can change is the copy's own
    for changed in (copied, inner[0], inner[1]):
        changed.add("extra", hub.Output())
        changed.connect("extra", "extra")
        changed.metadata["note"] = 1
    assert graph.to_dict() == before and "note" not in block.metadata


def test_a_copy_of_a_deep_or_self_containing_graph_needs_no_recursion_and_keeps_the_limits():
    inner = hub.Graph.chain(hub.Input(shape=(1,)), hub.Output())
    for _ in range(1500):
        inner = hub.Graph({"x": hub.Input(shape=(1,)), "g": inner, "y": hub.Output()},
                          [("x", "g"), ("g", "y")])
    with pytest.raises(hub.GraphError, match="nest more than 64 deep"):
        inner.copy()
    try:
        configure(max_depth=2000)
        assert inner.copy() == inner
    finally:
        configure()
    looped = hub.Graph({"x": hub.Input(shape=(1,))})
    looped.add("me", looped)
    with pytest.raises(hub.GraphError, match="nest more than 64 deep"):
        looped.copy()


def test_from_dict_errors_name_the_node():
    data = subgraph_model().to_dict()
    data["nodes"]["block"]["nodes"]["lif"]["beta"] = float("nan")
    with pytest.raises(hub.ParameterError) as e:
        hub.Graph.from_dict(data)
    assert (e.value.node, e.value.field) == ("block.lif", "beta")


def test_duplicate_names_are_refused():
    graph = hub.Graph({"a": hub.Input(shape=(1,))})
    with pytest.raises(hub.GraphError, match="already exists"):
        graph.add("a", hub.Output())
