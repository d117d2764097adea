"""Benchmark of NIR conversion throughput: snn-hub's hub -> NIR file -> hub against snnTorch's own
NIR export and import, on the same ~10M-parameter convolutional SNN, side by side in one process.

    .venv/bin/python bench/conversion.py                           # about two minutes
    .venv/bin/python bench/conversion.py --out docs/benchmarks.md  # also write a section, a plot

The network (input 2x64x64): three Conv2d 3x3 layers (64, 128, 256 channels), each followed by a
LIF layer and a 2x2 average pool, then Flatten, Linear 16384 -> 576, LIF, Linear 576 -> 10, LIF:
9.8 million parameters. It is built once as a snnTorch model (``nn.Sequential`` of ``nn.Conv2d``,
``snntorch.Leaky(init_hidden=True)``, ``nn.AvgPool2d``, ``nn.Flatten``, ``nn.Linear``) and once
as a canonical ``hub.Graph`` with the same weights and neuron parameters.

Timed, best of several runs:

- snn-hub: ``hub.save(graph, to="nir", out=path, force=True)`` (graph -> file) and
  ``hub.load(path)`` (file -> graph), and the two in a row;
- snnTorch: ``snntorch.export_nir.export_to_nir(model, sample)`` + ``nir.write(path, g)``
  (model -> file) and ``nir.read(path)`` + ``snntorch.import_nir.import_from_nir(g)``
  (file -> model), and the two in a row.

Workarounds snnTorch needs (snnTorch 1.0, nirtorch, nir 1.0.8), applied to its model and printed
with the results: each ``Leaky`` gets ``beta`` and ``threshold`` as per-neuron tensors (with
scalars, nir's type inference fails on the LIF node's empty shape); the sample is batched and
exported with ``ignore_dims=[0]`` (otherwise nir's type inference reads the batch axis as a
spatial one); ``nn.AvgPool2d`` gets a tuple kernel size (an int one is written as a scalar that
``import_from_nir`` cannot iterate). The hub graph carries the same per-neuron arrays, so both
files hold the same parameters.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import torch
from neurons import best  # bench/ is on the path when a script here runs
from torch import nn

import hub

BETA = 0.9
DT = 1e-4
CONV = ((2, 64), (64, 128), (128, 256))  # (in, out) channels; each halves the 64x64 side
HIDDEN = 576
CLASSES = 10
START, END = "<!-- conversion -->", "<!-- /conversion -->"
WORKAROUNDS = ("snnTorch needs three workarounds: per-neuron `beta`/`threshold` tensors in each "
               "`Leaky` (scalars fail nir's type inference), `ignore_dims=[0]` with a batched "
               "sample (else nir reads the batch axis as a spatial one), and tuple kernel sizes "
               "in `nn.AvgPool2d` (an int comes back from the file as a scalar that "
               "`import_from_nir` cannot iterate).")


SIZE_NOTE = ("snn-hub's file holds the same NIR nodes plus its `\"hub\"` metadata: the "
             "discrete conventions and exact neuron parameters NIR cannot hold, but not the "
             "weights, which NIR's own nodes hold bit for bit.")


def snntorch_model() -> nn.Sequential:
    """The benchmark network as a snnTorch model, with the workarounds its NIR export needs."""
    import snntorch

    def leaky(*shape: int, output: bool = False) -> nn.Module:
        return snntorch.Leaky(beta=torch.full(shape, BETA), threshold=torch.ones(shape),
                              init_hidden=True, output=output)

    torch.manual_seed(0)
    layers: list[nn.Module] = []
    side = 64
    for c_in, c_out in CONV:
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1), leaky(c_out, side, side),
                   nn.AvgPool2d((2, 2))]
        side //= 2
    flat = CONV[-1][1] * side * side
    layers += [nn.Flatten(), nn.Linear(flat, HIDDEN), leaky(HIDDEN),
               nn.Linear(HIDDEN, CLASSES), leaky(CLASSES, output=True)]
    return nn.Sequential(*layers)


def hub_graph(model: nn.Sequential) -> hub.Graph:
    """The same network as a canonical graph: same weights, same per-neuron parameters.

    snnTorch's ``Leaky`` defaults: subtract reset, applied at the next step (``reset_delay``).
    """
    import snntorch

    nodes: list[hub.Node] = [hub.Input(shape=(CONV[0][0], 64, 64))]
    for module in model:
        if isinstance(module, nn.Conv2d):
            nodes.append(hub.Conv2d(weight=module.weight.detach().numpy(),
                                    bias=module.bias.detach().numpy(),
                                    stride=module.stride, padding=module.padding))
        elif isinstance(module, snntorch.Leaky):
            nodes.append(hub.LIF(beta=module.beta.detach().numpy(),
                                 threshold=module.threshold.detach().numpy(),
                                 reset="subtract", reset_timing="next"))
        elif isinstance(module, nn.AvgPool2d):
            nodes.append(hub.AvgPool2d(kernel_size=module.kernel_size, stride=module.stride))
        elif isinstance(module, nn.Flatten):
            nodes.append(hub.Flatten())
        elif isinstance(module, nn.Linear):
            nodes.append(hub.Affine(weight=module.weight.detach().numpy(),
                                    bias=module.bias.detach().numpy()))
        else:
            raise TypeError(f"no canonical node for {type(module).__name__}")
    return hub.Graph.chain(*nodes, metadata={"dt": DT})


def measure(repeat: int, workdir: Path) -> tuple[list[dict], dict]:
    """Times of each half and of the round trip for both paths; notes on what could not run."""
    import nir
    from snntorch.export_nir import export_to_nir
    from snntorch.import_nir import import_from_nir

    model = snntorch_model()
    graph = hub_graph(model)
    params = sum(p.numel() for p in model.parameters())
    sample = torch.rand(1, CONV[0][0], 64, 64)
    hub_file, snn_file = workdir / "hub.nir", workdir / "snntorch.nir"

    def hub_save() -> None:
        hub.save(graph, to="nir", out=hub_file, force=True)

    def hub_load() -> None:
        hub.load(hub_file)

    def snn_save() -> None:
        nir.write(snn_file, export_to_nir(model, sample, ignore_dims=[0]))

    def snn_load() -> None:
        import_from_nir(nir.read(snn_file))

    def both(save: Callable[[], None], load: Callable[[], None]) -> Callable[[], None]:
        return lambda: (save(), load())

    results: dict[str, dict[str, float | str]] = {"snn-hub": {}, "snnTorch": {}}
    steps = {"model -> file": ("save", hub_save, snn_save),
             "file -> model": ("load", hub_load, snn_load),
             "round trip": ("both", both(hub_save, hub_load), both(snn_save, snn_load))}
    for step, (_, hub_fn, snn_fn) in steps.items():
        for name, fn in (("snn-hub", hub_fn), ("snnTorch", snn_fn)):
            print(f"{name}: {step} ...", file=sys.stderr)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # nirtorch's deprecation notices
                    results[name][step] = best(fn, repeat)
            except Exception as error:  # a failing half is reported, not fatal
                results[name][step] = f"failed: {type(error).__name__}: {error}"
    rows = []
    for step in steps:
        h, s = results["snn-hub"][step], results["snnTorch"][step]
        rows.append({"step": step, "hub": h, "snntorch": s,
                     "ratio": s / h if isinstance(h, float) and isinstance(s, float) else None})
    info = {"params": params,
            "hub_bytes": hub_file.stat().st_size if hub_file.exists() else None,
            "snn_bytes": snn_file.stat().st_size if snn_file.exists() else None}
    return rows, info


HEADER = ("step", "snn-hub ms", "snnTorch ms", "snnTorch / snn-hub")


def cells(row: dict) -> list[str]:
    def ms(value: float | str) -> str:
        return f"{value * 1e3:.0f}" if isinstance(value, float) else str(value)
    return [row["step"], ms(row["hub"]), ms(row["snntorch"]),
            f"{row['ratio']:.1f}x" if row["ratio"] is not None else "-"]


def sizes(info: dict) -> str:
    def mb(n: int | None) -> str:
        return f"{n / 1e6:.1f} MB" if n is not None else "not written"
    return (f"{info['params'] / 1e6:.1f}M parameters; file size: snn-hub {mb(info['hub_bytes'])}, "
            f"snnTorch {mb(info['snn_bytes'])}")


def table(rows: list[dict]) -> str:
    lines = [HEADER] + [tuple(cells(r)) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in lines)


def markdown(rows: list[dict], info: dict, command: str, plot_name: str) -> str:
    out = [START, "## NIR conversion throughput", "",
           f"Measured with `{command}` on {platform.processor() or platform.machine()}, "
           f"{torch.get_num_threads()} torch threads, torch {torch.__version__}. A convolutional "
           "SNN (input 2x64x64; Conv2d 3x3 to 64, 128, 256 channels, each with LIF and 2x2 "
           "average pooling; Flatten; Linear 16384 -> 576, LIF; Linear 576 -> 10, LIF), "
           f"{sizes(info)}. snn-hub: `hub.save(graph, to=\"nir\", out=path, force=True)` and "
           "`hub.load(path)`. snnTorch: `export_to_nir(model, sample)` + `nir.write(path, g)` "
           "and `nir.read(path)` + `import_from_nir(g)`. Times are the best of several runs "
           "on a shared machine.", "",
           "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    out += ["| " + " | ".join(cells(r)) + " |" for r in rows]
    out += ["", WORKAROUNDS, "", SIZE_NOTE, "",
            "How snn-hub's save and load grow with the model (the first Linear layer widened to "
            "about 100M parameters; each size run once, cold, in a fresh process, so the "
            "first-use costs the table above leaves out are in; peak resident memory):", ""]
    out += [f"- {line}." for line in info.get("growth", "").splitlines()]
    out += ["", f"![conversion times]({plot_name})", END]
    return "\n".join(out) + "\n"


def write_section(path: Path, section: str, start: str = START, end: str = END) -> None:
    """Put ``section`` between its markers ``start`` and ``end`` in ``path``: in place of an
    earlier one, else at the end (bench/neurons.py keeps the section when it rewrites the
    file)."""
    text = path.read_text() if path.exists() else ""
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end) + r"\n?", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text, count=1)
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section
    path.write_text(text)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    for j, (key, label) in enumerate((("hub", "snn-hub"), ("snntorch", "snnTorch"))):
        values = [r[key] * 1e3 if isinstance(r[key], float) else 0.0 for r in rows]
        bars = ax.bar([i + j * 0.4 for i in range(len(rows))], values, 0.4, label=label)
        ax.bar_label(bars, labels=[f"{v:.0f}" if v else "failed" for v in values], fontsize=7)
    ax.set_xticks([i + 0.2 for i in range(len(rows))])
    ax.set_xticklabels([r["step"] for r in rows])
    ax.set_ylabel("ms (best of runs)")
    ax.set_title("NIR conversion, 9.8M-parameter conv SNN")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def one_size(hidden: int) -> dict:
    """hub.save and hub.load of the benchmark network with ``hidden`` units in its first Linear
    layer, in this process: seconds, file bytes and peak resident memory around each half."""
    import resource

    global HIDDEN
    HIDDEN = hidden
    model = snntorch_model()
    graph = hub_graph(model)
    params = sum(p.numel() for p in model.parameters())
    del model

    def peak() -> int:
        # this process's own high-water mark: Linux carries ru_maxrss across exec, so a child
        # of a large process (bench/neurons.py --all) would report its parent's peak there
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (
            1 if sys.platform == "darwin" else 1024)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "net.nir"
        before = peak()
        start = time.perf_counter()
        hub.save(graph, to="nir", out=path, force=True)
        save = time.perf_counter() - start
        after_save = peak()
        start = time.perf_counter()
        hub.load(path)
        load = time.perf_counter() - start
        return {"params": params, "save": save, "load": load, "bytes": path.stat().st_size,
                "base": before, "save_peak": after_save, "load_peak": peak()}


def growth(sizes: tuple[int, ...] = (HIDDEN, 5800)) -> list[dict]:
    """:func:`one_size` for each size, each in a fresh process (peak memory is per process)."""
    rows = []
    for hidden in sizes:
        print(f"snn-hub: save and load with Linear 16384 -> {hidden} ...", file=sys.stderr)
        done = subprocess.run([sys.executable, __file__, "--one-size", str(hidden)],
                              capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return rows


def growth_text(rows: list[dict]) -> str:
    lines = []
    for r in rows:
        lines.append(f"{r['params'] / 1e6:.1f}M parameters ({r['bytes'] / 1e6:.0f} MB file): "
                     f"save {r['save']:.2f} s, load {r['load']:.2f} s; peak memory "
                     f"{r['base'] / 1e6:.0f} MB with the graph built, "
                     f"{r['save_peak'] / 1e6:.0f} MB after saving, "
                     f"{r['load_peak'] / 1e6:.0f} MB after loading")
    if len(rows) == 2:
        a, b = rows
        lines.append(f"{b['params'] / a['params']:.1f}x the parameters: "
                     f"{b['save'] / a['save']:.1f}x the save time, "
                     f"{b['load'] / a['load']:.1f}x the load time; the peak memory of a save "
                     f"rises {(b['save_peak'] - b['base']) / 1e6:.0f} MB above that of building "
                     f"the larger model ({b['bytes'] / 1e6:.0f} MB of parameters in the file)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per measurement")
    parser.add_argument("--out", type=Path,
                        help="write a section into this markdown file, "
                             "and conversion.png beside it")
    parser.add_argument("--one-size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one_size:
        print(json.dumps(one_size(args.one_size)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        rows, info = measure(args.repeat, Path(tmp))
    info["growth"] = growth_text(growth())
    print(info["growth"])
    print(table(rows))
    print(sizes(info))
    print(WORKAROUNDS.replace("`", ""))
    print(SIZE_NOTE.replace("`", ""))
    if args.out:
        png = args.out.parent / "conversion.png"
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_section(args.out, markdown(rows, info, "python bench/conversion.py", png.name))
        plot(rows, png)
        print(f"wrote {args.out} (section {START}) and {png}", file=sys.stderr)


if __name__ == "__main__":
    main()
