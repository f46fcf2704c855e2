"""Private files: whatever the node writes is readable by its own user only.

Spooled instances and results carry patient data; the database, the pid file and temporary files
describe them.  So files are created 0600 and folders 0700 whatever the umask of the caller:
``cardionode serve``/``process``/``status`` set the process umask to 0077 at start
(:func:`use_private_umask`), and the places that create files pass these modes explicitly too, so
the rule also holds when the node runs inside another program (tests, an embedding service).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

__all__ = ["FILE_MODE", "DIR_MODE", "PRIVATE_UMASK", "use_private_umask", "private_dir", "open_private",
           "touch_private"]

FILE_MODE = 0o600
DIR_MODE = 0o700
PRIVATE_UMASK = 0o077


def use_private_umask() -> int:
    """Set the process umask to 0077 (group and others get nothing); returns the previous one."""
    return os.umask(PRIVATE_UMASK)


def private_dir(path: str | Path) -> Path:
    """Create ``path`` and its missing parents with mode 0700 (existing folders are left alone)."""
    path = Path(path)
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:
            pass
    return path


def open_private(path: str | Path, exclusive: bool = False) -> BinaryIO:
    """Open ``path`` for binary writing (created 0600, truncated; ``exclusive``: must not exist)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC) | getattr(os, "O_CLOEXEC", 0)
    return os.fdopen(os.open(path, flags, FILE_MODE), "wb")


def touch_private(path: str | Path) -> Path:
    """Create ``path`` empty with mode 0600 unless it exists (e.g. before SQLite opens it: its
    ``-wal`` and ``-shm`` files take the database file's mode).

    An existing file is not opened at all: closing any descriptor of an SQLite database drops every
    POSIX lock this process holds on it, and another process could then delete the WAL under the
    connections still open here (they would stop seeing its commits)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), FILE_MODE))
    except FileExistsError:
        pass
    return Path(path)
