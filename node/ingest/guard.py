"""Who may hold a DIMSE connection before its association is negotiated, and for how long.

A TCP connection costs the listener two threads and a socket until its A-ASSOCIATE-RQ has arrived.
:class:`ConnectionGuard` decides at ``accept()`` time, before anything is read:

* an address that no ``node.allowed_callers`` entry can match (every entry is ``AE@host`` and none
  names this address) is closed at once;
* at most ``node.max_pending_per_host`` connections from one address, and ``node.max_pending`` from
  all addresses together, may be negotiating at the same time; more are closed at once.

Each admitted connection holds a :class:`Ticket` until its A-ASSOCIATE-RQ is complete or the
connection ends (``release()`` is idempotent); its ``deadline`` (accept time +
``node.association_timeout_s``) bounds the TLS handshake and the A-ASSOCIATE-RQ together.
Negotiated associations count against ``node.max_associations`` instead (pynetdicom's check).
"""
from __future__ import annotations

import logging
import threading
import time

from ..logging_setup import clean
from .policy import CallerPolicy

__all__ = ["ConnectionGuard", "Ticket"]

log = logging.getLogger("cardionode.ingest")

_LOG_EVERY_S = 10.0  # refusals of one address are logged at most this often (with the count in between)


class Ticket:
    """One admitted connection that has not finished association set-up."""

    def __init__(self, guard: "ConnectionGuard", address: str, deadline: float) -> None:
        self.address = address
        self.deadline = deadline  # time.monotonic() by which the A-ASSOCIATE-RQ must be complete
        self._guard = guard
        self._released = False

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def release(self) -> None:
        """The A-ASSOCIATE-RQ arrived or the connection ended: it no longer counts as pending."""
        with self._guard._lock:
            if self._released:
                return
            self._released = True
            self._guard._release_locked(self.address)


class ConnectionGuard:
    """Accept-time admission of DIMSE connections (see the module docstring); thread-safe."""

    def __init__(self, policy: CallerPolicy, max_pending_per_host: int, max_pending: int,
                 association_timeout_s: float) -> None:
        self.policy = policy
        self.max_pending_per_host = max_pending_per_host
        self.max_pending = max_pending
        self.association_timeout_s = association_timeout_s
        self._lock = threading.Lock()
        self._pending: dict[str, int] = {}
        self._total = 0
        self._refusals: dict[str, tuple[float, int]] = {}  # address -> (last logged, refused since)

    def admit(self, address: str) -> Ticket | None:
        """A ticket for a connection from ``address``, or None when it must be closed now (logged)."""
        if not self.policy.address_allowed(address):
            self._refused(address, "address matches no node.allowed_callers entry")
            return None
        with self._lock:
            from_host = self._pending.get(address, 0)
            if from_host >= self.max_pending_per_host:
                reason = (f"{from_host} connections from this address are still negotiating "
                          f"(node.max_pending_per_host)")
            elif self._total >= self.max_pending:
                reason = f"{self._total} connections are still negotiating (node.max_pending)"
            else:
                self._pending[address] = from_host + 1
                self._total += 1
                return Ticket(self, address, time.monotonic() + self.association_timeout_s)
        self._refused(address, reason)
        return None

    def pending(self, address: str | None = None) -> int:
        """Connections still negotiating, from ``address`` or from all addresses."""
        with self._lock:
            return self._total if address is None else self._pending.get(address, 0)

    def _release_locked(self, address: str) -> None:
        n = self._pending.get(address, 0) - 1
        if n > 0:
            self._pending[address] = n
        else:
            self._pending.pop(address, None)
        self._total -= 1

    def _refused(self, address: str, reason: str) -> None:
        now = time.monotonic()
        with self._lock:
            last, count = self._refusals.get(address, (0.0, 0))
            if now - last < _LOG_EVERY_S:
                self._refusals[address] = (last, count + 1)
                return
            self._refusals[address] = (now, 0)
            if len(self._refusals) > 4096:  # forget quiet addresses
                self._refusals = {a: v for a, v in self._refusals.items() if now - v[0] < _LOG_EVERY_S}
        log.warning("DIMSE connection refused at accept", extra={
            "address": clean(address), "reason": reason, "refused_since_last_line": count})
