"""fsync by path: what the durability rules of the spool and of job results are built on."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_path", "fsync_dir"]


def fsync_path(path: Path, directory: bool = False) -> None:
    """Flush ``path`` (a file, or with ``directory`` its entries) to stable storage."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make the entries of directory ``path`` (new, renamed or removed names) durable."""
    fsync_path(path, directory=True)
