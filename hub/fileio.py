"""Atomic, non-clobbering writes: a file appears whole or not at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import FileExistsHubError, HubError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    Refuses to replace an existing file unless ``force``. On any error the temporary file is
    removed and ``path`` is left as it was.
    """
    path = Path(path)
    try:
        exists, is_dir, parent_is_dir = path.exists(), path.is_dir(), path.parent.is_dir()
    except OSError as e:  # a name too long for the file system, say
        raise HubError(f"cannot write to this path: {e.strerror or e}", file=path) from None
    if exists and not force:
        raise FileExistsHubError("the file exists; pass force=True (or --force) to overwrite it",
                                 file=path)
    if is_dir:
        raise HubError("is a directory, which is never overwritten; name a file", file=path)
    if not parent_is_dir:
        raise HubError(f"directory {path.parent} does not exist", file=path)
    try:
        # (the name shortened, so that a file name near the system's limit still gets one)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:64]}.", suffix=".tmp", dir=path.parent)
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the name
        raise HubError(f"cannot create a file in {path.parent}: "
                       f"{getattr(e, 'strerror', None) or e}", file=path) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        try:
            os.replace(tmp_path, path)
        except OSError as e:
            raise HubError(f"cannot move the finished file into place: {e.strerror or e}",
                           file=path) from None
    finally:
        tmp_path.unlink(missing_ok=True)
