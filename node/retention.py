"""Retention: delete spooled studies and result files once they are no longer needed.

Rules (``retention:`` section):

- ``delete_spool_after_success``: a processed study whose jobs are all ``done``
  and whose deliveries are all ``sent`` is removed from the spool at the next
  sweep.
- ``keep_days``: any processed study (also failed ones) is removed that long
  after its last instance, unless a job or delivery for it is still open.
- ``keep_unmatched_days``: the same for studies no route matched.
- ``keep_results_days``: result folders ``results/<job id>`` of finished jobs
  whose deliveries are all final (sent or failed) are removed after that long.

Studies still waiting for completion, with queued/running jobs or pending
deliveries are never touched.  The ``pending_studies`` row is kept (with
``spool_deleted_at``) so that late arrivals follow the normal late-arrival
policy.
"""
from __future__ import annotations

import logging
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Callable

from .config import RetentionSection
from .state import Jobs, Studies, transaction

__all__ = ["RetentionSweeper"]

log = logging.getLogger("cardionode.retention")

DAY = 86400.0

class RetentionSweeper:
    """Runs one retention pass at a time; ``delete_study(uid)`` removes a study from the spool and index."""

    def __init__(
        self,
        get_conn: Callable[[], sqlite3.Connection],
        settings: RetentionSection,
        delete_study: Callable[[str], None],
        storage_dir: str | Path,
    ) -> None:
        self._get_conn = get_conn
        self._studies = Studies(get_conn)
        self._jobs = Jobs(get_conn)
        self.settings = settings
        self.delete_study = delete_study
        self.results_dir = Path(storage_dir) / "results"

    def candidates(self, now: float | None = None) -> list[tuple[str, str]]:
        """(study uid, reason) of studies to remove from the spool now."""
        now = time.time() if now is None else now
        s = self.settings
        out: dict[str, str] = {}
        if s.delete_spool_after_success:
            for uid in self._studies.delivered():
                out[uid] = "processed and delivered"
        for uid in self._studies.processed_before(now - s.keep_days * DAY):
            out.setdefault(uid, f"older than keep_days={s.keep_days}")
        for uid in self._studies.unmatched_before(now - s.keep_unmatched_days * DAY):
            out.setdefault(uid, f"unmatched, older than keep_unmatched_days={s.keep_unmatched_days}")
        return sorted(out.items())

    def sweep(self, now: float | None = None) -> dict[str, int]:
        """One pass; returns counts of studies and result folders removed."""
        now = time.time() if now is None else now
        removed = 0
        for uid, reason in self.candidates(now):
            try:
                self.delete_study(uid)
            except Exception:
                log.exception("retention: could not delete study", extra={"study": uid})
                continue
            with transaction(self._get_conn()):
                self._studies.mark_spool_deleted(uid, now)
            removed += 1
            log.info("retention: study removed from spool", extra={"study": uid, "reason": reason})
        results = 0
        for job_id in self._jobs.finished_before(now - self.settings.keep_results_days * DAY):
            folder = self.results_dir / str(job_id)
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
                results += 1
        if results:
            log.info("retention: result folders removed", extra={"count": results})
        return {"studies": removed, "result_folders": results}
