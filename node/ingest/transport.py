"""The listener's transport: pynetdicom's acceptor with every wait bounded and datasets streamed into the spool.

pynetdicom 3.0 (pinned to 3.0.x: these parts reach into its DUL) accepts a connection in its server
thread, then runs an ``Association`` thread and a DUL thread per connection.  Replaced here:

* **accept** (:class:`GuardedServer`): :class:`~node.ingest.guard.ConnectionGuard` admits or closes
  the connection before anything is read (allow-list by address, pre-association connections per
  address and in total); the TLS handshake runs in the connection's own thread with the association
  deadline (pynetdicom does it in the accept loop, where one silent TLS client stops every accept);
* **socket** (:class:`WaitingSocket`): the DUL thread waits in ``select`` for data *or* an outgoing
  primitive instead of pynetdicom's check-then-sleep-1-ms loop; sends time out
  (``node.pdu_timeout_s``) instead of blocking on a peer that does not read;
* **association thread** (:class:`WaitingAssociation`): waits for the next DIMSE message, release
  or abort instead of pynetdicom's sleep-1-ms-then-check loop;
* **PDU reading** (:class:`GuardedDUL`): a started PDU must be complete within
  ``node.pdu_timeout_s``, the A-ASSOCIATE-RQ within ``node.association_timeout_s`` of the accept
  and 1 MiB; pynetdicom blocked in ``recv()`` forever on half a PDU, and the association slot and
  socket were never freed.  A connection that overruns is closed at once (an established one gets
  an A-ABORT first) and one log line says why;
* **dataset stream** (:class:`IncomingFile`): the C-STORE dataset pynetdicom streams to a file goes
  to ``spool/.incoming`` (the spool renames it into place; :meth:`node.spool.Spool.recover` removes
  what a crash leaves) instead of ``$TMPDIR``; a write error such as ENOSPC is recorded for the
  C-STORE handler (0xA700) instead of killing the DUL thread ("peer aborted"), and a partial file
  is removed when its association ends;
* **DIMSE decoding** (:class:`GuardedDIMSE`): a P-DATA that does not decode into a DIMSE message
  aborts the association cleanly instead of ending the DUL thread with an exception; a plain
  C-STORE-RSP is encoded directly (:func:`store_rsp_command_set`) instead of through a pydicom
  ``Dataset``.

* **logging** (:func:`quiet_pdu_logging`): pynetdicom's standard PDU/DIMSE log handlers are unbound
  when their output would be dropped (they format every message whatever the log level);
* **stop** (:func:`drop_unnegotiated`): a connection that never sent its A-ASSOCIATE-RQ is shut
  down at stop instead of waiting ``acse_timeout`` in pynetdicom.

pynetdicom's own timers do the rest: ARTIM (``node.association_timeout_s``) and the network idle
timer (``node.idle_timeout_s``: an established association without a PDU is aborted).

Every use of pynetdicom's internals is in this module; :func:`check_pynetdicom` refuses to start
the node with a pynetdicom release other than the one they were written for.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import queue
import select
import socket
import ssl
import struct
import tempfile
import threading
import time
import uuid
import weakref
from pathlib import Path
from typing import Any, NamedTuple, cast

import pynetdicom
from pynetdicom import _config, _handlers, dimse_messages, evt
from pynetdicom.ae import ApplicationEntity
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pydicom.filewriter import write_file_meta_info as _pydicom_write_file_meta_info
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import create_file_meta as _pynetdicom_create_file_meta
from pynetdicom.dul import DULServiceProvider
from pynetdicom.events import EventHandlerType
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.presentation import PresentationContext
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer
from pynetdicom.utils import make_target

from ..logging_setup import clean
from ..spool import TEMP_SUFFIX, incoming_prefix
from .guard import ConnectionGuard, Ticket

__all__ = ["Limits", "GuardedServer", "GuardedDUL", "GuardedDIMSE", "WaitingSocket", "WaitingAssociation",
           "IncomingFile", "store_rsp_command_set", "stream_datasets_to_spool"]

log = logging.getLogger("cardionode.ingest")
_assoc_log = logging.getLogger("pynetdicom.association")  # the lines pynetdicom's own reactor logs

_POLL_S = 0.005  # longest wait in select: data and outgoing primitives wake it; timers are checked this often
_MAX_ASSOCIATE_RQ = 1 << 20  # an A-ASSOCIATE-RQ with 128 contexts x 20 transfer syntaxes is < 64 KiB
#: The pynetdicom release series the replacements here were written for (setup.cfg pins it).
PYNETDICOM_SERIES = "3.0"


class PynetdicomVersionError(RuntimeError):
    """The installed pynetdicom is not the release series this module replaces parts of."""


def check_pynetdicom(version: str = pynetdicom.__version__) -> None:
    """Raise :class:`PynetdicomVersionError` (one line: what to do) unless ``version`` is 3.0.x."""
    if version.split(".")[:2] == PYNETDICOM_SERIES.split("."):
        return
    raise PynetdicomVersionError(
        f"pynetdicom {version} is installed, but the DIMSE listener replaces parts of pynetdicom "
        f"{PYNETDICOM_SERIES}.x (node/ingest/transport.py): install the pinned release with "
        f"pip install 'pynetdicom>={PYNETDICOM_SERIES},<3.1', or port node/ingest/transport.py to {version} "
        "and change the pin in setup.cfg")


# pynetdicom's standard logging handlers: they format every PDU and DIMSE message (pydicom
# attribute lookups included) even when the "pynetdicom" logger drops the result.
_PYNETDICOM_LOG_HANDLERS = (
    (evt.EVT_PDU_RECV, _handlers.standard_pdu_recv_handler),
    (evt.EVT_PDU_SENT, _handlers.standard_pdu_sent_handler),
    (evt.EVT_DIMSE_RECV, _handlers.standard_dimse_recv_handler),
    (evt.EVT_DIMSE_SENT, _handlers.standard_dimse_sent_handler),
)


def quiet_pdu_logging(assoc: Association) -> None:
    """Unbind pynetdicom's PDU/DIMSE log handlers from ``assoc`` when the "pynetdicom" logger would drop
    their output anyway."""
    if not logging.getLogger("pynetdicom").isEnabledFor(logging.INFO):
        for pdu_event, handler in _PYNETDICOM_LOG_HANDLERS:
            assoc.unbind(pdu_event, handler)


def drop_unnegotiated(assoc: Association) -> None:
    """End a connection that sent no A-ASSOCIATE-RQ: shut its socket (a ``recv`` returns), stop its DUL
    thread and end the association's wait as a timeout would."""
    sock = getattr(assoc.dul.socket, "socket", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    assoc.dul.kill_dul()
    assoc.dul.to_user_queue.put(None)  # type: ignore[arg-type]  # receive_pdu() returns None as for an empty queue


_MAX_PDU_UNADVERTISED = 256 << 20  # node.max_pdu 0: we advertise no limit, but do not buffer more than this
_RECV_CHUNK = 1 << 16
_AWAITING_ASSOCIATE_RQ = "Sta2"  # DUL state: transport open, A-ASSOCIATE-RQ not yet received
#: per association an ingest process serves, how long it lets the others accept a new connection first
ACCEPT_DEFER_S = 0.025
ACCEPT_DEFER_MAX_S = 0.1
_ESTABLISHED = "Sta6"  # DUL state: association established, ready for data transfer
_PDU_EVENTS = (evt.EVT_DATA_RECV, evt.EVT_PDU_RECV, evt.EVT_FSM_TRANSITION)  # what pynetdicom triggers per PDU


@dataclasses.dataclass(frozen=True)
class Limits:
    """The transport's bounds, from ``node.*``."""

    pdu_timeout_s: float
    max_pdu: int  # node.max_pdu: 0 = no limit advertised
    incoming_dir: Path  # where streamed datasets are written (the spool's .incoming)

    @property
    def max_pdata(self) -> int:
        return self.max_pdu + 1024 if self.max_pdu else _MAX_PDU_UNADVERTISED


class _WakingQueue(queue.Queue[Any]):
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


class _SignallingQueue(queue.Queue[Any]):
    """A queue whose ``put`` also sets ``event``: what the association thread waits on."""

    def __init__(self, event: threading.Event) -> None:
        super().__init__()
        self._event = event

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._event.set()


class WaitingAssociation(Association):
    """pynetdicom's acceptor association whose thread waits for the next DIMSE message or DUL
    primitive (release, abort) instead of sleeping 1 ms between checks.

    pynetdicom's reactor sleeps ``time.sleep(0.001)`` (1.2-1.6 ms on a loaded VM) before every look
    at its message queue: a C-STORE whose last PDU was decoded waited 0.4-0.8 ms on average before
    its handler ran, and an idle association woke about 700 times a second.  Here the DIMSE message
    queue and the DUL's primitive queue set :attr:`wakeup` (:func:`harden`), the loop waits on it (at
    most :data:`_POLL_S`, so the idle and DUL-liveness checks still run), and is otherwise the loop of
    pynetdicom 3.0's ``Association._run_reactor``.
    """

    wakeup: threading.Event

    def _run_reactor(self) -> None:
        self._is_paused = False
        while not self._kill:
            self.wakeup.wait(_POLL_S)
            self.wakeup.clear()  # a put after this sets it again; one before is seen by get_msg below

            self._is_paused = True  # pynetdicom's pause checkpoint (send_* from the acceptor's handlers)
            self._reactor_checkpoint.wait()
            self._is_paused = False

            context_id, msg = self.dimse.get_msg(block=False)
            if msg:
                self._serve_request(msg, cast(int, context_id))

            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                _assoc_log.info("Association Released")
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return

            if self.acse.is_aborted():
                log_msg = "Association Aborted"
                if self.acse.is_aborted("a-p-abort"):
                    log_msg += " (A-P-ABORT)"
                _assoc_log.info(log_msg)
                self.dul.receive_pdu(wait=False)  # EVT_ASCE_RECV for subscribers
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return

            if not self.dul.is_alive():
                self.kill()
                return

            if self.dul.idle_timer_expired():
                _assoc_log.error("Network timeout reached")
                if self.network_timeout_response == "A-RELEASE":
                    self._is_paused = True
                    self._reactor_checkpoint.wait()
                    self.release()
                    self._is_paused = False
                else:
                    self.abort()
                self.kill()
                return


class WaitingSocket(AssociationSocket):
    """pynetdicom's association socket whose ``ready`` waits in ``select`` for data *or* an outgoing
    primitive (up to :data:`_POLL_S`), and whose reads end at a deadline (:meth:`recv_exactly`).

    pynetdicom's DUL thread asks ``ready`` and, when nothing happened, sleeps ``_run_loop_delay``
    (1 ms) before asking again: the next C-STORE request waited 0.5-1 ms on average before it was
    even read, and so did each response.  Here the thread sleeps inside ``select`` and wakes at
    once; an idle association polls at 200 Hz instead of about 1 kHz.
    """

    _wake_r: socket.socket
    _wake_w: socket.socket
    _io_timeout: float
    _rbuf: bytearray  # the reusable read buffer of recv_into_buffer

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

    def recv_into_buffer(self, n: int, deadline: float) -> memoryview:
        """Like :meth:`recv_exactly`, but read straight into this socket's reusable buffer (no copy in
        Python): the view is valid until the next call.  Shorter than ``n`` when the peer closes."""
        sock = cast(socket.socket, self.socket)
        buf = self._rbuf if len(self._rbuf) >= n else bytearray(n)
        self._rbuf = buf
        view = memoryview(buf)[:n]
        got = 0
        try:
            while got < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{got} of {n} bytes by the deadline")
                sock.settimeout(remaining)
                k = sock.recv_into(view[got:], n - got)
                if not k:
                    break
                got += k
        finally:
            sock.settimeout(self._io_timeout)  # sends stay bounded too
        return view[:got]

    def recv_exactly(self, n: int, deadline: float) -> bytes:
        """``n`` bytes, or fewer when the peer closes; raises ``TimeoutError`` at ``deadline``
        (``time.monotonic()``) and ``OSError`` when the connection breaks."""
        sock = cast(socket.socket, self.socket)
        buf = bytearray()
        try:
            while len(buf) < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{len(buf)} of {n} bytes by the deadline")
                sock.settimeout(remaining)
                chunk = sock.recv(min(n - len(buf), _RECV_CHUNK))
                if not chunk:
                    break
                buf += chunk
        finally:
            sock.settimeout(self._io_timeout)  # sends stay bounded too
        return bytes(buf)

    def close(self) -> None:
        super().close()
        for s in (self._wake_r, self._wake_w):
            s.close()


class IncomingFile:
    """Where pynetdicom streams one C-STORE dataset: stands in for its ``NamedTemporaryFile``
    (``write``, ``file.flush``, ``name``, ``close``), in the spool's ``.incoming`` folder.

    A write error (ENOSPC, EDQUOT, EIO) is kept in :attr:`error` and the rest of the dataset is
    discarded, so the association survives and the C-STORE handler answers 0xA700 (or 0xC211); the
    file is truncated at once to give the space back.
    """

    def __init__(self, directory: Path) -> None:
        self.error: OSError | None = None
        self.file = self  # pynetdicom calls _data_set_file.file.flush()
        self._fd: int | None = None
        self.name = str(directory / f"{incoming_prefix()}dimse-{uuid.uuid4().hex}{TEMP_SUFFIX}")
        try:  # as tempfile.mkstemp does, without its name search: a fresh UUID4 does not collide
            self._fd = os.open(self.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:  # no inode or directory block left
            self.name = str(directory / f"dimse-not-created{TEMP_SUFFIX}")
            self.error = exc

    def write(self, data: bytes | memoryview) -> int:
        if self.error is None and self._fd is not None:
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(self._fd, view):]
            except OSError as exc:
                self._fail(exc)
        return len(data)

    def flush(self) -> None:
        pass  # os.write is unbuffered

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def discard(self) -> None:
        """Close and remove the (partial) file."""
        self.close()
        try:
            os.unlink(self.name)
        except OSError:
            pass

    def _fail(self, exc: OSError) -> None:
        self.error = exc
        try:
            os.ftruncate(cast(int, self._fd), 0)
        except OSError:
            pass


class StreamedFileMeta(NamedTuple):
    """The File Meta Information pynetdicom writes ahead of a streamed C-STORE dataset, as values."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    implementation_uid: str = PYNETDICOM_IMPLEMENTATION_UID
    implementation_version: str = PYNETDICOM_IMPLEMENTATION_VERSION


def _explicit_element(element: int, vr: bytes, value: bytes) -> bytes:
    """One group-0002 element, Explicit VR Little Endian (OB with the 4-byte length form)."""
    if vr == b"OB":
        return struct.pack("<HH2sHI", 0x0002, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def _padded(value: str, pad: bytes) -> bytes:
    data = value.encode("ascii")
    return data + pad if len(data) % 2 else data


def encode_file_meta(meta: StreamedFileMeta) -> bytes:
    """The File Meta Information group (PS3.10 7.1) as pydicom's ``write_file_meta_info`` writes
    pynetdicom's ``create_file_meta`` (byte-identical, tested), without building a ``Dataset``."""
    body = b"".join((
        _explicit_element(0x0001, b"OB", b"\x00\x01"),
        _explicit_element(0x0002, b"UI", _padded(meta.sop_class_uid, b"\0")),
        _explicit_element(0x0003, b"UI", _padded(meta.sop_instance_uid, b"\0")),
        _explicit_element(0x0010, b"UI", _padded(meta.transfer_syntax_uid, b"\0")),
        _explicit_element(0x0012, b"UI", _padded(meta.implementation_uid, b"\0")),
        _explicit_element(0x0013, b"SH", _padded(meta.implementation_version, b" ")),
    ))
    return _explicit_element(0x0000, b"UL", struct.pack("<I", len(body))) + body


def _create_file_meta(**kwargs: Any) -> Any:
    """pynetdicom's ``create_file_meta`` for streamed datasets: plain values in one of our DUL
    threads (written by :func:`_write_file_meta_info`), pynetdicom's ``FileMetaDataset`` otherwise."""
    if isinstance(threading.current_thread(), GuardedDUL) and set(kwargs) == _STREAM_META_ARGS:
        return StreamedFileMeta(str(kwargs["sop_class_uid"]), str(kwargs["sop_instance_uid"]),
                                str(kwargs["transfer_syntax"]))
    return _pynetdicom_create_file_meta(**kwargs)


def _write_file_meta_info(fp: Any, file_meta: Any, *args: Any, **kwargs: Any) -> None:
    if isinstance(file_meta, StreamedFileMeta):
        fp.write(encode_file_meta(file_meta))
        return
    _pydicom_write_file_meta_info(fp, file_meta, *args, **kwargs)


_STREAM_META_ARGS = {"sop_class_uid", "sop_instance_uid", "transfer_syntax"}


def _dataset_file(*args: Any, **kwargs: Any) -> Any:
    """pynetdicom's ``NamedTemporaryFile`` for streamed datasets: an :class:`IncomingFile` in the
    spool when the calling thread is one of our DUL threads, tempfile's otherwise (C-GET clients)."""
    thread = threading.current_thread()
    if isinstance(thread, GuardedDUL):
        return IncomingFile(thread.limits.incoming_dir)
    return tempfile.NamedTemporaryFile(*args, **kwargs)


def streamed_file(request: C_STORE) -> IncomingFile | None:
    """The :class:`IncomingFile` pynetdicom streamed a C-STORE request's dataset into (None: it was not
    streamed by the listener's DUL thread, e.g. a C-GET sub-operation)."""
    streamed = getattr(request, "_dataset_file", None)  # pynetdicom 3.0 keeps it on the request
    return streamed if isinstance(streamed, IncomingFile) else None


def stream_datasets_to_spool() -> None:
    """Process-wide (idempotent): pynetdicom streams C-STORE datasets to a file instead of memory, and
    the listener's DUL threads write that file into the spool (:class:`IncomingFile`)."""
    _config.STORE_RECV_CHUNKED_DATASET = True
    dimse_messages.NamedTemporaryFile = _dataset_file  # type: ignore[attr-defined]
    dimse_messages.create_file_meta = _create_file_meta  # type: ignore[attr-defined]  # imported names there
    dimse_messages.write_file_meta_info = _write_file_meta_info  # type: ignore[attr-defined]


class GuardedDUL(DULServiceProvider):
    """pynetdicom's DUL service provider whose PDU reads end at a deadline (see the module docstring)."""

    limits: Limits
    ticket: Ticket | None

    def run_reactor(self) -> None:
        try:
            super().run_reactor()
        finally:
            if self.ticket is not None:
                self.ticket.release()
            message = getattr(self.assoc.dimse, "message", None)
            partial = getattr(message, "_data_set_file", None)
            if isinstance(partial, IncomingFile):  # a C-STORE that never completed
                partial.discard()

    def _read_pdu_data(self) -> None:
        sock = cast(WaitingSocket, self.socket)
        negotiating = self.state_machine.current_state == _AWAITING_ASSOCIATE_RQ
        deadline = time.monotonic() + self.limits.pdu_timeout_s
        if negotiating and self.ticket is not None:
            deadline = min(deadline, self.ticket.deadline)
        try:
            head = sock.recv_exactly(6, deadline)
            if len(head) < 6:
                return self._closed_by_peer(negotiating)
            pdu_type, _, length = struct.unpack(">BBL", head)
            if not 0x01 <= pdu_type <= 0x07:
                if negotiating:
                    return self._drop(f"not a DICOM PDU (type 0x{pdu_type:02X})", negotiating)
                self.event_queue.put("Evt19")  # unrecognised PDU: pynetdicom aborts the association
                return
            if pdu_type == 0x01 and length > _MAX_ASSOCIATE_RQ:
                return self._drop(f"A-ASSOCIATE-RQ of {length} bytes (at most {_MAX_ASSOCIATE_RQ})", negotiating)
            if pdu_type == 0x04 and length > self.limits.max_pdata:
                return self._drop(f"P-DATA-TF PDU of {length} bytes (at most {self.limits.max_pdata})", negotiating)
            body = sock.recv_into_buffer(length, deadline)
        except TimeoutError:
            if negotiating:
                return self._drop("no complete A-ASSOCIATE-RQ within node.association_timeout_s", negotiating)
            return self._drop(f"PDU not complete within node.pdu_timeout_s ({self.limits.pdu_timeout_s:g} s)",
                              negotiating)
        except OSError:
            return self._closed_by_peer(negotiating)
        if len(body) < length:
            return self._closed_by_peer(negotiating)
        if pdu_type == 0x04 and self._stream_fragments(body):
            return
        try:
            pdu, event = self._decode_pdu(bytearray(head) + body)
        except Exception as exc:
            if negotiating:
                return self._drop(f"undecodable PDU: {type(exc).__name__}", negotiating)
            log.warning("DIMSE PDU undecodable; association aborted", extra={
                "address": self._address(), "error": f"{type(exc).__name__}: {exc}"[:200]})
            self.event_queue.put("Evt19")
            return
        self.event_queue.put(event)
        self._recv_pdu.put(pdu)
        if pdu_type == 0x01 and self.ticket is not None:
            self.ticket.release()  # association set-up phase over: counts against max_associations now

    def _stream_fragments(self, body: memoryview) -> bool:
        """Write a P-DATA-TF PDU's fragments straight into the C-STORE dataset being streamed to the
        spool, when that is all pynetdicom would do with it; False leaves the PDU to pynetdicom.

        A C-STORE dataset arrives as a run of P-DATA-TF PDUs (dcmtk sends 128 kB each).  For those
        that hold only data fragments that are not the last, pynetdicom decodes the PDU, runs its
        state machine (Sta6, Evt10, DT-2: a P-DATA indication) and its DIMSE decoder appends each
        fragment after its control byte to the open dataset file, copying every byte several times
        in Python on the way.  Done here only under exactly those conditions: association
        established, nothing queued before this PDU, a C-STORE-RQ command received and its dataset
        file open, no handler bound to the events pynetdicom would trigger for the PDU, and every
        fragment well formed (PS3.8 9.3.1).  A command fragment, the last data fragment, or anything
        malformed takes pynetdicom's path, which completes the message or aborts the association as
        before.
        """
        if self.state_machine.current_state != _ESTABLISHED or not self.event_queue.empty():
            return False
        message = self.assoc.dimse.message
        target = getattr(message, "_data_set_file", None) if message is not None else None
        if not isinstance(target, IncomingFile):
            return False
        if any(self.assoc.get_handlers(event) for event in _PDU_EVENTS):
            return False
        spans: list[tuple[int, int]] = []
        offset, end = 0, len(body)
        while offset < end:
            if end - offset < 6:
                return False
            item_length = int.from_bytes(body[offset:offset + 4], "big")
            if item_length < 2 or offset + 4 + item_length > end or body[offset + 5] & 0x03:
                return False  # malformed, a command fragment, or the last fragment: pynetdicom's path
            spans.append((offset + 6, offset + 4 + item_length))
            offset += 4 + item_length
        if not spans:
            return False
        for start, stop in spans:
            target.write(body[start:stop])
        return True

    def _address(self) -> str:
        return clean(self.assoc.requestor.address)

    def _closed_by_peer(self, negotiating: bool) -> None:
        sock = self.socket
        if sock is not None:
            sock.close()  # queues Evt17 (transport closed)
        else:
            self.event_queue.put("Evt17")
        if negotiating:
            # end the association thread's wait for the A-ASSOCIATE-RQ now (receive_pdu() returns None as when empty)
            self.to_user_queue.put(None)  # type: ignore[arg-type]

    def _drop(self, reason: str, negotiating: bool) -> None:
        """Close a connection that broke a limit: A-ABORT first when established, then the socket;
        the association and its slot go away at once."""
        log.warning("DIMSE connection closed", extra={
            "address": self._address(), "calling_ae": clean(str(self.assoc.requestor.ae_title or "").strip()),
            "reason": reason})
        sock = self.socket
        if sock is not None and not negotiating and sock.socket is not None:
            abort = A_ABORT_RQ()
            abort.source = 0x02  # service provider
            abort.reason_diagnostic = 0x00
            try:
                sock.socket.sendall(abort.encode())
            except OSError:
                pass
        self._closed_by_peer(negotiating)


def _ui_element(element: int, value: str) -> bytes:
    """One command-group UI element, Implicit VR Little Endian, padded to even length with NUL."""
    data = value.encode("ascii")
    if len(data) % 2:
        data += b"\0"
    return struct.pack("<HHI", 0x0000, element, len(data)) + data


def store_rsp_command_set(primitive: Any) -> bytes | None:
    """The encoded command set of a plain C-STORE-RSP (Implicit VR Little Endian, PS3.7 9.3.1.2),
    or None when ``primitive`` is anything else (a request, another service, a response carrying
    an Offending Element or Error Comment, a missing UID): pynetdicom encodes those.

    pynetdicom builds a pydicom ``Dataset`` for every response and encodes it, about 1-2 ms of CPU
    per C-STORE on the dev VM; these are the same bytes in microseconds
    (``tests/test_ingest.py::test_c_store_rsp_command_set_is_pynetdicoms_encoding``).
    """
    if not isinstance(primitive, C_STORE) or primitive.MessageIDBeingRespondedTo is None:
        return None
    if primitive.OffendingElement is not None or primitive.ErrorComment is not None:
        return None
    sop_class, sop_instance, status = (primitive.AffectedSOPClassUID, primitive.AffectedSOPInstanceUID,
                                       primitive.Status)
    if not sop_class or not sop_instance or status is None:
        return None
    body = b"".join((
        _ui_element(0x0002, str(sop_class)),                                        # Affected SOP Class UID
        struct.pack("<HHIH", 0x0000, 0x0100, 2, 0x8001),                            # Command Field: C-STORE-RSP
        struct.pack("<HHIH", 0x0000, 0x0120, 2, int(primitive.MessageIDBeingRespondedTo)),
        struct.pack("<HHIH", 0x0000, 0x0800, 2, 0x0101),                            # no data set
        struct.pack("<HHIH", 0x0000, 0x0900, 2, int(status)),
        _ui_element(0x1000, str(sop_instance)),                                     # Affected SOP Instance UID
    ))
    return struct.pack("<HHII", 0x0000, 0x0000, 4, len(body)) + body                # Command Group Length


class GuardedDIMSE(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider whose message decoding cannot kill the DUL thread, and which
    encodes a plain C-STORE-RSP itself.

    * A P-DATA that does not decode into a DIMSE message (random command set bytes, a command
      without CommandField) raised inside pynetdicom's state machine, which logged a traceback and
      ended the DUL thread without an A-ABORT.  Here it is one log line and a clean abort (Evt19:
      A-ABORT to the peer).
    * :meth:`send_msg`: a C-STORE-RSP without optional elements goes out as one P-DATA built from
      :func:`store_rsp_command_set` when it fits the peer's maximum PDU and nothing is bound to
      ``EVT_DIMSE_SENT`` (which is given pynetdicom's message object); otherwise pynetdicom encodes it.
    """

    def send_msg(self, primitive: Any, context_id: int) -> None:
        encoded = store_rsp_command_set(primitive)
        max_pdu = self.maximum_pdu_size
        if (encoded is None or (max_pdu and len(encoded) + 6 > max_pdu)
                or self.assoc.get_handlers(evt.EVT_DIMSE_SENT)):
            super().send_msg(primitive, context_id)
            return
        pdata = P_DATA()
        pdata.presentation_data_value_list.append((context_id, b"\x03" + encoded))  # command, last fragment
        self.dul.send_pdu(pdata)

    def receive_primitive(self, primitive: Any) -> None:
        try:
            super().receive_primitive(primitive)
        except Exception as exc:
            partial = getattr(self.message, "_data_set_file", None)
            if isinstance(partial, IncomingFile):
                partial.discard()
            self.message = None
            log.warning("DIMSE message undecodable; association aborted", extra={
                "address": clean(self.assoc.requestor.address), "error": clean(f"{type(exc).__name__}: {exc}")[:200]})
            self.dul.event_queue.put("Evt19")  # unrecognised or invalid PDU: A-ABORT, A-P-ABORT indication


def harden(assoc: Association, limits: Limits, ticket: Ticket | None) -> None:
    """Install :class:`WaitingSocket` and :class:`GuardedDUL` on an accepted association (before its
    threads start)."""
    dul = assoc.dul
    sock = dul.socket
    if type(sock) is not AssociationSocket or sock.socket is None:
        return
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    sock.__class__ = WaitingSocket
    waiting = cast(WaitingSocket, sock)
    waiting._wake_r, waiting._wake_w, waiting._io_timeout = wake_r, wake_w, limits.pdu_timeout_s
    waiting._rbuf = bytearray()
    raw = sock.socket
    raw.settimeout(limits.pdu_timeout_s)
    try:  # responses are small; do not let Nagle hold them back
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass
    dul.__class__ = GuardedDUL
    guarded = cast(GuardedDUL, dul)
    guarded.limits, guarded.ticket = limits, ticket
    guarded._target = make_target(guarded.run_reactor)  # type: ignore[attr-defined]  # Thread bound the base's
    dul.to_provider_queue = _WakingQueue(wake_w)
    if type(assoc) is Association and assoc.is_acceptor:
        wakeup = threading.Event()
        assoc.__class__ = WaitingAssociation
        cast(WaitingAssociation, assoc).wakeup = wakeup
        assoc.dimse.msg_queue = _SignallingQueue(wakeup)
        dul.to_user_queue = _SignallingQueue(wakeup)
    dul._run_loop_delay = 0.0  # ready() does the waiting
    assoc.dimse.__class__ = GuardedDIMSE


class _GuardedRequestHandler(RequestHandler):
    """pynetdicom's request handler for one admitted connection: hardens the association it creates."""

    server: "GuardedServer"

    def __init__(self, request: Any, client_address: Any, server: "GuardedServer", ticket: Ticket) -> None:
        self.ticket = ticket
        super().__init__(request, client_address, server)  # handles the request

    def _create_association(self) -> Association:
        assoc = super()._create_association()
        harden(assoc, self.server.limits, self.ticket)
        self.server.served.add(assoc)
        return assoc


class GuardedServer(ThreadedAssociationServer):
    """pynetdicom's threaded association server with admission at accept time and the TLS handshake
    in the connection's thread (see the module docstring).

    ``listen_socket``: accept on this listening socket (shared with other ingest processes,
    :mod:`node.ingest.workers`) instead of binding one.  It is used non-blocking: every process
    sharing it wakes for a connection and those that lose the race get ``EAGAIN``.  A process that
    already serves associations waits :data:`ACCEPT_DEFER_S` per association (up to
    :data:`ACCEPT_DEFER_MAX_S`) before it accepts, so that a less busy process takes the connection
    first: the kernel wakes them all, and without the wait whichever ran first won, however busy.
    """

    served: "weakref.WeakSet[Association]"  # associations this server created (ended ones drop out)

    def __init__(self, ae: ApplicationEntity, address: tuple[str, int] | tuple[str, int, int, int], ae_title: str,
                 contexts: list[PresentationContext], ssl_context: ssl.SSLContext | None = None,
                 evt_handlers: list[EventHandlerType] | None = None, *, guard: ConnectionGuard,
                 limits: Limits, listen_socket: socket.socket | None = None) -> None:
        self.guard = guard
        self.limits = limits
        self.served = weakref.WeakSet()
        self._shared_socket = listen_socket
        super().__init__(ae, address, ae_title, contexts, ssl_context, evt_handlers,
                         request_handler=_GuardedRequestHandler)

    def server_bind(self) -> None:
        if self._shared_socket is None:
            super().server_bind()
            return
        cast(socket.socket, self.socket).close()  # the one socketserver made; never bound
        self.socket = self._shared_socket
        self.socket.setblocking(False)
        self.server_address = self.socket.getsockname()

    def server_activate(self) -> None:
        if self._shared_socket is None:  # a shared socket is listening already
            super().server_activate()

    def busy(self) -> int:
        """Associations of this server not yet released or aborted."""
        return sum(1 for assoc in list(self.served)
                   if assoc.is_alive() and not (assoc.is_released or assoc.is_aborted))

    def get_request(self) -> tuple[socket.socket, Any]:
        if self._shared_socket is not None:
            busy = self.busy()
            if busy:  # let a less busy ingest process accept first; EAGAIN below when one did
                time.sleep(min(busy * ACCEPT_DEFER_S, ACCEPT_DEFER_MAX_S))
        conn, address = cast(socket.socket, self.socket).accept()  # no TLS handshake in the accept loop
        if self._shared_socket is not None:
            conn.setblocking(True)  # as pynetdicom's blocking listener hands it on
        return conn, address

    def process_request(self, request: Any, client_address: Any) -> None:
        ticket = self.guard.admit(str(client_address[0]))
        if ticket is None:
            self.shutdown_request(request)
            return
        threading.Thread(target=self._serve_connection, args=(request, client_address, ticket),
                         name="AcceptorConnection", daemon=True).start()

    def _serve_connection(self, request: socket.socket, client_address: Any, ticket: Ticket) -> None:
        try:
            if self.ssl_context is not None:
                request = self._tls_handshake(request, ticket)
            _GuardedRequestHandler(request, client_address, self, ticket)
        except Exception as exc:
            ticket.release()
            reason = "TLS handshake timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
            log.warning("DIMSE connection closed before association set-up", extra={
                "address": clean(client_address[0]), "reason": clean(reason)[:300]})
            self.shutdown_request(request)

    def _tls_handshake(self, request: socket.socket, ticket: Ticket) -> ssl.SSLSocket:
        tls = cast(ssl.SSLContext, self.ssl_context).wrap_socket(request, server_side=True,
                                                                 do_handshake_on_connect=False)
        try:
            tls.settimeout(max(0.01, ticket.remaining()))
            tls.do_handshake()
            tls.settimeout(None)
        except BaseException:
            tls.close()  # wrap_socket detached ``request``: this is the socket to close
            raise
        return tls
