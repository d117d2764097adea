"""Sigma-delta neurons: their steps, slayer's sigma_delta blocks, netx's SDNN layers and Lava.

slayer's forward is run in the Lava environment (a subprocess of ``.venv-lava``, as
``tests/test_lava.py`` does) and compared with ``hub.simulate`` of what the hub imports; netx
files (slayer's own ``export_hdf5``, lava-dl's PilotNet SDNN, the hub's writer) are run in Lava's
fixed-point simulator and compared with ``hub.simulate`` of what the hub reads. Where
``.venv-lava`` is missing those tests skip, saying so.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import hub
from hub_conformance.paths import different

from .slayer_harness import assert_passed, checkout_view, names, run_in_lava

ROOT = Path(__file__).resolve().parents[1]
LAVA_PYTHON = ROOT / ".venv-lava" / "bin" / "python"
needs_lava = pytest.mark.skipif(not LAVA_PYTHON.exists(),
                                reason=".venv-lava (lava-dl 0.6) is not installed here; "
                                       "scripts/setup-lava creates it")


@pytest.fixture
def rng(request) -> np.random.Generator:
    """Random values reproducible per test."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def _chain(*nodes: hub.Node, shape: tuple[int, ...] = (3,)) -> hub.Graph:
    return hub.Graph.chain(("input", hub.Input(shape=shape)),
                           *((f"n{i}", n) for i, n in enumerate(nodes)))


# -- the steps ------------------------------------------------------------------------------


def test_sigma_delta_float_step_by_hand() -> None:
    """sigma sums, ReLU, the change is sent where it reaches the threshold, the rest kept."""
    g = _chain(hub.SigmaDelta(threshold=0.5), shape=(1,))
    x = torch.tensor([1.0, 0.0, 0.25, 0.25, -2.0, 0.0]).reshape(6, 1, 1)
    # sigma 1, 1, 1.25, 1.5, -0.5, -0.5; relu 1, 1, 1.25, 1.5, 0, 0
    # change 1 (sent), 0, 0.25 (kept), 0.25 + 0.25 (sent), -1.5 (sent), 0
    want = [1.0, 0.0, 0.0, 0.5, -1.5, 0.0]
    assert hub.simulate(g, x).reshape(-1).tolist() == want


def test_delta_cumulative_error_and_output_floor() -> None:
    """cum_error compares the error since the last send; the output is floored to the grid."""
    g = _chain(hub.Delta(threshold=0.5, cum_error="on", resolution=0.25), shape=(1,))
    x = torch.tensor([0.375, 0.625, 0.875, 0.875]).reshape(4, 1, 1)
    # changes 0.375 (e 0.375, kept), 0.25 + 0.375 (e 1, sent 0.625, floored to 0.5),
    # 0.25 (e 0.25, kept), 0 + 0.25 (e 0.5: sent 0.25, which alone would not reach 0.5)
    assert hub.simulate(g, x).reshape(-1).tolist() == [0.0, 0.5, 0.0, 0.25]
    off = _chain(hub.Delta(threshold=0.5, resolution=0.25), shape=(1,))
    assert hub.simulate(off, x).reshape(-1).tolist() == [0.0, 0.5, 0.0, 0.0]


def test_sigma_is_a_running_sum_held_in_double() -> None:
    """slayer's cumsum accumulates in float64 and rounds each step: 2**24 + 1 + 1 is 2**24 + 2."""
    g = _chain(hub.Sigma(), shape=(1,))
    x = torch.tensor([2.0**24, 1.0, 1.0]).reshape(3, 1, 1)
    assert hub.simulate(g, x).reshape(-1).tolist() == [2.0**24, 2.0**24, 2.0**24 + 2]


def test_fixed_is_float_at_lavas_scale(rng) -> None:
    """The fixed graph (weights, threshold and bias times 64, input times 64) gives 4096 times
    the float graph's graded spikes and 2**18 times its sigma readout, bit for bit."""
    w1 = rng.integers(-60, 60, (8, 6)) * 2 / 64
    w2 = rng.integers(-60, 60, (4, 8)) * 2 / 64
    th, bias = rng.integers(1, 12, 2) / 64, rng.integers(-10, 10, 8) / 64
    low, high = -4.0, 254 / 64
    flt = _chain(hub.Quantize(grid=2 / 64, low=low, high=high), hub.Delta(threshold=th[0]),
                 hub.Linear(weight=w1), hub.SigmaDelta(threshold=th[1], bias=bias),
                 hub.Linear(weight=w2), hub.Sigma(), shape=(6,))
    fixed = {"arithmetic": "fixed"}
    fix = _chain(hub.Delta(threshold=th[0] * 64, **fixed), hub.Linear(weight=w1 * 64),
                 hub.SigmaDelta(threshold=th[1] * 64, bias=bias * 64, **fixed),
                 hub.Linear(weight=w2 * 64), hub.Sigma(**fixed), shape=(6,))
    x = torch.as_tensor(rng.integers(0, 128, (25, 2, 6)) / 32, dtype=torch.float32)
    want = hub.simulate(flt, x)
    assert want.abs().sum() > 0
    assert torch.equal(hub.simulate(fix, x * 64), want * 2**18)
    # the SigmaDelta layer's own graded spikes: 4096 times slayer's
    head = [hub.Graph.chain(*[(n, g.nodes[n]) for n in ("input", *names)])
            for g, names in ((flt, ("n0", "n1", "n2", "n3")), (fix, ("n0", "n1", "n2")))]
    spikes = hub.simulate(head[0], x)
    assert spikes.abs().sum() > 0
    assert torch.equal(hub.simulate(head[1], x * 64), spikes * 4096)


def test_fixed_arithmetic_takes_integers() -> None:
    with pytest.raises(hub.ParameterError) as e:
        hub.SigmaDelta(threshold=1.5, arithmetic="fixed")
    assert e.value.field == "threshold"
    g = _chain(hub.SigmaDelta(threshold=2, arithmetic="fixed"), shape=(1,))
    with pytest.raises(hub.HubError, match="non-integer input"):
        hub.simulate(g, torch.full((2, 1, 1), 0.5))


def test_fused_backends_run_the_reference_step(rng) -> None:
    g = _chain(hub.Linear(weight=rng.integers(-4, 4, (4, 3)) / 4),
               hub.SigmaDelta(threshold=0.25, bias=0.125))
    x = torch.as_tensor(rng.random((12, 2, 3)), dtype=torch.float32)
    assert torch.equal(hub.simulate(g, x, backend="fused"), hub.simulate(g, x))


@pytest.mark.parametrize("to, name", [("snntorch", "snnTorch"), ("norse", "Norse"),
                                      ("spikingjelly", "SpikingJelly"), ("nir", "NIR")])
@pytest.mark.parametrize("node", [hub.SigmaDelta(threshold=0.5), hub.Delta(threshold=0.5),
                                  hub.Sigma(), hub.Quantize(grid=0.5, low=-1, high=1)])
def test_other_formats_refuse_sigma_delta_naming_node_and_field(to, name, node) -> None:
    """No torch framework or NIR computes a sigma-delta neuron (NIR refuses it as it refuses
    Loihi's integer CUBA neuron): each refuses it by node and field."""
    if hub.plugins().format(to).unavailable():
        pytest.skip(f"{to} is not installed here")
    g = _chain(hub.Linear(weight=np.ones((3, 3), np.float32)), node)
    with pytest.raises(hub.UnsupportedError, match=f"{name} has no {node.type} node") as e:
        hub.convert(g, to=to)
    assert (e.value.node, e.value.field) == ("n1", "type")


# -- netx -----------------------------------------------------------------------------------


def _fixed_graph(rng, conv: bool = False) -> hub.Graph:
    fixed = {"arithmetic": "fixed"}
    if conv:
        return hub.Graph.chain(
            ("input", hub.Input(shape=(2, 6, 5))), ("n0", hub.Delta(threshold=3, **fixed)),
            ("conv1", hub.Conv2d(weight=rng.integers(-40, 40, (4, 2, 3, 3)) * 2, padding=(1, 1))),
            ("n1", hub.SigmaDelta(threshold=8, bias=rng.integers(-20, 40, (4, 1, 1)),
                                  **fixed)),
            ("flat", hub.Flatten()),
            ("fc2", hub.Linear(weight=rng.integers(-30, 30, (3, 120)) * 2)),
            ("n2", hub.Sigma(**fixed)))
    return hub.Graph.chain(
        ("input", hub.Input(shape=(6,))), ("n0", hub.Delta(threshold=2, **fixed)),
        ("fc1", hub.Linear(weight=rng.integers(-60, 60, (8, 6)) * 2)),
        ("n1", hub.SigmaDelta(threshold=12, bias=rng.integers(-30, 30, 8), **fixed)),
        ("fc2", hub.Linear(weight=rng.integers(-60, 60, (4, 8)) * 2)),
        ("n2", hub.SigmaDelta(threshold=6, **fixed)))


@pytest.mark.parametrize("conv", [False, True])
def test_netx_round_trip(tmp_path, rng, conv) -> None:
    g = _fixed_graph(rng, conv)
    back = hub.load(hub.save(g, to="netx", out=tmp_path / "sd.net"))
    assert different(g, back) is None
    with h5py.File(tmp_path / "sd.net") as f:
        assert f["layer/0/neuron/type"][()] == b"SDNN" and "bias" in f["layer/1"]


def test_netx_refuses_what_lava_would_not_run_as_written(tmp_path) -> None:
    float_graph = _chain(hub.Linear(weight=np.ones((2, 3))), hub.SigmaDelta(threshold=1))
    cases = [(float_graph, "arithmetic"),
             (_chain(hub.Linear(weight=np.ones((2, 3))),
                     hub.SigmaDelta(threshold=1, activation="identity", arithmetic="fixed")),
              "activation"),
             (_chain(hub.Linear(weight=np.ones((2, 3))),
                     hub.SigmaDelta(threshold=1, cum_error="on", arithmetic="fixed")), "cum_error")]
    for graph, field in cases:
        with pytest.raises(hub.UnsupportedError) as e:
            hub.save(graph, to="netx", out=tmp_path / "x.net", force=True)
        assert (e.value.node, e.value.field) == ("n1", field), str(e.value)


def test_a_malformed_sdnn_group_names_file_node_and_field(tmp_path) -> None:
    path = tmp_path / "bad.net"
    with h5py.File(path, "w") as f:
        f.create_dataset("layer/0/type", (1,), "S10", [b"input"])
        f.create_dataset("layer/0/shape", data=np.array([3]))
        f.create_dataset("layer/0/neuron/type", data="SDNN")
        f.create_dataset("layer/0/neuron/vThMant", data=-3)
        f.create_dataset("layer/1/type", (1,), "S10", [b"dense"])
        f.create_dataset("layer/1/shape", data=np.array([2]))
        f.create_dataset("layer/1/weight", data=np.ones((2, 3), np.float32))
        f.create_dataset("layer/1/neuron/type", data="SDNN")
        f.create_dataset("layer/1/neuron/vThMant", data=np.float32([np.nan]))
    with pytest.raises(hub.FormatError, match="must not be negative") as e:
        hub.load(path)
    assert (e.value.file, e.value.node, e.value.field) == (str(path), "layer/0/neuron", "vThMant")
    with h5py.File(path, "a") as f:
        f["layer/0/neuron/vThMant"][()] = 3
    with pytest.raises(hub.FormatError, match="NaN") as e:
        hub.load(path)
    assert (e.value.node, e.value.field) == ("layer/1/neuron", "vThMant")


@needs_lava
@pytest.mark.parametrize("conv", [False, True])
def test_hub_written_sdnn_runs_bit_exact_in_lava(tmp_path, rng, conv) -> None:
    g = _fixed_graph(rng, conv)
    path = hub.save(g, to="netx", out=tmp_path / "sd.net")
    shape = (6,) if not conv else (2, 6, 5)
    x = torch.as_tensor(rng.integers(0, 80, (16, 2, *shape)), dtype=torch.float32)
    want = hub.simulate(g, x)
    assert want.abs().sum() > 0
    assert np.array_equal(hub.plugins().format("netx").run(path, x), want.numpy())


def _lava_dl_sdnn(folder: Path) -> Path:
    import gzip
    import shutil

    path = folder / "pilotnet-sdnn.net"
    with gzip.open(ROOT / "tests" / "data" / "lava-dl" / "pilotnet-sdnn.net.gz") as src, \
            open(path, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return path


@needs_lava
def test_pilotnet_sdnn_runs_in_lava_as_the_hub_reads_it(tmp_path, rng) -> None:
    """lava-dl's PilotNet SDNN, whole (3 x 66 x 200 frames, a few steps): Lava's own run of the
    file equals hub.simulate of what the hub reads, every graded output."""
    path = _lava_dl_sdnn(tmp_path)
    x = torch.as_tensor(rng.integers(0, 256, (4, 1, 3, 66, 200)), dtype=torch.float32)
    want = hub.simulate(hub.load(path), x)
    assert (want != 0).any()
    assert np.array_equal(hub.plugins().format("netx").run(path, x), want.numpy())


# -- slayer, in the Lava environment ---------------------------------------------------------

#: Checks run in the Lava environment (:mod:`tests.slayer_harness`); argv[1]: the checkout
#: view, argv[2]: a folder for files.
SLAYER_CHECKS = r"""
import h5py, numpy as np, sys, torch
import hub
from lava.lib.dl import slayer
from hub_plugins.lava import run_netx
from slayer_harness import check, forward, run_checks

out = sys.argv[2]
sd = slayer.block.sigma_delta
relu = torch.nn.functional.relu


def params(rng, **extra):
    return dict(threshold=int(rng.integers(1, 24)) / 64, activation=relu, **extra)


def graded(*shape, rng):  # on slayer's input grid (quantize_8bit: steps of 1/32)
    return torch.as_tensor(rng.integers(0, 128, shape) / 32, dtype=torch.float32)


def nets(seed):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    dense = torch.nn.ModuleList([sd.Input(params(rng)),
                                 sd.Dense(params(rng), 12, 10, weight_scale=3),
                                 sd.Dense(params(rng), 10, 8, weight_scale=3, delay_shift=True),
                                 sd.Output(params(rng), 8, 4)])
    dense[1].neuron.set_bias(torch.tensor(rng.normal(0, 0.2, 10), dtype=torch.float32))
    norm = slayer.neuron.norm.MeanOnlyBatchNorm
    conv = torch.nn.ModuleList([sd.Input(params(rng), weight=1.5, bias=0.25),
                                sd.Conv(params(rng, norm=norm), 2, 4, 3, padding=1,
                                        weight_scale=3),
                                sd.Pool(params(rng), 2),
                                sd.Conv(params(rng), 4, 3, 3, stride=2, padding=1,
                                        weight_scale=3, delay=True),
                                sd.Flatten(),
                                sd.Dense(params(rng), 3 * 2 * 2, 5, weight_scale=3)])
    xd, xc = graded(30, 2, 12, rng=rng), graded(20, 2, 2, 8, 8, rng=rng)
    forward(conv, xc)  # slayer draws the axonal delays on the first forward
    with torch.no_grad():
        conv[1].neuron.norm.running_mean = torch.tensor(rng.normal(0, 0.3, 4),
                                                        dtype=torch.float32)
        conv[3].delay.delay.data = torch.tensor(rng.uniform(0, 3, 3), dtype=torch.float32)
    return [(dense, xd, None), (conv, xc, (2, 8, 8))]


@check
def random_networks_import_and_export_exactly():
    for seed in range(3):
        for net, x, shape in nets(seed):
            want = forward(net, x)
            assert want.abs().sum() > 0, seed
            graph = hub.load(net, source="slayer", input_shape=shape)
            got = hub.simulate(graph, x)
            assert torch.equal(got, want), (seed, int((got != want).sum()))
            back = hub.convert(graph, to="slayer")
            assert torch.equal(forward(back.blocks, x), want), seed
            assert hub.load(back) == graph, seed


@check
def the_blocks_map_as_documented():
    net, x, _ = nets(0)[0]
    graph = hub.load(net)
    kinds = [type(n).__name__ for _, n in graph.walk()]
    assert kinds == ["Input", "Quantize", "Delta", "Linear", "SigmaDelta", "Linear", "SigmaDelta",
                     "Delay", "Linear", "Sigma", "Output"], kinds
    assert graph.nodes["blocks.1.neuron"].bias.shape == (10,)
    assert int(graph.nodes["blocks.2.delay"].delay) == 1


@check
def slayers_netx_file_is_slayer_at_lavas_scale():
    # slayer's own export_hdf5 of the dense network; the hub reads it in Lava's integers, and
    # Lava's run of the file, hub.simulate of it and slayer's forward (times 2**18 at the sigma
    # readout) agree; a bias set with set_bias is not exported by slayer, a norm's is (netx's
    # layer bias, the mantissa of minus the norm's quantised mean)
    torch.manual_seed(11)
    rng = np.random.default_rng(11)
    norm = slayer.neuron.norm.MeanOnlyBatchNorm
    net = torch.nn.ModuleList([sd.Input(params(rng)),
                               sd.Dense(params(rng, norm=norm), 12, 10, weight_scale=3),
                               sd.Dense(params(rng), 10, 8, weight_scale=3),
                               sd.Output(params(rng), 8, 4)])
    x = graded(24, 2, 12, rng=rng)
    forward(net, x)
    net[1].neuron.norm.running_mean = torch.tensor(rng.normal(0, 0.3, 10), dtype=torch.float32)
    want = forward(net, x)
    with h5py.File(f"{out}/slayer-sd.net", "w") as f:
        layers = f.create_group("layer")
        for i, b in enumerate(net):
            b.export_hdf5(layers.create_group(str(i)))
    graph = hub.load(f"{out}/slayer-sd.net", source="netx")
    assert graph.nodes["n1"].bias.any()
    got = hub.simulate(graph, x * 64)
    assert torch.equal(got, want * 2**18)
    lava = run_netx(f"{out}/slayer-sd.net", (x * 64).numpy())
    assert np.array_equal(lava, got.numpy())


@check
def refusals_name_block_and_field():
    rng = np.random.default_rng(0)
    cases = [
        (sd.Dense(params(rng, cum_error=True), 3, 2), "cum_error"),
        (sd.Dense(params(rng, persistent_state=True), 3, 2), "persistent_state"),
        (sd.Dense(dict(threshold=0.5, activation=torch.sigmoid), 3, 2), "activation"),
    ]
    for block, field in cases:
        try:
            hub.load(torch.nn.ModuleList([block]))
            raise AssertionError(f"{field} should be refused")
        except hub.UnsupportedError as e:
            assert (e.node, e.field) == ("blocks.0.neuron", field), str(e)
    try:
        hub.load(torch.nn.ModuleList([sd.Dense(params(rng), 3, 4), sd.Unpool(params(rng), 2)]))
        raise AssertionError("an Unpool after a Dense block should be refused")
    except hub.UnsupportedError as e:
        assert e.node == "blocks.1" and "[C, H, W]" in str(e), str(e)


run_checks()
"""


@pytest.fixture(scope="module")
def slayer_checks(tmp_path_factory) -> dict[str, dict]:
    return run_in_lava(SLAYER_CHECKS, checkout_view(tmp_path_factory.mktemp("checkout")),
                       tmp_path_factory.mktemp("sigma-delta"))


@pytest.mark.parametrize("name", names(SLAYER_CHECKS))
def test_slayer_sigma_delta_in_the_lava_environment(slayer_checks, name: str) -> None:
    assert_passed(slayer_checks, name)
