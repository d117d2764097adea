"""The Lava bridge: netx files run in Lava's Loihi fixed-point simulator, from the hub's env.

The networks come from lava-dl itself: a subprocess in the Lava environment builds small slayer
CUBA networks, runs slayer's own forward and writes them with slayer's ``export_hdf5``. Lava's
simulator and slayer are independent implementations of the Loihi neuron, so
``run_netx`` agreeing with slayer bit for bit checks the bridge, its input/output layouts and its
timing alignment. Where ``.venv-lava`` is missing these tests skip, saying so.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import hub
from hub_plugins import lava

from .slayer_harness import (
    assert_passed, checkout_view, conformance_in_lava, lava_python, names, run_in_lava)


#: Builds the networks in the Lava environment: argv[1] is the folder to write to.
BUILD = r"""
import sys, h5py, numpy as np, torch
from lava.lib.dl import slayer

out = sys.argv[1]
torch.manual_seed(3)
rng = np.random.default_rng(3)
cuba = slayer.block.cuba


def save(name, blocks, x):
    # x: [N, *features, T], slayer's layout; saved time-major [T, N, *features]
    with torch.no_grad():
        for shift in (False, True):
            y = x
            for b in blocks:
                b.delay_shift = shift
                y = b(y)
            np.save(f"{out}/{name}{'-shifted' if shift else ''}.npy",
                    np.moveaxis(y.numpy(), -1, 0).astype(np.float32))
    np.save(f"{out}/{name}-x.npy", np.moveaxis(x.numpy(), -1, 0).astype(np.float32))
    with h5py.File(f"{out}/{name}.net", "w") as f:
        layers = f.create_group("layer")
        for i, b in enumerate(blocks):
            b.export_hdf5(layers.create_group(str(i)))


p1 = dict(threshold=1.25, current_decay=0.25, voltage_decay=0.0625)
p2 = dict(threshold=0.5, current_decay=0.5, voltage_decay=0.125)
dense = torch.nn.ModuleList([cuba.Dense(p1, 10, 8, weight_scale=3),
                             cuba.Dense(p2, 8, 5, weight_scale=3)])
save("dense", dense, (torch.rand(3, 10, 24) < 0.35).float())

conv = torch.nn.ModuleList([cuba.Conv(p1, 2, 3, 3, padding=1, weight_scale=4),
                            cuba.Flatten(),
                            cuba.Dense(p2, 3 * 5 * 4, 6, weight_scale=3)])
save("conv", conv, (torch.rand(2, 2, 5, 4, 16) < 0.4).float())


def add_input(path, shape):
    # an input layer with only a shape (C, H, W) first, as a reader of the file may need
    with h5py.File(path, "a") as f:
        layers = f["layer"]
        for i in reversed(range(len(layers))):
            layers.move(str(i), str(i + 1))
        layers.create_group("0").create_dataset("type", (1,), "S10", [b"input"])
        layers["0"].create_dataset("shape", data=np.array(shape))


recurrent = torch.nn.ModuleList([cuba.Recurrent(p1, 6, 5, weight_scale=2),
                                 cuba.Dense(p2, 5, 4, weight_scale=2)])
save("recurrent", recurrent, (torch.rand(2, 6, 20) < 0.4).float())  # netx's dense_rec

add_input(f"{out}/conv.net", [2, 5, 4])  # netx needs it to know a convolution's input size
import shutil
shutil.copy(f"{out}/dense.net", f"{out}/dense-input.net")
add_input(f"{out}/dense-input.net", [10])
"""


@pytest.fixture(scope="module")
def this_checkout(tmp_path_factory) -> Path:
    """A view of this checkout to put first on the Lava environment's path."""
    return checkout_view(tmp_path_factory.mktemp("checkout"))


@pytest.fixture(scope="module")
def nets(tmp_path_factory) -> Path:
    """Small slayer networks, their inputs and slayer's outputs, written by lava-dl."""
    python = lava_python()
    folder = tmp_path_factory.mktemp("slayer-nets")
    done = subprocess.run([str(python), "-I", "-c", BUILD, str(folder)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return folder


@pytest.mark.parametrize("name", ["dense", "conv", "recurrent"])
def test_run_netx_equals_slayer_step_for_step(nets: Path, name: str) -> None:
    x = np.load(nets / f"{name}-x.npy")
    want = np.load(nets / f"{name}.npy")  # slayer without its one-step delay per block
    got = lava.run_netx(nets / f"{name}.net", x)
    assert got.shape == want.shape and got.dtype == np.float32
    assert 0 < want.sum() < want.size, "the test network should spike, but not always"
    np.testing.assert_array_equal(got, want)


def test_alignment_removes_one_step_per_synapse_layer(nets: Path) -> None:
    """Lava (and slayer's default ``delay_shift``) delay by one step per synapse layer."""
    x = np.load(nets / "dense-x.npy")
    got = lava.run_netx(nets / "dense.net", x)
    shifted = np.load(nets / "dense-shifted.npy")
    layers = 2
    np.testing.assert_array_equal(shifted[layers:], got[:-layers])
    assert not shifted[:layers].any()


def test_a_batch_runs_as_each_sample_alone(nets: Path) -> None:
    """The batch runs back to back with Lava's state reset; it equals one run per sample."""
    x = np.load(nets / "dense-x.npy")
    together = lava.run_netx(nets / "dense.net", x)
    for n in range(x.shape[1]):
        alone = lava.run_netx(nets / "dense.net", x[:, n:n + 1])
        np.testing.assert_array_equal(together[:, n:n + 1], alone)


def test_run_netx_accepts_torch_input_and_one_step(nets: Path) -> None:
    torch = pytest.importorskip("torch")
    x = np.load(nets / "dense-x.npy")
    want = np.load(nets / "dense.npy")
    np.testing.assert_array_equal(lava.run_netx(nets / "dense.net", torch.tensor(x[:1])),
                                  want[:1])


@pytest.mark.parametrize("name", ["dense-input", "conv"])
def test_hub_reference_of_the_netx_file_agrees(nets: Path, name: str) -> None:
    """The netx plugin reads the same file into a canonical graph; the hub's reference agrees."""
    try:
        fmt = hub.plugins().format("netx")
    except hub.PluginError as e:
        pytest.skip(f"no usable netx format here: {e}")
    if "read" not in fmt.capabilities:
        pytest.skip("the netx format does not read files")
    x = np.load(nets / f"{name.split('-')[0]}-x.npy")
    graph = hub.load(nets / f"{name}.net", source="netx")
    want = hub.simulate(graph, x).numpy()
    assert 0 < want.sum() < want.size
    np.testing.assert_array_equal(lava.run_netx(nets / f"{name}.net", x), want)


def test_a_file_netx_cannot_run_is_a_format_error(nets: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.net"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(hub.FormatError, match="(?i)bad.net: not an hdf5 file"):
        lava.run_netx(bad, np.zeros((2, 1, 10), np.float32))
    x = np.load(nets / "dense-x.npy")
    with pytest.raises(hub.FormatError, match=r"takes input of shape \[10\].*got \[9\]"):
        lava.run_netx(nets / "dense.net", x[..., :9])
    with pytest.raises(hub.FormatError, match="integer inputs"):
        lava.run_netx(nets / "dense.net", x * 0.5)
    with pytest.raises(hub.FormatError, match="no such file"):
        lava.run_netx(tmp_path / "missing.net", x)


# -- the slayer format --------------------------------------------------------------------

#: Checks run in the Lava environment (:mod:`tests.slayer_harness`); argv[1]: the checkout
#: view, argv[2]: a folder for the netx cross-check, argv[3:]: the view's hub, hub_plugins and
#: hub_conformance.
SLAYER_CHECKS = r"""
import dataclasses, sys
import numpy as np, torch
import hub
from lava.lib.dl import slayer
from hub_plugins.lava import SlayerNetwork
from slayer_harness import check, cuba_params, forward, run_checks

out = sys.argv[2]
cuba = slayer.block.cuba
fmt = hub.plugins().format("slayer")
torch.manual_seed(5)
P1 = dict(threshold=1.25, current_decay=0.25, voltage_decay=0.0625)
P2 = dict(threshold=0.5, current_decay=0.5, voltage_decay=0.125)


def spikes(*shape, p=0.35):
    return (torch.rand(*shape) < p).float()


def dense_net(**extra):
    return torch.nn.ModuleList([cuba.Dense(dict(P1, **extra), 10, 8, weight_scale=3),
                                cuba.Dense(P2, 8, 5, weight_scale=3)])


def busy(y):
    assert 0 < y.sum() < y.numel(), f"the test network should spike, but not always: {y.sum()}"


@check
def recognised():
    assert fmt.recognizes(dense_net())
    assert not fmt.recognizes(torch.nn.ModuleList([torch.nn.Linear(2, 2)]))
    assert hub.detect(dense_net()).name == "slayer"


@check
def dense_imports_spike_exact():
    net, x = dense_net(), spikes(24, 3, 10)
    want = fmt.run(net, x)
    busy(want)
    graph = hub.load(net, source="slayer")
    names = [type(n).__name__ for _, n in graph.walk()]
    assert names == ["Input", "Linear", "LoihiCUBA", "Delay", "Linear", "LoihiCUBA", "Delay",
                     "Output"], names
    neuron = graph.nodes["blocks.0.neuron"]
    assert (int(neuron.i_decay), int(neuron.v_decay), int(neuron.threshold)) == (1024, 256, 80)
    assert int(graph.nodes["blocks.0.delay"].delay) == 1  # delay_shift, on by default
    assert torch.equal(hub.simulate(graph, x), want)
    assert not want[:2].any()  # two blocks, two steps of latency, in the model itself


@check
def random_networks_with_default_delay_shift():
    # hub.simulate of the imported network is slayer's forward, step for step, no realignment
    for seed in range(4):
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        dense = torch.nn.ModuleList([cuba.Dense(cuba_params(rng), 12, 10, weight_scale=3),
                                     cuba.Dense(cuba_params(rng), 10, 8, weight_scale=3),
                                     cuba.Dense(cuba_params(rng), 8, 4, weight_scale=3)])
        conv = torch.nn.ModuleList([cuba.Conv(cuba_params(rng), 2, 4, 3, padding=1,
                                              weight_scale=5),
                                    cuba.Conv(cuba_params(rng), 4, 3, 3, stride=2,
                                              padding=1, weight_scale=5),
                                    cuba.Flatten(),
                                    cuba.Dense(cuba_params(rng), 3 * 3 * 3, 5, weight_scale=4)])
        for net, x in ((dense, spikes(30, 2, 12, p=0.4)), (conv, spikes(20, 2, 2, 6, 6, p=0.5))):
            graph = hub.load(net, input_shape=tuple(x.shape[2:]))
            want = forward(net, x)
            assert want.any(), f"seed {seed}: the network should spike"
            got = hub.simulate(graph, x)
            assert torch.equal(got, want), (seed, (got != want).nonzero()[:5])
            back = hub.convert(graph, to="slayer")
            assert all(b.delay_shift for b in back.blocks if hasattr(b, "delay_shift"))
            assert torch.equal(forward(back.blocks, x), want), seed


@check
def axonal_delays_are_per_neuron_delays():
    torch.manual_seed(7)
    rng = np.random.default_rng(7)
    net = torch.nn.ModuleList([cuba.Conv(P2, 2, 3, 3, padding=1, weight_scale=6, delay=True),
                               cuba.Flatten(),
                               cuba.Dense(P1, 60, 6, weight_scale=4, delay=True),
                               cuba.Dense(P2, 6, 4, weight_scale=4, delay_shift=False)])
    x = spikes(24, 2, 2, 5, 4, p=0.5)
    try:
        hub.load(net, input_shape=(2, 5, 4))
        raise AssertionError("delays not drawn yet should be refused")
    except hub.UnsupportedError as e:
        assert (e.node, e.field) == ("blocks.0", "delay"), str(e)
    forward(net, x)  # slayer draws the delays on the first forward
    with torch.no_grad():
        net[0].delay.delay.data = torch.tensor(rng.uniform(0, 4, 3), dtype=torch.float32)
        net[2].delay.delay.data = torch.tensor(rng.uniform(0, 5, 6), dtype=torch.float32)
    graph = hub.load(net, input_shape=(2, 5, 4))
    steps = graph.nodes["blocks.2.delay"].delay
    assert steps.shape == (6,) and len(set(steps.tolist())) > 1, steps
    assert graph.nodes["blocks.0.delay"].delay.shape == (3, 1, 1)
    assert "blocks.3.delay" not in graph.nodes
    want = forward(net, x)
    busy(want)
    assert torch.equal(hub.simulate(graph, x), want)
    back = hub.convert(graph, to="slayer")
    assert [b.delay_shift for b in back.blocks[::2]] == [True, True]
    assert torch.equal(forward(back.blocks, x), want)
    assert hub.load(back) == graph


@check
def conv_imports_spike_exact():
    net = torch.nn.ModuleList([cuba.Conv(P2, 2, 3, 3, padding=1, weight_scale=6),
                               cuba.Flatten(), cuba.Dense(P2, 60, 6, weight_scale=4)])
    x = spikes(16, 2, 2, 5, 4, p=0.5)
    try:
        hub.load(net)
        raise AssertionError("a fresh convolution's input size is unknown: expected an error")
    except hub.FormatError as e:
        assert "input_shape" in str(e), e
    graph = hub.load(net, input_shape=(2, 5, 4))
    want = fmt.run(net, x)
    busy(want)
    assert torch.equal(hub.simulate(graph, x), want)
    assert hub.load(net) == graph  # after a forward slayer knows the size


@check
def blocks_real_networks_use():
    # an Input block with a neuron (and its weight and bias), biases (slayer's
    # MeanOnlyBatchNorm), Pool and Recurrent blocks: imported exactly, exported back
    norm = slayer.neuron.norm.MeanOnlyBatchNorm
    rng = np.random.default_rng(9)
    nets = {
        "input": (torch.nn.ModuleList([cuba.Input(dict(P2), weight=1.5, bias=0.25),
                                       cuba.Dense(dict(P1), 10, 6, weight_scale=3)]),
                  (20, 2, 10), ["Scale", "Bias", "LoihiCUBA", "Delay"]),
        "pool": (torch.nn.ModuleList([cuba.Conv(dict(P2, norm=norm), 2, 3, 3, padding=1,
                                                weight_scale=5),
                                      cuba.Pool(dict(P2), 2), cuba.Flatten(),
                                      cuba.Dense(dict(P1, norm=norm), 18, 5, weight_scale=4)]),
                 (20, 2, 2, 6, 4), ["Conv2d", "LoihiCUBA", "Delay"]),
        # slayer's Recurrent writes persistent_state into the dict it is given: a copy
        "recurrent": (torch.nn.ModuleList([cuba.Recurrent(dict(P1), 8, 6, weight_scale=2),
                                           cuba.Dense(dict(P2), 6, 4, weight_scale=2)]),
                      (25, 2, 8), ["Linear", "LoihiCUBA", "Delay"]),
    }
    for name, (net, shape, first) in nets.items():
        for block in net:  # biases: MeanOnlyBatchNorm's running mean, on slayer's 2/64 grid
            norm_ = getattr(getattr(block, "neuron", None), "norm", None)
            if norm_ is not None:
                out = block.neuron.shape[0] if block.neuron.shape else None
                size = out or (block.synapse.out_channels)
                norm_.running_mean = torch.tensor(rng.integers(-3, 4, size) * 2 / 64,
                                                  dtype=torch.float32)
        x = spikes(*shape, p=0.4)
        graph = hub.load(net, input_shape=shape[2:])
        kinds = [type(n).__name__ for _, n in graph.walk()]
        assert kinds[1:1 + len(first)] == first, (name, kinds)
        want = forward(net, x)
        busy(want)
        assert torch.equal(hub.simulate(graph, x), want), name
        assert torch.equal(fmt.run(net, x), want), name  # twice: the recurrent state resets
        assert torch.equal(fmt.run(net, x), want), name
        back = hub.convert(graph, to="slayer")
        assert torch.equal(forward(back.blocks, x), want), name
        assert hub.load(back) == graph, name
    pool = hub.load(nets["pool"][0], input_shape=(2, 6, 4))
    assert pool.nodes["blocks.0.neuron"].bias.shape == (3, 1, 1)
    assert "blocks.0.recurrent" in hub.load(nets["recurrent"][0]).nodes


@check
def export_runs_like_the_graph_and_comes_back():
    net, x = dense_net(), spikes(20, 2, 10)
    graph = hub.load(net)
    model = hub.convert(graph, to="slayer")
    assert isinstance(model, SlayerNetwork)
    assert torch.equal(fmt.run(model, x), hub.simulate(graph, x))
    assert hub.load(model) == graph
    assert all(b.delay_shift for b in model.blocks)  # the graph's Delay nodes
    plain = hub.load(net, delay_shift=False)  # the network slayer's export_hdf5 writes
    assert "blocks.0.delay" not in plain.nodes
    assert not any(b.delay_shift for b in hub.convert(plain, to="slayer").blocks)


@check
def per_channel_decays():
    net, x = dense_net(shared_param=False), spikes(20, 2, 10)
    want = fmt.run(net, x)
    graph = hub.load(net)
    assert graph.nodes["blocks.0.neuron"].i_decay.shape == (8,)
    assert torch.equal(hub.simulate(graph, x), want)
    assert torch.equal(fmt.run(hub.convert(graph, to="slayer"), x), want)


@check
def run_leaves_the_model_as_it_was():
    net, x = dense_net(), spikes(8, 1, 10)
    net.train()
    fmt.run(net, x)
    assert all(b.delay_shift and b.training for b in net)
    assert torch.equal(fmt.run(net, x), forward(net, x))  # the forward as it is


@check
def refusals_name_block_and_field():
    cases = [(torch.nn.ModuleList([cuba.Dense(dict(P1, graded_spike=True), 4, 3)]),
              "blocks.0.neuron", "graded_spike"),
             (torch.nn.ModuleList([cuba.Dense(P1, 4, 3), cuba.TimeDecimation(2)]), "blocks.1",
              None),
             (torch.nn.ModuleList([cuba.Dense(P1, 4, 3), cuba.ConvT(P1, 3, 2, 3)]), "blocks.1",
              None),
             (torch.nn.ModuleList([cuba.Dense(P1, 4, 3), cuba.Dense(P1, 3, 2, delay=True)]),
              "blocks.1", "delay"),
             (torch.nn.ModuleList([cuba.Dense(dict(P1, persistent_state=True), 4, 3)]),
              "blocks.0.neuron", "persistent_state")]
    for net, node, field in cases:
        try:
            hub.load(net)
        except hub.UnsupportedError as e:
            assert (e.node, e.field) == (node, field), (str(e), node, field)
        else:
            raise AssertionError(f"{node}.{field} should be refused")
    graph = hub.load(dense_net())
    odd = hub.Graph.chain(hub.Input(shape=(2,)), ("fc", hub.Linear(weight=np.array([[3.0, 2.0]]))),
                          ("lif", hub.LoihiCUBA(i_decay=0, v_decay=0, threshold=10)))
    try:
        hub.convert(odd, to="slayer")
    except hub.UnsupportedError as e:
        assert (e.node, e.field) == ("fc", "weight") and "even" in e.message, str(e)
    else:
        raise AssertionError("odd weight mantissas should be refused")


@check
def slayer_export_for_netx():
    conv = torch.nn.ModuleList([cuba.Conv(P2, 2, 3, 3, padding=1, weight_scale=6),
                                cuba.Flatten(), cuba.Dense(P2, 60, 6, weight_scale=4)])
    delayed = torch.nn.ModuleList([cuba.Dense(P1, 10, 8, weight_scale=3, delay=True),
                                   cuba.Dense(P2, 8, 5, weight_scale=3)])
    forward(delayed, spikes(4, 1, 10))  # slayer draws the delays on the first forward
    with torch.no_grad():
        delayed[0].delay.delay.data = torch.arange(8, dtype=torch.float32) * 0.75
    for name, net, x, shape in [("dense", dense_net(), spikes(20, 2, 10), None),
                                ("conv", conv, spikes(16, 2, 2, 5, 4, p=0.5), (2, 5, 4)),
                                ("delayed", delayed, spikes(24, 2, 10, p=0.5), None)]:
        # the netx file holds the network without the latency Lava's pipeline adds itself
        graph = hub.load(net, input_shape=shape, delay_shift=False)
        hub.save(graph, to="netx", out=f"{out}/hub-{name}.net")  # the hub's own writer
        model = hub.convert(graph, to="slayer")
        try:
            hub.save(hub.load(net, input_shape=shape), to="netx", out=f"{out}/refused.net")
            raise AssertionError("a trailing delay_shift has no place in a netx file")
        except hub.UnsupportedError as e:
            assert "delay_shift=False" in str(e), str(e)
        model.export_hdf5(f"{out}/exported-{name}.net")
        np.save(f"{out}/exported-{name}-x.npy", x.numpy())
        np.save(f"{out}/exported-{name}-y.npy", fmt.run(model, x).numpy())


ALIF_KINDS = ["Input", "Linear", "ALIF", "Delay", "Scale", "Conv2d", "Flatten", "Output"]
# (a Pool block is a depthwise Conv2d, a Recurrent block's feedback a Linear)


def alif_params(rng, **extra):
    # slayer's alif: thresholds on a grid of 1/64, its four decays on a grid of 1/4096
    return dict(threshold=int(rng.integers(16, 160)) / 64,
                threshold_step=int(rng.integers(0, 80)) / 64,
                current_decay=int(rng.integers(0, 4097)) / 4096,
                voltage_decay=int(rng.integers(0, 4097)) / 4096,
                threshold_decay=int(rng.integers(0, 4097)) / 4096,
                refractory_decay=int(rng.integers(0, 4097)) / 4096, **extra)


def alif_networks(seed):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    alif = slayer.block.alif
    dense = torch.nn.ModuleList([alif.Dense(alif_params(rng), 12, 10, weight_scale=4),
                                 alif.Dense(alif_params(rng), 10, 6, weight_scale=4)])
    conv = torch.nn.ModuleList([alif.Conv(alif_params(rng), 2, 4, 3, padding=1, weight_scale=5),
                                alif.Conv(alif_params(rng), 4, 3, 3, stride=2, padding=1,
                                          weight_scale=5),
                                alif.Flatten(),
                                alif.Dense(alif_params(rng), 27, 5, weight_scale=4)])
    recurrent = torch.nn.ModuleList([alif.Input(alif_params(rng), weight=2.0),
                                     alif.Recurrent(alif_params(rng), 12, 9, weight_scale=3),
                                     alif.Dense(alif_params(rng), 9, 4, weight_scale=4)])
    pool = torch.nn.ModuleList([alif.Conv(alif_params(rng), 2, 4, 3, padding=1, weight_scale=5),
                                alif.Pool(alif_params(rng), 2, weight_scale=4),
                                alif.Flatten(),
                                alif.Dense(alif_params(rng), 36, 5, weight_scale=4)])
    return [("dense", dense, spikes(40, 2, 12, p=0.4)),
            ("conv", conv, spikes(20, 2, 2, 6, 6, p=0.5)),
            ("recurrent", recurrent, spikes(40, 2, 12, p=0.4)),
            ("pool", pool, spikes(20, 2, 2, 6, 6, p=0.5))]


@check
def alif_blocks_import_and_export_exactly():
    # slayer's alif blocks (Dense, Conv, Flatten, Input, Recurrent) as the fixed-point ALIF:
    # hub.simulate is slayer's forward step for step, and the export gives it back
    active = 0
    for seed in range(5):
        for name, net, x in alif_networks(seed):
            shape = tuple(x.shape[2:])
            graph = hub.load(net, input_shape=shape)
            kinds = {type(n).__name__ for _, n in graph.walk()}
            assert kinds <= set(ALIF_KINDS), (name, kinds)
            neuron = graph.nodes["blocks.0.neuron"]
            assert isinstance(neuron, hub.ALIF) and neuron.arithmetic == "fixed", neuron
            want = forward(net, x)
            active += int(want.any())
            # the runner starts a Recurrent block's persistent state (alif's threshold and
            # refractory states too) at rest, whatever the last forward left there
            assert torch.equal(fmt.run(net, x), want), (seed, name)
            got = hub.simulate(graph, x)
            assert torch.equal(got, want), (seed, name, (got != want).nonzero()[:5])
            back = hub.convert(graph, to="slayer")
            assert all(type(b).__module__.endswith("block.alif") for b in back.blocks)
            assert torch.equal(forward(back.blocks, x), want), (seed, name)
            assert hub.load(back, input_shape=shape) == graph, (seed, name)
    assert active >= 16, f"the test networks should spike: {active} of 20 did"


@check
def alif_adaptation_and_refractory_matter():
    # the check above can fail: the ALIF without its threshold step or refractory voltage
    # gives other spikes than slayer on the same network
    torch.manual_seed(3)
    rng = np.random.default_rng(3)
    net = torch.nn.ModuleList([slayer.block.alif.Dense(alif_params(rng), 12, 10,
                                                       weight_scale=4)])
    with torch.no_grad():
        net[0].neuron.threshold_step = 0.5
    x = spikes(40, 2, 12, p=0.4)
    want = forward(net, x)
    busy(want)
    graph = hub.load(net)
    assert torch.equal(hub.simulate(graph, x), want)
    for field, value in (("refractory_scale", 0.0), ("threshold_step", 0.0)):
        changed = hub.load(net)
        changed.nodes["blocks.0.neuron"] = dataclasses.replace(graph.nodes["blocks.0.neuron"],
                                                               **{field: value})
        assert not torch.equal(hub.simulate(changed, x), want), field


@check
def alif_per_channel_decays():
    rng = np.random.default_rng(11)
    torch.manual_seed(11)
    net = torch.nn.ModuleList([slayer.block.alif.Dense(alif_params(rng, shared_param=False),
                                                       10, 8, weight_scale=4)])
    x = spikes(30, 2, 10, p=0.4)
    want = fmt.run(net, x)  # slayer draws the per-channel decays on the first forward
    busy(want)
    graph = hub.load(net)
    assert graph.nodes["blocks.0.neuron"].threshold_decay.shape == (8,)
    assert torch.equal(hub.simulate(graph, x), want)
    assert torch.equal(fmt.run(hub.convert(graph, to="slayer"), x), want)


@check
def alif_norm_is_a_bias_before_the_neuron():
    # alif's MeanOnlyBatchNorm subtracts its quantised mean from the synaptic input
    alif = slayer.block.alif
    norm = slayer.neuron.norm.MeanOnlyBatchNorm
    for seed in range(3):
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        dense = torch.nn.ModuleList([alif.Dense(alif_params(rng, norm=norm), 12, 10,
                                                weight_scale=4),
                                     alif.Dense(alif_params(rng), 10, 6, weight_scale=4)])
        conv = torch.nn.ModuleList([alif.Conv(alif_params(rng, norm=norm), 2, 4, 3, padding=1,
                                              weight_scale=5),
                                    alif.Flatten(),
                                    alif.Dense(alif_params(rng), 144, 5, weight_scale=3)])
        for net, x in ((dense, spikes(30, 2, 12, p=0.4)), (conv, spikes(20, 2, 2, 6, 6, p=0.5))):
            with torch.no_grad():
                n = net[0].neuron.norm
                count = int(net[0].synapse.out_channels)  # one mean per neuron or channel
                n.running_mean = torch.tensor(rng.integers(-20, 20, count) * 2 / 64,
                                              dtype=torch.float32)
            want = forward(net, x)
            busy(want)
            graph = hub.load(net, input_shape=tuple(x.shape[2:]))
            bias = graph.nodes["blocks.0.bias"]
            assert isinstance(bias, hub.Bias) and bias.bias.any(), bias
            assert torch.equal(hub.simulate(graph, x), want), seed
            back = hub.convert(graph, to="slayer")
            assert torch.equal(forward(back.blocks, x), want), seed
            assert hub.load(back, input_shape=tuple(x.shape[2:])) == graph, seed


@check
def alif_refusals_name_block_and_field():
    alif = slayer.block.alif
    rng = np.random.default_rng(0)

    def p(**extra):
        return alif_params(rng, **extra)

    cases = [(torch.nn.ModuleList([alif.Dense(p(graded_spike=True), 4, 3)]),
              "blocks.0.neuron", "graded_spike"),
             (torch.nn.ModuleList([alif.Dense(p(persistent_state=True), 4, 3)]),
              "blocks.0.neuron", "persistent_state"),
             (torch.nn.ModuleList([alif.Input(p(norm=slayer.neuron.norm.MeanOnlyBatchNorm)),
                                   alif.Dense(p(), 4, 3)]), "blocks.0.neuron", "norm"),
             (torch.nn.ModuleList([alif.Dense(p(shared_param=False), 4, 3)]),
              "blocks.0.neuron", "shared_param"),
             (torch.nn.ModuleList([alif.Dense(p(), 4, 3), alif.KWTA(
                 p(norm=slayer.neuron.norm.MeanOnlyBatchNorm), 3, 2, 1)]),
              "blocks.1.neuron", "norm"),
             (torch.nn.ModuleList([alif.Dense(p(), 4, 3), alif.Average(2)]), "blocks.1",
              "num_outputs")]
    for net, node, field in cases:
        try:
            hub.load(net)
        except hub.UnsupportedError as e:
            assert (e.node, e.field) == (node, field), (str(e), node, field)
        else:
            raise AssertionError(f"{node}.{field} should be refused")
    # netx 0.6 builds no ALIF: the netx writer says so
    graph = hub.load(torch.nn.ModuleList([alif.Dense(p(), 10, 8), alif.Dense(p(), 8, 5)]),
                     delay_shift=False)
    try:
        hub.save(graph, to="netx", out=f"{out}/alif.net")
    except hub.UnsupportedError as e:
        assert (e.node, e.field) == ("blocks.0.neuron", "type") and "ALIF" in e.message, str(e)
    else:
        raise AssertionError("netx cannot build an ALIF")
    # an ALIF slayer's alif neuron does not compute is refused at export, naming the field
    norse_like = hub.Graph.chain(
        hub.Input(shape=(2,)), ("fc", hub.Linear(weight=np.array([[2.0, 4.0]]))),
        ("alif", hub.ALIF(alpha=0.5, beta=0.75, current_gain=64.0, threshold=640.0,
                          threshold_step=64.0, refractory_scale=2.0, comparison=">",
                          reset="none", arithmetic="fixed")))
    try:
        hub.convert(norse_like, to="slayer")
    except hub.UnsupportedError as e:
        assert (e.node, e.field) == ("alif", "comparison"), str(e)
    else:
        raise AssertionError("an ALIF comparing with '>' is not slayer's alif")


@check
def bootstrap_blocks_import_like_cuba():
    # lava-dl's ANN-SNN bootstrap blocks are slayer cuba blocks whose forward takes a mode:
    # their SNN mode (delay_shift off by default) imports, runs and exports like slayer's
    from lava.lib.dl import bootstrap
    from lava.lib.dl.bootstrap.routine import Mode

    boot = bootstrap.block.cuba

    def snn(blocks, x):
        y = hub.to_lava(x).contiguous()
        with torch.no_grad():
            for b in blocks:
                b.eval()
                y = b(y, mode=Mode.SNN)
        return hub.from_lava(y)

    active = 0
    for seed in range(4):
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        dense = torch.nn.ModuleList([boot.Input(cuba_params(rng), weight=2.0),
                                     boot.Dense(cuba_params(rng), 12, 10, weight_scale=3),
                                     boot.Dense(cuba_params(rng), 10, 6, weight_scale=3)])
        conv = torch.nn.ModuleList([boot.Conv(cuba_params(rng), 2, 4, 3, padding=1,
                                              weight_scale=5),
                                    boot.Conv(cuba_params(rng), 4, 3, 3, stride=2, padding=1,
                                              weight_scale=5, delay_shift=False, delay=True),
                                    boot.Flatten(),
                                    boot.Dense(cuba_params(rng), 27, 5, weight_scale=4)])
        for net, x in ((dense, spikes(30, 2, 12, p=0.4)), (conv, spikes(20, 2, 2, 6, 6, p=0.5))):
            assert fmt.recognizes(net)
            want = snn(net, x)
            active += int(want.any())
            assert torch.equal(fmt.run(net, x), want), seed  # the runner runs the SNN mode
            graph = hub.load(net, input_shape=tuple(x.shape[2:]))
            # bootstrap's delay_shift=False default is overridden by slayer's initialiser,
            # which runs after it: the blocks' own attribute decides
            delays = [n for n in graph.nodes if n.endswith(".delay")]
            assert delays == [f"blocks.{i}.delay" for i, b in enumerate(net)
                              if getattr(b, "delay_shift", False)], delays
            got = hub.simulate(graph, x)
            assert torch.equal(got, want), (seed, (got != want).nonzero()[:5])
            assert torch.equal(fmt.run(hub.convert(graph, to="slayer"), x), want), seed
    assert active >= 6, f"the test networks should spike: {active} of 8 did"
    try:
        hub.load(torch.nn.ModuleList([boot.Dense(dict(P1), 4, 3), boot.Affine(dict(P1), 3, 2)]))
    except hub.UnsupportedError as e:
        assert e.node == "blocks.1" and "Affine" in e.message, str(e)
    else:
        raise AssertionError("a bootstrap Affine block should be refused")


@check
def python_310():
    # the Lava environment is Python 3.10: the hub and every plugin load there, and all of
    # hub/, plugins/ and conformance/ compile
    import pathlib
    assert sys.version_info[:2] == (3, 10), sys.version
    failed = {n: i.reason for n, i in hub.plugins().info.items() if i.status != "loaded"}
    assert not failed, failed
    assert hub.__file__.startswith(sys.argv[3]), (hub.__file__, sys.argv[3])
    for folder in sys.argv[3:]:
        for f in sorted(pathlib.Path(folder).rglob("*.py")):
            compile(f.read_text(encoding="utf-8"), str(f), "exec")



run_checks()
"""


@pytest.fixture(scope="module")
def slayer_checks(tmp_path_factory, this_checkout) -> tuple[dict[str, dict], Path]:
    """Runs SLAYER_CHECKS once in the Lava environment; returns each check's result."""
    folder = tmp_path_factory.mktemp("slayer-checks")
    sources = [this_checkout / d for d in ("hub", "hub_plugins", "hub_conformance")]
    return run_in_lava(SLAYER_CHECKS, this_checkout, folder, *sources, timeout=300), folder


@pytest.mark.parametrize("name", names(SLAYER_CHECKS))
def test_slayer_format_in_the_lava_environment(slayer_checks, name: str) -> None:
    assert_passed(slayer_checks[0], name)


@pytest.mark.parametrize("name", ["dense", "conv", "delayed"])
def test_hub_to_slayer_export_runs_in_netx_like_slayer(slayer_checks, name: str) -> None:
    """hub -> slayer -> slayer's export_hdf5 -> Lava's netx, and the hub's own netx file of
    the same graph: the same spikes as slayer (per-neuron axonal delays included)."""
    _, folder = slayer_checks
    x = np.load(folder / f"exported-{name}-x.npy")
    want = np.load(folder / f"exported-{name}-y.npy")
    assert 0 < want.sum() < want.size
    np.testing.assert_array_equal(lava.run_netx(folder / f"exported-{name}.net", x), want)
    np.testing.assert_array_equal(lava.run_netx(folder / f"hub-{name}.net", x), want)
    graph = hub.load(folder / f"exported-{name}.net")  # no input layer: sized by layer 0
    np.testing.assert_array_equal(hub.simulate(graph, x).numpy(), want)


def test_conformance_rows_of_netx_and_slayer_pass_in_the_lava_environment(tmp_path) -> None:
    """hub <-> netx file <-> slayer blocks, each run in its own runtime (Lava's fixed-point
    simulator for netx, slayer's quantised forward), bit for bit: the suite run where slayer
    lives, on the Loihi cases slayer can hold."""
    out = conformance_in_lava(tmp_path, "--formats", "hub,netx,slayer", "--tier", "fixed",
                              "--cases", "*slayer*", timeout=1200)
    assert "66 runs of 2 cases along 33 routes" in out and "66 pass" in out
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| **slayer** | 8 pass | 8 pass | 6 pass |" in report


def test_fixed_alif_takes_loihi_integers_only() -> None:
    """The ALIF slayer's alif blocks import as (arithmetic="fixed") refuses what Loihi's
    integers cannot hold, with the field; this runs without the Lava environment."""
    import torch

    with pytest.raises(hub.ParameterError) as e:
        hub.ALIF(alpha=0.3, beta=0.5, arithmetic="fixed")
    assert e.value.field == "alpha"
    with pytest.raises(hub.ParameterError) as e:
        hub.ALIF(beta=0.5, threshold=1.5, arithmetic="fixed")
    assert e.value.field == "threshold"
    graph = hub.Graph.chain(hub.Input(shape=(2,)), ("fc", hub.Linear(weight=np.eye(2) * 0.5)),
                            ("alif", hub.ALIF(beta=0.5, threshold=64.0, current_gain=1.0,
                                              arithmetic="fixed")))
    with pytest.raises(hub.HubError) as e:
        hub.simulate(graph, torch.ones(3, 1, 2))
    assert e.value.field == "input"


def test_slayer_is_unavailable_outside_the_lava_environment() -> None:
    fmt = hub.plugins().format("slayer", usable=False)
    if lava._slayer_here():
        assert fmt.unavailable() is None
    else:
        assert ".venv-lava" in fmt.unavailable() and "scripts/setup-lava" in fmt.unavailable()
        with pytest.raises(hub.PluginError, match="'slayer' is unavailable"):
            hub.plugins().format("slayer")


# These two point the bridge at other interpreters, which stops the session's worker: last.
def test_missing_lava_environment_says_what_to_do(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv(lava.PYTHON_ENV, str(tmp_path / "no-such-python"))
    assert "scripts/setup-lava" in lava.unavailable()
    net = tmp_path / "any.net"
    net.write_bytes(b"")
    with pytest.raises(lava.LavaUnavailable, match="Lava environment missing.*scripts/setup-lava"):
        lava.run_netx(net, np.zeros((2, 1, 3), np.float32))
    assert issubclass(lava.LavaUnavailable, hub.HubError)
    assert not issubclass(lava.LavaUnavailable, hub.UnsupportedError)  # never "not expressible"


def test_conformance_says_lava_runs_were_not_run_when_lava_is_missing(monkeypatch, tmp_path):
    """Without Lava the netx rows are "not run" with the reason: neither a pass nor a failure."""
    import hub_conformance
    from hub_conformance import report

    monkeypatch.setenv(lava.PYTHON_ENV, str(tmp_path / "no-such-python"))
    suite = hub_conformance.run(["hub", "netx"], tiers=["fixed"], match="dense-if")
    by_runtime = {o.route.label: (o.route.runtime, o.status) for o in suite.outcomes}
    assert {s for r, s in by_runtime.values() if r == "netx"} == {"unavailable"}, by_runtime
    assert {s for r, s in by_runtime.values() if r == "hub"} == {"pass"}, by_runtime
    assert suite.ok
    text = report.markdown(suite, [])
    assert "Not run: a runtime is unavailable" in text and "scripts/setup-lava" in text


def test_a_python_without_lava_is_a_broken_environment(monkeypatch, tmp_path: Path) -> None:
    """An interpreter that cannot import lava-dl: the worker fails at once, with its reason."""
    if lava._lava_here():
        pytest.skip("this interpreter has lava-dl")
    monkeypatch.setenv(lava.PYTHON_ENV, sys.executable)
    net = tmp_path / "any.net"
    net.write_bytes(b"")
    with pytest.raises(lava.LavaUnavailable, match="(?s)Lava environment broken.*lava"):
        lava.run_netx(net, np.zeros((2, 1, 3), np.float32))
    monkeypatch.delenv(lava.PYTHON_ENV)
    lava.shutdown()
