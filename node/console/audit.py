"""The audit trail's recorder: what the node did, turned into append-only events (:class:`ConsoleStore`).

Kinds: ``receive`` (one event per study per association: calling AE, association, instances stored
and refused; a rejected association), ``routing`` (a complete study: routes matched, jobs queued, or
unmatched), ``job`` (a job's outcome: done, failed, queued for a retry), ``delivery`` (per destination
and batch: sent / retried / failed with the first error), ``operator`` and ``login`` (the console and
``cardionode user``).  Recording never blocks the node's work: a failed write is logged and dropped.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from .store import ConsoleStore

if TYPE_CHECKING:
    from ..jobs import Job
    from ..routing import RouteDecision

__all__ = ["AuditRecorder"]

log = logging.getLogger("cardionode.audit")

DAY_S = 86400.0


class AuditRecorder:
    """Hooks for the service: pass its methods to the DIMSE server, completion, job runner, dispatcher."""

    def __init__(self, store: ConsoleStore) -> None:
        self.store = store

    def _write(self, kind: str, actor: str, action: str, subject: str | None, detail: Mapping[str, Any]) -> None:
        try:
            self.store.audit(kind, actor, action, subject, detail)
        except Exception:  # the audit trail must never stop ingest, jobs or dispatch
            log.exception("audit event not recorded", extra={"kind": kind, "action": action})

    # ------------------------------------------------------------------ hooks
    def association(self, summary: Mapping[str, Any]) -> None:
        """DIMSE association ended: ``calling_ae``, ``called_ae``, ``address``, ``ended`` (released/aborted),
        ``studies`` {uid: instances stored}, ``refused`` (count)."""
        association = (f"{summary.get('calling_ae', '')} -> {summary.get('called_ae', '')} from "
                       f"{summary.get('address', '')} ({summary.get('ended', 'released')})")
        studies: Mapping[str, int] = summary.get("studies") or {}
        for uid, count in studies.items():
            self._write("receive", summary.get("calling_ae") or "(none)", "received", uid,
                        {"association": association, "instances": count, "source": "dimse"})
        if summary.get("refused") or not studies:
            self._write("receive", summary.get("calling_ae") or "(none)", "association without stored instances"
                        if not summary.get("refused") else "instances refused", None,
                        {"association": association, "refused": summary.get("refused", 0),
                         "stored": sum(studies.values())})

    def rejected(self, calling_ae: str, called_ae: str, address: str) -> None:
        self._write("receive", calling_ae or "(none)", "association rejected", None,
                    {"called_ae": called_ae, "address": address})

    def stow(self, studies: Mapping[str, int], refused: int, client: str) -> None:
        for uid, count in studies.items():
            self._write("receive", client or "(stow)", "received", uid,
                        {"association": f"STOW-RS from {client}", "instances": count, "source": "stow"})

    def routed(self, study_uid: str, generation: int, routes: Sequence[RouteDecision], jobs: Sequence[int],
               instances: int) -> None:
        if routes:
            self._write("routing", "node", "routed", study_uid,
                        {"generation": generation, "instances": instances,
                         "routes": ",".join(r.name for r in routes),
                         "pipelines": ",".join(r.pipeline for r in routes),
                         "jobs": ",".join(str(j) for j in jobs)})
        else:
            self._write("routing", "node", "unmatched", study_uid, {"generation": generation, "instances": instances})

    def job_finished(self, job: Job, state: str) -> None:
        row = self.store.job(int(job.id)) or {}
        error = (row.get("error") or "").strip().splitlines()
        detail = {"job": job.id, "pipeline": job.pipeline, "attempt": job.attempts, "route": job.route_name}
        if state != "done" and error:
            detail["error"] = error[0][:300]
        action = {"done": "job done", "failed": "job failed", "queued": "job queued for a retry"}.get(state,
                                                                                                    f"job {state}")
        self._write("job", "node", action, job.study_uid, detail)

    def deliveries(self, destination: str, records: Iterable[Mapping[str, Any]]) -> None:
        """``records``: per delivery ``id``, ``sop``, ``state`` (sent / retry / failed), ``error``."""
        by_state: dict[str, list[Mapping[str, Any]]] = {}
        for r in records:
            by_state.setdefault(str(r["state"]), []).append(r)
        if not by_state:
            return
        studies = self.store.studies_of_deliveries([int(r["id"]) for rs in by_state.values() for r in rs])
        for state, rows in by_state.items():
            detail: dict[str, Any] = {"destination": destination, "instances": len(rows),
                                      "sop": ",".join(str(r["sop"]) for r in rows[:20])}
            errors = [r.get("error") for r in rows if r.get("error")]
            if errors:
                detail["error"] = str(errors[0])[:300]
            for study in sorted({studies.get(int(r["id"]), "") for r in rows}):
                self._write("delivery", "node", f"delivery {state}", study or None, detail)

    # ------------------------------------------------------------------ retention
    def prune(self, keep_days: float, now: float | None = None) -> int:
        """Remove events older than ``retention.keep_audit_days``."""
        cutoff = (time.time() if now is None else now) - keep_days * DAY_S
        removed = self.store.prune_audit(cutoff)
        if removed:
            log.info("audit events past retention removed", extra={"count": removed, "keep_days": keep_days})
        return removed
