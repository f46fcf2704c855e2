"""SQLite access shared by the node's state modules.

One database file under ``storage_dir`` holds the spool index, pending
studies, jobs and dispatch state.  Each state module owns its tables and
declares them as a list of ``CREATE ... IF NOT EXISTS`` statements passed to
:func:`ensure_schema`.  Connections use WAL (readers never block the writer)
and ``synchronous=FULL`` by default so that a committed row survives power loss,
which the "nothing acknowledged is lost" rule needs.  State that start-up
rebuilds from the spool files (spool index, pending studies: ``recover()`` then
``CompletionTracker.reconcile``) may use ``NORMAL``: in WAL mode a commit then
survives a process crash but not necessarily a power cut, and skips one fsync.
"""
from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Iterable, Iterator

from .files import private_dir, touch_private

__all__ = ["DB_FILENAME", "connect", "ensure_schema", "transaction"]

DB_FILENAME = "cardionode.sqlite3"


SYNCHRONOUS_MODES = ("FULL", "NORMAL")


def connect(storage_dir: str | Path, timeout: float = 30.0, synchronous: str = "FULL") -> sqlite3.Connection:
    """Open a connection to the node database (created if missing).

    Connections are not shared between threads; open one per thread.
    ``isolation_level=None`` puts transactions under explicit control
    (``BEGIN IMMEDIATE`` ... ``COMMIT``).
    """
    if synchronous not in SYNCHRONOUS_MODES:
        raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}, not {synchronous!r}")
    path = Path(storage_dir) / DB_FILENAME
    private_dir(path.parent)
    touch_private(path)  # 0600 before SQLite creates it; its -wal and -shm files take the same mode
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
    return conn


def ensure_schema(conn: sqlite3.Connection, statements: Iterable[str]) -> None:
    """Create the tables and indexes a module needs (idempotent)."""
    with conn:
        for sql in statements:
            conn.execute(sql)


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any exception): one atomic write.

    Connections from :func:`connect` are in autocommit mode (``isolation_level=None``), where
    ``with conn:`` opens no transaction: each statement inside it commits on its own, and another
    thread (or a crash) sees the first rows of a "block" without the rest.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
