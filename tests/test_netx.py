"""The netx format: lava-dl's hdf5 networks, read and written with h5py, run in Lava's netx."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import hub
from hub import LoihiCUBA
from hub_conformance.paths import different
from hub_conformance.testing import FormatTests
from hub_plugins import netx
from .test_resonators import rf

ROOT = Path(__file__).resolve().parents[1]
LAVA_PYTHON = ROOT / ".venv-lava" / "bin" / "python"
needs_lava = pytest.mark.skipif(not LAVA_PYTHON.exists(),
                                reason=".venv-lava (lava-dl 0.6) is not installed here; "
                                       "scripts/setup-lava creates it")


def _w(rng, *shape, lo=-2, hi=4):
    return rng.integers(lo, hi, size=shape).astype(np.float32)


def _conv_net(rng) -> hub.Graph:
    return hub.Graph.chain(
        ("input", hub.Input(shape=(2, 6, 6))),
        ("conv", hub.Conv2d(weight=_w(rng, 4, 2, 3, 3), padding=(1, 1), stride=(1, 1))),
        ("n1", LoihiCUBA(i_decay=1024, v_decay=256, threshold=5)),
        ("pool", hub.SumPool2d(kernel_size=(2, 2), stride=(2, 2))),
        ("n2", LoihiCUBA(i_decay=4096, v_decay=100, threshold=1, bias=[[[1]], [[0]], [[-1]],
                                                                       [[2]]])),
        ("flat", hub.Flatten()),
        ("fc", hub.Affine(weight=_w(rng, 5, 36), bias=np.float32([1, 0, -1, 2, 0]))),
        ("n3", LoihiCUBA(i_decay=4096, v_decay=512, threshold=3)))


def _recurrent_net(rng, i_decay=1024, v_decay=256, bias=0) -> hub.Graph:
    return hub.Graph(
        {"input": hub.Input(shape=(6,)), "fc1": hub.Linear(weight=_w(rng, 8, 6, lo=-5, hi=6)),
         "n1": LoihiCUBA(i_decay=i_decay, v_decay=v_decay, threshold=int(rng.integers(3, 30)),
                         bias=bias),
         "rec": hub.Linear(weight=_w(rng, 8, 8, lo=-3, hi=3)),
         "fc2": hub.Linear(weight=_w(rng, 4, 8, lo=-3, hi=5)),
         "n2": LoihiCUBA(i_decay=2000, v_decay=300, threshold=3), "output": hub.Output()},
        [("input", "fc1"), ("fc1", "n1"), ("n1", "rec"), ("rec", "n1"), ("n1", "fc2"),
         ("fc2", "n2"), ("n2", "output")])


def _spikes(rng, *shape, p=0.3):
    return torch.as_tensor((rng.random(shape) < p).astype(np.float32))


@pytest.mark.parametrize("build", [_conv_net, _recurrent_net])
def test_round_trip_is_identical(tmp_path, build):
    rng = np.random.default_rng(0)
    g = build(rng)
    path = hub.save(g, to="netx", out=tmp_path / "net.net")
    back = hub.load(path)
    assert different(g, back) is None
    shape = g.plan().output_shapes["input"]
    x = _spikes(rng, 12, 2, *shape)
    assert torch.equal(hub.simulate(back, x), hub.simulate(g, x))


def test_graph_metadata_survives_the_file(tmp_path):
    """The graph's dt travels with the file, so netx -> NIR needs no --dt; other tools'
    files (no metadata) read as before, and malformed metadata is refused by name."""
    rng = np.random.default_rng(8)
    g = hub.Graph.chain(("input", hub.Input(shape=(6,))), ("fc", hub.Linear(weight=_w(rng, 8, 6))),
                        ("n1", hub.IF(threshold=2.0)), metadata={"dt": 2.0 ** -10})
    path = hub.save(g, to="netx", out=tmp_path / "net.net")
    back = hub.load(path)
    assert back.metadata == g.metadata
    hub.convert(back, to="nir")  # NIR export needs the dt
    with h5py.File(path, "a") as f:
        del f.attrs[netx.ATTR_METADATA]
    assert hub.load(path).metadata == {}
    with h5py.File(path, "a") as f:
        f.attrs[netx.ATTR_METADATA] = "[1, 2]"
    with pytest.raises(hub.FormatError, match="'hub.metadata' is not a JSON object") as e:
        hub.load(path)
    assert e.value.file == str(path)


def test_layers_are_written_as_slayer_writes_them(tmp_path):
    path = hub.save(_conv_net(np.random.default_rng(0)), to="netx", out=tmp_path / "n.net")
    with h5py.File(path) as f:
        types = [f[f"layer/{i}/type"][0].decode() for i in range(len(f["layer"]))]
        assert types == ["input", "conv", "conv", "flatten", "dense"]
        assert f["layer/0/shape"][()].tolist() == [2, 6, 6]
        conv = f["layer/1"]
        assert conv["weight"].dtype == np.float32 and conv["weight"].shape == (4, 2, 3, 3)
        assert conv["stride"][()].tolist() == [1, 1] and conv["padding"][()].tolist() == [1, 1]
        assert conv["neuron/type"][()] == b"CUBA" and conv["neuron/iDecay"][()] == 1024
        assert conv["neuron/vThMant"][()] == 5 and conv["neuron/vThMant"].dtype == np.int64
        pool = f["layer/2"]  # netx 0.6 cannot run 'pool': written as a depthwise convolution
        assert pool["groups"][()] == 4 and pool["weight"].shape == (4, 1, 2, 2)
        assert (pool["weight"][()] == 1).all() and pool["bias"][()].tolist() == [1, 0, -1, 2]
        assert f["layer/4/weight"].shape == (5, 36)
        assert f["layer/4/bias"][()].tolist() == [1, 0, -1, 2, 0]


def test_pool_lowering_is_exact(tmp_path):
    """Without the hub's attributes the file reads back as what netx runs: a depthwise
    convolution in place of the pooling, and a dense layer with pooling folded into it."""
    rng = np.random.default_rng(5)
    pooled = _conv_net(rng)
    folded = hub.Graph.chain(
        ("input", hub.Input(shape=(2, 6, 6))),
        ("conv", hub.Conv2d(weight=_w(rng, 3, 2, 3, 3), padding=(1, 1))),
        ("n1", LoihiCUBA(i_decay=800, v_decay=256, threshold=2)),
        ("pool", hub.SumPool2d(kernel_size=(2, 2), stride=(2, 2))),
        ("flat", hub.Flatten()),
        ("fc", hub.Linear(weight=_w(rng, 5, 27))),
        ("n2", LoihiCUBA(i_decay=4096, v_decay=512, threshold=3)))
    for index, g in enumerate((pooled, folded)):
        path = hub.save(g, to="netx", out=tmp_path / f"{index}.net")
        with h5py.File(path, "r+") as f:
            for layer in f["layer"].values():
                for key in list(layer.attrs):
                    del layer.attrs[key]
        lowered = hub.load(path)
        types = [n.type for _, n in lowered.walk()]
        assert "SumPool2d" not in types
        x = _spikes(rng, 20, 3, 2, 6, 6, p=0.5)
        want = hub.simulate(g, x)
        assert 0 < float(want.mean()) < 1
        assert torch.equal(hub.simulate(lowered, x), want)


def test_folded_pooling_reads_back_as_written(tmp_path):
    """pool -> flatten -> dense, folded into one dense layer, reads back as the original nodes
    (the ``hub.folded`` attribute), unless the file's weights no longer match them."""
    rng = np.random.default_rng(6)
    g = hub.Graph.chain(
        ("input", hub.Input(shape=(2, 6, 6))),
        ("conv", hub.Conv2d(weight=_w(rng, 3, 2, 3, 3), padding=(1, 1))),
        ("n1", LoihiCUBA(i_decay=800, v_decay=256, threshold=2)),
        ("pool", hub.SumPool2d(kernel_size=(2, 2), stride=(2, 2))),
        ("flat", hub.Flatten()),
        ("fc", hub.Linear(weight=_w(rng, 5, 27))),
        ("n2", LoihiCUBA(i_decay=4096, v_decay=512, threshold=3)))
    path = hub.save(g, to="netx", out=tmp_path / "f.net")
    assert different(g, hub.load(path)) is None
    with h5py.File(path, "r+") as f:
        weight = f["layer/3/weight"]
        weight[0, 0] = weight[0, 0] + 1
        written = weight[()]
    edited = hub.load(path)  # the file's dense layer, which is what netx runs
    dense = [n for _, n in edited.walk() if isinstance(n, hub.Linear)]
    assert [n.type for _, n in edited.walk()].count("SumPool2d") == 0
    assert len(dense) == 1 and np.array_equal(dense[0].weight, written)


def _refused(g, node, field):
    with pytest.raises(hub.UnsupportedError) as e:
        netx.plan_layers(g)
    assert e.value.node == node and e.value.field == field, str(e.value)
    return e.value


def _one(neuron, weight=np.float32([[1, 2], [3, -1]])):
    return hub.Graph.chain(("input", hub.Input(shape=(2,))), ("fc", hub.Linear(weight=weight)),
                           ("n", neuron))


def test_refusals_name_node_and_field():
    ok = LoihiCUBA(i_decay=0, v_decay=0, threshold=1)
    assert "float decays" in str(_refused(_one(hub.LIF(beta=0.5)), "n", "type"))
    _refused(_one(hub.IF(threshold=2.0, comparison=">=")), "n", "comparison")
    _refused(_one(hub.IF(threshold=2.5)), "n", "threshold")
    _refused(_one(hub.IF(threshold=2.0, reset="subtract")), "n", "reset")
    _refused(_one(ok.replace(refractory=2)), "n", "refractory")
    _refused(_one(ok.replace(delay=1)), "n", "delay")
    _refused(_one(ok.replace(spike_mode="graded")), "n", "spike_mode")
    _refused(_one(ok.replace(threshold=[1, 2])), "n", "threshold")
    _refused(_one(ok, np.float32([[0.5, 1], [1, 1]])), "fc", "weight")
    _refused(_one(ok, np.float32([[300, 1], [1, 1]])), "fc", "weight")
    affine = hub.Graph.chain(("input", hub.Input(shape=(2,))),
                             ("fc", hub.Affine(weight=np.float32([[1, 2], [3, -1]]), bias=1.0)),
                             ("n", ok))
    assert "i_decay=4096" in str(_refused(affine, "fc", "bias"))


def test_integrate_and_fire_is_written_exactly(tmp_path):
    """An IF with '>', zero reset, gain 1 and an integer threshold is Loihi's neuron with
    i_decay=4096, v_decay=0 on integer inputs; the file remembers it was an IF."""
    rng = np.random.default_rng(8)
    g = hub.Graph.chain(("input", hub.Input(shape=(6,))), ("fc", hub.Linear(weight=_w(rng, 8, 6))),
                        ("n1", hub.IF(threshold=2.0)),
                        ("fc2", hub.Affine(weight=_w(rng, 3, 8), bias=_w(rng, 3))),
                        ("n2", hub.IF(threshold=3.0)))
    path = hub.save(g, to="netx", out=tmp_path / "if.net")
    assert different(hub.load(path), g) is None
    with h5py.File(path, "r+") as f:
        assert f["layer/1/neuron/iDecay"][()] == 4096 and f["layer/1/neuron/vDecay"][()] == 0
        f["layer/1"].attrs[netx.ATTR_NEURON] = "{not json"  # edited: the file's neuron wins
        del f["layer/2"].attrs[netx.ATTR_NEURON]
    loihi = hub.load(path)
    assert [n.type for _, n in loihi.walk()].count("LoihiCUBA") == 2
    x = torch.as_tensor(rng.integers(0, 3, (30, 2, 6)).astype(np.float32))
    want = hub.simulate(g, x)
    assert 0 < float(want.mean()) < 1
    assert torch.equal(hub.simulate(loihi, x), want)


def test_weight_check_replays_netx_optimisation():
    assert netx.netx_weights_exact(np.array([[-2, 3], [1, 0]])) is None
    assert netx.netx_weights_exact(np.array([[254, -256]])) is None
    # all-negative weights with a power-of-two minimum: netx clips -256 to -255, then truncates
    assert "inhibitory" in netx.netx_weights_exact(np.array([[-1, -1]]))
    assert "all-zero" in netx.netx_weights_exact(np.zeros((2, 2)))
    # no positive weight: netx's mixed scale is 127 / 0 = inf, so the negative side sets it
    assert netx.netx_weights_exact(np.array([[0, -3], [-1, 0]])) is None
    assert "would change 1 of 2" in netx.netx_weights_exact(np.array([[0, -4]]))


def test_branching_graph_is_refused():
    n = LoihiCUBA(i_decay=0, v_decay=0, threshold=1)
    g = hub.Graph({"input": hub.Input(shape=(2,)), "a": hub.Linear(weight=np.eye(2)),
                   "b": hub.Linear(weight=np.eye(2)), "n": n, "output": hub.Output()},
                  [("input", "a"), ("input", "b"), ("a", "n"), ("b", "n"), ("n", "output")])
    with pytest.raises(hub.UnsupportedError, match="chain"):
        netx.plan_layers(g)


def _file(path, layers):
    with h5py.File(path, "w") as f:
        for i, layer in enumerate(layers):
            g = f.create_group(f"layer/{i}")
            for key, value in layer.items():
                if key == "type":
                    g.create_dataset("type", (1,), "S10", [value.encode()])
                else:
                    g.create_dataset(key, data=value)
    return path


NEURON = {"neuron/type": "CUBA", "neuron/iDecay": 10, "neuron/vDecay": 20,
          "neuron/vThMant": 30}


def test_reads_a_minimal_file_with_netx_semantics(tmp_path):
    path = _file(tmp_path / "m.net", [
        {"type": "input", "shape": np.array([3])},
        {"type": "dense", "shape": np.array([2]), "weight": np.float32([[1, 2, 3], [4, 5, 6]]),
         "bias": np.array([1, -1]), **NEURON}])
    g = hub.load(path)
    n = g.nodes["n1"]
    assert (int(n.i_decay), int(n.v_decay), int(n.threshold)) == (10, 20, 30)
    assert n.bias.tolist() == [1, -1] and n.bias_exp == 6
    assert isinstance(g.nodes["fc1"], hub.Linear)


@pytest.mark.parametrize("layers, kind, text", [
    ([{"type": "input", "shape": np.array([3])}, {"type": "dense", "shape": np.array([2])}],
     hub.FormatError, "node 'layer/1', field 'weight': is missing"),
    ([{"type": "input", "shape": np.array([3])}, {"type": "dense", "shape": np.array([2]),
      "weight": np.float32([[0.5, 1, 1], [1, 1, 1]]), **NEURON}],
     hub.FormatError, "non-integer"),
    ([{"type": "input", "shape": np.array([3])}, {"type": "blob"}],
     hub.FormatError, "unknown layer type 'blob'"),
    ([{"type": "input", "shape": np.array([4])}, {"type": "average", "shape": np.array([2])}],
     hub.UnsupportedError, "'average' is not supported"),
    ([{"type": "input", "shape": np.array([3])}, {"type": "dense", "shape": np.array([2]),
      "weight": np.ones((2, 3), np.float32), **NEURON, "neuron/type": "SDNN",
      "neuron/activation": "sigmoid"}],
     hub.UnsupportedError, "'sigmoid', but netx builds Lava's SigmaDelta"),
    ([{"type": "input", "shape": np.array([3])}, {"type": "dense", "shape": np.array([2]),
      "weight": np.ones((2, 3), np.float32), **NEURON, "neuron/type": "SPIKY"}],
     hub.UnsupportedError, "'SPIKY' has no canonical counterpart"),
    ([{"type": "input", "shape": np.array([3])}, {"type": "dense", "shape": np.array([2]),
      "weight": np.ones((2, 3), np.float32), **NEURON, "neuron/refDelay": 3}],
     hub.UnsupportedError, "refDelay"),
    ([{"type": "input", "shape": np.array([3])}, {"type": "dense", "shape": np.array([2]),
      "weight": np.ones((2, 3), np.float32), **NEURON, "neuron/iDecay": np.array([1, 2])}],
     hub.FormatError, "node 'layer/1/neuron', field 'iDecay': should be one value per layer"),
])
def test_bad_files_name_file_layer_and_key(tmp_path, layers, kind, text):
    path = _file(tmp_path / "bad.net", layers)
    with pytest.raises(kind) as e:
        hub.load(path)
    assert text in str(e.value) and "bad.net" in str(e.value)


def test_not_hdf5(tmp_path):
    path = tmp_path / "junk.net"
    path.write_bytes(b"not hdf5 at all")
    with pytest.raises(hub.FormatError, match="(?i)junk.net.*not an hdf5 file"):
        hub.load(path)


def test_quantize_float_lif_and_report(tmp_path):
    rng = np.random.default_rng(2)
    g = hub.Graph.chain(("input", hub.Input(shape=(6,))),
                        ("fc", hub.Linear(weight=rng.normal(size=(8, 6)).astype(np.float32))),
                        ("n1", hub.LIF(beta=0.9, threshold=1.0)),
                        ("fc2", hub.Linear(weight=rng.normal(size=(3, 8)).astype(np.float32))),
                        ("n2", hub.CubaLIF(alpha=0.75, beta=0.875, threshold=0.5)))
    with pytest.raises(hub.UnsupportedError):
        hub.save(g, to="netx", out=tmp_path / "strict.net")
    x = _spikes(rng, 40, 4, 6, p=0.4)
    q, report = netx.quantize(g, x=x)
    assert set(report["layers"]) == {"n1", "n2"}
    layer = report["layers"]["n1"]
    assert layer["weight_error"] <= 0.5 / layer["scale"] and layer["decay_error"] < 1 / 4096
    n1 = q.nodes["n1"]
    assert isinstance(n1, LoihiCUBA) and int(n1.i_decay) == 4096 and int(n1.v_decay) == 410
    assert int(q.nodes["n2"].i_decay) == 1024 and int(q.nodes["n2"].v_decay) == 512
    assert 0.9 <= report["agreement"] <= 1
    path = hub.save(g, to="netx", out=tmp_path / "q.net", quantize=True)
    assert different(hub.load(path), q) is None
    with pytest.warns(netx.QuantizationWarning, match="n1: scale"):
        hub.save(g, to="netx", out=tmp_path / "loose.net", strict=False)


@needs_lava
def test_reads_a_slayer_written_file(tmp_path):
    script = textwrap.dedent(f"""
        import h5py, torch
        from lava.lib.dl import slayer
        p = {{'threshold': 1.25, 'current_decay': 0.25, 'voltage_decay': 0.03}}
        blocks = [slayer.block.cuba.Conv(p, 2, 4, 3, padding=1),
                  slayer.block.cuba.Pool(p, 2, stride=2), slayer.block.cuba.Flatten(),
                  slayer.block.cuba.Dense(p, 36, 5)]
        x = (torch.rand(1, 2, 6, 6, 4) < 0.5).float()
        for b in blocks:
            x = b(x)
        with h5py.File({str(tmp_path / 'slayer.net')!r}, 'w') as f:
            layer = f.create_group('layer')
            layer.create_dataset('0/type', (1,), 'S10', [b'input'])
            layer.create_dataset('0/shape', data=[2, 6, 6])
            for i, b in enumerate(blocks):
                b.export_hdf5(layer.create_group(str(i + 1)))
    """)
    done = subprocess.run([str(LAVA_PYTHON), "-c", script], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    g = hub.load(tmp_path / "slayer.net")
    conv, n1, pool, n2 = (g.nodes[k] for k in ("conv1", "n1", "conv2", "n2"))
    assert conv.weight.shape == (4, 2, 3, 3) and conv.padding == (1, 1)
    assert np.array_equal(conv.weight, np.round(conv.weight))
    assert (int(n1.i_decay), int(n1.v_decay), int(n1.threshold)) == (1024, 123, 80)
    assert pool.groups == 4 and pool.stride == (2, 2) and (pool.weight == 64).all()
    assert g.nodes["fc3"].weight.shape == (5, 36)
    assert g.plan().output_shapes["output"] == (5,)


@needs_lava
def test_runs_bit_exact_in_lava(tmp_path):
    rng = np.random.default_rng(1)
    fmt = hub.plugins().format("netx")
    for k, (i_decay, v_decay) in enumerate([(37, 4000), (0, 1234)]):
        g = _recurrent_net(rng, i_decay, v_decay, bias=rng.integers(-2, 3, 8))
        path = hub.save(g, to="netx", out=tmp_path / f"r{k}.net")
        x = torch.as_tensor(rng.integers(0, 3, (30, 2, 6)).astype(np.float32)
                            * (rng.random((30, 2, 6)) < 0.5))
        want = hub.simulate(g, x)
        assert 0 < float(want.mean()) < 1
        assert np.array_equal(np.asarray(fmt.run(path, x)), want.numpy())
    g = _conv_net(np.random.default_rng(4))
    path = hub.save(g, to="netx", out=tmp_path / "conv.net")
    x = _spikes(rng, 10, 2, 2, 6, 6)
    assert np.array_equal(np.asarray(fmt.run(path, x)), hub.simulate(g, x).numpy())


class TestNetxConformance(FormatTests):
    """The fixed tier: every route that ends in a netx run runs Lava through the bridge."""

    format = "netx"
    peers = ("hub",)
    tiers = ("fixed",)


@needs_lava
def test_a_slayer_file_runs_in_lava_as_the_hub_reads_it(tmp_path):
    """Axis orders: an asymmetric kernel, stride and padding, then a flatten, written by
    slayer, give in Lava's netx exactly what hub.simulate gives for the graph read here."""
    path = tmp_path / "slayer.net"
    script = textwrap.dedent(f"""
        import h5py, torch
        torch.manual_seed(0)
        from lava.lib.dl import slayer
        p = {{'threshold': 0.5, 'current_decay': 0.25, 'voltage_decay': 0.03}}
        blocks = [slayer.block.cuba.Conv(p, 2, 3, (3, 2), padding=(1, 0), stride=(1, 2),
                                         weight_scale=2),
                  slayer.block.cuba.Flatten(), slayer.block.cuba.Dense(p, 54, 4, weight_scale=2)]
        x = (torch.rand(1, 2, 6, 6, 4) < 0.5).float()
        for b in blocks:
            x = b(x)
        with h5py.File({str(path)!r}, 'w') as f:
            layer = f.create_group('layer')
            layer.create_dataset('0/type', (1,), 'S10', [b'input'])
            layer.create_dataset('0/shape', data=[2, 6, 6])
            for i, b in enumerate(blocks):
                b.export_hdf5(layer.create_group(str(i + 1)))
    """)
    done = subprocess.run([str(LAVA_PYTHON), "-c", script], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    g = hub.load(path)
    conv = g.nodes["conv1"]
    assert conv.weight.shape == (3, 2, 3, 2) and conv.stride == (1, 2) and conv.padding == (1, 0)
    x = _spikes(np.random.default_rng(0), 20, 2, 2, 6, 6, p=0.4)
    want = hub.simulate(g, x)
    assert 0 < float(want.mean()) < 1
    assert np.array_equal(np.asarray(hub.plugins().format("netx").run(path, x)), want.numpy())


# -- axonal delays: a LoihiCUBA's delay is the next dense layer's input delays ---------------


def _delayed_net(rng, d1=2, d2=1, bias=0) -> hub.Graph:
    return hub.Graph.chain(
        ("input", hub.Input(shape=(6,))),
        ("fc1", hub.Linear(weight=_w(rng, 8, 6, lo=-3, hi=6))),
        ("n1", LoihiCUBA(i_decay=4096, v_decay=512, threshold=3, delay=d1)),
        ("fc2", hub.Linear(weight=_w(rng, 7, 8, lo=-3, hi=6))),
        ("n2", LoihiCUBA(i_decay=2048, v_decay=128, threshold=4, delay=d2, bias=bias)),
        ("fc3", hub.Linear(weight=_w(rng, 4, 7, lo=-3, hi=6))),
        ("n3", LoihiCUBA(i_decay=512, v_decay=1024, threshold=5)))


def test_delays_are_written_as_input_delays_and_read_back(tmp_path):
    rng = np.random.default_rng(11)
    g = _delayed_net(rng)
    path = hub.save(g, to="netx", out=tmp_path / "d.net")
    with h5py.File(path) as f:
        assert "delay" not in f["layer/1"]
        d2, d3 = f["layer/2/delay"][()], f["layer/3/delay"][()]
    # as slayer's export_hdf5 writes delays (float32), one per input of the layer they reach
    assert d2.dtype == np.float32 and d2.tolist() == [2.0] * 8
    assert d3.dtype == np.float32 and d3.tolist() == [1.0] * 7
    back = hub.load(path)
    assert different(g, back) is None
    x = _spikes(rng, 16, 2, 6, p=0.5)
    assert torch.equal(hub.simulate(back, x), hub.simulate(g, x))


def test_a_delay_node_after_a_neuron_is_its_axonal_delay(tmp_path):
    """A slayer import's timing (a Delay after each block's neuron) is written as the next
    dense layer's delays; after the last layer it is a latency netx cannot hold."""
    rng = np.random.default_rng(12)
    nodes = [("input", hub.Input(shape=(6,))),
             ("fc1", hub.Linear(weight=_w(rng, 8, 6, lo=-3, hi=6))),
             ("n1", LoihiCUBA(i_decay=4096, v_decay=512, threshold=3)),
             ("d1", hub.Delay(delay=np.full(8, 2))),
             ("fc2", hub.Linear(weight=_w(rng, 4, 8, lo=-3, hi=6))),
             ("n2", LoihiCUBA(i_decay=512, v_decay=1024, threshold=5))]
    g = hub.Graph.chain(*nodes)
    path = hub.save(g, to="netx", out=tmp_path / "d.net")
    with h5py.File(path) as f:
        assert f["layer/2/delay"][()].tolist() == [2.0] * 8
    back = hub.load(path)
    assert int(back.nodes["n1"].delay) == 2
    x = _spikes(rng, 16, 2, 6, p=0.5)
    assert torch.equal(hub.simulate(back, x), hub.simulate(g, x))
    trailing = hub.Graph.chain(*nodes, ("d2", hub.Delay(delay=1)))
    with pytest.raises(hub.UnsupportedError, match="delay_shift=False") as e:
        hub.save(trailing, to="netx", out=tmp_path / "t.net")
    assert (e.value.node, e.value.field) == ("d2", "delay")
    # per-neuron delays: the layer's own per-output delays, as slayer writes delay=True
    uneven = hub.Graph.chain(*nodes[:3], ("d1", hub.Delay(delay=np.arange(8))), *nodes[4:])
    path = hub.save(uneven, to="netx", out=tmp_path / "u.net")
    with h5py.File(path) as f:
        assert f["layer/1/delay"][()].tolist() == list(range(8))
    back = hub.load(path)
    assert different(uneven, back) is None
    assert torch.equal(hub.simulate(back, x), hub.simulate(uneven, x))
    biased = hub.Graph.chain(*nodes[:2], ("n1", nodes[2][1].replace(bias=1)),
                             ("d1", hub.Delay(delay=np.arange(8))), *nodes[4:])
    with pytest.raises(hub.UnsupportedError, match="biased layer 'n1'") as e:
        hub.save(biased, to="netx", out=tmp_path / "b.net")
    assert (e.value.node, e.value.field) == ("d1", "delay")


def test_delays_netx_cannot_hold_are_refused():
    ok = LoihiCUBA(i_decay=0, v_decay=0, threshold=1)
    # the last neuron feeds the output: there is no next layer to hold its delay
    assert "output" in str(_refused(_one(ok.replace(delay=1)), "n", "delay"))
    two = hub.Graph.chain(("input", hub.Input(shape=(2,))),
                          ("fc", hub.Linear(weight=np.float32([[1, 2], [3, -1]]))),
                          ("n", ok.replace(delay=63)),
                          ("fc2", hub.Linear(weight=np.float32([[1, 1]]))), ("n2", ok))
    assert "0 to 62" in str(_refused(two, "n", "delay"))
    into_conv = hub.Graph.chain(
        ("input", hub.Input(shape=(1, 4, 4))),
        ("conv", hub.Conv2d(weight=np.ones((2, 1, 3, 3), np.float32), padding=(1, 1))),
        ("n", ok.replace(delay=2)),
        ("conv2", hub.Conv2d(weight=np.ones((2, 2, 3, 3), np.float32))), ("n2", ok))
    assert "create_conv" in str(_refused(into_conv, "n", "delay"))
    rec = _recurrent_net(np.random.default_rng(0))
    before = hub.Graph.chain(("input", hub.Input(shape=(6,))),
                             ("fc0", hub.Linear(weight=np.eye(6, dtype=np.float32))),
                             ("n0", ok.replace(delay=1)), rec)
    assert "RecurrentDense" in str(_refused(before, "n0", "delay"))


def _dense_file(path, delay, first=False):
    layers = [{"type": "input", "shape": np.array([3])},
              {"type": "dense", "shape": np.array([4]), "weight": np.ones((4, 3), np.float32),
               **NEURON},
              {"type": "dense", "shape": np.array([2]), "weight": np.ones((2, 4), np.float32),
               **NEURON}]
    layers[1 if first else 2]["delay"] = delay
    return _file(path, layers)


@pytest.mark.parametrize("delay", [np.float32([3, 3, 3, 3]), np.float32([3, 3]),
                                   np.full((2, 4), 3, np.float32)])
def test_a_uniform_delay_key_is_the_previous_neurons_delay(tmp_path, delay):
    """Input delays ([in], the hub's), slayer's per-output ones ([out]) and a per-synapse matrix
    all delay every synapse of the layer alike when uniform."""
    g = hub.load(_dense_file(tmp_path / "u.net", delay))
    assert g.nodes["n1"].delay == 3 and g.nodes["n2"].delay == 0


@pytest.mark.parametrize("delay, first, text", [
    (np.float32([[1, 2, 1, 1], [2, 1, 1, 1]]), False, "field 'delay': holds a delay per synapse"),
    (np.float32([[0, 1, 0, 1], [1, 0, 1, 0]]), False, "per input ([in]) or per output"),
    (np.float32([63, 63, 63, 63]), False, "clips delays"),
    (np.float32([1, 1, 1]), False, "field 'delay': should be [4]"),
])
def test_delays_the_hub_cannot_hold_name_file_layer_and_key(tmp_path, delay, first, text):
    with pytest.raises(hub.HubError) as e:
        hub.load(_dense_file(tmp_path / "bad.net", delay, first))
    assert text in str(e.value) and "bad.net" in str(e.value) and "layer" in str(e.value)


def test_a_delay_on_a_conv_layer_is_refused(tmp_path):
    path = _file(tmp_path / "bad.net", [
        {"type": "input", "shape": np.array([1, 3, 3])},
        {"type": "conv", "shape": np.array([1, 3, 3]), "weight": np.ones((1, 1, 1, 1), np.float32),
         "delay": np.float32([1]), **NEURON}])
    with pytest.raises(hub.UnsupportedError,
                       match="node 'layer/1', field 'delay'.*conv layer.*create_conv"):
        hub.load(path)


@needs_lava
def test_delays_run_bit_exact_in_lava(tmp_path):
    """hub.simulate of a net with axonal delays == Lava's netx run of the file, bit for bit,
    and the delays matter (the same net without them gives other spikes)."""
    rng = np.random.default_rng(5)
    g = _delayed_net(rng, d1=2, d2=3)
    path = hub.save(g, to="netx", out=tmp_path / "d.net")
    x = _spikes(rng, 20, 2, 6, p=0.5)
    want = hub.simulate(g, x)
    assert 0.05 < float(want.mean()) < 0.95
    undelayed = hub.Graph.chain(*[(n, node.replace(delay=0) if isinstance(node, LoihiCUBA)
                                   else node) for n, node in g.nodes.items() if n != "output"])
    assert not torch.equal(hub.simulate(undelayed, x), want)
    got = np.asarray(hub.plugins().format("netx").run(path, x))
    assert np.array_equal(got, want.numpy())
    assert np.array_equal(np.asarray(hub.plugins().format("netx").run(
        hub.save(hub.load(path), to="netx", out=tmp_path / "again.net"), x)), want.numpy())


BIAS = np.int64([3, -2, 1, 0, 2, -1, 4])


@needs_lava
@pytest.mark.parametrize("batch", [1, 3])
def test_a_bias_after_the_delays_runs_bit_exact_in_lava(tmp_path, batch):
    """A deeper layer's bias starts with the sample, not with Lava's first step: networks that
    Lava runs one sample at a time reset each layer in the step the sample reaches it."""
    rng = np.random.default_rng(6)
    g = _delayed_net(rng, d1=2, d2=0, bias=BIAS)
    path = hub.save(g, to="netx", out=tmp_path / "b.net")
    x = _spikes(rng, 20, batch, 6, p=0.5)
    want = hub.simulate(g, x)
    assert 0.05 < float(want.mean()) < 0.95
    assert np.array_equal(np.asarray(hub.plugins().format("netx").run(path, x)), want.numpy())


def test_a_delay_at_or_after_a_bias_is_refused(tmp_path):
    """Spikes a bias causes before the sample arrives would travel through the delay into it."""
    g = _delayed_net(np.random.default_rng(6), d1=0, d2=1, bias=BIAS)
    with pytest.raises(hub.UnsupportedError, match="node 'n2', field 'delay'.*biased layer 'n2'"):
        hub.save(g, to="netx", out=tmp_path / "b.net")


def test_quantize_keeps_an_axonal_delay():
    g = hub.Graph.chain(("input", hub.Input(shape=(3,))),
                        ("fc", hub.Linear(weight=np.float32([[0.5, -0.25, 1], [1, 0.5, 0.5]]))),
                        ("n1", hub.LIF(beta=0.75, threshold=1.0, delay=3)),
                        ("fc2", hub.Linear(weight=np.float32([[1, -0.5]]))),
                        ("n2", hub.LIF(beta=0.5, threshold=1.0)))
    q, _ = netx.quantize(g)
    assert isinstance(q.nodes["n1"], LoihiCUBA) and q.nodes["n1"].delay == 3
    assert netx.plan_layers(q)[2].data["delay"].tolist() == [3.0, 3.0]


# -- lava-dl's own files (tests/data/lava-dl, sources in its README) -------------------------

LAVA_DL = ROOT / "tests" / "data" / "lava-dl"


def _lava_dl(name: str, folder: Path) -> Path:
    import gzip
    import shutil

    path = folder / f"{name}.net"
    with gzip.open(LAVA_DL / f"{name}.net.gz") as src, open(path, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return path


def _first_layers(path: Path, count: int, out: Path, input_hw: tuple[int, int] | None = None
                  ) -> Path:
    """The file's first ``count`` layers, as they are (``input_hw`` shrinks the input image,
    and the first convolution's output shape with it, for a faster Lava run)."""
    with h5py.File(path) as f, h5py.File(out, "w") as g:
        layers = g.create_group("layer")
        for i in range(count):
            f.copy(f"layer/{i}", layers, name=str(i))
        if input_hw is not None:
            shape = layers["0/shape"][()]
            del layers["0/shape"]
            layers["0"].create_dataset("shape", data=np.array([shape[0], *input_hw]))
            conv = layers["1"]
            k, s, p = conv["kernelSize"][()], conv["stride"][()], conv["padding"][()]
            hw = [(n + 2 * pi - ki) // si + 1 for n, ki, si, pi in zip(input_hw, k, s, p)]
            out_shape = conv["shape"][()]
            del conv["shape"]
            conv.create_dataset("shape", data=np.array([out_shape[0], *hw]))
    return out


def test_lava_dl_files_load(tmp_path):
    """lava-dl's tutorial and test files read as netx builds them: files without an input
    layer (slayer's export_hdf5 writes none) take the first layer's input size; an input layer
    with a neuron is that neuron, its transform kept as metadata; 5-D slayer conv kernels and
    1-D dense weights are reshaped as netx does."""
    kinds = {
        "tiny": ["Input", "LoihiCUBA", "Conv2d", "LoihiCUBA", "Conv2d", "LoihiCUBA", "Output"],
        "oxford": ["Input", "Linear", "LoihiCUBA", "Linear", "LoihiCUBA", "Output"],
        "netx-mnist": ["Input", *["Linear", "LoihiCUBA"] * 3, "Output"],
        "bootstrap-mnist": ["Input", "LoihiCUBA", *["Linear", "LoihiCUBA"] * 3, "Output"],
        "pilotnet-snn": ["Input", "LoihiCUBA", *["Conv2d", "LoihiCUBA"] * 5, "Flatten",
                         *["Linear", "LoihiCUBA"] * 4, "Output"],
    }
    inputs = {"tiny": (3, 16, 16), "oxford": (200,), "netx-mnist": (784,),
              "bootstrap-mnist": (784,), "pilotnet-snn": (3, 66, 200)}
    for name, want in kinds.items():
        g = hub.load(_lava_dl(name, tmp_path))
        assert [type(n).__name__ for _, n in g.walk()] == want, name
        assert g.plan().output_shapes["input"] == inputs[name], name
        x = torch.zeros((2, 1, *inputs[name]))
        assert hub.simulate(g, x).shape[:2] == (2, 1)
    tiny = hub.load(tmp_path / "tiny.net")
    assert tiny.metadata["netx_input_transform"] == {"weight": 36.0, "bias": 34.0}
    assert tiny.nodes["conv1"].weight.shape == (24, 3, 5, 5)
    last_fc = [n for _, n in hub.load(tmp_path / "pilotnet-snn.net").walk()][-3]
    assert last_fc.weight.shape == (1, 10)
    # the bootstrap network's last layer has no neuron group: netx's default integrator
    last = hub.load(tmp_path / "bootstrap-mnist.net").nodes["n3"]
    assert (int(last.i_decay), int(last.v_decay), int(last.threshold)) == (0, 4096, 1 << 17)
    sdnn = hub.load(_lava_dl("pilotnet-sdnn", tmp_path))  # sigma-delta, in Lava's integers
    assert [type(n).__name__ for _, n in sdnn.walk()] == [
        "Input", "Delta", *["Conv2d", "SigmaDelta"] * 5, "Flatten",
        *["Linear", "SigmaDelta"] * 3, "Linear", "Sigma", "Output"]
    assert {n.arithmetic for _, n in sdnn.walk() if hasattr(n, "arithmetic")} == {"fixed"}


def test_lava_dl_files_round_trip(tmp_path):
    for name in ("tiny", "bootstrap-mnist"):
        g = hub.load(_lava_dl(name, tmp_path))
        back = hub.load(hub.save(g, to="netx", out=tmp_path / f"{name}-again.net"))
        assert different(g, back) is None and back.metadata == g.metadata
        with h5py.File(tmp_path / f"{name}-again.net") as f:
            assert "neuron" in f["layer/0"] and "weight" in f["layer/0"]


def test_a_file_without_input_layer_needs_the_size_of_a_strided_first_conv(tmp_path):
    path = _lava_dl("tiny", tmp_path)
    with h5py.File(path, "a") as f:  # as slayer's export_hdf5 would write tiny.net
        del f["layer/0"]
        f["layer"].move("1", "0")
        f["layer"].move("2", "1")
    with pytest.raises(hub.FormatError, match="input_shape=") as e:
        hub.load(path)
    assert e.value.node == "layer/0"
    g = hub.load(path, input_shape=(3, 16, 16))
    assert [type(n).__name__ for _, n in g.walk()][:3] == ["Input", "Conv2d", "LoihiCUBA"]


@needs_lava
def test_lava_dl_files_run_in_lava_as_the_hub_reads_them(tmp_path):
    """Each file (or, where the output layer never spikes or Lava would take minutes, its
    first layers, unchanged) gives in Lava's netx exactly what hub.simulate gives."""
    rng = np.random.default_rng(15)
    fmt = hub.plugins().format("netx")
    cases = [
        (_lava_dl("tiny", tmp_path), rng.integers(0, 3, (10, 2, 3, 16, 16))),
        # the Oxford network is trained on sparse spike trains: all its row sums are negative
        (_lava_dl("oxford", tmp_path), rng.random((30, 1, 200)) < 0.05),
        (_lava_dl("netx-mnist", tmp_path), rng.random((12, 2, 784)) < 0.3),
        # graded input: the input neuron needs 80 << 6 to spike; the last layer never spikes
        (_first_layers(_lava_dl("bootstrap-mnist", tmp_path), 3, tmp_path / "bm.net"),
         rng.integers(0, 120, (10, 2, 784))),
        (_first_layers(_lava_dl("pilotnet-snn", tmp_path), 2, tmp_path / "ps.net",
                       input_hw=(14, 20)), rng.integers(0, 40, (8, 1, 3, 14, 20))),
    ]
    for path, x in cases:
        x = torch.as_tensor(np.asarray(x, dtype=np.float32))
        want = hub.simulate(hub.load(path), x)
        assert 0 < float(want.mean()) < 1, path.name
        assert np.array_equal(np.asarray(fmt.run(path, x)), want.numpy()), path.name


# -- delays around sigma-delta and resonator layers -----------------------------------------
# netx reads a dense layer's 'delay' key whatever its neuron (create_dense -> DelayDense, which
# carries graded sigma-delta spikes as well as binary ones), except in an RF layer's
# ComplexDense; these neurons hold no delay of their own, so a Delay node stands for it.

FIXED = {"arithmetic": "fixed"}


def _sd_delayed(rng, per_neuron: bool) -> hub.Graph:
    """Sigma-delta layers with delays: on the input (Delta) layer's spikes and after a biased
    layer (``per_neuron=False``), or per neuron of an unbiased layer and then uniform."""
    w = lambda *s: (rng.integers(-60, 60, s) * 2).astype(np.float32)  # noqa: E731
    if not per_neuron:
        return hub.Graph.chain(
            ("input", hub.Input(shape=(6,))), ("n0", hub.Delta(threshold=2, **FIXED)),
            ("d0", hub.Delay(delay=int(rng.integers(1, 5)))),
            ("fc1", hub.Linear(weight=w(8, 6))),
            ("n1", hub.SigmaDelta(threshold=12, bias=rng.integers(-30, 30, 8), **FIXED)),
            ("d1", hub.Delay(delay=int(rng.integers(1, 5)))),
            ("fc2", hub.Linear(weight=w(4, 8))), ("n2", hub.Sigma(**FIXED)))
    return hub.Graph.chain(
        ("input", hub.Input(shape=(6,))), ("n0", hub.Delta(threshold=2, **FIXED)),
        ("fc1", hub.Linear(weight=w(8, 6))), ("n1", hub.SigmaDelta(threshold=12, **FIXED)),
        ("d1", hub.Delay(delay=rng.integers(0, 5, 8))),
        ("fc2", hub.Linear(weight=w(5, 8))),
        ("n2", hub.SigmaDelta(threshold=6, bias=rng.integers(-30, 30, 5), **FIXED)),
        ("d2", hub.Delay(delay=int(rng.integers(1, 5)))),
        ("fc3", hub.Linear(weight=w(3, 5))), ("n3", hub.Sigma(**FIXED)))


def _without_delays(g: hub.Graph) -> hub.Graph:
    return hub.Graph.chain(*[(n, node) for n, node in g.nodes.items()
                             if not isinstance(node, (hub.Delay, hub.Output))])


@pytest.mark.parametrize("per_neuron", [False, True])
def test_sigma_delta_delays_are_written_and_read_back(tmp_path, per_neuron):
    g = _sd_delayed(np.random.default_rng(20), per_neuron)
    path = hub.save(g, to="netx", out=tmp_path / "sd.net")
    with h5py.File(path) as f:
        delays = {k: f[f"layer/{k}/delay"][()].tolist() for k in f["layer"]
                  if "delay" in f[f"layer/{k}"]}
    if per_neuron:  # per output neuron on layer 1, input delays on layer 3
        assert delays == {"1": g.nodes["d1"].delay.tolist(),
                          "3": [float(g.nodes["d2"].delay)] * 5}
    else:  # input delays on the layers the spikes reach
        assert delays == {"1": [float(g.nodes["d0"].delay)] * 6,
                          "2": [float(g.nodes["d1"].delay)] * 8}
    assert different(g, hub.load(path)) is None


@needs_lava
@pytest.mark.parametrize("seed", [21, 22])
@pytest.mark.parametrize("per_neuron", [False, True])
def test_sigma_delta_delays_run_bit_exact_in_lava(tmp_path, seed, per_neuron):
    """Graded spikes through Lava's DelayDense: hub.simulate equals Lava's run of the written
    file, and of the file read back and written again, and the delays matter."""
    rng = np.random.default_rng(seed)
    g = _sd_delayed(rng, per_neuron)
    path = hub.save(g, to="netx", out=tmp_path / "sd.net")
    x = torch.as_tensor(rng.integers(0, 80, (16, 2, 6)), dtype=torch.float32)
    want = hub.simulate(g, x)
    assert want.abs().sum() > 0
    assert not torch.equal(hub.simulate(_without_delays(g), x), want)
    fmt = hub.plugins().format("netx")
    assert np.array_equal(np.asarray(fmt.run(path, x)), want.numpy())
    again = hub.save(hub.load(path), to="netx", out=tmp_path / "again.net")
    assert np.array_equal(np.asarray(fmt.run(again, x)), want.numpy())


def _rf_delayed(rng, delay, last=None) -> hub.Graph:
    """An RF layer whose spikes are delayed into the next layer (a CUBA one by default)."""
    return hub.Graph.chain(
        ("input", hub.Input(shape=(10,))),
        ("fc1", hub.Linear(weight=rng.integers(-8, 9, (16, 10)).astype(np.float32) * 2)),
        ("n1", rf(rng, iz=bool(rng.integers(2)))), ("d1", hub.Delay(delay=delay)),
        ("fc2", hub.Linear(weight=rng.integers(-8, 9, (8 if last else 4, 8)).astype(
            np.float32) * 4)),
        ("n2", last or LoihiCUBA(i_decay=1024, v_decay=512, threshold=3)))


@needs_lava
@pytest.mark.parametrize("seed", [23, 24])
def test_an_rf_layers_delayed_spikes_run_bit_exact_in_lava(tmp_path, seed):
    """The spikes of an RF layer delayed into the next (plain) dense layer, all alike or one
    delay per RF neuron: its 'delay' key, read back as a Delay after the resonator, and Lava
    runs it as hub.simulate."""
    rng = np.random.default_rng(seed)
    g = _rf_delayed(rng, int(rng.integers(2, 6)) if seed == 23 else rng.integers(0, 6, 8))
    path = hub.save(g, to="netx", out=tmp_path / "rf.net")
    with h5py.File(path) as f:
        want = np.broadcast_to(g.nodes["d1"].delay, (8,))
        assert f["layer/2/delay"][()].tolist() == want.tolist()
        assert "delay" not in f["layer/1"]
    assert different(g, hub.load(path)) is None
    x = torch.tensor((rng.random((40, 2, 10)) < 0.5).astype(np.float32))
    want = hub.simulate(g, x)
    assert 0 < float(want.mean()) < 1
    assert not torch.equal(hub.simulate(_without_delays(g), x), want)
    assert np.array_equal(np.asarray(hub.plugins().format("netx").run(path, x)), want.numpy())


def test_delays_netx_drops_around_rf_layers_are_refused(tmp_path):
    """netx's ComplexDense reads no 'delay' key: spikes into an RF layer cannot be delayed; a
    file with such a key is refused, not run without."""
    rng = np.random.default_rng(25)
    into_rf = _rf_delayed(rng, 2, last=rf(rng))
    with pytest.raises(hub.UnsupportedError, match="ComplexDense has no synaptic delays") as e:
        hub.save(into_rf, to="netx", out=tmp_path / "a.net")
    assert (e.value.node, e.value.field) == ("d1", "delay")
    # per RF neuron: not the RF layer's own key, but the next dense layer's input delays
    per_neuron = _rf_delayed(rng, np.arange(8))
    with h5py.File(hub.save(per_neuron, to="netx", out=tmp_path / "b.net")) as f:
        assert "delay" not in f["layer/1"] and f["layer/2/delay"][()].tolist() == list(range(8))
    path = hub.save(_rf_delayed(rng, 0), to="netx", out=tmp_path / "c.net")
    with h5py.File(path, "a") as f:
        f["layer/1"].create_dataset("delay", data=np.float32([1] * 10))
    with pytest.raises(hub.UnsupportedError, match="ComplexDense has no synaptic delays") as e:
        hub.load(path)
    assert (e.value.file, e.value.node, e.value.field) == (str(path), "layer/1", "delay")


def test_delays_netx_drops_around_sigma_delta_layers_are_refused(tmp_path):
    """netx reads no 'delay' key in a conv or input layer, whatever the neuron."""
    sdnn = {"neuron/type": "SDNN", "neuron/vThMant": 4}
    conv = _file(tmp_path / "conv.net", [
        {"type": "input", "shape": np.array([1, 3, 3]), **sdnn},
        {"type": "conv", "shape": np.array([1, 3, 3]), "weight": np.ones((1, 1, 1, 1), np.float32),
         "delay": np.float32([1]), **sdnn}])
    with pytest.raises(hub.UnsupportedError, match="create_conv") as e:
        hub.load(conv)
    assert (e.value.node, e.value.field) == ("layer/1", "delay")
    inp = _file(tmp_path / "input.net", [
        {"type": "input", "shape": np.array([3]), "delay": np.float32([2, 2, 2]), **sdnn},
        {"type": "dense", "shape": np.array([2]), "weight": np.ones((2, 3), np.float32),
         **sdnn}])
    with pytest.raises(hub.UnsupportedError, match="create_input") as e:
        hub.load(inp)
    assert (e.value.node, e.value.field) == ("layer/0", "delay")
    g = hub.Graph.chain(
        ("input", hub.Input(shape=(1, 4, 4))), ("n0", hub.Delta(threshold=2, **FIXED)),
        ("d0", hub.Delay(delay=2)),
        ("conv", hub.Conv2d(weight=np.full((2, 1, 3, 3), 2, np.float32), padding=(1, 1))),
        ("n1", hub.SigmaDelta(threshold=3, **FIXED)))
    with pytest.raises(hub.UnsupportedError, match="create_conv") as e:
        hub.save(g, to="netx", out=tmp_path / "w.net")
    assert (e.value.node, e.value.field) == ("d0", "delay")


# -- one value per layer: the declaration's uniform rule, where the writer and quantize check --


@pytest.mark.parametrize("neuron, field", [
    (hub.LIF(beta=0.75, threshold=np.float32([1, 2])), "threshold"),
    (hub.LIF(beta=np.float32([0.5, 0.75]), threshold=1.0), "v_decay"),
    (hub.CubaLIF(alpha=np.float32([0.5, 0.25]), beta=0.5, threshold=1.0), "i_decay"),
    (hub.LIF(beta=0.5, threshold=1.0, gain=np.float32([1, 2])), "gain"),
    (hub.CubaLIF(alpha=0.5, beta=0.5, threshold=1.0, current_gain=np.float32([1, 2])),
     "current_gain"),
])
def test_quantize_takes_one_value_per_layer_naming_node_and_field(neuron, field):
    with pytest.raises(hub.UnsupportedError, match="holds 2 different values") as e:
        netx.quantize(_one(neuron))
    assert (e.value.node, e.value.field) == ("n", field), str(e.value)


def test_quantize_checks_the_decays_it_makes_and_the_writer_an_exact_ifs_threshold():
    """Per-neuron betas that round to one 12-bit decay make one LoihiCUBA decay; an IF written
    exactly needs one threshold."""
    beta = np.float32([0.75, np.nextafter(np.float32(0.75), np.float32(1))])
    q, _ = netx.quantize(_one(hub.LIF(beta=beta, threshold=1.0)))
    assert int(q.nodes["n"].v_decay) == 1024
    e = _refused(_one(hub.IF(threshold=np.float32([2, 3]))), "n", "threshold")
    assert "one mantissa per layer" in str(e) and "(2, 3)" in str(e)


# -- the network's input delayed: the first dense layer's delays, a Delay after the Input ----


def _input_delayed(rng, sigma_delta: bool) -> hub.Graph:
    if sigma_delta:
        return hub.Graph.chain(
            ("input", hub.Input(shape=(6,))), ("input_delay", hub.Delay(delay=3)),
            ("fc1", hub.Linear(weight=(rng.integers(-60, 60, (8, 6)) * 2).astype(np.float32))),
            ("n1", hub.SigmaDelta(threshold=12, bias=rng.integers(-30, 30, 8), **FIXED)),
            ("fc2", hub.Linear(weight=(rng.integers(-60, 60, (4, 8)) * 2).astype(np.float32))),
            ("n2", hub.Sigma(**FIXED)))
    return hub.Graph.chain(("input", hub.Input(shape=(6,))), ("input_delay", hub.Delay(delay=3)),
                           *list(_delayed_net(rng, d1=2, d2=0, bias=BIAS).nodes.items())[1:-1])


@pytest.mark.parametrize("sigma_delta", [False, True])
def test_a_delayed_input_is_the_first_layers_delay_key(tmp_path, sigma_delta):
    g = _input_delayed(np.random.default_rng(26), sigma_delta)
    path = hub.save(g, to="netx", out=tmp_path / "in.net")
    with h5py.File(path) as f:
        assert f["layer/1/delay"][()].tolist() == [3.0] * 6
    assert different(g, hub.load(path)) is None
    # a file with no input layer (as slayer writes) delays its input the same way
    with h5py.File(path, "a") as f:
        del f["layer/0"]
        for i in range(1, len(f["layer"]) + 1):
            f["layer"].move(str(i), str(i - 1))
    back = hub.load(path)
    assert isinstance(back.nodes["input_delay"], hub.Delay)
    x = torch.as_tensor(np.random.default_rng(27).integers(0, 3, (12, 2, 6)), dtype=torch.float32)
    assert torch.equal(hub.simulate(back, x), hub.simulate(g, x))


def test_a_delayed_input_netx_cannot_hold_is_refused_and_one_per_input_is_written(tmp_path):
    ok = LoihiCUBA(i_decay=0, v_decay=0, threshold=1)
    into_input_neuron = hub.Graph.chain(
        ("input", hub.Input(shape=(2,))), ("d", hub.Delay(delay=2)), ("n0", ok),
        ("fc", hub.Linear(weight=np.float32([[1, 2], [3, -1]]))), ("n", ok))
    assert "input layer has no synapse" in str(_refused(into_input_neuron, "d", "delay"))
    uneven = hub.Graph.chain(("input", hub.Input(shape=(2,))),
                             ("d", hub.Delay(delay=np.int64([1, 2]))),
                             ("fc", hub.Linear(weight=np.float32([[1, 2], [3, -1]]))), ("n", ok))
    with h5py.File(hub.save(uneven, to="netx", out=tmp_path / "u.net")) as f:
        # per input; as a matrix, since netx reads a vector of 'out' delays per output
        assert f["layer/1/delay"][()].tolist() == [[1, 2], [1, 2]]
    assert different(uneven, hub.load(tmp_path / "u.net")) is None


@needs_lava
@pytest.mark.parametrize("sigma_delta", [False, True])
def test_a_delayed_input_runs_bit_exact_in_lava(tmp_path, sigma_delta):
    """The first layer's DelayDense delays the source's input as the Delay does, biases included
    (they start with the sample, not with the delayed input)."""
    rng = np.random.default_rng(28)
    g = _input_delayed(rng, sigma_delta)
    path = hub.save(g, to="netx", out=tmp_path / "in.net")
    x = torch.as_tensor(rng.integers(0, 80, (16, 2, 6)) if sigma_delta else
                        (rng.random((20, 2, 6)) < 0.5), dtype=torch.float32)
    want = hub.simulate(g, x)
    assert want.abs().sum() > 0
    assert not torch.equal(hub.simulate(_without_delays(g), x), want)
    assert np.array_equal(np.asarray(hub.plugins().format("netx").run(path, x)), want.numpy())


# -- delays that differ between a layer's inputs: a Delay on the previous layer's output ------
# create_dense broadcasts [out] (first), [in] and [out, in] delays into DelayDense's matrix;
# a matrix that is one delay per input plus one per output is a Delay before the synapse and
# a Delay after the neuron.


def _per_input_file(path, delay, out=2, bias=None):
    layers = [{"type": "input", "shape": np.array([3])},
              {"type": "dense", "shape": np.array([4]), "weight": np.ones((4, 3), np.float32),
               **NEURON},
              {"type": "dense", "shape": np.array([out]),
               "weight": np.ones((out, 4), np.float32), "delay": delay, **NEURON}]
    if bias is not None:
        layers[2]["bias"] = bias
    return _file(path, layers)


@pytest.mark.parametrize("delay, into, per_output", [
    (np.float32([1, 0, 3, 2]), [1, 0, 3, 2], None),                       # [in]
    (np.float32([[1, 0, 3, 2]] * 2), [1, 0, 3, 2], None),                 # [out, in], same rows
    (np.float32([[1, 0, 3, 2], [3, 2, 5, 4]]), [1, 0, 3, 2], [0, 2]),     # per input + output
    (np.float32([[2, 2, 2, 2], [0, 0, 0, 0]]), None, [2, 0]),             # per output, as a matrix
])
def test_per_input_delays_are_a_delay_on_the_previous_output(tmp_path, delay, into, per_output):
    g = hub.load(_per_input_file(tmp_path / "i.net", delay))
    delays = {n: node.delay.tolist() for n, node in g.nodes.items() if isinstance(node, hub.Delay)}
    want = {"d1": into, "d2": per_output}
    assert delays == {k: v for k, v in want.items() if v}
    order = list(g.nodes)
    assert (order.index("d1") < order.index("fc2")) if into else "d1" not in order
    # the same network with the key's synapse delays applied by hand, one step at a time
    x = _spikes(np.random.default_rng(0), 24, 2, 3, p=0.6)
    h = hub.simulate(hub.Graph.chain(*[(n, node) for n, node in g.nodes.items()
                                       if n in ("input", "fc1", "n1")]), x)
    matrix = np.broadcast_to(delay if delay.ndim == 2 else delay[None, :], (2, 4)).astype(int)
    current = torch.zeros(24, 2, 2)
    for j in range(2):
        for i in range(4):
            d = int(matrix[j, i])
            current[d:, :, j] += h[:24 - d, :, i]
    n2 = hub.Graph.chain(("input", hub.Input(shape=(2,))), ("n2", g.nodes["n2"]))
    assert torch.equal(hub.simulate(g, x), hub.simulate(n2, current))


def test_a_per_input_delay_key_where_in_equals_out_is_read_per_output(tmp_path):
    """netx takes a vector of ``out`` delays as per-output first, also where ``in == out``."""
    g = hub.load(_per_input_file(tmp_path / "o.net", np.float32([1, 0, 3, 2]), out=4))
    assert g.nodes["d2"].delay.tolist() == [1, 0, 3, 2] and "d1" not in g.nodes


def test_per_output_delays_on_a_biased_layer_are_refused_on_read(tmp_path):
    with pytest.raises(hub.UnsupportedError, match="node 'layer/2', field 'delay'.*bias"):
        hub.load(_per_input_file(tmp_path / "b.net", np.float32([[1, 0, 3, 2], [3, 2, 5, 4]]),
                                 bias=np.array([1, 0])))
    # input delays are not output delays: a bias on the layer they reach is read
    g = hub.load(_per_input_file(tmp_path / "i.net", np.float32([1, 0, 3, 2]),
                                 bias=np.array([1, 0])))
    assert g.nodes["d1"].delay.tolist() == [1, 0, 3, 2]


def _cuba(rng, **kw) -> LoihiCUBA:
    return LoihiCUBA(i_decay=int(rng.integers(1024, 4097)), v_decay=int(rng.integers(0, 2048)),
                     threshold=int(rng.integers(2, 5)), **kw)


def _per_input_nets(rng) -> list[hub.Graph]:
    """Per-neuron delays the writer puts on the next dense layer's inputs: on the network's
    input; with a layer's own per-output delays (an [out, in] matrix of sums); after a conv
    layer's neuron (into a flatten and dense layer); after an input layer's neuron and a biased
    sigma-delta layer, into a layer with as many inputs as outputs ([out, in], equal rows)."""
    dense = hub.Graph.chain(
        ("input", hub.Input(shape=(6,))), ("d0", hub.Delay(delay=rng.integers(0, 5, 6))),
        ("fc1", hub.Linear(weight=_w(rng, 8, 6, lo=-3, hi=6))), ("n1", _cuba(rng)),
        ("d1", hub.Delay(delay=rng.integers(0, 5, 8))),
        ("fc2", hub.Linear(weight=_w(rng, 8, 8, lo=-3, hi=6))), ("n2", _cuba(rng, delay=1)),
        ("d2", hub.Delay(delay=rng.integers(0, 5, 8))),
        ("fc3", hub.Linear(weight=_w(rng, 4, 8, lo=-3, hi=6))),
        ("n3", _cuba(rng, bias=rng.integers(-1, 2, 4))))
    conv = hub.Graph.chain(
        ("input", hub.Input(shape=(2, 4, 4))),
        ("conv1", hub.Conv2d(weight=_w(rng, 3, 2, 3, 3), padding=(1, 1))), ("n1", _cuba(rng)),
        ("d1", hub.Delay(delay=rng.integers(0, 5, (3, 4, 4)))), ("flat", hub.Flatten()),
        ("fc2", hub.Linear(weight=_w(rng, 5, 48, lo=-4, hi=4))), ("n2", _cuba(rng)))
    w = lambda *s: (rng.integers(-60, 60, s) * 2).astype(np.float32)  # noqa: E731
    sd = hub.Graph.chain(
        ("input", hub.Input(shape=(6,))), ("n0", hub.Delta(threshold=2, **FIXED)),
        ("d0", hub.Delay(delay=rng.integers(0, 5, 6))), ("fc1", hub.Linear(weight=w(6, 6))),
        ("n1", hub.SigmaDelta(threshold=12, bias=rng.integers(-30, 30, 6), **FIXED)),
        ("d1", hub.Delay(delay=rng.integers(0, 5, 6))), ("fc2", hub.Linear(weight=w(6, 6))),
        ("n2", hub.Sigma(**FIXED)))
    return [dense, conv, sd]


def test_per_neuron_delays_are_written_as_input_delays_and_read_back(tmp_path):
    dense, conv, sd = _per_input_nets(np.random.default_rng(30))
    for k, g in enumerate((dense, conv, sd)):
        path = hub.save(g, to="netx", out=tmp_path / f"{k}.net")
        with h5py.File(path) as f:
            keys = {i: f[f"layer/{i}/delay"][()] for i in f["layer"] if "delay" in f[f"layer/{i}"]}
        if g is dense:  # input + per output on layer 1, per output on 2, n2's delay into 3
            d0, d1 = g.nodes["d0"].delay, g.nodes["d1"].delay
            assert np.array_equal(keys["1"], d0[None, :] + d1[:, None])
            assert keys["2"].tolist() == g.nodes["d2"].delay.tolist()
            assert keys["3"].tolist() == [1.0] * 8
        elif g is conv:  # flatten (2), dense (3): its inputs in the flatten's (C, H, W) order
            assert keys["3"].tolist() == g.nodes["d1"].delay.reshape(-1).tolist()
        else:  # 6 inputs, 6 outputs: the per-input matrix, not netx's per-output vector
            assert keys["1"].shape == (6, 6) and keys["2"].shape == (6, 6)
            assert (keys["1"] == g.nodes["d0"].delay[None, :]).all()
        back = hub.load(path)
        x = (_spikes(np.random.default_rng(k), 16, 2, *g.nodes["input"].shape, p=0.5)
             if g is not sd else torch.as_tensor(np.random.default_rng(k).integers(
                 0, 80, (16, 2, 6)), dtype=torch.float32))
        assert torch.equal(hub.simulate(back, x), hub.simulate(g, x))
        # read back, n2's delay and d2 are one Delay (d2 + 1): the same network, written again
        again = hub.load(hub.save(back, to="netx", out=tmp_path / f"{k}b.net"))
        assert different(back, again) is None


@needs_lava
@pytest.mark.parametrize("seed", [31, 32])
def test_per_input_delays_run_bit_exact_in_lava(tmp_path, seed):
    """hub.simulate of each net == Lava's run of its file, and of the file read back and
    written again; without its delays each net gives other outputs."""
    rng = np.random.default_rng(seed)
    fmt = hub.plugins().format("netx")
    for k, g in enumerate(_per_input_nets(rng)):
        shape = g.nodes["input"].shape
        sd = isinstance(g.nodes.get("n0"), hub.Delta)
        x = (torch.as_tensor(rng.integers(0, 80, (20, 2, *shape)), dtype=torch.float32) if sd
             else _spikes(rng, 20, 2, *shape, p=0.5))
        want = hub.simulate(g, x)
        assert want.abs().sum() > 0 and (sd or float(want.mean()) < 0.95)
        plain = hub.Graph.chain(*[(n, node.replace(delay=0) if isinstance(node, LoihiCUBA)
                                   else node) for n, node in _without_delays(g).nodes.items()
                                  if n != "output"])
        assert not torch.equal(hub.simulate(plain, x), want)
        path = hub.save(g, to="netx", out=tmp_path / f"{k}.net")
        assert np.array_equal(np.asarray(fmt.run(path, x)), want.numpy()), k
        again = hub.save(hub.load(path), to="netx", out=tmp_path / f"{k}b.net")
        assert np.array_equal(np.asarray(fmt.run(again, x)), want.numpy()), k


@needs_lava
def test_a_slayer_delay_export_runs_in_lava_as_the_hub_reads_it(tmp_path):
    """cuba Dense blocks with delay=True (learnable axonal delays), written by slayer's own
    export_hdf5 (one delay per output neuron on the block's layer): hub.simulate of the file
    equals Lava's run of it, and its delays matter."""
    path = tmp_path / "slayer.net"
    script = textwrap.dedent(f"""
        import h5py, torch
        torch.manual_seed(3)
        from lava.lib.dl import slayer
        p = {{'threshold': 0.5, 'current_decay': 0.25, 'voltage_decay': 0.03}}
        blocks = [slayer.block.cuba.Dense(p, 6, 8, weight_scale=2, delay=True),
                  slayer.block.cuba.Dense(p, 8, 5, weight_scale=2, delay=True),
                  slayer.block.cuba.Dense(p, 5, 4, weight_scale=2)]
        x = (torch.rand(1, 6, 4) < 0.5).float()
        for b in blocks:
            x = b(x)
        for b in blocks[:2]:  # learnt delays, as training leaves them
            b.delay.delay.data = torch.rand(b.delay.delay.shape) * 6
        with h5py.File({str(path)!r}, 'w') as f:
            layer = f.create_group('layer')
            layer.create_dataset('0/type', (1,), 'S10', [b'input'])
            layer.create_dataset('0/shape', data=[6])
            for i, b in enumerate(blocks):
                b.export_hdf5(layer.create_group(str(i + 1)))
    """)
    done = subprocess.run([str(LAVA_PYTHON), "-c", script], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    with h5py.File(path) as f:
        assert f["layer/1/delay"].shape == (8,) and f["layer/2/delay"].shape == (5,)
        assert len(set(f["layer/1/delay"][()].tolist())) > 1
    g = hub.load(path)
    assert [n for n, node in g.nodes.items() if isinstance(node, hub.Delay)] == ["d1", "d2"]
    x = _spikes(np.random.default_rng(1), 24, 2, 6, p=0.5)
    want = hub.simulate(g, x)
    assert 0 < float(want.mean()) < 1
    assert not torch.equal(hub.simulate(_without_delays(g), x), want)
    assert np.array_equal(np.asarray(hub.plugins().format("netx").run(path, x)), want.numpy())


def _dense_comp_file(path):
    return _file(path, [{"type": "input", "shape": np.array([3])},
                        {"type": "dense_comp", "shape": np.array([2]),
                         "weight/real": np.ones((2, 3), np.float32),
                         "weight/imag": np.ones((2, 3), np.float32),
                         "neuron/type": "RF_PHASE"}])


def test_a_dense_comp_layer_is_refused_as_netx_cannot_build_it(tmp_path):
    path = _dense_comp_file(tmp_path / "dc.net")
    with pytest.raises(hub.UnsupportedError, match="create_complex_dense") as e:
        hub.load(path)
    assert (e.value.file, e.value.node) == (str(path), "layer/1")
    assert "type 'dense'" in str(e.value) and "unknown" not in str(e.value)


@needs_lava
def test_netx_itself_cannot_build_a_dense_comp_layer(tmp_path):
    """The refusal's reason, checked against netx 0.6: building the file fails there, and the
    Lava bridge refuses the file with the reason instead of running into it."""
    path = _dense_comp_file(tmp_path / "dc.net")
    script = textwrap.dedent(f"""
        from lava.lib.dl.netx import hdf5
        assert not hasattr(hdf5.Network, 'create_complex_dense')
        try:
            hdf5.Network(net_config={str(path)!r})
        except AttributeError as e:
            assert 'create_complex_dense' in str(e), e
        else:
            raise SystemExit('netx built a dense_comp layer')
    """)
    done = subprocess.run([str(LAVA_PYTHON), "-c", script], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    with pytest.raises(hub.HubError, match="create_complex_dense"):
        hub.plugins().format("netx").run(path, torch.zeros(4, 1, 3))


def test_per_neuron_delays_in_a_row_add_up_in_the_key(tmp_path):
    """Two per-neuron Delays after a layer's neuron (with its inputs delayed per input too)
    are one per-output delay each; the key holds the sums, which read back as one Delay."""
    rng = np.random.default_rng(33)
    a, b, c = rng.integers(0, 4, 5), rng.integers(0, 4, 4), rng.integers(0, 4, 4)
    g = hub.Graph.chain(
        ("input", hub.Input(shape=(5,))), ("d0", hub.Delay(delay=a)),
        ("fc1", hub.Linear(weight=_w(rng, 4, 5, lo=-3, hi=6))), ("n1", _cuba(rng)),
        ("d1", hub.Delay(delay=b)), ("d1b", hub.Delay(delay=c)),
        ("fc2", hub.Linear(weight=_w(rng, 3, 4, lo=-3, hi=6))), ("n2", _cuba(rng)))
    path = hub.save(g, to="netx", out=tmp_path / "r.net")
    with h5py.File(path) as f:
        assert np.array_equal(f["layer/1/delay"][()], a[None, :] + (b + c)[:, None])
    back = hub.load(path)
    into, per_output = (node.delay for node in back.nodes.values() if isinstance(node, hub.Delay))
    assert np.array_equal(into[None, :] + per_output[:, None], a[None, :] + (b + c)[:, None])
    x = _spikes(rng, 16, 2, 5, p=0.5)
    assert torch.equal(hub.simulate(back, x), hub.simulate(g, x))


def test_a_layers_output_delays_and_the_next_layers_input_delays_are_one_delay(tmp_path):
    path = _per_input_file(tmp_path / "two.net", np.float32([1, 0, 3, 2]))
    with h5py.File(path, "a") as f:
        f["layer/1"].create_dataset("delay", data=np.float32([0, 2, 1, 1]))  # [out] of 3 -> 4
    g = hub.load(path)
    assert [(n, node.delay.tolist()) for n, node in g.nodes.items()
            if isinstance(node, hub.Delay)] == [("d1", [1, 2, 4, 3])]
    with h5py.File(hub.save(g, to="netx", out=tmp_path / "again.net")) as f:
        assert f["layer/1/delay"][()].tolist() == [1, 2, 4, 3] and "delay" not in f["layer/2"]
