"""Several ingest processes behind one DIMSE port (``node.ingest_processes`` > 1).

One Python process receives, decodes and answers C-STOREs on at most one core (the GIL), while
``storescp --fork`` runs a process per association.  With ``node.ingest_processes: N`` the main
process binds and listens on ``node.port`` itself and starts N ingest processes
(:mod:`node.ingest.worker`) that inherit that one listening socket and all accept on it; each stores
into the same spool and SQLite index with the usual durability rule, then reports the instance
to the main process over a pipe, where completion, metrics and the audit trail go on as before.

Why one inherited socket rather than a socket per process with ``SO_REUSEPORT``: the kernel hands
an ``SO_REUSEPORT`` connection to a process by a hash of its addresses, so four senders can land
on one process while another idles, and connections queued for a process that dies are reset.
With one shared socket, whichever process is free accepts, and a process that dies leaves the
queued connections to the others.

Limits are per process: ``node.max_associations``, ``max_pending`` and ``max_pending_per_host``
apply in each ingest process, so the node as a whole admits up to N times them; the allow-lists,
deadlines, TLS and ``min_free_mb`` apply unchanged in every process.

An ingest process that ends while the node runs (crash, kill -9, OOM) is started again (after
1 s, doubling up to 30 s while it keeps failing within a minute); its events already written are
processed first, the partial datasets it left in the spool's ``.incoming`` are removed
(``on_ended``), then completion is reconciled with the index (``on_restart``), so an instance it
indexed but could not report still completes its study.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, BinaryIO, Callable

from ..config import NodeSection

__all__ = ["IngestWorkers", "listen"]

log = logging.getLogger("cardionode.ingest")

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 40.0
_BACKLOG = 128
_RESTART_MIN_S = 1.0
_RESTART_MAX_S = 30.0
_STABLE_S = 60.0  # a process that ran this long resets the restart back-off


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (0: a free port) for the ingest processes to share."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


class IngestWorkers:
    """N ingest processes accepting on one shared DIMSE socket; ``start()`` / ``stop(graceful)``.

    ``handlers`` maps event names of :class:`node.ingest.worker.EventWriter` (``stored``,
    ``instance_received``, ``own_result_returned``, ``association``, ``rejected``) to callables
    taking the event's arguments; they run in the slot's reader thread, one event after another
    per process.  After a process ended unexpectedly, ``on_ended(pid)`` runs (the node removes what
    it left in the spool's ``.incoming``), then ``on_restart()`` (completion is reconciled), then it
    is started again.
    """

    def __init__(self, node: NodeSection, processes: int, handlers: dict[str, Callable[..., None]],
                 on_restart: Callable[[], None] | None = None,
                 on_ended: Callable[[int], object] | None = None) -> None:
        if processes < 1:
            raise ValueError(f"processes must be >= 1, got {processes}")
        self.node = node
        self.processes = processes
        self.handlers = handlers
        self.on_restart = on_restart
        self.on_ended = on_ended
        self._sock: socket.socket | None = None
        self._slots: list[_Slot] = []
        self._stopping = threading.Event()
        #: set once :meth:`start` has seen every process ready: from then on an ended process is
        #: started again (one that ends earlier, even after it was ready, waits for this or for stop)
        self._started = threading.Event()

    @property
    def port(self) -> int:
        if self._sock is None:
            raise RuntimeError("ingest processes not started")
        return int(self._sock.getsockname()[1])

    def pids(self) -> list[int]:
        """Process ids of the ingest processes running now."""
        return [s.proc.pid for s in self._slots if s.proc is not None and s.proc.poll() is None]

    def start(self) -> "IngestWorkers":
        """Bind, start every process and wait until each accepts; a process that fails to start
        raises RuntimeError (with the others stopped)."""
        self._sock = listen(self.node.host, self.node.port)
        config = json.dumps(dataclasses.asdict(self.node)).encode("utf-8") + b"\n"
        self._slots = [_Slot(self, i, config) for i in range(self.processes)]
        try:
            for slot in self._slots:
                slot.spawn()
            deadline = time.monotonic() + READY_TIMEOUT_S
            for slot in self._slots:
                slot.wait_ready(deadline)
            self._started.set()
        except BaseException:
            self.stop(graceful=False)
            raise
        log.info("DIMSE listener started", extra={"ae_title": self.node.ae_title, "host": self.node.host,
                                                  "port": self.port, "tls": self.node.tls is not None,
                                                  "ingest_processes": self.processes, "pids": self.pids()})
        return self

    def stop(self, graceful: bool = True, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop every process (SIGTERM: the C-STOREs being handled finish and are answered; not
        ``graceful`` or past ``timeout``: SIGKILL), and process the events they wrote."""
        self._stopping.set()
        for slot in self._slots:
            slot.signal(signal.SIGTERM if graceful else signal.SIGKILL)
        deadline = time.monotonic() + timeout
        for slot in self._slots:
            slot.wait(max(0.0, deadline - time.monotonic()))
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        log.info("DIMSE listener stopped", extra={"ingest_processes": self.processes})

    def __enter__(self) -> "IngestWorkers":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _dispatch(self, name: str, args: list[Any]) -> None:
        handler = self.handlers.get(name)
        if handler is None:
            log.error("ingest process: unknown event", extra={"event": name})
            return
        try:
            handler(*args)
        except Exception:
            log.exception("ingest event handler failed", extra={"event": name})


class _Slot:
    """One ingest process position: its current process, the reader of its events, its restarts."""

    def __init__(self, owner: IngestWorkers, index: int, config: bytes) -> None:
        self.owner = owner
        self.index = index
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready = threading.Event()
        self._events: BinaryIO | None = None
        self._started_at = 0.0
        self._thread = threading.Thread(target=self._run, name=f"ingest-{index}-events", daemon=True)

    def spawn(self) -> None:
        """Start the process (and, the first time, the thread reading its events)."""
        sock = self.owner._sock
        assert sock is not None
        read_fd, write_fd = os.pipe()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "node.ingest.worker", str(sock.fileno()), str(write_fd)],
                stdin=subprocess.PIPE, pass_fds=(sock.fileno(), write_fd), close_fds=True)
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        self._started_at = time.monotonic()
        self._events = os.fdopen(read_fd, "rb")
        assert proc.stdin is not None
        proc.stdin.write(self.config)  # stays open: its end of file tells the process we are gone
        proc.stdin.flush()
        self.proc = proc
        if not self._thread.is_alive():
            self._thread.start()

    def wait_ready(self, deadline: float) -> None:
        """Until the process accepts; RuntimeError when it ended or the deadline passed first."""
        while not self.ready.wait(0.1):
            if self.proc is None or self.proc.poll() is not None or time.monotonic() >= deadline:
                raise RuntimeError(f"ingest process {self.index} did not start (see its log lines above)")

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def wait(self, timeout: float) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("ingest process did not stop in time; killed", extra={"pid": self.proc.pid})
            self.proc.kill()
            self.proc.wait()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _drain(self) -> int:
        """Dispatch the current process's events until it ends; its exit status."""
        assert self.proc is not None and self._events is not None
        for line in self._events:
            try:
                message = json.loads(line)
                name, args = message["event"], message["args"]
            except (ValueError, KeyError, TypeError):
                log.error("ingest process: unreadable event", extra={"line": line[:200].decode("utf-8", "replace")})
                continue
            if name == "ready":
                self.ready.set()
            else:
                self.owner._dispatch(name, args)
        self._events.close()
        rc = self.proc.wait()
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        return rc

    def _run(self) -> None:
        """Read events; when the process ends unexpectedly, reconcile and start it again."""
        delay = _RESTART_MIN_S
        while True:
            rc = self._drain() if self._events is not None else None
            self._events = None
            # ended while start() still waited for the others (it was ready, so start() goes on): it is
            # started again once start() has finished; if start() fails instead, stop() ends this thread
            while not self.owner._started.wait(0.1):
                if self.owner._stopping.is_set():
                    return
            if self.owner._stopping.is_set():
                return
            log.error("ingest process ended; starting it again",
                      extra={"pid": self.proc.pid if self.proc else None, "exit_code": rc, "slot": self.index})
            if self.owner.on_ended is not None and self.proc is not None:
                try:
                    self.owner.on_ended(self.proc.pid)
                except Exception:
                    log.exception("clean-up after an ingest process ended failed")
            if self.owner.on_restart is not None:
                try:
                    self.owner.on_restart()
                except Exception:
                    log.exception("reconcile after an ingest process ended failed")
            if time.monotonic() - self._started_at > _STABLE_S:
                delay = _RESTART_MIN_S
            if self.owner._stopping.wait(delay):
                return
            delay = min(delay * 2, _RESTART_MAX_S)
            try:
                self.spawn()
            except OSError:
                log.exception("ingest process could not be started again; retrying", extra={"slot": self.index})
