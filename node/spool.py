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
import re
import shutil
import struct
import threading
import time
import uuid
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Callable

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

from . import db
from .fsync import fsync_dir, fsync_path
from .index import InstanceIndex

__all__ = [
    "Spool",
    "StoredInstance",
    "RecoveryReport",
    "SpoolError",
    "InvalidInstanceError",
    "DatasetMismatchError",
    "OutOfSpaceError",
    "check_uid",
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


class SpoolError(Exception):
    """An instance was not stored; ``status`` is the DIMSE C-STORE status to answer with."""

    status = 0xC000


class InvalidInstanceError(SpoolError):
    """Malformed or truncated dataset, missing or invalid UIDs: "cannot understand"."""

    status = 0xC210


class DatasetMismatchError(SpoolError):
    """The dataset's SOP Class/Instance UID differs from the request (or File Meta)."""

    status = 0xA900


class OutOfSpaceError(SpoolError):
    """Free space on the spool's filesystem is below ``min_free_mb``."""

    status = 0xA700


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


class _Walker:
    """Structural walk over an encoded (not deflated) dataset: every element, item and
    delimiter must lie wholly inside the file.  Values are skipped, never read, so a
    multi-frame instance costs a few reads per element/fragment, not its size."""

    def __init__(self, fp: BinaryIO, size: int, implicit: bool, little_endian: bool) -> None:
        self.fp, self.size, self.implicit = fp, size, implicit
        self.e = "<" if little_endian else ">"

    def _read(self, at: int, n: int, what: str) -> bytes:
        self.fp.seek(at)
        data = self.fp.read(n)
        if len(data) < n:
            raise InvalidInstanceError(f"dataset truncated in {what} at byte {at}")
        return data

    def _skip(self, at: int, length: int, what: str) -> int:
        if at + length > self.size:
            raise InvalidInstanceError(f"dataset truncated: {what} at byte {at} needs {at + length - self.size}"
                                       " more bytes")
        return at + length

    def dataset(self, at: int, implicit: bool, in_item: bool = False) -> tuple[int, set[tuple[int, int]]]:
        """Walk elements from ``at`` to the end of the file (top level) or to the item delimiter
        (``in_item``); returns the position after it and the tags seen at this level."""
        tags: set[tuple[int, int]] = set()
        while at < self.size or in_item:
            group, elem = struct.unpack(self.e + "HH", self._read(at, 4, "an element tag"))
            if group == 0xFFFE:
                if in_item and elem == 0xE00D:
                    return at + 8, tags
                raise InvalidInstanceError(f"unexpected item/delimiter (FFFE,{elem:04X}) at byte {at}")
            tags.add((group, elem))
            if implicit:
                (length,) = struct.unpack(self.e + "I", self._read(at + 4, 4, "an element length"))
                vr, at = b"", at + 8
            else:
                vr = self._read(at + 4, 2, "an element VR")
                if vr in _LONG_VRS:
                    (length,) = struct.unpack(self.e + "I", self._read(at + 8, 4, "an element length"))
                    at += 12
                else:
                    (length,) = struct.unpack(self.e + "H", self._read(at + 6, 2, "an element length"))
                    at += 8
            if length == _UNDEFINED:  # sequence, encapsulated pixel data, or UN (then implicit VR inside)
                at = self.items(at, implicit or vr == b"UN")
            else:
                at = self._skip(at, length, f"element ({group:04X},{elem:04X})")
        return at, tags

    def items(self, at: int, implicit: bool) -> int:
        """Items of an undefined-length element up to and including its sequence delimiter."""
        while True:
            group, elem, length = struct.unpack(self.e + "HHI", self._read(at, 8, "an item header"))
            if (group, elem) == (0xFFFE, 0xE0DD):
                return at + 8
            if (group, elem) != (0xFFFE, 0xE000):
                raise InvalidInstanceError(f"malformed sequence or encapsulated pixel data at byte {at}")
            at += 8
            if length == _UNDEFINED:
                at, _tags = self.dataset(at, implicit, in_item=True)
            else:
                at = self._skip(at, length, "an item or fragment")


def _check_structure(fp: BinaryIO, start: int, size: int, ts: str, sop_class: str) -> None:
    """The dataset from ``start`` is complete; an image has its pixel data (a cut exactly
    between two elements leaves no half element, only the missing pixel data)."""
    implicit = ts == ImplicitVRLittleEndian
    walker = _Walker(fp, size, implicit, little_endian=ts != ExplicitVRBigEndian)
    _end, tags = walker.dataset(start, implicit)
    if "Image Storage" in UID(sop_class).name and not tags & _PIXEL_TAGS:
        raise InvalidInstanceError("image dataset without pixel data (truncated?)")


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


def read_header(path: Path) -> tuple[FileMetaDataset, Dataset]:
    """File Meta and the identifying header attributes of a Part 10 file, validated.

    Parses only the identifying attributes (``stop_before_pixels`` +
    ``specific_tags``; pydicom reads a truncated file silently) and then walks
    the encoded dataset structurally: every element, item and fragment must
    lie inside the file and an image must carry pixel data, so a truncated
    instance is refused without reading its pixels into memory.
    """
    size = path.stat().st_size
    with open(path, "rb") as fp:
        try:
            ds = pydicom.dcmread(fp, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
        except Exception as exc:  # pydicom raises several types on garbage
            raise InvalidInstanceError(f"unreadable dataset: {type(exc).__name__}: {exc}") from None
        meta = ds.file_meta
        ts = str(meta.get("TransferSyntaxUID", ""))
        start = int(meta.get("FileMetaInformationGroupLength", 0)) + 144  # preamble, DICM, (0002,0000)
        if ts == DeflatedExplicitVRLittleEndian:
            _check_deflated(fp, start)
        else:
            _check_structure(fp, start, size, ts, str(ds.get("SOPClassUID", "")))
    return meta, ds


class Spool:
    """Stores instances durably and keeps the ``instances`` index in step.

    Thread-safe: DIMSE associations and STOW-RS requests call it concurrently.
    ``on_stored`` listeners run after the file is durable and the row committed,
    before the caller answers success; an exception in a listener is logged and
    does not undo the store (``Spool.recover`` + completion reconcile cover crashes).
    """

    def __init__(self, storage_dir: str | Path, min_free_mb: int = 0,
                 on_stored: Callable[[StoredInstance], None] | None = None) -> None:
        self.storage_dir = Path(storage_dir)
        self.min_free_mb = int(min_free_mb)
        self.root = self.storage_dir / "spool"
        self.incoming = self.root / ".incoming"
        self.on_stored: list[Callable[[StoredInstance], None]] = [on_stored] if on_stored else []
        self._lock = threading.Lock()
        self._dir_lock = threading.Lock()
        self._durable_dirs: set[Path] = set()
        self.incoming.mkdir(parents=True, exist_ok=True)
        for d in (self.storage_dir, self.root, self.incoming):
            fsync_dir(d)
            self._durable_dirs.add(d)
        self._conn = db.connect(self.storage_dir)
        self._conn.execute("PRAGMA synchronous=NORMAL")  # files are the record; see module docstring
        self._index = InstanceIndex(self._conn)
        self._device = os.stat(self.root).st_dev

    # ------------------------------------------------------------------ public API
    def add_listener(self, fn: Callable[[StoredInstance], None]) -> None:
        self.on_stored.append(fn)

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
            with open(tmp, "wb") as f:
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
                meta, ds = read_header(f)
                inst = self._instance(f, meta, ds, calling_ae="", source="recovered",
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
        with self._lock:
            self._conn.close()

    # ------------------------------------------------------------------ internals
    def _require_space(self, incoming_bytes: int = 0) -> None:
        if not self.has_space(incoming_bytes):
            raise OutOfSpaceError(f"less than {self.min_free_mb} MB would stay free on the spool filesystem")

    def _temp_path(self) -> Path:
        return self.incoming / f"{uuid.uuid4().hex}{TEMP_SUFFIX}"

    @staticmethod
    def _copy(src: Path, dst: Path) -> None:
        """Kernel-side copy (no Python buffers) where the platform has one."""
        with open(src, "rb") as fi, open(dst, "wb") as fo:
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
            d.mkdir(exist_ok=True)
            fsync_dir(d.parent)
        self._durable_dirs.add(folder)

    def _instance(self, path: Path, meta: Dataset, ds: Dataset, *, calling_ae: str, source: str,
                  received_at: float, replaced: bool) -> StoredInstance:
        study = check_uid(ds.get("StudyInstanceUID"), "StudyInstanceUID")
        series = check_uid(ds.get("SeriesInstanceUID"), "SeriesInstanceUID")
        sop = check_uid(ds.get("SOPInstanceUID"), "SOPInstanceUID")
        return StoredInstance(
            sop_instance_uid=sop,
            sop_class_uid=check_uid(ds.get("SOPClassUID"), "SOPClassUID"),
            study_instance_uid=study,
            series_instance_uid=series,
            modality=str(ds.get("Modality", "") or ""),
            transfer_syntax_uid=check_uid(meta.get("TransferSyntaxUID"), "TransferSyntaxUID"),
            path=self.root / study / series / f"{sop}.dcm",
            size=path.stat().st_size,
            calling_ae=calling_ae,
            received_at=received_at,
            replaced=replaced,
            source=source,
            series_description=str(ds.get("SeriesDescription", "") or ""),
            series_number=_int_or_none(ds.get("SeriesNumber")),
            instance_number=_int_or_none(ds.get("InstanceNumber")),
        )

    def _commit(self, tmp: Path, *, calling_ae: str, source: str, expect_sop_class: str | None = None,
                expect_sop_instance: str | None = None) -> StoredInstance:
        """Validate ``tmp`` (on the spool filesystem), make it durable at its final path, index it."""
        meta, ds = read_header(tmp)
        sop_class, sop_uid = str(ds.get("SOPClassUID", "")), str(ds.get("SOPInstanceUID", ""))
        if expect_sop_class is not None and sop_class != expect_sop_class:
            raise DatasetMismatchError(f"dataset SOP Class {sop_class!r} is not the requested {expect_sop_class!r}")
        if expect_sop_instance is not None and sop_uid != expect_sop_instance:
            raise DatasetMismatchError(f"dataset SOP Instance {sop_uid!r} is not the requested {expect_sop_instance!r}")
        meta_class, meta_uid = str(meta.get("MediaStorageSOPClassUID", "")), str(meta.get("MediaStorageSOPInstanceUID", ""))
        if (meta_class and meta_class != sop_class) or (meta_uid and meta_uid != sop_uid):
            raise DatasetMismatchError("File Meta Information does not match the dataset's SOP Class/Instance UID")
        inst = self._instance(tmp, meta, ds, calling_ae=calling_ae, source=source, received_at=time.time(),
                              replaced=False)
        fsync_path(tmp)
        dest = inst.path
        self._ensure_dir(dest.parent)
        existed = dest.exists()
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
        with self._lock:
            previous = self._index.upsert(inst)
        if previous is not None and previous != dest:
            previous.unlink(missing_ok=True)  # the instance moved to another study/series
        if existed or previous is not None:
            inst = dataclasses.replace(inst, replaced=True)
        for fn in list(self.on_stored):
            try:
                fn(inst)
            except Exception:
                log.exception("on_stored listener failed; the instance stays stored",
                              extra={"sop_instance": inst.sop_instance_uid})
        return inst
