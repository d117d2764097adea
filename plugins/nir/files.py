"""Reading a ``.nir`` file as untrusted input: with h5py through the ``nir`` package, every
node checked before it is built."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import hub
import hub.hdf5
from hub.errors import FormatError, HubError


def read_nir(path: Path) -> Any:
    """The ``nir.NIRGraph`` in a file; a damaged, malformed or hostile file is a
    :class:`FormatError`. The file is checked by :func:`hub.hdf5.open_file` (nothing outside it,
    within the limits) before a byte of data is read."""
    import h5py
    import nir

    # What nir.read(path) does, in two steps: a damaged HDF5 structure is told apart from
    # NIR content that nir rejects, and the latter is traced to its node without reading
    # the file again (a corrupt file can make every h5py read slow).
    with hub.hdf5.open_file(path, nodes="nodes") as f:
        if not isinstance(f.get("node"), h5py.Group):
            raise FormatError("not a NIR file: no group 'node' (the graph)", file=path)
        try:
            tree = hub.hdf5.read_tree(f["node"])
        except HubError as e:
            raise e.at(file=path)
        except Exception as e:  # noqa: BLE001 (whatever h5py raises on a damaged file)
            raise FormatError(f"damaged HDF5 file (truncated or corrupted; export it again); "
                              f"h5py reports: {_describe(e)}", file=path) from None
        version = f["version"][()] if isinstance(f.get("version"), h5py.Dataset) else None
    try:
        # nir's type check rejects files that older nir versions wrote (an Output of shape
        # [1, 1, 1] fed by a [1]), and nir turns it off only at the top level, so a deep file
        # would be checked once per level; the hub's own shape check is exact and names nodes.
        return _build(tree, top=False)
    except Exception as e:  # noqa: BLE001 (whatever nir raises on content it rejects)
        node, field, reason = _diagnose(tree, "")
        raise FormatError(f"malformed NIR file (written by nir {_version(version)}); nir "
                          f"{nir.version} reports: {reason or _describe(e)}",
                          node=node, field=field) from None


def _unchecked(node: dict[str, Any]) -> dict[str, Any]:
    """A copy of a NIR node's dicts as read from a file (not its arrays: nir's from_dict edits
    the dicts it is given) with nir's type check off in every graph, nested ones too: nir turns
    it off only at the top level, and checks a deep file's types once per level."""
    top = dict(node)
    stack = [top]
    while stack:
        data = stack.pop()
        if data.get("type") != "NIRGraph" or not isinstance(data.get("nodes"), dict):
            continue
        data["type_check"] = False
        data["nodes"] = {k: dict(v) if isinstance(v, dict) else v
                         for k, v in data["nodes"].items()}
        stack.extend(v for v in data["nodes"].values() if isinstance(v, dict))
    return top


def _build(data: dict[str, Any], *, top: bool = True) -> Any:
    """The NIR node of a file's dicts, built without nir's per-level type check; each nested
    graph's edges are still checked (and the top graph's if ``top``: the hub checks them too)."""
    import nir

    node = nir.dict2NIRNode(_unchecked(data))
    stack = [(node, top)]
    while stack:
        graph, check = stack.pop()
        if not isinstance(graph, nir.NIRGraph):
            continue
        if check:
            graph.validate_structure()
        stack.extend((n, True) for n in graph.nodes.values())
    return node


def _version(value: Any) -> str:
    """The nir version a file says wrote it, for error messages."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value) if isinstance(value, str) else "an unknown version"


# -- import ---------------------------------------------------------------------------------


def _describe(e: Exception) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _diagnose(tree: Any, prefix: str) -> tuple[str | None, str | None, str]:
    """The node of a NIR file's contents (as read from hdf5) that nir cannot build, the field
    if nir's error shows it, and why: nir builds the whole graph at once and its errors name no
    node. ``(None, None, "")`` where no single node is to blame."""
    import nir

    nodes = tree.get("nodes") if isinstance(tree, dict) else None
    if not isinstance(nodes, dict):
        return None, None, ""
    for name, data in nodes.items():
        kind = data.get("type") if isinstance(data, dict) else None
        if kind == "NIRGraph":
            found = _diagnose(data, f"{prefix}{name}.")
            if found[0] is not None:
                return found
        try:
            nir.str2NIRNode(kind)
        except Exception:  # noqa: BLE001 (nir's way of saying the type is unknown)
            return f"{prefix}{name}", "type", (f"unknown NIR node type {kind!r}"
                                               if kind is not None else "the node has no 'type'")
        try:
            _build(data)
        except Exception as e:  # noqa: BLE001 (the first node nir cannot build)
            return f"{prefix}{name}", _field_of(e, data), _describe(e)
    return None, None, ""


def _field_of(e: Exception, data: dict[str, Any]) -> str | None:
    """The NIR field an exception from nir's constructors is about, where it says so."""
    if isinstance(e, KeyError) and e.args and isinstance(e.args[0], str):
        return e.args[0]
    quoted = re.findall(r"'([A-Za-z_][A-Za-z0-9_]*)'", str(e))
    return next((q for q in quoted if q in data or isinstance(e, TypeError)), None)
