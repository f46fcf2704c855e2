"""One ingest process (``node.ingest_processes`` > 1): a DIMSE listener on a listening socket shared
with the other ingest processes, storing into the node's spool and index; started and supervised by
:class:`node.ingest.workers.IngestWorkers`.

    python -m node.ingest.worker LISTEN_FD EVENTS_FD   (the node section as JSON on stdin)

Each process stores an instance exactly as the single-process listener does (:class:`~node.spool.Spool`:
file fsync, rename, directory fsync, index row committed in the shared SQLite database, WAL with a
busy timeout) before the success status.  What the main process must hear about is written to
``EVENTS_FD`` as one JSON line per event, before the C-STORE response for a stored instance:
``{"event": NAME, "args": [...]}`` with NAME ``ready``, ``stored`` (a :class:`~node.spool.StoredInstance`),
``instance_received``, ``own_result_returned``, ``association``, ``rejected``.

The process ends on SIGTERM (graceful: the C-STOREs being handled finish and are answered) and
at once when its stdin reaches end of file, i.e. when the main process is gone (kill -9 included):
an ingest process never acknowledges instances that no node will process, and the port is free
for the next start.  Whatever it leaves (a temporary file, an instance indexed but not yet reported)
is repaired by the main process's start-up (:meth:`~node.spool.Spool.recover`, completion
``reconcile``), as after a kill -9 of a single-process node.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any, BinaryIO

from ..config import NodeSection, parse_config
from ..logging_setup import setup_logging
from ..spool import Spool, StoredInstance
from ..state import OwnResults
from .dimse import DimseServer

__all__ = ["EventWriter", "instance_from_event", "main"]

log = logging.getLogger("cardionode.ingest")


class EventWriter:
    """Writes events for the main process, one JSON line each, whole lines under a lock (several
    associations report at once).  A failed write (main process gone) is logged once and dropped:
    the instance is stored and indexed, and the next start reconciles it."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._broken = False

    def emit(self, event: str, *args: Any) -> None:
        line = json.dumps({"event": event, "args": list(args)}, default=str).encode("utf-8") + b"\n"
        with self._lock:
            if self._broken:
                return
            try:
                self._stream.write(line)
                self._stream.flush()
            except OSError as exc:
                self._broken = True
                log.warning("ingest process: cannot report to the main process", extra={"error": str(exc)})

    # the DimseServer / Spool hooks, forwarded
    def stored(self, inst: StoredInstance) -> None:
        self.emit("stored", dataclasses.asdict(inst))

    def instance_received(self, source: str, nbytes: int) -> None:
        self.emit("instance_received", source, nbytes)

    def own_result_returned(self, source: str) -> None:
        self.emit("own_result_returned", source)

    def association(self, summary: dict[str, Any]) -> None:
        self.emit("association", summary)

    def rejected(self, calling_ae: str, called_ae: str, address: str) -> None:
        self.emit("rejected", calling_ae, called_ae, address)


def instance_from_event(fields: dict[str, Any]) -> StoredInstance:
    """The :class:`StoredInstance` of a ``stored`` event (the main process's side of :meth:`EventWriter.stored`)."""
    return StoredInstance(**{**fields, "path": Path(fields["path"])})


def _read_config() -> NodeSection:
    """The node section, one JSON line on stdin (read unbuffered: stdin stays the parent watch)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(0, 65536)
        if not chunk:
            raise SystemExit("ingest process: no configuration on stdin")
        data += chunk
    return parse_config({"node": json.loads(data)}).node


def _exit_when_parent_gone() -> None:
    """Block on stdin; at end of file (the main process ended, however) leave at once."""
    try:
        while os.read(0, 65536):
            pass
    finally:
        os._exit(0)


def serve(node: NodeSection, listen_fd: int, events: EventWriter) -> int:
    """Serve DIMSE on the shared socket until SIGTERM; returns the exit status."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the main process, which stops us
    own_results = OwnResults(node.storage_path)
    spool = Spool(node.storage_path, node.min_free_mb, on_stored=events.stored, own_results=own_results,
                  group_commit=node.group_commit)
    sock = socket.socket(fileno=listen_fd)
    server = DimseServer(node, spool, metrics=events, on_association=events.association,
                         on_rejected=events.rejected, listen_socket=sock)
    try:
        server.start()
        events.emit("ready", os.getpid())
        while not stop.wait(1.0):
            pass
        server.stop(graceful=True)
    finally:
        spool.close()
        own_results.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    listen_fd, events_fd = int(args[0]), int(args[1])
    node = _read_config()
    setup_logging(node.log_format, node.log_level)
    threading.Thread(target=_exit_when_parent_gone, name="parent-watch", daemon=True).start()
    events = EventWriter(os.fdopen(events_fd, "wb"))
    return serve(node, listen_fd, events)


if __name__ == "__main__":
    sys.exit(main())
