"""What the node's HTTP endpoints (status API, STOW-RS, /metrics, the console) are given: one
:class:`WebContext`, built by the service or a test.  Its own module so that the endpoint modules and
the server that mounts them import it from below instead of from each other."""
from __future__ import annotations

import dataclasses
import sqlite3
import time
from typing import TYPE_CHECKING, Callable

from ..config import NodeConfig
from ..spool import Spool
from .metrics import Metrics

if TYPE_CHECKING:
    from pipelines.runtime import ModelStore

__all__ = ["WebContext"]


@dataclasses.dataclass
class WebContext:
    """What the HTTP endpoints use; built by the service (or a test) and passed in.

    ``get_conn`` returns a DB connection usable in the calling thread.
    ``retry_job(job_id) -> None | reason`` and ``wake_jobs()`` are optional
    hooks into the job queue; ``wake_dispatch()``, ``complete_study(uid)`` (run completion for a
    study that is due) and ``reload_models()`` are the console's hooks into the running node;
    ``readiness()`` returns named checks (True = ok) and defaults to DB + spool space.
    """

    config: NodeConfig
    get_conn: Callable[[], sqlite3.Connection]
    metrics: Metrics
    spool: Spool | None = None
    model_store: ModelStore | None = None
    retry_job: Callable[[int], str | None] | None = None
    wake_jobs: Callable[[], None] | None = None
    wake_dispatch: Callable[[], None] | None = None
    complete_study: Callable[[str], list[int]] | None = None
    reload_models: Callable[[], None] | None = None
    readiness: Callable[[], dict[str, bool]] | None = None
    started_at: float = dataclasses.field(default_factory=time.time)
