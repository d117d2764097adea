"""The ``hub`` command: convert, inspect and list plugins from the shell."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from . import __version__
from .api import convert, detect, load
from .errors import HubError
from .graph import Graph
from .plugin_manager import plugins

EPILOG = """\
examples:
  hub plugins
  hub inspect paper_02_cnn_cnn_sinabs.nir --dt 1 --draw cnn.png
  hub convert net.nir --to hub -o net.hub.json --dt 1e-4
  hub convert net.hub.json -o net.nir --force
  hub conformance --formats hub,nir --tier exact --out report/

Formats are detected from file suffixes; --from names the source format when they cannot be.
Errors exit with status 2 and print one line, "error: ...", saying what is wrong and where
(file, node, field); names from the files are printed literally. SIGTERM removes any
half-written file and exits with status 143.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hub", description="snn-hub: spike-exact conversion of spiking neural networks "
        "between frameworks, through a canonical discrete-time graph.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"snn-hub {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("convert", help="convert a model file to another format",
                       description="Convert SRC to format FMT and write it to OUT (atomically; "
                       "an existing OUT is kept unless --force).")
    p.add_argument("src", metavar="SRC", help="the model file to read")
    p.add_argument("--to", metavar="FMT", help="target format (default: from OUT's suffix); "
                   "see `hub plugins`")
    p.add_argument("-o", "--out", metavar="OUT", required=True, help="file to write")
    p.add_argument("--from", dest="source", metavar="FMT",
                   help="source format, when SRC's suffix does not tell")
    p.add_argument("--dt", type=float, help="time step in seconds, for formats that need one "
                   "(a NIR file without snn-hub metadata)")
    p.add_argument("--current-order", choices=("new", "previous"), help="how a NIR CubaLIF "
                   "without snn-hub metadata is read: 'new' (default: the voltage sees this "
                   "step's current, as snnTorch, Norse and SpikingJelly read it) or 'previous' "
                   "(forward Euler)")
    p.add_argument("-f", "--force", action="store_true", help="overwrite OUT if it exists")
    p.add_argument("-v", "--verbose", action="store_true", help="print the rewrites that made "
                   "the graph acceptable to the target, each exact or float-equivalent")
    p.add_argument("--rewrites", choices=("float-equivalent", "exact", "none"),
                   default="float-equivalent", help="which rewrites the conversion may use "
                   "(default: exact and float-equivalent ones)")

    p = sub.add_parser("inspect", help="show a model's nodes, shapes and parameters",
                       description="Print a table of SRC's nodes in execution order: type, "
                       "input and output shapes (without batch and time), parameters, and "
                       "recurrent inputs. --draw also saves a picture of the graph.")
    p.add_argument("src", metavar="SRC", help="the model file to read")
    p.add_argument("--from", dest="source", metavar="FMT", help="source format")
    p.add_argument("--dt", type=float, help="time step in seconds, for formats that need one")
    p.add_argument("--current-order", choices=("new", "previous"), help="how a NIR CubaLIF "
                   "without snn-hub metadata is read: 'new' (default: the voltage sees this "
                   "step's current, as snnTorch, Norse and SpikingJelly read it) or 'previous' "
                   "(forward Euler)")
    p.add_argument("--draw", metavar="PNG", help="also save a picture of the graph here "
                   "(.png, .svg or .pdf)")
    p.add_argument("-f", "--force", action="store_true", help="overwrite the picture")

    p = sub.add_parser("plugins", help="list plugins, their formats, and why any is unavailable",
                   description="List every snn-hub plugin found through the 'snn_hub' entry "
                   "points: version, status, formats with what each can do, and the reason a "
                   "plugin failed or a format is unavailable. HUB_PLUGINS=a,b loads only the "
                   "named plugins; HUB_DISABLE_PLUGINS=a,b skips them.")
    p.add_argument("--support-table", action="store_true", help="print instead which node "
                   "types each format imports and exports, as a markdown table")
    p.add_argument("--accepts", metavar="FMT", help="print instead what format FMT accepts "
                   "for export: node types, the values of each field, topology")

    p = sub.add_parser("conformance", help="prove conversions spike-identical along every path",
                       description="Convert every model of the zoo along every route between "
                       "the installed formats (A->B, A->B->A, A->file->B), run each result in "
                       "its own format's runtime, and compare with the reference simulation: "
                       "bit for bit in the exact and fixed tiers, up to threshold ties in the "
                       "float and paper tiers. Prints a source x target matrix per tier; exits "
                       "1 if anything failed (or, with --against, changed).")
    p.add_argument("--formats", metavar="A,B", help="formats to include (default: every usable "
                   "installed format; see `hub plugins`)")
    p.add_argument("--tier", metavar="T,U", default="exact,float,fixed,paper",
                   help="tiers to run (default: %(default)s)")
    p.add_argument("--cases", metavar="PATTERN", help="only the cases whose id matches this "
                   "fnmatch pattern, e.g. 'exact/dense-*'")
    p.add_argument("--paper", metavar="DIR", help="the NIR paper's graphs (default: "
                   "$HUB_EXTERNAL/nir-paper, or shared/external/nir-paper beside a checkout)")
    p.add_argument("--out", metavar="DIR", help="write report.md, matrix.png and, per failure, "
                   "a raster plot and a reproducer script here")
    p.add_argument("--record", metavar="DIR", help="save the cases and every runtime's outputs "
                   "here, to compare later runs against")
    p.add_argument("--against", metavar="DIR", help="re-run the cases recorded in DIR and report "
                   "every output that changed")
    p.add_argument("-j", "--jobs", metavar="N", type=_positive, default=1,
                   help="run the cases on N local processes (same results as one)")
    p.add_argument("--cluster", metavar="ADDRESS", help="run the cases on a Dask distributed "
                   "cluster, e.g. tcp://10.0.0.5:8786 (needs the 'distributed' extra, and "
                   "snn-hub with the same frameworks on every worker)")
    return parser


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, not {value!r}")
    return int(value)


class Terminated(HubError):
    """SIGTERM arrived: raised in the main thread, so that ``finally`` blocks (the removal of
    a half-written temporary file) run before the command exits."""


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = Console(highlight=False, emoji=False)
    err = Console(stderr=True, highlight=False, emoji=False)
    with warnings.catch_warnings(record=True) as caught, _sigterm_raises():
        warnings.simplefilter("always")
        try:
            code = _COMMANDS[args.command](args, out)
        except Terminated as e:
            _say(err, "error", str(e))
            code = 128 + signal.SIGTERM
        except HubError as e:
            _say(err, "error", str(e))
            code = 2
        except Exception as e:  # a bug or a library's failure: still one line, never a traceback
            _say(err, "error", f"unexpected {type(e).__name__}: {e} (a bug in snn-hub or a "
                 "plugin: please report it with the command that caused it)")
            code = 2
        for message in dict.fromkeys(str(w.message) for w in caught):  # each once
            _say(err, "warning", message)
    return code


def _say(console: Console, kind: str, message: str) -> None:
    """The one way the command reports: ``error: ...`` or ``warning: ...`` on one line.

    The message is untrusted (file, node and field names, metadata values from a stranger's
    file), so it is printed literally: a Text is never read as markup or emoji codes.
    """
    colour = "red" if kind == "error" else "yellow"
    text = _visible(" ".join(message.splitlines()))
    console.print(Text.assemble((f"{kind}:", colour), " ", text), soft_wrap=True)


def _literal(value: Any) -> Text:
    """A table cell or a line that shows ``value`` as it is, brackets and all."""
    return Text("\n".join(_visible(line) for line in str(value).split("\n")))


def _visible(text: str) -> str:
    """``text`` with control characters (a terminal's escape sequences) written as escapes."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` while the command runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Terminated("terminated by SIGTERM; a file being written was removed, "
                         "none was left half-written")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _convert(args: argparse.Namespace, out: Console) -> int:
    options = _read_options(args)
    path, report = convert(args.src, to=args.to, out=args.out, source=args.source,
                           force=args.force, report=True, rewrites=args.rewrites, **options)
    if args.verbose:
        out.print(_literal(str(report)), soft_wrap=True)
    out.print(_literal(f"wrote {path} ({detect(path).name})"), soft_wrap=True)
    return 0


def _read_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options for reading SRC that were given (a format refuses one it does not take)."""
    given = {"dt": args.dt, "current_order": args.current_order}
    return {k: v for k, v in given.items() if v is not None}


def _inspect(args: argparse.Namespace, out: Console) -> int:
    from .show import check_picture, describe, draw

    if args.draw:
        check_picture(args.draw)  # before the work, not after it
    graph = load(args.src, source=args.source, **_read_options(args))
    rows = describe(graph)
    table = Table(title=_literal(f"{args.src} ({detect(args.src, args.source).name}, "
                                 f"dt={graph.metadata.get('dt', 'not set')})"))
    for column in rows[0]:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*map(_literal, row.values()))
    out.print(table)
    for name, path in _paths(graph).items():
        out.print(_literal(f"{name} runs on {path}"), soft_wrap=True, style="dim")
    if args.draw:
        draw(graph, args.draw, force=args.force)
        out.print(_literal(f"drew {args.draw}"), soft_wrap=True)
    return 0


def _paths(graph: Graph) -> dict[str, str]:
    """Which path ``hub.simulate``'s default backend takes for each neuron layer, found by
    running two steps of zeros on the CPU in float32 (the paths of a graph with one input)."""
    if len(graph.inputs) != 1:
        return {}
    import torch

    from .simulate import Simulator

    shape = graph.plan().output_shapes[graph.inputs[0]]
    simulator = Simulator(graph)
    with torch.no_grad():
        simulator(torch.zeros(2, 1, *shape))
    return simulator.paths


def _plugins(args: argparse.Namespace, out: Console) -> int:
    if args.support_table:
        from .show import support_table

        print(support_table(), end="")
        return 0
    registry = plugins()
    if args.accepts:
        fmt = registry.format(args.accepts, usable=False)  # a declaration needs no framework
        accepts = fmt.accepts
        text = accepts.describe() if accepts is not None else (
            "not declared: the graph is exported as it is, and the exporter refuses what it "
            "cannot express")
        out.print(_literal(f"{fmt.name} accepts:\n{text}"), soft_wrap=True)
        return 0
    table = Table(title="snn-hub plugins")
    for column in ("plugin", "version", "status", "formats", "notes"):
        table.add_column(column, overflow="fold")
    for info in registry.info.values():
        formats, notes = [], [info.reason] if info.reason else []
        for name in info.formats:
            fmt = registry.formats[name]
            aliases = f" (also {', '.join(fmt.aliases)})" if fmt.aliases else ""
            formats.append(f"{name}{aliases}: {', '.join(fmt.capabilities)}")
            reason = fmt.unavailable()
            if reason:
                notes.append(f"{name} unavailable: {reason}")
        if info.nodes:
            notes.append(f"node types: {', '.join(info.nodes)}")
        colour = {"loaded": "green", "failed": "red"}.get(info.status, "yellow")
        table.add_row(_literal(info.name), _literal(info.version),
                      Text(str(info.status), style=colour), _literal("\n".join(formats)),
                      _literal("\n".join(notes)))
    out.print(table)
    return 0


def _conformance(args: argparse.Namespace, out: Console) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, \
        TimeElapsedColumn

    import hub_conformance
    from hub_conformance import record, report

    formats = _list(args.formats)
    tiers = tuple(_list(args.tier) or ())
    options = {"match": args.cases, "paper": Path(args.paper) if args.paper else None}
    spread = {"jobs": args.jobs, "cluster": args.cluster}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("{task.fields[what]}"))
    with Progress(*columns, console=out, transient=True) as bar:
        task = bar.add_task("conformance", total=None, what="")

        def progress(done: int, total: int, what: str) -> None:
            bar.update(task, completed=done, total=total, what=what)

        if args.against:
            suite, changes = record.against(Path(args.against), formats, progress=progress,
                                            match=args.cases, **spread)
        else:
            suite = hub_conformance.run(formats, tiers, progress=progress, **options, **spread)
            changes = []
    report.terminal(suite, out)
    if args.out:
        out.print(_literal(f"wrote {report.write(suite, Path(args.out))}"))
    if args.record:
        out.print(_literal(f"recorded {record.record(suite, Path(args.record))}"))
    if args.against:
        for change in changes:
            colour = "red" if change.kind in ("changed", "status") else "yellow"
            out.print(Text.assemble((change.kind, colour), f" {change.id}: {change.detail}"),
                      soft_wrap=True)
        out.print(_literal(f"against {args.against}: {len(changes)} difference(s)"),
                  soft_wrap=True)
    changed = any(c.kind in ("changed", "status") for c in changes)
    return 0 if suite.ok and not changed else 1


def _list(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


_COMMANDS = {"convert": _convert, "inspect": _inspect, "plugins": _plugins,
             "conformance": _conformance}


if __name__ == "__main__":
    sys.exit(main())
