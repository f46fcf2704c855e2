"""The console's tables: accounts, sessions and the audit trail (the only SQL of the console).

Three tables in the node database (:mod:`node.db`):

* ``console_users`` -- user name, role, argon2 hash of the password;
* ``console_sessions`` -- one row per login: the *sha256* of the session cookie (a copy of the
  database does not hand out live sessions), the session's CSRF token, its expiry;
* ``audit_events`` -- append-only: a trigger refuses every UPDATE, and rows are deleted only by
  :meth:`ConsoleStore.prune_audit` (retention), oldest first.

Besides, the few operator actions that change node state without a hook of their own (retry a
failed delivery, abort a queued job, pause a destination) are single guarded UPDATEs kept here so
that the console's SQL stays in one module.
"""
from __future__ import annotations

import json
import sqlite3
import time
from typing import Any, Callable, Iterable, Mapping

__all__ = ["CONSOLE_SCHEMA", "ROLES", "ConsoleStore", "AuditQuery"]

#: Roles from least to most privileged; each role may do everything the roles before it may.
ROLES = ("read-only", "operator", "admin")

CONSOLE_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS console_users (
        username TEXT PRIMARY KEY,
        role TEXT NOT NULL CHECK (role IN ('read-only', 'operator', 'admin')),
        password_hash TEXT NOT NULL,
        created_at REAL NOT NULL,
        password_changed_at REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS console_sessions (
        token_sha256 TEXT PRIMARY KEY,
        username TEXT NOT NULL REFERENCES console_users (username) ON DELETE CASCADE,
        csrf_token TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS console_sessions_user ON console_sessions (username)",
    """CREATE TABLE IF NOT EXISTS audit_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        subject TEXT,
        detail TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS audit_events_at ON audit_events (at)",
    """CREATE TRIGGER IF NOT EXISTS audit_events_append_only BEFORE UPDATE ON audit_events
       BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END""",
    # the pause flag of a destination: the dispatch worker of a paused destination sends nothing
    """CREATE TABLE IF NOT EXISTS destination_pause (
        name TEXT PRIMARY KEY,
        paused_by TEXT NOT NULL,
        paused_at REAL NOT NULL
    )""",
]


class AuditQuery:
    """What the audit page searches for: free text in action/subject/detail/actor, a kind, a time window."""

    def __init__(self, text: str = "", kind: str = "", since: float | None = None, until: float | None = None,
                 limit: int = 200) -> None:
        self.text = text.strip()
        self.kind = kind.strip()
        self.since = since
        self.until = until
        self.limit = max(1, min(int(limit), 100_000))


class ConsoleStore:
    """Accounts, sessions and audit events over the node database; ``get_conn`` gives this thread's
    connection (autocommit, as :func:`node.db.connect` opens it)."""

    def __init__(self, get_conn: Callable[[], sqlite3.Connection]) -> None:
        self._get_conn = get_conn

    def ensure_schema(self) -> None:
        conn = self._get_conn()
        with conn:
            for sql in CONSOLE_SCHEMA:
                conn.execute(sql)

    # ------------------------------------------------------------------ users
    def add_user(self, username: str, role: str, password_hash: str) -> None:
        """Insert a user; raises ``ValueError`` when the name is taken."""
        now = time.time()
        try:
            with self._get_conn() as conn:
                conn.execute("INSERT INTO console_users (username, role, password_hash, created_at,"
                             " password_changed_at) VALUES (?, ?, ?, ?, ?)", (username, role, password_hash, now, now))
        except sqlite3.IntegrityError:
            raise ValueError(f"user {username!r} exists already") from None

    def user(self, username: str) -> dict[str, Any] | None:
        row = self._get_conn().execute("SELECT * FROM console_users WHERE username=?", (username,)).fetchone()
        return dict(row) if row is not None else None

    def users(self) -> list[dict[str, Any]]:
        rows = self._get_conn().execute(
            "SELECT u.username, u.role, u.created_at, u.password_changed_at,"
            " (SELECT COUNT(*) FROM console_sessions s WHERE s.username=u.username AND s.expires_at>?) AS sessions"
            " FROM console_users u ORDER BY u.username", (time.time(),)).fetchall()
        return [dict(r) for r in rows]

    def set_password_hash(self, username: str, password_hash: str) -> bool:
        """New hash; ends every session of the user (a changed password logs out everywhere)."""
        with self._get_conn() as conn:
            n = conn.execute("UPDATE console_users SET password_hash=?, password_changed_at=? WHERE username=?",
                             (password_hash, time.time(), username)).rowcount
            conn.execute("DELETE FROM console_sessions WHERE username=?", (username,))
        return n == 1

    def set_role(self, username: str, role: str) -> bool:
        with self._get_conn() as conn:
            return conn.execute("UPDATE console_users SET role=? WHERE username=?", (role, username)).rowcount == 1

    def remove_user(self, username: str) -> bool:
        with self._get_conn() as conn:
            conn.execute("DELETE FROM console_sessions WHERE username=?", (username,))
            return conn.execute("DELETE FROM console_users WHERE username=?", (username,)).rowcount == 1

    def count_admins(self) -> int:
        return int(self._get_conn().execute("SELECT COUNT(*) FROM console_users WHERE role='admin'").fetchone()[0])

    # ------------------------------------------------------------------ sessions
    def add_session(self, token_sha256: str, username: str, csrf_token: str, expires_at: float) -> None:
        with self._get_conn() as conn:
            conn.execute("DELETE FROM console_sessions WHERE expires_at<=?", (time.time(),))
            conn.execute("INSERT INTO console_sessions (token_sha256, username, csrf_token, created_at, expires_at)"
                         " VALUES (?, ?, ?, ?, ?)", (token_sha256, username, csrf_token, time.time(), expires_at))

    def session(self, token_sha256: str) -> dict[str, Any] | None:
        """The live session with the user's current role, or None (unknown, expired, user removed)."""
        row = self._get_conn().execute(
            "SELECT s.username, s.csrf_token, s.expires_at, u.role FROM console_sessions s"
            " JOIN console_users u ON u.username = s.username WHERE s.token_sha256=? AND s.expires_at>?",
            (token_sha256, time.time())).fetchone()
        return dict(row) if row is not None else None

    def remove_session(self, token_sha256: str) -> None:
        with self._get_conn() as conn:
            conn.execute("DELETE FROM console_sessions WHERE token_sha256=?", (token_sha256,))

    # ------------------------------------------------------------------ audit
    def audit(self, kind: str, actor: str, action: str, subject: str | None = None,
              detail: Mapping[str, Any] | None = None, at: float | None = None) -> int:
        """Append one audit event; returns its id."""
        with self._get_conn() as conn:
            cur = conn.execute(
                "INSERT INTO audit_events (at, kind, actor, action, subject, detail) VALUES (?, ?, ?, ?, ?, ?)",
                (time.time() if at is None else at, kind, actor, action, subject,
                 json.dumps(dict(detail), sort_keys=True, default=str) if detail else None))
            return int(cur.lastrowid)

    def search_audit(self, query: AuditQuery) -> list[dict[str, Any]]:
        """Events matching ``query``, newest first."""
        where: list[str] = []
        args: list[Any] = []
        if query.text:
            like = "%" + query.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append("(action LIKE ? ESCAPE '\\' OR subject LIKE ? ESCAPE '\\' OR detail LIKE ? ESCAPE '\\'"
                         " OR actor LIKE ? ESCAPE '\\')")
            args += [like] * 4
        if query.kind:
            where.append("kind=?")
            args.append(query.kind)
        if query.since is not None:
            where.append("at>=?")
            args.append(query.since)
        if query.until is not None:
            where.append("at<?")
            args.append(query.until)
        sql = ("SELECT * FROM audit_events" + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY id DESC LIMIT ?")
        args.append(query.limit)
        out = []
        for r in self._get_conn().execute(sql, args).fetchall():
            event = dict(r)
            event["detail"] = json.loads(r["detail"]) if r["detail"] else {}
            out.append(event)
        return out

    def prune_audit(self, older_than: float) -> int:
        """Delete events recorded before ``older_than`` (retention); returns how many."""
        with self._get_conn() as conn:
            return conn.execute("DELETE FROM audit_events WHERE at<?", (older_than,)).rowcount

    # ------------------------------------------------------------------ node state read for the pages
    def study_counts(self, study_uid: str) -> dict[str, Any]:
        """Series and instances the spool index holds for a study, and the calling AEs that sent them."""
        conn = self._get_conn()
        if not _table_exists(conn, "instances"):
            return {"series": [], "instances": 0}
        series = [dict(r) for r in conn.execute(
            "SELECT series_instance_uid AS series_uid, MAX(modality) AS modality, MAX(series_description)"
            " AS description, COUNT(*) AS instances, GROUP_CONCAT(DISTINCT calling_ae) AS calling_aes,"
            " GROUP_CONCAT(DISTINCT sop_class_uid) AS sop_classes"
            " FROM instances WHERE study_instance_uid=? GROUP BY series_instance_uid ORDER BY MIN(series_number),"
            " series_instance_uid", (study_uid,))]
        return {"series": series, "instances": sum(s["instances"] for s in series)}

    def results(self, job_ids: Iterable[int]) -> list[dict[str, Any]]:
        ids = list(job_ids)
        conn = self._get_conn()
        if not ids or not _table_exists(conn, "results"):
            return []
        marks = ",".join("?" * len(ids))
        return [dict(r) for r in conn.execute(f"SELECT * FROM results WHERE job_id IN ({marks}) ORDER BY created_at, sop_instance_uid", ids)]

    def deliveries(self, job_ids: Iterable[int]) -> list[dict[str, Any]]:
        ids = list(job_ids)
        conn = self._get_conn()
        if not ids or not _table_exists(conn, "deliveries"):
            return []
        marks = ",".join("?" * len(ids))
        return [dict(r) for r in conn.execute(
            f"SELECT id, job_id, sop_instance_uid, destination, state, attempts, next_attempt_at, last_error,"
            f" created_at, sent_at FROM deliveries WHERE job_id IN ({marks}) ORDER BY id", ids)]

    def job(self, job_id: int) -> dict[str, Any] | None:
        conn = self._get_conn()
        if not _table_exists(conn, "jobs"):
            return None
        row = conn.execute("SELECT id, study_uid, pipeline, state, error FROM jobs WHERE id=?", (job_id,)).fetchone()
        return dict(row) if row is not None else None

    def delivery(self, delivery_id: int) -> dict[str, Any] | None:
        conn = self._get_conn()
        if not _table_exists(conn, "deliveries"):
            return None
        row = conn.execute("SELECT d.id, d.job_id, d.destination, d.sop_instance_uid, d.state, d.last_error,"
                           " j.study_uid FROM deliveries d LEFT JOIN jobs j ON j.id = d.job_id WHERE d.id=?",
                           (delivery_id,)).fetchone()
        return dict(row) if row is not None else None

    def studies_of_deliveries(self, delivery_ids: Iterable[int]) -> dict[int, str]:
        ids = list(delivery_ids)
        conn = self._get_conn()
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        return {int(r["id"]): r["study_uid"] for r in conn.execute(
            f"SELECT d.id, j.study_uid FROM deliveries d JOIN jobs j ON j.id = d.job_id WHERE d.id IN ({marks})", ids)}

    def failed_deliveries(self, limit: int = 200) -> list[dict[str, Any]]:
        conn = self._get_conn()
        if not _table_exists(conn, "deliveries"):
            return []
        return [dict(r) for r in conn.execute(
            "SELECT d.id, d.job_id, d.destination, d.sop_instance_uid, d.attempts, d.last_error, j.study_uid"
            " FROM deliveries d LEFT JOIN jobs j ON j.id = d.job_id WHERE d.state='failed' ORDER BY d.id DESC"
            " LIMIT ?", (limit,))]

    # ------------------------------------------------------------------ operator actions without a hook
    def retry_delivery(self, delivery_id: int) -> tuple[str | None, dict[str, Any] | None]:
        """failed -> pending, attempts reset, due now. Returns (why not | None, the delivery row)."""
        conn = self._get_conn()
        with conn:
            row = conn.execute("SELECT d.*, j.study_uid FROM deliveries d LEFT JOIN jobs j ON j.id=d.job_id"
                               " WHERE d.id=?", (delivery_id,)).fetchone()
            if row is None:
                return "not found", None
            if row["state"] != "failed":
                return f"state is {row['state']}", dict(row)
            conn.execute("UPDATE deliveries SET state='pending', attempts=0, next_attempt_at=? WHERE id=?"
                         " AND state='failed'", (time.time(), delivery_id))
        return None, dict(row)

    def abort_job(self, job_id: int, reason: str) -> tuple[str | None, dict[str, Any] | None]:
        """queued -> failed with ``reason`` (a running job cannot be stopped mid-run)."""
        conn = self._get_conn()
        with conn:
            row = conn.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row is None:
                return "not found", None
            if row["state"] != "queued":
                return f"state is {row['state']} (only a queued job can be aborted)", dict(row)
            conn.execute("UPDATE jobs SET state='failed', finished_at=?, error=? WHERE id=? AND state='queued'",
                         (time.time(), reason, job_id))
        return None, dict(row)

    def make_due_now(self, study_uid: str) -> str | None:
        """Force completion: a waiting study's quiet period ends now (the caller then fires completion)."""
        with self._get_conn() as conn:
            row = conn.execute("SELECT state FROM pending_studies WHERE study_uid=?", (study_uid,)).fetchone()
            if row is None:
                return "not found"
            if row["state"] != "waiting":
                return f"state is {row['state']} (only a waiting study can be completed now)"
            conn.execute("UPDATE pending_studies SET due_at=? WHERE study_uid=? AND state='waiting'",
                         (time.time(), study_uid))
        return None

    def reopen_study(self, study_uid: str) -> tuple[str | None, int]:
        """Reprocess: a completed study becomes waiting as the next generation, due now (the caller fires
        completion, which routes it again and queues new jobs). Returns (why not | None, new generation)."""
        conn = self._get_conn()
        with conn:
            row = conn.execute("SELECT state, generation FROM pending_studies WHERE study_uid=?",
                               (study_uid,)).fetchone()
            if row is None:
                return "not found", 0
            if row["state"] == "waiting":
                return "the study is still waiting for its quiet period (use complete now)", row["generation"]
            if not _table_exists(conn, "instances") or conn.execute(
                    "SELECT 1 FROM instances WHERE study_instance_uid=? LIMIT 1", (study_uid,)).fetchone() is None:
                return "no instances of the study left in the spool (removed per retention)", row["generation"]
            conn.execute("UPDATE pending_studies SET state='waiting', generation=generation+1, due_at=?"
                         " WHERE study_uid=? AND state=?", (time.time(), study_uid, row["state"]))
        return None, int(row["generation"]) + 1

    def pause_destination(self, name: str, by: str) -> bool:
        """True when it was not paused before."""
        with self._get_conn() as conn:
            return conn.execute("INSERT OR IGNORE INTO destination_pause (name, paused_by, paused_at)"
                                " VALUES (?, ?, ?)", (name, by, time.time())).rowcount == 1

    def resume_destination(self, name: str) -> bool:
        with self._get_conn() as conn:
            return conn.execute("DELETE FROM destination_pause WHERE name=?", (name,)).rowcount == 1

    def is_paused(self, name: str) -> bool:
        """The dispatch worker's check, once per batch and idle wait."""
        try:
            return self._get_conn().execute("SELECT 1 FROM destination_pause WHERE name=?",
                                            (name,)).fetchone() is not None
        except sqlite3.OperationalError:  # table not created yet (a test's bare database)
            return False

    def paused_destinations(self) -> dict[str, dict[str, Any]]:
        conn = self._get_conn()
        if not _table_exists(conn, "destination_pause"):
            return {}
        return {r["name"]: dict(r) for r in conn.execute("SELECT * FROM destination_pause")}


def _table_exists(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None
