"""The node registry: every node type is one frozen dataclass that checks its fields."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import hub
from hub.node import _REGISTRY

from .conftest import EXAMPLES


def test_every_registered_node_type_has_an_example():
    """A new node type must come with an example here, so every test below covers it."""
    assert set(EXAMPLES) == set(hub.node_types())


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_node_type_round_trips_through_plain_data(name):
    node, _ = EXAMPLES[name]
    data = json.loads(json.dumps(node.to_dict()))  # plain JSON data, nothing else
    again = hub.node_from_dict(data)
    assert again == node
    assert type(again) is type(node)
    for key, value in node.params().items():
        if isinstance(value, np.ndarray):
            assert getattr(again, key).dtype == value.dtype


def test_a_large_array_round_trips_through_plain_data_as_its_bytes():
    """Beyond ``LISTED_MAX`` values an array is kept as its little-endian bytes in base64: the
    same bits (negative zero, the smallest subnormal, the extremes), a third larger than the data
    where a listed float32 takes about 20 characters; a small one stays a readable list, and the
    listed form of a large one (as older files have it) still reads."""
    from hub.node import LISTED_MAX

    tiny = np.finfo(np.float32).smallest_subnormal
    weight = np.random.default_rng(3).standard_normal((12, 20)).astype(np.float32)
    weight.flat[:6] = [-0.0, tiny, -tiny, np.finfo(np.float32).max, np.finfo(np.float32).min,
                       1 + np.finfo(np.float32).eps]
    node = hub.Affine(weight=weight, bias=np.arange(12, dtype=np.float32) / 3)
    assert node.bias.size <= LISTED_MAX < weight.size
    data = json.loads(json.dumps(node.to_dict()))
    assert data["bias"]["data"] == node.bias.tolist() and "base64" not in data["bias"]
    assert "data" not in data["weight"] and isinstance(data["weight"]["base64"], str)
    assert len(json.dumps(data["weight"])) < 4 / 3 * weight.nbytes + 100
    listed = {**data, "weight": {"dtype": "float32", "shape": [12, 20],
                                 "data": weight.ravel().tolist()}}
    for read in (hub.node_from_dict(data), hub.node_from_dict(listed)):
        assert read == node
        assert read.weight.dtype == np.float32 and read.weight.dtype.isnative
        assert np.array_equal(read.weight.view(np.uint32), weight.view(np.uint32))
        with pytest.raises(ValueError):
            read.weight[0, 0] = 1
    delays = hub.Delay(delay=np.arange(100) % 7)  # an integer field
    assert "base64" in delays.to_dict()["delay"]
    assert hub.node_from_dict(json.loads(json.dumps(delays.to_dict()))) == delays


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_nodes_are_frozen_and_their_arrays_read_only(name):
    node, _ = EXAMPLES[name]
    for field in [f.name for f in dataclasses.fields(node)] + ["anything_else"]:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(node, field, 1)
    for value in node.params().values():
        if isinstance(value, np.ndarray):
            with pytest.raises(ValueError):
                value[...] = 0


def test_parameters_are_copied_so_the_source_cannot_change_them():
    weight = np.ones((2, 2), dtype=np.float32)
    node = hub.Linear(weight=weight)
    weight[0, 0] = 5
    assert node.weight[0, 0] == 1


def test_equality_compares_values_dtypes_and_shapes():
    assert hub.LIF(beta=0.5) == hub.LIF(beta=0.5)
    assert hub.LIF(beta=0.5) != hub.LIF(beta=0.25)
    assert hub.LIF(beta=[0.5, 0.5]) != hub.LIF(beta=0.5)
    assert hub.Delay(delay=1) != hub.Scale(scale=1)


def test_fields_are_keyword_only():
    with pytest.raises(TypeError):
        hub.Linear(np.ones((2, 2)))  # type: ignore[misc]


def test_a_new_node_type_is_one_class():
    try:
        class Clamp(hub.Node):
            """Clip to [low, high]."""

            low: np.ndarray = hub.node.array(0.0)
            high: np.ndarray = hub.node.array(1.0)

            def step(self, p, x, state):
                return x.clamp(p["low"], p["high"]), state

        assert hub.node_type("Clamp") is Clamp
        node = hub.node_from_dict({"type": "Clamp", "high": 0.5})
        graph = hub.Graph.chain(hub.Input(shape=(2,)), node)
        y = hub.simulate(graph, np.array([[[-1.0, 2.0]]], dtype=np.float32))
        assert y.tolist() == [[[0.0, 0.5]]]
    finally:
        _REGISTRY.pop("Clamp", None)


def test_the_registry_refuses_to_overwrite_a_type_silently():
    with pytest.raises(ValueError, match="already registered"):
        type("LIF", (hub.Node,), {"__module__": "elsewhere"})
    assert hub.node_type("LIF") is hub.LIF


def test_unknown_type_names_what_exists():
    with pytest.raises(hub.UnknownNodeError,
                       match="known types: ALIF, AdExLIF, AdaptiveAvgPool2d, Add, Affine") as e:
        hub.node_from_dict({"type": "Lif"})
    assert e.value.field == "type"


@pytest.mark.parametrize("value, message", [
    (np.nan, "NaN in 1 of 1 values"),
    ([0.5, np.inf, 0.5], "infinite value in 1 of 3 values"),
    ("fast", "expected numbers"),
    ([[1, 2], [3]], "not an array of numbers"),
])
def test_bad_array_values_name_the_field(value, message):
    with pytest.raises(hub.ParameterError, match=message) as e:
        hub.LIF(beta=value)
    assert e.value.field == "beta"
    assert str(e.value).startswith("field 'beta': ")


def test_choices_and_integers_are_checked():
    with pytest.raises(hub.ParameterError, match="must be one of '>', '>='") as e:
        hub.LIF(beta=0.5, comparison="=>")
    assert e.value.field == "comparison"
    with pytest.raises(hub.ParameterError, match="at least 0"):
        hub.LIF(beta=0.5, refractory=-1)
    with pytest.raises(hub.ParameterError, match="expected an integer"):
        hub.LIF(beta=0.5, delay=1.5)
    with pytest.raises(hub.ParameterError, match="expected 2 integers"):
        hub.Conv2d(weight=np.ones((1, 1, 1, 1)), stride=(1, 1, 1))


def test_unknown_and_missing_fields_are_named():
    with pytest.raises(hub.ParameterError, match="no field") as e:
        hub.node_from_dict({"type": "LIF", "beta": 0.5, "tau": 2})
    assert e.value.field == "tau"
    with pytest.raises(hub.ParameterError, match="beta"):
        hub.node_from_dict({"type": "LIF"})


def test_integer_arrays_refuse_fractions():
    with pytest.raises(hub.ParameterError, match="fractional"):
        hub.Delay(delay=[1.5])
    assert hub.Delay(delay=[2.0]).delay.dtype == np.int64
