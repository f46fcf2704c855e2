"""Persistent delivery queue and per-destination dispatch threads.

Table ``deliveries`` holds one row per (destination, result SOP instance);
``UNIQUE(destination, sop_instance_uid)`` makes creating deliveries
idempotent.  A row goes ``pending`` -> ``sent`` only after the peer's success
status, or -> ``failed`` after ``dispatch.max_attempts``.  Retry times
(``next_attempt_at``) live in the table, so backoff survives restarts.

Delivery semantics: exactly once per destination and SOP instance in normal
operation and across clean restarts.  If the node is killed after a peer
acknowledged an instance but before the ``sent`` commit, that instance is
sent again after restart (at-least-once at the crash point); PACS store by
SOP Instance UID, so the repeat replaces the identical object.

Each destination has its own thread, so a destination that is down only
delays its own queue.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from ..config import DispatchSection
from ..jobs import backoff_delay
from ..state import Deliveries, transaction
from .base import SendOutcome, Sender, SenderError
from .senders import Destination, build_sender

__all__ = ["Dispatcher", "DestinationWorker"]

log = logging.getLogger("cardionode.dispatch")

BATCH_SIZE = 50


def _backoff(attempts: int, settings: DispatchSection) -> float:
    return backoff_delay(attempts, settings.backoff_initial_s, settings.backoff_max_s)


class DestinationWorker:
    """Sends the due deliveries of one destination, batch by batch, in its own thread."""

    def __init__(
        self,
        name: str,
        sender: Sender,
        get_conn: Callable[[], sqlite3.Connection],
        settings: DispatchSection,
        on_sent: Callable[[list[str]], None] | None = None,
        paused: Callable[[str], bool] | None = None,
        on_recorded: Callable[[str, list[dict[str, Any]]], None] | None = None,
    ) -> None:
        self.name = name
        self.sender = sender
        self._get_conn = get_conn
        self._deliveries = Deliveries(get_conn)
        self.settings = settings
        self.on_sent = on_sent
        self.paused = paused  # paused(name) -> True: send nothing (operator paused it in the console)
        self.on_recorded = on_recorded  # (destination, [{id, sop, state: sent|retry|failed, error}]): audit
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"dispatch-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # ------------------------------------------------------------------ loop
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                worked = self.run_once()
            except Exception:
                log.exception("dispatch loop error", extra={"destination": self.name})
                worked = False
            if worked:
                continue
            try:
                wait = self._next_due_in()
            except sqlite3.Error:
                wait = 1.0
            self._wake.wait(min(5.0, max(0.05, wait)))
            self._wake.clear()

    def _next_due_in(self) -> float:
        if self.paused is not None and self.paused(self.name):
            return 5.0  # resuming wakes the worker
        due = self._deliveries.next_due_at(self.name)
        return 5.0 if due is None else due - time.time()

    def run_once(self) -> bool:
        """Send one batch of due deliveries; returns True if there was anything to send."""
        if self.paused is not None and self.paused(self.name):
            return False
        rows = self._deliveries.due(self.name, time.time(), BATCH_SIZE)
        if not rows:
            return False
        present = [r for r in rows if Path(r["path"]).is_file()]
        missing = [r for r in rows if not Path(r["path"]).is_file()]
        if missing:
            with transaction(self._get_conn()):
                for r in missing:
                    self._deliveries.mark_failed(r["id"], None, f"result file missing: {r['path']}")
            log.error("result files missing; deliveries failed",
                      extra={"destination": self.name, "count": len(missing)})
        if not present:
            return True
        paths = [Path(r["path"]) for r in present]
        committed = 0

        def on_outcome(outcome: SendOutcome) -> None:
            # Commit each answer at once: a crash now can re-send only the instance in flight.
            nonlocal committed
            if committed < len(present):
                self._record_outcomes([present[committed]], [outcome])
                committed += 1

        try:
            outcomes = self.sender.send(paths, on_outcome=on_outcome)
        except SenderError as exc:
            self._record_batch_error(present[committed:], str(exc))
            return False  # wait for the earliest retry time rather than spinning
        except Exception as exc:
            self._record_batch_error(present[committed:], f"sender error: {exc!r}")
            log.exception("sender raised", extra={"destination": self.name})
            return False
        if len(outcomes) != len(present):
            self._record_batch_error(present[committed:],
                                     f"sender returned {len(outcomes)} outcomes for {len(present)} files")
            return False
        if committed < len(present):
            self._record_outcomes(present[committed:], outcomes[committed:])
        return True

    def _record_batch_error(self, rows: list[sqlite3.Row], error: str) -> None:
        if not rows:
            return
        self._record_outcomes(rows, [SendOutcome(Path(r["path"]), ok=False, error=error) for r in rows])

    def _record_outcomes(self, rows: list[sqlite3.Row], outcomes: list[SendOutcome]) -> None:
        now = time.time()
        sent: list[str] = []
        errors: list[str] = []
        records: list[dict[str, Any]] = []
        failed = 0
        with transaction(self._get_conn()):
            for row, out in zip(rows, outcomes):
                attempts = row["attempts"] + 1
                if out.ok:
                    self._deliveries.mark_sent(row["id"], attempts, now)
                    sent.append(row["sop_instance_uid"])
                    records.append({"id": row["id"], "sop": row["sop_instance_uid"], "state": "sent", "error": None})
                    continue
                errors.append(out.error or "failed")
                final = out.permanent or attempts >= self.settings.max_attempts
                records.append({"id": row["id"], "sop": row["sop_instance_uid"],
                                "state": "failed" if final else "retry", "error": out.error})
                if final:
                    failed += 1
                    self._deliveries.mark_failed(row["id"], attempts, out.error)
                else:
                    self._deliveries.schedule_retry(row["id"], attempts, now + _backoff(attempts, self.settings),
                                                    out.error)
            self._deliveries.note_attempt(self.name, now, bool(sent), errors[0] if errors else None)
        extra = {"destination": self.name, "sent": len(sent), "retry": len(errors) - failed, "failed": failed}
        if errors:
            extra["error"] = errors[0]
            log.warning("dispatch failures", extra=extra)
        else:
            log.info("dispatched", extra={**extra, "sop": sent[0] if len(sent) == 1 else f"{len(sent)} instances"})
        if sent and self.on_sent is not None:
            self.on_sent(sent)
        if records and self.on_recorded is not None:
            try:
                self.on_recorded(self.name, records)
            except Exception:
                log.exception("on_recorded hook failed", extra={"destination": self.name})


class Dispatcher:
    """One :class:`DestinationWorker` per configured destination."""

    def __init__(
        self,
        get_conn: Callable[[], sqlite3.Connection],
        destinations: Mapping[str, Destination],
        settings: DispatchSection,
        calling_ae: str,
        sender_factory: Callable[[str, Destination, str, float], Sender] = build_sender,
        on_sent: Callable[[list[str]], None] | None = None,
        paused: Callable[[str], bool] | None = None,
        on_recorded: Callable[[str, list[dict[str, Any]]], None] | None = None,
    ) -> None:
        self.workers: dict[str, DestinationWorker] = {}
        for name, dest in destinations.items():
            try:
                sender = sender_factory(name, dest, calling_ae, settings.timeout_s)
            except SenderError as exc:
                log.error("destination disabled: %s", exc, extra={"destination": name})
                continue
            self.workers[name] = DestinationWorker(name, sender, get_conn, settings, on_sent, paused,
                                                   on_recorded)

    def start(self) -> None:
        for worker in self.workers.values():
            worker.start()

    def wake(self) -> None:
        for worker in self.workers.values():
            worker.wake()

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop after the batch in flight (its C-STOREs finish); True if all threads ended in time."""
        for worker in self.workers.values():
            worker.stop()
        deadline = time.monotonic() + timeout
        return all(w.join(max(0.0, deadline - time.monotonic())) for w in self.workers.values())
