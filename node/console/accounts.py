"""Console accounts: argon2id password hashes, roles, login sessions with a CSRF token each.

A session is a 32-byte random token in an HttpOnly, SameSite=Strict cookie (Secure under TLS); the
database keeps only its sha256, its CSRF token and its expiry.  Every state-changing form carries the
session's CSRF token, compared in constant time.  Roles are ordered (:data:`~node.console.store.ROLES`):
``read-only`` sees every page, ``operator`` also acts on jobs, studies and destinations, ``admin``
also manages users and reloads models.
"""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
import secrets
import time
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from .store import ROLES, ConsoleStore

__all__ = ["AccountError", "Accounts", "Session", "ROLES", "MIN_PASSWORD_LENGTH", "role_allows"]

MIN_PASSWORD_LENGTH = 10
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class AccountError(ValueError):
    """A user name, role or password the console refuses; the message says why."""


def role_allows(role: str, needed: str) -> bool:
    """True when ``role`` is ``needed`` or above it."""
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


@dataclasses.dataclass(frozen=True)
class Session:
    """A logged-in user as a request sees it."""

    username: str
    role: str
    csrf_token: str
    expires_at: float

    def may(self, needed: str) -> bool:
        return role_allows(self.role, needed)


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Accounts:
    """Users and sessions over a :class:`ConsoleStore`; ``session_hours`` bounds a session's life."""

    def __init__(self, store: ConsoleStore, session_hours: float = 8.0, hasher: PasswordHasher | None = None) -> None:
        self.store = store
        self.session_s = session_hours * 3600.0
        self.hasher = hasher or PasswordHasher()  # argon2id, RFC 9106 low-memory profile
        self._dummy: str | None = None

    @property
    def _dummy_hash(self) -> str:
        """Verified against when the user does not exist, so a login takes as long either way."""
        if self._dummy is None:
            self._dummy = self.hasher.hash(secrets.token_urlsafe(16))
        return self._dummy

    # ------------------------------------------------------------------ users
    @staticmethod
    def check_username(username: str) -> str:
        if not _USERNAME.match(username or ""):
            raise AccountError(f"user name {username!r}: 1-64 characters, letters, digits and . _ @ - "
                               "(starting with a letter or digit)")
        return username

    @staticmethod
    def check_role(role: str) -> str:
        if role not in ROLES:
            raise AccountError(f"role {role!r}: one of {', '.join(ROLES)}")
        return role

    @staticmethod
    def check_password(password: str) -> str:
        if len(password) < MIN_PASSWORD_LENGTH:
            raise AccountError(f"password too short: at least {MIN_PASSWORD_LENGTH} characters")
        if password != password.strip() or "\n" in password:
            raise AccountError("password must not start or end with blanks or contain a line break")
        return password

    def add(self, username: str, role: str, password: str) -> None:
        self.check_username(username)
        self.check_role(role)
        self.check_password(password)
        try:
            self.store.add_user(username, role, self.hasher.hash(password))
        except ValueError as exc:
            raise AccountError(str(exc)) from None

    def set_password(self, username: str, password: str) -> None:
        self.check_password(password)
        if not self.store.set_password_hash(username, self.hasher.hash(password)):
            raise AccountError(f"no user {username!r}")

    def set_role(self, username: str, role: str) -> None:
        self.check_role(role)
        self._refused(username, self.store.set_role(username, role))

    def remove(self, username: str) -> None:
        self._refused(username, self.store.remove_user(username))

    @staticmethod
    def _refused(username: str, why: str | None) -> None:
        if why == "not found":
            raise AccountError(f"no user {username!r}")
        if why == "last admin":
            raise AccountError(f"{username!r} is the last admin; make another admin first")

    def list(self) -> list[dict[str, Any]]:
        return self.store.list_users()

    # ------------------------------------------------------------------ login
    def verify(self, username: str, password: str) -> str | None:
        """The user's role when the password is right, else None (same work either way)."""
        user = self.store.user(username) if _USERNAME.match(username or "") else None
        try:
            self.hasher.verify(user["password_hash"] if user else self._dummy_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if user is None:
            return None
        if self.hasher.check_needs_rehash(user["password_hash"]):
            self.store.set_password_hash(username, self.hasher.hash(password))
        return str(user["role"])

    def open_session(self, username: str) -> tuple[str, Session]:
        """A new session: (cookie value, session)."""
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        expires = time.time() + self.session_s
        self.store.add_session(_sha256(token), username, csrf, expires)
        user = self.store.user(username)
        return token, Session(username, str(user["role"]) if user else "read-only", csrf, expires)

    def session(self, token: str | None) -> Session | None:
        if not token:
            return None
        row = self.store.session(_sha256(token))
        if row is None:
            return None
        return Session(row["username"], row["role"], row["csrf_token"], row["expires_at"])

    def close_session(self, token: str | None) -> None:
        if token:
            self.store.remove_session(_sha256(token))

    @staticmethod
    def csrf_ok(session: Session, submitted: str | None) -> bool:
        return bool(submitted) and hmac.compare_digest(session.csrf_token.encode(), str(submitted).encode())
