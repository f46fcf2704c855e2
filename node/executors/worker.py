"""The body of a remote worker: one pipeline and its model store, kept alive between jobs.

:class:`PipelineWorker` has no Ray import; the Ray driver turns it into an
actor (``ray.remote(...)``) with the resources configured for its pipeline, so
that ONNX Runtime sessions are created on the first job and stay loaded for
every later one (one actor per GPU for GPU pipelines: Ray sets
``CUDA_VISIBLE_DEVICES`` for the actor, so ONNX Runtime's CUDA/TensorRT
providers see only that GPU).  Every outcome is returned as a
:class:`WorkerOutcome` value rather than raised, so the node does not depend on
how a cluster framework wraps exceptions.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import os
import socket
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Literal, Mapping

from pipelines.base import PipelineContext, PipelineInputError, TransientPipelineError
from pipelines.registry import default_registry

from ..config import ModelsSection
from .payload import ResultPayload, StudyBundle

__all__ = ["PipelineWorker", "WorkerOutcome", "cardionode_version"]

log = logging.getLogger("cardionode.worker")

OutcomeKind = Literal["done", "input", "transient", "error"]


def cardionode_version() -> str:
    """The installed distribution's version ("unknown" when running from a source tree)."""
    try:
        return importlib.metadata.version("cardionode")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@dataclasses.dataclass(frozen=True)
class WorkerOutcome:
    """How one job ended on the worker: ``done`` with a payload, or the pipeline's error kind and text."""

    kind: OutcomeKind
    payload: ResultPayload | None = None
    message: str = ""
    worker: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    timings: Mapping[str, float] = dataclasses.field(default_factory=dict)


class PipelineWorker:
    """Runs jobs of one pipeline; ``models`` are the node's ``models:`` settings (providers, threads)."""

    def __init__(self, pipeline: str, plugins: tuple[str, ...], models: ModelsSection,
                 node_info: Mapping[str, Any] | None = None) -> None:
        from pipelines.runtime import ModelStore

        self.pipeline_name = pipeline
        self.pipeline = default_registry(plugins).create(pipeline)
        self.models = ModelStore.from_config(models)
        self.node_info = dict(node_info or {})
        self.jobs = 0

    def info(self) -> dict[str, Any]:
        """Where this worker runs and what it runs (the driver compares versions with the node's)."""
        import onnxruntime

        return {
            **self.node_info,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "pipeline": self.pipeline_name,
            "pipeline_version": self.pipeline.version,
            "cardionode_version": cardionode_version(),
            "providers": list(onnxruntime.get_available_providers()),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "jobs": self.jobs,
        }

    def run(self, job_key: str, bundle: StudyBundle, options: Mapping[str, Any]) -> WorkerOutcome:
        """Materialise the study, run the pipeline, return the result as bytes (or the error kind)."""
        self.jobs += 1
        where = {"host": socket.gethostname(), "pid": os.getpid(), **self.node_info}
        with tempfile.TemporaryDirectory(prefix="cardionode-job-") as tmp:
            t0 = time.perf_counter()
            study = bundle.materialise(Path(tmp) / "study")
            work_dir = Path(tmp) / "work"
            work_dir.mkdir()
            context = PipelineContext(options=options, models=self.models, work_dir=work_dir,
                                      logger=logging.getLogger(f"cardionode.pipeline.{self.pipeline_name}"))
            t1, cpu = time.perf_counter(), time.thread_time()
            try:
                result = self.pipeline.run(study, context)
            except PipelineInputError as exc:
                return WorkerOutcome("input", message=str(exc), worker=where)
            except TransientPipelineError as exc:
                return WorkerOutcome("transient", message=str(exc), worker=where)
            except Exception as exc:  # a pipeline bug: recorded with its traceback, the worker stays up
                return WorkerOutcome("error", message=f"{exc!r}\n{traceback.format_exc()}", worker=where)
            t2, cpu = time.perf_counter(), time.thread_time() - cpu
            payload = ResultPayload.from_result(result)
            t3 = time.perf_counter()
        log.info("job %s done on %s pid %s in %.3f s", job_key, where["host"], where["pid"], t2 - t1)
        return WorkerOutcome("done", payload=payload, worker=where,
                             timings={"materialise_s": t1 - t0, "run_s": t2 - t1, "run_cpu_s": cpu,
                                      "serialise_s": t3 - t2})
