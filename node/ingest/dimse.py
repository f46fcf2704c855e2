"""The DIMSE listener: C-ECHO and C-STORE for cardiac XA / CT / MR into the durable spool.

* Presentation contexts: XA, Enhanced XA, CT, Enhanced CT, MR, Enhanced MR
  Image Storage and Verification, each with the transfer syntaxes listed in
  :data:`TRANSFER_SYNTAXES`; other abstract syntaxes are rejected per context
  at association time ("abstract syntax not supported").  A C-STORE that still
  names another SOP class gets 0x0122 (SOP Class Not Supported).
* Datasets are streamed by pynetdicom to a temporary file
  (``_config.STORE_RECV_CHUNKED_DATASET``, set process-wide by
  :meth:`DimseServer.start`) and moved into the spool as received; only the
  header is parsed.  Success is answered after the file is durable.
* Association checks: calling AE allow-list (``node.allowed_callers``,
  "AE" or "AE@host") -> rejected-permanent / service-user / calling AE not
  recognised; called AE (``node.check_called_ae``) -> called AE not
  recognised; ``node.max_associations`` -> rejected-transient / local limit.
* Optional TLS from ``node.tls``.
* Statuses: 0xA700 when the spool is short of space (checked before
  anything is written to it), 0xC210 for a malformed/truncated dataset,
  0xA900 when the dataset's SOP Class/Instance differs from the request,
  0xC211 for an unexpected error.  One log line per refusal, UIDs only.
"""
from __future__ import annotations

import errno
import logging
import queue
import select
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

from pynetdicom import AE, _config, _handlers, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification
from pynetdicom.transport import AssociationSocket

from ..config import NodeSection, TLSSection
from ..spool import OutOfSpaceError, OwnResultError, Spool, SpoolError, StoredInstance
from .policy import CallerPolicy
from .admission import STORAGE_SOP_CLASSES, TRANSFER_SYNTAXES, own_result_returned

__all__ = [
    "STORAGE_SOP_CLASSES",
    "TRANSFER_SYNTAXES",
    "DimseServer",
    "build_storage_ae",
    "build_ssl_context",
    "store_event",
    "status_for_error",
]

log = logging.getLogger("cardionode.ingest")

STATUS_SUCCESS = 0x0000
STATUS_SOP_CLASS_NOT_SUPPORTED = 0x0122
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_PROCESSING_FAILURE = 0xC211
_NO_CALLER = "\\"  # never a valid AE title: nobody matches


def store_event(spool: Spool, event: Any, *, calling_ae: str, source: str) -> StoredInstance:
    """Store the dataset of an ``EVT_C_STORE`` as received, checked against the request's UIDs.

    Works whether pynetdicom streamed the dataset to a temporary file
    (``STORE_RECV_CHUNKED_DATASET``, process-wide once a :class:`DimseServer`
    has started) or kept it in memory.  Used by the listener and by C-GET /
    C-MOVE retrieval (``node.retrieve``), so both follow the same rules.
    """
    req = event.request
    expect = {"expect_sop_class": str(req.AffectedSOPClassUID),
              "expect_sop_instance": str(req.AffectedSOPInstanceUID)}
    try:
        path = event.dataset_path
    except AttributeError:
        path = None
    if path is None:
        return spool.store_stream(event.file_meta, event.encoded_dataset(include_meta=False),
                                  calling_ae=calling_ae, source=source, **expect)
    try:
        return spool.store_file(path, calling_ae, source, move=True, **expect)
    finally:  # pynetdicom removes it after a listener's handler, not after a C-GET sub-operation's
        Path(path).unlink(missing_ok=True)


def status_for_error(exc: BaseException) -> int:
    """The C-STORE failure status for an exception from :func:`store_event`."""
    if isinstance(exc, SpoolError):
        return exc.status
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return STATUS_OUT_OF_RESOURCES
    return STATUS_PROCESSING_FAILURE


# pynetdicom's standard logging handlers: they format every PDU and DIMSE message (pydicom
# attribute lookups included) even when the "pynetdicom" logger drops the result.
_PYNETDICOM_LOG_HANDLERS = (
    (evt.EVT_PDU_RECV, _handlers.standard_pdu_recv_handler),
    (evt.EVT_PDU_SENT, _handlers.standard_pdu_sent_handler),
    (evt.EVT_DIMSE_RECV, _handlers.standard_dimse_recv_handler),
    (evt.EVT_DIMSE_SENT, _handlers.standard_dimse_sent_handler),
)
_POLL_S = 0.005  # longest wait in select: data and outgoing primitives wake it; timers are checked this often
_LOOP_DELAY_S = 0.0  # pause of the DUL loop between empty rounds (pynetdicom: 1 ms); ready() does the waiting


class _WakingQueue(queue.Queue):
    """The DUL's outgoing-primitive queue: a put also wakes the DUL thread waiting in ``select``."""

    def __init__(self, wake: socket.socket) -> None:
        super().__init__()
        self._wake = wake

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        try:
            self._wake.send(b"\0")
        except OSError:  # connection closed (pair closed) or the wake buffer is full: the DUL polls anyway
            pass


class _WaitingSocket(AssociationSocket):
    """pynetdicom's association socket whose ``ready`` waits in ``select`` for data *or* an outgoing
    primitive (up to :data:`_POLL_S`), instead of pynetdicom's check-then-sleep-1-ms loop.

    pynetdicom's DUL thread asks ``ready`` and, when nothing happened, sleeps ``_run_loop_delay``
    (1 ms) before asking again: the next C-STORE request waited 0.5-1 ms on average before it was
    even read, and so did each response.  Here the thread sleeps inside ``select`` and wakes at
    once; an idle association polls at 200 Hz instead of about 1 kHz.  Installed by :func:`_wait_in_select`.
    """

    _wake_r: socket.socket
    _wake_w: socket.socket

    @property
    def ready(self) -> bool:
        sock = self.socket
        if sock is None or self._is_connected is False:
            time.sleep(_POLL_S)  # keep the DUL loop paced while the connection goes away
            return False
        if isinstance(sock, ssl.SSLSocket) and sock.pending():  # buffered TLS data select cannot see
            return True
        try:
            readable, _, _ = select.select([sock, self._wake_r], [], [], _POLL_S)
        except (OSError, TimeoutError, ValueError):
            self.event_queue.put("Evt17")  # Evt17: transport connection closed (as pynetdicom does)
            return False
        if self._wake_r in readable:
            try:
                while self._wake_r.recv(4096):
                    pass
            except OSError:  # drained (non-blocking)
                pass
        return sock in readable

    def close(self) -> None:
        super().close()
        for s in (self._wake_r, self._wake_w):
            s.close()


def _wait_in_select(assoc: Association) -> None:
    """Make an accepted association's DUL thread wait in ``select`` (see :class:`_WaitingSocket`).

    Called from ``EVT_CONN_OPEN``, before the association's threads start; leaves any socket
    class other than pynetdicom's own alone.
    """
    dul = assoc.dul
    sock = dul.socket
    if type(sock) is not AssociationSocket or not dul.to_provider_queue.empty():
        return
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    sock.__class__ = _WaitingSocket
    sock._wake_r, sock._wake_w = wake_r, wake_w
    dul.to_provider_queue = _WakingQueue(wake_w)
    dul._run_loop_delay = _LOOP_DELAY_S


class _NodeAE(AE):
    """pynetdicom AE whose calling-AE allow-list depends on the caller's address.

    pynetdicom checks ``require_calling_aet`` while negotiating, in the
    association's own thread, so the requestor's address is known there.
    """

    def __init__(self, ae_title: str, policy: CallerPolicy) -> None:
        super().__init__(ae_title=ae_title)
        self._policy = policy

    @property  # type: ignore[override]
    def require_calling_aet(self) -> list[str]:
        if self._policy.open:
            return []
        current = threading.current_thread()
        address = current.requestor.address if isinstance(current, Association) else None
        return self._policy.titles_for(address) or [_NO_CALLER]

    @require_calling_aet.setter
    def require_calling_aet(self, ae_titles: list[str]) -> None:
        self._policy = CallerPolicy.from_config(ae_titles)


def build_ssl_context(tls: TLSSection) -> ssl.SSLContext:
    """Server-side TLS context from ``node.tls`` (client certificates optional or required)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(tls.certificate, tls.private_key)
    if tls.ca_certificates:
        ctx.load_verify_locations(cafile=tls.ca_certificates)
    if tls.require_client_certificate:
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def build_storage_ae(node: NodeSection, spool: Spool | None = None, logger: logging.Logger | None = None) -> AE:
    """The acceptor AE: contexts, AE-title checks, association limit, PDU size and timeouts.

    ``spool`` and ``logger`` are accepted for symmetry with :class:`DimseServer`
    (handlers are bound when the server starts).
    """
    ae = _NodeAE(node.ae_title, CallerPolicy.from_config(node.allowed_callers))
    ae.require_called_aet = node.check_called_ae
    ae.maximum_associations = node.max_associations
    ae.maximum_pdu_size = node.max_pdu
    ae.acse_timeout = 30
    ae.dimse_timeout = 120
    ae.network_timeout = 120
    ae.add_supported_context(Verification)
    for uid in STORAGE_SOP_CLASSES:
        ae.add_supported_context(uid, TRANSFER_SYNTAXES)
    return ae


class DimseServer:
    """C-ECHO / C-STORE SCP in front of a :class:`Spool`; ``start()`` / ``stop(graceful)``.

    ``port`` is the bound port (``node.port`` 0 picks a free one).  ``metrics``
    (optional) gets ``instance_received("dimse", nbytes)`` per stored instance.
    """

    def __init__(self, node: NodeSection, spool: Spool, *, logger: logging.Logger | None = None,
                 metrics: Any = None) -> None:
        self.node = node
        self.spool = spool
        self.log = logger or log
        self.metrics = metrics
        self.ae: AE | None = None
        self._server: Any = None
        self._busy: dict[int, int] = {}  # id(assoc) -> C-STOREs being handled
        self._busy_cond = threading.Condition()
        self._stopping = False

    # ------------------------------------------------------------------ lifecycle
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("DIMSE server not started")
        return int(self._server.server_address[1])

    def start(self) -> "DimseServer":
        # Stream datasets to a temporary file instead of memory (process-wide pynetdicom setting).
        _config.STORE_RECV_CHUNKED_DATASET = True
        self.ae = build_storage_ae(self.node, self.spool, self.log)
        ssl_context = build_ssl_context(self.node.tls) if self.node.tls is not None else None
        handlers = [
            (evt.EVT_C_ECHO, self._handle_echo),
            (evt.EVT_C_STORE, self._handle_store),
            (evt.EVT_CONN_OPEN, self._handle_conn_open),
            (evt.EVT_REJECTED, self._handle_rejected),
        ]
        self._server = self.ae.start_server((self.node.host, self.node.port), block=False,
                                            evt_handlers=handlers, ssl_context=ssl_context)
        self.log.info("DIMSE listener started", extra={"ae_title": self.node.ae_title, "host": self.node.host,
                                                       "port": self.port, "tls": ssl_context is not None})
        return self

    def stop(self, graceful: bool = True, timeout: float = 30.0) -> None:
        """Stop accepting; with ``graceful`` the C-STOREs being handled finish (and get their
        response) before the remaining associations are aborted."""
        if self._server is None:
            return
        self._stopping = True
        server, self._server = self._server, None
        server.shutdown()  # no new connections
        deadline = time.monotonic() + (timeout if graceful else 0.0)
        woken: set[int] = set()
        while True:
            remaining = [a for a in server.active_associations if a.is_alive()]
            if not remaining:
                break
            for assoc in remaining:
                with self._busy_cond:
                    busy = self._busy.get(id(assoc), 0)
                if (busy == 0 or time.monotonic() >= deadline) and assoc.is_established:
                    assoc.abort()
                elif assoc.requestor.primitive is None and id(assoc) not in woken:
                    # no A-ASSOCIATE-RQ yet (a junk or silent peer, connected or gone): pynetdicom waits
                    # acse_timeout for one, its DUL thread may sit in recv() on a half PDU, and
                    # Association.kill() spins while that connection is open.  Shut the socket (recv
                    # returns), stop the DUL thread, end the wait as a timeout would.
                    woken.add(id(assoc))
                    self._drop_unnegotiated(assoc)
            if time.monotonic() >= deadline + 5:
                break
            time.sleep(0.02)
        if self.ae is not None:
            self.ae.shutdown()
        self.log.info("DIMSE listener stopped")

    @staticmethod
    def _drop_unnegotiated(assoc: Association) -> None:
        sock = getattr(assoc.dul.socket, "socket", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        assoc.dul.kill_dul()
        assoc.dul.to_user_queue.put(None)

    def __enter__(self) -> "DimseServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ handlers
    def _handle_conn_open(self, event: Any) -> None:
        try:  # responses are small; do not let Nagle hold them back
            event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (AttributeError, OSError):
            pass
        _wait_in_select(event.assoc)
        if not logging.getLogger("pynetdicom").isEnabledFor(logging.INFO):  # its output would be dropped
            for pdu_event, handler in _PYNETDICOM_LOG_HANDLERS:
                event.assoc.unbind(pdu_event, handler)

    def _handle_rejected(self, event: Any) -> None:
        req = event.assoc.requestor
        self.log.warning("association rejected", extra={"calling_ae": str(req.ae_title).strip(),
                                                        "called_ae": str(event.assoc.acceptor.ae_title).strip(),
                                                        "address": req.address})

    def _handle_echo(self, event: Any) -> int:
        return STATUS_SUCCESS

    def _handle_store(self, event: Any) -> int:
        req = event.request
        sop_class = str(req.AffectedSOPClassUID)
        sop_uid = str(req.AffectedSOPInstanceUID)
        calling_ae = str(event.assoc.requestor.ae_title).strip()
        key = id(event.assoc)
        if sop_class not in STORAGE_SOP_CLASSES or str(event.context.abstract_syntax) != sop_class:
            self._refused(STATUS_SOP_CLASS_NOT_SUPPORTED, "SOP class not supported", sop_class, sop_uid, calling_ae)
            return STATUS_SOP_CLASS_NOT_SUPPORTED
        with self._busy_cond:
            self._busy[key] = self._busy.get(key, 0) + 1
        try:
            return self._store(event, sop_class, sop_uid, calling_ae)
        finally:
            with self._busy_cond:
                self._busy[key] -= 1
                if not self._busy[key]:
                    del self._busy[key]
                self._busy_cond.notify_all()

    def _store(self, event: Any, sop_class: str, sop_uid: str, calling_ae: str) -> int:
        try:
            if not self.spool.has_space():
                raise OutOfSpaceError(f"less than {self.spool.min_free_mb} MB free in the spool")
            stored = store_event(self.spool, event, calling_ae=calling_ae, source="dimse")
        except OwnResultError as own:
            own_result_returned(self.log, self.metrics, own, source="dimse", calling_ae=calling_ae)
            return STATUS_SUCCESS
        except Exception as exc:  # keep serving; the sender gets a failure status
            status = status_for_error(exc)
            if status == STATUS_PROCESSING_FAILURE and not isinstance(exc, OSError):
                self.log.exception("C-STORE failed", extra={"sop_instance": sop_uid, "sop_class": sop_class,
                                                            "calling_ae": calling_ae})
            else:
                reason = f"{type(exc).__name__}: {exc.strerror or exc}" if isinstance(exc, OSError) else str(exc)
                self._refused(status, reason, sop_class, sop_uid, calling_ae)
            return status
        if self.metrics is not None:
            try:
                self.metrics.instance_received("dimse", stored.size)
            except Exception:
                self.log.exception("metrics update failed")
        return STATUS_SUCCESS

    def _refused(self, status: int, reason: str, sop_class: str, sop_uid: str, calling_ae: str) -> None:
        self.log.warning("C-STORE refused", extra={"status": f"0x{status:04X}", "reason": reason,
                                                   "sop_instance": sop_uid, "sop_class": sop_class,
                                                   "calling_ae": calling_ae})
