"""The ``hub`` command: convert, inspect and list plugins from the shell."""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Sequence

from rich.console import Console
from rich.table import Table

from . import __version__
from .api import convert, detect, load
from .errors import HubError
from .plugin_manager import plugins

EPILOG = """\
examples:
  hub plugins
  hub inspect paper_02_cnn_cnn_sinabs.nir --dt 1 --draw cnn.png
  hub convert net.nir --to hub -o net.hub.json --dt 1e-4
  hub convert net.hub.json -o net.nir --force

Formats are detected from file suffixes; --from names the source format when they cannot be.
Errors exit with status 2 and say what is wrong and where (file, node, field).
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
    p.add_argument("-f", "--force", action="store_true", help="overwrite OUT if it exists")

    p = sub.add_parser("inspect", help="show a model's nodes, shapes and parameters",
                       description="Print a table of SRC's nodes in execution order: type, "
                       "input and output shapes (without batch and time), parameters, and "
                       "recurrent inputs. --draw also saves a picture of the graph.")
    p.add_argument("src", metavar="SRC", help="the model file to read")
    p.add_argument("--from", dest="source", metavar="FMT", help="source format")
    p.add_argument("--dt", type=float, help="time step in seconds, for formats that need one")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = Console(highlight=False)
    err = Console(stderr=True, highlight=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            code = _COMMANDS[args.command](args, out)
        except HubError as e:
            err.print(f"[red]error:[/red] {e}", markup=True, soft_wrap=True)
            code = 2
        for w in caught:
            err.print(f"[yellow]warning:[/yellow] {w.message}", soft_wrap=True)
    return code


def _convert(args: argparse.Namespace, out: Console) -> int:
    options = {"dt": args.dt} if args.dt is not None else {}
    path = convert(args.src, to=args.to, out=args.out, source=args.source, force=args.force,
                   **options)
    out.print(f"wrote {path} ({detect(path).name})")
    return 0


def _inspect(args: argparse.Namespace, out: Console) -> int:
    from .show import describe, draw

    graph = load(args.src, dt=args.dt, source=args.source)
    rows = describe(graph)
    table = Table(title=f"{args.src} ({detect(args.src, args.source).name}, "
                  f"dt={graph.metadata.get('dt', 'not set')})")
    for column in rows[0]:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row.values())
    out.print(table)
    if args.draw:
        draw(graph, args.draw, force=args.force)
        out.print(f"drew {args.draw}")
    return 0


def _plugins(args: argparse.Namespace, out: Console) -> int:
    if args.support_table:
        from .show import support_table

        print(support_table(), end="")
        return 0
    registry = plugins()
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
        status = {"loaded": "[green]loaded[/green]", "failed": "[red]failed[/red]"}.get(
            info.status, f"[yellow]{info.status}[/yellow]")
        table.add_row(info.name, info.version, status, "\n".join(formats), "\n".join(notes))
    out.print(table)
    return 0


_COMMANDS = {"convert": _convert, "inspect": _inspect, "plugins": _plugins}


if __name__ == "__main__":
    sys.exit(main())
