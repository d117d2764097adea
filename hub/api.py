"""``hub.load``, ``hub.save`` and ``hub.convert``: format detection and option routing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

from .errors import FormatError, HubError, ParameterError, PluginError
from .fileio import atomic_path
from .formats import Format
from .graph import Graph
from .legalise import FLOAT, Report, legalise
from .plugin_manager import plugins


class Converted(NamedTuple):
    """What ``convert``/``save`` return with ``report=True``: the result and the report of
    the rewrites that made the graph acceptable to the target (``model, report = ...``)."""

    result: Any
    report: Report


def _is_path(src: Any) -> bool:
    return isinstance(src, (str, os.PathLike))


def detect(src: Any, source: str | None = None) -> Format:
    """The format of ``src`` (a path or an in-memory model); ``source`` names it outright."""
    registry = plugins()
    if source is not None:
        return registry.format(source)
    if _is_path(src):
        path = Path(src)
        matches = _claiming(path)
        if not matches:
            suffixes = sorted({s for f in registry.formats.values() for s in f.suffixes})
            raise FormatError(f"cannot tell the format from the file name; known suffixes: "
                              f"{', '.join(suffixes) or 'none'}. Pass source=<format>",
                              file=path)
    else:
        matches = [f for f in registry.formats.values() if _recognizes(f, src)]
        if not matches:
            raise FormatError(f"no installed format recognises a {type(src).__module__}."
                              f"{type(src).__qualname__}; known formats: "
                              f"{', '.join(sorted(registry.formats))}. Pass source=<format>, or "
                              "run `hub plugins` to see which are unavailable")
    if len(matches) > 1:
        names = ", ".join(f.name for f in matches)
        raise FormatError(f"several formats claim this source ({names}); pass source=<format>")
    return registry.format(matches[0].name)


def _claiming(path: Path) -> list[Format]:
    """The formats whose file names ``path`` matches."""
    return [f for f in plugins().formats.values() if f.recognizes_file(path)]


def _recognizes(fmt: Format, obj: Any) -> bool:
    if fmt.unavailable():
        return False
    try:
        return bool(fmt.recognizes(obj))
    except Exception:  # a plugin's check must not break detection for the others
        return False


def _check_options(options: dict[str, Any], *accepting: tuple[Format, tuple[str, ...]]) -> None:
    known = {name for _, names in accepting for name in names}
    unknown = sorted(set(options) - known)
    if unknown:
        offered = "; ".join(f"{fmt.name!r} takes {', '.join(names) or 'none'}"
                            for fmt, names in accepting)
        raise HubError(f"unknown option(s) {', '.join(map(repr, unknown))}: {offered}")


def _capable(fmt: Format, method: str, what: str) -> None:
    if method not in fmt.capabilities:
        raise PluginError(f"format {fmt.name!r} cannot {what}; it can: "
                          f"{', '.join(fmt.capabilities) or 'nothing'}")


def _read(fmt: Format, src: Any, options: dict[str, Any]) -> Graph:
    if _is_path(src):
        path = Path(src)
        _capable(fmt, "read", "read files")
        try:
            is_file = path.is_file()
            exists = is_file or path.exists()
        except OSError as e:  # a name too long for the file system, say
            raise FormatError(f"cannot open it: {e.strerror or e}", file=path) from None
        if not is_file:
            raise FormatError("no such file" if not exists else "not a file", file=path)
        try:
            graph = fmt.read(path, **options)
        except HubError as e:
            raise e.at(file=path)
        except Exception as e:  # untrusted input: never let a library traceback through
            raise FormatError(f"cannot read as {fmt.name!r}: {type(e).__name__}: {e}",
                              file=path) from e
    else:
        _capable(fmt, "load", "import in-memory models")
        try:
            graph = fmt.load(src, **options)
        except HubError:
            raise
        except Exception as e:
            raise FormatError(f"cannot import this {type(src).__name__} as {fmt.name!r}: "
                              f"{type(e).__name__}: {e}") from e
    if not isinstance(graph, Graph):
        raise PluginError(f"format {fmt.name!r} returned {type(graph).__name__}, not a hub.Graph")
    try:
        graph.validate()
    except HubError as e:
        raise e.at(file=src) if _is_path(src) else e
    return graph


def load(src: Any, *, dt: float | None = None, source: str | None = None,
         **options: Any) -> Graph:
    """Import ``src`` (a file path or an in-memory model) as a canonical :class:`Graph`.

    The format is detected from the file suffix or the object, unless ``source`` names it.
    ``dt`` is the time step for formats that need one (NIR files without snn-hub metadata);
    other options go to the format's importer.
    """
    fmt = detect(src, source)
    if dt is not None:
        options["dt"] = dt
    _check_options(options, (fmt, fmt.load_options))
    return _read(fmt, src, options)


def save(graph: Graph, to: str | None = None, out: str | os.PathLike | None = None, *,
         force: bool = False, report: bool = False, rewrites: str = FLOAT,
         **options: Any) -> Any:
    """Export ``graph`` to format ``to``: to the file ``out`` if given, else as an object.

    With a file, ``to`` may be left out and is taken from the suffix. The write is atomic and
    refuses to replace an existing file unless ``force``. Returns the path or the object, or
    with ``report=True`` a :class:`Converted` ``(result, report)``. The graph is first rewritten
    into what the format accepts (:func:`hub.legalise.legalise`; ``rewrites="exact"`` allows
    bit-identical rewrites only, ``"none"`` none).
    """
    if not isinstance(graph, Graph):
        raise HubError(f"save() takes a hub.Graph, got {type(graph).__name__}; "
                       "use hub.convert() for other models")
    if to is None and out is None:
        raise HubError("save() needs to=<format> or out=<file>")
    fmt = _target(to, out)
    _check_options(options, (fmt, fmt.save_options))
    return _finish(_write(fmt, graph, out, force, options, rewrites), report)


def _finish(written: tuple[Any, Report], report: bool) -> Any:
    return Converted(*written) if report else written[0]


def _target(to: str | None, out: str | os.PathLike | None) -> Format:
    """The format to write: ``to``, else the one ``out``'s suffix names; they must agree."""
    if out is not None and not _is_path(out):
        raise ParameterError(f"expected the file to write, a str or os.PathLike; got "
                             f"{type(out).__name__}. Leave out= out for an in-memory model",
                             field="out")
    if to is not None and not isinstance(to, str):
        raise ParameterError(f"expected a format name such as 'nir', got {type(to).__name__}",
                             field="to")
    if to is None:
        return detect(out)
    fmt = plugins().format(to)
    if out is not None:
        claimed = [f.name for f in _claiming(Path(out))]
        if claimed and fmt.name not in claimed:
            raise HubError(f"the file name says format {claimed[0]!r} but {fmt.name!r} was "
                           "asked for; name the file to match, or drop to=/--to", file=out)
    return fmt


def _write(fmt: Format, graph: Graph, out: Any, force: bool, options: dict[str, Any],
           rewrites: str = FLOAT) -> tuple[Any, Report]:
    graph.validate()
    try:
        graph, done = legalise(graph, fmt.accepts, target=fmt.name, rewrites=rewrites,
                               strict=bool(options.get("strict", True)))
    except HubError as e:
        raise e.at(file=out) if out is not None else e
    if out is None:
        _capable(fmt, "export", "export to an in-memory model; pass out=<file>")
        return fmt.export(graph, **options), done
    _capable(fmt, "write", "write files; call without out= for an in-memory model")
    with atomic_path(out, force=force) as tmp:
        try:
            fmt.write(graph, tmp, **options)
        except HubError as e:
            raise e.at(file=out)
        except Exception as e:  # the disk or a library failed: say where, keep the cause
            raise HubError(f"writing as {fmt.name!r} failed: {type(e).__name__}: {e}",
                           file=out) from e
    return Path(out), done


def convert(src: Any, to: str | None = None, *, out: str | os.PathLike | None = None,
            source: str | None = None, dt: float | None = None, force: bool = False,
            report: bool = False, rewrites: str = FLOAT, **options: Any) -> Any:
    """Convert ``src`` (a path or model, any format) to format ``to``.

    Writes ``out`` if given (atomically; ``force`` to overwrite) and returns its path, else
    returns the converted object. ``dt`` and other options go to whichever side accepts them:
    ``hub.convert("net.nir", to="lava", out="net.net", dt=1e-3)``.

    Where the target cannot spell a node as it is, the graph is rewritten into an equivalent
    one it can (:mod:`hub.legalise`): ``report=True`` returns ``(result, report)``, the report
    listing each rewrite as exact or float-equivalent; ``rewrites="exact"`` allows only
    bit-identical rewrites, ``"none"`` none.
    """
    src_fmt = detect(src, source)
    if to is None and out is None:
        raise HubError("convert() needs to=<format> or out=<file>")
    dst_fmt = _target(to, out)
    if dt is not None:
        options["dt"] = dt
    _check_options(options, (src_fmt, src_fmt.load_options), (dst_fmt, dst_fmt.save_options))
    graph = _read(src_fmt, src, {k: v for k, v in options.items() if k in src_fmt.load_options})
    save_opts = {k: v for k, v in options.items() if k in dst_fmt.save_options}
    return _finish(_write(dst_fmt, graph, out, force, save_opts, rewrites), report)


def check(model: Any, targets: list[str] | None = None, x: Any = None, **options: Any) -> Any:
    """Convert ``model`` to each of ``targets``, run each in its own runtime, compare the spikes.

    ``hub.check(graph, targets=["nir"]).ok`` is True when every conversion reproduces the
    reference simulation (bit for bit with ``tier="exact"``, up to threshold ties with the
    default ``"float"``). The conformance suite's :func:`hub_conformance.check` does the work;
    see it for the options.
    """
    from hub_conformance import check as run_check

    from .layout import as_input

    if x is not None:
        x = as_input(x).numpy()  # a HubError here, not numpy's ValueError deep in the suite
    return run_check(model, targets, x, **options)


def formats() -> dict[str, Format]:
    """Every registered format by name, usable or not."""
    return dict(plugins().formats)
