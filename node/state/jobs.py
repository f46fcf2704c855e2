"""Jobs repository: ``jobs`` (one row per study, generation and route) and ``results`` (their files).

The queue's policy (attempts, backoff, what a failure means) is
:class:`node.jobs.JobQueue`'s; this module only reads and writes rows.
Rows of ``results`` are never deleted (retention removes result files only):
they are how the node recognises its own results when they come back.
"""
from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from .connection import connect, transaction

__all__ = ["Jobs", "OwnResults", "enqueue_job"]


def enqueue_job(conn: sqlite3.Connection, study_uid: str, generation: int, route_name: str, pipeline: str,
                destinations: Iterable[str], now: float, priority: int = 0) -> int | None:
    """Insert one queued job inside the caller's transaction; ``None`` if it already exists."""
    cur = conn.execute(
        "INSERT OR IGNORE INTO jobs (study_uid, generation, route_name, pipeline, destinations, state,"
        " next_attempt_at, created_at, priority) VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?)",
        (study_uid, generation, route_name, pipeline, json.dumps(list(destinations)), now, now, priority),
    )
    return cur.lastrowid if cur.rowcount else None


class Jobs:
    """Reads and writes of ``jobs`` and ``results`` on this thread's connection (``get_conn()``)."""

    def __init__(self, get_conn: Callable[[], sqlite3.Connection]) -> None:
        self._conn = get_conn

    # ------------------------------------------------------------------ queue transitions
    def requeue_interrupted(self, max_attempts: int, now: float) -> tuple[int, int]:
        """``running`` jobs back to ``queued``, or ``failed`` when out of attempts; returns (requeued, failed)."""
        with transaction(self._conn()) as conn:
            failed = conn.execute(
                "UPDATE jobs SET state='failed', finished_at=?, error=? WHERE state='running' AND attempts>=?",
                (now, f"interrupted by node stop/crash {max_attempts} times", max_attempts),
            ).rowcount
            requeued = conn.execute(
                "UPDATE jobs SET state='queued', next_attempt_at=?, error='interrupted by node stop/crash; re-queued'"
                " WHERE state='running'",
                (now,),
            ).rowcount
        return requeued, failed

    def claim(self, now: float) -> sqlite3.Row | None:
        """Take the due queued job of the highest priority, the oldest of those, and mark it running (atomic
        across threads and processes); the row is as it was before the claim (``attempts`` not yet counted)."""
        with transaction(self._conn()) as conn:
            row: sqlite3.Row | None = conn.execute(
                "SELECT * FROM jobs WHERE state='queued' AND next_attempt_at<=?"
                " ORDER BY priority DESC, next_attempt_at, id LIMIT 1",
                (now,),
            ).fetchone()
            if row is not None:
                conn.execute(
                    "UPDATE jobs SET state='running', attempts=attempts+1, started_at=?, finished_at=NULL WHERE id=?",
                    (now, row["id"]),
                )
        return row

    def next_due_at(self) -> float | None:
        """When the earliest queued job is due (None: none queued)."""
        row = self._conn().execute("SELECT MIN(next_attempt_at) AS t FROM jobs WHERE state='queued'").fetchone()
        return None if row["t"] is None else float(row["t"])

    def record_results(self, job_id: int, files: Sequence[tuple[str, str, Path, str | None]], now: float) -> None:
        """Result files of a job: (sop instance uid, sop class uid, path, series uid); in the caller's transaction."""
        conn = self._conn()
        for sop_uid, sop_class, path, series_uid in files:
            conn.execute(
                "INSERT OR REPLACE INTO results (sop_instance_uid, job_id, sop_class_uid, path, created_at,"
                " series_instance_uid) VALUES (?, ?, ?, ?, ?, ?)",
                (sop_uid, job_id, sop_class, str(path), now, series_uid),
            )

    def mark_done(self, job_id: int, now: float, pipeline_version: str, models: list[dict[str, Any]],
                  summary: Mapping[str, Any]) -> None:
        """In the caller's transaction, with the job's results and deliveries."""
        self._conn().execute(
            "UPDATE jobs SET state='done', finished_at=?, error=NULL, pipeline_version=?, models=?, summary=?"
            " WHERE id=?",
            (now, pipeline_version, json.dumps(models), json.dumps(summary, default=str), job_id),
        )

    def release(self, job_id: int, reason: str, now: float) -> None:
        """``running`` -> ``queued``, due now, without counting the attempt."""
        with transaction(self._conn()) as conn:
            conn.execute(
                "UPDATE jobs SET state='queued', attempts=MAX(attempts-1, 0), next_attempt_at=?, error=?"
                " WHERE id=? AND state='running'",
                (now, reason, job_id),
            )

    def requeue(self, job_id: int, next_attempt_at: float, error: str) -> None:
        with transaction(self._conn()) as conn:
            conn.execute("UPDATE jobs SET state='queued', next_attempt_at=?, error=? WHERE id=?",
                         (next_attempt_at, error, job_id))

    def mark_failed(self, job_id: int, now: float, error: str) -> None:
        with transaction(self._conn()) as conn:
            conn.execute("UPDATE jobs SET state='failed', finished_at=?, error=? WHERE id=?", (now, error, job_id))

    def retry_failed(self, job_id: int, now: float) -> str | None:
        """A ``failed`` job back to ``queued`` with a fresh attempt count; None on success, else why not
        (``"not found"``, ``"state is X"``)."""
        with transaction(self._conn()) as conn:
            row = conn.execute("SELECT state FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row is None:
                return "not found"
            if row["state"] != "failed":
                return f"state is {row['state']}"
            conn.execute(
                "UPDATE jobs SET state='queued', attempts=0, next_attempt_at=?, error=NULL, finished_at=NULL"
                " WHERE id=? AND state='failed'",
                (now, job_id),
            )
        return None

    def abort_queued(self, job_id: int, now: float, reason: str) -> str | None:
        """A ``queued`` job to ``failed`` with ``reason`` (an operator's abort; a running job cannot be
        stopped mid-run); None on success, else why not."""
        with transaction(self._conn()) as conn:
            row = conn.execute("SELECT state FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row is None:
                return "not found"
            if row["state"] != "queued":
                return f"state is {row['state']} (only a queued job can be aborted)"
            conn.execute("UPDATE jobs SET state='failed', finished_at=?, error=? WHERE id=? AND state='queued'",
                         (now, reason, job_id))
        return None

    def results_of(self, job_ids: Iterable[int]) -> list[dict[str, Any]]:
        """Result objects of these jobs (the study page)."""
        ids = list(job_ids)
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        return [dict(r) for r in self._conn().execute(
            f"SELECT * FROM results WHERE job_id IN ({marks}) ORDER BY created_at, sop_instance_uid", ids)]

    # ------------------------------------------------------------------ reads
    def get(self, job_id: int) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self._conn().execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return row

    def listing(self, limit: int, state: str | None = None, study_uid: str | None = None) -> list[sqlite3.Row]:
        """Rows newest first, optionally of one state and/or study."""
        where, args = [], []
        if state:
            where.append("state=?")
            args.append(state)
        if study_uid:
            where.append("study_uid=?")
            args.append(study_uid)
        sql = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC LIMIT ?"
        return self._conn().execute(sql, [*args, limit]).fetchall()

    def count_by_state(self) -> dict[str, int]:
        rows = self._conn().execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
        return {r["state"]: r["n"] for r in rows}

    def finished_before(self, cutoff: float) -> list[int]:
        """Ids of done/failed jobs finished before ``cutoff`` with no pending delivery (retention)."""
        return [r["id"] for r in self._conn().execute(
            "SELECT id FROM jobs j WHERE state IN ('done', 'failed') AND finished_at < ?"
            " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.job_id = j.id AND d.state = 'pending')",
            (cutoff,))]


class OwnResults:
    """Recognises the node's own results when they come back (a PACS forwarding them, a study
    retrieved with them): by SOP Instance UID or series of any result a job ever produced.

    One connection of its own, used under a lock by every ingest thread.
    """

    def __init__(self, storage_dir: str | Path) -> None:
        self._conn = connect(storage_dir, synchronous="NORMAL")
        self._lock = threading.Lock()

    def contains(self, sop_instance_uid: str, series_instance_uid: str) -> bool:
        """True for a result's SOP Instance UID, or for its series; an empty series never matches."""
        with self._lock:
            row = self._conn.execute(
                "SELECT 1 FROM results WHERE sop_instance_uid=? OR series_instance_uid=NULLIF(?, '') LIMIT 1",
                (sop_instance_uid, series_instance_uid),
            ).fetchone()
        return row is not None

    def close(self) -> None:
        with self._lock:
            self._conn.close()
