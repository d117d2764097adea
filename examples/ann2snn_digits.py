"""ANN-to-SNN conversion on real data: scikit-learn's handwritten digits, end to end.

Trains a small convolutional ReLU network (with a batch norm, to exercise folding) on
``sklearn.datasets.load_digits`` (1797 8x8 images, bundled with scikit-learn: no download),
converts it with ``hub.convert(net, to="hub", source="ann", calibration=..., mode=...)`` for each
normalisation mode, simulates the spiking network with the analog image as a constant input
current for T = 2 ... 128 steps, and writes the accuracy table to ``docs/ann2snn.md`` (between the
``results`` markers) and the plot ``docs/ann2snn.png``. Then it converts the same spiking network
to snnTorch, Norse and SpikingJelly and runs each in its own framework.

    .venv/bin/python examples/ann2snn_digits.py            # 10-20 s on one CPU thread
    .venv/bin/python examples/ann2snn_digits.py --no-write # print only

Everything is seeded, so a rerun gives the same numbers on the same machine and library versions.
"""

from __future__ import annotations

import argparse
import itertools
import re
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

import hub
from hub_plugins.ann import present

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "ann2snn.md"
PLOT = ROOT / "docs" / "ann2snn.png"
STEPS = (2, 4, 8, 16, 32, 64, 128)
MODES = ("max", "99.9%", "99%", 0.5)
FRAMEWORKS = ("snntorch", "norse", "spikingjelly")
SEED = 0
#: The plot's lower edge (%); points below it are drawn on it as a triangle with their value.
FLOOR = 90.0


def data() -> tuple[torch.Tensor, ...]:
    """Digits as [N, 1, 8, 8] in [0, 1]; a fixed stratified 75/25 split."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise SystemExit("this example needs scikit-learn for its digits data set: "
                         "pip install scikit-learn") from None

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    xtr, xte, ytr, yte = train_test_split(x, digits.target, test_size=0.25,
                                          random_state=SEED, stratify=digits.target)
    return (torch.from_numpy(xtr), torch.from_numpy(ytr).long(), torch.from_numpy(xte),
            torch.from_numpy(yte).long())


def network() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AvgPool2d(2),                                     # 8x8 -> 4x4
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Dropout(0.2),
        nn.Linear(32 * 4 * 4, 10),
    )


def train(xtr: torch.Tensor, ytr: torch.Tensor, epochs: int = 20) -> nn.Sequential:
    torch.manual_seed(SEED)
    net = network()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(SEED)
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(xtr), generator=gen).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(net(xtr[idx]), ytr[idx]).backward()
            opt.step()
    return net.eval()


def accuracy(pred: torch.Tensor, y: torch.Tensor) -> float:
    return float((pred == y).float().mean()) * 100


def snn_scores(graph: hub.Graph, xte: torch.Tensor, yte: torch.Tensor, ann_pred: torch.Tensor,
               counts: bool = False) -> tuple[dict[int, float], dict[int, float]]:
    """Accuracy, and agreement with the ANN's predictions, after each T in STEPS, from one run
    of max(STEPS) steps.

    The readout after T steps of a longer run is the readout of a T-step run (nothing depends on
    later steps), so one simulation gives every column. ``counts``: the output is spikes, and
    the prediction is the neuron with the most of them so far.
    """
    with torch.no_grad():  # the reference backend: the fused one is no faster on a net this small
        out = hub.simulate(graph, present(xte, max(STEPS)))
    if counts:
        out = out.cumsum(0)
    preds = {t: out[t - 1].argmax(-1) for t in STEPS}
    return ({t: accuracy(p, yte) for t, p in preds.items()},
            {t: accuracy(p, ann_pred) for t, p in preds.items()})


#: The conversion's options a framework may need changed, each with the default first: the
#: readout, where the voltage starts, the spike comparison, the reset timing.
CHOICES = {"readout": ("integrate", "spikes"), "v_init": (0.5, 0.0), "comparison": (">", ">="),
           "reset_timing": ("same", "next")}


def variants() -> list[dict]:
    """Every combination of CHOICES, fewest changes from the defaults first."""
    combos = [dict(zip(CHOICES, values)) for values in itertools.product(*CHOICES.values())]
    return sorted(combos, key=lambda c: sum(c[k] != v[0] for k, v in CHOICES.items()))


def variant_name(options: dict) -> str:
    changed = [f"{k}={v!r}" for k, v in options.items() if v != CHOICES[k][0]]
    return ", ".join(changed) or "defaults"


def run_in(name: str, graph: hub.Graph, x: torch.Tensor) -> torch.Tensor:
    """Convert ``graph`` to framework ``name`` and run it there (HubError if it cannot)."""
    native = hub.convert(graph, to=name)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the frameworks' own deprecation chatter
        out = hub.plugins().format(name).run(native, x)
    return torch.as_tensor(out).detach().float()


def upto(graph: hub.Graph, last: str) -> hub.Graph:
    """The chain of ``graph`` from its input to node ``last``, read out there."""
    names = list(graph.nodes)
    return hub.Graph.chain(*[(n, graph.nodes[n]) for n in names[:names.index(last) + 1]])


def frameworks(net: nn.Module, calibration: list, xte: torch.Tensor, yte: torch.Tensor,
               steps: int) -> list[tuple[str, ...]]:
    """Convert the ``99.9%`` network to each framework (the first variant it can express), run
    it there, and compare its output, and the spikes of every IF layer, with the reference
    simulator's on the same graph."""
    x = present(xte, steps).contiguous()
    graphs: dict[int, hub.Graph] = {}
    rows = []
    for name in FRAMEWORKS:
        refused: dict[str, None] = {}
        for i, options in enumerate(variants()):
            if i not in graphs:
                graphs[i] = hub.convert(net, to="hub", source="ann", calibration=calibration,
                                        mode="99.9%", **options)
            graph = graphs[i]
            try:
                out = run_in(name, graph, x)
            except hub.HubError as e:
                refused[f"{type(e).__name__}: {e}"] = None
                continue
            with torch.no_grad():
                ref = hub.simulate(graph, x)
            out = out.reshape(ref.shape)
            # the integrating readout's last step, or the spiking readout's spike counts
            score = (lambda y: y[-1]) if options["readout"] == "integrate" else \
                (lambda y: y.sum(0))
            same = "identical" if torch.equal(out, ref) else \
                f"differs in {int((out != ref).sum())} of {out.numel()} values"
            layers = []
            for layer in graph.metadata["ann"]["scales"]:  # each IF layer, read out directly
                part = upto(graph, layer)
                with torch.no_grad():
                    want = hub.simulate(part, x)
                got = run_in(name, part, x).reshape(want.shape)
                layers.append(f"{layer}: {int(want.sum()):,} spikes, "
                              + ("identical" if torch.equal(got, want) else
                                 f"{int((got != want).sum())} differ"))
            rows.append((name, variant_name(options), f"{accuracy(score(out).argmax(-1), yte):.2f}",
                         f"{accuracy(score(ref).argmax(-1), yte):.2f}", same,
                         "<br>".join(layers), "<br>".join(refused)))
            break
        else:
            rows.append((name, "none", "-", "-", "-", "-", "<br>".join(refused)))
    return rows


def table(ann: float, results: dict[str, dict[int, float]]) -> str:
    head = "| mode | " + " | ".join(f"T = {t}" for t in STEPS) + " |"
    rule = "|---|" + "---:|" * len(STEPS)
    lines = [head, rule, "| ANN | " + " | ".join(f"{ann:.2f}" for _ in STEPS) + " |"]
    for mode, accs in results.items():
        lines.append(f"| {mode} | " + " | ".join(f"{accs[t]:.2f}" for t in STEPS) + " |")
    return "\n".join(lines)


def plot(ann: float, results: dict[str, dict[int, float]],
         agreement: dict[str, dict[int, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), dpi=120)
    panels = ((axes[0], results, ann, f"ANN ({ann:.2f}%)", "test accuracy (%)"),
              (axes[1], agreement, 100.0, "ANN", "same prediction as the ANN (%)"))
    for ax, values, line, label, ylabel in panels:
        for mode, scores in values.items():
            ys = [max(scores[t], FLOOR + 0.15) for t in STEPS]  # off-scale points sit on the floor
            (drawn,) = ax.plot(STEPS, ys, marker="o", markersize=4, label=mode)
            for t in STEPS:
                if scores[t] < FLOOR:
                    ax.plot([t], [FLOOR + 0.15], marker="v", markersize=8,
                            color=drawn.get_color())
                    ax.annotate(f"{scores[t]:.1f}%", (t, FLOOR + 0.15), xytext=(6, 4),
                                textcoords="offset points", fontsize=7,
                                color=drawn.get_color())
        ax.axhline(line, color="black", linestyle="--", label=label)
        ax.set_xscale("log", base=2)
        ax.set_xticks(STEPS, [str(t) for t in STEPS])
        ax.set_xlabel("time steps T")
        ax.set_ylabel(ylabel)
        ax.set_ylim(FLOOR, 100.3)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="lower right", title="SNN mode", title_fontsize=8)
    fig.suptitle("ANN-to-SNN conversion on sklearn digits (450 test images)")
    fig.tight_layout()
    fig.savefig(PLOT)
    plt.close(fig)


def write_doc(section: str) -> None:
    text = DOC.read_text(encoding="utf-8")
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{DOC} has no {start} ... {end} section to fill")
    DOC.write_text(pattern.sub(lambda _: f"{start}\n{section}\n{end}", text), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="print, do not touch docs/")
    args = parser.parse_args()
    # one thread: the network is small, and on a shared machine a second thread that has to
    # wait for a busy core makes every step an order of magnitude slower
    torch.set_num_threads(1)
    began = time.perf_counter()

    xtr, ytr, xte, yte = data()
    net = train(xtr, ytr)
    with torch.no_grad():
        ann = accuracy(net(xte).argmax(-1), yte)
    print(f"ANN test accuracy: {ann:.2f}% ({len(xte)} test images, trained on {len(xtr)}) "
          f"[{time.perf_counter() - began:.0f} s]")
    calibration = list(zip(xtr.split(128), ytr.split(128)))  # (x, y) batches, as a DataLoader

    with torch.no_grad():
        ann_pred = net(xte).argmax(-1)
    results: dict[str, dict[int, float]] = {}
    agreement: dict[str, dict[int, float]] = {}
    graphs = {}

    def run(label: str, counts: bool = False, **options) -> None:
        graphs[label] = hub.convert(net, to="hub", source="ann", calibration=calibration,
                                    **options)
        results[label], agreement[label] = snn_scores(graphs[label], xte, yte, ann_pred, counts)

    for mode in MODES:
        run(str(mode), mode=mode)
    run("99.9%, v_init=0", mode="99.9%", v_init=0.0)
    run("99.9%, spiking readout", counts=True, mode="99.9%", readout="spikes")
    text = table(ann, results)
    print(text)
    agree_text = table(100.0, agreement)
    print("agreement with the ANN's predictions (%):")
    print(agree_text)
    scales = graphs["99.9%"].metadata["ann"]["scales"]
    print("99.9% scales:", {k: round(v, 4) for k, v in scales.items()},
          f"[{time.perf_counter() - began:.0f} s]")

    steps = 32
    rows = frameworks(net, calibration, xte, yte, steps)
    fw_text = ("| framework | variant | accuracy there (%) | hub.simulate (%) | output vs "
               "hub.simulate | hidden spikes vs hub.simulate | refusals |\n"
               "|---|---|---:|---:|---|---|---|\n"
               + "\n".join("| " + " | ".join(row) + " |" for row in rows))
    print(fw_text)
    elapsed = time.perf_counter() - began
    print(f"done in {elapsed:.0f} s")
    if args.no_write:
        return
    plot(ann, results, agreement)
    versions = _versions()
    section = (f"ANN test accuracy **{ann:.2f}%** ({len(xte)} test images; trained on "
               f"{len(xtr)}, which are also the calibration data). At T = {max(STEPS)} the "
               f"`99.9%` conversion reaches "
               f"**{results['99.9%'][max(STEPS)]:.2f}%**, "
               f"{ann - results['99.9%'][max(STEPS)]:.2f} percentage points from the ANN. SNN "
               f"test accuracy (%) after T steps:\n\n{text}\n\n"
               f"How often the SNN predicts what the ANN predicts (%), a finer measure than "
               f"accuracy:\n\n{agree_text}\n\n"
               f"![accuracy against time steps](ann2snn.png)\n\n"
               f"Scales `lambda` of the `99.9%` conversion: "
               + ", ".join(f"`{k}` {v:.4f}" for k, v in scales.items())
               + f".\n\nThe `99.9%` network converted to each framework and run there for "
               f"T = {steps} steps (the framework's own runtime, through its format's `run` "
               f"hook), compared with the reference simulator on the same graph. Each framework "
               f"gets the first variant of the conversion options it can express (fewest "
               f"changes from the defaults first); every distinct refusal on the way is "
               f"quoted.\n\n{fw_text}\n\n"
               f"Produced by `examples/ann2snn_digits.py` in {elapsed:.0f} s on one CPU thread; "
               f"{versions}.")
    write_doc(section)
    print(f"wrote {DOC.relative_to(ROOT)} and {PLOT.relative_to(ROOT)}")


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for dist in ("torch", "scikit-learn", "snntorch", "norse", "spikingjelly"):
        try:
            parts.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            parts.append(f"{dist} not installed")
    return ", ".join(parts)


if __name__ == "__main__":
    main()
