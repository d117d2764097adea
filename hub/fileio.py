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
        raise FileExistsHubError(f"{path} exists; pass force=True (or --force) to overwrite it",
                                 file=path)
    if not path.parent.is_dir():
        raise HubError(f"directory {path.parent} does not exist", file=path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
