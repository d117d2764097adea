"""The base class of formats: what a plugin implements to read, write and run a model format."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from .errors import PluginError

if TYPE_CHECKING:
    from .graph import Graph
    from .legalise import Accepts

#: The methods a format may implement, each declared below with its signature: a subclass
#: overrides those it supports, and :attr:`Format.capabilities` lists them.
CAPABILITIES = ("read", "load", "write", "export", "run")


class Format:
    """A model format: a name, what it recognises, and import/export/run (all optional).

    Subclass it, set the class attributes, and override those of the methods in
    :data:`CAPABILITIES` that you support (``read``, ``load``, ``write``, ``export``, ``run``);
    one left alone raises a :class:`~hub.errors.PluginError` saying what the format can do, and
    the core tells users which ones are missing before it calls any. ``**options`` stand for the
    keyword options the format lists in ``load_options`` / ``save_options``: spell them out as
    keyword parameters in the override (``def read(self, path, dt=None)``); the core passes only
    those a user gave and refuses any other.
    """

    #: Unique name users pass as ``to=`` / ``source=``.
    name: ClassVar[str] = ""
    #: Other names that mean this format.
    aliases: ClassVar[tuple[str, ...]] = ()
    #: One line for ``hub plugins``.
    description: ClassVar[str] = ""
    #: File suffixes this format reads and writes, with the dot (``".nir"``).
    suffixes: ClassVar[tuple[str, ...]] = ()
    #: Importable modules the format needs; if one is missing the format is listed unavailable.
    requires: ClassVar[tuple[str, ...]] = ()
    #: pip requirement that provides them, for the message when they are missing.
    install_hint: ClassVar[str] = ""
    #: Keyword options accepted by ``read``/``load`` and by ``write``/``export``.
    load_options: ClassVar[tuple[str, ...]] = ()
    save_options: ClassVar[tuple[str, ...]] = ()
    #: Node type names this format imports and exports (for the support table).
    imports: ClassVar[frozenset[str]] = frozenset()
    exports: ClassVar[frozenset[str]] = frozenset()
    #: Known conformance gaps: fnmatch pattern over conformance ids (``"exact/dense-lif-ge"``,
    #: ``"exact/dense-lif-ge:hub->myformat"``) -> the reason. The conformance suite reports a
    #: matching failure as an expected failure with that reason, and a matching pass as stale.
    known_gaps: ClassVar[dict[str, str]] = {}
    #: What ``export``/``write`` accept (:class:`hub.legalise.Accepts`): node types, a rule per
    #: field, topology. Before export the core rewrites a graph into it by proven rewrites
    #: (:func:`hub.legalise.legalise`); ``None`` declares nothing and leaves the graph as it is.
    accepts: ClassVar[Accepts | None] = None

    # -- the methods a format implements (each optional) -------------------------------------

    def read(self, path: Path, **options: Any) -> Graph:
        """Import the file at ``path`` (one this format recognises) into a canonical graph.

        Raise a :class:`~hub.errors.FormatError` for a malformed file and an
        :class:`~hub.errors.UnsupportedError` for what the graph cannot hold, naming node and
        field; the core adds the file.
        """
        raise self._missing("read", "read files")

    def load(self, obj: Any, **options: Any) -> Graph:
        """Import an in-memory model ``obj`` (one :meth:`recognizes` accepts) into a graph.

        A live model is read from what its forward computes and proved against its own run
        (see DESIGN.md, "Import"); the model is never mutated.
        """
        raise self._missing("load", "load in-memory models")

    def write(self, graph: Graph, path: Path, **options: Any) -> None:
        """Write ``graph``, already legalised into :attr:`accepts`, to a file at ``path``.

        The core writes atomically: ``path`` is a temporary name that the core renames once
        this returns, so just write to it.
        """
        raise self._missing("write", "write files")

    def export(self, graph: Graph, **options: Any) -> Any:
        """The native in-memory model of ``graph``, already legalised into :attr:`accepts`."""
        raise self._missing("export", "export models")

    def run(self, native: Any, x: Any, **options: Any) -> Any:
        """Run a native model of this format on a time-major input ``x`` ``[T, N, *]``.

        ``native`` is an object :meth:`export` returned or a path :meth:`write` wrote; the run is
        the format's own runtime, as its users would run it, for the conformance suite. Returns
        the output, time-major ``[T, N, *]`` (a torch tensor or a numpy array). Options a
        runner takes have defaults: the conformance suite passes none.
        """
        raise self._missing("run", "run models")

    # -- what the core asks every format ------------------------------------------------------

    def unavailable(self) -> str | None:
        """Why the format cannot be used here, or ``None`` if it can."""
        missing = [m for m in self.requires if importlib.util.find_spec(m) is None]
        if missing:
            hint = f"; install it with `pip install {self.install_hint or missing[0]}`"
            return f"needs {', '.join(missing)}, which is not installed{hint}"
        return None

    def recognizes(self, obj: Any) -> bool:
        """Whether ``obj`` (an in-memory model, not a path) is of this format."""
        return False

    def recognizes_file(self, path: Path) -> bool:
        """Whether ``path`` is a file of this format; by default, by suffix."""
        return any(str(path).lower().endswith(s) for s in self.suffixes)

    @property
    def capabilities(self) -> tuple[str, ...]:
        """Which of read, load, write, export, run this format implements (overrides)."""
        return tuple(m for m in CAPABILITIES
                     if getattr(type(self), m, None) is not getattr(Format, m)
                     and callable(getattr(self, m, None)))

    def _missing(self, method: str, what: str) -> PluginError:
        can = ", ".join(self.capabilities) or "nothing"
        return PluginError(f"format {self.name!r} cannot {what}: it does not implement "
                           f"{method}(); it can: {can}")

    def __repr__(self) -> str:
        return f"<Format {self.name!r}>"
