"""Benchmark of whole networks: each imported from its framework with ``hub.load`` and run by the
hub's default path, against the same model in its own framework's fastest CPU path, in one
process.

    .venv/bin/python bench/networks.py                           # a few minutes
    .venv/bin/python bench/networks.py --out docs/benchmarks.md  # also write a section

The networks, as their frameworks ship or teach them (small sizes, so the run stays short):

- SpikingJelly's Fashion-MNIST ``CSNN`` (``activation_based.examples.conv_fashion_mnist``), 32
  channels, T=4, multi-step mode (its own fastest CPU path; its CuPy backend is for GPUs);
- SpikingJelly's ``sew_resnet18`` (ADD connections, ``IFNode``) on 3x32x32 inputs, T=4,
  multi-step mode;
- Norse's ``ConvNet`` (``norse.torch.models.conv``) on 1x28x28, T=16 (it loops over time itself);
- snnTorch's tutorial 7 CSNN (``nn.Sequential`` of Conv2d, MaxPool2d and ``Leaky`` with
  ``init_hidden=True``) on 1x28x28, T=25, stepped as the tutorial's ``forward_pass`` does;
- an snnTorch MLP with a recurrent layer (Linear 100 -> 256, ``RLeaky`` with a 256x256
  recurrent Linear, Linear 256 -> 256, ``Leaky``, Linear 256 -> 10, ``Leaky``), T=100, batch 32,
  stepped as snnTorch's tutorials loop: the hub steps the ``RLeaky`` (on the fused kernel, one
  call per step) and its recurrent weight (a cycle) and runs the other layers over all time
  steps.

Forward runs without gradients; forward+backward computes the gradient of ``out.sum()`` with
respect to every weight (the hub: ``trainable=True``, the neurons' own parameters held fixed as
in the native models, where they are not trained either). "where the hub's time goes" splits
the hub's forward time by node type: neuron layers through the fused kernels, other layers over
all time steps at once (or stepped, where that would not give the same bits).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from statistics import median
from pathlib import Path

import torch
from conversion import write_section  # bench/ is on the path when a script here runs
from neurons import turns
from torch import nn

import hub
from hub import over_time
from hub.kernels import cpu
from hub.neurons import Neuron

START, END = "<!-- networks -->", "<!-- /networks -->"


def spikingjelly_csnn() -> tuple:
    from spikingjelly.activation_based import functional
    from spikingjelly.activation_based.examples.conv_fashion_mnist import CSNN

    steps, batch = 4, 32
    model = CSNN(T=steps, channels=32)
    x = torch.rand(batch, 1, 28, 28)

    def native(x: torch.Tensor) -> torch.Tensor:
        functional.reset_net(model)
        return model(x)
    graph = hub.load(model, input_shape=(1, 28, 28))
    return model, native, x, graph, x.unsqueeze(0).expand(steps, -1, -1, -1, -1).contiguous()


def spikingjelly_sew_resnet() -> tuple:
    from spikingjelly.activation_based import functional, neuron
    from spikingjelly.activation_based.model import sew_resnet

    steps, batch = 4, 4
    model = sew_resnet.sew_resnet18(cnf="ADD", spiking_neuron=neuron.IFNode, num_classes=10)
    functional.set_step_mode(model, "m")
    model.eval()  # batch norm with its running statistics, as the hub imports it
    x = torch.rand(steps, batch, 3, 32, 32)

    def native(x: torch.Tensor) -> torch.Tensor:
        functional.reset_net(model)
        return model(x)
    return model, native, x, hub.load(model, input_shape=(3, 32, 32)), x


def norse_convnet() -> tuple:
    from norse.torch.models.conv import ConvNet

    model = ConvNet(feature_size=28)
    x = torch.rand(16, 16, 1, 28, 28)
    return model, model, x, hub.load(model, input_shape=(1, 28, 28)), x


def snntorch_csnn() -> tuple:
    import snntorch
    from snntorch import surrogate, utils

    grad = surrogate.fast_sigmoid(slope=25)
    model = nn.Sequential(
        nn.Conv2d(1, 12, 5), nn.MaxPool2d(2),
        snntorch.Leaky(beta=0.5, spike_grad=grad, init_hidden=True),
        nn.Conv2d(12, 64, 5), nn.MaxPool2d(2),
        snntorch.Leaky(beta=0.5, spike_grad=grad, init_hidden=True),
        nn.Flatten(), nn.Linear(64 * 4 * 4, 10),
        snntorch.Leaky(beta=0.5, spike_grad=grad, init_hidden=True, output=True))
    x = torch.rand(25, 32, 1, 28, 28)

    def native(x: torch.Tensor) -> torch.Tensor:  # the tutorial's forward_pass
        utils.reset(model)
        spikes = []
        for step in range(x.shape[0]):
            spk, _ = model(x[step])
            spikes.append(spk)
        return torch.stack(spikes)
    return model, native, x, hub.load(model, input_shape=(1, 28, 28)), x


def snntorch_rleaky() -> tuple:
    import snntorch
    from snntorch import utils

    model = nn.Sequential(
        nn.Linear(100, 256), snntorch.RLeaky(beta=0.9, linear_features=256, init_hidden=True),
        nn.Linear(256, 256), snntorch.Leaky(beta=0.9, init_hidden=True),
        nn.Linear(256, 10), snntorch.Leaky(beta=0.9, init_hidden=True))
    with torch.no_grad():  # weights that make every layer fire
        for layer in model:
            if isinstance(layer, nn.Linear):
                layer.weight.mul_(4)
    x = (torch.rand(100, 32, 100) < 0.3).float()

    def native(x: torch.Tensor) -> torch.Tensor:  # stepped, as snnTorch's tutorials loop
        utils.reset(model)
        return torch.stack([model(x[step]) for step in range(x.shape[0])])
    return model, native, x, hub.load(model, input_shape=(100,)), x


NETWORKS = {"SpikingJelly Fashion-MNIST CSNN": ("spikingjelly", spikingjelly_csnn),
            "SpikingJelly sew_resnet18 32x32": ("spikingjelly", spikingjelly_sew_resnet),
            "Norse ConvNet": ("norse", norse_convnet),
            "snnTorch tutorial 7 CSNN": ("snntorch", snntorch_csnn),
            "snnTorch RLeaky MLP": ("snntorch", snntorch_rleaky)}


def simulator(graph: hub.Graph, train: bool) -> hub.Simulator:
    sim = hub.Simulator(graph, trainable=train)
    if train:  # weights train; the neurons' own parameters and batch-norm statistics stay
        fixed = {sim._keys[name] for name, node in sim.graph.nodes.items()
                 if isinstance(node, Neuron)}
        for name, param in sim.named_parameters():
            _, key, field = name.split(".")
            param.requires_grad_(key not in fixed and not (
                sim.graph.nodes[sim.plan.order[int(key[1:])]].type == "BatchNorm"
                and field in ("mean", "var")))
    return sim


def split(graph: hub.Graph, x: torch.Tensor, repeat: int) -> dict[str, float]:
    """Where the hub's forward time goes: seconds per node type (neurons: in the kernels; other
    layers: over all steps at once, or stepped; the nodes of a cycle that a recurrent edge
    closes: stepped together), from the fastest of ``repeat`` runs."""
    spent: dict[str, float] = defaultdict(float)

    def timed(function: Callable, label: str) -> Callable:
        def run(node, *args, **kwargs):
            start = time.perf_counter()
            out = function(node, *args, **kwargs)
            spent[label.format(type(node).__name__)] += time.perf_counter() - start
            return out
        return run
    patches = [(cpu, "run", "{} (fused kernel)"), (over_time, "run", "{}"),
               (over_time, "step", "{} (stepped)"),
               (hub.Simulator, "_cycle", "cycles (their nodes stepped together)")]
    originals = [getattr(module, name) for module, name, _ in patches]
    for (module, name, label), original in zip(patches, originals):
        setattr(module, name, timed(original, label))
    sim = simulator(graph, train=False)
    fastest: dict[str, float] = {}
    try:
        for _ in range(repeat):
            spent.clear()
            sim.reset()
            start = time.perf_counter()
            with torch.no_grad():
                sim(x)
            total = time.perf_counter() - start
            if not fastest or total < fastest["total"]:
                fastest = dict(spent) | {"total": total}
    finally:
        for (module, name, _), original in zip(patches, originals):
            setattr(module, name, original)
    fastest["other (sums at junctions, copies, Python)"] = fastest["total"] - sum(
        v for k, v in fastest.items() if k != "total")
    return fastest


def measure(name: str, build: Callable, repeat: int) -> dict:
    torch.manual_seed(0)
    model, native, x_native, graph, x_hub = build()
    sim = simulator(graph, train=False)

    def hub_forward() -> None:
        sim.reset()
        sim(x_hub)
    with torch.no_grad():
        forward = turns({"native": lambda: native(x_native), "hub": hub_forward}, repeat)
    trainer = simulator(graph, train=True)

    def native_both() -> None:
        model.zero_grad(set_to_none=True)
        native(x_native).sum().backward()

    def hub_both() -> None:
        trainer.zero_grad(set_to_none=True)
        trainer.reset()
        trainer(x_hub).sum().backward()
    both = turns({"native": native_both, "hub": hub_both}, repeat)
    neurons = sum(isinstance(n, Neuron) for n in graph.flat().nodes.values())
    where = split(graph, x_hub, repeat)
    return {"network": name, "T": x_hub.shape[0], "batch": x_hub.shape[1],
            "params": sum(p.numel() for p in model.parameters()), "neuron layers": neurons,
            "native fwd": min(forward["native"]), "hub fwd": min(forward["hub"]),
            "native bwd": min(both["native"]), "hub bwd": min(both["hub"]),
            "median ratios": (median(forward["native"]) / median(forward["hub"]),
                              median(both["native"]) / median(both["hub"])),
            "paths": sorted(set(sim.paths.values())), "where": where}


HEADER = ("network", "T x batch", "native fwd ms", "hub fwd ms", "fwd speed-up (median)",
          "native fwd+bwd ms", "hub fwd+bwd ms", "fwd+bwd speed-up (median)")


def cells(row: dict) -> list[str]:
    return [row["network"], f"{row['T']} x {row['batch']}", f"{row['native fwd'] * 1e3:.1f}",
            f"{row['hub fwd'] * 1e3:.1f}",
            f"{row['native fwd'] / row['hub fwd']:.2f}x ({row['median ratios'][0]:.2f}x)",
            f"{row['native bwd'] * 1e3:.1f}", f"{row['hub bwd'] * 1e3:.1f}",
            f"{row['native bwd'] / row['hub bwd']:.2f}x ({row['median ratios'][1]:.2f}x)"]


def where(row: dict) -> str:
    total = row["where"]["total"]
    parts = sorted(((k, v) for k, v in row["where"].items() if k != "total"),
                   key=lambda kv: -kv[1])
    text = ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in parts if v / total >= 0.01)
    convolutions = sum(v for k, v in parts if k.startswith("Conv"))
    if convolutions:  # the same library calls as natively: a bound on the forward's speed-up
        text += (f"; with everything but its convolutions free, the forward would be "
                 f"{row['native fwd'] / (row['hub fwd'] * convolutions / total):.1f}x")
    return text


def table(rows: list[dict]) -> str:
    lines = [HEADER] + [tuple(cells(r)) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    text = "\n".join("  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in lines)
    return text + "\n" + "\n".join(f"{r['network']}: {where(r)}" for r in rows)


def markdown(rows: list[dict], failed: dict[str, str], command: str) -> str:
    out = [START, "## Whole networks", "",
           (f"Measured with `{command}` on {platform.processor() or platform.machine()}, "
            f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, float32. Each "
            "network is imported with `hub.load` and run by `hub.Simulator(graph)` (the default "
            "path), against the same model run by its own framework on the CPU. Best of several "
            "runs, the two sides timed in turns; in brackets the ratio of the medians, which "
            "shows how noisy the shared machine was. Forward+backward: the gradient of "
            "`out.sum()` with respect to every weight."), "",
           "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    out += ["| " + " | ".join(cells(r)) + " |" for r in rows]
    out += ["", ("Where the hub's forward time goes (share of its forward time, by node type: "
                 "neuron layers in the fused kernels; other layers once over all time steps, "
                 "or \"(stepped)\" one step at a time where that was not verified to give the "
                 "same bits; the nodes on a cycle that a recurrent edge closes stepped "
                 "together, as \"cycles\"; junction sums, copies and Python as \"other\"):"),
            ""]
    out += [f"- {r['network']}: {where(r)}." for r in rows]
    out += [f"- {name}: not measured ({why})." for name, why in failed.items()]
    out += ["", ("Each stateless layer (convolution, matrix product, pooling, batch norm, ...) "
                 "runs once on all T x N samples of a sequence, as SpikingJelly's multi-step "
                 "mode does, where a one-time check on random values shows that this gives "
                 "stepping's bits for that layer, shapes, dtype and thread count: values and "
                 "input gradients bit for bit, parameter gradients float-equivalent "
                 "(`hub/over_time.py`); max pooling runs in a compiled pass. The convolutions "
                 "are then the very library calls SpikingJelly makes, so a network whose time is "
                 "mostly convolution (sew_resnet18 here) gains only what the neurons and the rest "
                 "cost natively (the bound after each network above); a faster convolution "
                 "algorithm would have to give the same bits (channels-last does not; weights "
                 "prepacked in oneDNN's layout do, but at these sizes the reorders of inputs "
                 "and outputs cost what they save). Forward+backward: a layer's "
                 "parameter gradients come from that one call's own backward, one weight-gradient "
                 "call per layer as in SpikingJelly; they are sums over steps, samples and "
                 "positions in the library's order rather than stepping's, so they may differ "
                 "from `backend=\"torch\"`'s in the last bits (within 4 T eps of the summed "
                 "terms' magnitudes, checked on first use). Spikes and input gradients do not. "
                 "A recurrent layer (the RLeaky MLP) steps only the cycle its recurrent edge "
                 "closes, the neuron and its recurrent weight, one time step at a time with "
                 "stepping's bits: the neuron on one call of the fused kernel per step (writing "
                 "its spikes straight into their sequence), the recurrent weight's product as "
                 "stepping computes it, which is most of the cycle's time; the layers before and "
                 "after it run over all time steps as in a feed-forward network. snnTorch's "
                 "recurrent bias, imported as a layer with zero weights fed forward, outputs "
                 "its bias without the product where that gives the product's bits (no "
                 "gradients, a finite input)."),
            END]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per measurement")
    parser.add_argument("--only", help="run only the networks whose name contains this")
    parser.add_argument("--out", type=Path, help="write a section into this markdown file")
    args = parser.parse_args(argv)
    rows, failed = [], {}
    for name, (framework, build) in NETWORKS.items():
        if args.only and args.only.lower() not in name.lower():
            continue
        print(f"{name} ...", file=sys.stderr)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the frameworks' deprecation notices
                rows.append(measure(name, build, args.repeat))
        except Exception as error:  # one network that cannot run must not stop the others
            failed[name] = f"{type(error).__name__}: {error}"[:300]
            print(f"  failed: {failed[name]}", file=sys.stderr)
    print(table(rows))
    if args.out:
        write_section(args.out, markdown(rows, failed, "python bench/networks.py"), START, END)
        print(f"wrote {args.out} (section {START})", file=sys.stderr)


if __name__ == "__main__":
    main()
