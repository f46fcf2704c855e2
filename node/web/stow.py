"""STOW-RS ingest (PS3.18 10.5): POST /dicom-web/studies[/{StudyInstanceUID}].

Flow: check the media type and size, stream the body to a temporary file in
the storage volume (never in memory), locate every part (a malformed message
is refused as a whole: 400, nothing stored), then per part: check it is
DICOM (preamble + "DICM", or a dataset that starts with its File Meta
Information), check the Study Instance UID against the URL, and store it with
:meth:`Spool.store_stream` (``source="stow"``) -- which writes and fsyncs the
file, indexes it and arms study completion exactly as for C-STORE.  Only
after every part has been handled is the response sent, so every instance
listed as stored is on disk.

Response: the PS3.18 Store Instances Response dataset as DICOM JSON --
ReferencedSOPSequence for stored instances, FailedSOPSequence (with
FailureReason) for refused ones, OtherFailuresSequence for parts that are
not DICOM at all; HTTP 200 all stored, 202 some failed, 409 none stored.
"""
from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import os
import struct
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, cast

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from ..files import private_dir
from ..ingest.admission import is_accepted, own_result_returned
from ..logging_setup import clean
from ..spool import TEMP_SUFFIX, OwnResultError, Spool, SpoolError, is_out_of_space
from .metrics import Metrics
from .multipart import (
    ByteStream, MediaTypeError, MultipartError, Part, PartReader, find_parts, parse_content_type, stow_boundary,
)

__all__ = [
    "StowHandler",
    "StowResult",
    "PartOutcome",
    "BodyTooLarge",
    "store_parts",
    "read_part_meta",
    "FAILURE_SOP_CLASS_NOT_SUPPORTED",
    "FAILURE_OUT_OF_RESOURCES",
    "FAILURE_PROCESSING",
    "FAILURE_CANNOT_UNDERSTAND",
    "FAILURE_STUDY_UID_MISMATCH",
]

log = logging.getLogger("cardionode.web.stow")

FAILURE_PROCESSING = 0x0110
FAILURE_SOP_CLASS_NOT_SUPPORTED = 0x0122
FAILURE_OUT_OF_RESOURCES = 0xA700
FAILURE_STUDY_UID_MISMATCH = 0xA900
FAILURE_CANNOT_UNDERSTAND = 0xC000

DICOM_JSON = "application/dicom+json"
_COPY_CHUNK = 1 << 20


class BodyTooLarge(Exception):
    """The request body exceeds node.max_upload_mb (HTTP 413)."""


class BodyStalled(Exception):
    """The client stopped sending the request body (node.http_body_timeout_s; HTTP 408)."""


class NotDicomPart(ValueError):
    """A part is not a DICOM Part 10 stream (no preamble/DICM and no File Meta Information)."""


@dataclasses.dataclass(frozen=True)
class PartOutcome:
    """What happened to one body part."""

    index: int
    sop_class_uid: str
    sop_instance_uid: str
    stored: bool
    reason: int | None = None
    detail: str = ""
    nbytes: int = 0
    own: bool = False  # one of the node's own results: acknowledged, not stored


@dataclasses.dataclass
class StowResult:
    outcomes: list[PartOutcome]

    @property
    def http_status(self) -> int:
        stored = sum(1 for o in self.outcomes if o.stored)
        if stored == len(self.outcomes):
            return 200
        return 202 if stored else 409

    def dataset(self) -> Dataset:
        """The PS3.18 Store Instances Response Module dataset."""
        ds = Dataset()
        referenced, failed, other = [], [], []
        for o in self.outcomes:
            item = Dataset()
            if o.stored:
                item.ReferencedSOPClassUID = o.sop_class_uid
                item.ReferencedSOPInstanceUID = o.sop_instance_uid
                referenced.append(item)
            elif o.sop_instance_uid:
                item.ReferencedSOPClassUID = o.sop_class_uid
                item.ReferencedSOPInstanceUID = o.sop_instance_uid
                item.FailureReason = o.reason if o.reason is not None else FAILURE_PROCESSING
                failed.append(item)
            else:
                item.FailureReason = o.reason if o.reason is not None else FAILURE_CANNOT_UNDERSTAND
                other.append(item)
        if referenced:
            ds.ReferencedSOPSequence = referenced
        if failed:
            ds.FailedSOPSequence = failed
        if other:
            ds.OtherFailuresSequence = other
        return ds


# --------------------------------------------------------------------------- part parsing


def read_part_meta(reader: ByteStream) -> tuple[FileMetaDataset, int]:
    """File Meta Information of a part and the offset where its dataset starts.

    Accepts a 128-byte preamble + "DICM", "DICM" without preamble, or a stream
    that begins directly with group 0002 elements.  Raises :class:`NotDicomPart`.
    """
    head = reader.read(132)
    if len(head) >= 132 and head[128:132] == b"DICM":
        meta_at = 132
    elif head[:4] == b"DICM":
        meta_at = 4
    elif len(head) >= 8 and struct.unpack("<H", head[:2])[0] == 0x0002:
        meta_at = 0
    else:
        raise NotDicomPart("not a DICOM Part 10 stream (no preamble/DICM prefix and no File Meta Information)")
    reader.seek(meta_at)
    try:
        # pydicom 3: reads group 0002 only, with read/seek/tell (annotated BinaryIO)
        meta = pydicom.filereader._read_file_meta_info(cast(BinaryIO, reader))
    except Exception as exc:  # pydicom raises several types on garbage
        raise NotDicomPart(f"unreadable File Meta Information: {exc}") from None
    for keyword in ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID", "TransferSyntaxUID"):
        if not str(meta.get(keyword, "")).strip():
            raise NotDicomPart(f"File Meta Information lacks {keyword}")
    return meta, reader.tell()


def _header(reader: PartReader) -> Dataset:
    """Identifying attributes of the part's dataset (stops before pixel data).

    pydicom expects the 128-byte preamble; a part that starts with "DICM" or
    directly with the File Meta Information is read from the meta group on
    (``force``: pydicom then finds no preamble and reads group 0002 first).
    """
    reader.seek(0)
    head = reader.read(132)
    tags = ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"]
    if len(head) >= 132 and head[128:132] == b"DICM":
        reader.seek(0)
        return pydicom.dcmread(reader, stop_before_pixels=True, specific_tags=tags)
    skip = 4 if head[:4] == b"DICM" else 0
    size = reader.seek(0, io.SEEK_END)
    return pydicom.dcmread(PartReader(reader, skip, size), stop_before_pixels=True, specific_tags=tags, force=True)


def _reason_for_store_error(exc: BaseException) -> int:
    """FailureReason for an exception from Spool.store_stream."""
    if isinstance(exc, SpoolError):
        status = exc.status
        if status == 0xA700:
            return FAILURE_OUT_OF_RESOURCES
        if status in (0x0111, 0xA900, 0xC000):
            return status
        if (status & 0xF000) == 0xC000:  # spool's 0xC2xx: malformed/truncated = cannot understand
            return FAILURE_CANNOT_UNDERSTAND
    if is_out_of_space(exc):
        return FAILURE_OUT_OF_RESOURCES
    return FAILURE_PROCESSING


def store_parts(
    body: BinaryIO,
    parts: list[Part],
    spool: Spool,
    *,
    study_uid: str | None,
    calling_ae: str,
    on_stored: Callable[[PartOutcome], None] | None = None,
    metrics: Metrics | None = None,
) -> StowResult:
    """Validate and store each part; a failed part leaves nothing in the spool."""
    outcomes: list[PartOutcome] = []
    for part in parts:
        outcomes.append(_store_one(body, part, spool, study_uid=study_uid, calling_ae=calling_ae, metrics=metrics))
        if outcomes[-1].stored and not outcomes[-1].own and on_stored is not None:
            on_stored(outcomes[-1])
    return StowResult(outcomes)


def _store_one(body: BinaryIO, part: Part, spool: Spool, *, study_uid: str | None, calling_ae: str,
               metrics: Metrics | None = None) -> PartOutcome:
    reader = PartReader(body, part.start, part.end)
    mime, _params = parse_content_type(part.content_type) if part.content_type else ("application/dicom", {})
    if mime != "application/dicom":
        return PartOutcome(part.index, "", "", False, FAILURE_CANNOT_UNDERSTAND, f"part Content-Type {mime!r}")
    try:
        meta, ds_offset = read_part_meta(reader)
    except NotDicomPart as exc:
        return PartOutcome(part.index, "", "", False, FAILURE_CANNOT_UNDERSTAND, str(exc))
    sop_class = str(meta.MediaStorageSOPClassUID)
    sop_uid = str(meta.MediaStorageSOPInstanceUID)
    try:
        header = _header(reader)
    except (InvalidDicomError, Exception) as exc:  # truncated or corrupt dataset
        return PartOutcome(part.index, sop_class, sop_uid, False, FAILURE_CANNOT_UNDERSTAND, f"unreadable: {exc}")
    if str(header.get("SOPInstanceUID", "")) != sop_uid or str(header.get("SOPClassUID", "")) != sop_class:
        return PartOutcome(part.index, sop_class, sop_uid, False, FAILURE_CANNOT_UNDERSTAND,
                           "File Meta Information does not match the dataset's SOP Class/Instance UID")
    series_uid = str(header.get("SeriesInstanceUID", "") or "")
    if spool.is_own_result(sop_uid, series_uid):  # before the SOP class check: SR/SEG come back too
        own = OwnResultError(sop_uid, series_uid, str(header.get("StudyInstanceUID", "") or ""))
        own_result_returned(log, metrics, own, source="stow", calling_ae=calling_ae)
        return PartOutcome(part.index, sop_class, sop_uid, True, None, "own result: not stored", 0, own=True)
    if not is_accepted(sop_class):
        log.warning("STOW part refused", extra={"sop_instance": sop_uid, "sop_class": sop_class,
                                                "reason": f"0x{FAILURE_SOP_CLASS_NOT_SUPPORTED:04X}",
                                                "error": "SOP class not supported"})
        return PartOutcome(part.index, sop_class, sop_uid, False, FAILURE_SOP_CLASS_NOT_SUPPORTED,
                           f"SOP class {sop_class} is not stored by this node")
    if study_uid is not None and str(header.get("StudyInstanceUID", "")) != study_uid:
        return PartOutcome(part.index, sop_class, sop_uid, False, FAILURE_STUDY_UID_MISMATCH,
                           f"StudyInstanceUID {header.get('StudyInstanceUID')} is not {study_uid}")
    reader.seek(ds_offset)
    try:
        stored = spool.store_stream(meta, reader, calling_ae=calling_ae, source="stow")
    except OwnResultError as own:
        own_result_returned(log, metrics, own, source="stow", calling_ae=calling_ae)
        return PartOutcome(part.index, sop_class, sop_uid, True, None, "own result: not stored", 0, own=True)
    except Exception as exc:
        reason = _reason_for_store_error(exc)
        log.warning("STOW part refused", extra={"sop_instance": sop_uid, "reason": f"0x{reason:04X}",
                                                "error": str(exc)})
        return PartOutcome(part.index, sop_class, sop_uid, False, reason, str(exc))
    return PartOutcome(part.index, sop_class, sop_uid, True, None, "", stored.size)


# --------------------------------------------------------------------------- HTTP


def _accepts_dicom_json(accept: str | None) -> bool:
    if not accept:
        return True
    for item in accept.split(","):
        mime = item.split(";", 1)[0].strip().lower()
        if mime in ("*/*", "application/*", DICOM_JSON, "application/json"):
            return True
    return False


async def copy_limited(request: Request, out: BinaryIO, limit: int, idle_timeout_s: float | None = None) -> int:
    """Write the request body to ``out``; raises :class:`BodyTooLarge` past ``limit`` bytes and
    :class:`BodyStalled` when no byte arrives for ``idle_timeout_s`` seconds."""
    total = 0
    chunks = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(chunks.__anext__(), idle_timeout_s)
        except StopAsyncIteration:
            break
        except TimeoutError:
            raise BodyStalled(f"no body data for {idle_timeout_s:g} s after {total} bytes") from None
        total += len(chunk)
        if total > limit:
            raise BodyTooLarge(f"request body exceeds {limit} bytes")
        out.write(chunk)
    out.flush()
    return total


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class StowHandler:
    """The STOW-RS endpoint bound to one spool, size limit and metrics object."""

    def __init__(self, spool: Spool | None, max_upload_bytes: int, tmp_dir: Path, metrics: Metrics | None = None,
                 calling_ae: str = "STOW", body_timeout_s: float | None = 30.0) -> None:
        self.spool = spool
        self.max_upload_bytes = max_upload_bytes
        self.tmp_dir = Path(tmp_dir)
        self.body_timeout_s = body_timeout_s
        self.metrics = metrics
        self.calling_ae = calling_ae

    async def __call__(self, request: Request) -> Response:
        response = await self._handle(request)
        if self.metrics is not None:
            self.metrics.stow_request(response.status_code)
        return response

    async def _handle(self, request: Request) -> Response:
        study_uid = request.path_params.get("study_uid")
        if not _accepts_dicom_json(request.headers.get("accept")):
            return _error(406, "only application/dicom+json responses are available")
        try:
            boundary = stow_boundary(request.headers.get("content-type"))
        except MediaTypeError as exc:
            return _error(415, str(exc))
        except MultipartError as exc:
            return _error(400, str(exc))
        length = request.headers.get("content-length")
        if length is not None:
            try:
                if int(length) > self.max_upload_bytes:
                    return _error(413, f"request body of {length} bytes exceeds {self.max_upload_bytes} bytes",
                                  {"Connection": "close"})
            except ValueError:
                return _error(400, "invalid Content-Length")
        spool = self.spool
        if spool is None:
            return _error(503, "spool not available")
        if not spool.has_space():
            return _error(503, "out of storage space (node.min_free_mb)", {"Retry-After": "60"})
        private_dir(self.tmp_dir)
        fd, tmp_name = tempfile.mkstemp(prefix="stow-", suffix=TEMP_SUFFIX, dir=self.tmp_dir)
        try:
            with os.fdopen(fd, "w+b") as body:
                try:
                    await copy_limited(request, body, self.max_upload_bytes, self.body_timeout_s)
                except BodyTooLarge as exc:
                    return _error(413, str(exc), {"Connection": "close"})
                except BodyStalled as exc:
                    log.warning("STOW-RS body stalled; request dropped", extra={
                        "client": clean(request.client.host if request.client else ""), "error": str(exc)})
                    return _error(408, str(exc), {"Connection": "close"})
                except ClientDisconnect:
                    return _error(400, "client disconnected before the body was complete")
                except OSError as exc:
                    return _error(503, f"cannot buffer the request body: {exc.strerror}", {"Retry-After": "60"})
                try:
                    result = await run_in_threadpool(self._process, spool, body, boundary, study_uid)
                except MultipartError as exc:
                    return _error(400, str(exc))
        finally:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass
        log.info("STOW-RS request", extra={
            "study": study_uid or "", "parts": len(result.outcomes),
            "stored": sum(1 for o in result.outcomes if o.stored), "status": result.http_status,
        })
        return JSONResponse(result.dataset().to_json_dict(), status_code=result.http_status, media_type=DICOM_JSON)

    def _process(self, spool: Spool, body: BinaryIO, boundary: str, study_uid: str | None) -> StowResult:
        parts = find_parts(body, boundary)
        on_stored = None
        if self.metrics is not None:
            on_stored = lambda o: self.metrics.instance_received("stow", o.nbytes)  # noqa: E731
        return store_parts(body, parts, spool, study_uid=study_uid, calling_ae=self.calling_ae,
                           on_stored=on_stored, metrics=self.metrics)
