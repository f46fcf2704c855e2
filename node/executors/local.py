"""The default executor: the pipeline runs in the calling job thread of the node process (no Ray)."""
from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING

from pipelines.base import PipelineContext
from pipelines.registry import PipelineRegistry

from .base import Execution, ExecutorStatus, JobRequest

if TYPE_CHECKING:
    from pipelines.runtime import ModelStore

__all__ = ["LocalExecutor"]


class LocalExecutor:
    """``pipeline.run(study, context)`` in the caller's thread with the node's shared model store.

    ``slots`` is ``node.workers``: the runner starts that many job threads.
    """

    kind = "local"

    def __init__(self, registry: PipelineRegistry, models: "ModelStore | None", slots: int = 1) -> None:
        self.registry = registry
        self.models = models
        self.slots = slots
        self._status = ExecutorStatus(kind=self.kind, available=True, state="ready", detail="in the node process")

    def start(self) -> None:
        """Nothing to start: pipelines are created per job from the registry."""

    def available(self) -> bool:
        return True

    def run(self, request: JobRequest) -> Execution:
        pipeline = self.registry.create(request.pipeline)
        context = PipelineContext(
            options=request.options,
            models=self.models,
            work_dir=request.work_dir,
            logger=logging.getLogger(f"cardionode.pipeline.{request.pipeline}"),
        )
        started, cpu = time.perf_counter(), time.thread_time()
        result = pipeline.run(request.study, context)
        return Execution(result=result, worker={"where": "node process", "pid": os.getpid()},
                         timings={"run_s": time.perf_counter() - started, "run_cpu_s": time.thread_time() - cpu})

    def stop(self, timeout: float = 30.0) -> None:
        """Nothing to release."""

    def status(self) -> ExecutorStatus:
        return self._status
