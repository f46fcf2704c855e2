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
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import write_file_meta_info

from . import dicom_header
from .dicom_header import InstanceHeader
from .files import DIR_MODE, open_private, private_dir
from .fsync import GroupSync, fsync_dir, fsync_path
from .state import InstanceIndex, OwnResults, connect

if TYPE_CHECKING:
    from _typeshed import SupportsRead

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
_COPY_CHUNK = 1 << 20
TEMP_SUFFIX = ".part"


def incoming_prefix(pid: int | None = None) -> str:
    """How every name a process creates in ``.incoming`` starts: its process id, so that what a dead
    ingest process left can be told apart (:meth:`Spool.remove_leftovers_of`)."""
    return f"{os.getpid() if pid is None else pid}-"

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


def read_header(path: Path) -> InstanceHeader:
    """File Meta and the identifying attributes of a Part 10 file, validated (:mod:`node.dicom_header`);
    a malformed file raises :class:`InvalidInstanceError`."""
    try:
        return dicom_header.read_header(path)
    except dicom_header.MalformedDatasetError as exc:
        raise InvalidInstanceError(str(exc)) from None


class Spool:
    """Stores instances durably and keeps the ``instances`` index in step.

    Thread-safe: DIMSE associations and STOW-RS requests call it concurrently.
    ``on_stored`` listeners run after the file is durable and the row committed,
    before the caller answers success; an exception in a listener is logged and
    does not undo the store (``Spool.recover`` + completion reconcile cover crashes).
    ``own_results`` (:class:`node.state.OwnResults`) recognises the node's own results: they raise
    :class:`OwnResultError` instead of being stored.
    """

    def __init__(self, storage_dir: str | Path, min_free_mb: int = 0,
                 on_stored: Callable[[StoredInstance], None] | None = None,
                 own_results: OwnResults | None = None,
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

    def store_stream(self, file_meta: Dataset, dataset_stream: SupportsRead[bytes] | bytes, *, calling_ae: str,
                     source: str, expect_sop_class: str | None = None,
                     expect_sop_instance: str | None = None) -> StoredInstance:
        """Store File Meta + the encoded dataset bytes (copied in chunks, never decoded)."""
        self._require_space()
        tmp = self._temp_path()
        try:
            meta = FileMetaDataset(file_meta)
            with open_private(tmp, exclusive=True) as f:
                f.write(b"\x00" * 128 + b"DICM")
                # pydicom annotates DicomIO but documents any file-like and only calls write()
                write_file_meta_info(f, meta, enforce_standard=True)  # type: ignore[arg-type]
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

    def remove_leftovers_of(self, pid: int) -> int:
        """Remove what process ``pid``, which has ended, left in ``.incoming`` (partial datasets,
        second names of replaced instances; each name starts with its creator's :func:`incoming_prefix`);
        returns how many.  An ingest process killed mid-C-STORE leaves them; without this they stay
        until the next start's :meth:`recover`."""
        removed = 0
        for p in self.incoming.glob(f"{incoming_prefix(pid)}*"):
            try:
                p.unlink()
                removed += 1
            except FileNotFoundError:
                pass
        return removed

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
        keep = self.incoming / f"{incoming_prefix()}{uuid.uuid4().hex}{REPLACED_SUFFIX}"
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
        return self.incoming / f"{incoming_prefix()}{uuid.uuid4().hex}{TEMP_SUFFIX}"

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
