"""What the node and its Ray driver process say to each other.

The driver (:mod:`node.executors.ray_driver`) is a child process of the node;
they exchange these dataclasses over a local socket pair with
:mod:`multiprocessing.connection` (pickle, same code on both ends).  This is
not a cluster protocol: everything that crosses machines goes through Ray.

node -> driver: :class:`DriverSettings` once, then :class:`Submit` per job and
:class:`Shutdown` at the end (or EOF when the node dies: the driver then shuts
Ray down, which ends the actors it owns).
driver -> node: :class:`DriverState` on every change, :class:`JobOutcome` per job.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Literal, Mapping

from pipelines.base import StudyView

from ..config import ModelsSection
from .base import WorkerGroupStatus
from .worker import WorkerOutcome

__all__ = ["PipelineSpec", "DriverSettings", "Submit", "Shutdown", "DriverState", "JobOutcome", "OutcomeKind"]

OutcomeKind = Literal["done", "input", "transient", "error", "worker_lost", "unavailable"]


@dataclasses.dataclass(frozen=True)
class PipelineSpec:
    """One pipeline's actors: how many, and what each reserves (``memory_bytes`` 0 = none)."""

    name: str
    actors: int
    num_cpus: float
    num_gpus: float
    memory_bytes: int
    resources: dict[str, float]
    version: str


@dataclasses.dataclass(frozen=True)
class DriverSettings:
    """Everything the driver needs, taken from the node's configuration (plain values only)."""

    address: str | None
    namespace: str
    embedded: dict[str, Any]
    pipelines: tuple[PipelineSpec, ...]
    plugins: tuple[str, ...]
    models: ModelsSection
    transfer: Literal["object_store", "shared_filesystem"]
    node_storage_dir: str
    worker_storage_dir: str | None
    max_in_flight: int
    cardionode_version: str
    log_format: str = "text"
    log_level: str = "INFO"


@dataclasses.dataclass(frozen=True)
class Submit:
    """Run ``pipeline`` on ``study``; ``key`` identifies the answer."""

    key: str
    pipeline: str
    study: StudyView
    options: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Shutdown:
    """Stop: shut Ray down (ending this driver's actors) and exit."""


@dataclasses.dataclass(frozen=True)
class DriverState:
    """Connection state and the workers of each pipeline."""

    available: bool
    state: str
    detail: str
    groups: tuple[WorkerGroupStatus, ...] = ()


@dataclasses.dataclass(frozen=True)
class JobOutcome:
    """The end of one submitted job: the worker's outcome, or why there is none."""

    key: str
    kind: OutcomeKind
    outcome: WorkerOutcome | None = None
    message: str = ""
    timings: Mapping[str, float] = dataclasses.field(default_factory=dict)
