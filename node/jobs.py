"""Pipeline jobs: a persistent queue in SQLite and the runner threads that take jobs to an executor.

States: ``queued`` -> ``running`` -> ``done`` | ``failed`` (with the error
text).  A :class:`~pipelines.base.TransientPipelineError` puts the job back to
``queued`` with exponential backoff until ``jobs.max_attempts``; a
:class:`~pipelines.base.PipelineInputError` or any other exception fails it at
once.  A job found ``running`` when the node starts was interrupted by a crash
or stop and is re-queued (:meth:`JobQueue.requeue_interrupted`).

Results are written to ``<storage_dir>/results/<job id>/`` and fsynced
*before* the transaction that marks the job done and creates its deliveries,
so a delivery never points at a file that might not exist.  A job that is
re-run after a crash starts from an empty results folder, so only the result
set of the run that committed is ever dispatched.

Where the pipeline itself runs is the executor's business (:mod:`node.executors`:
the node's own thread, or a Ray actor); whatever runs it, the result comes back
here and is written and committed by the node, so exactly-once dispatch does
not depend on the executor.  A job the executor could not run at all (Ray
unreachable) is released back to ``queued`` without counting the attempt.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sqlite3
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from pipelines.base import (
    PipelineInputError,
    PipelineResult,
    StudyView,
    TransientPipelineError,
)

from .config import JobsSection
from .files import open_private, private_dir
from .fsync import fsync_dir
from .executors.base import Executor, ExecutorUnavailable, JobRequest, RemotePipelineError
from .state import Connections, Jobs, add_deliveries, enqueue_job, transaction

__all__ = [
    "Job",
    "JobQueue",
    "JobRunner",
    "backoff_delay",
    "write_result_files",
]

log = logging.getLogger("cardionode.jobs")


def backoff_delay(attempts: int, initial: float, maximum: float) -> float:
    """Delay before retry number ``attempts`` (1-based): initial * 2**(attempts-1), capped."""
    return float(min(maximum, initial * (2 ** max(0, attempts - 1))))


@dataclasses.dataclass(frozen=True)
class Job:
    id: int
    study_uid: str
    generation: int
    route_name: str
    pipeline: str
    destinations: tuple[str, ...]
    attempts: int

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "Job":
        return cls(
            id=row["id"],
            study_uid=row["study_uid"],
            generation=row["generation"],
            route_name=row["route_name"],
            pipeline=row["pipeline"],
            destinations=tuple(json.loads(row["destinations"])),
            attempts=row["attempts"],
        )


class JobQueue:
    """The job queue's policy (attempts, backoff, re-queue at start) over :class:`node.state.Jobs`;
    every method is one short transaction."""

    def __init__(self, conns: Connections, settings: JobsSection, storage_dir: str | Path) -> None:
        self._conns = conns
        self._jobs = Jobs(conns.get)
        self.settings = settings
        self.results_dir = Path(storage_dir) / "results"

    @staticmethod
    def enqueue(
        conn: sqlite3.Connection,
        study_uid: str,
        generation: int,
        route_name: str,
        pipeline: str,
        destinations: Iterable[str],
        now: float | None = None,
        priority: int = 0,
    ) -> int | None:
        """Insert one queued job inside the caller's transaction; ``None`` if it already exists."""
        return enqueue_job(conn, study_uid, generation, route_name, pipeline, destinations,
                           time.time() if now is None else now, priority)

    def requeue_interrupted(self) -> tuple[int, int]:
        """On start: ``running`` jobs go back to ``queued`` (or ``failed`` when out of attempts).

        Returns (requeued, failed).
        """
        return self._jobs.requeue_interrupted(self.settings.max_attempts, time.time())

    def claim(self) -> Job | None:
        """Take the oldest due queued job and mark it running (atomic across threads and processes)."""
        row = self._jobs.claim(time.time())
        if row is None:
            return None
        job = Job.from_row(row)
        return dataclasses.replace(job, attempts=job.attempts + 1)

    def next_due_in(self) -> float | None:
        """Seconds until the next queued job is due (0 if one is due now, None if none queued)."""
        due = self._jobs.next_due_at()
        return None if due is None else max(0.0, due - time.time())

    def complete(self, job: Job, result: PipelineResult, files: list[tuple[str, str, Path]]) -> int:
        """Mark ``job`` done, record its result files and create one delivery per destination and file,
        in one transaction.

        ``files`` holds (sop instance uid, sop class uid, path) of files already
        on disk.  Returns the number of deliveries created.
        """
        now = time.time()
        models = [{"name": m.name, "version": m.version, "provider": m.provider} for m in result.models]
        series = {str(ds.SOPInstanceUID): str(ds.get("SeriesInstanceUID", "") or "") or None for ds in result.datasets}
        with transaction(self._conns.get()) as conn:
            self._jobs.record_results(job.id, [(uid, cls, p, series.get(uid)) for uid, cls, p in files], now)
            created = add_deliveries(conn, job.id, [(uid, p) for uid, _c, p in files], job.destinations, now)
            self._jobs.mark_done(job.id, now, result.pipeline_version, models, result.summary)
        return created

    def release(self, job: Job, reason: str) -> None:
        """Give a claimed job back (``running`` -> ``queued``, due now) without counting the attempt.

        For failures that are not the job's: the executor could not run it
        (Ray unreachable), so it waits in the queue like any other job.
        """
        self._jobs.release(job.id, reason, time.time())

    def retry(self, job_id: int) -> str | None:
        """Re-queue a ``failed`` job with fresh attempts (operator action); returns why not, or None."""
        return self._jobs.retry_failed(job_id, time.time())

    def fail(self, job: Job, error: str, transient: bool) -> bool:
        """Record a failure; transient ones are re-queued with backoff. Returns True if re-queued."""
        now = time.time()
        retry = transient and job.attempts < self.settings.max_attempts
        if retry:
            delay = backoff_delay(job.attempts, self.settings.backoff_initial_s, self.settings.backoff_max_s)
            self._jobs.requeue(job.id, now + delay, error)
        else:
            self._jobs.mark_failed(job.id, now, error)
        return retry


def _describe_worker(worker: Mapping[str, Any]) -> str:
    """``host pid N`` (plus the Ray node id) for the job log line."""
    text = " ".join(f"{k} {worker[k]}" for k in ("where", "host", "pid", "ray_node_id") if worker.get(k))
    return text or "unknown"


def write_result_files(result: PipelineResult, out_dir: Path) -> list[tuple[str, str, Path]]:
    """Write every result dataset as a DICOM file under ``out_dir`` (fsynced); returns (sop, class, path)."""
    private_dir(out_dir)
    written = []
    for ds in result.datasets:
        sop_uid = str(ds.SOPInstanceUID)
        sop_class = str(ds.SOPClassUID)
        final = out_dir / f"{sop_uid}.dcm"
        tmp = out_dir / f".{sop_uid}.tmp"
        with open_private(tmp) as fh:  # 0600: results carry patient data
            ds.save_as(fh, enforce_file_format=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        written.append((sop_uid, sop_class, final))
    fsync_dir(out_dir)
    fsync_dir(out_dir.parent)
    return written


class JobRunner:
    """``executor.slots`` threads that claim jobs, have the executor run them, commit and hand results to dispatch.

    ``executor`` runs the pipeline (in this process or on a cluster) and
    returns its result; writing the files and the one commit stay here.
    ``load_study(uid)`` gives the :class:`StudyView` of a study from the spool
    index; ``options_for(name)`` returns a pipeline's options;
    ``on_results()`` is called after a job's deliveries are committed (wakes
    the dispatcher).  While ``executor.available()`` is false nothing is
    claimed: jobs wait ``queued``.
    """

    def __init__(
        self,
        queue: JobQueue,
        executor: Executor,
        load_study: Callable[[str], StudyView],
        options_for: Callable[[str], Mapping[str, Any]],
        work_root: Path,
        on_results: Callable[[], None] | None = None,
        on_job_finished: Callable[[Job, str], None] | None = None,
    ) -> None:
        self.queue = queue
        self.executor = executor
        self.load_study = load_study
        self.options_for = options_for
        self.work_root = Path(work_root)
        self.workers = executor.slots
        self.on_results = on_results
        self.on_job_finished = on_job_finished
        self._stop = threading.Event()
        self._wake = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._busy = 0
        self._busy_lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        for i in range(self.workers):
            t = threading.Thread(target=self._loop, name=f"job-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def wake(self) -> None:
        """A job was enqueued: let an idle worker look now."""
        with self._wake:
            self._wake.notify_all()

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop claiming jobs; wait up to ``timeout`` for running ones. True if all finished."""
        self._stop.set()
        self.wake()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    @property
    def busy(self) -> int:
        return self._busy

    # ------------------------------------------------------------------ work
    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self.executor.available():  # e.g. Ray unreachable: leave jobs queued, claim nothing
                with self._wake:
                    if not self._stop.is_set():
                        self._wake.wait(0.5)
                continue
            try:
                job = self.queue.claim()
            except sqlite3.Error:
                log.exception("job queue: cannot claim a job")
                job = None
            if job is None:
                try:
                    due = self.queue.next_due_in()
                except sqlite3.Error:
                    due = None
                wait = 1.0 if due is None else min(1.0, max(0.01, due))
                with self._wake:
                    if not self._stop.is_set():
                        self._wake.wait(wait)
                continue
            with self._busy_lock:
                self._busy += 1
            try:
                self.run_job(job)
            finally:
                with self._busy_lock:
                    self._busy -= 1

    def run_job(self, job: Job) -> str:
        """Run one claimed job to a recorded outcome; returns the new state."""
        extra = {"job": job.id, "study": job.study_uid, "pipeline": job.pipeline, "attempt": job.attempts}
        log.info("job started", extra=extra)
        out_dir = self.queue.results_dir / str(job.id)
        work_dir = self.work_root / str(job.id)
        state = "failed"
        try:
            shutil.rmtree(out_dir, ignore_errors=True)  # leftovers of an interrupted run are never dispatched
            shutil.rmtree(work_dir, ignore_errors=True)
            private_dir(work_dir)
            request = JobRequest(job_id=job.id, attempt=job.attempts, pipeline=job.pipeline,
                                 study=self.load_study(job.study_uid), options=self.options_for(job.pipeline),
                                 work_dir=work_dir)
            started = time.monotonic()
            execution = self.executor.run(request)
            files = write_result_files(execution.result, out_dir)
            created = self.queue.complete(job, execution.result, files)
            state = "done"
            log.info(
                "job done",
                extra={**extra, "results": len(files), "deliveries": created,
                       "seconds": round(time.monotonic() - started, 3), "executor": self.executor.kind,
                       "worker": _describe_worker(execution.worker),
                       **{f"t_{k}": round(v, 4) for k, v in execution.timings.items()}},
            )
            if created and self.on_results is not None:
                self.on_results()
        except ExecutorUnavailable as exc:  # not the job's fault: back to the queue, attempt not counted
            self.queue.release(job, f"waiting for the executor: {exc}")
            state = "queued"
            log.warning("job returned to the queue: executor unavailable", extra={**extra, "error": str(exc)})
        except TransientPipelineError as exc:
            requeued = self.queue.fail(job, f"transient: {exc}", transient=True)
            state = "queued" if requeued else "failed"
            log.warning("job transient error", extra={**extra, "error": str(exc), "requeued": requeued})
        except OSError as exc:  # disk full, spool file briefly unreadable: worth a retry
            requeued = self.queue.fail(job, f"os error: {exc}", transient=True)
            state = "queued" if requeued else "failed"
            log.warning("job I/O error", extra={**extra, "error": str(exc), "requeued": requeued})
        except PipelineInputError as exc:
            self.queue.fail(job, f"input: {exc}", transient=False)
            log.warning("job failed: input not processable", extra={**extra, "error": str(exc)})
        except RemotePipelineError as exc:  # the pipeline raised on a remote worker; the text has its traceback
            self.queue.fail(job, f"error: {exc}", transient=False)
            log.error("job failed on a remote worker", extra={**extra, "error": str(exc).splitlines()[0]})
        except Exception as exc:  # a pipeline bug must not take the worker down
            self.queue.fail(job, f"error: {exc!r}\n{traceback.format_exc()}", transient=False)
            log.error("job failed", extra={**extra, "error": repr(exc)}, exc_info=True)
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)
        if self.on_job_finished is not None:
            try:
                self.on_job_finished(job, state)
            except Exception:
                log.exception("on_job_finished hook failed", extra=extra)
        return state
