"""Deliveries repository: the dispatch queue (``deliveries``) and each destination's last outcome
(``destination_state``).

One row per (destination, result SOP instance); ``UNIQUE(destination,
sop_instance_uid)`` makes creating deliveries idempotent.  The dispatch policy
(batches, retries, backoff) is :mod:`node.dispatch.queue`'s.
"""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from .connection import transaction

__all__ = ["Deliveries", "add_deliveries"]


def add_deliveries(
    conn: sqlite3.Connection,
    job_id: int | None,
    files: Iterable[tuple[str, Path | str]],
    destinations: Iterable[str],
    now: float | None = None,
) -> int:
    """Create pending deliveries (inside the caller's transaction); existing pairs are left alone.

    Returns the number created.
    """
    now = time.time() if now is None else now
    created = 0
    destinations = list(destinations)
    for sop_uid, path in files:
        for dest in destinations:
            cur = conn.execute(
                "INSERT OR IGNORE INTO deliveries (job_id, sop_instance_uid, destination, path, state,"
                " next_attempt_at, created_at) VALUES (?, ?, ?, ?, 'pending', ?, ?)",
                (job_id, sop_uid, dest, str(path), now, now),
            )
            created += cur.rowcount
    return created


class Deliveries:
    """Reads and writes of ``deliveries`` and ``destination_state`` on this thread's connection.

    The ``mark_*`` and :meth:`note_attempt` writes run inside the caller's
    :func:`~node.state.transaction`, so one batch's outcomes commit together.
    """

    def __init__(self, get_conn: Callable[[], sqlite3.Connection]) -> None:
        self._conn = get_conn

    # ------------------------------------------------------------------ dispatch
    def next_due_at(self, destination: str) -> float | None:
        """When the destination's earliest pending delivery is due (None: nothing pending)."""
        row = self._conn().execute(
            "SELECT MIN(next_attempt_at) AS t FROM deliveries WHERE destination=? AND state='pending'", (destination,)
        ).fetchone()
        return None if row["t"] is None else float(row["t"])

    def due(self, destination: str, now: float, limit: int) -> list[sqlite3.Row]:
        """(id, sop_instance_uid, path, attempts) of pending deliveries due at ``now``, oldest first."""
        return self._conn().execute(
            "SELECT id, sop_instance_uid, path, attempts FROM deliveries"
            " WHERE destination=? AND state='pending' AND next_attempt_at<=? ORDER BY id LIMIT ?",
            (destination, now, limit),
        ).fetchall()

    def mark_sent(self, delivery_id: int, attempts: int, now: float) -> None:
        self._conn().execute(
            "UPDATE deliveries SET state='sent', attempts=?, sent_at=?, last_error=NULL WHERE id=?",
            (attempts, now, delivery_id),
        )

    def mark_failed(self, delivery_id: int, attempts: int | None, error: str | None) -> None:
        """Final failure; ``attempts=None`` leaves the count (a result file that vanished was never tried)."""
        if attempts is None:
            self._conn().execute("UPDATE deliveries SET state='failed', last_error=? WHERE id=?", (error, delivery_id))
        else:
            self._conn().execute("UPDATE deliveries SET state='failed', attempts=?, last_error=? WHERE id=?",
                                 (attempts, error, delivery_id))

    def schedule_retry(self, delivery_id: int, attempts: int, next_attempt_at: float, error: str | None) -> None:
        self._conn().execute(
            "UPDATE deliveries SET attempts=?, next_attempt_at=?, last_error=? WHERE id=?",
            (attempts, next_attempt_at, error, delivery_id),
        )

    def note_attempt(self, destination: str, now: float, success: bool, error: str | None) -> None:
        """The destination's last attempt, last success and last error (each kept until replaced)."""
        self._conn().execute(
            "INSERT INTO destination_state (name, last_attempt_at, last_success_at, last_error, last_error_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET last_attempt_at=excluded.last_attempt_at,"
            " last_success_at=COALESCE(excluded.last_success_at, last_success_at),"
            " last_error=COALESCE(excluded.last_error, last_error),"
            " last_error_at=COALESCE(excluded.last_error_at, last_error_at)",
            (destination, now, now if success else None, error, now if error is not None else None),
        )

    # ------------------------------------------------------------------ status and metrics
    def count_by_state(self, destination: str | None = None) -> dict[str, int]:
        """Deliveries per state, of one destination or all."""
        if destination is None:
            rows = self._conn().execute("SELECT state, COUNT(*) AS n FROM deliveries GROUP BY state")
        else:
            rows = self._conn().execute(
                "SELECT state, COUNT(*) AS n FROM deliveries WHERE destination=? GROUP BY state", (destination,))
        return {r["state"]: r["n"] for r in rows}

    def count_due(self, destination: str, now: float) -> int:
        return int(self._conn().execute(
            "SELECT COUNT(*) FROM deliveries WHERE destination=? AND state='pending' AND next_attempt_at<=?",
            (destination, now),
        ).fetchone()[0])

    def destination_state(self, destination: str) -> sqlite3.Row | None:
        return self._conn().execute("SELECT * FROM destination_state WHERE name=?", (destination,)).fetchone()

    def count_by_destination_and_state(self) -> list[tuple[str, str, int]]:
        return [(r["destination"], r["state"], r["n"]) for r in self._conn().execute(
            "SELECT destination, state, COUNT(*) AS n FROM deliveries GROUP BY destination, state")]

    def failed_attempts_by_destination(self) -> list[tuple[str, int]]:
        """Failed delivery attempts per destination: every attempt but the one that succeeded."""
        return [(r["destination"], r["n"] or 0) for r in self._conn().execute(
            "SELECT destination, SUM(attempts - CASE WHEN state='sent' THEN 1 ELSE 0 END) AS n"
            " FROM deliveries GROUP BY destination")]

    # ------------------------------------------------------------------ console
    def of_jobs(self, job_ids: Iterable[int]) -> list[dict[str, Any]]:
        """Deliveries of these jobs, oldest first (the study page)."""
        ids = list(job_ids)
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        return [dict(r) for r in self._conn().execute(
            f"SELECT id, job_id, sop_instance_uid, destination, state, attempts, next_attempt_at, last_error,"
            f" created_at, sent_at FROM deliveries WHERE job_id IN ({marks}) ORDER BY id", ids)]

    def failed_listing(self, limit: int = 200) -> list[dict[str, Any]]:
        """Failed deliveries, newest first, with their study."""
        return [dict(r) for r in self._conn().execute(
            "SELECT d.id, d.job_id, d.destination, d.sop_instance_uid, d.attempts, d.last_error, j.study_uid"
            " FROM deliveries d LEFT JOIN jobs j ON j.id = d.job_id WHERE d.state='failed' ORDER BY d.id DESC"
            " LIMIT ?", (limit,))]

    def get_with_study(self, delivery_id: int) -> dict[str, Any] | None:
        row = self._conn().execute(
            "SELECT d.id, d.job_id, d.destination, d.sop_instance_uid, d.state, d.last_error, j.study_uid"
            " FROM deliveries d LEFT JOIN jobs j ON j.id = d.job_id WHERE d.id=?", (delivery_id,)).fetchone()
        return dict(row) if row is not None else None

    def studies_of(self, delivery_ids: Iterable[int]) -> dict[int, str]:
        """{delivery id: Study Instance UID} (the audit trail files deliveries under their study)."""
        ids = list(delivery_ids)
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        return {int(r["id"]): r["study_uid"] for r in self._conn().execute(
            f"SELECT d.id, j.study_uid FROM deliveries d JOIN jobs j ON j.id = d.job_id WHERE d.id IN ({marks})", ids)}

    def retry_failed(self, delivery_id: int, now: float) -> str | None:
        """A ``failed`` delivery back to ``pending``, attempts reset, due ``now``; None, else why not."""
        with transaction(self._conn()) as conn:
            row = conn.execute("SELECT state FROM deliveries WHERE id=?", (delivery_id,)).fetchone()
            if row is None:
                return "not found"
            if row["state"] != "failed":
                return f"state is {row['state']}"
            conn.execute("UPDATE deliveries SET state='pending', attempts=0, next_attempt_at=? WHERE id=?",
                         (now, delivery_id))
        return None

    def pause(self, destination: str, by: str, now: float) -> bool:
        """The destination's worker sends nothing until :meth:`resume`; False when already paused."""
        return self._conn().execute("INSERT OR IGNORE INTO destination_pause (name, paused_by, paused_at)"
                                    " VALUES (?, ?, ?)", (destination, by, now)).rowcount == 1

    def resume(self, destination: str) -> bool:
        """False when it was not paused."""
        return self._conn().execute("DELETE FROM destination_pause WHERE name=?", (destination,)).rowcount == 1

    def is_paused(self, destination: str) -> bool:
        return self._conn().execute("SELECT 1 FROM destination_pause WHERE name=?",
                                    (destination,)).fetchone() is not None

    def paused(self) -> dict[str, dict[str, Any]]:
        """{destination: {paused_by, paused_at}}."""
        return {r["name"]: dict(r) for r in self._conn().execute("SELECT * FROM destination_pause")}
