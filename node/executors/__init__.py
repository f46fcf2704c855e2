"""Where pipeline jobs run: in the node process (``local``, the default) or on a Ray cluster (``ray``).

:func:`make_executor` builds the one the configuration's ``executor:`` section
names.  Neither imports Ray into the node process: the ``ray`` executor drives
Ray from a child process (:mod:`node.executors.ray_driver`).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from pipelines.registry import PipelineRegistry

from ..config import NodeConfig
from .base import (
    Execution,
    Executor,
    ExecutorStatus,
    ExecutorUnavailable,
    JobRequest,
    RemotePipelineError,
    WorkerGroupStatus,
    WorkerLostError,
)
from .local import LocalExecutor

if TYPE_CHECKING:
    from pipelines.runtime import ModelStore

__all__ = [
    "Execution",
    "Executor",
    "ExecutorStatus",
    "ExecutorUnavailable",
    "JobRequest",
    "LocalExecutor",
    "RemotePipelineError",
    "WorkerGroupStatus",
    "WorkerLostError",
    "make_executor",
    "executor_pipelines",
]


def executor_pipelines(config: NodeConfig) -> list[str]:
    """Pipelines that need workers: every routed one plus those given resources under ``executor.pipelines``."""
    names = {route.pipeline for route in config.routes}
    if config.executor.type == "ray":
        names |= set(config.executor.pipelines)
    return sorted(names)


def make_executor(config: NodeConfig, registry: PipelineRegistry, models: "ModelStore | None",
                  on_status: Callable[[ExecutorStatus], None] | None = None) -> Executor:
    """The executor of ``config.executor`` (``local`` unless configured otherwise)."""
    settings = config.executor
    if settings.type == "local":
        return LocalExecutor(registry, models, slots=config.node.workers)
    from .ray import RayExecutor
    from .worker import cardionode_version

    versions = {name: registry.create(name).version for name in executor_pipelines(config)}
    return RayExecutor(
        settings,
        pipelines=versions,
        plugins=config.node.plugins,
        models=config.models,
        storage_dir=Path(config.node.storage_dir),
        cardionode_version=cardionode_version(),
        log_format=config.node.log_format,
        log_level=config.node.log_level,
        on_status=on_status,
    )
