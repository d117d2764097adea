"""hub.qat: the quantisation-aware blocks compute what Loihi computes, train, and export
losslessly (forward == hub.simulate of to_graph == Lava's netx run, bit for bit)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

import hub
from hub import qat

ROOT = Path(__file__).resolve().parents[1]
HAS_LAVA = (ROOT / ".venv-lava" / "bin" / "python").exists()
NO_LAVA = ".venv-lava (lava-dl 0.6) is not installed here; scripts/setup-lava creates it"
needs_lava = pytest.mark.skipif(not HAS_LAVA, reason=NO_LAVA)


def _conv_model() -> torch.nn.Sequential:
    torch.manual_seed(3)
    return torch.nn.Sequential(
        qat.LoihiConv2d(2, 6, 3, padding=1, init_gain=2.0),
        qat.LoihiNeuron(i_decay=1024, v_decay=512, threshold=40),
        qat.SumPool2d(2),
        qat.LoihiNeuron(v_decay=4096, threshold=0),
        qat.LoihiConv2d(6, 8, 3, padding=1, stride=1, init_gain=2.0),
        qat.LoihiNeuron(i_decay=3000, v_decay=256, threshold=30),
        qat.Flatten(),
        qat.LoihiDense(8 * 4 * 4, 5, init_gain=2.0),
        qat.LoihiNeuron(i_decay=4096, v_decay=128, threshold=20),
    )


def _dense_model() -> torch.nn.Sequential:
    torch.manual_seed(4)
    return torch.nn.Sequential(
        qat.LoihiDense(10, 16, init_gain=3.0), qat.LoihiNeuron(i_decay=700, v_decay=90,
                                                               threshold=50),
        torch.nn.Sequential(qat.LoihiDense(16, 12, init_gain=3.0),
                            qat.LoihiNeuron(i_decay=0, v_decay=2000, threshold=100)),
        torch.nn.Dropout(0.0),
        qat.LoihiDense(12, 4, init_gain=3.0), qat.LoihiNeuron(v_decay=1, threshold=30))


def _spikes(shape: tuple[int, ...], seed: int, graded: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    s = (torch.rand(shape, generator=g) < 0.4).float()
    return s * torch.randint(1, 4, shape, generator=g).float() if graded else s


@pytest.mark.parametrize("build, shape", [(_conv_model, (2, 8, 8)), (_dense_model, (10,))])
def test_forward_is_what_the_graph_simulates(build, shape):
    model = build()
    x = _spikes((14, 3, *shape), 0, graded=True)
    with torch.no_grad():
        y = model(x)
    assert 0.05 < float(y.mean()) < 0.95
    graph = qat.to_graph(model, shape)
    assert {n.type for _, n in graph.walk()} <= {"Input", "Conv2d", "SumPool2d", "Flatten",
                                                "Linear", "LoihiCUBA", "Output"}
    assert torch.equal(hub.simulate(graph, x), y)


def test_neuron_is_loihicuba_on_extreme_inputs():
    """Large inputs drive the current past 24 bits (it wraps) and the voltage to its clip."""
    rng = np.random.default_rng(0)
    a = torch.as_tensor(rng.integers(-(1 << 17), 1 << 17, size=(40, 4, 30)).astype(np.float32))
    for i_decay, v_decay, threshold in [(0, 0, 5000), (4096, 100, 60000), (1, 4095, 0),
                                        (2048, 2048, 131071)]:
        neuron = qat.LoihiNeuron(i_decay=i_decay, v_decay=v_decay, threshold=threshold)
        graph = hub.Graph.chain(("input", hub.Input(shape=(30,))),
                                ("n", hub.LoihiCUBA(i_decay=i_decay, v_decay=v_decay,
                                                    threshold=threshold)))
        want = hub.simulate(graph, a)
        assert 0 < float(want.mean()) < 1
        assert torch.equal(neuron(a), want)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_forward_is_the_same():
    """On a GPU (cuDNN may use TF32 for convolutions: integer weights up to 127 and small
    integer spikes are exact in it, and the sums accumulate in float32)."""
    model = _conv_model()
    x = _spikes((10, 4, 2, 8, 8), 5, graded=True)
    with torch.no_grad():
        want = model(x)
        got = model.cuda()(x.cuda()).cpu()
    assert torch.equal(got, want)


def test_one_step_per_call_equals_the_sequence():
    """step_mode='s' (a snnTorch-style loop, state kept until reset) gives the 'm' forward."""
    model = _conv_model()
    x = _spikes((10, 2, 2, 8, 8), 1)
    with torch.no_grad():
        want = model(x)
        for module in model.modules():
            if hasattr(module, "step_mode"):
                module.step_mode = "s"
        for _ in range(2):  # twice: reset() starts the second sequence afresh
            for module in model.modules():
                if isinstance(module, qat.LoihiNeuron):
                    module.reset()
            got = torch.stack([model(xt) for xt in x])
            assert torch.equal(got, want)
        with pytest.raises(hub.HubError, match="call reset"):
            model(x[0, :1])


def test_spikingjelly_steps_and_resets_the_blocks():
    """SpikingJelly's own functions drive the blocks: set_step_mode('s') and reset_net (which
    logs that the blocks are not its MemoryModules, and calls their reset())."""
    functional = pytest.importorskip("spikingjelly.activation_based.functional")
    model = _conv_model()
    x = _spikes((8, 2, 2, 8, 8), 6)
    with torch.no_grad():
        want = model(x)
        functional.set_step_mode(model, "s")
        for _ in range(2):
            functional.reset_net(model)
            got = torch.stack([model(xt) for xt in x])
            assert torch.equal(got, want)


def test_weights_are_loihi_mantissas_with_straight_through_gradients():
    layer = qat.LoihiDense(3, 2, scale=64)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.5, -3.0, 0.0101], [2.0, 1.999, -1.0 / 128]]))
    q = layer.mantissas()
    assert q.tolist() == [[32.0, -128.0, 1.0], [127.0, 127.0, -0.0]]
    q.sum().backward()
    assert torch.equal(layer.weight.grad, torch.full((2, 3), 64.0))
    with pytest.raises(hub.HubError, match="weight_bits"):
        qat.LoihiDense(3, 2, weight_bits=9)
    with pytest.raises(hub.HubError, match="threshold"):
        qat.LoihiNeuron(threshold=1 << 17)
    with pytest.raises(hub.HubError, match="step_mode"):
        qat.LoihiNeuron(step_mode="x")
    with pytest.raises(hub.HubError, match="in pixels"):
        qat.LoihiConv2d(1, 2, 3, padding="same")


def test_training_reduces_the_loss():
    model = _conv_model()
    x = _spikes((12, 16, 2, 8, 8), 2)
    target = torch.arange(16) % 5
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        loss = torch.nn.functional.cross_entropy(model(x).sum(0) * 0.5, target)
        optimizer.zero_grad()
        loss.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] * 0.9, losses
    # what trained is still exactly what the graph computes
    with torch.no_grad():
        y = model(x)
    assert torch.equal(hub.simulate(qat.to_graph(model, (2, 8, 8)), x), y)


def test_to_graph_refuses_what_is_not_a_block():
    model = torch.nn.Sequential(qat.LoihiDense(4, 3), torch.nn.ReLU())
    with pytest.raises(hub.UnsupportedError) as e:
        qat.to_graph(model, (4,))
    assert e.value.node == "1" and "not a QAT block" in str(e.value)
    flat = torch.nn.Sequential(qat.LoihiConv2d(1, 2, 3), torch.nn.Flatten(), qat.LoihiDense(8, 2))
    with pytest.raises(hub.UnsupportedError, match="start_dim=-3"):
        qat.to_graph(flat, (1, 4, 4))
    flat[1] = torch.nn.Flatten(-3)
    assert [n.type for _, n in qat.to_graph(flat, (1, 4, 4)).walk()][2] == "Flatten"


def test_graph_is_written_to_netx_and_read_back(tmp_path):
    model = _conv_model()
    graph = qat.to_graph(model, (2, 8, 8))
    path = hub.save(graph, to="netx", out=tmp_path / "q.net")
    x = _spikes((10, 2, 2, 8, 8), 3)
    assert torch.equal(hub.simulate(hub.load(path), x), hub.simulate(graph, x))


@needs_lava
@pytest.mark.parametrize("build, shape", [(_conv_model, (2, 8, 8)), (_dense_model, (10,))])
def test_lava_runs_what_the_module_computes(tmp_path, build, shape):
    model = build()
    x = _spikes((12, 3, *shape), 4, graded=True)
    with torch.no_grad():
        y = model(x)
    path = hub.save(qat.to_graph(model, shape), to="netx", out=tmp_path / "q.net")
    assert np.array_equal(np.asarray(hub.plugins().format("netx").run(path, x)), y.numpy())


def _example():
    spec = importlib.util.spec_from_file_location("loihi_digits",
                                                  ROOT / "examples" / "loihi_digits.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_digits_pipeline_end_to_end(tmp_path):
    """The example, tiny: train briefly, export to netx, and the accuracies agree."""
    example = _example()
    x = example.encode(np.array([[0] * 63 + [16], [8] * 64]), 4)
    assert x.shape == (4, 2, 1, 8, 8) and x[:, 0].sum() == 4 and x[:, 1].sum() == 2 * 64
    r = example.run(epochs=2, seconds=30, steps=8, channels=4, lava=HAS_LAVA, out=tmp_path,
                    limit=48)
    assert r["epochs"] == 2 and r["hub_identical"] and r["model"] == r["hub"]
    assert Path(r["path"]).exists()
    if not HAS_LAVA:
        pytest.skip(f"the Lava run: {NO_LAVA}")
    assert r["lava_identical"] and r["lava"] == r["model"]
