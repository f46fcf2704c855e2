"""The ``ray`` executor, node side: jobs go to a Ray driver child process; the node keeps all state.

No Ray import here: :mod:`node.executors.ray_driver` runs in a child process
(why: see there) and this class talks to it over a socket pair.  A supervisor
thread starts the driver, waits for it to connect (``connect_timeout_s``), reads
its messages, and when it exits or cannot connect marks the executor
unavailable (jobs then wait in the queue, ``cardionode status`` and ``/metrics``
say why) and starts a new one after a backoff of 1, 2, 4 ... up to
``reconnect_max_s`` seconds.  Jobs in flight when the driver is lost come back
as :class:`ExecutorUnavailable` and return to the queue without using an attempt.
"""
from __future__ import annotations

import itertools
import logging
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from pipelines.base import PipelineInputError, TransientPipelineError

from ..config import ModelsSection, RayExecutorSection
from ..files import open_private
from .base import (
    Execution,
    ExecutorStatus,
    ExecutorUnavailable,
    JobRequest,
    RemotePipelineError,
    WorkerLostError,
)
from .messages import DriverSettings, DriverState, JobOutcome, PipelineSpec, Shutdown, Submit

__all__ = ["RayExecutor", "plain"]

log = logging.getLogger("cardionode.executor.ray")

DRIVER_STOP_S = 20.0
EMBEDDED_TOKEN_NAME = "ray-auth-token"


def plain(value: Any) -> Any:
    """Mappings and sequences as dicts and lists (the config's read-only mappings do not pickle)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


class RayExecutor:
    """Runs jobs on Ray actors through a supervised driver process; ``slots`` = ``max_in_flight``."""

    kind = "ray"

    def __init__(
        self,
        settings: RayExecutorSection,
        pipelines: Mapping[str, str],
        plugins: Sequence[str],
        models: ModelsSection,
        storage_dir: Path,
        cardionode_version: str,
        log_format: str = "text",
        log_level: str = "INFO",
        on_status: Callable[[ExecutorStatus], None] | None = None,
    ) -> None:
        """``pipelines`` maps every pipeline that gets actors to its version (checked against the workers')."""
        self.settings = settings
        self.slots = settings.max_in_flight
        self.on_status = on_status
        specs = []
        for name, version in sorted(pipelines.items()):
            r = settings.resources_for(name)
            specs.append(PipelineSpec(name=name, actors=r.actors, num_cpus=r.num_cpus, num_gpus=r.num_gpus,
                                      memory_bytes=r.memory_mb * 1024 * 1024, resources=plain(r.resources),
                                      version=version))
        e = settings.embedded
        self.driver_settings = DriverSettings(
            address=settings.address,
            namespace=settings.namespace,
            embedded={"num_cpus": e.num_cpus, "num_gpus": e.num_gpus, "resources": plain(e.resources),
                      "object_store_bytes": e.object_store_mb * 1024 * 1024 if e.object_store_mb else None},
            pipelines=tuple(specs),
            plugins=tuple(plugins),
            models=models,
            transfer=settings.transfer,
            node_storage_dir=str(Path(storage_dir).resolve()),
            worker_storage_dir=settings.worker_storage_dir,
            max_in_flight=settings.max_in_flight,
            cardionode_version=cardionode_version,
            log_format=log_format,
            log_level=log_level,
        )
        self._status = ExecutorStatus(kind=self.kind, available=False, state="connecting",
                                      detail="starting the Ray driver", address=settings.address)
        self._status_lock = threading.Lock()
        self._pending: dict[str, Future[JobOutcome]] = {}
        self._pending_lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._conn: Connection | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._keys = itertools.count(1)
        self._last_failure = ""

    # ------------------------------------------------------------------ status
    def available(self) -> bool:
        return self._status.available

    def status(self) -> ExecutorStatus:
        return self._status

    def _set_status(self, state: str, available: bool, detail: str, groups: tuple[Any, ...] = ()) -> None:
        with self._status_lock:
            old = self._status
            since = old.since if old.available == available else time.time()  # unavailable since / up since
            new = ExecutorStatus(kind=self.kind, available=available, state=state, detail=detail,
                                 address=self.settings.address, since=since, groups=groups)
            if new == old:
                return
            self._status = new
        if (old.state, old.detail) != (state, detail):
            level = logging.WARNING if state == "unavailable" else logging.INFO
            log.log(level, "executor %s", state, extra={"executor": self.kind, "detail": detail})
        if self.on_status is not None:
            try:
                self.on_status(new)
            except Exception:
                log.exception("executor status hook failed")

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._thread = threading.Thread(target=self._supervise, name="ray-executor", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._send(Shutdown())
        if self._thread is not None:
            self._thread.join(timeout)
        self._end_driver()
        self._set_status("stopped", False, "node stopping")

    def _supervise(self) -> None:
        delay = 1.0
        while not self._stop.is_set():
            connected = self._session()
            if self._stop.is_set():
                break
            delay = 1.0 if connected else min(delay * 2, self.settings.reconnect_max_s)
            self._stop.wait(delay)

    def _driver_env(self) -> dict[str, str]:
        """The driver's environment: no usage reporting, and Ray token authentication when it has a token.

        ``auth_token_file`` names the cluster's token; an embedded Ray gets a
        token of its own under the storage dir (Ray would otherwise write one to
        ``~/.ray/auth_token`` for every local cluster of the user).
        """
        env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")  # a clinical node reports nothing home
        token_file = self.settings.auth_token_file
        if token_file is None and self.settings.address is None:
            path = Path(self.driver_settings.node_storage_dir) / EMBEDDED_TOKEN_NAME
            if not path.exists():
                with open_private(path, exclusive=True) as fh:
                    fh.write(secrets.token_hex(32).encode("ascii"))
            token_file = str(path)
        if token_file is not None:
            env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(Path(token_file).resolve()))
        return env

    def _spawn(self) -> Connection:
        ours, theirs = socket.socketpair()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "node.executors.ray_driver", str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                env=self._driver_env(),
            )
        finally:
            theirs.close()
        conn = Connection(ours.detach())
        conn.send(self.driver_settings)
        return conn

    def _session(self) -> bool:
        """One driver process from start to exit; True when it got connected."""
        if self._status.state != "unavailable":  # after a failure the status keeps saying why until connected
            self._set_status("connecting", False, f"connecting to Ray ({self.settings.address or 'embedded'})")
        try:
            conn = self._spawn()
        except OSError as exc:
            self._last_failure = f"cannot start the Ray driver: {exc}"
            self._set_status("unavailable", False, self._last_failure)
            return False
        with self._send_lock:
            self._conn = conn
        connected = timed_out = False
        deadline = time.monotonic() + self.settings.connect_timeout_s
        detail = ""
        try:
            while not self._stop.is_set():
                try:
                    ready = conn.poll(0.5)
                    msg = conn.recv() if ready else None
                except (EOFError, OSError):
                    break
                if msg is None:
                    if not connected and time.monotonic() > deadline:
                        detail = (f"no connection to Ray ({self.settings.address or 'embedded'}) within "
                                  f"{self.settings.connect_timeout_s:.0f} s")
                        timed_out = True
                        break
                    continue
                if isinstance(msg, DriverState):
                    connected = connected or msg.available
                    detail = msg.detail
                    self._set_status(msg.state, msg.available, msg.detail, msg.groups)
                elif isinstance(msg, JobOutcome):
                    with self._pending_lock:
                        fut = self._pending.pop(msg.key, None)
                    if fut is not None:
                        fut.set_result(msg)
        finally:
            with self._send_lock:
                self._conn = None
            conn.close()
        if not self._stop.is_set():
            # unavailable before waiting for the driver to go: no job is claimed meanwhile
            lost = connected and self._status.available
            reason = detail if detail and not self._status.available else "the Ray driver exited"
            self._last_failure = "lost Ray: the driver exited" if lost else reason
            self._set_status("unavailable", False, self._last_failure)
            self._fail_pending(self._last_failure)
        rc = self._end_driver(kill=timed_out)
        log.info("Ray driver ended", extra={"status": rc})
        return connected

    def _end_driver(self, kill: bool = False) -> int | None:
        """Wait for the driver process to exit (``kill``: end it now, e.g. stuck connecting)."""
        proc = self._proc
        if proc is None:
            return None
        if kill:
            proc.kill()
        try:
            return proc.wait(DRIVER_STOP_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(10)

    def _fail_pending(self, reason: str) -> None:
        with self._pending_lock:
            pending, self._pending = self._pending, {}
        for key, fut in pending.items():
            fut.set_result(JobOutcome(key, "unavailable", message=reason))

    def _send(self, msg: object) -> bool:
        with self._send_lock:
            if self._conn is None:
                return False
            try:
                self._conn.send(msg)
                return True
            except OSError:
                return False

    # ------------------------------------------------------------------ jobs
    def run(self, request: JobRequest) -> Execution:
        if not self.available():
            raise ExecutorUnavailable(self._status.detail or "Ray is not connected")
        key = f"{request.job_id}.{request.attempt}.{next(self._keys)}"
        fut: Future[JobOutcome] = Future()
        with self._pending_lock:
            self._pending[key] = fut
        started = time.perf_counter()
        if not self._send(Submit(key=key, pipeline=request.pipeline, study=request.study,
                                 options=plain(request.options))):
            with self._pending_lock:
                self._pending.pop(key, None)
            raise ExecutorUnavailable("the Ray driver is not running")
        msg = fut.result()
        total = time.perf_counter() - started
        outcome = msg.outcome
        if msg.kind == "done" and outcome is not None and outcome.payload is not None:
            timings = {**msg.timings, "total_s": total}
            timings["overhead_s"] = total - timings.get("run_s", 0.0)
            return Execution(result=outcome.payload.to_result(), worker=dict(outcome.worker), timings=timings)
        if msg.kind == "input":
            raise PipelineInputError(msg.message)
        if msg.kind == "transient":
            raise TransientPipelineError(msg.message)
        if msg.kind == "worker_lost":
            raise WorkerLostError(f"worker lost: {msg.message}")
        if msg.kind == "unavailable":
            raise ExecutorUnavailable(msg.message)
        raise RemotePipelineError(msg.message)
