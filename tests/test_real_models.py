"""Real models in: the frameworks' own model classes and tutorial networks, imported from what
their forward computes and proved against their own run (hub_plugins.torchnn.trace).

Each test builds a model nobody here wrote (a class installed with its framework, or a tutorial
network as its tutorial writes it), imports it, and checks the graph with the model's own run
node by node and step by step (``torch_trace.prove``, which every import already runs) and on a
second input the import never saw.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hub
from hub_plugins.torchnn import trace as torch_trace

snn = pytest.importorskip("snntorch")


def same_as_native(model, fw, shape, conventions=torch_trace.CONVENTIONS):
    """Import ``model``; run it and the graph on a fresh input; return the graph."""
    traced = torch_trace.import_model(model, fw, input_shape=shape, conventions=conventions)
    x = torch_trace.probe(shape, steps=5, seed=7)  # the batch a tutorial may hard-code
    fresh = torch_trace.trace(model.eval(), fw, x, traced.convention)
    torch_trace.prove(fresh)
    native = torch_trace.native_outputs(fresh)
    ours = hub.simulate(fresh.graph, fresh.x)
    ours = ours if isinstance(ours, dict) else {"output": ours}
    for name, want in native.items():
        assert torch.equal(ours[name], want) or torch.allclose(ours[name], want, atol=1e-5), name
    return traced.graph


# -- snnTorch's tutorials, as they write them ------------------------------------------------

NUM_STEPS = 6


class Tutorial5(nn.Module):
    """snnTorch tutorial 5's network: a loop over a global number of steps, static input."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(12, 10)
        self.lif1 = snn.Leaky(beta=0.95)
        self.fc2 = nn.Linear(10, 4)
        self.lif2 = snn.Leaky(beta=0.95)

    def forward(self, x):
        mem1 = self.lif1.init_leaky()
        mem2 = self.lif2.init_leaky()
        spk2_rec = []
        mem2_rec = []
        for step in range(NUM_STEPS):
            cur1 = self.fc1(x)
            spk1, mem1 = self.lif1(cur1, mem1)
            cur2 = self.fc2(spk1)
            spk2, mem2 = self.lif2(cur2, mem2)
            spk2_rec.append(spk2)
            mem2_rec.append(mem2)
        return torch.stack(spk2_rec, dim=0), torch.stack(mem2_rec, dim=0)


class Tutorial6(nn.Module):
    """snnTorch tutorial 6's class: functional pooling and .view, state started afresh in
    every call."""

    def __init__(self, batch_size):
        super().__init__()
        self.batch_size = batch_size
        self.conv1 = nn.Conv2d(1, 4, 5)
        self.lif1 = snn.Leaky(beta=0.5)
        self.conv2 = nn.Conv2d(4, 8, 5)
        self.lif2 = snn.Leaky(beta=0.5)
        self.fc1 = nn.Linear(8 * 1 * 1, 10)
        self.lif3 = snn.Leaky(beta=0.5)

    def forward(self, x):
        mem1 = self.lif1.init_leaky()
        mem2 = self.lif2.init_leaky()
        mem3 = self.lif3.init_leaky()
        cur1 = F.max_pool2d(self.conv1(x), 2)
        spk1, mem1 = self.lif1(cur1, mem1)
        cur2 = F.max_pool2d(self.conv2(spk1), 2)
        spk2, mem2 = self.lif2(cur2, mem2)
        cur3 = self.fc1(spk2.view(self.batch_size, -1))
        spk3, mem3 = self.lif3(cur3, mem3)
        return spk3, mem3


class Regression(nn.Module):
    """snnTorch's regression tutorial: it registers lif_hidden but its forward applies li_out
    twice, with two states. Reading the registered order would be silently wrong."""

    def __init__(self, timesteps, hidden):
        super().__init__()
        self.timesteps = timesteps
        self.fc_in = nn.Linear(1, hidden)
        self.lif_in = snn.Leaky(beta=torch.rand(hidden), threshold=torch.rand(hidden),
                                learn_beta=True)
        self.fc_hidden = nn.Linear(hidden, hidden)
        self.lif_hidden = snn.Leaky(beta=torch.rand(hidden), threshold=torch.rand(hidden),
                                    learn_beta=True)
        self.fc_out = nn.Linear(hidden, 1)
        self.li_out = snn.Leaky(beta=torch.rand(1), threshold=1.0, learn_beta=True,
                                reset_mechanism="none")

    def forward(self, x):
        mem_1 = self.lif_in.init_leaky()
        mem_2 = self.lif_hidden.init_leaky()
        mem_3 = self.li_out.init_leaky()
        mem_3_rec = []
        for step in range(self.timesteps):
            x_timestep = x[step, :, :]
            cur_in = self.fc_in(x_timestep)
            spk_in, mem_1 = self.lif_in(cur_in, mem_1)
            cur_hidden = self.fc_hidden(spk_in)
            spk_hidden, mem_2 = self.li_out(cur_hidden, mem_2)
            cur_out = self.fc_out(spk_hidden)
            _, mem_3 = self.li_out(cur_out, mem_3)
            mem_3_rec.append(mem_3)
        return torch.stack(mem_3_rec)


def snntorch_fw():
    from hub_plugins.snntorch import framework

    return framework()


def test_snntorch_tutorial_5_loops_over_time_with_explicit_state():
    torch.manual_seed(0)
    graph = same_as_native(Tutorial5(), snntorch_fw(), (12,))
    assert [graph.nodes[n].type for n in ("fc1", "lif1", "fc2", "lif2")] == [
        "Affine", "LIF", "Affine", "LIF"]
    assert len(graph.outputs) == 2  # the spikes and the membrane the tutorial records


def test_snntorch_tutorial_6_class_pools_functionally_and_starts_fresh_each_call():
    torch.manual_seed(1)
    graph = same_as_native(Tutorial6(batch_size=torch_trace.PROBE_BATCH), snntorch_fw(),
                           (1, 16, 16), conventions=("step",))
    types = {n.type for n in graph.nodes.values()}
    assert {"MaxPool2d", "Flatten", "Threshold"} <= types  # its state never outlives a call


def test_the_regression_tutorial_imports_what_its_forward_computes():
    torch.manual_seed(2)
    model = Regression(timesteps=torch_trace.PROBE_STEPS, hidden=6)
    graph = hub.load(model, input_shape=(1,))
    assert "lif_hidden" not in graph.nodes  # registered, never called
    assert {"li_out", "li_out_1"} <= set(graph.nodes)  # called twice per step
    assert graph.nodes["li_out"].type == "LIF" and graph.nodes["li_out_1"].type == "LI"


def test_a_misread_model_is_refused_naming_the_node_and_step(monkeypatch):
    """Break the importer's mapping of a Leaky: the proof at import must catch it."""
    import hub_plugins.snntorch.reading as plugin

    real = plugin._import_neuron

    def wrong(m, strict, role):
        nodes = real(m, strict, role)
        return [(s, n.replace(beta=n.beta * 0.5) if s == "" else n) for s, n in nodes]

    monkeypatch.setattr(plugin, "_import_neuron", wrong)
    torch.manual_seed(0)
    with pytest.raises(hub.UnsupportedError, match="differs from the model's own run at step") \
            as e:
        hub.load(Tutorial5(), input_shape=(12,))
    assert e.value.node in ("lif1", "lif2")


def test_what_cannot_be_traced_is_refused_naming_module_and_construct():
    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.q = nn.Linear(4, 4)
            self.lif = snn.Leaky(beta=0.5, init_hidden=True)

        def forward(self, x):
            q = self.lif(self.q(x))
            return torch.softmax(q @ q.transpose(0, 1), dim=-1)

    with pytest.raises(hub.UnsupportedError) as e:
        hub.load(Attention(), input_shape=(4,))
    assert "transpose" in str(e.value) or "matmul" in str(e.value)


# -- SpikingJelly's model zoo and examples -----------------------------------------------------

sj = pytest.importorskip("spikingjelly.activation_based")


def sj_fw():
    from hub_plugins.spikingjelly import framework

    return framework()


def test_spikingjelly_fashion_mnist_csnn_example():
    from spikingjelly.activation_based.examples.conv_fashion_mnist import CSNN

    torch.manual_seed(3)
    model = CSNN(T=4, channels=4)
    traced = torch_trace.import_model(model, sj_fw(), input_shape=(1, 28, 28),
                                      conventions=("static",))
    assert traced.steps == 4  # proved at each of the T steps its forward runs, not just one
    graph = hub.load(model, input_shape=(1, 28, 28))
    assert sum(n.type == "IF" for n in graph.nodes.values()) == 4
    assert sum(n.type == "BatchNorm" for n in graph.nodes.values()) == 2


@pytest.mark.parametrize("name", ["MNISTNet", "FashionMNISTNet", "NMNISTNet", "CIFAR10Net",
                                  "CIFAR10DVSNet", "DVSGestureNet"])
def test_every_parametric_lif_net_with_its_voting_layer(name):
    from spikingjelly.activation_based import neuron
    from spikingjelly.activation_based.model import parametric_lif_net

    shapes = {"MNISTNet": (1, 28, 28), "FashionMNISTNet": (1, 28, 28),
              "NMNISTNet": (2, 34, 34), "CIFAR10Net": (3, 32, 32),
              "CIFAR10DVSNet": (2, 128, 128), "DVSGestureNet": (2, 128, 128)}
    torch.manual_seed(4)
    model = getattr(parametric_lif_net, name)(channels=2, spiking_neuron=neuron.LIFNode)
    graph = hub.load(model, input_shape=shapes[name])
    assert any(n.type == "Vote" for n in graph.nodes.values())


@pytest.mark.parametrize("build", ["spiking_resnet18", "sew_resnet18-ADD", "sew_resnet18-IAND",
                                   "spiking_vgg11_bn"])
def test_spikingjelly_resnets_and_vgg(build):
    from spikingjelly.activation_based import functional, neuron
    from spikingjelly.activation_based.model import sew_resnet, spiking_resnet, spiking_vgg

    torch.manual_seed(5)
    if build == "spiking_resnet18":
        model = spiking_resnet.spiking_resnet18(spiking_neuron=neuron.IFNode)
    elif build.startswith("sew"):
        model = sew_resnet.sew_resnet18(cnf=build.split("-")[1], spiking_neuron=neuron.IFNode)
    else:
        model = spiking_vgg.spiking_vgg11_bn(spiking_neuron=neuron.IFNode, num_classes=10)
    functional.set_step_mode(model, "m")
    graph = hub.load(model, input_shape=(3, 32, 32))
    types = [n.type for n in graph.nodes.values()]
    assert "BatchNorm" in types and "AdaptiveAvgPool2d" in types
    if build == "sew_resnet18-IAND":
        assert "Mul" in types


# -- Norse's model zoo ----------------------------------------------------------------------------

pytest.importorskip("norse")


@pytest.mark.parametrize("name", ["ConvNet", "ConvNet4"])
def test_norse_convnets_loop_over_time_with_explicit_state(name):
    from norse.torch.models import conv

    from hub_plugins.norse import framework

    torch.manual_seed(6)
    model = getattr(conv, name)(feature_size=16)
    graph = same_as_native(model, framework(), (1, 16, 16))
    types = {n.type for n in graph.nodes.values()}
    assert {"ReLU", "MaxPool2d", "Scale", "Linear"} <= types  # relu, pooling, 10 * conv2(z)
    assert graph.nodes["out"].type == "CubaLI"  # LILinearCell: li_step on linear(x, weights)


def test_check_compares_every_target_with_the_original_models_own_run(monkeypatch):
    """hub.check on a model the hub reads wrongly fails, because the reference is the model's
    own run, not the hub's reading. (The import proof is switched off to let the misreading
    through, as a reading bug the proof did not catch would.)"""
    import hub_plugins.snntorch.reading as plugin

    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 6), snn.Leaky(beta=0.5, init_hidden=True),
                          nn.Linear(6, 3), snn.Leaky(beta=0.5, init_hidden=True))
    with torch.no_grad():
        for layer in (model[0], model[2]):
            layer.weight.uniform_(0.1, 0.6)
    x = (torch.rand(12, 2, 4) < 0.6).float()
    assert hub.simulate(hub.load(model), x).sum() > 0  # the net spikes
    assert hub.check(model, targets=["snntorch"], x=x).ok

    real = plugin._import_neuron
    monkeypatch.setattr(plugin, "_import_neuron", lambda m, strict, role: [
        (s, n.replace(beta=n.beta * 0) if s == "" else n) for s, n in real(m, strict, role)])
    monkeypatch.setattr(torch_trace, "prove", lambda traced: None)
    assert not hub.check(model, targets=["snntorch"], x=x).ok


def test_a_static_input_model_runs_natively_only_on_a_constant_input():
    from hub_plugins.snntorch import SnnTorchFormat

    torch.manual_seed(0)
    x = torch.rand(1, 2, 12).expand(NUM_STEPS, 2, 12)
    out = SnnTorchFormat().run(Tutorial5(), x)
    assert out["output"].shape == (NUM_STEPS, 2, 4)
    with pytest.raises(hub.HubError, match="same at every step"):
        SnnTorchFormat().run(Tutorial5(), torch.rand(NUM_STEPS, 2, 12))
    with pytest.raises(hub.HubError, match=f"{NUM_STEPS} steps of its own"):
        SnnTorchFormat().run(Tutorial5(), torch.rand(1, 2, 12).expand(3, 2, 12))


@pytest.mark.parametrize("name", ["vgg11", "mobilenet_v2"])
def test_norse_vgg_and_mobilenet_lift_torch_layers_over_time(name):
    from norse.torch.models import mobilenet, vgg

    torch.manual_seed(7)
    model = vgg.vgg11(num_classes=10) if name == "vgg11" else mobilenet.mobilenet_v2(
        num_classes=10)
    graph = hub.load(model, input_shape=(3, 32, 32))
    types = {n.type for n in graph.nodes.values()}
    assert "AdaptiveAvgPool2d" in types if name == "vgg11" else "BatchNorm" in types


def test_spikingjelly_recurrent_examples_import_and_match():
    """The three networks of SpikingJelly's sequential Fashion-MNIST example, as it builds them:
    the synapse filter and the recurrent container come in as a filter node and recurrent
    edges, and each graph reproduces the model's own run."""
    from spikingjelly.activation_based import functional
    from spikingjelly.activation_based.examples import rsnn_sequential_fmnist as rs

    torch.manual_seed(0)
    for cls, kinds in ((rs.PlainNet, {"IF": 2}),
                       (rs.StatefulSynapseNet, {"IF": 2, "SynapseFilter": 1}),
                       (rs.FeedBackNet, {"IF": 2})):
        model = cls()
        functional.set_step_mode(model, "m")
        graph = same_as_native(model, sj_fw(), (28,))
        types = [n.type for n in graph.flat().nodes.values()]
        assert {k: types.count(k) for k in kinds} == kinds, cls.__name__
    assert any(graph.plan().recurrent.values()), "FeedBackNet's feedback is a recurrent edge"


def test_spikingjelly_lif_mnist_example():
    from spikingjelly.activation_based.examples.lif_fc_mnist import SNN

    graph = same_as_native(SNN(tau=2.0), sj_fw(), (1, 28, 28))
    assert [n.type for n in graph.nodes.values()] == ["Input", "Flatten", "Linear", "LIF",
                                                      "Output"]


def test_spikformer_attention_is_refused_naming_the_module_and_what_is_missing():
    from spikingjelly.activation_based import neuron
    from spikingjelly.activation_based.model import spikformer

    model = spikformer.spikformer_ti(T=2, img_size_h=32, img_size_w=32, num_classes=10,
                                     spiking_neuron=neuron.LIFNode)
    with pytest.raises(hub.UnsupportedError, match="no canonical counterpart") as e:
        hub.load(model, input_shape=(3, 32, 32))
    assert e.value.node == "blocks.0.attn"  # the patch stem before it imports


def test_spikingjelly_multi_step_containers_in_a_class_of_ones_own():
    from spikingjelly.activation_based import layer, neuron

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = layer.SeqToANNContainer(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4))
            self.n1 = neuron.LIFNode(step_mode="m")
            self.b = layer.MultiStepContainer(nn.MaxPool2d(2), nn.Flatten())
            self.fc = layer.Linear(64, 5, step_mode="m")
            self.n2 = neuron.IFNode(step_mode="m")

        def forward(self, x):
            return self.n2(self.fc(self.b(self.n1(self.a(x)))))

    torch.manual_seed(8)
    model = Net()
    with torch.no_grad():
        model.a[1].running_mean.uniform_(-0.2, 0.2)
        model.a[1].running_var.uniform_(0.5, 2.0)
    graph = same_as_native(model, sj_fw(), (1, 8, 8), conventions=("sequence",))
    assert [n.type for n in graph.nodes.values()] == [
        "Input", "Conv2d", "BatchNorm", "LIF", "MaxPool2d", "Flatten", "Affine", "IF", "Output"]


# -- the nets snnTorch's own NIR tests build (tests/test_nir.py there), at a small size ----------


class NetWithAvgPool(nn.Module):
    """snnTorch's NIR test net: convolution, pooling, flatten, per-neuron Leaky layers, the last
    with output=True (its forward returns (spk, mem) as is)."""

    def __init__(self, side=8, channels=4, hidden=12):
        super().__init__()
        n = side * side * channels // 4
        self.conv1 = nn.Conv2d(1, channels, kernel_size=3, stride=1, padding=1)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)
        self.flatten = nn.Flatten()
        self.lif1 = snn.Leaky(beta=0.9 * torch.ones(n), threshold=torch.ones(n),
                              init_hidden=True)
        self.fc1 = nn.Linear(n, hidden)
        self.lif2 = snn.Leaky(beta=0.9 * torch.ones(hidden), threshold=torch.ones(hidden),
                              init_hidden=True, output=True)

    def forward(self, x):
        x = self.pool(self.conv1(x))
        x = self.flatten(x)
        x = self.lif1(x)
        x = self.fc1(x)
        x = self.lif2(x)
        return x


@pytest.mark.parametrize("recurrent", ["RSynaptic", "RLeaky"])
def test_snntorchs_nir_test_nets(recurrent):
    torch.manual_seed(9)
    graph = same_as_native(NetWithAvgPool(), snntorch_fw(), (1, 8, 8))
    assert len(graph.outputs) == 1  # output=True's (spk, mem): the spikes
    options = dict(alpha=0.5 * torch.ones(16)) if recurrent == "RSynaptic" else {}
    lif1 = getattr(snn, recurrent)(beta=0.9 * torch.ones(16), V=torch.ones(16), all_to_all=False,
                                   init_hidden=True, **options)
    model = nn.Sequential(nn.Linear(20, 16), lif1, nn.Linear(16, 5),
                          snn.Leaky(beta=0.9 * torch.ones(5), threshold=torch.ones(5),
                                    init_hidden=True, output=True))
    graph = same_as_native(model, snntorch_fw(), (20,))
    assert graph.nodes["1_rec"].type == "Scale"  # the one-to-one recurrence, V


@pytest.mark.parametrize("framework", ["spikingjelly", "norse"])
def test_a_container_the_hub_reads_wrongly_is_refused_by_its_own_run(framework, monkeypatch):
    """Containers are read layer by layer, and the reading is still proved: a wrong mapping
    of a neuron (forced here) makes the import fail, naming the output and the step."""
    torch.manual_seed(10)
    if framework == "spikingjelly":
        from spikingjelly.activation_based import layer, neuron

        import hub_plugins.spikingjelly.reading as plugin
        from hub_plugins.spikingjelly.neurons import _neuron_table

        model = nn.Sequential(layer.Linear(6, 8), neuron.LIFNode(tau=2.0))
        wrong = {k: (lambda f: lambda m: f(m).replace(threshold=np.float32(0.25)))(f)
                 for k, f in _neuron_table().items()}
        monkeypatch.setattr(plugin, "_NEURONS", wrong)
    else:
        import norse.torch as norse

        import hub_plugins.norse.reading as plugin

        model = norse.SequentialState(nn.Linear(6, 8), norse.LIFBoxCell())
        real = plugin._import_cell
        monkeypatch.setattr(plugin, "_import_cell", lambda cell, name: real(cell, name).replace(
            threshold=np.float32(0.25)))
    with torch.no_grad():
        model[0].weight.uniform_(0.1, 0.5)
    with pytest.raises(hub.UnsupportedError, match="differs from the model's own run at step"):
        hub.load(model)
