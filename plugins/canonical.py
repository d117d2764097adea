"""The ``hub`` format: canonical graphs as in-memory objects and as ``.hub.json`` files.

A ``.hub.json`` file is ``Graph.to_dict()`` as JSON: plain data, every parameter exact (a small
array as numbers, which print and parse back to the same bits, a large one as its bytes in
base64), nothing executable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hub
from hub.errors import FormatError
from hub.legalise import Accepts
from hub.limits import how_to_raise, limits


class CanonicalFormat(hub.Format):
    name = "hub"
    aliases = ("canonical", "graph")
    description = "snn-hub's canonical graph (hub.Graph objects, .hub.json files)"
    suffixes = (".hub.json",)
    imports = exports = frozenset(hub.node_types())
    accepts = Accepts.anything("the hub's own files keep every node type and field")

    def recognizes(self, obj: Any) -> bool:
        return isinstance(obj, hub.Graph)

    def load(self, obj: hub.Graph) -> hub.Graph:
        return obj.copy()  # converting never shares what can change

    def export(self, graph: hub.Graph) -> hub.Graph:
        return graph.copy()

    def read(self, path: Path) -> hub.Graph:
        # refused before parsing: the parameters of a graph file take 4/3 of their bytes
        size, most = path.stat().st_size, limits().max_bytes
        if size > most:
            raise FormatError(f"{size} bytes is more than the limit of {most} for a graph file; "
                              + how_to_raise("max_bytes"))
        try:
            data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_unique)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise FormatError(f"not a snn-hub JSON graph: {e}") from None
        except RecursionError:
            raise FormatError("not a snn-hub JSON graph: nested too deeply") from None
        return hub.Graph.from_dict(data)

    def write(self, graph: hub.Graph, path: Path) -> None:
        with path.open("w", encoding="utf-8") as f:  # streamed: no second copy of the text
            json.dump(graph.to_dict(), f, indent=1)

    def run(self, native: hub.Graph | Path, x: Any) -> Any:
        """The canonical graph's own runtime is the reference simulator."""
        graph = native if isinstance(native, hub.Graph) else self.read(Path(native))
        return hub.simulate(graph, x)


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as a dict, refusing repeated keys (json would silently keep the last)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise FormatError(f"key {key!r} appears twice in one JSON object; which one is meant "
                              "is ambiguous, so remove the other")
        out[key] = value
    return out


@hub.hookimpl
def hub_register_formats(register) -> None:
    register(CanonicalFormat())
