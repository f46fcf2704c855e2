"""Studies repository: ``pending_studies``, one row per study completion has seen.

Completion writes it (arrivals, quiet-period deadlines, the routing decision),
retention reads it for studies to remove and marks them removed, and status
reads it with the study's derived state (:data:`STUDY_STATES`): completion
records only that it handed the study to the jobs (``state='processed'``),
what happened next is in the jobs and deliveries of that generation.
"""
from __future__ import annotations

import json
import sqlite3
from typing import Any, Callable, Iterable

from .connection import transaction

__all__ = ["STUDY_STATES", "Studies"]

#: A study's state as users see it, in the order of its life.
STUDY_STATES = (
    "waiting",     # receiving: the quiet period has not passed (or a route waits for a missing series)
    "unmatched",   # complete, no route matched: stored, nothing to run
    "incomplete",  # every matching route gave up waiting for a series it needs (routes[].incomplete: give_up)
    "processing",  # a job of the current generation is queued or running (retries included)
    "sending",     # every job done, results waiting to be delivered (retries included)
    "processed",   # every job done and every result delivered
    "failed",      # a job failed for good, or a result could not be delivered: its results did not come out
)

_SAME_GENERATION = "j.study_uid = p.study_uid AND j.generation = p.generation"
_DELIVERY = f"SELECT 1 FROM deliveries d JOIN jobs j ON d.job_id = j.id WHERE {_SAME_GENERATION} AND d.state"
#: SQL for the derived state of the ``pending_studies`` row ``p`` (see :data:`STUDY_STATES`).
_DERIVED_STATE = (
    "CASE WHEN p.state != 'processed' THEN p.state"
    f" WHEN p.incomplete IS NOT NULL AND NOT EXISTS (SELECT 1 FROM jobs j WHERE {_SAME_GENERATION})"
    " THEN 'incomplete'"
    f" WHEN EXISTS (SELECT 1 FROM jobs j WHERE {_SAME_GENERATION} AND j.state = 'failed') THEN 'failed'"
    f" WHEN EXISTS (SELECT 1 FROM jobs j WHERE {_SAME_GENERATION} AND j.state IN ('queued', 'running'))"
    " THEN 'processing'"
    f" WHEN EXISTS ({_DELIVERY} = 'failed') THEN 'failed'"
    f" WHEN EXISTS ({_DELIVERY} = 'pending') THEN 'sending'"
    " ELSE 'processed' END"
)

_OPEN_WORK = """
    NOT EXISTS (SELECT 1 FROM jobs j WHERE j.study_uid = p.study_uid AND j.state IN ('queued', 'running'))
    AND NOT EXISTS (SELECT 1 FROM deliveries d JOIN jobs j ON d.job_id = j.id
                    WHERE j.study_uid = p.study_uid AND d.state = 'pending')
"""

_ALL_SUCCEEDED = """
    NOT EXISTS (SELECT 1 FROM jobs j WHERE j.study_uid = p.study_uid AND j.state != 'done')
    AND NOT EXISTS (SELECT 1 FROM deliveries d JOIN jobs j ON d.job_id = j.id
                    WHERE j.study_uid = p.study_uid AND d.state != 'sent')
"""


class Studies:
    """Reads and writes of ``pending_studies`` on this thread's connection (``get_conn()``).

    Writes that belong together run inside the caller's
    :func:`~node.state.transaction` on the same connection.
    """

    def __init__(self, get_conn: Callable[[], sqlite3.Connection]) -> None:
        self._conn = get_conn

    # ------------------------------------------------------------------ completion
    def get(self, study_uid: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self._conn().execute(
            "SELECT * FROM pending_studies WHERE study_uid=?", (study_uid,)).fetchone()
        return row

    def insert_waiting(self, study_uid: str, received_at: float, due: float, quiet: float) -> None:
        """The first instance of a study: generation 1, waiting until ``due``."""
        self._conn().execute(
            "INSERT INTO pending_studies (study_uid, state, generation, first_received_at, last_received_at,"
            " due_at, quiet_seconds, received) VALUES (?, 'waiting', 1, ?, ?, ?, ?, 1)",
            (study_uid, received_at, received_at, due, quiet),
        )

    def extend_wait(self, study_uid: str, last_received_at: float, due: float, quiet: float) -> None:
        """One more instance of a waiting study."""
        self._conn().execute(
            "UPDATE pending_studies SET last_received_at=?, due_at=?, quiet_seconds=?, received=received+1"
            " WHERE study_uid=?",
            (last_received_at, due, quiet, study_uid),
        )

    def reopen(self, study_uid: str, received_at: float, due: float, quiet: float) -> None:
        """A late arrival that is processed again: the next generation waits until ``due``."""
        self._conn().execute(
            "UPDATE pending_studies SET state='waiting', generation=generation+1, last_received_at=?,"
            " due_at=?, quiet_seconds=?, received=1 WHERE study_uid=?",
            (received_at, due, quiet, study_uid),
        )

    def count_late(self, study_uid: str, received_at: float) -> None:
        """A late arrival kept but not processed again."""
        self._conn().execute(
            "UPDATE pending_studies SET last_received_at=?, late_ignored=late_ignored+1 WHERE study_uid=?",
            (received_at, study_uid),
        )

    def waiting(self) -> list[sqlite3.Row]:
        """(study_uid, due_at, quiet_seconds) of every waiting study."""
        return self._conn().execute(
            "SELECT study_uid, due_at, quiet_seconds FROM pending_studies WHERE state='waiting'"
        ).fetchall()

    def set_due(self, due: Iterable[tuple[str, float]]) -> None:
        """New deadlines: (study uid, due time) pairs."""
        self._conn().executemany("UPDATE pending_studies SET due_at=? WHERE study_uid=?",
                                 [(t, uid) for uid, t in due])

    def mark_routed(self, study_uid: str, state: str, now: float, routes: list[str],
                    incomplete: dict[str, list[str]] | None = None) -> None:
        """Completion's decision: ``processed`` (jobs queued for ``routes``; ``incomplete``: routes given
        up and the requirements they missed) or ``unmatched``."""
        self._conn().execute(
            "UPDATE pending_studies SET state=?, processed_at=?, due_at=NULL, routes=?, incomplete=?"
            " WHERE study_uid=?",
            (state, now, json.dumps(routes), json.dumps(incomplete) if incomplete else None, study_uid),
        )

    def defer(self, study_uid: str, received: int, until: float) -> None:
        """A waiting study waits for a missing series until ``until`` (unless an instance arrived
        since completion looked at it: ``received`` no longer matches, and its own due time holds)."""
        self._conn().execute(
            "UPDATE pending_studies SET due_at=MAX(due_at, ?) WHERE study_uid=? AND state='waiting' AND received=?",
            (until, study_uid, received))

    # ------------------------------------------------------------------ retention
    def delivered(self) -> list[str]:
        """Processed studies still in the spool whose jobs are all done and deliveries all sent."""
        return [r["study_uid"] for r in self._conn().execute(
            f"SELECT study_uid FROM pending_studies p WHERE state='processed' AND spool_deleted_at IS NULL"
            f" AND {_ALL_SUCCEEDED}")]

    def processed_before(self, cutoff: float) -> list[str]:
        """Processed studies still in the spool, last received before ``cutoff``, with no open job or delivery."""
        return [r["study_uid"] for r in self._conn().execute(
            f"SELECT study_uid FROM pending_studies p WHERE state='processed' AND spool_deleted_at IS NULL"
            f" AND last_received_at < ? AND {_OPEN_WORK}", (cutoff,))]

    def unmatched_before(self, cutoff: float) -> list[str]:
        """Unmatched studies still in the spool, last received before ``cutoff``."""
        return [r["study_uid"] for r in self._conn().execute(
            "SELECT study_uid FROM pending_studies p WHERE state='unmatched' AND spool_deleted_at IS NULL"
            " AND last_received_at < ?", (cutoff,))]

    def mark_spool_deleted(self, study_uid: str, now: float) -> None:
        self._conn().execute("UPDATE pending_studies SET spool_deleted_at=? WHERE study_uid=?", (now, study_uid))

    # ------------------------------------------------------------------ status
    def listing(self, limit: int, state: str | None = None) -> list[sqlite3.Row]:
        """Rows newest first, each with ``study_state`` (:data:`STUDY_STATES`); ``state`` filters on it."""
        sql = f"SELECT * FROM (SELECT p.*, {_DERIVED_STATE} AS study_state FROM pending_studies p)"
        args: list[Any] = []
        if state:
            sql += " WHERE study_state=?"
            args.append(state)
        sql += " ORDER BY last_received_at DESC LIMIT ?"
        args.append(limit)
        return self._conn().execute(sql, args).fetchall()

    def failure(self, study_uid: str, generation: int) -> str | None:
        """Why a failed study's results did not come out: the failed job's error or the delivery's."""
        conn = self._conn()
        row = conn.execute(
            "SELECT pipeline, error FROM jobs WHERE study_uid=? AND generation=? AND state='failed'"
            " ORDER BY id LIMIT 1",
            (study_uid, generation)).fetchone()
        if row is not None:
            first = (row["error"] or "").strip().splitlines()
            return f"job {row['pipeline']} failed: {first[0] if first else 'no error text'}"
        row = conn.execute(
            "SELECT d.destination, d.last_error FROM deliveries d JOIN jobs j ON d.job_id = j.id"
            " WHERE j.study_uid=? AND j.generation=? AND d.state='failed' ORDER BY d.id LIMIT 1",
            (study_uid, generation)).fetchone()
        if row is not None:
            return f"not delivered to {row['destination']}: {row['last_error'] or 'no error text'}"
        return None

    def count_by_derived_state(self) -> dict[str, int]:
        return {r["s"]: r["n"] for r in self._conn().execute(
            f"SELECT {_DERIVED_STATE} AS s, COUNT(*) AS n FROM pending_studies p GROUP BY s")}

    def count_by_state(self) -> dict[str, int]:
        """Completion's own states (waiting/processed/unmatched)."""
        return {r["state"]: r["n"] for r in self._conn().execute(
            "SELECT state, COUNT(*) AS n FROM pending_studies GROUP BY state")}

    # ------------------------------------------------------------------ console
    def make_due_now(self, study_uid: str, now: float) -> str | None:
        """Force completion: a waiting study's quiet period ends ``now`` (the caller then fires completion);
        None, else why not."""
        with transaction(self._conn()) as conn:
            row = conn.execute("SELECT state FROM pending_studies WHERE study_uid=?", (study_uid,)).fetchone()
            if row is None:
                return "not found"
            if row["state"] != "waiting":
                return f"state is {row['state']} (only a waiting study can be completed now)"
            conn.execute("UPDATE pending_studies SET due_at=? WHERE study_uid=? AND state='waiting'", (now, study_uid))
        return None

    def reopen_now(self, study_uid: str, now: float) -> tuple[str | None, int]:
        """Reprocess: a completed study becomes waiting as the next generation, due ``now`` (the caller fires
        completion, which routes it again and queues new jobs). Returns (why not | None, new generation)."""
        with transaction(self._conn()) as conn:
            row = conn.execute("SELECT state, generation FROM pending_studies WHERE study_uid=?",
                               (study_uid,)).fetchone()
            if row is None:
                return "not found", 0
            if row["state"] == "waiting":
                return "the study is still waiting for its quiet period (use complete now)", int(row["generation"])
            if conn.execute("SELECT 1 FROM instances WHERE study_instance_uid=? LIMIT 1",
                            (study_uid,)).fetchone() is None:
                return "no instances of the study left in the spool (removed per retention)", int(row["generation"])
            conn.execute("UPDATE pending_studies SET state='waiting', generation=generation+1, due_at=?"
                         " WHERE study_uid=?", (now, study_uid))
        return None, int(row["generation"]) + 1
