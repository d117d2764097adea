"""The snn-hub demo: real NIR graphs from the NIR paper, converted, simulated and checked.

Run it with ``scripts/demo`` (which sets up ``.venv`` first). Files go to ``out/demo/``.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

import hub

ROOT = Path(__file__).resolve().parents[1]
PAPER = Path(os.environ.get("HUB_EXTERNAL", ROOT.parent / "shared" / "external")) / "nir-paper"
OUT = ROOT / "out" / "demo"
console = Console(highlight=False)

# The input spike train of the NIR paper's LIF experiment: 100 entries, each followed by nine
# empty steps, at dt = 1e-4 s.
PAPER_TRAIN = [0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0,
               1, 0, 0, 0, 1, 1, 0, 0, 1, 0, 1, 0, 0, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
               0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0,
               0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]


def paper_input() -> np.ndarray:
    x = np.zeros(10 * len(PAPER_TRAIN))
    x[::10] = PAPER_TRAIN
    return x


def euler_lif(x: np.ndarray, tau: float, r: float, v_leak: float, v_th: float, dt: float) -> list:
    """Forward Euler of NIR's LIF ODE in float64, reset to zero: the reference spike steps."""
    v, steps = 0.0, []
    for t, xt in enumerate(x):
        v = v + dt / tau * (v_leak - v + r * xt)
        if v > v_th:
            steps.append(t)
            v = 0.0
    return steps


def lif_experiment() -> None:
    console.rule("1. The NIR paper's LIF neuron, driven by the paper's spike train")
    path = PAPER / "paper_01_lif_lif_norse.nir"
    graph = hub.load(path, dt=1e-4)
    lif = graph.nodes["1"]
    console.print(f"loaded {path.name}: {lif}")
    x = paper_input()
    spikes = hub.simulate(graph, torch.tensor(x, dtype=torch.float32).reshape(-1, 1, 1))
    got = np.flatnonzero(spikes.numpy().ravel()).tolist()
    import nir

    node = nir.read(path).nodes["1"]
    want = euler_lif(x, float(node.tau[0]), float(node.r[0]), float(node.v_leak[0]),
                     float(node.v_threshold[0]), 1e-4)
    console.print(f"hub spikes at steps {got}; forward Euler of the ODE: {want} -> "
                  + ("[green]identical[/green]" if got == want else "[red]DIFFERENT[/red]"))


def braille_round_trip() -> None:
    console.rule("2. Braille RNN (snnTorch's export): NIR -> hub -> NIR file -> hub")
    path = PAPER / "paper_03_rnn_braille_noDelay_noBias_subtract.nir"
    graph = hub.load(path, dt=1e-4)
    out = OUT / "braille.nir"
    hub.save(graph, to="nir", out=out, force=True)
    back = hub.load(out)
    console.print(f"wrote {out.relative_to(ROOT)}; read back: parameters identical = "
                  f"{back == graph}")
    torch.manual_seed(0)
    x = (torch.rand(256, 4, 12) < 0.2).float()
    a, b = hub.simulate(graph, x), hub.simulate(back, x)
    console.print(f"256 steps x 4 samples: {int(a.sum())} output spikes, spike-identical after "
                  f"the round trip = {torch.equal(a, b)}")
    console.print("the file does not say whether the neurons reset to zero or by subtraction "
                  "(its name says subtract); NIR's semantics read it as reset to zero. "
                  "Exported by snn-hub, the reset kind travels in the node metadata:")
    subtract = hub.Graph.from_dict(graph.to_dict())
    for name in ("lif1.lif", "lif2"):  # NIR node names with a dot, not subgraphs
        subtract.nodes[name] = subtract.nodes[name].replace(reset="subtract")
    hub.save(subtract, to="nir", out=OUT / "braille_subtract.nir", force=True)
    again = hub.load(OUT / "braille_subtract.nir")
    console.print(f"  lif2 reset after the round trip: {again.nodes['lif2'].reset!r}; "
                  f"spikes {int(hub.simulate(again, x).sum())} (zero reset gave {int(a.sum())})")


def cnn_conversion() -> None:
    console.rule("3. N-MNIST CNN (Sinabs' export), dt = 1 step")
    path = PAPER / "paper_02_cnn_cnn_sinabs.nir"
    graph = hub.load(path, dt=1.0)
    n_params = sum(v.size for _, node in graph.walk() for v in node.params().values()
                   if isinstance(v, np.ndarray))
    start = time.perf_counter()
    hub.convert(graph, to="nir", out=OUT / "cnn.nir", force=True)
    back = hub.load(OUT / "cnn.nir")
    elapsed = time.perf_counter() - start
    console.print(f"{len(graph.nodes)} nodes, {n_params} parameters; hub -> NIR file -> hub in "
                  f"{elapsed * 1000:.1f} ms, identical = {back == graph}")
    torch.manual_seed(0)
    x = (torch.rand(20, 2, 2, 34, 34) < 0.1).float()
    start = time.perf_counter()
    y = hub.simulate(graph, x)
    console.print(f"simulated 20 steps x 2 samples in {time.perf_counter() - start:.2f} s; "
                  f"output spike counts per class: {y.sum((0, 1)).int().tolist()}")


def malformed_files() -> None:
    console.rule("4. Files that nir 1.0.8 cannot take as they are")
    for name in ("paper_01_lif_lif_rockpool.nir",
                 "paper_03_rnn_extras_braille_noDelay_bias_zero_subgraph.nir",
                 "paper_03_rnn_extras_braille_noDelay_noBias_subtract_subgraph.nir"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                graph = hub.load(PAPER / name, dt=1e-4)
                console.print(f"{name}: loaded ({len(graph.nodes)} nodes)")
            except hub.HubError as e:
                console.print(f"{name}: [yellow]{e.message}[/yellow]")
        for w in caught:
            console.print(f"  warning: {w.message}")


def frameworks() -> None:
    console.rule("5. Braille RNN into every framework, run in each framework's own runtime")
    graph = hub.load(PAPER / "paper_03_rnn_braille_noDelay_bias_zero.nir", dt=1e-4)
    torch.manual_seed(0)
    x = (torch.rand(256, 4, 12) < 0.2).float()
    want = hub.simulate(graph, x)
    for name in ("snntorch", "norse", "spikingjelly", "netx"):
        fmt = hub.plugins().format(name, usable=False)
        if fmt.unavailable():
            console.print(f"{name}: [yellow]not installed here: {fmt.unavailable()}[/yellow]")
            continue
        out = OUT / "braille.net" if name == "netx" else None  # netx is a file format
        try:
            model = hub.convert(graph, to=name, out=out, force=True) if out else \
                hub.convert(graph, to=name)
        except hub.UnsupportedError as e:  # the framework cannot compute this model exactly
            console.print(f"{name}: [yellow]refused[/yellow]: {e}", soft_wrap=True)
            continue
        got = torch.as_tensor(fmt.run(model, x))
        console.print(f"{name}: {type(model).__name__}, {int(got.sum())} output spikes, "
                      f"spike-identical to hub.simulate = {torch.equal(got, want)}")


def _spikes(steps: int, *shape: int) -> torch.Tensor:
    return (torch.rand(steps, 2, *shape) < 0.3).float()


def real_models() -> None:
    console.rule("6. The frameworks' own model classes, read from what their forward computes")
    torch.manual_seed(0)
    zoo = []
    if hub.plugins().format("spikingjelly", usable=False).unavailable() is None:
        from spikingjelly.activation_based import functional, neuron
        from spikingjelly.activation_based.examples.conv_fashion_mnist import CSNN
        from spikingjelly.activation_based.model import sew_resnet

        sew = sew_resnet.sew_resnet18(cnf="IAND", spiking_neuron=neuron.IFNode, num_classes=10)
        functional.set_step_mode(sew, "m")
        image = torch.rand(1, 2, 1, 28, 28).expand(4, 2, 1, 28, 28)  # shown at its T=4 steps
        zoo += [("SpikingJelly's Fashion-MNIST CSNN", CSNN(T=4, channels=8), image),
                ("SpikingJelly's sew_resnet18 (IAND)", sew, _spikes(8, 3, 16, 16))]
    if hub.plugins().format("norse", usable=False).unavailable() is None:
        from norse.torch.models.conv import ConvNet4

        zoo.append(("Norse's ConvNet4", ConvNet4(), _spikes(8, 1, 28, 28)))
    for name, model, x in zoo:
        start = time.perf_counter()
        # traced, then proved against the model's own run, node by node
        graph = hub.load(model, input_shape=tuple(x.shape[2:]))
        kinds = sorted({node.type for node in graph.nodes.values()})
        ok = hub.check(model, targets=["hub"], x=x).ok  # against the model's own run
        console.print(f"{name}: {len(graph.nodes)} nodes ({', '.join(kinds)}) in "
                      f"{time.perf_counter() - start:.1f} s; a .hub.json round trip is "
                      f"spike-identical to the model's own run = {ok}", soft_wrap=True)
        if not ok:
            raise SystemExit(1)


def conformance() -> None:
    """The conformance suite on every zoo model and paper graph, along every route between the
    installed formats (Lava's rows in .venv-lava), with its report."""
    import hub_conformance
    from hub_conformance import report

    console.rule("conformance: every zoo model along every route, run in its own runtime")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the paper files' warnings were shown above
        formats = [n for n in ("hub", "nir", "snntorch", "norse", "spikingjelly", "netx")
                   if hub.plugins().format(n, usable=False).unavailable() is None]
        suite = hub_conformance.run(formats, jobs=os.cpu_count() or 1)
    report.terminal(suite, console)
    path = report.write(suite, OUT / "conformance")
    console.print(f"wrote {path.relative_to(ROOT)} and its matrix picture")
    if not suite.ok:
        raise SystemExit(1)


def main() -> int:
    if not PAPER.is_dir():
        console.print(f"[red]the NIR paper's files are not at {PAPER}; set HUB_EXTERNAL[/red]")
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    lif_experiment()
    braille_round_trip()
    cnn_conversion()
    malformed_files()
    frameworks()
    real_models()
    conformance()
    return 0


if __name__ == "__main__":
    sys.exit(main())
