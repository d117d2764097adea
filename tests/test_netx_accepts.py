"""What netx writes, declared per node type and field (``plugins/netx/accepts.py``): listed by
``hub plugins --accepts netx``, refused by the legalisation pass naming node and field, and
rewritten by its exact identities where one exists."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hub
from hub import legalise
from hub.cli import main
from hub_plugins.netx.accepts import ACCEPTS

OK = hub.LoihiCUBA(i_decay=0, v_decay=0, threshold=1)
RF = hub.Resonator(sin_decay=1024 / 4096, cos_decay=2048 / 4096, gain=64.0, threshold=640.0,
                   arithmetic="fixed")
RF_IZ = RF.replace(spike_rule="imag", reset="imag", imag_reset=639.0)
SD = hub.SigmaDelta(threshold=3.0, arithmetic="fixed")

#: One node breaking each rule of the declaration, and the field the refusal names.
VIOLATIONS = [
    (OK.replace(i_decay=np.int64([0, 1])), "i_decay"),
    (OK.replace(v_decay=np.int64([0, 5])), "v_decay"),
    (OK.replace(threshold=np.int64([1, 2])), "threshold"),
    (OK.replace(refractory=2), "refractory"),
    (OK.replace(delay=63), "delay"),
    (OK.replace(spike_mode="graded"), "spike_mode"),
    (OK.replace(bias=np.int64(1), bias_exp=3), "bias_exp"),
    (hub.IF(threshold=2.0, reset="subtract"), "reset"),
    (hub.IF(threshold=2.0, v_reset=-1.0), "v_reset"),
    (hub.IF(threshold=2.0, v_init=0.5), "v_init"),
    (hub.IF(threshold=2.0, spike_mode="graded"), "spike_mode"),
    (hub.IF(threshold=2.0, amplitude=2.0), "amplitude"),
    (hub.IF(threshold=2.0, refractory=2), "refractory"),
    (hub.IF(threshold=2.0, delay=63), "delay"),
    (hub.CubaLIF(alpha=0.5, beta=0.5, current_order="previous"), "current_order"),
    (SD.replace(arithmetic="float"), "arithmetic"),
    (hub.Sigma(), "arithmetic"),
    (SD.replace(cum_error="on"), "cum_error"),
    (SD.replace(spike_exp=5), "spike_exp"),
    (SD.replace(state_exp=5), "state_exp"),
    (SD.replace(threshold=np.float32([3, 4])), "threshold"),
    (SD.replace(activation="identity"), "activation"),
    (RF.replace(arithmetic="float", threshold=1.0, gain=1.0), "arithmetic"),
    (RF.replace(threshold_step=64.0), "threshold_step"),
    (RF.replace(refractory_scale=2.0), "refractory_scale"),
    (RF.replace(spike_rule="imag"), "reset"),
    (RF.replace(comparison=">"), "comparison"),
    (RF.replace(threshold=np.float32([640, 704])), "threshold"),
    (RF.replace(gain=128.0), "gain"),
    (RF.replace(threshold=100.0), "threshold"),
    (RF_IZ.replace(imag_reset=0.0), "imag_reset"),
    (RF.replace(sin_decay=0.0), "sin_decay"),
    (RF.replace(cos_decay=-0.25), "cos_decay"),
    (RF.replace(input_rounding="toward_zero"), "input_rounding"),
]


def _chain(node: hub.Node) -> hub.Graph:
    if isinstance(node, hub.Resonator):  # two synapses (real, imaginary) per neuron
        return hub.Graph.chain(("input", hub.Input(shape=(4,))),
                               ("fc", hub.Linear(weight=np.eye(4, dtype=np.float32))),
                               ("n", node))
    return hub.Graph.chain(("input", hub.Input(shape=(2,))),
                           ("fc", hub.Linear(weight=np.float32([[1, 2], [3, -1]]))), ("n", node))


def test_hub_plugins_lists_the_field_rules(capsys):
    assert main(["plugins", "--accepts", "netx"]) == 0
    text = capsys.readouterr().out
    for line in ("LoihiCUBA:", "refractory: 0  (netx's LIF has no refractory period)",
                 "bias_exp: 6 where the bias is nonzero", "IF:", "reset_timing: 'same'",
                 "SigmaDelta:", "activation: 'relu'", "cum_error: 'off'", "Resonator:",
                 "comparison: '>='", "threshold: a non-negative multiple of 64",
                 "note: checked by the exporter"):
        assert line in text, line


def test_every_rule_is_broken_by_one_case_here_and_met_by_a_plain_node():
    broken = {(n.type, f) for n, f in VIOLATIONS}
    declared = {(kind, r.field) for kind in ("LoihiCUBA", "IF", "SigmaDelta", "Resonator")
                for r in ACCEPTS.rules[kind]}
    rewritten = {("IF", "gain"), ("IF", "reset_timing")}  # exact rewrites, tested below
    assert declared - broken - rewritten == set()
    for node in (OK, SD, RF, RF_IZ, hub.IF(threshold=2.0), hub.LIF(beta=0.5)):
        assert not ACCEPTS.violations(node), node


@pytest.mark.parametrize("node,field", VIOLATIONS, ids=[f"{n.type}.{f}" for n, f in VIOLATIONS])
def test_the_legalisation_pass_refuses_naming_node_and_field(node, field):
    with pytest.raises(hub.UnsupportedError) as e:
        legalise.legalise(_chain(node), ACCEPTS, target="netx")
    assert (e.value.node, e.value.field) == ("n", field), str(e.value)
    why = next(r.why for r in ACCEPTS.violations(node) if r.field == field)
    assert why in e.value.message and "is not accepted" in e.value.message


@pytest.mark.parametrize("node,field", [v for v in VIOLATIONS if v[0].type in ("LoihiCUBA", "IF")],
                         ids=lambda v: getattr(v, "type", v))
def test_saving_refuses_before_the_exporter(tmp_path, node, field):
    with pytest.raises(hub.UnsupportedError) as e:
        hub.save(_chain(node), to="netx", out=tmp_path / "n.net")
    assert (e.value.node, e.value.field) == ("n", field), str(e.value)
    assert "no exact or float-equivalent rewrite" in e.value.message
    assert not (tmp_path / "n.net").exists()


def test_a_leak_with_no_layer_to_take_it_is_refused():
    graph = _chain(hub.LIF(beta=0.5, v_leak=0.5))
    with pytest.raises(hub.UnsupportedError) as e:
        legalise.legalise(graph, ACCEPTS, rewrites="exact")
    assert (e.value.node, e.value.field) == ("n", "v_leak")


def _integer_inputs(seed: int, *shape: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.as_tensor(rng.integers(0, 3, shape).astype(np.float32))


@pytest.mark.parametrize("node,rewrite", [
    (hub.IF(threshold=2.0, reset_timing="next"), "zero-reset-same-step"),
    (hub.IF(threshold=4.0, gain=2.0), "gain-into-threshold"),
])
def test_an_exact_rewrite_makes_an_if_loihi_runs(tmp_path, node, rewrite):
    """An IF that netx took only in another spelling is now rewritten exactly and written as
    Loihi's neuron: the legalised graph, and the file read back, run as the original."""
    rng = np.random.default_rng(3)
    graph = hub.Graph.chain(("input", hub.Input(shape=(6,))),
                            ("fc", hub.Linear(weight=rng.integers(-2, 4, (5, 6))
                                              .astype(np.float32))),
                            ("n", node))
    out, report = legalise.legalise(graph, ACCEPTS, target="netx")
    assert [r.name for r in report] == [rewrite] and report.exact
    x = _integer_inputs(4, 40, 3, 6)
    want = hub.simulate(graph, x)
    assert 0 < float(want.mean()) < 1
    assert torch.equal(hub.simulate(out, x), want)
    path, saved = hub.save(graph, to="netx", out=tmp_path / "if.net", report=True)
    assert [r.name for r in saved] == [rewrite]
    back = hub.load(path)
    assert torch.equal(hub.simulate(back, x), want)


def test_fixed_point_neurons_are_never_rewritten():
    """The rewrites are identities of float arithmetic: a LoihiCUBA or a fixed-point node is
    refused, never rewritten (a ulp of a threshold means nothing to integers)."""
    with pytest.raises(hub.UnsupportedError) as e:
        legalise.legalise(_chain(RF.replace(comparison=">")), ACCEPTS)
    assert e.value.field == "comparison"
    with pytest.raises(hub.UnsupportedError) as e:
        legalise.legalise(_chain(OK.replace(refractory=1)), ACCEPTS)
    assert e.value.field == "refractory"


def test_quantize_takes_a_next_step_zero_reset_as_the_same_step_one(tmp_path):
    """snnTorch's Leaky with reset_mechanism='zero' resets in the next step: quantize=True, which
    resets in the spiking step, gets it through the exact rewrite, and writes the same file."""
    rng = np.random.default_rng(5)
    weight = rng.normal(0, 1, (4, 6)).astype(np.float32)

    def graph(timing: str) -> hub.Graph:
        return hub.Graph.chain(("input", hub.Input(shape=(6,))),
                               ("fc", hub.Linear(weight=weight)),
                               ("n", hub.LIF(beta=0.75, threshold=1.0, reset_timing=timing)))

    nxt, report = hub.save(graph("next"), to="netx", out=tmp_path / "next.net", quantize=True,
                           report=True)
    same = hub.save(graph("same"), to="netx", out=tmp_path / "same.net", quantize=True)
    assert [r.name for r in report] == ["zero-reset-same-step"] and report.exact
    x = _integer_inputs(6, 30, 2, 6)
    a, b = hub.simulate(hub.load(nxt), x), hub.simulate(hub.load(same), x)
    assert 0 < float(a.mean()) < 1 and torch.equal(a, b)
