"""The plugin contract: the one page a plugin author needs.

A plugin is a module (or object) with functions marked ``@hub.hookimpl`` and named like the hook
specifications below. snn-hub finds plugins through the ``snn_hub`` entry-point group, the same
way for its built-in plugins as for third-party packages::

    # pyproject.toml of your package
    [project.entry-points.snn_hub]
    myformat = "my_package.hub_plugin"

    # my_package/hub_plugin.py
    import hub

    class MyFormat(hub.Format):
        name = "myformat"
        suffixes = (".myf",)
        requires = ("my_framework",)      # imported lazily; missing means "unavailable"

        def read(self, path, **options): ...          # file -> hub.Graph
        def write(self, graph, path, **options): ...  # hub.Graph -> file

    @hub.hookimpl
    def hub_register_formats(register):
        register(MyFormat())

Each entry point is loaded on its own: one that fails to import becomes a warning that names it,
and the rest keep working. ``HUB_PLUGINS=a,b`` loads only the named plugins, and
``HUB_DISABLE_PLUGINS=a,b`` skips the named ones (names are entry-point names). ``hub plugins``
lists what loaded, its version, its formats, and why anything is unavailable.

Hooks receive a ``register`` callback rather than returning values, so a plugin can register
any number of things and the core can check each one as it arrives (a wrong type is a
``TypeError`` naming the plugin).
"""

from __future__ import annotations

from typing import Callable

import pluggy

hookspec = pluggy.HookspecMarker("hub")
hookimpl = pluggy.HookimplMarker("hub")


@hookspec
def hub_register_formats(register: Callable[..., None]) -> None:
    """Register the formats this plugin provides.

    Call ``register(fmt)`` once per format, with an instance of a :class:`hub.Format` subclass.
    A format has a unique ``name`` (``"nir"``), optional ``aliases``, the file ``suffixes`` and
    object types it recognises, and overrides any of the methods :class:`hub.Format` declares
    with their signatures and documents (one not overridden raises a ``PluginError`` saying what
    the format can do):

    - ``read(path, **options) -> Graph`` and ``load(obj, **options) -> Graph``: import a file or
      an in-memory model into the canonical graph;
    - ``write(graph, path, **options)`` and ``export(graph, **options) -> obj``: export;
    - ``run(native, x) -> y``: run a native model of the format (an object ``export`` returned,
      or a file ``write`` wrote) on a time-major input ``[T, N, *]`` in the format's own runtime,
      for the conformance suite.

    A format that exports declares what it accepts in ``accepts``, a
    :class:`hub.legalise.Accepts` (node types, a rule per field, topology): before ``write`` or
    ``export`` the core rewrites the graph into it by proven rewrites and refuses what none
    reaches, naming node and field; the exporter may call ``accepts.check(node)`` itself.
    ``hub plugins --accepts NAME`` prints the declaration.

    ``options`` are the keyword options a user passed to ``hub.load``/``hub.convert`` (``dt``,
    ``strict``, ...); a format lists the ones it accepts in ``load_options``/``save_options``, and
    the core rejects any other with a message naming both. Names must not clash with another
    plugin's formats or aliases: the second registration is refused with a warning.
    """


@hookspec
def hub_register_nodes(register: Callable[..., None]) -> None:
    """Register extra node types for the canonical graph.

    Call ``register(cls)`` with a subclass of :class:`hub.Node`. Subclassing ``hub.Node``
    already adds a class to the registry when its module is imported; this hook makes sure the
    module is imported when the plugin loads, and lets ``hub plugins`` show which plugin
    contributed which node type. A name that is already registered by another class is refused.
    """
