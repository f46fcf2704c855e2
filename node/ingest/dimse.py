"""The DIMSE listener: C-ECHO and C-STORE for cardiac XA / CT / MR into the durable spool.

* Presentation contexts: XA, Enhanced XA, CT, Enhanced CT, MR, Enhanced MR
  Image Storage and Verification, each with the transfer syntaxes listed in
  :data:`TRANSFER_SYNTAXES`; other abstract syntaxes are rejected per context
  at association time ("abstract syntax not supported").  A C-STORE that still
  names another SOP class gets 0x0122 (SOP Class Not Supported).  The classes of
  the node's own results (SR, SEG, Secondary Capture) are negotiated only so that
  those results sent back get Success, unstored (:func:`returned_result`);
  any other instance of them gets 0x0122.
* Datasets are streamed by pynetdicom to a file in the spool's ``.incoming``
  folder (:mod:`node.ingest.transport`) and renamed into the spool as received;
  only the header is parsed.  Success is answered after the file is durable.
* Connections: admitted at accept time (:mod:`node.ingest.guard`: allow-list by
  address, connections still negotiating per address and in total); every phase
  has a deadline (A-ASSOCIATE-RQ, each PDU, idle between messages).
* Association checks: calling AE allow-list (``node.allowed_callers``,
  "AE" or "AE@host") -> rejected-permanent / service-user / calling AE not
  recognised; called AE (``node.check_called_ae``) -> called AE not
  recognised; ``node.max_associations`` (negotiated associations) ->
  rejected-transient / local limit.
* Optional TLS from ``node.tls``.
* Statuses: 0xA700 when the spool is short of space (before anything is
  stored, or ENOSPC on the way), 0xC210 for a malformed/truncated dataset,
  0xA900 when the dataset's SOP Class/Instance differs from the request,
  0x0111 for a SOP Instance UID stored under another study, 0xC211 for an
  unexpected error.  One log line per refusal, UIDs only.
"""
from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any, Callable, cast

from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # generated at import, not in the stubs
from pynetdicom.transport import ThreadedAssociationServer

from ..config import NodeSection, TLSSection
from ..dicom_header import read_header
from ..spool import OutOfSpaceError, OwnResultError, Spool, SpoolError, StoredInstance, is_out_of_space
from .admission import RESULT_SOP_CLASSES, STORAGE_SOP_CLASSES, TRANSFER_SYNTAXES, IngestMetrics, own_result_returned
from .guard import ConnectionGuard
from .policy import CallerPolicy
from .transport import (
    GuardedServer, Limits, drop_unnegotiated, quiet_pdu_logging, stream_datasets_to_spool, streamed_file,
)

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


def _dataset_path(event: Event) -> Path | None:
    """Where pynetdicom streamed an ``EVT_C_STORE``'s dataset, or None when it kept it in memory."""
    try:
        path = event.dataset_path  # None, or AttributeError, when not streamed
    except AttributeError:
        return None
    return None if path is None else Path(path)


def store_event(spool: Spool, event: Event, *, calling_ae: str, source: str) -> StoredInstance:
    """Store the dataset of an ``EVT_C_STORE`` as received, checked against the request's UIDs.

    Works whether pynetdicom streamed the dataset to a temporary file
    (``STORE_RECV_CHUNKED_DATASET``, process-wide once a :class:`DimseServer`
    has started) or kept it in memory.  Used by the listener and by C-GET /
    C-MOVE retrieval (``node.retrieve``), so both follow the same rules.
    """
    req = cast(C_STORE, event.request)  # an EVT_C_STORE's; pynetdicom types it as any DIMSE request
    expect = {"expect_sop_class": str(req.AffectedSOPClassUID),
              "expect_sop_instance": str(req.AffectedSOPInstanceUID)}
    path = _dataset_path(event)
    streamed = streamed_file(req)
    if streamed is not None and streamed.error is not None:
        streamed.discard()
        raise streamed.error  # e.g. ENOSPC while the dataset arrived: 0xA700, nothing left behind
    if path is None:
        return spool.store_stream(event.file_meta, event.encoded_dataset(include_meta=False),
                                  calling_ae=calling_ae, source=source, **expect)
    try:
        return spool.store_file(path, calling_ae, source, move=True, **expect)
    finally:  # pynetdicom removes it after a listener's handler, not after a C-GET sub-operation's
        path.unlink(missing_ok=True)


def returned_result(spool: Spool, event: Event) -> OwnResultError | None:
    """The node's own result carried by an ``EVT_C_STORE`` (recorded by SOP Instance UID, or by
    series), or None.  Reads only the header of the streamed dataset; stores nothing."""
    req = cast(C_STORE, event.request)
    sop_uid = str(req.AffectedSOPInstanceUID)
    series = study = ""
    path = _dataset_path(event)
    try:
        if path is not None:
            header = read_header(path)
            series, study = header.series, header.study
        else:
            ds = event.dataset
            series, study = str(ds.get("SeriesInstanceUID", "")), str(ds.get("StudyInstanceUID", ""))
    except Exception:  # unreadable: judged by its SOP Instance UID alone
        pass
    if spool.is_own_result(sop_uid, series):
        return OwnResultError(sop_uid, series, study)
    return None


def status_for_error(exc: BaseException) -> int:
    """The C-STORE failure status for an exception from :func:`store_event`."""
    if isinstance(exc, SpoolError):
        return exc.status
    if is_out_of_space(exc):
        return STATUS_OUT_OF_RESOURCES
    return STATUS_PROCESSING_FAILURE


class _NodeAE(AE):
    """pynetdicom AE with the node's transport (:mod:`node.ingest.transport`) and checks.

    * the calling-AE allow-list depends on the caller's address: pynetdicom checks
      ``require_calling_aet`` while negotiating, in the association's own thread, so the requestor's
      address is known there;
    * connections still waiting for their A-ASSOCIATE-RQ do not count as active associations (they
      are bounded by the :class:`~node.ingest.guard.ConnectionGuard` instead), so silent connections
      cannot use up ``node.max_associations``;
    * servers are :class:`~node.ingest.transport.GuardedServer`.
    """

    def __init__(self, ae_title: str, policy: CallerPolicy, guard: ConnectionGuard, limits: Limits) -> None:
        self._policy = policy
        self._guard = guard
        self._limits = limits
        super().__init__(ae_title=ae_title)  # sets require_calling_aet = [] (an open policy): undone below
        self._policy = policy
        guard.policy = policy
        self.listen_socket: socket.socket | None = None  # accept on this one instead of binding

    @property
    def active_associations(self) -> list[Association]:
        return [a for a in super().active_associations
                if not (a.is_acceptor and a.requestor.primitive is None)]

    def make_server(self, address: tuple[str, int] | tuple[str, int, int, int], ae_title: str | None = None,
                    contexts: list[PresentationContext] | None = None, ssl_context: ssl.SSLContext | None = None,
                    evt_handlers: list[EventHandlerType] | None = None, server_class: object = None,
                    **kwargs: Any) -> ThreadedAssociationServer:
        return super().make_server(address, ae_title, contexts, ssl_context, evt_handlers,
                                   server_class=GuardedServer, guard=self._guard, limits=self._limits,
                                   listen_socket=self.listen_socket)

    @property
    def require_calling_aet(self) -> list[str]:
        if self._policy.open:
            return []
        current = threading.current_thread()
        address = current.requestor.address if isinstance(current, Association) else None
        return self._policy.titles_for(address) or [_NO_CALLER]

    @require_calling_aet.setter
    def require_calling_aet(self, ae_titles: list[str]) -> None:  # pynetdicom's AE.__init__ sets []
        policy = CallerPolicy.from_config(ae_titles)
        self._policy = policy
        self._guard.policy = policy


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


def build_storage_ae(node: NodeSection, spool: Spool, logger: logging.Logger | None = None) -> _NodeAE:
    """The acceptor AE: contexts, AE-title checks, connection guard, association limit, PDU size and
    timeouts (handlers are bound when the server starts)."""
    policy = CallerPolicy.from_config(node.allowed_callers)
    guard = ConnectionGuard(policy, node.max_pending_per_host, node.max_pending, node.association_timeout_s)
    limits = Limits(pdu_timeout_s=node.pdu_timeout_s, max_pdu=node.max_pdu, incoming_dir=spool.incoming)
    ae = _NodeAE(node.ae_title, policy, guard, limits)
    ae.require_called_aet = node.check_called_ae
    ae.maximum_associations = node.max_associations
    ae.maximum_pdu_size = node.max_pdu
    ae.acse_timeout = node.association_timeout_s  # ARTIM: A-ASSOCIATE-RQ / A-RELEASE-RP waits
    ae.dimse_timeout = node.idle_timeout_s
    ae.network_timeout = node.idle_timeout_s  # established association without a PDU: A-ABORT
    ae.add_supported_context(Verification)
    for uid in (*STORAGE_SOP_CLASSES, *RESULT_SOP_CLASSES):
        ae.add_supported_context(uid, TRANSFER_SYNTAXES)
    return ae


class DimseServer:
    """C-ECHO / C-STORE SCP in front of a :class:`Spool`; ``start()`` / ``stop(graceful)``.

    ``port`` is the bound port (``node.port`` 0 picks a free one).  ``listen_socket`` (optional):
    accept on this listening socket, shared with other ingest processes, instead of binding one.  ``metrics``
    (optional) gets ``instance_received("dimse", nbytes)`` per stored instance.
    """

    def __init__(self, node: NodeSection, spool: Spool, *, logger: logging.Logger | None = None,
                 metrics: IngestMetrics | None = None, on_association: Callable[[dict[str, Any]], None] | None = None,
                 on_rejected: Callable[[str, str, str], None] | None = None,
                 listen_socket: socket.socket | None = None) -> None:
        self.node = node
        self.listen_socket = listen_socket  # shared with other ingest processes (node.ingest.workers)
        self.spool = spool
        self.log = logger or log
        self.metrics = metrics
        # audit trail: on_association(summary) once per association that sent C-STOREs, when it ends
        # (calling/called AE, address, released/aborted, {study: instances stored}, refused);
        # on_rejected(calling AE, called AE, address)
        self.on_association = on_association
        self.on_rejected = on_rejected
        self._tally: dict[int, dict[str, Any]] = {}
        self._tally_lock = threading.Lock()
        self.ae: _NodeAE | None = None
        self._server: ThreadedAssociationServer | None = None
        self._busy: dict[int, int] = {}  # id(assoc) -> C-STOREs being handled
        self._busy_cond = threading.Condition()
        self._stopping = False

    # ------------------------------------------------------------------ lifecycle
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("DIMSE server not started")
        return int(self._server.server_address[1])

    def connection_counts(self) -> dict[str, int]:
        """Live connections: ``negotiating`` (admitted, no complete A-ASSOCIATE-RQ yet) and
        ``associations`` (acceptor threads past that point)."""
        if self._server is None or self.ae is None:
            return {"negotiating": 0, "associations": 0}
        alive = [a for a in self._server.active_associations if a.is_alive()]
        return {"negotiating": self.ae._guard.pending(),
                "associations": sum(1 for a in alive if a.requestor.primitive is not None)}

    def start(self) -> "DimseServer":
        # Stream datasets to a file in the spool instead of memory (process-wide pynetdicom setting).
        stream_datasets_to_spool()
        self.ae = build_storage_ae(self.node, self.spool, self.log)
        self.ae.listen_socket = self.listen_socket
        ssl_context = build_ssl_context(self.node.tls) if self.node.tls is not None else None
        handlers: list[EventHandlerType] = [
            (evt.EVT_C_ECHO, self._handle_echo),
            (evt.EVT_C_STORE, self._handle_store),
            (evt.EVT_CONN_OPEN, self._handle_conn_open),
            (evt.EVT_REJECTED, self._handle_rejected),
            (evt.EVT_RELEASED, self._handle_ended),
            (evt.EVT_ABORTED, self._handle_ended),
        ]
        self._server = self.ae.start_server((self.node.host, self.node.port), block=False,
                                            evt_handlers=handlers, ssl_context=ssl_context)
        if self._server is None:  # pynetdicom returns None only when block=True
            raise RuntimeError("pynetdicom returned no server for a non-blocking start")
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
                    drop_unnegotiated(assoc)
            if time.monotonic() >= deadline + 5:
                break
            time.sleep(0.02)
        if self.ae is not None:
            self.ae.shutdown()
        self.log.info("DIMSE listener stopped")

    def __enter__(self) -> "DimseServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ handlers
    def _handle_conn_open(self, event: Event) -> None:
        quiet_pdu_logging(event.assoc)

    def _handle_rejected(self, event: Event) -> None:
        req = event.assoc.requestor
        self.log.warning("association rejected", extra={"calling_ae": str(req.ae_title).strip(),
                                                        "called_ae": str(event.assoc.acceptor.ae_title).strip(),
                                                        "address": req.address})
        if self.on_rejected is not None:
            try:
                self.on_rejected(str(req.ae_title).strip(), str(event.assoc.acceptor.ae_title).strip(),
                                 f"{req.address}:{req.port}")
            except Exception:
                self.log.exception("on_rejected hook failed")

    def _count(self, assoc: Association, study_uid: str | None) -> None:
        """Tally one C-STORE of ``assoc``: stored for ``study_uid``, or refused (None)."""
        if self.on_association is None:
            return
        with self._tally_lock:
            tally = self._tally.setdefault(id(assoc), {"studies": {}, "refused": 0})
            if study_uid is None:
                tally["refused"] += 1
            else:
                tally["studies"][study_uid] = tally["studies"].get(study_uid, 0) + 1

    def _handle_ended(self, event: Event) -> None:
        with self._tally_lock:
            tally = self._tally.pop(id(event.assoc), None)
        if tally is None or self.on_association is None:
            return
        req = event.assoc.requestor
        try:
            self.on_association({
                "calling_ae": str(req.ae_title).strip(), "called_ae": str(event.assoc.acceptor.ae_title).strip(),
                "address": f"{req.address}:{req.port}",
                "ended": "aborted" if event.event.name == "EVT_ABORTED" else "released", **tally})
        except Exception:
            self.log.exception("on_association hook failed")

    def _handle_echo(self, event: Event) -> int:
        return STATUS_SUCCESS

    def _handle_store(self, event: Event) -> int:
        req = cast(C_STORE, event.request)  # EVT_C_STORE; pynetdicom types it as any DIMSE request
        sop_class = str(req.AffectedSOPClassUID)
        sop_uid = str(req.AffectedSOPInstanceUID)
        calling_ae = str(event.assoc.requestor.ae_title).strip()
        key = id(event.assoc)
        if sop_class in RESULT_SOP_CLASSES and str(event.context.abstract_syntax) == sop_class:
            return self._result_class(event, sop_class, sop_uid, calling_ae)
        if sop_class not in STORAGE_SOP_CLASSES or str(event.context.abstract_syntax) != sop_class:
            self._refused(STATUS_SOP_CLASS_NOT_SUPPORTED, "SOP class not supported", sop_class, sop_uid, calling_ae)
            self._count(event.assoc, None)
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

    def _result_class(self, event: Event, sop_class: str, sop_uid: str, calling_ae: str) -> int:
        """An SR, SEG or Secondary Capture: Success when it is one of the node's own results (by SOP
        Instance UID, or by series from its header), never stored; 0x0122 for anything else."""
        own = returned_result(self.spool, event)
        if own is not None:
            own_result_returned(self.log, self.metrics, own, source="dimse", calling_ae=calling_ae)
            self._count(event.assoc, None)
            return STATUS_SUCCESS
        self._refused(STATUS_SOP_CLASS_NOT_SUPPORTED, "SOP class not stored by this node (only its own results "
                      "are answered, as stored)", sop_class, sop_uid, calling_ae)
        self._count(event.assoc, None)
        return STATUS_SOP_CLASS_NOT_SUPPORTED

    def _store(self, event: Event, sop_class: str, sop_uid: str, calling_ae: str) -> int:
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
            self._count(event.assoc, None)
            return status
        self._count(event.assoc, stored.study_instance_uid)
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
