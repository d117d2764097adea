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
    if path.exists() and not force:
        raise FileExistsHubError("the file exists; pass force=True (or --force) to overwrite it",
                                 file=path)
    if path.is_dir():
        raise HubError("is a directory, which is never overwritten; name a file", file=path)
    if not path.parent.is_dir():
        raise HubError(f"directory {path.parent} does not exist", file=path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise HubError(f"cannot create a file in {path.parent}: {e.strerror or e}",
                       file=path) from None
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
