"""Benchmark of neuron layers: the hub's default path (and its reference) against snnTorch,
Norse and SpikingJelly, each running its own default neuron, and against those default neurons
imported with ``hub.load`` and run by the hub, side by side in one process; then the default
path on one layer per convention, and each neuron family against a peer's own neuron
(``bench/family_cases.py``).

    .venv/bin/python bench/neurons.py            # quick: two sizes, a few minutes
    .venv/bin/python bench/neurons.py --full     # a T x batch x width sweep
    .venv/bin/python bench/neurons.py --out docs/benchmarks.md   # also write markdown and a plot
    .venv/bin/python bench/neurons.py --all --out docs/benchmarks.md  # and networks, conversion
    .venv/bin/python bench/neurons.py --only conventions   # one table (T=100, batch 32, 4096)
    .venv/bin/python bench/neurons.py --only families      # only the neuron families' table

Each layer runs a float32 sequence ``[T, batch, width]`` from a fresh state: forward without
gradients, and forward plus backward of ``out.sum()`` with respect to the input (train_step:
the input that takes the gradient is made once, outside the timing). Times are the best of
several runs. "vs best peer" is the best peer's time over the row's time. GB/s counts the bytes a
layer must move at least (read the input, write the spikes) and is compared with the memory
bandwidth of this machine: ``dst.copy_(x)`` into a preallocated ``dst`` of the same bytes,
best of several, in the same process (a fresh ``x.clone()`` would also pay for new pages some
runs and not others).
Peers run with their own default conventions (their spikes differ from the hub's in details);
they are here for speed, not for equality.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import re
import sys
import time
from pathlib import Path
from typing import Callable

import torch

import family_cases
import hub
from hub.kernels import cpu

LAYERS = ("LIF", "CUBA")


def best(fn: Callable[[], object], repeat: int) -> float:
    """The fastest of ``repeat`` runs after one warm-up, in seconds."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def turns(runs: dict[str, Callable[[], object]], repeat: int) -> dict[str, list[float]]:
    """Seconds of each of ``repeat`` runs of each function, taken in turns (after one warm-up
    each) so that a change in the machine's load falls on all of them alike."""
    for fn in runs.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def train_step(run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor
               ) -> Callable[[], None]:
    """Forward and backward of ``run(x).sum()`` with respect to the input, as a training step
    of the layer: the input that takes the gradient is copied from ``x`` once, here, so that the
    timing holds the layer's work and not a fresh copy of its input (new pages, 50 MB at
    T=100, batch 32, 4096, which alone cost several times the fused kernel's backward pass)."""
    xg = x.clone().requires_grad_()

    def step() -> None:
        xg.grad = None
        run(xg).sum().backward()
    return step


def hub_layer(kind: str, backend: str, width: int) -> Callable[[torch.Tensor], torch.Tensor]:
    neuron = (hub.LIF(beta=0.9, threshold=1.0, reset="subtract") if kind == "LIF"
              else hub.CubaLIF(alpha=0.8, beta=0.9, threshold=1.0, reset="subtract"))
    sim = hub.Simulator(hub.Graph.chain(hub.Input(shape=(width,)), neuron), backend=backend)

    def run(x: torch.Tensor) -> torch.Tensor:
        sim.reset()
        return sim(x)
    return run


#: The hub's default path on one LIF layer (as hub_layer's) with each convention changed, for the
#: conventions table: the kernel's time should not depend on which conventions a layer carries.
CONVENTIONS = {
    "same-step subtract (the LIF rows)": {},
    "next-step subtract (snnTorch Leaky)": {"reset_timing": "next"},
    "next-step zero": {"reset": "zero", "reset_timing": "next"},
    "zero reset": {"reset": "zero"},
    ">= (SpikingJelly)": {"comparison": ">="},
    "multi-spike": {"spike_mode": "multi"},
    "graded spikes": {"spike_mode": "graded"},
    "refractory 2 steps": {"refractory": 2},
    "delay 3 steps": {"delay": 3},
    "per-neuron beta and threshold": {"per_neuron": True},
    "CubaLIF": {"cuba": True},
}


def convention_layer(fields: dict, width: int) -> Callable[[torch.Tensor], torch.Tensor]:
    fields = dict(fields)
    params: dict = {"beta": 0.9, "threshold": 1.0, "reset": "subtract"}
    if fields.pop("per_neuron", False):
        g = torch.Generator().manual_seed(0)
        params |= {"beta": (0.85 + 0.1 * torch.rand(width, generator=g)).numpy(),
                   "threshold": (0.9 + 0.2 * torch.rand(width, generator=g)).numpy()}
    cls = hub.CubaLIF if fields.pop("cuba", False) else hub.LIF
    if cls is hub.CubaLIF:
        params["alpha"] = 0.8
    sim = hub.Simulator(hub.Graph.chain(hub.Input(shape=(width,)), cls(**(params | fields))))

    def run(x: torch.Tensor) -> torch.Tensor:
        sim.reset()
        return sim(x)
    return run


def converted_layer(kind: str, peer: str, width: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """A peer's default neuron imported with ``hub.load`` and run by the hub's default path."""
    if peer == "snntorch":
        import snntorch

        model = snntorch.Leaky(beta=0.9) if kind == "LIF" else snntorch.Synaptic(alpha=0.8,
                                                                                 beta=0.9)
    elif peer == "norse":
        import norse.torch as norse

        if kind != "CUBA":
            raise ValueError("Norse's default LIFCell is a current-based neuron (CUBA rows)")
        model = norse.LIFCell()
    else:
        from spikingjelly.activation_based import neuron

        if kind != "LIF":
            raise ValueError("SpikingJelly's default LIFNode is a LIF neuron (LIF rows)")
        model = neuron.LIFNode(tau=2.0, step_mode="m")
    sim = hub.Simulator(hub.load(model, input_shape=(width,)))

    def run(x: torch.Tensor) -> torch.Tensor:
        sim.reset()
        return sim(x)
    return run


def snntorch_layer(kind: str) -> Callable[[torch.Tensor], torch.Tensor]:
    import snntorch

    if kind == "LIF":
        leaky = snntorch.Leaky(beta=0.9)

        def run(x: torch.Tensor) -> torch.Tensor:
            mem, out = leaky.reset_mem(), []
            for t in range(x.shape[0]):
                spk, mem = leaky(x[t], mem)
                out.append(spk)
            return torch.stack(out)
        return run
    synaptic = snntorch.Synaptic(alpha=0.8, beta=0.9)

    def run_cuba(x: torch.Tensor) -> torch.Tensor:
        syn, mem = synaptic.reset_mem()
        out = []
        for t in range(x.shape[0]):
            spk, syn, mem = synaptic(x[t], syn, mem)
            out.append(spk)
        return torch.stack(out)
    return run_cuba


def norse_layer(kind: str) -> Callable[[torch.Tensor], torch.Tensor]:
    import norse.torch as norse

    if kind == "CUBA":
        layer = norse.LIF()  # Norse's LIF has a synaptic current: a CUBA neuron
        return lambda x: layer(x)[0]
    cell = norse.LIFBoxCell()  # no current; Norse has no multi-step layer for it

    def run(x: torch.Tensor) -> torch.Tensor:
        state, out = None, []
        for t in range(x.shape[0]):
            spk, state = cell(x[t], state)
            out.append(spk)
        return torch.stack(out)
    return run


def spikingjelly_layer(kind: str) -> Callable[[torch.Tensor], torch.Tensor]:
    from spikingjelly.activation_based import neuron

    if kind == "LIF":
        node = neuron.LIFNode(tau=2.0, step_mode="m")
    else:
        node = neuron.CUBALIFNode(c_decay=0.5, v_decay=0.75)
        node.step_mode = "m"  # its constructor takes no step_mode

    def run(x: torch.Tensor) -> torch.Tensor:
        node.reset()
        return node(x)
    return run


PEERS = {"snntorch": snntorch_layer, "norse": norse_layer, "spikingjelly": spikingjelly_layer}


def installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def measure_conventions(steps: int, batch: int, width: int, repeat: int,
                        peers: list[str]) -> list[dict]:
    """The hub's default path on one layer per convention; forward and forward+backward against
    the fastest LIF layer of ``peers`` (the fastest peers of the layer rows, or every installed
    peer without them), timed in the same turns, and forward against copy bandwidth."""
    torch.manual_seed(0)
    x = torch.rand(steps, batch, width) * 0.5
    dst = torch.empty_like(x)
    layers = {name: convention_layer(fields, width) for name, fields in CONVENTIONS.items()}
    print(f"  {len(layers)} conventions, in turns ...", file=sys.stderr)
    extra = {"copy": lambda: dst.copy_(x)}
    for peer in peers:
        extra[peer] = lambda run=PEERS[peer]("LIF"): run(x)
    with torch.no_grad():
        forward = turns(extra | {name: (lambda run=run: run(x)) for name, run in layers.items()},
                        repeat)

    backward = turns({peer: train_step(PEERS[peer]("LIF"), x) for peer in peers}
                     | {name: train_step(run, x) for name, run in layers.items()},
                     max(1, repeat - 1))
    copy = min(forward["copy"])
    peer_forward = min(min(forward[peer]) for peer in peers) if peers else None
    peer_backward = min(min(backward[peer]) for peer in peers) if peers else None
    return [{"convention": name, "forward": min(forward[name]),
             "backward": min(backward[name]), "copy": copy,
             "vs_peer": peer_forward / min(forward[name]) if peer_forward else None,
             "vs_peer_bwd": peer_backward / min(backward[name]) if peer_backward else None}
            for name in layers]


CONVENTION_HEADER = ("convention", "fwd ms", "fwd vs best peer LIF", "% of copy", "fwd+bwd ms",
                     "fwd+bwd vs best peer LIF")


def convention_cells(row: dict) -> list[str]:
    def ratio(r: float | None) -> str:
        return f"{r:.1f}x" if r else "-"
    return [row["convention"], f"{row['forward'] * 1e3:.1f}", ratio(row["vs_peer"]),
            f"{100 * row['copy'] / row['forward']:.0f}%", f"{row['backward'] * 1e3:.1f}",
            ratio(row["vs_peer_bwd"])]


def measure(kind: str, steps: int, batch: int, width: int, repeat: int) -> list[dict]:
    """One row per implementation: forward and forward+backward times."""
    torch.manual_seed(0)
    x = torch.rand(steps, batch, width) * 0.5
    # into an allocated destination: the bandwidth itself, not the cost of fresh pages
    dst = torch.empty_like(x)
    nbytes = 2 * x.numel() * x.element_size()
    runners = {"hub reference": hub_layer(kind, "torch", width),
               "hub default": hub_layer(kind, "auto", width)}
    for name, make in PEERS.items():
        if installed(name):
            try:
                runners[name] = make(kind)
            except Exception as error:  # a peer's API change must not stop the others
                print(f"  {name}: skipped ({type(error).__name__}: {error})", file=sys.stderr)
    for name in PEERS:
        if installed(name):
            try:
                runners[f"hub: {name} default neuron"] = converted_layer(kind, name, width)
            except ValueError:
                pass  # that peer's default neuron belongs to the other layer kind
            except Exception as error:  # an import the hub refuses is reported, not fatal
                print(f"  {name} into the hub: skipped ({type(error).__name__}: {error})",
                      file=sys.stderr)
    # every implementation in turns, and the copy among them: a load that comes and goes on
    # the shared machine falls on all alike
    with torch.no_grad():
        forward = turns({"copy": lambda: dst.copy_(x)}
                        | {name: (lambda run=run: run(x)) for name, run in runners.items()},
                        repeat)

    backward = turns({name: train_step(run, x) for name, run in runners.items()},
                     max(1, repeat - 1))
    copy = min(forward["copy"])
    rows = []
    for name in runners:
        fastest = min(forward[name])
        rows.append({"layer": kind, "T": steps, "batch": batch, "width": width, "impl": name,
                     "forward": fastest, "backward": min(backward[name]), "copy": copy,
                     "gbps": nbytes / fastest / 1e9, "copy_gbps": nbytes / copy / 1e9})
    peers = [r for r in rows if not r["impl"].startswith("hub")]
    for row in rows:
        if peers:
            row["fwd_ratio"] = min(p["forward"] for p in peers) / row["forward"]
            row["bwd_ratio"] = min(p["backward"] for p in peers) / row["backward"]
    return rows


HEADER = ("layer", "T", "batch", "width", "impl", "fwd ms", "fwd vs best peer", "GB/s",
          "% of copy", "fwd+bwd ms", "fwd+bwd vs best peer")


def cells(row: dict) -> list[str]:
    def ratio(key: str) -> str:
        return f"{row[key]:.1f}x" if key in row else "-"

    return [row["layer"], str(row["T"]), str(row["batch"]), str(row["width"]), row["impl"],
            f"{row['forward'] * 1e3:.1f}", ratio("fwd_ratio"), f"{row['gbps']:.2f}",
            f"{100 * row['gbps'] / row['copy_gbps']:.0f}%", f"{row['backward'] * 1e3:.1f}",
            ratio("bwd_ratio")]


def table(rows: list[dict], header: tuple = HEADER, cells: Callable = cells) -> str:
    lines = [header] + [tuple(cells(r)) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in lines)


def markdown(rows: list[dict], command: str, conventions: list[dict], size: tuple) -> str:
    copy = list(dict.fromkeys(f"{r['copy_gbps']:.2f}" for r in rows))
    out = ["# Neuron layer benchmarks", "",
           f"Measured with `{command}` on {platform.processor() or platform.machine()}, "
           f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, float32. "
           "Times are the best of several runs, all implementations of a size (and the copy) "
           "timed in turns so that the shared machine's changing load falls on all alike; "
           "still noisy. "
           f"Copy bandwidth (`dst.copy_(x)` into a preallocated `dst` of the same bytes, read "
           f"plus write, per size in table order): {', '.join(copy)} GB/s. Each peer runs with "
           "its own default conventions. \"hub default\" is `hub.Simulator(graph)` as a user "
           "gets it (`backend=\"auto\"`); \"hub reference\" forces `backend=\"torch\"`; "
           "\"hub: X default neuron\" is X's default neuron imported with `hub.load` and run "
           "by the hub's default path. Only ratios within one run mean much: other processes "
           "shared the machine.", "",
           "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    out += ["| " + " | ".join(cells(r)) + " |" for r in rows]
    out += ["", "## Against the goals", "",
            "Goals: forward at least 5x faster than the best peer and at least 30% of copy "
            "bandwidth; forward+backward at least 3x faster than the best peer. The fused path "
            "keeps its large buffers (outputs, saved voltages, input gradients) in a small cache "
            "so that it does not pay for fresh pages from the operating system on every call: "
            "a buffer is reused only once no tensor uses it any more, at most 2 idle buffers "
            "per size and `HUB_KERNEL_CACHE_BYTES` (1 GiB) in all (0 turns it off), "
            "`hub.kernels.cpu.empty_cache()` frees them. Where the kernel's time goes: per "
            "neuron and step it reads the input and writes the output (memory), and does the "
            "update in registers; forward and backward, spans of about 2 MiB of state walk "
            "through time together, so that each step streams one long run of memory; the "
            "backward pass reads a gradient that is the same at every step (that of "
            "`out.sum()`, as here, or of a loss on spike counts) as one step's; a parameter "
            "with one value for all neurons (the usual case, "
            "as in these rows) is held in a register rather than read per neuron and step, "
            "which is what brought CUBA, with twice the parameters of LIF, close to LIF's speed, "
            "and where only decays, gains or thresholds are per neuron, the levels (rest, reset "
            "voltage, amplitude) still are (float32 forward passes); "
            "every spiking convention (reset, timing, comparison, binary, multi or graded "
            "spikes, refractory period) has a vectorised loop of its own, forward and "
            "backward; a multi-spike's count is the spike itself wherever the voltage stays "
            "below twice the threshold, so a float32 forward pass divides only in the steps of "
            "a block where some count is larger (and for a few steps after); only "
            "readouts take the general loop, a phase per operation.", ""]
    for row in rows:
        if row["impl"] != "hub default" or "fwd_ratio" not in row:
            continue
        share = row["gbps"] / row["copy_gbps"]

        def verdict(ok: bool) -> str:
            return "met" if ok else "not met"

        out.append(f"- {row['layer']} T={row['T']} batch={row['batch']} width={row['width']}: "
                   f"forward {row['fwd_ratio']:.1f}x the best peer (goal 5x: "
                   f"{verdict(row['fwd_ratio'] >= 5)}); {row['gbps']:.1f} GB/s, "
                   f"{100 * share:.0f}% of copy bandwidth (goal 30%: {verdict(share >= 0.3)}); "
                   f"forward+backward {row['bwd_ratio']:.1f}x the best peer (goal 3x: "
                   f"{verdict(row['bwd_ratio'] >= 3)}).")
    if conventions:
        out += ["", "## Every convention", "",
                (f"The hub's default path on one LIF layer (T={size[0]}, batch {size[1]}, "
                 f"{size[2]} neurons) with one convention changed at a time; \"vs best peer "
                 "LIF\" divides the LIF time of the fastest peer of the table above (forward, "
                 "and forward+backward), timed again in the same turns as these rows, by the "
                 "row's."), "",
                "| " + " | ".join(CONVENTION_HEADER) + " |",
                "|" + "---|" * len(CONVENTION_HEADER)]
        out += ["| " + " | ".join(convention_cells(r)) + " |" for r in conventions]
    return "\n".join(out) + "\n"


def kept_sections(path: Path) -> str:
    """The sections other scripts maintain in ``path`` between ``<!-- name -->`` and
    ``<!-- /name -->`` markers (bench/conversion.py's), to keep when the file is rewritten."""
    if not path.exists():
        return ""
    blocks = re.finditer(r"^<!-- ([\w-]+) -->\n.*?^<!-- /\1 -->\n?", path.read_text(), re.S | re.M)
    return "".join("\n" + block.group(0).rstrip("\n") + "\n" for block in blocks)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = sorted({(r["layer"], r["T"], r["batch"], r["width"]) for r in rows},
                     key=lambda c: (c[0], c[1] * c[2] * c[3]))
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, key, title in zip(axes, ("forward", "backward"), ("forward", "forward + backward")):
        bar = 0.8 / len(impls)
        for j, impl in enumerate(impls):
            values = [next((r[key] * 1e3 for r in rows if r["impl"] == impl and
                            (r["layer"], r["T"], r["batch"], r["width"]) == c), 0) for c in configs]
            ax.bar([i + j * bar for i in range(len(configs))], values, bar, label=impl)
        ax.set_yscale("log")
        ax.set_xticks([i + 0.4 - bar / 2 for i in range(len(configs))])
        ax.set_xticklabels([f"{c[0]}\nT={c[1]} N={c[2]}\nw={c[3]}" for c in configs], fontsize=7)
        ax.set_ylabel("ms (log)")
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="a T x batch x width sweep")
    parser.add_argument("--out", type=Path, help="write the table as markdown (and a .png plot)")
    parser.add_argument("--all", action="store_true",
                        help="then the whole networks (bench/networks.py) and NIR conversion "
                             "(bench/conversion.py), into the same --out file")
    parser.add_argument("--only", choices=["conventions", "families"],
                        help="print only this table, at T=100, batch 32, 4096 neurons: "
                             "'conventions', the default path on one LIF layer per convention "
                             "against the fastest installed peer's LIF layer, timed in the same "
                             "turns; 'families', the neuron families against their peers "
                             "(not with --out, --all or --full)")
    args = parser.parse_args(argv)
    if args.only and (args.out or args.all or args.full):
        parser.error("--only prints one table: it takes no --out, --all or --full")
    ok, why = cpu.available()
    if not ok:
        print(f"the fused kernels cannot run here: {why}", file=sys.stderr)
    if args.only == "conventions":
        peers = [name for name in PEERS if installed(name)]
        conventions = measure_conventions(100, 32, 4096, 5, peers)
        print(table(conventions, CONVENTION_HEADER, convention_cells))
        return
    if args.only == "families":
        families = family_cases.measure(100, 32, 4096, 5, best)
        print(table(families, family_cases.HEADER, family_cases.cells))
        return
    if args.full:
        sizes = [(t, n, w) for t in (25, 100, 200) for n in (8, 32) for w in (1024, 4096)]
        repeat = 5
    else:
        sizes = [(100, 8, 1024), (100, 32, 4096)]
        repeat = 5
    rows = []
    for kind in LAYERS:
        for steps, batch, width in sizes:
            print(f"{kind} T={steps} batch={batch} width={width} ...", file=sys.stderr)
            rows += measure(kind, steps, batch, width, repeat)
    print(table(rows))
    size = sizes[-1] if (100, 32, 4096) not in sizes else (100, 32, 4096)
    peers = [r for r in rows if not r["impl"].startswith("hub") and r["layer"] == "LIF"
             and (r["T"], r["batch"], r["width"]) == size]
    # the fastest forward and the fastest forward+backward (often another peer)
    fastest = sorted({min(peers, key=lambda r: r[key])["impl"] for key in ("forward", "backward")}
                     ) if peers else []
    conventions = measure_conventions(*size, repeat, fastest)
    print(table(conventions, CONVENTION_HEADER, convention_cells))
    families = family_cases.measure(*size, repeat, best)
    print(table(families, family_cases.HEADER, family_cases.cells))
    if args.out:
        command = "python bench/neurons.py" + (" --full" if args.full else "")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(markdown(rows, command, conventions, size)
                            + family_cases.markdown(families, size) + kept_sections(args.out))
        plot(rows, args.out.with_suffix(".png"))
        print(f"wrote {args.out} and {args.out.with_suffix('.png')}", file=sys.stderr)
    if args.all:
        import conversion
        import networks

        out = ["--out", str(args.out)] if args.out else []
        networks.main(out)
        conversion.main(out)


if __name__ == "__main__":
    main()
