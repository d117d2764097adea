"""Finding, loading and listing plugins, and the registry of formats they provide.

Built-in plugins and third-party ones arrive the same way: entry points in the ``snn_hub``
group. pluggy's own entry-point loader stops at the first broken plugin, so each entry point is
loaded here in its own ``try``: a failure becomes a :class:`PluginWarning` naming the plugin and is
kept for ``hub plugins`` to show.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import warnings
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError
from .formats import Format
from .node import Node, register_node

ENTRY_POINT_GROUP = "snn_hub"
#: Comma-separated entry-point names: load only these.
ALLOW_ENV = "HUB_PLUGINS"
#: Comma-separated entry-point names: never load these.
BLOCK_ENV = "HUB_DISABLE_PLUGINS"


class PluginWarning(UserWarning):
    """A plugin could not be loaded, or registered something the core refused."""


@dataclasses.dataclass
class PluginInfo:
    """What ``hub plugins`` shows about one plugin."""

    name: str
    module: str
    version: str
    status: str  # "loaded", "failed", "disabled"
    reason: str = ""
    formats: list[str] = dataclasses.field(default_factory=list)
    nodes: list[str] = dataclasses.field(default_factory=list)


class Plugins:
    """The loaded plugins: a pluggy manager plus the formats and node types they registered."""

    def __init__(self, *, entry_points: bool = True) -> None:
        self.pm = pluggy.PluginManager("hub")
        self.pm.add_hookspecs(hookspecs)
        self.formats: dict[str, Format] = {}
        self.aliases: dict[str, str] = {}
        self.info: dict[str, PluginInfo] = {}
        if entry_points:
            self._load_entry_points()

    # -- loading --------------------------------------------------------------------------

    def _load_entry_points(self) -> None:
        allow = _names(os.environ.get(ALLOW_ENV))
        block = _names(os.environ.get(BLOCK_ENV)) or set()
        eps = sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP),
                     key=lambda ep: ep.name)
        for ep in eps:
            version = _version(ep)
            if (allow is not None and ep.name not in allow) or ep.name in block:
                by = ALLOW_ENV if ep.name not in block else BLOCK_ENV
                self.info[ep.name] = PluginInfo(ep.name, ep.value, version, "disabled",
                                                f"disabled by {by}")
                continue
            try:
                plugin = ep.load()
            except Exception as e:  # a broken plugin must not break the host
                reason = f"{type(e).__name__}: {e}"
                self.info[ep.name] = PluginInfo(ep.name, ep.value, version, "failed", reason)
                warnings.warn(f"snn-hub plugin {ep.name!r} ({ep.value}) failed to load: {reason}",
                              PluginWarning, stacklevel=2)
                continue
            self.register(plugin, name=ep.name, version=version, module=ep.value)

    def register(self, plugin: Any, *, name: str | None = None, version: str = "",
                 module: str = "") -> None:
        """Register a plugin object or module (entry points do this; so can tests and scripts)."""
        name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        info = PluginInfo(name, module or getattr(plugin, "__name__", ""), version, "loaded")
        self.info[name] = info
        try:
            self.pm.register(plugin, name=name)
            for impl in self.pm.hook.hub_register_nodes.get_hookimpls():
                if impl.plugin_name == name:
                    impl.function(register=lambda cls: self._add_node(info, cls))
            for impl in self.pm.hook.hub_register_formats.get_hookimpls():
                if impl.plugin_name == name:
                    impl.function(register=lambda fmt: self._add_format(info, fmt))
        except Exception as e:
            info.status, info.reason = "failed", f"{type(e).__name__}: {e}"
            self._forget(info)
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            warnings.warn(f"snn-hub plugin {name!r} failed to register: {info.reason}",
                          PluginWarning, stacklevel=2)

    def _add_node(self, info: PluginInfo, cls: Any) -> None:
        if not (isinstance(cls, type) and issubclass(cls, Node)):
            raise TypeError(f"register() takes a hub.Node subclass, got {cls!r}")
        register_node(cls)
        info.nodes.append(cls.__name__)

    def _add_format(self, info: PluginInfo, fmt: Any) -> None:
        if not isinstance(fmt, Format):
            raise TypeError(f"register() takes a hub.Format instance, got {fmt!r}")
        if not fmt.name:
            raise TypeError(f"{type(fmt).__name__} has no name")
        for key in (fmt.name, *fmt.aliases):
            owner = self.aliases.get(key)
            if owner is not None:
                warnings.warn(f"snn-hub plugin {info.name!r}: format name {key!r} is already "
                              f"taken by format {owner!r}; {fmt.name!r} not registered",
                              PluginWarning, stacklevel=2)
                return
        self.formats[fmt.name] = fmt
        for key in (fmt.name, *fmt.aliases):
            self.aliases[key] = fmt.name
        info.formats.append(fmt.name)

    def _forget(self, info: PluginInfo) -> None:
        for name in info.formats:
            fmt = self.formats.pop(name)
            for key in (fmt.name, *fmt.aliases):
                self.aliases.pop(key, None)
        info.formats.clear()

    # -- lookup ---------------------------------------------------------------------------

    def format(self, name: str, *, usable: bool = True) -> Format:
        """The format called ``name`` (or an alias); usable unless ``usable=False``."""
        key = self.aliases.get(name) or self.aliases.get(str(name).lower())
        if key is None:
            known = ", ".join(sorted(self.formats)) or "none"
            failed = [i.name for i in self.info.values() if i.status == "failed"]
            extra = f"; plugins that failed to load: {', '.join(failed)}" if failed else ""
            raise PluginError(f"no format {name!r}; known formats: {known}{extra}. "
                              "Run `hub plugins` to see what is installed")
        fmt = self.formats[key]
        if usable:
            reason = fmt.unavailable()
            if reason:
                raise PluginError(f"format {fmt.name!r} is unavailable: {reason}")
        return fmt


def _names(value: str | None) -> set[str] | None:
    if value is None:
        return None
    return {v.strip() for v in value.split(",") if v.strip()}


def _version(ep: importlib.metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.version if dist is not None else ""


_plugins: Plugins | None = None


def plugins() -> Plugins:
    """The process-wide plugins, loaded on first use."""
    global _plugins
    if _plugins is None:
        _plugins = Plugins()
    return _plugins


def reload() -> Plugins:
    """Forget loaded plugins and load them again (after installing one, or changing the env)."""
    global _plugins
    _plugins = None
    return plugins()
