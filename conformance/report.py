"""The suite's results as a terminal matrix, a markdown report, pictures and reproducers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from . import paths
from .suite import FAILING, Outcome, Suite, as_numpy

COLOURS = {"pass": "#4caf50", "tie": "#cddc39", "xfail": "#ffc107", "fail": "#e53935",
           "n/a": "#bdbdbd", "unavailable": "#90a4ae", "none": "#ffffff"}


def cells(suite: Suite, tier: str) -> dict[tuple[str, str], dict[str, int]]:
    """Counts by status for each (source, target) pair of ``tier``; routes of all kinds."""
    return {(a, b): suite.count(tier=tier, source=a, target=b)
            for a in suite.formats for b in suite.formats}


def verdict(counts: dict[str, int]) -> str:
    """The colour class of a cell: fail, xfail, tie, pass, n/a or none."""
    if sum(counts[s] for s in FAILING):
        return "fail"
    for status in ("xfail", "tie", "pass", "unavailable", "n/a"):
        if counts[status]:
            return status
    return "none"


def cell_text(counts: dict[str, int]) -> str:
    """A cell in words: ``12 pass`` / ``2 fail of 14`` / ``n/a``, with ties and gaps noted."""
    ran = sum(v for k, v in counts.items() if k not in ("n/a", "unavailable"))
    if not ran:
        return "not run" if counts["unavailable"] else "n/a" if counts["n/a"] else ""
    bad = sum(counts[s] for s in FAILING)
    text = f"{bad} fail of {ran}" if bad else f"{ran} pass"
    extra = [f"{counts[s]} {s}" for s in ("tie", "xfail") if counts[s]]
    for s in ("n/a", "unavailable"):
        if counts[s]:
            extra.append(f"{counts[s]} {'not run' if s == 'unavailable' else s}")
    return text + (f" ({', '.join(extra)})" if extra else "")


def na_reasons(suite: Suite) -> list[tuple[str, int, list[str]]]:
    """Why runs were n/a, most blocking first: (reason, runs it blocks, the cases it blocks).
    Reasons that differ only in the node's name or the value found are one reason."""
    groups: dict[str, tuple[int, set[str]]] = {}
    for o in suite.outcomes:
        if o.status == "n/a":
            reason = _general(o.detail)
            n, names = groups.get(reason, (0, set()))
            groups[reason] = (n + 1, names | {o.case.id})
    return sorted(((r, n, sorted(names)) for r, (n, names) in groups.items()),
                  key=lambda item: (-item[1], item[0]))


def _general(detail: str) -> str:
    detail = re.sub(r"node '[^']*'", "node", detail)
    detail = re.sub(r"np\.float\d+\(([^)]*)\)", r"\1", detail)
    return re.sub(r"got \[[^\]]*\]", "got [...]", detail)


def coverage(counts: dict[str, int]) -> float | None:
    """The share of a cell's runs that ran (were not n/a), or None for an empty cell."""
    total = sum(v for k, v in counts.items() if k != "unavailable")
    return None if not total else 1 - counts["n/a"] / total


def _unavailable(suite: Suite) -> dict[str, int]:
    """How many runs could not run here, by reason (a runtime's environment is missing)."""
    out: dict[str, int] = {}
    for o in suite.outcomes:
        if o.status == "unavailable":
            out[o.detail] = out.get(o.detail, 0) + 1
    return out


def terminal(suite: Suite, console: Any) -> None:
    """Print one source x target matrix per tier with rich."""
    from rich.table import Table

    style = {"fail": "bold red", "xfail": "yellow", "tie": "green", "pass": "green",
             "n/a": "dim", "unavailable": "yellow", "none": "dim"}
    for tier in suite.tiers:
        grid = cells(suite, tier)
        if not any(sum(c.values()) for c in grid.values()):
            continue
        table = Table(title=f"{tier} tier: source (rows) x target (columns)")
        table.add_column("source")
        for b in suite.formats:
            table.add_column(b)
        for a in suite.formats:
            row = []
            for b in suite.formats:
                counts = grid[(a, b)]
                row.append(f"[{style[verdict(counts)]}]{cell_text(counts)}[/]")
            table.add_row(a, *row)
        console.print(table)
    for outcome in suite.failures[:20]:
        console.print(f"[red]{outcome.status}[/red] {outcome.id}: {outcome.detail}",
                      soft_wrap=True)
    if len(suite.failures) > 20:
        console.print(f"... and {len(suite.failures) - 20} more failures (see the report)")
    for name, reason in suite.unloadable:
        console.print(f"[yellow]not run[/yellow] paper/{name}: {reason}", soft_wrap=True)
    for reason, n in sorted(_unavailable(suite).items()):
        console.print(f"[yellow]not run[/yellow] {n} runs: {reason}", soft_wrap=True)
    ranked = na_reasons(suite)
    if ranked:
        console.print("n/a reasons, most blocking first:")
    for reason, n, _ in ranked[:8]:
        console.print(f"  [dim]{n:6d} n/a[/dim] {reason}", soft_wrap=True, markup=True,
                      highlight=False)
    if len(ranked) > 8:
        console.print(f"  ... and {len(ranked) - 8} more reasons (see the report)")
    total = len(suite.outcomes)
    console.print(f"{total} runs of {len({o.case.id for o in suite.outcomes})} cases along "
                  f"{len({o.route for o in suite.outcomes})} routes in {suite.seconds:.1f} s: "
                  f"{', '.join(f'{v} {k}' for k, v in suite.count().items() if v)}")


def write(suite: Suite, out: Path) -> Path:
    """Write ``report.md``, ``matrix.png`` and, per failure, a raster plot and a reproducer."""
    out.mkdir(parents=True, exist_ok=True)
    matrix_picture(suite, out / "matrix.png")
    failed = []
    for outcome in suite.failures + [o for o in suite.outcomes if o.status == "xfail"]:
        folder = out / "failures" / _slug(outcome.id)
        folder.mkdir(parents=True, exist_ok=True)
        reproducer(outcome, folder)
        if outcome.output is not None and outcome.comparison is not None:
            raster(outcome, suite.references[outcome.case.id], folder / "raster.png")
        failed.append((outcome, folder.relative_to(out)))
    path = out / "report.md"
    path.write_text(markdown(suite, failed), encoding="utf-8")
    return path


def markdown(suite: Suite, failed: list[tuple[Outcome, Path]]) -> str:
    counts = suite.count()
    lines = ["# snn-hub conformance report", "",
             f"Formats: {', '.join(suite.formats)}. Tiers: {', '.join(suite.tiers)}. "
             f"{len(suite.outcomes)} runs in {suite.seconds:.1f} s: "
             f"{', '.join(f'{v} {k}' for k, v in counts.items() if v)}.", "",
             "Each run converts a zoo model along a route, runs the result in the target "
             "format's own runtime and compares it with the reference simulation: bit for bit "
             "in the exact and fixed tiers; in the float and paper tiers a divergence must be a "
             "threshold tie.", "", "![matrix](matrix.png)", ""]
    for tier in suite.tiers:
        grid = cells(suite, tier)
        if not any(sum(c.values()) for c in grid.values()):
            continue
        lines += [f"## {tier} tier", "", "| source \\ target | " + " | ".join(suite.formats)
                  + " |", "|---" * (len(suite.formats) + 1) + "|"]
        for a in suite.formats:
            lines.append(f"| **{a}** | " + " | ".join(cell_text(grid[(a, b)]) or "-"
                                                      for b in suite.formats) + " |")
        lines.append("")
    kinds = sorted({o.route.kind for o in suite.outcomes})
    if kinds:
        lines += ["## By kind of route", "", "| route kind | " + " | ".join(
            s for s in counts if counts[s]) + " |", "|---" * (1 + sum(1 for s in counts
                                                                     if counts[s])) + "|"]
        for kind in kinds:
            by = suite.count(kind=kind)
            lines.append(f"| {kind} | " + " | ".join(str(by[s]) for s in counts if counts[s])
                         + " |")
        lines.append("")
    if failed:
        lines += ["## Failures and known gaps", ""]
        for outcome, folder in failed:
            picture = folder / "raster.png"
            lines.append(f"- **{outcome.status}** `{outcome.id}`: {outcome.detail} "
                         f"([reproducer]({folder / 'reproduce.py'})"
                         + (f", ![raster]({picture})" if outcome.output is not None
                            and outcome.comparison is not None else "") + ")")
        lines.append("")
    ties = [o for o in suite.outcomes if o.status == "tie"]
    if ties:
        lines += ["## Threshold ties (float tiers; they pass)", ""]
        lines += [f"- `{o.id}`: {o.detail}" for o in ties]
        lines.append("")
    ranked = na_reasons(suite)
    if ranked:
        total = sum(n for _, n, _ in ranked)
        lines += ["## Not expressible (n/a), most blocking first", "",
                  f"{total} runs are n/a for {len(ranked)} reasons (node names and values "
                  "found are left out, so a reason counts every node it blocks).", "",
                  "| runs | share of n/a | reason | cases |", "|---:|---:|---|---|"]
        for reason, n, names in ranked:
            shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6
                                            else "")
            lines.append(f"| {n} | {n / total:.1%} | {reason.replace('|', '/')} | {shown} |")
        lines.append("")
    unavailable = _unavailable(suite)
    if unavailable:
        lines += ["## Not run: a runtime is unavailable on this machine", ""]
        lines += [f"- {n} runs: {reason}" for reason, n in sorted(unavailable.items())]
        lines.append("")
    if suite.unloadable:
        lines += ["## Paper files not run", ""]
        lines += [f"- `{name}`: {reason}" for name, reason in suite.unloadable]
        lines.append("")
    return "\n".join(lines)


def matrix_picture(suite: Suite, path: Path) -> None:
    """One coloured source x target grid per tier, each cell labelled with its counts; a
    passing cell's green fades towards grey with the share of its runs that were n/a."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgb

    tiers = [t for t in suite.tiers
             if any(sum(c.values()) for c in cells(suite, t).values())] or list(suite.tiers)
    n = len(suite.formats)
    columns = min(2, len(tiers))
    rows = -(-len(tiers) // columns)
    side = 1.8 + 1.3 * n
    fig, axes = plt.subplots(rows, columns, figsize=(side * columns, side * rows),
                             squeeze=False)
    for ax in axes.flat[len(tiers):]:
        ax.axis("off")
    for ax, tier in zip(axes.flat, tiers):
        grid = cells(suite, tier)
        image = np.ones((n, n, 3))
        for i, a in enumerate(suite.formats):
            for j, b in enumerate(suite.formats):
                counts = grid[(a, b)]
                colour = np.array(to_rgb(COLOURS[verdict(counts)]))
                share = coverage(counts)
                if verdict(counts) in ("pass", "tie") and share is not None:
                    # a cell is as saturated as the share of its runs that ran
                    colour = colour * share + np.array(to_rgb(COLOURS["n/a"])) * (1 - share)
                image[i, j] = colour
                text = cell_text(counts).replace(" (", "\n(")
                if share is not None:
                    text += f"\n{share:.0%} ran"
                ax.text(j, i, text, ha="center", va="center", fontsize=7, wrap=True)
        ax.imshow(image)
        ax.set_xticks(np.arange(n + 1) - 0.5, minor=True)
        ax.set_yticks(np.arange(n + 1) - 0.5, minor=True)
        ax.grid(which="minor", color="white", linewidth=3)
        ax.tick_params(which="minor", length=0)
        ax.set_xticks(range(n), suite.formats)
        ax.set_yticks(range(n), suite.formats)
        ax.set_xlabel("target")
        ax.set_ylabel("source")
        ax.set_title(f"{tier} tier")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def raster(outcome: Outcome, reference: Any, path: Path) -> None:
    """The reference and the runtime's outputs of the divergent sample, first divergence marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if outcome.output is None or outcome.comparison is None:
        return  # it never ran: nothing to draw
    first = outcome.comparison.first
    sample = first[1] if first else 0
    ref = as_numpy(reference)[:, sample, :].T
    got = as_numpy(outcome.output)[:, sample, :].T if outcome.output.shape == reference.shape \
        else None
    fig, axes = plt.subplots(2, 1, figsize=(9, 2 + 0.25 * ref.shape[0] * 2), sharex=True)
    for ax, data, title in ((axes[0], ref, "reference (hub simulator)"),
                            (axes[1], got, f"{outcome.route.runtime} runtime, "
                                           f"{outcome.route.label}")):
        if data is None:
            ax.set_title(f"{title}: output of another shape")
            continue
        spikes = np.nonzero(data)
        ax.scatter(spikes[1], spikes[0], marker="|", s=80, color="black", label="nonzero output")
        ax.set_ylim(-0.5, ref.shape[0] - 0.5)
        ax.set_ylabel("output")
        ax.set_title(title, fontsize=9)
        if first is not None:
            ax.axvline(first[0], color="red", linestyle="--", linewidth=1, alpha=0.5, zorder=0,
                       label=f"first divergence (step {first[0]})")
        if got is not None:
            wrong = np.nonzero(~np.isclose(got, ref, rtol=1e-5, atol=1e-6))
            ax.scatter(wrong[1], wrong[0], s=60, facecolors="none", edgecolors="red",
                       label="differs")
    axes[0].legend(loc="upper right", fontsize=7)
    axes[1].set_xlabel("time step")
    fig.suptitle(f"{outcome.id}\n{outcome.detail}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def reproducer(outcome: Outcome, folder: Path) -> None:
    """``graph.hub.json``, ``x.npy`` and ``reproduce.py``: the failure, standalone."""
    import hub

    hub.save(outcome.case.graph, to="hub", out=folder / "graph.hub.json", force=True)
    np.save(folder / "x.npy", np.asarray(outcome.case.x), allow_pickle=False)
    (folder / "reproduce.py").write_text(
        paths.script(outcome.route, f"{outcome.id}: {outcome.status}, {outcome.detail}",
                     outcome.case.originals),
        encoding="utf-8")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.replace("->", "_to_")).strip("_")
