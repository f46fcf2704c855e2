"""A DICOM upper-layer client at the byte level, for tests that need what no well-behaved peer sends:
half an A-ASSOCIATE-RQ, half a P-DATA PDU, an empty dataset, garbage inside a PDU, a stalled sender.

PDUs and DIMSE command sets are encoded by pynetdicom's own encoders (``pynetdicom.pdu``,
``pynetdicom.dsutils``); this module only decides which bytes go out when.
"""
from __future__ import annotations

import io
import socket
import struct
import time
from typing import Iterable

from pydicom.dataset import Dataset
from pynetdicom.dsutils import decode, encode
from pynetdicom.pdu import A_ASSOCIATE_RQ, A_RELEASE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.presentation import build_context

__all__ = ["RawAssociation", "associate_rq", "pdata", "c_store_command", "EXPLICIT_LE", "pdu_header"]

EXPLICIT_LE = "1.2.840.10008.1.2.1"
_APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"


def associate_rq(calling: str, called: str, abstract_syntaxes: Iterable[str],
                 transfer_syntax: str = EXPLICIT_LE, max_pdu: int = 16384) -> bytes:
    """An encoded A-ASSOCIATE-RQ PDU proposing one context (ids 1, 3, 5 ...) per abstract syntax."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = _APPLICATION_CONTEXT
    primitive.calling_ae_title = calling
    primitive.called_ae_title = called
    contexts = []
    for i, uid in enumerate(abstract_syntaxes):
        cx = build_context(uid, [transfer_syntax])
        cx.context_id = 2 * i + 1
        contexts.append(cx)
    primitive.presentation_context_definition_list = contexts
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = max_pdu
    primitive.user_information = [max_length]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return pdu.encode()


def pdu_header(pdu_type: int, length: int) -> bytes:
    return struct.pack(">BBI", pdu_type, 0, length)


def pdata(context_id: int, control: int, payload: bytes) -> bytes:
    """One P-DATA-TF PDU holding one PDV (``control``: bit 0 command, bit 1 last fragment)."""
    item = struct.pack(">IBB", len(payload) + 2, context_id, control) + payload
    return pdu_header(0x04, len(item)) + item


def c_store_command(sop_class: str, sop_instance: str, message_id: int = 1, with_dataset: bool = True) -> bytes:
    """A C-STORE-RQ command set, Implicit VR Little Endian (as the standard requires)."""
    cs = Dataset()
    cs.AffectedSOPClassUID = sop_class
    cs.CommandField = 0x0001
    cs.MessageID = message_id
    cs.Priority = 2
    cs.CommandDataSetType = 0x0000 if with_dataset else 0x0101
    cs.AffectedSOPInstanceUID = sop_instance
    body = encode(cs, True, True)
    group = Dataset()
    group.CommandGroupLength = len(body)
    return encode(group, True, True) + body


class RawAssociation:
    """A TCP connection to a DICOM listener driven byte by byte; ``source`` binds the local address
    (any 127.x.y.z works on Linux loopback)."""

    def __init__(self, port: int, host: str = "127.0.0.1", source: str | None = None, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if source is not None:
            self.sock.bind((source, 0))
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def associate(self, abstract_syntax: str, calling: str = "RAWSCU", called: str = "CARDIONODE") -> int:
        """Send an A-ASSOCIATE-RQ and read the answer; returns the PDU type (2 accepted, 3 rejected)."""
        self.send(associate_rq(calling, called, [abstract_syntax]))
        pdu_type, _body = self.read_pdu()
        return pdu_type

    def read_pdu(self) -> tuple[int, bytes]:
        head = self._read_exactly(6)
        pdu_type, _, length = struct.unpack(">BBI", head)
        return pdu_type, self._read_exactly(length)

    def _read_exactly(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError(f"connection closed after {len(out)} of {n} bytes")
            out += chunk
        return out

    def c_store(self, sop_class: str, sop_instance: str, dataset: bytes, context_id: int = 1,
                fragment: int = 16000) -> int:
        """A whole C-STORE (command + dataset in fragments); returns the response status."""
        self.send(pdata(context_id, 0x03, c_store_command(sop_class, sop_instance)))
        chunks = [dataset[i:i + fragment] for i in range(0, len(dataset), fragment)] or [b""]
        for i, chunk in enumerate(chunks):
            self.send(pdata(context_id, 0x02 if i == len(chunks) - 1 else 0x00, chunk))
        return self.read_status()

    def read_status(self) -> int:
        """Read P-DATA PDUs until a complete command set arrives; returns its Status."""
        command = b""
        while True:
            pdu_type, body = self.read_pdu()
            if pdu_type != 0x04:
                raise ConnectionError(f"expected P-DATA-TF, got PDU type 0x{pdu_type:02X}")
            at = 0
            while at < len(body):
                (length,) = struct.unpack_from(">I", body, at)
                control = body[at + 5]
                command += body[at + 6:at + 4 + length]
                at += 4 + length
                if control & 0x03 == 0x03:
                    return int(decode(io.BytesIO(command), True, True).Status)

    def release(self) -> None:
        try:
            self.send(A_RELEASE_RQ().encode())
            self.read_pdu()
        except OSError:
            pass
        self.close()

    def closed_by_peer(self, timeout: float) -> bool:
        """True when the peer closes (or resets) the connection within ``timeout`` seconds; data the
        peer sends first (an A-ABORT) is read and ignored."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                if not self.sock.recv(65536):
                    return True
            except (TimeoutError, socket.timeout):
                return False
            except OSError:
                return True
        return False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "RawAssociation":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
