"""The console's view of the node database: the repositories of :mod:`node.state` it reads and writes
(users and sessions, the audit trail, jobs, deliveries, studies, the spool index), behind the few
methods the pages, actions and the audit recorder call.  No SQL here: it lives in ``node/state``."""
from __future__ import annotations

import sqlite3
import time
from typing import Any, Callable, Iterable, Mapping

from ..state import AuditEvents, AuditQuery, Deliveries, InstanceIndex, Jobs, Notifications, Studies, Users

__all__ = ["ROLES", "ConsoleStore", "AuditQuery"]

#: Roles from least to most privileged; each role may do everything the roles before it may.
ROLES = ("read-only", "operator", "admin")


class ConsoleStore:
    """``get_conn`` gives this thread's connection to the node database (:class:`node.state.Connections`)."""

    def __init__(self, get_conn: Callable[[], sqlite3.Connection]) -> None:
        self._get_conn = get_conn
        self.users = Users(get_conn)
        self.events = AuditEvents(get_conn)
        self.jobs = Jobs(get_conn)
        self.deliveries_repo = Deliveries(get_conn)
        self.studies = Studies(get_conn)
        self.notifications = Notifications(get_conn)

    # ------------------------------------------------------------------ users and sessions
    def add_user(self, username: str, role: str, password_hash: str) -> None:
        self.users.add(username, role, password_hash)

    def user(self, username: str) -> dict[str, Any] | None:
        return self.users.get(username)

    def list_users(self) -> list[dict[str, Any]]:
        return self.users.listing()

    def set_password_hash(self, username: str, password_hash: str) -> bool:
        return self.users.set_password_hash(username, password_hash)

    def set_role(self, username: str, role: str) -> str | None:
        return self.users.set_role(username, role)

    def remove_user(self, username: str) -> str | None:
        return self.users.remove(username)

    def add_session(self, token_sha256: str, username: str, csrf_token: str, expires_at: float) -> None:
        self.users.add_session(token_sha256, username, csrf_token, expires_at)

    def session(self, token_sha256: str) -> dict[str, Any] | None:
        return self.users.session(token_sha256)

    def remove_session(self, token_sha256: str) -> None:
        self.users.remove_session(token_sha256)

    # ------------------------------------------------------------------ audit
    def audit(self, kind: str, actor: str, action: str, subject: str | None = None,
              detail: Mapping[str, Any] | None = None, at: float | None = None) -> int:
        return self.events.append(kind, actor, action, subject, detail, at)

    def search_audit(self, query: AuditQuery) -> list[dict[str, Any]]:
        return self.events.search(query)

    def prune_audit(self, older_than: float) -> int:
        return self.events.prune(older_than)

    # ------------------------------------------------------------------ what the pages show
    def study_counts(self, study_uid: str) -> dict[str, Any]:
        series = InstanceIndex(self._get_conn()).series_summary(study_uid)
        return {"series": series, "instances": sum(s["instances"] for s in series)}

    def results(self, job_ids: Iterable[int]) -> list[dict[str, Any]]:
        return self.jobs.results_of(job_ids)

    def deliveries(self, job_ids: Iterable[int]) -> list[dict[str, Any]]:
        return self.deliveries_repo.of_jobs(job_ids)

    def failed_deliveries(self, limit: int = 200) -> list[dict[str, Any]]:
        return self.deliveries_repo.failed_listing(limit)

    def recent_notifications(self, limit: int = 50) -> list[dict[str, Any]]:
        return self.notifications.recent(limit)

    def job(self, job_id: int) -> dict[str, Any] | None:
        row = self.jobs.get(job_id)
        return dict(row) if row is not None else None

    def delivery(self, delivery_id: int) -> dict[str, Any] | None:
        return self.deliveries_repo.get_with_study(delivery_id)

    def studies_of_deliveries(self, delivery_ids: Iterable[int]) -> dict[int, str]:
        return self.deliveries_repo.studies_of(delivery_ids)

    # ------------------------------------------------------------------ operator actions
    def retry_job(self, job_id: int) -> str | None:
        """Without a running node's hook (tests, a console over a stopped node): failed -> queued."""
        return self.jobs.retry_failed(job_id, time.time())

    def retry_delivery(self, delivery_id: int) -> str | None:
        return self.deliveries_repo.retry_failed(delivery_id, time.time())

    def abort_job(self, job_id: int, reason: str) -> str | None:
        return self.jobs.abort_queued(job_id, time.time(), reason)

    def make_due_now(self, study_uid: str) -> str | None:
        return self.studies.make_due_now(study_uid, time.time())

    def reopen_study(self, study_uid: str) -> tuple[str | None, int]:
        return self.studies.reopen_now(study_uid, time.time())

    def pause_destination(self, name: str, by: str) -> bool:
        return self.deliveries_repo.pause(name, by, time.time())

    def resume_destination(self, name: str) -> bool:
        return self.deliveries_repo.resume(name)

    def is_paused(self, name: str) -> bool:
        """The dispatch worker's check, once per batch and idle wait."""
        return self.deliveries_repo.is_paused(name)

    def paused_destinations(self) -> dict[str, dict[str, Any]]:
        return self.deliveries_repo.paused()
