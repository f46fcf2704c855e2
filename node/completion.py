"""Study completion: a study is complete when its routes have the series they need, or after its
quiet period with no new instance.

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

Study-aware completion (routes with ``requires``): each arrival also arms a
check ``node.settle_seconds`` later (pushed out by the next arrival, so it runs
once per burst).  The check judges every series from its headers
(:mod:`node.completeness`); when every route the study matches declares
``requires`` and all of them are met by complete series, and no series of the
study is known to be incomplete, the study completes at once, in the same
transaction as after a quiet period.  Otherwise the quiet period applies; when
it ends and a route still lacks a series, the route's ``incomplete`` policy
decides: ``proceed`` (run on what is there), ``wait`` (keep waiting, at most
until ``max_wait_seconds`` after the study's first instance, then proceed) or
``give_up`` (wait the same, then run nothing for the route and record the
missing series in ``pending_studies.incomplete``).  ``max_wait_seconds`` also
caps the quiet period of a study that never stops receiving.  Only a study
that never had jobs completes early; late arrivals follow the rules below.
Nothing new is persisted for the early check: it is re-armed by :meth:`rearm`
after a restart and re-reads the index, so kill -9 at any point leaves either
the ``waiting`` row (decided again after the restart) or the committed decision.

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
from typing import Callable, Iterable

from apscheduler.schedulers.base import BaseScheduler

from pipelines.base import StudyView

from .completeness import HeaderFacts, route_readiness, series_states
from .routing import InstanceFacts, RouteDecision, Router, facts_from_study
from .spool import StoredInstance
from .state import Studies, enqueue_job, transaction

__all__ = ["CompletionTracker"]

log = logging.getLogger("cardionode.completion")


def _never_queued(row: sqlite3.Row | None) -> bool:
    """True when no job was ever queued for the study (new, unmatched, or every route given up):
    only such a study completes early or is capped by ``max_wait_seconds``; late arrivals are not."""
    return row is None or not row["routes"] or row["routes"] == "[]"



class CompletionTracker:
    """Arms quiet-period timers per study and turns complete studies into jobs.

    ``get_conn`` returns this thread's DB connection; ``load_study(uid)``
    builds the study view from the spool index; ``scheduler`` is a started or
    not-yet-started APScheduler ``BackgroundScheduler``; ``on_enqueued`` is
    called after jobs were committed (wakes the job workers);
    ``load_headers(uid)`` gives the indexed header values of the study's
    instances (study-aware completion; without it only the quiet period applies).
    """

    def __init__(
        self,
        get_conn: Callable[[], sqlite3.Connection],
        router: Router,
        load_study: Callable[[str], StudyView],
        scheduler: BaseScheduler,
        late_arrivals: str = "reprocess",
        on_enqueued: Callable[[], None] | None = None,
        load_headers: Callable[[str], list[HeaderFacts]] | None = None,
        settle_seconds: float = 0.5,
        on_routed: Callable[[str, int, list[RouteDecision], list[int], int], None] | None = None,
    ) -> None:
        self._get_conn = get_conn
        self._studies = Studies(get_conn)
        self.router = router
        self.load_study = load_study
        self.scheduler = scheduler
        self.late_arrivals = late_arrivals
        self.on_enqueued = on_enqueued
        self.on_routed = on_routed  # (study, generation, decisions, job ids, instances): the audit trail
        self.load_headers = load_headers
        self.settle_seconds = settle_seconds

    @property
    def study_aware(self) -> bool:
        return self.load_headers is not None and self.router.study_aware

    # ------------------------------------------------------------------ arrivals
    def on_stored(self, instance: StoredInstance) -> None:
        """Spool hook: an instance was durably stored and indexed."""
        facts = InstanceFacts(
            modality=instance.modality,
            sop_class_uid=instance.sop_class_uid,
            series_description=instance.series_description,
            calling_ae=instance.calling_ae,
        )
        self.arrived(instance.study_instance_uid, self.router.quiet_seconds(facts), replaced=instance.replaced,
                     received_at=instance.received_at, max_wait=self.router.max_wait_seconds(facts))

    def arrived(self, study_uid: str, quiet: float, replaced: bool = False, now: float | None = None,
                received_at: float | None = None, max_wait: float | None = None) -> float | None:
        """Record one arrival; returns the due time armed, or None when nothing is armed.

        ``max_wait``: a study that never had jobs is due at the latest this long after its first
        instance, however often instances keep arriving."""
        now = time.time() if now is None else now
        received_at = now if received_at is None else received_at
        due: float | None
        with transaction(self._get_conn()):
            row = self._studies.get(study_uid)
            if row is None:
                due = now + quiet if max_wait is None else min(now + quiet, received_at + max_wait)
                self._studies.insert_waiting(study_uid, received_at, due, quiet)
            elif row["state"] == "waiting":
                quiet = max(quiet, row["quiet_seconds"])
                due = max(row["due_at"] or 0.0, now + quiet)
                if max_wait is not None and _never_queued(row) and row["generation"] == 1:
                    due = min(due, row["first_received_at"] + max_wait)  # counted from the study's first instance
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
            self._arm(study_uid, due, check=True, keep_earlier=True)
        return due

    def _arm(self, study_uid: str, due: float, check: bool = False, keep_earlier: bool = False) -> None:
        """Wake :meth:`fire` at ``due``; with ``check`` (study-aware routes) already
        ``settle_seconds`` from now, to see whether the study is complete.

        ``keep_earlier`` (arrivals): a timer already set for this study at or before that time is
        kept, not replaced; when it fires early, :meth:`fire` reads the study's stored due time and
        sets the timer again.  So a study arriving at hundreds of instances a second moves its timer
        about once per quiet or settle period instead of once per instance (each replacement wakes
        the scheduler's thread)."""
        if check and self.study_aware:
            due = min(due, time.time() + self.settle_seconds)
        run_at = dt.datetime.fromtimestamp(max(due, time.time()), tz=dt.timezone.utc)
        if keep_earlier:
            armed = self.scheduler.get_job(f"complete:{study_uid}")
            if armed is not None and armed.next_run_time is not None and armed.next_run_time <= run_at:
                return
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
            self._arm(uid, t, check=True)  # a study its headers say is complete need not wait
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
        now = time.time()
        early = row["due_at"] > now + 0.01
        aware = self.study_aware and _never_queued(row)
        if early and not aware:
            self._arm(study_uid, row["due_at"])  # an instance arrived after this timer was set
            return []
        if early and now < row["last_received_at"] + self.settle_seconds - 0.05:  # still receiving
            self._arm(study_uid, min(row["due_at"], row["last_received_at"] + self.settle_seconds))
            return []
        view = self.load_study(study_uid)
        decisions = self.router.decide(facts_from_study(view, self.router.keywords))
        readiness = {}
        any_incomplete = False
        if aware and any(self.router.route(d.index).requires for d in decisions):
            assert self.load_headers is not None
            series = series_states(self.load_headers(study_uid))
            any_incomplete = any(s.status == "incomplete" for s in series)
            readiness = {d.name: route_readiness(self.router.route(d.index).requires, series)
                         for d in decisions if self.router.route(d.index).requires}
        gave_up: dict[str, list[str]] = {}
        if early:
            if not (decisions and all(d.name in readiness and readiness[d.name].ready for d in decisions)
                    and not any_incomplete):
                self._after_check(study_uid, row["received"])
                return []
            reason = "series complete"
        else:
            lacking = [d for d in decisions if d.name in readiness and not readiness[d.name].present]
            waits = [row["first_received_at"] + route.max_wait_seconds for route in
                     (self.router.route(d.index) for d in lacking)
                     if route.incomplete != "proceed" and route.max_wait_seconds is not None
                     and now < row["first_received_at"] + route.max_wait_seconds - 0.01]
            if waits:  # a route waits for its series (incomplete: wait / give_up) until its max wait
                self._defer(study_uid, row["received"], min(waits))
                return []
            for d in lacking:
                if self.router.route(d.index).incomplete == "give_up":
                    gave_up[d.name] = list(readiness[d.name].missing)
            decisions = [d for d in decisions if d.name not in gave_up]
            reason = "series missing" if lacking else "quiet period"
        job_ids: list[int] = []
        seen = row["received"]
        now = time.time()
        with transaction(self._get_conn()) as conn:
            row = self._studies.get(study_uid)
            routed = row is not None and row["state"] == "waiting" and (
                row["received"] == seen if early else row["due_at"] <= now + 0.01)
            if routed and row is not None:
                self._studies.mark_routed(study_uid, "processed" if decisions or gave_up else "unmatched", now,
                                          [d.name for d in decisions], gave_up or None)
                for d in decisions:
                    job_id = enqueue_job(conn, study_uid, row["generation"], d.name, d.pipeline, d.destinations, now,
                                         d.priority)
                    if job_id is not None:
                        job_ids.append(job_id)
        if not routed or row is None:  # another thread routed it, or an instance arrived after the check above
            if row is not None and row["state"] == "waiting":
                self._arm(study_uid, row["due_at"], check=early)
            return []
        instances = sum(len(s.instances) for s in view.series)
        if gave_up:
            log.warning("study incomplete; routes given up (recorded, nothing run for them)",
                        extra={"study": study_uid, "generation": row["generation"],
                               "missing": json.dumps(gave_up), "instances": instances})
        if decisions:
            log.info("study complete; jobs queued",
                     extra={"study": study_uid, "generation": row["generation"], "instances": instances,
                            "routes": ",".join(d.name for d in decisions), "jobs": len(job_ids), "reason": reason})
        elif not gave_up:
            log.info("study complete; no route matched (kept per retention)",
                     extra={"study": study_uid, "instances": instances})
        if self.on_routed is not None:
            try:
                self.on_routed(study_uid, row["generation"], decisions, job_ids, instances)
            except Exception:
                log.exception("on_routed hook failed", extra={"study": study_uid})
        if job_ids and self.on_enqueued is not None:
            self.on_enqueued()
        return job_ids

    def _after_check(self, study_uid: str, received: int) -> None:
        """An early check found the study not complete: wake again at its due time, or check again
        soon when an instance arrived meanwhile (its own timer may have been replaced by ours)."""
        row = self._studies.get(study_uid)
        if row is not None and row["state"] == "waiting":
            self._arm(study_uid, row["due_at"], check=row["received"] != received)

    def _defer(self, study_uid: str, received: int, until: float) -> None:
        """Quiet period over but a route waits for its series: due again at ``until`` (stored, so a
        restart keeps waiting), unless an instance arrived meanwhile (then its own due time holds)."""
        with transaction(self._get_conn()):
            self._studies.defer(study_uid, received, until)
        log.info("quiet period over, waiting for missing series", extra={"study": study_uid, "until": until})
        self._after_check(study_uid, received)
