"""Audit trail repository: ``audit_events``, append-only (a trigger refuses every UPDATE; rows are deleted
only by :meth:`AuditEvents.prune`, the retention sweep).  What gets recorded is
:mod:`node.console.audit`'s."""
from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from typing import Any, Callable, Mapping

__all__ = ["AuditEvents", "AuditQuery"]


@dataclasses.dataclass
class AuditQuery:
    """A search: free text in action/subject/detail/actor, a kind, a time window [since, until)."""

    text: str = ""
    kind: str = ""
    since: float | None = None
    until: float | None = None
    limit: int = 200


class AuditEvents:
    """Appends and searches of ``audit_events`` on this thread's connection."""

    def __init__(self, get_conn: Callable[[], sqlite3.Connection]) -> None:
        self._conn = get_conn

    def append(self, kind: str, actor: str, action: str, subject: str | None = None,
               detail: Mapping[str, Any] | None = None, at: float | None = None) -> int:
        """Record one event; returns its id."""
        cur = self._conn().execute(
            "INSERT INTO audit_events (at, kind, actor, action, subject, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (time.time() if at is None else at, kind, actor, action, subject,
             json.dumps(dict(detail), sort_keys=True, default=str) if detail else None))
        return int(cur.lastrowid or 0)

    def search(self, query: AuditQuery) -> list[dict[str, Any]]:
        """Events matching ``query``, newest first, ``detail`` decoded."""
        where: list[str] = []
        args: list[Any] = []
        text = query.text.strip()
        if text:
            like = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append("(action LIKE ? ESCAPE '\\' OR subject LIKE ? ESCAPE '\\' OR detail LIKE ? ESCAPE '\\'"
                         " OR actor LIKE ? ESCAPE '\\')")
            args += [like] * 4
        if query.kind.strip():
            where.append("kind=?")
            args.append(query.kind.strip())
        if query.since is not None:
            where.append("at>=?")
            args.append(query.since)
        if query.until is not None:
            where.append("at<?")
            args.append(query.until)
        sql = ("SELECT * FROM audit_events" + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY id DESC LIMIT ?")
        args.append(max(1, min(int(query.limit), 100_000)))
        out = []
        for r in self._conn().execute(sql, args).fetchall():
            event = dict(r)
            event["detail"] = json.loads(r["detail"]) if r["detail"] else {}
            out.append(event)
        return out

    def prune(self, older_than: float) -> int:
        """Delete events recorded before ``older_than`` (retention); returns how many."""
        return self._conn().execute("DELETE FROM audit_events WHERE at<?", (older_than,)).rowcount
