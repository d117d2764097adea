"""What slayer's blocks hold, declared per node type and field
(``plugins/lava/slayer_accepts.py``): listed by ``hub plugins --accepts slayer`` (without
lava-dl installed) and refused by the legalisation pass naming node and field, before the
exporter (which runs in the Lava environment, ``tests/test_lava.py``) is reached."""

from __future__ import annotations

import numpy as np
import pytest

import hub
from hub import legalise
from hub.cli import main
from hub_plugins.lava.slayer_accepts import ACCEPTS

CUBA = hub.LoihiCUBA(i_decay=1024, v_decay=256, threshold=80)
ALIF = hub.ALIF(alpha=0.5, beta=0.75, current_gain=64.0, threshold=640.0, threshold_step=64.0,
                refractory_scale=2.0, comparison=">=", reset="none", arithmetic="fixed")
SD = hub.SigmaDelta(threshold=0.5)
DELTA = hub.Delta(threshold=0.25)
RF = hub.Resonator(sin_decay=1024 / 4096, cos_decay=2048 / 4096, gain=64.0, threshold=640.0,
                   arithmetic="fixed")
RF_IZ = RF.replace(spike_rule="imag", reset="imag", imag_reset=639.0)
ADRF = RF.replace(threshold_step=64.0, refractory_scale=2.0)

#: One node breaking each rule of the declaration, and the field the refusal names.
VIOLATIONS = [
    (CUBA.replace(refractory=2), "refractory"),
    (CUBA.replace(spike_mode="graded"), "spike_mode"),
    (CUBA.replace(threshold=np.int64([80, 96])), "threshold"),
    (CUBA.replace(bias=np.int64(2), bias_exp=3), "bias_exp"),
    (ALIF.replace(arithmetic="float"), "arithmetic"),
    (ALIF.replace(comparison=">"), "comparison"),
    (ALIF.replace(reset="zero"), "reset"),
    (ALIF.replace(current_order="previous"), "current_order"),
    (ALIF.replace(gain=2.0), "gain"),
    (ALIF.replace(current_gain=32.0), "current_gain"),
    (ALIF.replace(v_leak=64.0), "v_leak"),
    (ALIF.replace(v_init=64.0), "v_init"),
    (ALIF.replace(refractory_scale=1.0), "refractory_scale"),
    (ALIF.replace(threshold=np.float32([640, 704])), "threshold"),
    (ALIF.replace(threshold=100.0), "threshold"),
    (ALIF.replace(threshold_step=np.float32([64, 128])), "threshold_step"),
    (ALIF.replace(threshold_step=10.0), "threshold_step"),
    (SD.replace(arithmetic="fixed", threshold=3.0), "arithmetic"),
    (hub.Sigma(arithmetic="fixed"), "arithmetic"),
    (SD.replace(cum_error="on"), "cum_error"),
    (SD.replace(resolution=1 / 64), "resolution"),
    (SD.replace(threshold=np.float32([0.5, 1.0])), "threshold"),
    (DELTA.replace(threshold=0.3), "threshold"),
    (RF.replace(arithmetic="float", threshold=1.0, gain=1.0), "arithmetic"),
    (RF.replace(spike_rule="imag"), "reset"),
    (RF.replace(reset="imag"), "spike_rule"),
    (RF_IZ.replace(threshold_step=64.0, refractory_scale=2.0), "spike_rule"),
    (RF.replace(comparison=">"), "comparison"),
    (RF.replace(gain=128.0), "gain"),
    (RF.replace(threshold=np.float32([640, 704])), "threshold"),
    (RF.replace(threshold=100.0), "threshold"),
    (ADRF.replace(threshold_step=np.float32([64, 128])), "threshold_step"),
    (ADRF.replace(threshold_step=10.0), "threshold_step"),
    (RF_IZ.replace(imag_reset=0.0), "imag_reset"),
    (ADRF.replace(refractory_scale=1.0), "refractory_scale"),
    (RF.replace(sin_decay=0.0), "sin_decay"),
]


def _chain(node: hub.Node) -> hub.Graph:
    if isinstance(node, hub.Resonator):  # two synapses (real, imaginary) per neuron
        return hub.Graph.chain(("input", hub.Input(shape=(4,))),
                               ("fc", hub.Linear(weight=2 * np.eye(4, dtype=np.float32))),
                               ("n", node))
    return hub.Graph.chain(("input", hub.Input(shape=(2,))),
                           ("fc", hub.Linear(weight=np.float32([[2, 4], [6, -2]]))), ("n", node))


def test_hub_plugins_lists_the_field_rules_without_lava(capsys):
    assert main(["plugins", "--accepts", "slayer"]) == 0
    text = capsys.readouterr().out
    for line in ("LoihiCUBA:", "refractory: 0  (slayer's CUBA neuron has no refractory period)",
                 "ALIF:", "current_gain: 64", "SigmaDelta:", "cum_error: 'off'",
                 "Resonator:", "comparison: '>='", "adrf_iz", "note: checked by the exporter"):
        assert line in text, line


def test_every_rule_is_broken_by_one_case_here_and_met_by_a_plain_node():
    broken = {(n.type, f) for n, f in VIOLATIONS}
    declared = {(kind, r.field) for kind in ("LoihiCUBA", "ALIF", "SigmaDelta", "Sigma",
                                             "Resonator") for r in ACCEPTS.rules[kind]}
    assert declared - broken == set()
    for node in (CUBA, ALIF, SD, DELTA, hub.Sigma(), RF, RF_IZ, ADRF):
        assert not ACCEPTS.violations(node), node


@pytest.mark.parametrize("node,field", VIOLATIONS, ids=[f"{n.type}.{f}" for n, f in VIOLATIONS])
def test_the_legalisation_pass_refuses_naming_node_and_field(node, field):
    with pytest.raises(hub.UnsupportedError) as e:
        legalise.legalise(_chain(node), hub.formats()["slayer"].accepts, target="slayer")
    assert (e.value.node, e.value.field) == ("n", field), str(e.value)
    why = next(r.why for r in ACCEPTS.violations(node) if r.field == field)
    assert why in e.value.message and "is not accepted" in e.value.message


@pytest.mark.parametrize("family, label", [("cuba", "CUBA"), ("alif", "ALIF"),
                                           ("sigma_delta", "sigma-delta"), ("rf_iz", "rf_iz")])
def test_a_neuron_of_another_family_is_refused_naming_the_field(family, label):
    from hub_plugins.lava.slayer_common import expect_neuron

    def neuron_from(module):
        return type("Neuron", (), {"__module__": module})()

    expect_neuron(neuron_from(f"lava.lib.dl.slayer.neuron.{family}"), family, label)
    other = neuron_from("lava.lib.dl.slayer.neuron.adrf")
    with pytest.raises(hub.UnsupportedError, match=f"is not slayer's {label} neuron") as caught:
        expect_neuron(other, family, label)
    assert caught.value.field == "neuron"
    with pytest.raises(hub.UnsupportedError, match="is not slayer's"):
        expect_neuron(type("Dynamics", (), {"__module__": f"neuron.{family}"})(), family, label)
