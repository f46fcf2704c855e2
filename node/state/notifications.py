"""Notifications repository: webhook messages (``notifications``) waiting, sent or given up.
The sending policy (retries, backoff) is :mod:`node.notify`'s."""
from __future__ import annotations

import json
import sqlite3
from typing import Any, Callable, Mapping

from .connection import transaction

__all__ = ["Notifications"]


class Notifications:
    """Reads and writes of ``notifications`` on this thread's connection."""

    def __init__(self, get_conn: Callable[[], sqlite3.Connection]) -> None:
        self._conn = get_conn

    def add(self, event: str, webhooks: list[str], subject: str | None, payload: Mapping[str, Any],
            now: float) -> list[int]:
        """One pending message per webhook, due ``now``; their ids."""
        ids: list[int] = []
        with transaction(self._conn()) as conn:
            for webhook in webhooks:
                cur = conn.execute(
                    "INSERT INTO notifications (event, webhook, subject, payload, state, next_attempt_at, created_at)"
                    " VALUES (?, ?, ?, ?, 'pending', ?, ?)",
                    (event, webhook, subject, json.dumps(dict(payload), sort_keys=True, default=str), now, now))
                ids.append(int(cur.lastrowid or 0))
        return ids

    def due(self, now: float, limit: int = 20) -> list[dict[str, Any]]:
        rows = self._conn().execute(
            "SELECT * FROM notifications WHERE state='pending' AND next_attempt_at<=? ORDER BY id LIMIT ?",
            (now, limit)).fetchall()
        return [dict(r) for r in rows]

    def next_due_at(self) -> float | None:
        row = self._conn().execute("SELECT MIN(next_attempt_at) FROM notifications WHERE state='pending'").fetchone()
        return None if row[0] is None else float(row[0])

    def mark_sent(self, notification_id: int, attempts: int, now: float) -> None:
        self._conn().execute("UPDATE notifications SET state='sent', attempts=?, sent_at=?, last_error=NULL"
                             " WHERE id=?", (attempts, now, notification_id))

    def schedule_retry(self, notification_id: int, attempts: int, next_attempt_at: float, error: str) -> None:
        self._conn().execute("UPDATE notifications SET attempts=?, next_attempt_at=?, last_error=? WHERE id=?",
                             (attempts, next_attempt_at, error, notification_id))

    def mark_failed(self, notification_id: int, attempts: int, error: str) -> None:
        self._conn().execute("UPDATE notifications SET state='failed', attempts=?, last_error=? WHERE id=?",
                             (attempts, error, notification_id))

    def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        """Newest first, for the console."""
        return [dict(r) for r in self._conn().execute(
            "SELECT id, event, webhook, subject, state, attempts, last_error, created_at, sent_at FROM notifications"
            " ORDER BY id DESC LIMIT ?", (limit,))]
