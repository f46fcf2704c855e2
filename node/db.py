"""SQLite access shared by the node's state modules.

One database file under ``storage_dir`` holds the spool index, pending
studies, jobs and dispatch state.  Each state module owns its tables and
declares them as a list of ``CREATE ... IF NOT EXISTS`` statements passed to
:func:`ensure_schema`.  Connections use WAL (readers never block the writer)
and ``synchronous=FULL`` so that a committed row survives power loss, which
the "nothing acknowledged is lost" rule needs.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Iterable

__all__ = ["DB_FILENAME", "connect", "ensure_schema"]

DB_FILENAME = "cardionode.sqlite3"


def connect(storage_dir: str | Path, timeout: float = 30.0) -> sqlite3.Connection:
    """Open a connection to the node database (created if missing).

    Connections are not shared between threads; open one per thread.
    ``isolation_level=None`` puts transactions under explicit control
    (``BEGIN IMMEDIATE`` ... ``COMMIT``).
    """
    path = Path(storage_dir) / DB_FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
    return conn


def ensure_schema(conn: sqlite3.Connection, statements: Iterable[str]) -> None:
    """Create the tables and indexes a module needs (idempotent)."""
    with conn:
        for sql in statements:
            conn.execute(sql)
