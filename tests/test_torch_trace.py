"""The tracer that reads a live torch model's forward (hub_plugins.torchnn.trace, torch_ops):
each construct a forward may use, imported and proved against the model's own run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hub
from hub_plugins.torchnn import trace as torch_trace

snn = pytest.importorskip("snntorch")


def fw():
    from hub_plugins.snntorch import framework

    return framework()


def imported(model, shape):
    """The graph, after the import proved it on the probe and on a second input."""
    traced = torch_trace.import_model(model, fw(), input_shape=shape)
    fresh = torch_trace.trace(model.eval(), fw(), torch_trace.probe(shape, seed=5),
                              traced.convention)
    torch_trace.prove(fresh)
    return traced


class Loop(nn.Module):
    """Iterates over the time axis of its input, with functional dropout and explicit state."""

    def __init__(self, training_dropout=False):
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.lif = snn.Leaky(beta=0.5)
        self.always = training_dropout

    def forward(self, x):
        mem = self.lif.init_leaky()
        out = []
        for xt in x:
            cur = F.dropout(self.fc(xt), 0.5, self.training or self.always)
            spk, mem = self.lif(cur, mem)
            out.append(spk)
        return torch.stack(out)


def test_iterating_over_the_time_axis_is_a_sequence_forward():
    traced = imported(Loop(), (3,))
    assert traced.convention == "sequence"
    assert [n.type for n in traced.graph.nodes.values()] == ["Input", "Affine", "LIF", "Output"]


def test_dropout_that_stays_on_in_inference_is_refused():
    with pytest.raises(hub.UnsupportedError, match="dropout in training mode"):
        hub.load(Loop(training_dropout=True), input_shape=(3,))


class Blocks(nn.Module):
    """A residual add (in place), a SEW-style product with 1 - x, a concatenation, a constant
    offset and scale, and a view that keeps each sample's shape, on hidden-state neurons called
    once per step."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.n1 = snn.Leaky(beta=0.5, init_hidden=True)
        self.n2 = snn.Leaky(beta=0.25, init_hidden=True)
        self.out = nn.Linear(8, 2)

    def forward(self, x):
        s1 = self.n1(self.a(x))
        s2 = self.n2(self.b(x))
        h = self.a(s1)
        h += s2  # in place, after the first value was recorded
        gated = (1.0 - s1) * s2
        joined = torch.cat([h, gated * 2.0 + 0.5], dim=1)
        return self.out(joined.view(x.shape[0], -1))


def test_residuals_products_concatenation_and_constants():
    traced = imported(Blocks(), (4,))
    types = [n.type for n in traced.graph.nodes.values()]
    for kind in ("Add", "Mul", "Concat", "Scale", "Bias"):
        assert kind in types, kind
    # the layer applied twice is two nodes, each with its own input
    assert {"a", "a_1"} <= set(traced.graph.nodes)


def test_an_operation_with_no_canonical_counterpart_names_function_and_module():
    class Sorting(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Sequential(nn.Linear(3, 3), snn.Leaky(beta=0.5, init_hidden=True))

        def forward(self, x):
            return torch.sort(self.inner(x), dim=1).values

    with pytest.raises(hub.UnsupportedError, match="'sort' has no canonical counterpart"):
        hub.load(Sorting(), input_shape=(3,))


def test_the_model_is_not_changed_by_importing_it():
    model = nn.Sequential(nn.Linear(3, 4), snn.Leaky(beta=0.5, init_hidden=True))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    mem = model[1].mem.clone()
    hub.load(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(model[1].mem, mem) and model.training


def test_values_from_different_steps_meeting_are_refused():
    class Mixer(nn.Module):
        def __init__(self):
            super().__init__()
            self.lif = snn.Leaky(beta=0.5)

        def forward(self, x):
            mem = self.lif.init_leaky()
            first, mem = self.lif(x[0], mem)
            second, mem = self.lif(x[1], mem)
            return torch.stack([first + second, second])

    with pytest.raises(hub.UnsupportedError):
        hub.load(Mixer(), input_shape=(3,))


def test_the_same_operation_with_different_constants_is_two_nodes():
    """Work on a static input repeated in a loop is one node per distinct operation."""

    class Offsets(nn.Module):
        def __init__(self):
            super().__init__()
            self.lif = snn.Leaky(beta=0.5)

        def forward(self, x):
            mem = self.lif.init_leaky()
            out = []
            for _ in range(4):
                spk, mem = self.lif((x + 1.0) - (x + 0.25) * 2.0, mem)
                out.append(spk)
            return torch.stack(out)

    traced = imported(Offsets(), (3,))
    assert sorted(n.bias.item() for n in traced.graph.nodes.values() if n.type == "Bias") == [
        0.25, 1.0]
