"""Atomic, non-clobbering writes: a file appears whole or not at all."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import FileExistsHubError, HubError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    Refuses to replace an existing file unless ``force``. On any error, and on any exception
    that reaches the ``with`` (a ``KeyboardInterrupt``, or a signal the program turns into an
    exception, as the ``hub`` command does with SIGTERM), the temporary file is removed and
    ``path`` is left as it was. A library installs no signal handlers, so a process killed
    outright (SIGKILL, or SIGTERM in a program that keeps its default) leaves its temporary
    file behind: it is named ``.<name>.<host>-<pid>.<random>.tmp``, and the next write to the
    same ``path`` removes those of this host whose process is gone.
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
    # (the name shortened, so that a file name near the system's limit still gets one)
    stem = f".{path.name[:64]}.{_HOST}-"
    _remove_stale(path.parent, stem)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{stem}{os.getpid()}.", suffix=".tmp", dir=path.parent)
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


#: Temporary names carry the host, so that on a shared file system a write never removes a
#: file that another machine's process is still writing.
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _remove_stale(folder: Path, stem: str) -> None:
    """Remove temporary files ``<stem><pid>.<random>.tmp`` whose process no longer runs."""
    pattern = re.compile(re.escape(stem) + r"(\d+)\.[^./]+\.tmp")
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return  # creating the temporary file will say what is wrong
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match and not _alive(int(match.group(1))):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # another user's process, or a number we cannot ask about: keep its file
    return True
