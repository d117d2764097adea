"""The torch.nn pooling mapping the snnTorch, Norse and SpikingJelly plugins share."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import hub
from hub_plugins.torchnn.layers import EXPORTED, export_layer, import_module, import_pool, pair

from .conftest import EXAMPLES, dyadic, single


def test_pools_map_to_their_canonical_nodes_and_compute_the_same():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6) % 7
    for module, kind in [(nn.AvgPool2d(2), hub.AvgPool2d),
                         (nn.AvgPool2d(3, stride=1, padding=1), hub.AvgPool2d),
                         (nn.AvgPool2d(2, divisor_override=1), hub.SumPool2d),
                         (nn.MaxPool2d((2, 3), stride=(1, 2), padding=1), hub.MaxPool2d)]:
        node = import_pool(module)
        assert type(node) is kind
        graph = hub.Graph.chain(("input", hub.Input(shape=(3, 6, 6))), ("pool", node))
        got = hub.simulate(graph, x.unsqueeze(0))[0]
        assert torch.allclose(got, module(x)), module


@pytest.mark.parametrize("module, field", [
    (nn.AvgPool2d(2, ceil_mode=True), "ceil_mode"),
    (nn.MaxPool2d(2, dilation=2), "dilation"),
    (nn.MaxPool2d(2, return_indices=True), "return_indices"),
    (nn.AvgPool2d(2, divisor_override=3), "divisor_override"),
    (nn.AvgPool2d(3, padding=1, count_include_pad=False), "count_include_pad"),
])
def test_what_the_canonical_pools_cannot_express_is_refused_by_field(module, field):
    with pytest.raises(hub.UnsupportedError) as e:
        import_pool(module)
    assert e.value.field == field


def test_count_include_pad_without_padding_changes_nothing():
    assert type(import_pool(nn.AvgPool2d(2, count_include_pad=False))) is hub.AvgPool2d


def test_pair():
    assert pair(3) == (3, 3) and pair((1, 2)) == (1, 2) and pair([4, 5]) == (4, 5)


@pytest.mark.parametrize("name", sorted(EXPORTED - {"Input", "Output", "Add"}))
def test_every_exported_layer_computes_what_the_simulator_does_and_imports_back(name):
    node, shape = EXAMPLES[name]
    graph = single(node, shape)
    x = torch.as_tensor(dyadic(3, 2, *shape))
    want = hub.simulate(graph, x)
    module = export_layer(node, shape)
    inputs = (x, -x) if node.operands else (x,)  # single() feeds an operand node x and -x
    got = torch.stack([module(*(v[t] for v in inputs)) for t in range(x.shape[0])])
    assert torch.equal(got, want)
    assert import_module(module) == node
