"""Showing a graph to a person: a table of its nodes, and a picture of its structure."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from .errors import HubError
from .fileio import atomic_path
from .graph import Graph
from .node import Node


def summarize(value: Any) -> str:
    """A short text for a parameter value: scalars in full, arrays by shape and range."""
    if isinstance(value, np.ndarray):
        if value.size == 1:
            return f"{value.reshape(()).item():.6g}"
        if value.size and (value == value.flat[0]).all():
            return f"{value.flat[0]:.6g} x{list(value.shape)}"
        if value.size == 0:
            return f"[] {value.dtype}"
        return f"{value.dtype}{list(value.shape)} in [{value.min():.4g}, {value.max():.4g}]"
    return repr(value) if isinstance(value, str) else str(value)


def describe(graph: Graph) -> list[dict[str, str]]:
    """One row per node of the flat graph, in execution order: name, type, shapes, parameters."""
    plan = graph.plan()
    flat = graph.flat()
    rows = []
    for name in plan.order:
        node = flat.nodes[name]
        shape_in = plan.input_shapes[name]
        rows.append({
            "node": name,
            "type": node.type,
            "input": "-" if shape_in is None else str(list(shape_in)),
            "output": str(list(plan.output_shapes[name])),
            "parameters": ", ".join(f"{k}={summarize(v)}" for k, v in _shown(node).items()),
            "recurrent from": ", ".join(plan.recurrent[name]),
        })
    return rows


def _shown(node: Node) -> dict[str, Any]:
    """The parameters worth showing: those not at their default."""
    out = {}
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            out[f.name] = value
            continue
        same = (np.array_equal(value, default) if isinstance(value, np.ndarray)
                else value == default)
        if not same:
            out[f.name] = value
    return out


#: Picture formats :func:`draw` writes, by file suffix.
PICTURES = ("png", "svg", "pdf")


def check_picture(path: str | os.PathLike) -> str:
    """The picture format ``path``'s suffix names, or a HubError naming the file."""
    suffix = os.fspath(path).rsplit(".", 1)[-1].lower() if "." in os.fspath(path) else ""
    if suffix not in PICTURES:
        raise HubError(f"cannot draw a picture as {suffix or 'a file without suffix'!r}; name "
                       f"the file {', '.join('.' + p for p in PICTURES)}", file=path)
    return suffix


def draw(graph: Graph, path: str | os.PathLike, *, force: bool = False) -> None:
    """Save a picture of the graph: nodes in layers by depth, recurrent edges dashed."""
    kind = check_picture(path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    plan = graph.plan()
    flat = graph.flat()
    depth: dict[str, int] = {}
    for name in plan.order:
        depth[name] = 1 + max((depth[s] for s in plan.forward[name]), default=-1)
    layers: dict[int, list[str]] = {}
    for name in plan.order:
        layers.setdefault(depth[name], []).append(name)
    # Layers run left to right; a long chain runs top to bottom instead, to stay readable.
    vertical = len(layers) > 8
    pos = {}
    for d, names in layers.items():
        for i, name in enumerate(names):
            across = (i - (len(names) - 1) / 2)
            pos[name] = (across * 2.6, -d * 1.4) if vertical else (d * 3.0, across * 1.6)
    deep, wide = len(layers) + 1, max(len(v) for v in layers.values())
    width, height = ((max(4.0, 2.0 * wide + 1.5), 0.8 * deep + 1.0) if vertical
                     else (max(6.0, 1.9 * deep), max(3.0, 1.1 * wide + 1.5)))
    fig, ax = plt.subplots(figsize=(width, height))
    for name, (x, y) in pos.items():
        node = flat.nodes[name]
        color = "#fde0c5" if getattr(node, "spiking", False) else (
            "#dbe9f6" if not node.stateful else "#e4f2d7")
        ax.add_patch(FancyBboxPatch((x - 1.1, y - 0.45), 2.2, 0.9,
                                    boxstyle="round,pad=0.05", fc=color, ec="#444"))
        shape = "x".join(map(str, plan.output_shapes[name])) or "scalar"
        # names from the file are plain text, never matplotlib's $math$
        ax.text(x, y + 0.12, name, ha="center", va="center", fontsize=8, weight="bold",
                usetex=False, parse_math=False)
        ax.text(x, y - 0.18, f"{node.type} [{shape}]", ha="center", va="center", fontsize=7,
                usetex=False, parse_math=False)
    for target, sources in plan.forward.items():
        for source in sources:
            _arrow(ax, FancyArrowPatch, pos[source], pos[target], "arc3,rad=0.0", "-", vertical)
    for target, sources in plan.recurrent.items():
        for source in sources:
            _arrow(ax, FancyArrowPatch, pos[source], pos[target], "arc3,rad=-0.5", "--", vertical)
    xs = [p[0] for p in pos.values()]
    ys = [p[1] for p in pos.values()]
    ax.set_xlim(min(xs) - 1.5, max(xs) + 1.5)
    ax.set_ylim(min(ys) - 1.0, max(ys) + 1.0)
    ax.set_axis_off()
    ax.set_title("orange: spiking neurons, green: other state, blue: stateless\n"
                 "dashed: recurrent edge (one step late)", fontsize=8)
    fig.tight_layout()
    try:
        with atomic_path(path, force=force) as tmp:
            fig.savefig(tmp, format=kind, dpi=120)
    finally:
        plt.close(fig)


def _arrow(ax: Any, cls: Any, a: tuple, b: tuple, style: str, line: str, vertical: bool) -> None:
    shrink = 22 if vertical else 28  # points: clear of the boxes
    ax.add_patch(cls(a, b, connectionstyle=style, arrowstyle="-|>", mutation_scale=12,
                     shrinkA=shrink, shrinkB=shrink, linestyle=line, color="#333"))


def support_table() -> str:
    """Markdown: which node types each installed format imports (I) and exports (E)."""
    from .node import node_types
    from .plugin_manager import plugins

    formats = sorted(plugins().formats.values(), key=lambda f: (f.name != "hub", f.name))
    lines = ["| node type | " + " | ".join(f"`{f.name}`" for f in formats) + " |",
             "|---|" + "---|" * len(formats)]
    for name in node_types():
        cells = []
        for fmt in formats:
            marks = ("import" if name in fmt.imports else "") + (
                " + export" if name in fmt.exports and name in fmt.imports else
                ("export" if name in fmt.exports else ""))
            cells.append(marks or "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
