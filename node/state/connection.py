"""Connections to the node database and the one way to write in a transaction.

One database file under ``storage_dir`` holds the spool index, pending
studies, jobs and dispatch state (:mod:`node.state`).  Connections use WAL
(readers never block the writer) and ``synchronous=FULL`` by default so that a
committed row survives power loss, which the "nothing acknowledged is lost"
rule needs.  State that start-up rebuilds from the spool files (spool index,
pending studies: ``recover()`` then ``CompletionTracker.reconcile``) may use
``NORMAL``: in WAL mode a commit then survives a process crash but not
necessarily a power cut, and skips one fsync.

Every connection is opened in autocommit mode (``isolation_level=None``), so a
statement outside :func:`transaction` commits on its own; writes that belong
together go inside one ``with transaction(conn):``.  (``with conn:`` is *not*
a transaction in autocommit mode: it only commits what is already open.)
"""
from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path
from typing import Iterator

from ..files import private_dir, touch_private
from .schema import SCHEMA_VERSION, SchemaTooNew, migrate, schema_version, too_new_message

__all__ = ["DB_FILENAME", "SYNCHRONOUS_MODES", "Connections", "check_version", "connect", "ping", "transaction"]

DB_FILENAME = "cardionode.sqlite3"

SYNCHRONOUS_MODES = ("FULL", "NORMAL")


def connect(storage_dir: str | Path, timeout: float = 30.0, synchronous: str = "FULL") -> sqlite3.Connection:
    """Open a connection to the node database, created if missing and migrated to the code's schema.

    Connections are not shared between threads; open one per thread
    (:class:`Connections`).  Raises :class:`~node.state.schema.SchemaTooNew`
    when the database was written by a newer CardioNode.
    """
    if synchronous not in SYNCHRONOUS_MODES:
        raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}, not {synchronous!r}")
    path = Path(storage_dir) / DB_FILENAME
    private_dir(path.parent)
    touch_private(path)  # 0600 before SQLite creates it; its -wal and -shm files take the same mode
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any exception): one atomic write.

    IMMEDIATE takes the write lock at the start, so a read-then-write inside
    sees no other writer in between (another thread or process waits up to
    the busy timeout).
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class Connections:
    """One connection per thread to the node database (sqlite3 connections are not thread-safe).

    ``get()`` is what the repositories take as their ``get_conn``.
    """

    def __init__(self, storage_dir: str | Path, synchronous: str = "FULL") -> None:
        self.storage_dir = Path(storage_dir)
        self.synchronous = synchronous
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def get(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.storage_dir, synchronous=self.synchronous)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def close_all(self) -> None:
        with self._lock:
            for conn in self._all:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._all.clear()
        self._local = threading.local()


def ping(conn: sqlite3.Connection) -> None:
    """Raise :class:`sqlite3.Error` when the database cannot answer (readiness check)."""
    conn.execute("SELECT 1").fetchone()


def check_version(storage_dir: str | Path) -> None:
    """Raise :class:`~node.state.schema.SchemaTooNew` when the database under ``storage_dir`` was
    written by a newer CardioNode; opens it read-only and changes nothing (start-up checks)."""
    path = Path(storage_dir) / DB_FILENAME
    if not path.exists():
        return
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        found = schema_version(conn)
    finally:
        conn.close()
    if found > SCHEMA_VERSION:
        raise SchemaTooNew(too_new_message(str(path), found))
