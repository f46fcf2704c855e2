"""The executor interface: where a claimed job's ``pipeline.run(study, context)`` happens.

The node stays the one owner of durable state: an executor only runs the
pipeline somewhere and hands back the :class:`~pipelines.base.PipelineResult`;
:class:`node.jobs.JobRunner` writes the result files and commits them in one
transaction exactly as before.  Two implementations: ``local`` (the node's own
threads, :mod:`node.executors.local`) and ``ray`` (Ray actors, driven from a
child process, :mod:`node.executors.ray`).

Errors an executor raises from :meth:`Executor.run`:

* the pipeline's own :class:`~pipelines.base.PipelineInputError` /
  :class:`~pipelines.base.TransientPipelineError` (same meaning as today);
* :class:`WorkerLostError` (a transient error): the worker process or its
  machine died mid-job; the job is retried under ``jobs.*`` like any transient error;
* :class:`ExecutorUnavailable`: the executor cannot run jobs now (Ray
  unreachable); the job goes back to the queue without using an attempt and
  the runner claims nothing until :meth:`Executor.available` is true again;
* :class:`RemotePipelineError`: the pipeline raised another exception on a
  remote worker (its traceback text is kept); fails the job as locally.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Mapping, Protocol

from pipelines.base import PipelineResult, StudyView, TransientPipelineError

__all__ = [
    "JobRequest",
    "Execution",
    "WorkerGroupStatus",
    "ExecutorStatus",
    "Executor",
    "ExecutorUnavailable",
    "WorkerLostError",
    "RemotePipelineError",
]


class ExecutorUnavailable(RuntimeError):
    """The executor cannot take jobs now; the job waits in the queue (no attempt used)."""


class WorkerLostError(TransientPipelineError):
    """The worker running the job died (process killed, machine lost); retried like any transient error."""


class RemotePipelineError(RuntimeError):
    """The pipeline raised an unexpected exception on a remote worker; the message carries its traceback."""


@dataclasses.dataclass(frozen=True)
class JobRequest:
    """One claimed job as an executor sees it."""

    job_id: int
    attempt: int
    pipeline: str
    study: StudyView
    options: Mapping[str, Any]
    work_dir: Path


@dataclasses.dataclass(frozen=True)
class Execution:
    """What an executor hands back: the pipeline's result, where it ran, and how long the parts took.

    ``timings`` (seconds): ``run_s`` is the pipeline's own ``run()`` (``run_cpu_s``
    the CPU time of the thread that ran it); remote
    executors add ``total_s`` (submit to result in the node), ``transfer_s``
    (study into the object store) and ``overhead_s`` (``total_s - run_s``).
    """

    result: PipelineResult
    worker: Mapping[str, Any]
    timings: Mapping[str, float]


@dataclasses.dataclass(frozen=True)
class WorkerGroupStatus:
    """The workers of one pipeline: how many are configured and how many answered their last check."""

    pipeline: str
    configured: int
    ready: int
    workers: tuple[Mapping[str, Any], ...] = ()


@dataclasses.dataclass(frozen=True)
class ExecutorStatus:
    """What ``cardionode status`` and ``/metrics`` show about the executor."""

    kind: str
    available: bool
    state: str  # local: "ready"; ray: "connecting" | "connected" | "unavailable" | "stopped"
    detail: str = ""
    address: str | None = None
    since: float = dataclasses.field(default_factory=time.time)
    groups: tuple[WorkerGroupStatus, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Executor(Protocol):
    """Runs pipelines for :class:`node.jobs.JobRunner`; ``slots`` jobs may be in flight at once."""

    kind: str
    slots: int

    def start(self) -> None:
        """Begin (connect, start workers); must not block on a cluster that is down."""

    def available(self) -> bool:
        """True when :meth:`run` can take a job now."""

    def run(self, request: JobRequest) -> Execution:
        """Run the job's pipeline to a result (or raise, see the module docstring)."""

    def stop(self, timeout: float = 30.0) -> None:
        """Release workers; jobs still in flight stay ``running`` and are re-queued at the next start."""

    def status(self) -> ExecutorStatus:
        """Current state for status and metrics."""
