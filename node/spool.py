"""Durable spool: every received SOP instance as a Part 10 file, indexed in SQLite.

Layout: ``<storage_dir>/spool/<StudyUID>/<SeriesUID>/<SOPInstanceUID>.dcm``;
the three UIDs are checked against the DICOM UID grammar before they become
path parts.  Instances are kept exactly as received: the File Meta
Information followed by the dataset bytes as encoded by the sender, never
decoded and re-encoded.

Durability rule (what a success status promises): the file is written to a
temporary name on the spool's filesystem, ``fsync``-ed, renamed into place
with ``os.replace`` and the directory is ``fsync``-ed; only then is the index
row committed and the caller (DIMSE handler, STOW-RS) answers success.  The
files are the record; the index is rebuilt from them by :meth:`Spool.recover`
at start-up (rows for files a crash left unindexed, rows for files gone, temp
files removed).  For that reason the spool's own index connection commits with
``synchronous=NORMAL``: a power cut may lose the last index rows, never an
acknowledged file, and ``recover()`` restores the rows.
"""
from __future__ import annotations

import dataclasses
import errno
import logging
import os
import queue
import re
import shutil
import sqlite3
import struct
import threading
import time
import uuid
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Callable

import pydicom
from pydicom.charset import convert_encodings, decode_bytes
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian


from .files import DIR_MODE, open_private, private_dir
from .fsync import GroupSync, fsync_dir, fsync_path
from .state import InstanceIndex, connect

__all__ = [
    "Spool",
    "StoredInstance",
    "RecoveryReport",
    "SpoolError",
    "InvalidInstanceError",
    "DatasetMismatchError",
    "DuplicateInstanceError",
    "OutOfSpaceError",
    "OwnResultError",
    "check_uid",
    "is_out_of_space",
    "InstanceHeader",
    "read_header",
]

log = logging.getLogger("cardionode.spool")

_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_HEADER_TAGS = [
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality",
    "SeriesDescription", "SeriesNumber", "InstanceNumber",
]
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"}
_COPY_CHUNK = 1 << 20
TEMP_SUFFIX = ".part"
REPLACED_SUFFIX = ".replaced"  # second name of a replaced file, removed after the response


class SpoolError(Exception):
    """An instance was not stored; ``status`` is the DIMSE C-STORE status to answer with."""

    status = 0xC000


class InvalidInstanceError(SpoolError):
    """Malformed or truncated dataset, missing or invalid UIDs: "cannot understand"."""

    status = 0xC210


class DatasetMismatchError(SpoolError):
    """The dataset's SOP Class/Instance UID differs from the request (or File Meta)."""

    status = 0xA900


class DuplicateInstanceError(SpoolError):
    """The SOP Instance UID is already stored under another study or series (DICOM 0x0111,
    Duplicate SOP Instance); the stored instance is kept."""

    status = 0x0111


class OwnResultError(Exception):
    """The instance is one of the node's own results coming back (a PACS forwarding it, a study
    retrieved with it): nothing is stored and completion is not triggered.  Not a failure: the
    node holds the object already (it made it), so ingest answers success and logs it."""

    def __init__(self, sop_instance_uid: str, series_instance_uid: str, study_instance_uid: str) -> None:
        super().__init__(f"SOP instance {sop_instance_uid} (series {series_instance_uid}) is a result of this node")
        self.sop_instance_uid = sop_instance_uid
        self.series_instance_uid = series_instance_uid
        self.study_instance_uid = study_instance_uid


class OutOfSpaceError(SpoolError):
    """Free space on the spool's filesystem is below ``min_free_mb``."""

    status = 0xA700


def is_out_of_space(exc: BaseException) -> bool:
    """ENOSPC / EDQUOT from the filesystem, or SQLite's "database or disk is full"."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if isinstance(exc, sqlite3.OperationalError):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(exc)
    return False


def check_uid(value: Any, what: str) -> str:
    """``value`` as a UID string safe to use as a path part; raises :class:`InvalidInstanceError`.

    DICOM UID grammar: digit components separated by dots, at most 64
    characters (leading zeros in components are tolerated).
    """
    text = str(value if value is not None else "").strip().rstrip("\x00").strip()
    if not text or len(text) > 64 or not _UID_RE.match(text):
        raise InvalidInstanceError(f"{what} {text[:80]!r} is not a valid DICOM UID")
    return text


@dataclasses.dataclass(frozen=True)
class StoredInstance:
    """One instance durably stored and indexed (what ``on_stored`` listeners receive)."""

    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    modality: str
    transfer_syntax_uid: str
    path: Path
    size: int
    calling_ae: str
    received_at: float
    replaced: bool
    source: str = ""
    series_description: str = ""
    series_number: int | None = None
    instance_number: int | None = None
    facts: str | None = None


@dataclasses.dataclass(frozen=True)
class RecoveryReport:
    """What :meth:`Spool.recover` repaired."""

    indexed: int
    dropped_rows: int
    temp_removed: int
    unreadable: int


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


_PIXEL_TAGS = {(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)}  # Pixel / Float / Double Float Pixel Data
_UNDEFINED = 0xFFFFFFFF
_VRS = {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"OB", b"OD", b"OF",
        b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM", b"UC", b"UI", b"UL", b"UN",
        b"UR", b"US", b"UT", b"UV"}
_WINDOW = 64 * 1024  # one read covers the header of a typical instance
_MAX_VALUE = 1024  # identifying values longer than this are not read (a UID is at most 64 bytes)
# top-level attributes read while walking: (group, element) -> name
_HEADER_ELEMENTS = {
    (0x0008, 0x0005): "charset",
    (0x0008, 0x0016): "sop_class",
    (0x0008, 0x0018): "sop_instance",
    (0x0008, 0x0060): "modality",
    (0x0008, 0x103E): "series_description",
    (0x0020, 0x000D): "study",
    (0x0020, 0x000E): "series",
    (0x0020, 0x0011): "series_number",
    (0x0020, 0x0013): "instance_number",
}
# header values completeness judges a series by (node.completeness.HeaderFacts): (group, element) -> name
_FACT_ELEMENTS = {
    (0x0028, 0x0008): "frames",
    (0x0020, 0x0105): "temporal_positions",
    (0x0018, 0x1090): "cardiac_images",
    (0x0020, 0x1002): "images_in_acquisition",
    (0x0020, 0x0012): "acquisition_number",
    (0x0020, 0x0032): "image_position",
    (0x0020, 0x1041): "slice_location",
    (0x0018, 0x0020): "scanning_sequence",
    (0x0018, 0x0021): "sequence_variant",
    (0x0018, 0x0024): "sequence_name",
    (0x0018, 0x9005): "pulse_sequence_name",
    (0x0020, 0x9161): "concatenation_uid",
    (0x0020, 0x9162): "concatenation_number",  # US: binary
    (0x0020, 0x9163): "concatenation_total",  # US: binary
}
_FACT_KEYWORDS = {
    "frames": "NumberOfFrames", "temporal_positions": "NumberOfTemporalPositions",
    "cardiac_images": "CardiacNumberOfImages", "images_in_acquisition": "ImagesInAcquisition",
    "acquisition_number": "AcquisitionNumber", "image_position": "ImagePositionPatient",
    "slice_location": "SliceLocation", "scanning_sequence": "ScanningSequence",
    "sequence_variant": "SequenceVariant", "sequence_name": "SequenceName",
    "pulse_sequence_name": "PulseSequenceName", "concatenation_uid": "ConcatenationUID",
    "concatenation_number": "InConcatenationNumber", "concatenation_total": "InConcatenationTotalNumber",
}
_META_LENGTH = (0x0002, 0x0000)  # File Meta Information Group Length: the first element, at byte 132
_META_ELEMENTS = {(0x0002, 0x0002): "meta_sop_class", (0x0002, 0x0003): "meta_sop_instance",
                  (0x0002, 0x0010): "transfer_syntax"}


@dataclasses.dataclass(frozen=True)
class InstanceHeader:
    """What the spool needs from a Part 10 file: File Meta UIDs and the identifying attributes."""

    transfer_syntax: str
    meta_sop_class: str
    meta_sop_instance: str
    sop_class: str
    sop_instance: str
    study: str
    series: str
    modality: str
    series_description: str
    series_number: int | None
    instance_number: int | None
    size: int
    facts: str | None = None  # completeness header values as JSON (node.completeness.HeaderFacts.extra_json)


class _Window:
    """Positional reads (``os.pread``) through one buffered window: a header walk costs one or
    two system calls instead of a seek and a read per element."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd, self.size = fd, size
        self.base, self.buf = 0, b""

    def get(self, at: int, n: int, what: str) -> tuple[bytes, int]:
        """(buffer, offset in it) holding bytes ``at .. at+n``; raises when the file ends first."""
        off = at - self.base
        if off < 0 or off + n > len(self.buf):
            if at + n > self.size:
                raise InvalidInstanceError(f"dataset truncated in {what} at byte {at}")
            self.buf, self.base, off = os.pread(self.fd, max(n, _WINDOW), at), at, 0
            if len(self.buf) < n:
                raise InvalidInstanceError(f"dataset truncated in {what} at byte {at}")
        return self.buf, off


class _Walker:
    """Structural walk over an encoded (not deflated) dataset: every element, item and
    delimiter must lie wholly inside the file, explicit VRs must be DICOM VRs.  Values are
    skipped, never read (except the few identifying top-level ones asked for), so a
    multi-frame instance costs a read per window of headers, not its size."""

    def __init__(self, window: _Window, implicit: bool, little_endian: bool) -> None:
        self.w, self.size, self.implicit = window, window.size, implicit
        e = "<" if little_endian else ">"
        self.tag, self.u16, self.u32 = struct.Struct(e + "HH"), struct.Struct(e + "H"), struct.Struct(e + "I")
        self.item = struct.Struct(e + "HHI")
        self.values: dict[tuple[int, int], bytes] = {}

    def _skip(self, at: int, length: int, what: str) -> int:
        if at + length > self.size:
            raise InvalidInstanceError(f"dataset truncated: {what} at byte {at} needs {at + length - self.size}"
                                       " more bytes")
        return at + length

    def dataset(self, at: int, implicit: bool, in_item: bool = False, wanted: Any = (),
                stop_group: int | None = None) -> tuple[int, set[tuple[int, int]]]:
        """Walk elements from ``at`` to the end of the file (top level) or to the item delimiter
        (``in_item``); returns the position after it and the tags seen at this level.  Values of
        ``wanted`` tags are kept in ``values``; ``stop_group`` ends the walk before the first
        element of another group (File Meta)."""
        tags: set[tuple[int, int]] = set()
        get, tag_s, u16, u32 = self.w.get, self.tag, self.u16, self.u32
        while at < self.size or in_item:
            buf, off = get(at, 4, "an element tag")
            group, elem = tag_s.unpack_from(buf, off)
            if stop_group is not None and group != stop_group:
                return at, tags
            if group == 0xFFFE:
                if in_item and elem == 0xE00D:
                    self._skip(at, 8, "an item delimiter")
                    return at + 8, tags
                raise InvalidInstanceError(f"unexpected item/delimiter (FFFE,{elem:04X}) at byte {at}")
            tags.add((group, elem))
            if implicit:
                buf, off = get(at + 4, 4, "an element length")
                (length,) = u32.unpack_from(buf, off)
                vr, at = b"", at + 8
            else:
                buf, off = get(at + 4, 4, "an element VR")
                vr = bytes(buf[off:off + 2])
                if vr not in _VRS:
                    raise InvalidInstanceError(f"invalid VR {vr!r} of ({group:04X},{elem:04X}) at byte {at}")
                if vr in _LONG_VRS:
                    buf, off = get(at + 8, 4, "an element length")
                    (length,) = u32.unpack_from(buf, off)
                    at += 12
                else:
                    (length,) = u16.unpack_from(buf, off + 2)
                    at += 8
            if length == _UNDEFINED:  # sequence, encapsulated pixel data, or UN (then implicit VR inside)
                at = self.items(at, implicit or vr == b"UN")
            else:
                if (group, elem) in wanted and length <= _MAX_VALUE:
                    buf, off = get(at, length, f"element ({group:04X},{elem:04X})")
                    self.values[(group, elem)] = bytes(buf[off:off + length])
                at = self._skip(at, length, f"element ({group:04X},{elem:04X})")
        return at, tags

    def items(self, at: int, implicit: bool) -> int:
        """Items of an undefined-length element up to and including its sequence delimiter."""
        while True:
            buf, off = self.w.get(at, 8, "an item header")
            group, elem, length = self.item.unpack_from(buf, off)
            if (group, elem) == (0xFFFE, 0xE0DD):
                return at + 8
            if (group, elem) != (0xFFFE, 0xE000):
                raise InvalidInstanceError(f"malformed sequence or encapsulated pixel data at byte {at}")
            at += 8
            if length == _UNDEFINED:
                at, _tags = self.dataset(at, implicit, in_item=True)
            else:
                at = self._skip(at, length, "an item or fragment")


def _text(value: bytes | None) -> str:
    return value.decode("ascii", "replace").strip(" \x00") if value else ""


def _number(value: bytes | None) -> int | None:
    text = _text(value)
    try:
        return int(text) if text else None
    except ValueError:
        try:
            number = float(text)
        except ValueError:
            return None
        return int(number) if number.is_integer() else None


def _check_deflated(fp: BinaryIO, offset: int) -> None:
    """Stream the deflated dataset through zlib: it must end cleanly."""
    fp.seek(offset)
    z = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        while chunk := fp.read(_COPY_CHUNK):
            z.decompress(chunk, 0)
            if z.eof:
                break
    except zlib.error as exc:
        raise InvalidInstanceError(f"deflated dataset corrupt: {exc}") from None
    if not z.eof:
        raise InvalidInstanceError("deflated dataset truncated")


def _read_deflated(fp: BinaryIO, header: dict[str, Any], start: int) -> dict[str, Any]:
    """Identifying attributes of a Deflated Explicit VR Little Endian file (pydicom inflates), checked whole."""
    fp.seek(0)
    try:
        ds = pydicom.dcmread(fp, stop_before_pixels=True, specific_tags=_HEADER_TAGS + list(_FACT_KEYWORDS.values()))
    except Exception as exc:  # pydicom raises several types on garbage
        raise InvalidInstanceError(f"unreadable dataset: {type(exc).__name__}: {exc}") from None
    _check_deflated(fp, start)
    try:  # values are converted on access
        for key, keyword in (("sop_class", "SOPClassUID"), ("sop_instance", "SOPInstanceUID"),
                             ("study", "StudyInstanceUID"), ("series", "SeriesInstanceUID"),
                             ("modality", "Modality"), ("series_description", "SeriesDescription")):
            header[key] = str(ds.get(keyword, "") or "")
        header["series_number"] = _int_or_none(ds.get("SeriesNumber"))
        header["instance_number"] = _int_or_none(ds.get("InstanceNumber"))
        raw = {name: ds.get(keyword) for name, keyword in _FACT_KEYWORDS.items()}
        header["facts"] = _facts_json({k: (None if v is None else "\\".join(map(str, v)) if isinstance(v, (list, tuple))
                                           or type(v).__name__ == "MultiValue" else str(v)) for k, v in raw.items()})
    except Exception as exc:
        raise InvalidInstanceError(f"unreadable dataset: {type(exc).__name__}: {exc}") from None
    return header


def read_header(path: Path) -> InstanceHeader:
    """File Meta and the identifying header attributes of a Part 10 file, validated.

    One structural walk over the encoded dataset (every element, item and
    fragment must lie inside the file, explicit VRs must be DICOM VRs, an
    image must carry pixel data) reads the identifying attributes on the way,
    so a truncated instance is refused without reading its pixels into
    memory, and the file is parsed once (pydicom alone reads a truncated
    file silently).  Deflated datasets are inflated by pydicom and checked
    with zlib.
    """
    with open(path, "rb", buffering=0) as fp:
        size = os.fstat(fp.fileno()).st_size
        window = _Window(fp.fileno(), size)
        buf, off = window.get(0, 132, "the preamble")
        if buf[off + 128:off + 132] != b"DICM":
            raise InvalidInstanceError("unreadable dataset: no DICM prefix (not a Part 10 file)")
        meta = _Walker(window, implicit=False, little_endian=True)  # File Meta: always explicit VR LE
        start, _tags = meta.dataset(132, False, wanted=_META_ELEMENTS | {_META_LENGTH: ""}, stop_group=0x0002)
        group_length = meta.values.get(_META_LENGTH, b"")
        if len(group_length) != 4 or 144 + struct.unpack("<I", group_length)[0] != start:
            raise InvalidInstanceError("File Meta Information group length missing or wrong")
        header: dict[str, Any] = {name: _text(meta.values.get(tag)) for tag, name in _META_ELEMENTS.items()}
        header["size"] = size
        ts = header["transfer_syntax"]
        if not ts:
            raise InvalidInstanceError("File Meta Information without a Transfer Syntax UID")
        if ts == DeflatedExplicitVRLittleEndian:
            return InstanceHeader(**_read_deflated(fp, header, start))
        implicit = ts == ImplicitVRLittleEndian
        walker = _Walker(window, implicit, little_endian=ts != ExplicitVRBigEndian)
        _end, tags = walker.dataset(start, implicit, wanted=_HEADER_ELEMENTS | _FACT_ELEMENTS)
    values = {name: walker.values.get(tag) for tag, name in _HEADER_ELEMENTS.items()}
    facts = {name: walker.values.get(tag) for tag, name in _FACT_ELEMENTS.items()}
    endian = ">" if ts == ExplicitVRBigEndian else "<"
    for name in ("concatenation_number", "concatenation_total"):  # US: binary in every transfer syntax
        value = facts[name]
        facts[name] = str(struct.unpack(endian + "H", value[:2])[0]) if value and len(value) >= 2 else None
    header["facts"] = _facts_json({k: v if isinstance(v, str) or v is None else _text(v) for k, v in facts.items()})
    for name in ("sop_class", "sop_instance", "study", "series", "modality"):
        header[name] = _text(values[name])
    header["series_description"] = _decode_text(values["series_description"], values["charset"])
    header["series_number"] = _number(values["series_number"])
    header["instance_number"] = _number(values["instance_number"])
    sop_class = header["sop_class"]
    if "Image Storage" in UID(sop_class).name and not tags & _PIXEL_TAGS:
        raise InvalidInstanceError("image dataset without pixel data (truncated?)")
    return InstanceHeader(**header)


def _position(value: str | None) -> str | None:
    """ImagePositionPatient (or SliceLocation) rounded to 0.01 mm: the key of a slice position."""
    if not value:
        return None
    try:
        return "\\".join(f"{round(float(v), 2):.2f}" for v in value.split("\\"))
    except ValueError:
        return None


def _facts_json(raw: dict[str, str | None]) -> str | None:
    """The completeness header values (:class:`node.completeness.HeaderFacts`) as compact JSON."""
    from .completeness import HeaderFacts

    def num(name: str) -> int | None:
        text = (raw.get(name) or "").split("\\")[0]
        return _number(text.encode("ascii", "replace")) if text else None

    def text(name: str) -> str | None:
        return (raw.get(name) or "").strip(" \x00") or None

    facts = HeaderFacts(
        series_instance_uid="", frames=num("frames"), temporal_positions=num("temporal_positions"),
        cardiac_images=num("cardiac_images"), images_in_acquisition=num("images_in_acquisition"),
        acquisition_number=num("acquisition_number"),
        position=_position(text("image_position")) or _position(text("slice_location")),
        scanning_sequence=text("scanning_sequence"), sequence_variant=text("sequence_variant"),
        sequence_name=text("sequence_name") or text("pulse_sequence_name"),
        concatenation_uid=text("concatenation_uid"), concatenation_number=num("concatenation_number"),
        concatenation_total=num("concatenation_total"),
    )
    return facts.extra_json()


def _decode_text(value: bytes | None, charset: bytes | None) -> str:
    """A text value (LO) in the dataset's Specific Character Set, as pydicom decodes it."""
    if not value:
        return ""
    terms = [t.strip(" \x00") for t in (charset or b"").decode("ascii", "replace").split("\\")] or [""]
    try:
        text = decode_bytes(value, convert_encodings(terms), set())
    except Exception:  # an unknown character set: keep what ASCII gives
        text = value.decode("ascii", "replace")
    return text.strip(" \x00")


class Spool:
    """Stores instances durably and keeps the ``instances`` index in step.

    Thread-safe: DIMSE associations and STOW-RS requests call it concurrently.
    ``on_stored`` listeners run after the file is durable and the row committed,
    before the caller answers success; an exception in a listener is logged and
    does not undo the store (``Spool.recover`` + completion reconcile cover crashes).
    ``own_results`` (``contains(sop_uid, series_uid) -> bool``, e.g.
    :class:`node.jobs.OwnResults`) recognises the node's own results: they raise
    :class:`OwnResultError` instead of being stored.
    """

    def __init__(self, storage_dir: str | Path, min_free_mb: int = 0,
                 on_stored: Callable[[StoredInstance], None] | None = None, own_results: Any = None,
                 group_commit: bool = False) -> None:
        self.storage_dir = Path(storage_dir)
        # concurrent stores share their fsyncs (node.fsync.GroupSync); False: each store fsyncs alone
        self.group_sync: GroupSync | None = GroupSync() if group_commit else None
        self.min_free_mb = int(min_free_mb)
        self.root = self.storage_dir / "spool"
        self.incoming = self.root / ".incoming"
        self.on_stored: list[Callable[[StoredInstance], None]] = [on_stored] if on_stored else []
        self.own_results = own_results
        self._lock = threading.Lock()
        self._in_flight: dict[str, tuple[str, str, int]] = {}  # SOP UID -> (study, series, commits), under _lock
        self._dir_lock = threading.Lock()
        self._durable_dirs: set[Path] = set()
        self._release_lock = threading.Lock()
        self._release_queue: queue.SimpleQueue[Path | None] = queue.SimpleQueue()
        self._releaser: threading.Thread | None = None
        private_dir(self.incoming)
        for d in (self.storage_dir, self.root, self.incoming):
            fsync_dir(d)
            self._durable_dirs.add(d)
        self._conn = connect(self.storage_dir, synchronous="NORMAL")  # files are the record; see module docstring
        self._index = InstanceIndex(self._conn)
        self._device = os.stat(self.root).st_dev

    # ------------------------------------------------------------------ public API
    def add_listener(self, fn: Callable[[StoredInstance], None]) -> None:
        self.on_stored.append(fn)

    def is_own_result(self, sop_instance_uid: str, series_instance_uid: str) -> bool:
        """True when the instance is (in a series of) one of the node's own results."""
        return self.own_results is not None and self.own_results.contains(sop_instance_uid, series_instance_uid)

    def has_space(self, incoming_bytes: int = 0) -> bool:
        """True when the spool's filesystem keeps ``min_free_mb`` free after ``incoming_bytes``."""
        free = shutil.disk_usage(self.root).free
        return free - incoming_bytes >= self.min_free_mb * 1024 * 1024

    def path_for(self, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        return (self.root / check_uid(study_uid, "StudyInstanceUID") / check_uid(series_uid, "SeriesInstanceUID")
                / f"{check_uid(sop_uid, 'SOPInstanceUID')}.dcm")

    def store_stream(self, file_meta: Dataset, dataset_stream: BinaryIO | bytes, *, calling_ae: str,
                     source: str, expect_sop_class: str | None = None,
                     expect_sop_instance: str | None = None) -> StoredInstance:
        """Store File Meta + the encoded dataset bytes (copied in chunks, never decoded)."""
        self._require_space()
        tmp = self._temp_path()
        try:
            meta = FileMetaDataset(file_meta)
            with open_private(tmp, exclusive=True) as f:
                f.write(b"\x00" * 128 + b"DICM")
                write_file_meta_info(f, meta, enforce_standard=True)
                if isinstance(dataset_stream, (bytes, bytearray, memoryview)):
                    f.write(dataset_stream)
                else:
                    shutil.copyfileobj(dataset_stream, f, _COPY_CHUNK)
            return self._commit(tmp, calling_ae=calling_ae, source=source, expect_sop_class=expect_sop_class,
                                expect_sop_instance=expect_sop_instance)
        finally:
            tmp.unlink(missing_ok=True)

    def store_file(self, path: str | Path, calling_ae: str, source: str, *, move: bool = False,
                   expect_sop_class: str | None = None, expect_sop_instance: str | None = None) -> StoredInstance:
        """Store a Part 10 file as it is.  ``move=True`` takes the file over (renamed when it is on
        the spool's filesystem, else copied); otherwise it is copied and left alone.
        ``expect_*`` are the UIDs of the request (C-STORE): a differing dataset is refused (0xA900)."""
        src = Path(path)
        self._require_space(src.stat().st_size)
        tmp = src if move and os.stat(src).st_dev == self._device else None
        own_tmp = tmp is None
        if own_tmp:
            tmp = self._temp_path()
            self._copy(src, tmp)
        assert tmp is not None
        try:
            return self._commit(tmp, calling_ae=calling_ae, source=source, expect_sop_class=expect_sop_class,
                                expect_sop_instance=expect_sop_instance)
        finally:
            if own_tmp:
                tmp.unlink(missing_ok=True)

    def delete_study(self, study_uid: str) -> int:
        """Remove a study's files, then its index rows (retention); returns rows removed."""
        folder = self.root / check_uid(study_uid, "StudyInstanceUID")
        with self._lock:
            if folder.exists():
                shutil.rmtree(folder)
                fsync_dir(self.root)
                self._durable_dirs = {d for d in self._durable_dirs if folder not in d.parents and d != folder}
            return self._index.delete_study(study_uid)

    def recover(self) -> RecoveryReport:
        """Start-up repair: remove temp files, index files the index lacks, drop rows of vanished files."""
        temp_removed = 0
        for p in list(self.incoming.iterdir()):
            p.unlink(missing_ok=True)
            temp_removed += 1
        with self._lock:
            repaired = self._index.repair_legacy_paths()
        if repaired:
            log.warning("spool index: paths stored relative to an old working directory repaired",
                        extra={"rows": repaired})
        on_disk: dict[str, Path] = {}
        for study in self.root.iterdir():
            if not study.is_dir() or study == self.incoming:
                continue
            for series in study.iterdir():
                if not series.is_dir():
                    continue
                for f in series.iterdir():
                    if f.name.endswith(TEMP_SUFFIX):
                        f.unlink(missing_ok=True)
                        temp_removed += 1
                    elif f.suffix == ".dcm":
                        on_disk[self._index.relative(f)] = f
        with self._lock:
            indexed = self._index.paths()
            dropped = self._index.delete_paths(sorted(p for p in indexed - set(on_disk) if p.startswith("spool/")))
        added = unreadable = 0
        for rel in sorted(set(on_disk) - indexed):
            f = on_disk[rel]
            try:
                inst = self._instance(read_header(f), calling_ae="", source="recovered",
                                      received_at=f.stat().st_mtime, replaced=False)
                if inst.path != f:
                    raise InvalidInstanceError("file is not at the path its UIDs give")
            except SpoolError as exc:
                log.warning("spool recovery: file left unindexed", extra={"path": str(f), "error": str(exc)})
                unreadable += 1
                continue
            with self._lock:
                self._index.upsert(inst)
            added += 1
        report = RecoveryReport(added, dropped, temp_removed, unreadable)
        if added or dropped or temp_removed or unreadable:
            log.warning("spool recovered after an interrupted run", extra=dataclasses.asdict(report))
        return report

    reindex = recover

    def close(self) -> None:
        self._stop_releaser()
        with self._lock:
            self._conn.close()

    # ------------------------------------------------------------------ internals
    def _keep_old_copy(self, dest: Path) -> Path | None:
        """A second name (in ``.incoming``) for the file a re-sent instance is about to replace.

        Renaming over the last name of a file frees its blocks inside ``rename()``: 2-3 ms for a
        525 kB slice on the dev VM's ext4, while the sender waits for its response.  With a second
        name the rename only drops a link; :meth:`_release_later` removes the old copy after the
        response.  A crash leaves the name in ``.incoming``, which :meth:`recover` empties.
        """
        keep = self.incoming / f"{uuid.uuid4().hex}{REPLACED_SUFFIX}"
        try:
            os.link(dest, keep)
        except OSError:  # nothing to replace, or no hard links here (then replace as before)
            return None
        return keep

    def _release_later(self, path: Path) -> None:
        """Unlink ``path`` in the releaser thread (started on first use, stopped by :meth:`close`)."""
        with self._release_lock:
            if self._releaser is None or not self._releaser.is_alive():
                self._releaser = threading.Thread(target=self._release_loop, name="spool-release", daemon=True)
                self._releaser.start()
            self._release_queue.put(path)

    def _release_loop(self) -> None:
        while (path := self._release_queue.get()) is not None:
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:  # left for recover() at the next start
                log.warning("old copy of a replaced instance not removed", extra={"path": str(path),
                                                                                  "error": str(exc)})

    def _stop_releaser(self) -> None:
        with self._release_lock:
            releaser, self._releaser = self._releaser, None
        if releaser is not None:
            self._release_queue.put(None)
            releaser.join(timeout=30)

    def _fsync(self, path: Path, directory: bool = False) -> None:
        if self.group_sync is not None:
            self.group_sync.sync(path, directory=directory)
        else:
            fsync_path(path, directory=directory)

    def _require_space(self, incoming_bytes: int = 0) -> None:
        if not self.has_space(incoming_bytes):
            raise OutOfSpaceError(f"less than {self.min_free_mb} MB would stay free on the spool filesystem")

    def _temp_path(self) -> Path:
        return self.incoming / f"{uuid.uuid4().hex}{TEMP_SUFFIX}"

    @staticmethod
    def _copy(src: Path, dst: Path) -> None:
        """Kernel-side copy (no Python buffers) where the platform has one."""
        with open(src, "rb") as fi, open_private(dst, exclusive=True) as fo:
            try:
                remaining = os.fstat(fi.fileno()).st_size
                while remaining > 0:
                    n = os.copy_file_range(fi.fileno(), fo.fileno(), min(remaining, 1 << 30))
                    if n == 0:
                        break
                    remaining -= n
                if remaining:
                    raise OSError(errno.EIO, "short copy")
            except (AttributeError, OSError) as exc:
                if isinstance(exc, OSError) and exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL,
                                                                 errno.EOPNOTSUPP, errno.EIO):
                    raise
                fi.seek(0)
                fo.seek(0)
                fo.truncate()
                shutil.copyfileobj(fi, fo, _COPY_CHUNK)

    def _ensure_dir(self, folder: Path) -> None:
        """Create ``folder`` (and parents) and make each new entry durable in its parent."""
        if folder in self._durable_dirs:
            return
        with self._dir_lock:  # another thread may be between mkdir and the parent's fsync
            self._make_dirs(folder)

    def _make_dirs(self, folder: Path) -> None:
        if folder in self._durable_dirs:
            return
        missing = []
        p = folder
        while p not in self._durable_dirs and not p.exists():
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            d.mkdir(mode=DIR_MODE, exist_ok=True)
            fsync_dir(d.parent)
        self._durable_dirs.add(folder)

    def _instance(self, header: InstanceHeader, *, calling_ae: str, source: str, received_at: float,
                  replaced: bool) -> StoredInstance:
        study = check_uid(header.study, "StudyInstanceUID")
        series = check_uid(header.series, "SeriesInstanceUID")
        sop = check_uid(header.sop_instance, "SOPInstanceUID")
        return StoredInstance(
            sop_instance_uid=sop,
            sop_class_uid=check_uid(header.sop_class, "SOPClassUID"),
            study_instance_uid=study,
            series_instance_uid=series,
            modality=header.modality,
            transfer_syntax_uid=check_uid(header.transfer_syntax, "TransferSyntaxUID"),
            path=self.root / study / series / f"{sop}.dcm",
            size=header.size,
            calling_ae=calling_ae,
            received_at=received_at,
            replaced=replaced,
            source=source,
            series_description=header.series_description,
            series_number=header.series_number,
            instance_number=header.instance_number,
            facts=header.facts,
        )

    def _claim(self, inst: StoredInstance) -> None:
        """Refuse an instance whose SOP Instance UID is stored (or being stored) under another study
        or series: a SOP Instance UID names one object, and replacing it would move it out of the
        study that holds it.  A re-sent copy in the same series is claimed alongside."""
        key = (inst.study_instance_uid, inst.series_instance_uid)
        with self._lock:
            row = self._index.get(inst.sop_instance_uid)
            held = self._in_flight.get(inst.sop_instance_uid)
            where = ((row["study_instance_uid"], row["series_instance_uid"]) if row is not None
                     else held[:2] if held is not None else key)
            if where != key:
                raise DuplicateInstanceError(
                    f"SOP Instance UID {inst.sop_instance_uid} is already stored in study {where[0]} series "
                    f"{where[1]}; refused for study {key[0]} series {key[1]} (the stored instance is kept)")
            self._in_flight[inst.sop_instance_uid] = (*key, (held[2] if held else 0) + 1)

    def _unclaim(self, inst: StoredInstance) -> None:
        with self._lock:
            study, series, n = self._in_flight[inst.sop_instance_uid]
            if n > 1:
                self._in_flight[inst.sop_instance_uid] = (study, series, n - 1)
            else:
                del self._in_flight[inst.sop_instance_uid]

    def _commit(self, tmp: Path, *, calling_ae: str, source: str, expect_sop_class: str | None = None,
                expect_sop_instance: str | None = None) -> StoredInstance:
        """Validate ``tmp`` (on the spool filesystem), make it durable at its final path, index it."""
        header = read_header(tmp)
        sop_class, sop_uid = header.sop_class, header.sop_instance
        if not sop_class or not sop_uid:
            raise InvalidInstanceError("dataset without SOP Class/Instance UID (empty or truncated)")
        if expect_sop_class is not None and sop_class != expect_sop_class:
            raise DatasetMismatchError(f"dataset SOP Class {sop_class!r} is not the requested {expect_sop_class!r}")
        if expect_sop_instance is not None and sop_uid != expect_sop_instance:
            raise DatasetMismatchError(f"dataset SOP Instance {sop_uid!r} is not the requested {expect_sop_instance!r}")
        meta_class, meta_uid = header.meta_sop_class, header.meta_sop_instance
        if (meta_class and meta_class != sop_class) or (meta_uid and meta_uid != sop_uid):
            raise DatasetMismatchError("File Meta Information does not match the dataset's SOP Class/Instance UID")
        inst = self._instance(header, calling_ae=calling_ae, source=source, received_at=time.time(),
                              replaced=False)
        if self.is_own_result(inst.sop_instance_uid, inst.series_instance_uid):
            raise OwnResultError(inst.sop_instance_uid, inst.series_instance_uid, inst.study_instance_uid)
        self._claim(inst)
        try:
            self._fsync(tmp)  # the bytes are on stable storage before they get the instance's name
            dest = inst.path
            self._ensure_dir(dest.parent)
            replaced_copy = self._keep_old_copy(dest)
            existed = replaced_copy is not None or dest.exists()
            os.replace(tmp, dest)
            self._fsync(dest.parent, directory=True)  # and the name before the success status
            if replaced_copy is not None:
                self._release_later(replaced_copy)
            with self._lock:
                previous = self._index.upsert(inst)
        finally:
            self._unclaim(inst)
        if existed or previous is not None:
            inst = dataclasses.replace(inst, replaced=True)
        for fn in list(self.on_stored):
            try:
                fn(inst)
            except Exception:
                log.exception("on_stored listener failed; the instance stays stored",
                              extra={"sop_instance": inst.sop_instance_uid})
        return inst
