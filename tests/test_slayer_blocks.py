"""slayer's cuba readout and upsampling blocks, ``Affine``, ``Average``, ``ConvT`` and ``Unpool``,
both ways, against slayer's forward.

slayer's forward is run in the Lava environment (a subprocess of ``.venv-lava``, as
``tests/test_lava.py`` does) and compared with ``hub.simulate`` of what the hub imports, and with
slayer's forward of what the hub exports. Where ``.venv-lava`` is missing those tests skip,
saying so; the checks of the canonical nodes themselves run here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import hub

from .slayer_harness import (
    assert_passed, checkout_view, conformance_in_lava, names, run_in_lava)


@pytest.mark.parametrize("to", ["nir", "snntorch", "norse", "spikingjelly", "netx"])
def test_other_formats_refuse_a_transposed_convolution(tmp_path: Path, to: str) -> None:
    graph = hub.Graph.chain(("input", hub.Input(shape=(2, 3, 3))),
                            ("up", hub.ConvTranspose2d(weight=np.ones((2, 1, 2, 2), np.float32),
                                                       stride=(2, 2), groups=2)),
                            ("n", hub.LIF(beta=0.5, threshold=1.0)))
    out = {"nir": {"out": tmp_path / "g.nir"}, "netx": {"out": tmp_path / "g.net"}}.get(to, {})
    with pytest.raises(hub.UnsupportedError) as e:
        hub.convert(graph, to=to, **out)
    assert (e.value.node, e.value.field) == ("up", "type"), str(e.value)


def test_transposed_convolution_is_torchs() -> None:
    """Each input value adds its kernel at stride times its position: a 2x upsampling here."""
    rng = np.random.default_rng(4)
    weight = rng.integers(-3, 4, (4, 3, 3, 2)).astype(np.float32)
    node = hub.ConvTranspose2d(weight=weight, bias=np.float32([1, 0, -1, 2, 0, 1]), stride=(2, 1),
                               padding=(1, 0), output_padding=(1, 0), dilation=(1, 2), groups=2)
    x = torch.tensor(rng.integers(0, 2, (3, 2, 4, 5, 4)).astype(np.float32))
    graph = hub.Graph.chain(("input", hub.Input(shape=(4, 5, 4))), ("up", node))
    want = torch.stack([torch.nn.functional.conv_transpose2d(
        xt, torch.tensor(weight), torch.tensor(node.bias), (2, 1), (1, 0), (1, 0), 2, (1, 2))
        for xt in x])
    assert graph.plan().output_shapes["up"] == tuple(want.shape[2:]) == (6, 10, 6)
    assert torch.equal(hub.simulate(graph, x), want)
    with pytest.raises(hub.ParameterError):
        hub.ConvTranspose2d(weight=weight, stride=(2, 1), output_padding=(0, 1))


def test_other_formats_refuse_a_voltage_readout(tmp_path: Path) -> None:
    """A LoihiCUBA voltage readout is not a spiking neuron netx can write."""
    graph = hub.Graph.chain(("input", hub.Input(shape=(3,))),
                            ("fc", hub.Linear(weight=np.float32([[2, 4, -2]] * 2))),
                            ("readout", hub.LoihiCUBA(i_decay=0, v_decay=0, threshold=1 << 17,
                                                     spike_mode="voltage")))
    with pytest.raises(hub.UnsupportedError) as e:
        hub.convert(graph, to="netx", out=tmp_path / "readout.net")
    assert e.value.node == "readout" and e.value.field == "spike_mode", str(e.value)


#: Checks run in the Lava environment (:mod:`tests.slayer_harness`); argv[1]: the checkout view.
SLAYER_CHECKS = r"""
import numpy as np, torch
import hub
from lava.lib.dl import slayer
from slayer_harness import check, cuba_params as params, forward, run_checks

cuba = slayer.block.cuba


def spikes(rng, *shape):
    return torch.tensor(rng.random(shape) < 0.4, dtype=torch.float32)


def round_trip(net, x, kinds, **load):
    want = forward(net, x)
    graph = hub.load(net, source="slayer", **load)
    got = [type(n).__name__ for _, n in graph.walk()]
    assert got == kinds, got
    out = hub.simulate(graph, x)
    assert torch.equal(out, want), int((out != want).sum())
    back = hub.convert(graph, to="slayer")
    assert torch.equal(forward(back.blocks, x), want)
    assert hub.load(back) == graph
    return want


@check
def affine_voltage_readout_imports_and_exports_exactly():
    # the classifier head: Dense blocks, then an Affine whose output is its neuron's voltage
    for seed in range(4):
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        norm = slayer.neuron.norm.MeanOnlyBatchNorm if seed % 2 else None
        head = cuba.Affine(dict(params(rng), norm=norm, shared_param=seed != 2), 8, 4,
                           weight_scale=3)
        net = torch.nn.ModuleList([cuba.Dense(params(rng), 10, 12, weight_scale=3),
                                   cuba.Dense(params(rng), 12, 8, weight_scale=3), head])
        if seed == 2:  # per-neuron decays; an Affine's neuron keeps those it holds
            head.neuron.current_decay.data = torch.tensor(rng.integers(0, 4097, 4),
                                                          dtype=torch.float32)
            head.neuron.voltage_decay.data = torch.tensor(rng.integers(0, 4097, 4),
                                                          dtype=torch.float32)
        if norm is not None:
            forward(net, spikes(rng, 4, 1, 10))
            head.neuron.norm.running_mean = torch.tensor(rng.normal(0, 0.3, 4),
                                                         dtype=torch.float32)
        x = spikes(rng, 40, 2, 10)
        want = round_trip(net, x, ["Input", "Linear", "LoihiCUBA", "Delay", "Linear",
                                   "LoihiCUBA", "Delay", "Linear", "LoihiCUBA", "Scale",
                                   "Output"])
        # a voltage, not spikes: off slayer's spike values, on its grid of 1/4096
        assert not torch.equal(want, want.round()), seed
        assert torch.equal(want * 4096, (want * 4096).round())
        graph = hub.load(net)
        assert graph.nodes["blocks.2.neuron"].spike_mode == "voltage"
        assert bool(graph.nodes["blocks.2.neuron"].bias.any()) == (norm is not None)
        assert graph.nodes["blocks.2.neuron"].i_decay.shape == ((4,) if seed == 2 else ())


@check
def affine_without_dynamics_is_the_synaptic_input():
    for seed in range(3):
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        net = torch.nn.ModuleList([cuba.Dense(params(rng), 10, 8, weight_scale=3),
                                   cuba.Affine(params(rng), 8, 4, weight_scale=3,
                                               dynamics=False)])
        x = spikes(rng, 30, 2, 10)
        want = round_trip(net, x, ["Input", "Linear", "LoihiCUBA", "Delay", "Linear", "Scale",
                                   "Output"])
        assert want.abs().sum() > 0 and not torch.equal(want, want.round()), seed


@check
def average_imports_and_exports_exactly():
    for seed in range(3):
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        dense = torch.nn.ModuleList([cuba.Dense(params(rng), 10, 12, weight_scale=3),
                                     cuba.Average(4)])
        x = spikes(rng, 30, 2, 10)
        want = round_trip(dense, x, ["Input", "Linear", "LoihiCUBA", "Delay", "Vote", "Output"])
        assert 0 < want.sum() and not torch.equal(want, want.round()), seed
        assert hub.load(dense).nodes["blocks.1.average"].size == 3
        # after a convolution: slayer's mean over the flattened [C, H, W]
        conv = torch.nn.ModuleList([cuba.Conv(params(rng), 2, 3, 3, padding=1, weight_scale=3),
                                    cuba.Average(6)])
        xc = spikes(rng, 20, 2, 2, 4, 4)
        want = forward(conv, xc)
        graph = hub.load(conv, input_shape=(2, 4, 4))
        kinds = [type(n).__name__ for _, n in graph.walk()]
        assert kinds == ["Input", "Conv2d", "LoihiCUBA", "Delay", "Flatten", "Vote",
                         "Output"], kinds
        assert torch.equal(hub.simulate(graph, xc), want)
        back = hub.convert(graph, to="slayer")
        assert torch.equal(forward(back.blocks, xc), want)


@check
def convt_and_unpool_import_and_export_exactly():
    for seed in range(3):
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        norm = slayer.neuron.norm.MeanOnlyBatchNorm if seed == 1 else None
        nets = [
            [cuba.Conv(params(rng), 2, 4, 3, padding=1, weight_scale=3),
             cuba.ConvT(dict(params(rng), norm=norm), 4, 3, 3, stride=2, padding=1,
                        weight_scale=3)],
            [cuba.Conv(params(rng), 2, 4, 3, padding=1, weight_scale=3),
             cuba.ConvT(params(rng), 4, 6, (3, 2), stride=(2, 1), dilation=(1, 2), groups=2,
                        weight_scale=3, delay=True),
             cuba.Flatten(), cuba.Dense(params(rng), 6 * 11 * 7, 5, weight_scale=3)],
            [cuba.Conv(params(rng), 2, 4, 3, padding=1, weight_scale=3),
             cuba.Unpool(params(rng), 2, weight_scale=2)],
        ]
        for k, blocks in enumerate(nets):
            net = torch.nn.ModuleList(blocks)
            x = spikes(rng, 30, 2, 2, 5, 5)
            forward(net, x)  # slayer draws the axonal delays (and the norm's shape) on the first
            if norm is not None and k == 0:
                net[1].neuron.norm.running_mean = torch.tensor(rng.normal(0, 0.3, 3),
                                                               dtype=torch.float32)
            if k == 1:
                net[1].delay.delay.data = torch.tensor(rng.uniform(0, 3, 6), dtype=torch.float32)
            want = forward(net, x)
            upsampled = forward(net[:2], x)  # the transposed convolution's spikes
            assert 0 < upsampled.sum() < upsampled.numel(), (seed, k)
            graph = hub.load(net, input_shape=(2, 5, 5))
            assert graph.nodes["blocks.1.synapse"].type == "ConvTranspose2d"
            got = hub.simulate(graph, x)
            assert torch.equal(got, want), (seed, k, int((got != want).sum()))
            back = hub.convert(graph, to="slayer")
            assert type(back.blocks[1]).__name__ == "ConvT"  # Unpool: a grouped ConvT
            assert torch.equal(forward(back.blocks, x), want), (seed, k)
            assert hub.load(back) == graph, (seed, k)


@check
def refusals_name_block_and_reason():
    rng = np.random.default_rng(0)
    cases = [
        (cuba.TimeDecimation(2), "time axis", None),
        (cuba.ConvT(params(rng), 3, 2, 3), "[C, H, W]", None),
        (cuba.Average(5), "equal groups", "num_outputs"),
        (cuba.Affine(dict(params(rng), persistent_state=True), 3, 2), "persistent_state",
         "persistent_state"),
    ]
    for block, words, field in cases:
        net = torch.nn.ModuleList([cuba.Dense(params(rng), 4, 3), block])
        try:
            hub.load(net)
        except hub.UnsupportedError as e:
            assert e.node.startswith("blocks.1") and e.field == field and words in str(e), str(e)
        else:
            raise AssertionError(f"{type(block).__name__} should be refused")
    # an Unpool whose windows overlap rows of the next channel
    conv = cuba.Conv(params(rng), 2, 3, 3, padding=1)
    try:
        hub.load(torch.nn.ModuleList([conv, cuba.Unpool(params(rng), 3, stride=2)]),
                 input_shape=(2, 4, 4))
    except hub.UnsupportedError as e:
        assert (e.node, e.field) == ("blocks.1", "synapse") and "stride = kernel" in str(e), str(e)
    else:
        raise AssertionError("an overlapping Unpool should be refused")
    # a voltage readout that spikes (a threshold below 1 << 17) is no Affine block
    graph = hub.Graph.chain(
        ("input", hub.Input(shape=(3,))),
        ("fc", hub.Linear(weight=np.float32([[2, 4, -2]] * 2))),
        ("readout", hub.LoihiCUBA(i_decay=0, v_decay=0, threshold=10, spike_mode="voltage")),
        ("scale", hub.Scale(scale=np.float32(1 / 64))))
    try:
        hub.convert(graph, to="slayer")
    except hub.UnsupportedError as e:
        assert (e.node, e.field) == ("readout", "threshold"), str(e)
    else:
        raise AssertionError("a spiking voltage readout should be refused")


def family_params(rng, family, **extra):
    # each family's neuron parameters on the grids slayer keeps them on
    if family in ("cuba", "alif"):
        p = params(rng)
    elif family == "sigma_delta":
        p = dict(threshold=int(rng.integers(1, 24)) / 64, activation=torch.nn.functional.relu)
    else:
        p = dict(threshold=int(rng.integers(4, 60)) / 64, period=float(rng.uniform(4, 16)),
                 decay=float(rng.uniform(0, 0.25)))
    if family in ("alif", "adrf"):
        p.update(threshold_step=int(rng.integers(0, 40)) / 64,
                 threshold_decay=int(rng.integers(0, 4097)) / 4096,
                 refractory_decay=int(rng.integers(0, 4097)) / 4096)
    return dict(p, **extra)


#: The families whose ConvT and Unpool blocks run in lava-dl 0.6 besides cuba's, and the node
#: their neuron imports as.
UPSAMPLING = {"alif": "ALIF", "sigma_delta": "SigmaDelta", "rf": "Resonator",
              "rf_iz": "Resonator", "adrf": "Resonator"}


@check
def every_family_s_convt_and_unpool_import_and_export_exactly():
    # a family's ConvT/Unpool block is its Conv block with a transposed synapse; a resonator's
    # complex synapse is one ConvTranspose2d with the real outputs, then the imaginary ones
    busy = 0
    for family, neuron in UPSAMPLING.items():
        F = getattr(slayer.block, family)
        resonator = neuron == "Resonator"
        for seed in range(3):
            torch.manual_seed(seed)
            rng = np.random.default_rng(seed)
            norm = slayer.neuron.norm.MeanOnlyBatchNorm if seed == 1 else None
            nets = [
                [F.Conv(family_params(rng, family), 2, 4, 3, padding=1, weight_scale=3),
                 F.ConvT(family_params(rng, family, norm=norm), 4, 3, 3, stride=2, padding=1,
                         weight_scale=3)],
                [F.Conv(family_params(rng, family), 2, 4, 3, padding=1, weight_scale=3),
                 F.ConvT(family_params(rng, family), 4, 6, (3, 2), stride=(2, 1),
                         dilation=(1, 2), groups=1 if resonator else 2, weight_scale=3,
                         delay=True),
                 F.Flatten(), F.Dense(family_params(rng, family), 6 * 11 * 7, 5, weight_scale=3)],
                [F.Conv(family_params(rng, family), 2, 4, 3, padding=1, weight_scale=3),
                 F.Unpool(family_params(rng, family), 2, weight_scale=2)],
            ]
            for k, blocks in enumerate(nets):
                net = torch.nn.ModuleList(blocks)
                x = spikes(rng, 30, 2, 2, 5, 5)
                forward(net, x)  # slayer draws the axonal delays (and the norms' shapes) here
                if norm is not None and k == 0:
                    norms = ([net[1].neuron.real_norm, net[1].neuron.imag_norm] if resonator
                             else [net[1].neuron.norm])
                    for n in norms:
                        n.running_mean = torch.tensor(rng.normal(0, 0.1, 3), dtype=torch.float32)
                if k == 1:
                    net[1].delay.delay.data = torch.tensor(rng.uniform(0, 3, 6),
                                                           dtype=torch.float32)
                want = forward(net, x)
                upsampled = forward(net[:2], x)
                busy += bool(0 < upsampled.abs().sum() and (upsampled == 0).any())
                graph = hub.load(net, input_shape=(2, 5, 5))
                assert graph.nodes["blocks.1.synapse"].type == "ConvTranspose2d"
                assert graph.nodes["blocks.1.neuron"].type == neuron, (family, k)
                if norm is not None and k == 0:  # the norm: a Bias, or the SigmaDelta's bias
                    assert "blocks.1.bias" in graph.nodes or \
                        graph.nodes["blocks.1.neuron"].bias.any(), family
                got = hub.simulate(graph, x)
                assert torch.equal(got, want), (family, seed, k, int((got != want).sum()))
                back = hub.convert(graph, to="slayer")
                assert type(back.blocks[1]).__name__ == "ConvT"  # Unpool: a grouped ConvT
                assert type(back.blocks[1]).__module__.endswith(family), family
                assert torch.equal(forward(back.blocks, x), want), (family, seed, k)
                assert hub.load(back) == graph, (family, seed, k)
    assert busy >= 40, f"the upsampled layers should be active but not saturated: {busy} of 45"


@check
def every_family_s_average_imports_and_exports_exactly():
    # every family's Average is block.base.AbstractAverage: the group means of its input, spikes
    # or a sigma-delta block's graded values
    for family in ("cuba", "alif", "sigma_delta", "rf", "rf_iz", "adrf", "adrf_iz"):
        F = getattr(slayer.block, family)
        for seed in range(2):
            torch.manual_seed(seed)
            rng = np.random.default_rng(seed)
            # adrf_iz's neuron does not run in lava-dl 0.6: its Average follows a cuba block
            dense = (cuba if family == "adrf_iz" else F).Dense(
                family_params(rng, "cuba" if family == "adrf_iz" else family), 10, 12,
                weight_scale=3)
            net = torch.nn.ModuleList([dense, F.Average(4)])
            x = spikes(rng, 30, 2, 10)
            want = forward(net, x)
            assert 0 < want.abs().sum() and not torch.equal(want, want.round()), (family, seed)
            graph = hub.load(net)
            assert graph.nodes["blocks.1.average"].size == 3
            assert torch.equal(hub.simulate(graph, x), want), (family, seed)
            back = hub.convert(graph, to="slayer")
            assert torch.equal(forward(back.blocks, x), want), (family, seed)
            assert hub.load(back) == graph, (family, seed)


@check
def blocks_lava_dl_cannot_run_are_refused_or_cannot_be_built():
    rng = np.random.default_rng(3)
    B = slayer.block
    # lava-dl 0.6 builds no rf/rf_iz Affine (its constructor sets the neuron's read-only
    # threshold) and no adrf_iz ConvT (it asks for a synapse.complex.ConvT that does not exist)
    for make, words in (
            (lambda: B.rf.Affine(family_params(rng, "rf"), 4, 3), "threshold"),
            (lambda: B.rf_iz.Affine(family_params(rng, "rf_iz"), 4, 3), "threshold"),
            (lambda: B.adrf_iz.ConvT(family_params(rng, "adrf"), 2, 3, 3), "ConvT")):
        try:
            make()
        except AttributeError as e:
            assert words in str(e), str(e)
        else:
            raise AssertionError("lava-dl builds this block now: map it")
    # adrf_iz's Unpool builds, and its forward fails (the neuron's spike() misses an argument)
    unpool = B.adrf_iz.Unpool(family_params(rng, "adrf"), 2)
    conv = cuba.Conv(params(rng), 2, 3, 3, padding=1)
    net = torch.nn.ModuleList([conv, unpool])
    try:
        forward(net, spikes(rng, 4, 1, 2, 4, 4))
    except TypeError as e:
        assert "refractory" in str(e), str(e)
    else:
        raise AssertionError("adrf_iz's Unpool runs now: map it")
    cases = [
        ([conv, unpool], "blocks.1.neuron", "neuron", "does not run"),
        ([B.rf.Conv(family_params(rng, "rf"), 2, 4, 3, padding=1),
          B.rf.ConvT(family_params(rng, "rf"), 4, 4, 3, groups=2)], "blocks.1", "groups",
         "grouped complex"),
        ([B.alif.Dense(family_params(rng, "alif"), 4, 3),
          B.alif.ConvT(family_params(rng, "alif"), 3, 2, 3)], "blocks.1", None, "[C, H, W]"),
        ([B.alif.Dense(family_params(rng, "alif"), 4, 3), B.alif.Average(2)], "blocks.1",
         "num_outputs", "equal groups"),
    ]
    for blocks, node, field, words in cases:
        try:
            hub.load(torch.nn.ModuleList(blocks), input_shape=None if node == "blocks.1" and
                     field in (None, "num_outputs") else (2, 4, 4))
        except hub.UnsupportedError as e:
            assert (e.node, e.field) == (node, field) and words in str(e), str(e)
        else:
            raise AssertionError(f"{node}.{field} should be refused")


run_checks()
"""


@pytest.fixture(scope="module")
def slayer_checks(tmp_path_factory) -> dict[str, dict]:
    return run_in_lava(SLAYER_CHECKS, checkout_view(tmp_path_factory.mktemp("checkout")))


@pytest.mark.parametrize("name", names(SLAYER_CHECKS))
def test_slayer_blocks_in_the_lava_environment(slayer_checks, name: str) -> None:
    assert_passed(slayer_checks, name)


def test_conformance_routes_of_the_mixed_families_case_in_the_lava_environment(tmp_path):
    """hub <-> slayer blocks (and files) on the exact-tier case that mixes slayer's families
    (sigma_delta Input, rf_iz Conv, alif Dense, cuba Affine readout), each run in its own
    runtime: every hub and slayer route passes; netx cannot hold the float sigma-delta front."""
    out = conformance_in_lava(tmp_path, "--formats", "hub,netx,slayer", "--tier", "exact",
                              "--cases", "*mixed-families*")
    assert "33 runs of 1 cases along 33 routes" in out, out[-2000:]
    assert "10 pass, 23 n/a" in out, out[-2000:]
    assert "netx has no Quantize node" in out
