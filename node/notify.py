"""Notifications: webhooks told when a job fails for good, a delivery is given up, the spool's disk runs low
or a model fails its warm-up.

:meth:`Notifier.emit` stores one message per subscribed webhook (``notifications`` table, so a message
survives a restart) and wakes the sender thread, which POSTs each as JSON::

    {"event": "job_failed", "subject": "<Study Instance UID or name>", "detail": {...},
     "node": "<AE title>", "at": "<UTC ISO time>", "id": <message id>}

A 2xx answer marks it sent; anything else (an error status, a refused connection, a time-out) is
retried with ``backoff_initial_s * 2^(n-1)`` capped at ``backoff_max_s``, up to ``max_attempts``, then
the message is given up.  Every outcome (sent, retry, given up) goes to the audit trail (kind
``notification``).  Sending never blocks the node's own work.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import sqlite3
import threading
import time
from typing import Any, Callable, Mapping

import requests

from .config import NotificationsSection
from .state import Notifications

__all__ = ["Notifier"]

log = logging.getLogger("cardionode.notify")


class Notifier:
    """Webhook messages for ``settings.webhooks``; ``audit(kind, actor, action, subject, detail)`` records outcomes."""

    def __init__(self, settings: NotificationsSection, get_conn: Callable[[], sqlite3.Connection], ae_title: str,
                 audit: Callable[[str, str, str, str | None, Mapping[str, Any] | None], object] | None = None,
                 session: requests.Session | None = None) -> None:
        self.settings = settings
        self.repo = Notifications(get_conn)
        self.ae_title = ae_title
        self.audit = audit
        self.session = session or requests.Session()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._disk_low = False

    @property
    def enabled(self) -> bool:
        return bool(self.settings.webhooks)

    # ------------------------------------------------------------------ events
    def emit(self, event: str, subject: str | None, detail: Mapping[str, Any]) -> list[int]:
        """Queue ``event`` for every webhook that subscribed to it; returns the message ids."""
        hooks = [name for name, hook in self.settings.webhooks.items() if event in hook.events]
        if not hooks:
            return []
        try:
            ids = self.repo.add(event, hooks, subject, dict(detail), time.time())
        except Exception:  # telling someone must never stop the node's work
            log.exception("notification not stored", extra={"event": event})
            return []
        self._wake.set()
        return ids

    def check_disk(self, has_space: bool, min_free_mb: int, storage_dir: str) -> None:
        """Called periodically: ``disk_low`` once when the spool drops below ``node.min_free_mb``
        (again only after it recovered)."""
        if not has_space and not self._disk_low:
            self.emit("disk_low", storage_dir, {"min_free_mb": min_free_mb,
                                                "effect": "C-STORE and STOW-RS refused (0xA700 / 507)"})
        self._disk_low = not has_space

    # ------------------------------------------------------------------ sending
    def start(self) -> None:
        if not self.enabled:
            return
        self._thread = threading.Thread(target=self._loop, name="notify", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                sent_any = self.send_due()
            except Exception:
                log.exception("notification loop error")
                sent_any = False
            if sent_any:
                continue
            try:
                due = self.repo.next_due_at()
            except Exception:
                due = None
            wait = 5.0 if due is None else min(5.0, max(0.05, due - time.time()))
            self._wake.wait(wait)
            self._wake.clear()

    def send_due(self) -> bool:
        """POST every due message once; True when there were any."""
        rows = self.repo.due(time.time())
        for row in rows:
            if self._stop.is_set():
                break
            self._send(row)
        return bool(rows)

    def _send(self, row: Mapping[str, Any]) -> None:
        hook = self.settings.webhooks.get(row["webhook"])
        attempts = int(row["attempts"]) + 1
        detail = {"webhook": row["webhook"], "event": row["event"], "attempt": attempts, "message": row["id"]}
        if hook is None:
            self.repo.mark_failed(row["id"], attempts, "webhook no longer configured")
            self._record("notification given up", row["subject"], {**detail, "error": "webhook no longer configured"})
            return
        body = {"event": row["event"], "subject": row["subject"], "detail": json.loads(row["payload"]),
                "node": self.ae_title, "id": row["id"],
                "at": dt.datetime.fromtimestamp(row["created_at"], tz=dt.timezone.utc).isoformat()}
        headers = {"Authorization": f"Bearer {hook.token}"} if hook.token else {}
        error: str | None
        try:
            r = self.session.post(hook.url, json=body, headers=headers, timeout=self.settings.timeout_s,
                                  verify=hook.verify_tls)
            error = None if 200 <= r.status_code < 300 else f"HTTP {r.status_code}"
        except requests.RequestException as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
        now = time.time()
        if error is None:
            self.repo.mark_sent(row["id"], attempts, now)
            self._record("notification sent", row["subject"], detail)
        elif attempts >= self.settings.max_attempts:
            self.repo.mark_failed(row["id"], attempts, error)
            log.warning("notification given up", extra={"webhook": row["webhook"], "event": row["event"],
                                                         "error": error})
            self._record("notification given up", row["subject"], {**detail, "error": error})
        else:
            delay = min(self.settings.backoff_initial_s * 2 ** (attempts - 1), self.settings.backoff_max_s)
            self.repo.schedule_retry(row["id"], attempts, now + delay, error)
            self._record("notification retry", row["subject"], {**detail, "error": error, "retry_in_s": delay})

    def _record(self, action: str, subject: str | None, detail: Mapping[str, Any]) -> None:
        if self.audit is None:
            return
        try:
            self.audit("notification", "node", action, subject, detail)
        except Exception:
            log.exception("notification outcome not recorded")
