"""Reading HDF5 files from strangers: check every link and object before reading a byte.

h5py follows whatever a file asks it to: external raw storage (a dataset whose bytes live in
another file on the machine), external and soft links, virtual datasets assembled from other
files, and datasets that declare far more data than the file holds. :func:`open_file` walks
the whole file without following anything, refuses all of those, enforces
:func:`hub.limits.limits` (nodes, nesting, declared bytes), and only then hands the file to the
format's reader. Every refusal is a :class:`~hub.errors.FormatError` naming the file, the HDF5
path of the group (``node``) and the dataset's key (``field``).
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Any, Iterator

import h5py

from .errors import FormatError, HubError
from .limits import how_to_raise, limits

#: HDF5 objects a file may hold per graph node allowed (a NIR node is a group of ~10 datasets
#: plus its metadata group): bounds the walk of groups that hold no nodes.
OBJECTS_PER_NODE = 64
#: Groups a format may nest per level of subgraph nesting allowed (NIR spends 2, ``nodes/x``,
#: plus a node's metadata groups).
GROUPS_PER_LEVEL = 4
#: Deflate, the strongest filter libhdf5 ships, compresses at most about 1032:1: a compressed
#: dataset declaring more than this many times what it stores has chunks never written.
MAX_RATIO = 1100
#: Declared sizes up to this are never compared with the storage (headers dominate them).
SMALL = 1 << 16


def open_file(path: str | os.PathLike, *,
              nodes: str) -> contextlib.AbstractContextManager[h5py.File]:
    """Open ``path`` read-only after :func:`check` accepted it; ``nodes`` is the name of the
    groups whose members are graph nodes (NIR's ``nodes``, netx's ``layer``)."""
    return _open(path, nodes)


@contextlib.contextmanager
def _open(path: str | os.PathLike, nodes: str) -> Iterator[h5py.File]:
    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as e:
        raise FormatError(f"not an HDF5 file (truncated, or another format): {_describe(e)}",
                          file=path) from None
    with f:
        try:
            check(f, nodes=nodes)
        except HubError as e:
            raise e.at(file=path)
        except Exception as e:  # libhdf5 on a damaged header: never a traceback
            raise FormatError(f"damaged HDF5 file (truncated or corrupted); h5py reports: "
                              f"{_describe(e)}", file=path) from None
        yield f


def check(f: h5py.File, *, nodes: str) -> None:
    """Refuse links and storage that reach outside the file, and sizes beyond the limits.

    Walks every group without following a link (hard links only; each object once), counts
    members of groups named ``nodes`` as graph nodes and their nesting as subgraph depth, and
    sums the bytes every dataset and attribute declares, all before any data is read.
    """
    lim = limits()
    max_objects = OBJECTS_PER_NODE * lim.max_nodes
    max_groups = GROUPS_PER_LEVEL * (lim.max_depth + 2)
    root = h5py.h5o.get_info(f.id)
    seen = {(root.fileno, root.addr)}
    stack: list[tuple[h5py.Group, int, int]] = [(f, 0, -1)]  # group, group depth, nesting
    objects = graph_nodes = 0
    total, largest = _attribute_bytes(f), ("", 0)
    while stack:
        group, depth, nesting = stack.pop()
        where = _path(group)
        size = len(group)
        objects += size
        if objects > max_objects:
            raise FormatError(f"holds more than {max_objects} HDF5 objects ({OBJECTS_PER_NODE} "
                              f"per node of max_nodes={lim.max_nodes}); "
                              f"{how_to_raise('max_nodes')}", node=where)
        is_nodes = group.name.rsplit("/", 1)[-1] == nodes
        if is_nodes:
            graph_nodes += size
            nesting += 1
            if graph_nodes > lim.max_nodes:
                raise FormatError(f"holds more than max_nodes={lim.max_nodes} nodes; "
                                  f"{how_to_raise('max_nodes')}", node=where)
            if nesting > lim.max_depth:
                raise FormatError(f"subgraphs nested more than max_depth={lim.max_depth} deep; "
                                  f"{how_to_raise('max_depth')}", node=where)
        if depth + 1 > max_groups:
            raise FormatError(f"groups nested more than {max_groups} deep ({GROUPS_PER_LEVEL} "
                              f"per level of max_depth={lim.max_depth}); "
                              f"{how_to_raise('max_depth')}", node=where)
        for name in group:
            link = group.get(name, getlink=True)
            if not isinstance(link, h5py.HardLink):
                kind = type(link).__name__
                target = (f" to {link.filename!r}:{link.path!r}"
                          if isinstance(link, h5py.ExternalLink)
                          else f" to {link.path!r}" if isinstance(link, h5py.SoftLink) else "")
                raise FormatError(f"{kind}{target}: links are refused (a model file must hold "
                                  "its data itself)", node=where, field=name)
            item = group[name]
            info = h5py.h5o.get_info(item.id)
            if (info.fileno, info.addr) in seen:
                raise FormatError("an object linked from two places (a model file is a tree)",
                                  node=where, field=name)
            seen.add((info.fileno, info.addr))
            total += _attribute_bytes(item)
            if isinstance(item, h5py.Group):
                stack.append((item, depth + 1, nesting))
            elif isinstance(item, h5py.Dataset):
                declared = _dataset_bytes(item, where, name)
                total += declared
                if declared > largest[1]:
                    largest = (item.name, declared)
    if total > lim.max_bytes:
        raise FormatError(f"declares {total} bytes of data (largest: {largest[0]!r}, "
                          f"{largest[1]} bytes), more than max_bytes={lim.max_bytes}; "
                          f"{how_to_raise('max_bytes')}")


def _dataset_bytes(ds: h5py.Dataset, where: str, name: str) -> int:
    """The bytes a dataset declares, refusing storage outside the file and truncated data."""
    if ds.is_virtual:
        sources = ", ".join(sorted({repr(s.file_name) for s in ds.virtual_sources()}))
        raise FormatError(f"a virtual dataset (data from {sources}) is refused: a model file "
                          "must hold its data itself", node=where, field=name)
    if ds.external:
        files = ", ".join(sorted({repr(os.fsdecode(e[0])) for e in ds.external}))
        raise FormatError(f"external storage (in {files}) is refused: a model file must hold "
                          "its data itself", node=where, field=name)
    declared = math.prod(ds.shape or ()) * ds.dtype.itemsize if ds.shape is not None else 0
    plist = ds.id.get_create_plist()
    layout = plist.get_layout()
    if layout in (h5py.h5d.CONTIGUOUS, h5py.h5d.CHUNKED) and declared:
        # unwritten data reads as the fill value: a model file stores what it declares
        stored = ds.id.get_storage_size()
        compressed = layout == h5py.h5d.CHUNKED and plist.get_nfilters() > 0
        if (declared > max(MAX_RATIO * stored, SMALL)) if compressed else stored < declared:
            raise FormatError(f"declares {declared} bytes ({list(ds.shape)} x {ds.dtype}) but "
                              f"stores {stored}{' compressed' if compressed else ''}: truncated, "
                              "or a size bomb", node=where, field=name)
    return declared


def _attribute_bytes(obj: h5py.HLObject) -> int:
    total = 0
    for name in obj.attrs:
        attr = h5py.h5a.open(obj.id, name.encode())
        total += math.prod(attr.shape or ()) * attr.dtype.itemsize
    return total


def read_tree(group: h5py.Group) -> dict[str, Any]:
    """A checked group's datasets as nested dicts (``bytes`` decoded as UTF-8), like
    ``nir.serialization.hdf2dict`` but iterative and naming the dataset that fails to read."""
    out: dict[str, Any] = {}
    stack = [(group, out)]
    while stack:
        source, target = stack.pop()
        for key, item in source.items():
            if isinstance(item, h5py.Group):
                target[key] = {}
                stack.append((item, target[key]))
            elif isinstance(item, h5py.Dataset):
                target[key] = read(item)
    return out


def read(ds: h5py.Dataset) -> Any:
    """A checked dataset's value (``bytes`` decoded as UTF-8), or a FormatError naming it."""
    where, _, name = ds.name.rpartition("/")
    try:
        value = ds[()]
        return value.decode("utf-8") if isinstance(value, bytes) else value
    except (OSError, TypeError, ValueError, UnicodeDecodeError) as e:
        raise FormatError(f"cannot read this dataset: {_describe(e)}",
                          node=where.lstrip("/") or "/", field=name) from None


def _path(group: h5py.Group) -> str:
    return group.name.lstrip("/") or "/"


def _describe(e: Exception) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
