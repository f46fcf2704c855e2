"""Study completion: a study is complete after its quiet period with no new instance.

Every stored instance upserts a row in ``pending_studies`` (``due_at = now +
quiet``) and (re)arms an APScheduler date job for the study.  The row is the
truth; the timer is only a wake-up, so after a restart :meth:`rearm` re-creates
the timers from the table.  Restart rule: a waiting study is due no earlier than
its quiet period after the start, even when its deadline passed while the node
was down -- the sender was most likely still retrying the rest of the study, and
processing it at once would process part of it.

When the timer fires, one transaction marks the study ``processed`` (or
``unmatched``) and enqueues one job per matching route for this
*generation*; the ``UNIQUE(study, generation, route)`` key on jobs and the
state check make this exactly-once even across crashes.

Late arrivals (an instance for a study already processed): with
``node.late_arrivals: reprocess`` the study waits again and, after a new quiet
period, is processed again as generation n+1 with all its instances; with
``ignore`` the instance is kept in the spool and counted, nothing is re-run.
A re-sent copy of an instance already stored (``replaced``) never triggers
reprocessing.  Unmatched studies are always re-evaluated when more instances
arrive (a later series may match a route).
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import sqlite3
import time
from typing import Any, Callable, Iterable

from pipelines.base import StudyView

from .routing import InstanceFacts, Router, facts_from_study
from .state import Studies, enqueue_job, transaction

__all__ = ["CompletionTracker"]

log = logging.getLogger("cardionode.completion")

def _attr(obj: Any, *names: str, default: Any = None) -> Any:
    for name in names:
        value = getattr(obj, name, None)
        if value is not None:
            return value
    return default


class CompletionTracker:
    """Arms quiet-period timers per study and turns complete studies into jobs.

    ``get_conn`` returns this thread's DB connection; ``load_study(uid)``
    builds the study view from the spool index; ``scheduler`` is a started or
    not-yet-started APScheduler ``BackgroundScheduler``; ``on_enqueued`` is
    called after jobs were committed (wakes the job workers).
    """

    def __init__(
        self,
        get_conn: Callable[[], sqlite3.Connection],
        router: Router,
        load_study: Callable[[str], StudyView],
        scheduler: Any,
        late_arrivals: str = "reprocess",
        on_enqueued: Callable[[], None] | None = None,
        calling_aes_for: Callable[[str], dict[str, str]] | None = None,
    ) -> None:
        self._get_conn = get_conn
        self._studies = Studies(get_conn)
        self.router = router
        self.load_study = load_study
        self.scheduler = scheduler
        self.late_arrivals = late_arrivals
        self.on_enqueued = on_enqueued
        self.calling_aes_for = calling_aes_for

    # ------------------------------------------------------------------ arrivals
    def on_stored(self, instance: Any) -> None:
        """Spool hook: an instance was durably stored and indexed."""
        study_uid = str(_attr(instance, "study_instance_uid", "study_uid"))
        facts = InstanceFacts(
            modality=_attr(instance, "modality"),
            sop_class_uid=_attr(instance, "sop_class_uid"),
            series_description=_attr(instance, "series_description"),
            calling_ae=_attr(instance, "calling_ae"),
        )
        replaced = bool(_attr(instance, "replaced", default=False))
        received = _attr(instance, "received_at")
        now = time.time()
        if isinstance(received, dt.datetime):
            received = received.timestamp()
        self.arrived(study_uid, self.router.quiet_seconds(facts), replaced=replaced, now=now,
                     received_at=float(received) if isinstance(received, (int, float)) else now)

    def arrived(self, study_uid: str, quiet: float, replaced: bool = False, now: float | None = None,
                received_at: float | None = None) -> float | None:
        """Record one arrival; returns the due time armed, or None when nothing is armed."""
        now = time.time() if now is None else now
        received_at = now if received_at is None else received_at
        due: float | None
        with transaction(self._get_conn()):
            row = self._studies.get(study_uid)
            if row is None:
                due = now + quiet
                self._studies.insert_waiting(study_uid, received_at, due, quiet)
            elif row["state"] == "waiting":
                quiet = max(quiet, row["quiet_seconds"])
                due = max(row["due_at"] or 0.0, now + quiet)
                self._studies.extend_wait(study_uid, max(received_at, row["last_received_at"]), due, quiet)
            elif row["state"] == "unmatched" or (
                row["state"] == "processed" and self.late_arrivals == "reprocess" and not replaced
            ):
                due = now + quiet
                self._studies.reopen(study_uid, received_at, due, quiet)
                log.info("late arrival: study will be processed again",
                         extra={"study": study_uid, "generation": row["generation"] + 1})
            else:
                due = None
                self._studies.count_late(study_uid, received_at)
                log.info("late arrival kept, not reprocessed",
                         extra={"study": study_uid, "policy": self.late_arrivals, "replaced": replaced})
        if due is not None:
            self._arm(study_uid, due)
        return due

    def _arm(self, study_uid: str, due: float) -> None:
        run_at = dt.datetime.fromtimestamp(max(due, time.time()), tz=dt.timezone.utc)
        self.scheduler.add_job(
            self.fire,
            trigger="date",
            run_date=run_at,
            args=[study_uid],
            id=f"complete:{study_uid}",
            replace_existing=True,
            misfire_grace_time=None,
            coalesce=True,
        )

    def rearm(self, now: float | None = None) -> int:
        """After a start: re-create the timers of every waiting study, each due no earlier than its
        quiet period after ``now`` (a deadline that passed while the node was down gets a fresh quiet
        period; the new due time is stored)."""
        now = time.time() if now is None else now
        with transaction(self._get_conn()):
            rows = self._studies.waiting()
            due = {row["study_uid"]: max(row["due_at"] or 0.0, now + row["quiet_seconds"]) for row in rows}
            self._studies.set_due(due.items())
        overdue = sum(1 for row in rows if (row["due_at"] or 0.0) < now)
        if overdue:
            log.info("studies overdue at start get a fresh quiet period", extra={"count": overdue})
        for uid, t in due.items():
            self._arm(uid, t)
        return len(rows)

    def reconcile(self, studies: Iterable[tuple[str, float]]) -> int:
        """Arm studies the index holds but completion never saw (crash between index commit and hook).

        ``studies`` yields (study uid, last received time) from the spool index.
        Returns the number of studies armed.
        """
        armed = 0
        for uid, last_received in studies:
            row = self._studies.get(uid)
            if row is None or (row["state"] != "waiting" and last_received > row["last_received_at"] + 1e-3):
                self.arrived(uid, self.router.quiet_seconds(InstanceFacts()), received_at=last_received)
                armed += 1
        return armed

    # ------------------------------------------------------------------ completion
    def fire(self, study_uid: str) -> list[int]:
        """Timer callback: if the study is still quiet, route it and enqueue its jobs (exactly once)."""
        try:
            return self._fire(study_uid)
        except Exception:
            log.exception("study completion failed; retrying in 10 s", extra={"study": study_uid})
            self._arm(study_uid, time.time() + 10.0)
            return []

    def _fire(self, study_uid: str) -> list[int]:
        row = self._studies.get(study_uid)
        if row is None or row["state"] != "waiting":
            return []
        if row["due_at"] > time.time() + 0.01:
            self._arm(study_uid, row["due_at"])  # an instance arrived after this timer was set
            return []
        view = self.load_study(study_uid)
        calling = self.calling_aes_for(study_uid) if self.calling_aes_for else None
        decisions = self.router.decide(facts_from_study(view, calling))
        job_ids: list[int] = []
        now = time.time()
        with transaction(self._get_conn()) as conn:
            row = self._studies.get(study_uid)
            routed = row is not None and row["state"] == "waiting" and row["due_at"] <= now + 0.01
            if routed:
                self._studies.mark_routed(study_uid, "processed" if decisions else "unmatched", now,
                                          [d.name for d in decisions])
                for d in decisions:
                    job_id = enqueue_job(conn, study_uid, row["generation"], d.name, d.pipeline, d.destinations, now)
                    if job_id is not None:
                        job_ids.append(job_id)
        if not routed:  # another thread routed it, or an instance arrived after the check above
            if row is not None and row["state"] == "waiting":
                self._arm(study_uid, row["due_at"])
            return []
        instances = sum(len(s.instances) for s in view.series)
        if decisions:
            log.info("study complete; jobs queued",
                     extra={"study": study_uid, "generation": row["generation"], "instances": instances,
                            "routes": ",".join(d.name for d in decisions), "jobs": len(job_ids)})
        else:
            log.info("study complete; no route matched (kept per retention)",
                     extra={"study": study_uid, "instances": instances})
        if job_ids and self.on_enqueued is not None:
            self.on_enqueued()
        return job_ids
