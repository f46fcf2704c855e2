"""Console accounts repository: ``console_users`` (name, role, argon2 hash) and ``console_sessions``
(sha256 of the session cookie, the session's CSRF token, expiry).  Password hashing, roles and the
cookie are :mod:`node.console.accounts`'."""
from __future__ import annotations

import sqlite3
import time
from typing import Any, Callable

from .connection import transaction

__all__ = ["Users"]


class Users:
    """Reads and writes of the console's users and sessions on this thread's connection."""

    def __init__(self, get_conn: Callable[[], sqlite3.Connection]) -> None:
        self._conn = get_conn

    # ------------------------------------------------------------------ users
    def add(self, username: str, role: str, password_hash: str) -> None:
        """Insert a user; raises ``ValueError`` when the name is taken."""
        now = time.time()
        try:
            self._conn().execute("INSERT INTO console_users (username, role, password_hash, created_at,"
                                 " password_changed_at) VALUES (?, ?, ?, ?, ?)",
                                 (username, role, password_hash, now, now))
        except sqlite3.IntegrityError:
            raise ValueError(f"user {username!r} exists already") from None

    def get(self, username: str) -> dict[str, Any] | None:
        row = self._conn().execute("SELECT * FROM console_users WHERE username=?", (username,)).fetchone()
        return dict(row) if row is not None else None

    def listing(self) -> list[dict[str, Any]]:
        rows = self._conn().execute(
            "SELECT u.username, u.role, u.created_at, u.password_changed_at,"
            " (SELECT COUNT(*) FROM console_sessions s WHERE s.username=u.username AND s.expires_at>?) AS sessions"
            " FROM console_users u ORDER BY u.username", (time.time(),)).fetchall()
        return [dict(r) for r in rows]

    def set_password_hash(self, username: str, password_hash: str) -> bool:
        """New hash and every session of the user ended, atomically (a changed password logs out everywhere)."""
        with transaction(self._conn()) as conn:
            n = conn.execute("UPDATE console_users SET password_hash=?, password_changed_at=? WHERE username=?",
                             (password_hash, time.time(), username)).rowcount
            conn.execute("DELETE FROM console_sessions WHERE username=?", (username,))
        return n == 1

    def set_role(self, username: str, role: str, keep_an_admin: bool = True) -> str | None:
        """None when done, else why not (``"not found"``, or the last admin would be demoted)."""
        with transaction(self._conn()) as conn:
            row = conn.execute("SELECT role FROM console_users WHERE username=?", (username,)).fetchone()
            if row is None:
                return "not found"
            if keep_an_admin and row["role"] == "admin" and role != "admin" and _admins(conn) <= 1:
                return "last admin"
            conn.execute("UPDATE console_users SET role=? WHERE username=?", (role, username))
        return None

    def remove(self, username: str, keep_an_admin: bool = True) -> str | None:
        """None when removed (sessions too), else why not (``"not found"``, ``"last admin"``)."""
        with transaction(self._conn()) as conn:
            row = conn.execute("SELECT role FROM console_users WHERE username=?", (username,)).fetchone()
            if row is None:
                return "not found"
            if keep_an_admin and row["role"] == "admin" and _admins(conn) <= 1:
                return "last admin"
            conn.execute("DELETE FROM console_sessions WHERE username=?", (username,))
            conn.execute("DELETE FROM console_users WHERE username=?", (username,))
        return None

    # ------------------------------------------------------------------ sessions
    def add_session(self, token_sha256: str, username: str, csrf_token: str, expires_at: float) -> None:
        """A new session; expired ones go at the same time."""
        with transaction(self._conn()) as conn:
            conn.execute("DELETE FROM console_sessions WHERE expires_at<=?", (time.time(),))
            conn.execute("INSERT INTO console_sessions (token_sha256, username, csrf_token, created_at, expires_at)"
                         " VALUES (?, ?, ?, ?, ?)", (token_sha256, username, csrf_token, time.time(), expires_at))

    def session(self, token_sha256: str) -> dict[str, Any] | None:
        """The live session with the user's current role, or None (unknown, expired, user removed)."""
        row = self._conn().execute(
            "SELECT s.username, s.csrf_token, s.expires_at, u.role FROM console_sessions s"
            " JOIN console_users u ON u.username = s.username WHERE s.token_sha256=? AND s.expires_at>?",
            (token_sha256, time.time())).fetchone()
        return dict(row) if row is not None else None

    def remove_session(self, token_sha256: str) -> None:
        self._conn().execute("DELETE FROM console_sessions WHERE token_sha256=?", (token_sha256,))


def _admins(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM console_users WHERE role='admin'").fetchone()[0])
