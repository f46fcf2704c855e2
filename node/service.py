"""The node process: wires spool, completion, jobs, dispatch, retention, DIMSE and HTTP together.

Start order matters for "nothing acknowledged is lost, nothing processed
twice": first the start-up checks (:mod:`node.startup`: storage writable,
TLS and token files, models, ports free), which change nothing and fail with
one line naming the key to change; then the database schema and crash
recovery (spool ``recover()``, interrupted jobs back to ``queued``) run before
any listener accepts data; completion timers are re-armed from
``pending_studies``; then the DIMSE and HTTP listeners bind; only once both
are listening do the job workers, dispatch threads, scheduler and the model
warm-up start (a failed bind then never leaves an ONNX Runtime session being
created in another thread: ONNX Runtime aborts the process when the
interpreter exits under it).  Stop order is the reverse: listeners first
(in-flight C-STOREs finish), then the scheduler, job workers (running jobs
may finish within a grace period, otherwise they are re-queued at the next
start) and dispatch threads (the batch in flight finishes).
"""
from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType
from typing import Any, Callable

import onnxruntime
from apscheduler.schedulers.background import BackgroundScheduler

from pipelines.base import StudyView
from pipelines.registry import PipelineRegistry, default_registry
from pipelines.runtime import ModelStore
from pipelines.runtime.providers import describe_build, planned_providers

from . import startup
from .completeness import HeaderFacts
from .completion import CompletionTracker
from .config import ConfigError, DimseDestination, NodeConfig
from .console.audit import AuditRecorder
from .console.store import ConsoleStore
from .dispatch.queue import Dispatcher
from .notify import Notifier
from .executors import Executor, ExecutorStatus, executor_pipelines, make_executor
from .executors.status_file import write_status
from .files import DIR_MODE, open_private, private_dir
from .ingest.dimse import DimseServer
from .ingest.worker import instance_from_event
from .ingest.workers import IngestWorkers
from .jobs import Job, JobQueue, JobRunner
from .retention import RetentionSweeper
from .routing import Router
from .spool import Spool, StoredInstance
from .state import Connections, InstanceIndex, OwnResults
from .web.metrics import Metrics
from .web.server import HttpServer, WebContext

__all__ = ["NodeService", "PID_FILE_NAME", "check_pipeline_options"]

log = logging.getLogger("cardionode.service")

PID_FILE_NAME = "cardionode.pid"  # read by `cardionode models reload` (node.models_command)
RETENTION_INTERVAL_S = 600.0
WARMUP_JOIN_S = 120.0


def check_pipeline_options(config: NodeConfig, registry: PipelineRegistry) -> None:
    """Every ``pipelines.<name>`` section names a registered pipeline and reads as its options class;
    raises :class:`ConfigError` with the key path (a typo stops start-up, not every job)."""
    for name, raw in config.pipelines.items():
        if name not in registry:
            raise ConfigError(f"pipelines.{name}: unknown pipeline (registered: {', '.join(registry.names())})")
        registry.parse_options(name, raw)  # an OptionsError is a ConfigError naming pipelines.<name>.<key>


class NodeService:
    """One running node; ``start()`` / ``stop()`` or ``run_forever()`` (signal handling included)."""

    def __init__(self, config: NodeConfig, registry: PipelineRegistry | None = None) -> None:
        self.config = config
        self.storage_dir = config.node.storage_path
        if registry is None:
            try:
                registry = default_registry(config.node.plugins)
            except Exception as exc:  # ImportError, or whatever the plug-in's own code raised
                raise startup.StartupError(f"node.plugins: cannot load the plug-ins {list(config.node.plugins)}: "
                                           f"{type(exc).__name__}: {exc}; fix the plug-in or remove it from "
                                           "node.plugins") from exc
        self.registry = registry
        for i, route in enumerate(config.routes):
            if route.pipeline not in self.registry:
                raise ConfigError(
                    f"routes[{i}].pipeline: unknown pipeline {route.pipeline!r} "
                    f"(registered: {', '.join(self.registry.names())})"
                )
        for name in executor_pipelines(config):
            if name not in self.registry:
                raise ConfigError(
                    f"executor.pipelines.{name}: unknown pipeline (registered: {', '.join(self.registry.names())})"
                )
        check_pipeline_options(config, self.registry)
        self.conns = Connections(self.storage_dir)
        # completion state is rebuilt from the spool at start-up (recover + reconcile): no fsync per instance
        self.completion_conns = Connections(self.storage_dir, synchronous="NORMAL")
        self.router = Router(config)
        self.scheduler = BackgroundScheduler(timezone="UTC")
        self.models: ModelStore | None = None
        self.spool: Spool | None = None
        self.own_results: OwnResults | None = None
        self.dimse: DimseServer | IngestWorkers | None = None
        self.web: HttpServer | None = None
        self.metrics = Metrics(self.conns.get)
        self.completion: CompletionTracker | None = None
        self.runner: JobRunner | None = None
        self.executor: Executor | None = None
        self.dispatcher: Dispatcher | None = None
        self.retention: RetentionSweeper | None = None
        self.console: ConsoleStore | None = None
        self.audit: AuditRecorder | None = None
        self.notifier: Notifier | None = None
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()
        self._warmup_thread: threading.Thread | None = None
        self._workers_started = False
        self._pid_written = False
        self._checked_models: ModelStore | None = None

    # ------------------------------------------------------------------ pieces from other areas
    def _index(self) -> InstanceIndex:
        return InstanceIndex(self.conns.get())

    def load_study(self, study_uid: str) -> StudyView:
        return self._index().study_view(study_uid)

    def load_headers(self, study_uid: str) -> list[HeaderFacts]:
        """Indexed header values of the study's instances (study-aware completion)."""
        return self._index().study_headers(study_uid)

    def delete_study(self, study_uid: str) -> None:
        assert self.spool is not None
        self.spool.delete_study(study_uid)

    def _make_models(self) -> ModelStore:
        """The model store (the one the start-up checks built, when they did) and the one providers line."""
        # ONNX Runtime's process-wide logger: errors only (a GPU build otherwise warns once per session
        # about every provider it could not load; describe_build and the warm-up line say it once)
        onnxruntime.set_default_logger_severity(3)
        log.info("execution providers: %s", describe_build(self.config.models.providers))
        return self._checked_models or ModelStore.from_config(self.config.models)

    def _make_spool(self) -> Spool:
        self.own_results = OwnResults(self.storage_dir)
        return Spool(self.storage_dir, self.config.node.min_free_mb, on_stored=self._on_stored,
                     group_commit=self.config.node.group_commit,
                     own_results=self.own_results)

    def _study_completed(self) -> None:
        assert self.runner is not None
        self.metrics.study_completed()
        self.runner.wake()

    def _on_stored(self, instance: StoredInstance) -> None:
        assert self.completion is not None
        self.completion.on_stored(instance)

    def _start_dimse(self) -> DimseServer | IngestWorkers:
        """DIMSE listener into the spool; every stored instance counts in /metrics (source "dimse").

        ``node.ingest_processes`` > 1: that many ingest processes share the port
        (:mod:`node.ingest.workers`); their instances reach completion, /metrics and the audit
        trail here, through their events."""
        assert self.spool is not None
        node = self.config.node
        audit = self.audit
        try:
            if node.ingest_processes > 1:
                handlers: dict[str, Callable[..., None]] = {
                    "stored": lambda fields: self._on_stored(instance_from_event(fields)),
                    "instance_received": self.metrics.instance_received,
                    "own_result_returned": self.metrics.own_result_returned,
                    "association": audit.association if audit else (lambda *_: None),
                    "rejected": audit.rejected if audit else (lambda *_: None),
                }
                return IngestWorkers(node, node.ingest_processes, handlers, on_restart=self._reconcile,
                                     on_ended=self._remove_leftovers).start()
            return DimseServer(node, self.spool, metrics=self.metrics,
                               on_association=audit.association if audit else None,
                               on_rejected=audit.rejected if audit else None).start()
        except OSError as exc:  # the port was taken between the start-up check and now
            raise startup.port_error(exc, node.host, node.port, "node.port", "--port") from exc
        except RuntimeError as exc:  # an ingest process did not start
            raise startup.StartupError(f"node.ingest_processes: {exc}") from exc

    def _start_web(self) -> HttpServer | None:
        if not self.config.node.http_enabled:
            return None
        assert self.runner is not None
        ctx = WebContext(
            config=self.config, get_conn=self.conns.get, metrics=self.metrics, spool=self.spool,
            model_store=self.models, retry_job=self.retry_job, wake_jobs=self.runner.wake,
            wake_dispatch=self.dispatcher.wake if self.dispatcher is not None else None,
            complete_study=self.completion.fire if self.completion is not None else None,
            reload_models=self.reload_models if self.models is not None else None,
        )
        server = HttpServer(self.config, ctx)
        try:
            server.start()
        except RuntimeError as exc:
            node = self.config.node
            cause = server.error
            if isinstance(cause, OSError):
                raise startup.port_error(cause, node.http_host, node.http_port, "node.http_port",
                                         "--http-port") from exc
            raise startup.StartupError(f"node.http_port: the HTTP port did not start on {node.http_host}:"
                                       f"{node.http_port} ({exc}); change node.http_port or --http-port") from exc
        return server

    def _job_finished_hook(self) -> Callable[[Job, str], None]:
        """``JobRunner(on_job_finished=...)``: /metrics and the audit trail."""
        metrics_hook = self.metrics.job_hook(self.conns.get)
        audit, notifier, console = self.audit, self.notifier, self.console

        def finished(job: Job, state: str) -> None:
            metrics_hook(job, state)
            if audit is not None:
                audit.job_finished(job, state)
            if notifier is not None and state == "failed" and console is not None:
                error = ((console.job(int(job.id)) or {}).get("error") or "").strip().splitlines()
                notifier.emit("job_failed", job.study_uid, {"job": job.id, "pipeline": job.pipeline,
                                                            "route": job.route_name, "attempts": job.attempts,
                                                            "error": error[0][:300] if error else ""})
        return finished

    def _deliveries_recorded(self, destination: str, records: list[dict[str, Any]]) -> None:
        """Dispatch outcomes: to the audit trail; a delivery given up also to the webhooks."""
        assert self.audit is not None and self.console is not None
        self.audit.deliveries(destination, records)
        failed = [r for r in records if r["state"] == "failed"]
        if failed and self.notifier is not None:
            studies = self.console.studies_of_deliveries([int(r["id"]) for r in failed])
            for r in failed:
                self.notifier.emit("delivery_failed", studies.get(int(r["id"])),
                                   {"destination": destination, "sop_instance_uid": r["sop"], "delivery": r["id"],
                                    "error": str(r.get("error") or "")[:300]})

    def _check_disk(self) -> None:
        if self.notifier is None or self.spool is None:
            return
        try:
            has_space = bool(self.spool.has_space())
        except OSError:
            has_space = False
        self.notifier.check_disk(has_space, self.config.node.min_free_mb, str(self.storage_dir))

    def _executor_status(self, status: ExecutorStatus) -> None:
        """Keep ``<storage_dir>/executor.json`` current for ``cardionode status`` (another process)."""
        try:
            write_status(self.storage_dir, status)
        except OSError as exc:
            log.warning("cannot write the executor status file", extra={"error": str(exc)})

    def retry_job(self, job_id: int) -> str | None:
        """Put a failed job back in the queue (status API / operator); returns a reason when refused."""
        assert self.runner is not None
        reason = self.runner.queue.retry(job_id)
        if reason is None:
            self.runner.wake()
        return reason

    # ------------------------------------------------------------------ lifecycle
    def preflight(self) -> None:
        """The start-up checks (:mod:`node.startup`); raise :class:`~node.startup.StartupError`, change nothing
        but creating a missing storage folder."""
        cfg = self.config
        startup.check_storage(self.storage_dir)
        startup.check_dimse_library()
        startup.check_tls(cfg.node.tls, "node.tls")
        startup.check_tls(cfg.node.http_tls, "node.http_tls")
        for name, dest in cfg.destinations.items():
            if isinstance(dest, DimseDestination):  # DICOMweb destinations take https URLs, no tls section
                startup.check_tls(dest.tls, f"destinations.{name}.tls", server=False)
        if cfg.node.http_enabled:
            startup.check_token_file(cfg)
        self._checked_models = startup.check_models(cfg, [r.pipeline for r in cfg.routes])
        startup.check_executor(cfg)
        startup.check_ports(cfg)

    def start(self) -> None:
        cfg = self.config
        self.preflight()
        private_dir(self.storage_dir)
        os.chmod(self.storage_dir, DIR_MODE)  # patient data inside: the node's user only
        self.conns.get()  # creates or migrates the database (node.state.schema)
        with open_private(self.storage_dir / PID_FILE_NAME) as pid_file:
            pid_file.write(f"{os.getpid()}\n".encode("ascii"))
        self._pid_written = True

        self.models = self._make_models()
        queue = JobQueue(self.conns, cfg.jobs, self.storage_dir)
        requeued, failed = queue.requeue_interrupted()
        if requeued or failed:
            log.warning("jobs interrupted by the last stop/crash", extra={"requeued": requeued, "failed": failed})

        self.console = ConsoleStore(self.conns.get)
        self.audit = AuditRecorder(self.console)
        self.notifier = Notifier(cfg.notifications, self.conns.get, cfg.node.ae_title, audit=self.console.audit)
        self.dispatcher = Dispatcher(self.conns.get, cfg.destinations, cfg.dispatch, cfg.node.ae_title,
                                     paused=self.console.is_paused, on_recorded=self._deliveries_recorded)
        self.executor = make_executor(cfg, self.registry, self.models, on_status=self._executor_status)
        self._executor_status(self.executor.status())
        self.metrics.watch_executor(self.executor.status)
        self.runner = JobRunner(
            queue, self.executor, self.load_study, cfg.pipeline_options,
            self.storage_dir / "work", on_results=self.dispatcher.wake,
            on_job_finished=self._job_finished_hook(),
        )
        self.completion = CompletionTracker(
            self.completion_conns.get, self.router, self.load_study, self.scheduler,
            late_arrivals=cfg.node.late_arrivals, on_enqueued=self._study_completed,
            load_headers=self.load_headers, settle_seconds=cfg.node.settle_seconds,
            on_routed=self.audit.routed,
        )
        self.retention = RetentionSweeper(self.conns.get, cfg.retention, self.delete_study, self.storage_dir)

        self.spool = self._make_spool()
        self.spool.recover()
        self._reconcile()
        armed = self.completion.rearm()

        # listeners before any worker thread: a port that cannot be bound stops start-up with nothing running
        self.dimse = self._start_dimse()
        self.web = self._start_web()

        self.dispatcher.start()
        self.notifier.start()
        self.executor.start()
        self.runner.start()
        self._workers_started = True
        self.scheduler.add_job(self._sweep, "interval", seconds=RETENTION_INTERVAL_S, id="retention",
                               coalesce=True, max_instances=1)
        self.scheduler.start()
        self.scheduler.add_job(self._sweep, "date", id="retention-start", misfire_grace_time=None)
        if self.notifier.enabled:
            self.scheduler.add_job(self._check_disk, "interval", seconds=cfg.notifications.disk_check_s,
                                   id="disk-check", coalesce=True, max_instances=1)

        if self.config.models.warmup and self.executor.kind == "local":  # remote workers load their own models
            self._warmup_thread = threading.Thread(target=self._warmup, name="model-warmup", daemon=True)
            self._warmup_thread.start()
        log.info(
            "node started",
            extra={"ae_title": cfg.node.ae_title, "port": cfg.node.port, "http_port": cfg.node.http_port
                   if cfg.node.http_enabled else None, "storage_dir": str(self.storage_dir),
                   "studies_waiting": armed, "routes": len(cfg.routes), "destinations": len(cfg.destinations),
                   "executor": self.executor.kind, "job_slots": self.executor.slots, "pid": os.getpid()},
        )

    def _reconcile(self) -> None:
        """Arm studies the index holds but completion never saw (kill between index commit and hook)."""
        assert self.completion is not None
        n = self.completion.reconcile(self._index().study_last_received())
        if n:
            log.warning("studies found in the index without completion state; armed", extra={"count": n})

    def _remove_leftovers(self, pid: int) -> None:
        """An ingest process ended: remove the partial datasets and old copies it left in the spool."""
        assert self.spool is not None
        n = self.spool.remove_leftovers_of(pid)
        if n:
            log.warning("temporary files of the ended ingest process removed", extra={"pid": pid, "count": n})

    def _warmup(self) -> None:
        """Load every model once in the background so the first job does not pay for it; one line says
        which provider each model runs on (and one warning names models that fell back)."""
        assert self.models is not None
        try:
            outcome = self.models.warmup()
        except Exception as exc:
            log.exception("model warm-up failed; models load on first use")
            if self.notifier is not None:
                self.notifier.emit("model_failed", "warm-up", {"error": f"{type(exc).__name__}: {exc}"[:300]})
            return
        if self.notifier is not None:
            for name, result in outcome.items():
                if not str(result).startswith("ok"):
                    self.notifier.emit("model_failed", name, {"error": str(result)[:300]})
        rows = {r["name"]: r for r in self.models.describe()}
        ready = {n: rows[n]["provider"] for n, v in outcome.items() if v.startswith("ok") and n in rows}
        log.info("models ready: %s", ", ".join(f"{n} on {p}" for n, p in ready.items()) or "none",
                 extra={"failed": len(outcome) - len(ready)})
        expected = planned_providers(self.config.models.providers)[0]
        fell_back = {n: p for n, p in ready.items() if p != expected}
        if fell_back:
            log.warning("models not on %s (the provider could not start for them; check the CUDA / cuDNN / "
                        "TensorRT libraries): %s", expected, ", ".join(f"{n} on {p}" for n, p in fell_back.items()))

    def _sweep(self) -> None:
        assert self.retention is not None
        try:
            self.retention.sweep()
        except Exception:
            log.exception("retention sweep failed")
        if self.audit is not None:
            try:
                self.audit.prune(self.config.retention.keep_audit_days)
            except Exception:
                log.exception("audit retention failed")

    def stop(self, job_grace_s: float = 10.0, dispatch_grace_s: float = 30.0) -> None:
        """Stop accepting, finish in-flight transfers, leave unfinished jobs for re-queueing."""
        with self._stop_lock:
            if self._stopped.is_set():
                return
            self._stopped.set()
        log.info("node stopping")
        if self.dimse is not None:
            self.dimse.stop(graceful=True)
        if self.web is not None:
            self.web.stop()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        if self.runner is not None and self._workers_started and not self.runner.stop(job_grace_s):
            log.warning("jobs still running at stop; they are re-queued at the next start")
        if self.executor is not None and self._workers_started:
            self.executor.stop()
        if self.notifier is not None:
            self.notifier.stop()
        if self.dispatcher is not None and self._workers_started and not self.dispatcher.stop(dispatch_grace_s):
            log.warning("a dispatch batch was still in flight at stop; unsent instances stay pending")
        if self._warmup_thread is not None:
            # ONNX Runtime aborts the process (SIGABRT, "terminate called without an active exception")
            # when the interpreter exits while a session is being created in another thread
            self._warmup_thread.join(WARMUP_JOIN_S)
            if self._warmup_thread.is_alive():
                log.warning("model warm-up still running at stop", extra={"waited_s": WARMUP_JOIN_S})
        if self.spool is not None:
            self.spool.close()
        if self.own_results is not None:
            self.own_results.close()
        if self._pid_written:
            try:
                (self.storage_dir / PID_FILE_NAME).unlink()
            except FileNotFoundError:
                pass
        self.completion_conns.close_all()
        self.conns.close_all()
        log.info("node stopped")

    def reload_models(self) -> None:
        if self.models is None:
            log.warning("SIGHUP: no model store to reload")
            return
        try:
            changes = self.models.reload()
            log.info("models reloaded", extra={"changes": str(changes)})
        except Exception:
            log.exception("model reload failed; previous models stay in use")

    def run_forever(self) -> int:
        """Start, then wait for SIGTERM/SIGINT (stop, exit 0) or SIGHUP (reload models)."""
        stop_requested = threading.Event()
        reload_requested = threading.Event()

        def _term(signum: int, _frame: FrameType | None) -> None:
            log.info("signal received", extra={"signal": signal.Signals(signum).name})
            stop_requested.set()

        def _hup(_signum: int, _frame: FrameType | None) -> None:
            reload_requested.set()

        signal.signal(signal.SIGTERM, _term)
        signal.signal(signal.SIGINT, _term)
        signal.signal(signal.SIGHUP, _hup)
        try:
            self.start()
        except BaseException:
            if self._pid_written:  # past the checks: stop what started (threads joined) before reporting
                self.stop()
            raise
        try:
            while not stop_requested.is_set():
                stop_requested.wait(0.5)
                if reload_requested.is_set():
                    reload_requested.clear()
                    self.reload_models()
        finally:
            self.stop()
        return 0
