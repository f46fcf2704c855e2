"""fsync by path, alone or shared between threads (group commit): what the durability rules of the spool
and of job results are built on."""
from __future__ import annotations

import os
import threading
from pathlib import Path

__all__ = ["fsync_path", "fsync_dir", "GroupSync"]


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


class GroupSync:
    """Group commit of fsyncs: threads that need files or directories on stable storage share the waits.

    :meth:`sync` returns once ``path`` was fsynced by a flush that started after the call.  While
    one flush runs, new requests gather in the next batch; when it ends, one of the waiting threads
    flushes that whole batch (each distinct path once: concurrent associations storing into one
    series directory share its directory fsync) and wakes the others.  With one caller at a time
    this is a plain fsync.  If any fsync of a batch fails, every caller of that batch gets the
    error: none of them may report its instance as stored.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._open = _Batch()
        self._flushing = False
        self.flushes = 0  # batches flushed (tests and benchmarks compare it with the requests)
        self.requests = 0

    def sync(self, path: Path, directory: bool = False) -> None:
        """Flush ``path`` (a file, or with ``directory`` its entries) to stable storage, shared."""
        with self._cond:
            batch = self._open
            batch.paths[(str(path), directory)] = None
            self.requests += 1
            while not batch.done:
                if self._flushing:
                    self._cond.wait()
                    continue
                self._flushing = True  # this thread flushes the open batch, which is ours
                self._open = _Batch()
                self._cond.release()
                error: BaseException | None = None
                try:
                    for p, is_dir in batch.paths:
                        fsync_path(Path(p), directory=is_dir)
                except BaseException as exc:  # the whole batch fails
                    error = exc
                finally:
                    self._cond.acquire()
                batch.error, batch.done = error, True
                self._flushing = False
                self.flushes += 1
                self._cond.notify_all()
            if batch.error is not None:
                raise batch.error


class _Batch:
    __slots__ = ("paths", "done", "error")

    def __init__(self) -> None:
        self.paths: dict[tuple[str, bool], None] = {}  # insertion-ordered set
        self.done = False
        self.error: BaseException | None = None
