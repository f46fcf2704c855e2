"""The node's Ray driver: a child process that connects to Ray and runs jobs on pipeline actors.

    python -m node.executors.ray_driver FD

Why a separate process: a Ray driver ends its own process when the cluster's
GCS has been unreachable for ``gcs_rpc_server_reconnect_timeout_s`` (60 s by
default; "Failed to connect to GCS within 60 seconds ... The program will
terminate"), and Ray keeps process-wide state and native threads.  The node
must keep receiving studies whatever the cluster does, so Ray lives here; the
node (:class:`node.executors.ray.RayExecutor`) restarts this process with
backoff whenever it exits and meanwhile lets jobs wait.

FD is one end of a socket pair; the messages are those of
:mod:`node.executors.messages`.  EOF on it means the node is gone: the driver
shuts Ray down, which ends every actor it owns (they are not detached), so no
job of a dead node keeps running on the cluster.

Actors: ``actors`` per pipeline, each ``ray.remote(RayPipelineWorker)`` with
the pipeline's ``num_cpus`` / ``num_gpus`` / ``memory`` / custom resources,
``max_restarts=-1`` (Ray restarts an actor whose process or node died, on any
node with the resources) and ``max_task_retries=0`` (the node, not Ray, decides
about retries: a lost call comes back as ``worker_lost`` and the job is
re-queued under ``jobs.*``).  Health checks (``info``) run in a separate
concurrency group so that they are answered while a job runs.
"""
from __future__ import annotations

import dataclasses
import logging
import socket
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import ray
import ray.exceptions

from ..logging_setup import setup_logging
from .base import WorkerGroupStatus
from .messages import DriverSettings, DriverState, JobOutcome, PipelineSpec, Shutdown, Submit
from .payload import PathMapError, StudyBundle
from .worker import PipelineWorker

__all__ = ["RayPipelineWorker", "Driver", "main"]

log = logging.getLogger("cardionode.ray_driver")

PING_TIMEOUT_S = 10.0
WATCH_INTERVAL_S = 1.0
RESPAWN_INTERVAL_S = 30.0

#: a call whose worker process or node died; Ray restarts the actor, the node retries the job
_WORKER_LOST = (
    ray.exceptions.RayActorError,  # includes ActorDiedError and ActorUnavailableError
    ray.exceptions.WorkerCrashedError,
    ray.exceptions.NodeDiedError,
    ray.exceptions.ObjectLostError,  # includes OwnerDiedError, ObjectReconstructionFailedError
    ray.exceptions.OutOfMemoryError,
)


class RayPipelineWorker(PipelineWorker):
    """:class:`PipelineWorker` that also reports its Ray node id and GPU ids."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        ctx = ray.get_runtime_context()
        kwargs["node_info"] = {"ray_node_id": ctx.get_node_id()}
        super().__init__(*args, **kwargs)

    # answered while a job runs (Ray Client has no per-call option); ray's stub types the decorated
    # method as a remote method only, but called in the actor it is this plain method
    @ray.method(concurrency_group="health")
    def info(self) -> dict[str, Any]:  # type: ignore[override]
        info = super().info()
        info["gpu_ids"] = [str(g) for g in ray.get_gpu_ids()]
        return info


@dataclasses.dataclass
class _Actor:
    """One actor of a pipeline as the driver tracks it."""

    spec: PipelineSpec
    index: int
    handle: Any  # ray's ActorHandle: its stubs do not type actor method calls (handle.run.remote)
    created_at: float
    ready: bool = False
    inflight: int = 0
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    ping: Any = None  # ObjectRef of the health check in flight
    ping_sent: float = 0.0
    error: str = ""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def _preflight(address: str) -> None:
    """Fail fast with a clear reason when nothing listens at ``host:port`` (ray.init would hang)."""
    if address == "auto":
        return
    hostport = address[len("ray://"):] if address.startswith("ray://") else address
    host, _, port = hostport.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        kind = "Ray client server" if address.startswith("ray://") else "Ray GCS"
        raise ConnectionError(f"cannot reach the {kind} at {hostport}: {exc.strerror or exc}") from None


class Driver:
    """One connection to Ray: actors per pipeline, jobs from the node, state back to it."""

    def __init__(self, conn: Connection, settings: DriverSettings) -> None:
        self.conn = conn
        self.settings = settings
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self._actors: dict[str, list[_Actor]] = {}
        self._pool = ThreadPoolExecutor(max_workers=settings.max_in_flight, thread_name_prefix="ray-job")
        self._stop = threading.Event()
        self._lost = ""
        self._last_state: DriverState | None = None
        self._remote_cls: Any = None  # ray.remote(...)(RayPipelineWorker); see _Actor.handle

    # ------------------------------------------------------------------ messages
    def send(self, msg: object) -> None:
        with self._send_lock:
            try:
                self.conn.send(msg)
            except OSError:  # the node is gone; the main loop sees EOF and stops
                self._stop.set()

    def _report(self, available: bool, state: str, detail: str) -> None:
        msg = DriverState(available=available, state=state, detail=detail, groups=self._groups())
        if msg != self._last_state:
            self._last_state = msg
            self.send(msg)

    def _groups(self) -> tuple[WorkerGroupStatus, ...]:
        with self._lock:
            return tuple(
                WorkerGroupStatus(
                    pipeline=name,
                    configured=len(actors),
                    ready=sum(a.ready for a in actors),
                    workers=tuple({"index": a.index, "ready": a.ready, "error": a.error,
                                   **{k: a.info.get(k) for k in ("host", "pid", "ray_node_id", "gpu_ids")}}
                                  for a in actors),
                )
                for name, actors in sorted(self._actors.items())
            )

    # ------------------------------------------------------------------ lifecycle
    def run(self) -> int:
        s = self.settings
        where = s.address or "embedded"
        try:
            self._connect()
        except Exception as exc:
            self._report(False, "unavailable", f"cannot connect to Ray ({where}): {_first_line(exc)}")
            return 3
        try:
            # ray's overloads leave out concurrency_groups, which ray.remote takes for actor classes
            self._remote_cls = ray.remote(concurrency_groups={"health": 1})(  # type: ignore[call-overload]
                RayPipelineWorker)
            for spec in s.pipelines:
                self._actors[spec.name] = [self._new_actor(spec, i) for i in range(spec.actors)]
            self._report(True, "connected", f"connected to Ray ({where}); namespace {s.namespace}")
            watcher = threading.Thread(target=self._watch, name="ray-watch", daemon=True)
            watcher.start()
            while not self._stop.is_set():
                try:
                    if not self.conn.poll(0.5):
                        continue
                    msg = self.conn.recv()
                except (EOFError, OSError):
                    log.info("node closed the connection; shutting Ray down")
                    break
                if isinstance(msg, Shutdown):
                    break
                if isinstance(msg, Submit):
                    self._pool.submit(self._run_job, msg)
        finally:
            self._stop.set()
            self._pool.shutdown(wait=False, cancel_futures=True)
            try:
                ray.shutdown()  # the actors this driver owns end with it
            except Exception:
                log.exception("ray.shutdown failed")
        if self._lost:
            self._report(False, "unavailable", self._lost)
            return 4
        return 0

    def _connect(self) -> None:
        s = self.settings
        common: dict[str, Any] = {"namespace": s.namespace, "logging_level": logging.WARNING}
        if s.address is None:
            e = s.embedded
            ray.init(num_cpus=e.get("num_cpus"), num_gpus=e.get("num_gpus"),
                     object_store_memory=e.get("object_store_bytes"), resources=e.get("resources") or None,
                     include_dashboard=False, log_to_driver=False, **common)
        elif s.address.startswith("ray://"):
            _preflight(s.address)
            ray.init(address=s.address, **common)
        else:
            _preflight(s.address)
            ray.init(address=s.address, log_to_driver=False, **common)

    def _new_actor(self, spec: PipelineSpec, index: int) -> _Actor:
        models = self.settings.models
        if models.intra_op_threads == 0 and spec.num_cpus >= 1:
            models = dataclasses.replace(models, intra_op_threads=int(spec.num_cpus))  # what Ray reserved for it
        handle = self._remote_cls.options(
            num_cpus=spec.num_cpus,
            num_gpus=spec.num_gpus,
            memory=spec.memory_bytes or None,
            resources=dict(spec.resources) or None,
            max_restarts=-1,
            max_task_retries=0,
        ).remote(spec.name, self.settings.plugins, models)
        return _Actor(spec=spec, index=index, handle=handle, created_at=time.monotonic())

    # ------------------------------------------------------------------ health
    def _watch(self) -> None:
        """Ping actors (health concurrency group), mark them ready, replace dead ones, check versions."""
        while not self._stop.wait(WATCH_INTERVAL_S):
            try:
                self._check_actors()
            except ConnectionError as exc:  # Ray client lost its server
                self._lose(f"lost the connection to Ray: {_first_line(exc)}")
                return
            except Exception:
                log.exception("actor health check failed")
            if self._lost:
                return
            self._report(True, "connected", self._last_state.detail if self._last_state else "connected")

    def _check_actors(self) -> None:
        now = time.monotonic()
        with self._lock:
            actors = [a for group in self._actors.values() for a in group]
        for a in actors:
            if a.ping is None:
                a.ping, a.ping_sent = a.handle.info.remote(), now
                continue
            done, _ = ray.wait([a.ping], timeout=0)
            if not done:
                if now - a.ping_sent > PING_TIMEOUT_S and a.ready:
                    a.ready, a.error = False, f"no answer to a health check for {PING_TIMEOUT_S:.0f} s"
                continue
            ref, a.ping = a.ping, None
            try:
                info = ray.get(ref)
            except ray.exceptions.ActorDiedError as exc:
                a.ready, a.error = False, _first_line(exc)
                if now - a.created_at > RESPAWN_INTERVAL_S:  # dead for good (e.g. its constructor failed)
                    log.warning("pipeline %s actor %d died (%s); creating a new one", a.spec.name, a.index, a.error)
                    self._replace(a)
                continue
            except _WORKER_LOST as exc:  # restarting
                a.ready, a.error = False, _first_line(exc)
                continue
            mismatch = self._version_mismatch(a.spec, info)
            if mismatch:
                self._lose(mismatch)
                return
            a.info, a.ready, a.error = info, True, ""

    def _version_mismatch(self, spec: PipelineSpec, info: dict[str, Any]) -> str:
        """Workers must run the node's version: results must name the pipeline version that made them."""
        ours = (self.settings.cardionode_version, spec.version)
        theirs = (info.get("cardionode_version"), info.get("pipeline_version"))
        if ours == theirs:
            return ""
        return (f"worker {info.get('host')} pid {info.get('pid')} runs cardionode {theirs[0]} / {spec.name} "
                f"{theirs[1]}, the node runs {ours[0]} / {ours[1]}: install the node's version on every Ray worker")

    def _replace(self, old: _Actor) -> None:
        new = self._new_actor(old.spec, old.index)
        with self._lock:
            group = self._actors[old.spec.name]
            group[group.index(old)] = new
        try:
            ray.kill(old.handle, no_restart=True)
        except Exception:
            pass

    def _lose(self, reason: str) -> None:
        """Give up this connection: the node marks the executor unavailable and starts a new driver."""
        log.error("%s", reason)
        self._lost = reason
        self._stop.set()

    # ------------------------------------------------------------------ jobs
    def _choose(self, pipeline: str) -> _Actor:
        """The ready actor of ``pipeline`` with the fewest calls in flight; waits while none is ready.

        A call sent to an actor that Ray is restarting fails at once ("The actor
        is restarting") without running, which would use up an attempt for
        nothing; so jobs wait here until a health check has answered.
        """
        while True:
            with self._lock:
                group = self._actors.get(pipeline)
                if not group:
                    raise KeyError(f"no actors for pipeline {pipeline!r} (not routed, not under executor.pipelines)")
                ready = [a for a in group if a.ready]
                if ready:
                    actor = min(ready, key=lambda a: (a.inflight, a.index))
                    actor.inflight += 1
                    return actor
            if self._stop.wait(0.2):
                raise ConnectionError("the driver is stopping")

    def _bundle(self, msg: Submit) -> StudyBundle:
        s = self.settings
        if s.transfer == "shared_filesystem":
            return StudyBundle.with_paths(msg.study, Path(s.node_storage_dir),
                                          Path(s.worker_storage_dir or s.node_storage_dir))
        return StudyBundle.with_bytes(msg.study)

    def _run_job(self, msg: Submit) -> None:
        t0 = time.perf_counter()
        actor: _Actor | None = None
        try:
            actor = self._choose(msg.pipeline)
            bundle = self._bundle(msg)
            bundle_ref = ray.put(bundle)
            t1 = time.perf_counter()
            outcome = ray.get(actor.handle.run.remote(msg.key, bundle_ref, msg.options))
            t2 = time.perf_counter()
            del bundle_ref
            timings = {**outcome.timings, "transfer_s": t1 - t0, "driver_total_s": t2 - t0,
                       "study_bytes": float(bundle.nbytes)}
            self.send(JobOutcome(msg.key, outcome.kind, outcome=outcome, message=outcome.message, timings=timings))
        except _WORKER_LOST as exc:
            if actor is not None:
                actor.ready, actor.error = False, _first_line(exc)
            self.send(JobOutcome(msg.key, "worker_lost", message=_first_line(exc)))
        except ConnectionError as exc:  # Ray client lost its server
            self.send(JobOutcome(msg.key, "unavailable", message=_first_line(exc)))
            self._lose(f"lost the connection to Ray: {_first_line(exc)}")
        except PathMapError as exc:
            self.send(JobOutcome(msg.key, "error", message=str(exc)))
        except OSError as exc:  # a spool file unreadable right now: worth a retry, as in the node
            self.send(JobOutcome(msg.key, "transient", message=f"os error: {exc}"))
        except Exception as exc:
            self.send(JobOutcome(msg.key, "error", message=f"{exc!r}\n{traceback.format_exc()}"))
        finally:
            if actor is not None:
                with self._lock:
                    actor.inflight -= 1


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    conn = Connection(int(args[0]))
    settings: DriverSettings = conn.recv()
    setup_logging(settings.log_format, settings.log_level)
    return Driver(conn, settings).run()


if __name__ == "__main__":
    sys.exit(main())
