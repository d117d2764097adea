"""Conversion paths between formats, as steps the suite executes and a reproducer prints.

A :class:`Route` is one way a model travels: ``A->B`` (convert, run in B), ``A->B->A`` (there
and back, parameters must come back identical, run in A) or ``A->F file->B`` (through a file of
format F). Each route is a short list of :class:`Step` s; :func:`execute` carries them out with
the public API (``hub.save``, ``hub.load`` and each format's ``run`` hook), and
:func:`script` writes the same steps as a Python script, so a failure's reproducer does exactly
what the suite did.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

import hub
from hub.formats import Format


@dataclasses.dataclass(frozen=True)
class Step:
    """One step: ``op`` applied with format ``fmt`` to variable ``src``, giving ``dst``.

    ``op`` is ``"native"`` (graph -> the format's model: ``export``, or ``write`` to a file),
    ``"import"`` (model -> graph), ``"file"`` (graph -> file of ``fmt`` -> graph), ``"same"``
    (``dst`` must have ``src``'s parameters) or ``"run"`` (the format's runtime on ``x``).
    """

    op: str
    fmt: str
    src: str
    dst: str


@dataclasses.dataclass(frozen=True)
class Route:
    """A conversion path from format ``source`` to ``target`` (and back, or through a file)."""

    source: str
    target: str
    via: str | None = None
    back: bool = False

    @property
    def kind(self) -> str:
        return "round trip" if self.back else "file" if self.via else "direct"

    @property
    def label(self) -> str:
        if self.back:
            return f"{self.source}->{self.target}->{self.source}"
        if self.via:
            return f"{self.source}->{self.via} file->{self.target}"
        return f"{self.source}->{self.target}"

    @property
    def runtime(self) -> str:
        """The format whose runtime runs the result."""
        return self.source if self.back else self.target

    @property
    def formats(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f for f in (self.source, self.via, self.target) if f))

    def steps(self) -> list[Step]:
        a, b = self.source, self.target
        steps = [Step("native", a, "graph", "model_a"), Step("import", a, "model_a", "g")]
        if self.back:
            return steps + [Step("native", b, "g", "model_b"), Step("import", b, "model_b", "g2"),
                            Step("native", a, "g2", "model"), Step("import", a, "model", "g3"),
                            Step("same", a, "g", "g3"), Step("run", a, "model", "y")]
        if self.via:
            steps.append(Step("file", self.via, "g", "g"))
        return steps + [Step("native", b, "g", "model"), Step("run", b, "model", "y")]


def usable(names: Iterable[str] | None = None) -> dict[str, Format]:
    """The installed, usable formats (those named, if given), by name."""
    registry = hub.plugins()
    if names is None:
        return {n: f for n, f in sorted(registry.formats.items()) if f.unavailable() is None}
    return {registry.format(n).name: registry.format(n) for n in names}


def routes(formats: dict[str, Format]) -> list[Route]:
    """Every route between ``formats``: each pair directly, there and back, and through each file.

    A source must export (or write) and import (load or read); a target must export (or write)
    and run; a file format must write and read.
    """
    def can(fmt: Format, *groups: tuple[str, ...]) -> bool:
        return all(any(m in fmt.capabilities for m in group) for group in groups)

    sources = [n for n, f in formats.items() if can(f, ("export", "write"), ("load", "read"))]
    targets = [n for n, f in formats.items() if can(f, ("export", "write"), ("run",))]
    files = [n for n, f in formats.items() if can(f, ("write",), ("read",))]
    out = [Route(a, b) for a in sources for b in targets]
    out += [Route(a, b, back=True) for a in sources if a in targets for b in sources if b != a]
    out += [Route(a, b, via=f) for f in files for a in sources for b in targets]
    return out


class Unsupported(Exception):
    """A format on the route cannot express the model (its converter said so)."""


class ParameterMismatch(Exception):
    """A round trip did not give back the same parameters."""


Originals = dict[str, tuple[Any, dict[str, Any]]]


def _original(route: Route, index: int, originals: Originals | None) -> tuple | None:
    """The original model and import options a route's first two steps (the source's native
    model and its import) use instead of exporting, if the case has one for the source."""
    return (originals or {}).get(route.source) if index < 2 else None


def execute(route: Route, graph: hub.Graph, x: torch.Tensor,
            originals: Originals | None = None, rewrites: str = "float-equivalent") -> Any:
    """Carry ``graph`` along ``route`` and return the runtime's output on ``x``.

    ``originals`` maps a format to a model of it that ``graph`` was imported from, and the
    options that import needs (a real NIR file and its ``dt``): a route from that format then
    starts from the original rather than from an export of ``graph``.

    Raises :class:`Unsupported` when a converter refuses the model with
    ``hub.UnsupportedError`` (the model is not expressible there), :class:`ParameterMismatch`
    when a round trip changes parameters; anything else a plugin raises is passed on.
    ``rewrites`` are the rewrites each export may use (``hub.legalise``): ``"exact"`` for the
    bit-exact tiers. A round trip through an export that rewrote the graph gives back an
    equivalent graph, not the same one: its spikes are compared, its parameters are not.
    """
    with tempfile.TemporaryDirectory(prefix="hub-conformance-") as tmp:
        folder = Path(tmp)
        values: dict[str, Any] = {"graph": graph}
        registry = hub.plugins()
        rewritten = False
        for index, step in enumerate(route.steps()):
            fmt = registry.format(step.fmt)
            src = values[step.src]
            original = _original(route, index, originals)
            try:
                if step.op == "native" and original is not None:
                    values[step.dst] = original[0]
                elif step.op == "native":
                    values[step.dst], report = native(fmt, src, folder / f"step{index}",
                                                      rewrites)
                    rewritten = rewritten or bool(report)
                elif step.op == "import":
                    values[step.dst] = hub.load(src, source=fmt.name,
                                                **(original[1] if original else {}))
                elif step.op == "file":
                    path = folder / f"step{index}{fmt.suffixes[0]}"
                    _, report = hub.save(src, to=fmt.name, out=path, rewrites=rewrites,
                                         report=True)
                    rewritten = rewritten or bool(report)
                    values[step.dst] = hub.load(path, source=fmt.name)
                elif step.op == "same" and rewritten:
                    pass  # an equivalent graph comes back; the run below compares its spikes
                elif step.op == "same":
                    problem = different(values[step.src], values[step.dst])
                    if problem:
                        raise ParameterMismatch(f"{route.label} changed {problem}")
                else:
                    values[step.dst] = fmt.run(src, x)
            except hub.UnsupportedError as e:
                # where in the model, not which temporary file: the same reason on every route
                where = f"node {e.node!r}: " if e.node else ""
                raise Unsupported(f"{fmt.name}: {where}{e.message}") from e
        return values["y"]


def native(fmt: Format, graph: hub.Graph, stem: Path,
           rewrites: str = "float-equivalent") -> tuple[Any, Any]:
    """The format's own model of ``graph`` (an exported object, or a file it writes), and the
    report of the rewrites its export made."""
    if "export" in fmt.capabilities:
        return hub.save(graph, to=fmt.name, rewrites=rewrites, report=True)
    return hub.save(graph, to=fmt.name, out=stem.with_suffix(fmt.suffixes[0]),
                    rewrites=rewrites, report=True)


def different(a: hub.Graph, b: hub.Graph) -> str | None:
    """What differs between two graphs' nodes and edges (names aside), or ``None``."""
    fa, fb = a.flat(), b.flat()
    pa, pb = fa.plan(), fb.plan()
    if len(pa.order) != len(pb.order):
        return f"the node count: {len(pa.order)} -> {len(pb.order)}"
    rename = dict(zip(pb.order, pa.order))
    for na, nb in zip(pa.order, pb.order):
        x, y = fa.nodes[na], fb.nodes[nb]
        if type(x) is not type(y):
            return f"node {na!r}: {x.type} -> {y.type}"
        for field, value in x.params().items():
            other = getattr(y, field)
            if not _identical(value, other):
                return f"node {na!r} field {field!r}: {_show(value)} -> {_show(other)}"
    edges_a = sorted(map(tuple, fa.edges))
    edges_b = sorted((rename[s], rename[t]) for s, t in fb.edges)
    if edges_a != edges_b:
        return f"the edges: {edges_a} -> {edges_b}"
    return None


def _identical(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    return a == b


def _show(value: Any) -> str:
    if isinstance(value, np.ndarray):
        flat = value.ravel()
        head = ", ".join(repr(v.item()) for v in flat[:4])
        return f"{value.dtype}{list(value.shape)} [{head}{', ...' if flat.size > 4 else ''}]"
    return repr(value)


def script(route: Route, description: str, originals: Originals | None = None) -> str:
    """A standalone Python script that carries ``graph.hub.json`` along ``route`` and compares."""
    description = description.replace("\\", "/").replace('"""', "'''")
    lines = [
        f'"""Reproduces {description}',
        "",
        "Run it from this folder: python reproduce.py",
        '"""',
        "",
        "from pathlib import Path",
        "",
        "import numpy as np",
        "import torch",
        "",
        "import hub",
        "",
        "here = Path(__file__).parent",
        'graph = hub.load(here / "graph.hub.json")',
        'x = torch.from_numpy(np.load(here / "x.npy"))',
        "fmt = hub.plugins().format",
        "",
    ]
    registry = hub.plugins()
    for index, step in enumerate(route.steps()):
        fmt = registry.format(step.fmt)
        name = repr(fmt.name)
        original = _original(route, index, originals)
        if step.op == "native" and original is not None:
            lines.append(f"{step.dst} = Path({str(original[0])!r})  # the original model")
        elif step.op == "import" and original is not None:
            options = ", ".join(f"{k}={v!r}" for k, v in original[1].items())
            lines.append(f"{step.dst} = hub.load({step.src}, source={name}, {options})")
        elif step.op == "native" and "export" in fmt.capabilities:
            lines.append(f"{step.dst} = hub.save({step.src}, to={name})")
        elif step.op == "native":
            out = repr(f"step{index}{fmt.suffixes[0]}")
            lines.append(f"{step.dst} = hub.save({step.src}, to={name}, out=here / {out}, "
                         "force=True)")
        elif step.op == "import":
            lines.append(f"{step.dst} = hub.load({step.src}, source={name})")
        elif step.op == "file":
            out = repr(f"step{index}{fmt.suffixes[0]}")
            lines.append(f"hub.save({step.src}, to={name}, out=here / {out}, force=True)")
            lines.append(f"{step.dst} = hub.load(here / {out}, source={name})")
        elif step.op == "same":
            lines.append(f"print('round trip parameters identical:', "
                         f"{step.src}.to_dict() == {step.dst}.to_dict())")
        else:
            lines.append(f"{step.dst} = torch.as_tensor(fmt({name}).run({step.src}, x))")
    lines += [
        "expected = hub.simulate(graph, x)  # the reference",
        "differ = (y != expected).nonzero()",
        "if len(differ):",
        "    t, n, *i = differ[0].tolist()",
        "    print(f'first divergence at step {t}, sample {n}, output {i}: '",
        "          f'{y[(t, n, *i)].item()} instead of {expected[(t, n, *i)].item()}')",
        "    print(f'{len(differ)} of {y.numel()} output entries differ')",
        "else:",
        "    print('identical to the reference')",
        "",
    ]
    return "\n".join(lines)
