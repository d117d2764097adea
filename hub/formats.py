"""The base class of formats: what a plugin implements to read, write and run a model format."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from .legalise import Accepts

#: The methods a format may implement (see ``hub.hookspecs.hub_register_formats``):
#: ``read(path, **options) -> Graph``, ``load(obj, **options) -> Graph``,
#: ``write(graph, path, **options)``, ``export(graph, **options) -> obj``, ``run(native, x) -> y``.
CAPABILITIES = ("read", "load", "write", "export", "run")


class Format:
    """A model format: a name, what it recognises, and import/export/run (all optional).

    Subclass it, set the class attributes, and define those of the methods in
    :data:`CAPABILITIES` that you support; the core tells users which ones are missing.
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
        """Which of read, load, write, export, run this format implements."""
        return tuple(m for m in CAPABILITIES if callable(getattr(self, m, None)))

    def __repr__(self) -> str:
        return f"<Format {self.name!r}>"
