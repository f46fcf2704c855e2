"""Instances repository: the spool index, one SQLite row per stored SOP instance, and study views built from it.

The files under ``<storage_dir>/spool`` are the record; this table is the
index over them that completion, routing, pipelines and retention query.
:meth:`node.spool.Spool.recover` rebuilds rows for files a crash left
unindexed.  Paths are stored relative to the storage directory (the folder
holding the database) so that a moved storage directory keeps working; a path
outside it is stored absolute.  Never relative to the working directory: a
cwd-relative path joined to the storage directory later named a file that does
not exist (``./var`` became ``<cwd>/var/var/spool/...``).  Databases written
that way are repaired by :meth:`InstanceIndex.repair_legacy_paths` at start.
"""
from __future__ import annotations

import dataclasses
import os
import sqlite3
from pathlib import Path
from typing import Any, Iterable, Protocol

from pipelines.base import InstanceRef, SeriesView, StudyView

from ..completeness import HeaderFacts
from .connection import transaction

__all__ = ["IndexedInstance", "InstanceIndex", "StudySummary"]


_COLUMNS = (
    "sop_instance_uid", "study_instance_uid", "series_instance_uid", "sop_class_uid", "modality",
    "series_description", "series_number", "instance_number", "transfer_syntax_uid", "path", "size",
    "calling_ae", "source", "received_at", "header",
)


class IndexedInstance(Protocol):
    """What the index records of a stored instance (:class:`node.spool.StoredInstance`); read-only, as
    the frozen dataclass is."""

    @property
    def sop_instance_uid(self) -> str: ...
    @property
    def study_instance_uid(self) -> str: ...
    @property
    def series_instance_uid(self) -> str: ...
    @property
    def sop_class_uid(self) -> str: ...
    @property
    def modality(self) -> str: ...
    @property
    def transfer_syntax_uid(self) -> str: ...
    @property
    def path(self) -> Path: ...
    @property
    def size(self) -> int: ...
    @property
    def calling_ae(self) -> str: ...
    @property
    def received_at(self) -> float: ...
    @property
    def source(self) -> str: ...
    @property
    def series_description(self) -> str: ...
    @property
    def series_number(self) -> int | None: ...
    @property
    def instance_number(self) -> int | None: ...
    @property
    def facts(self) -> str | None: ...  # completeness header values as JSON (node.completeness.HeaderFacts)


@dataclasses.dataclass(frozen=True)
class StudySummary:
    """One study in the spool: counts and arrival times."""

    study_instance_uid: str
    series: int
    instances: int
    bytes: int
    modalities: tuple[str, ...]
    first_received_at: float
    last_received_at: float


def _base_dir(conn: sqlite3.Connection) -> Path:
    """The storage directory: the folder of the main database file."""
    for row in conn.execute("PRAGMA database_list"):
        if row[1] == "main" and row[2]:
            return Path(row[2]).parent
    raise ValueError("the spool index needs a file-backed database (node.state.connect)")


class InstanceIndex:
    """Queries and updates of the ``instances`` table on one connection (one thread)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.base = _base_dir(conn)

    # ------------------------------------------------------------------ paths
    def relative(self, path: str | Path) -> str:
        """The stored form of ``path``: relative to the storage directory, else absolute.

        A relative ``path`` is taken from the working directory, as the
        caller's ``open()`` would take it.
        """
        p = Path(os.path.abspath(path))
        try:
            return p.relative_to(self.base).as_posix()
        except ValueError:
            return str(p)

    def absolute(self, stored: str) -> Path:
        p = Path(stored)
        return p if p.is_absolute() else self.base / p

    def repair_legacy_paths(self) -> int:
        """Rewrite rows stored relative to an old working directory (``var/spool/S/Se/I.dcm``) as
        ``spool/S/Se/I.dcm``; returns the number of rows changed.

        The spool layout is fixed (``spool/<study>/<series>/<instance>.dcm``),
        so the last four parts of such a path are its place in this storage
        directory whatever the working directory was.
        """
        rows = self.conn.execute(
            "SELECT sop_instance_uid, path FROM instances WHERE path NOT LIKE 'spool/%' AND path NOT LIKE '/%'"
        ).fetchall()
        fixed = []
        for r in rows:
            parts = Path(r["path"]).parts
            if len(parts) > 4 and parts[-4] == "spool":
                fixed.append((Path(*parts[-4:]).as_posix(), r["sop_instance_uid"]))
        if fixed:
            with transaction(self.conn):
                self.conn.executemany("UPDATE instances SET path=? WHERE sop_instance_uid=?", fixed)
        return len(fixed)

    # ------------------------------------------------------------------ writes
    def upsert(self, instance: IndexedInstance) -> Path | None:
        """Insert or replace the row of one stored instance; returns the previous row's path (None: new)."""
        values = {
            "sop_instance_uid": instance.sop_instance_uid,
            "study_instance_uid": instance.study_instance_uid,
            "series_instance_uid": instance.series_instance_uid,
            "sop_class_uid": instance.sop_class_uid,
            "modality": instance.modality or "",
            "series_description": instance.series_description or "",
            "series_number": instance.series_number,
            "instance_number": instance.instance_number,
            "transfer_syntax_uid": instance.transfer_syntax_uid,
            "path": self.relative(instance.path),
            "size": int(instance.size),
            "calling_ae": instance.calling_ae or "",
            "source": instance.source or "",
            "received_at": float(instance.received_at),
            "header": instance.facts,
        }
        with transaction(self.conn) as conn:
            old = conn.execute("SELECT path FROM instances WHERE sop_instance_uid=?",
                               (values["sop_instance_uid"],)).fetchone()
            conn.execute(
                f"INSERT OR REPLACE INTO instances ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                [values[c] for c in _COLUMNS],
            )
        return None if old is None else self.absolute(old["path"])

    def delete_study(self, study_uid: str) -> int:
        """Remove the rows of one study (the files are the caller's: see ``Spool.delete_study``)."""
        with transaction(self.conn):
            cur = self.conn.execute("DELETE FROM instances WHERE study_instance_uid=?", (study_uid,))
        return cur.rowcount

    def delete_paths(self, paths: Iterable[str]) -> int:
        """Remove rows by stored (relative) path; used by recovery for files that vanished."""
        n = 0
        with transaction(self.conn):
            for p in paths:
                n += self.conn.execute("DELETE FROM instances WHERE path=?", (p,)).rowcount
        return n

    # ------------------------------------------------------------------ reads
    def study_instances(self, study_uid: str) -> list[sqlite3.Row]:
        """Rows of one study (``path`` as stored: relative to the storage directory)."""
        return self.conn.execute(
            "SELECT * FROM instances WHERE study_instance_uid=?"
            " ORDER BY series_instance_uid, instance_number IS NULL, instance_number, path",
            (study_uid,),
        ).fetchall()

    def study_headers(self, study_uid: str) -> list[HeaderFacts]:
        """What completeness judges the study's series by: one :class:`HeaderFacts` per instance."""
        return [HeaderFacts.from_index(r) for r in self.conn.execute(
            "SELECT series_instance_uid, sop_class_uid, modality, series_description, instance_number, header"
            " FROM instances WHERE study_instance_uid=? ORDER BY series_instance_uid, instance_number", (study_uid,))]

    def get(self, sop_instance_uid: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.conn.execute(
            "SELECT * FROM instances WHERE sop_instance_uid=?", (sop_instance_uid,)).fetchone()
        return row

    def series_summary(self, study_uid: str) -> list[dict[str, Any]]:
        """Per series of a study: modality, description, instance count, calling AEs and SOP classes
        (comma-separated) -- the console's study page and its route explanations."""
        return [dict(r) for r in self.conn.execute(
            "SELECT series_instance_uid AS series_uid, MAX(modality) AS modality, MAX(series_description)"
            " AS description, COUNT(*) AS instances, GROUP_CONCAT(DISTINCT calling_ae) AS calling_aes,"
            " GROUP_CONCAT(DISTINCT sop_class_uid) AS sop_classes FROM instances WHERE study_instance_uid=?"
            " GROUP BY series_instance_uid ORDER BY MIN(series_number), series_instance_uid", (study_uid,))]

    def study_view(self, study_uid: str) -> StudyView:
        """The study as pipelines see it: series sorted by SeriesNumber (then UID), instances by
        InstanceNumber then path.  An unknown study gives a view with no series."""
        rows = self.study_instances(study_uid)
        by_series: dict[str, list[sqlite3.Row]] = {}
        for r in rows:
            by_series.setdefault(r["series_instance_uid"], []).append(r)
        series = []
        for uid, items in by_series.items():
            items.sort(key=lambda r: (r["instance_number"] is None, r["instance_number"] or 0, r["path"]))
            refs = tuple(
                InstanceRef(
                    sop_instance_uid=r["sop_instance_uid"],
                    sop_class_uid=r["sop_class_uid"],
                    series_instance_uid=uid,
                    study_instance_uid=study_uid,
                    path=self.absolute(r["path"]),
                    modality=r["modality"],
                    instance_number=r["instance_number"],
                    transfer_syntax_uid=r["transfer_syntax_uid"],
                )
                for r in items
            )
            first = items[0]
            series.append(SeriesView(
                series_instance_uid=uid,
                modality=first["modality"],
                instances=refs,
                series_description=next((r["series_description"] for r in items if r["series_description"]), ""),
                series_number=next((r["series_number"] for r in items if r["series_number"] is not None), None),
            ))
        series.sort(key=lambda s: (s.series_number is None, s.series_number or 0, s.series_instance_uid))
        callers = tuple(sorted({r["calling_ae"] for r in rows if r["calling_ae"]}))
        return StudyView(study_instance_uid=study_uid, series=tuple(series), calling_ae_titles=callers)

    def studies(self) -> list[StudySummary]:
        """Every study in the spool, most recently received first."""
        rows = self.conn.execute(
            "SELECT study_instance_uid AS uid, COUNT(DISTINCT series_instance_uid) AS series, COUNT(*) AS n,"
            " SUM(size) AS bytes, GROUP_CONCAT(DISTINCT modality) AS modalities,"
            " MIN(received_at) AS first, MAX(received_at) AS last"
            " FROM instances GROUP BY study_instance_uid ORDER BY last DESC"
        ).fetchall()
        return [
            StudySummary(r["uid"], r["series"], r["n"], r["bytes"] or 0,
                         tuple(sorted(m for m in (r["modalities"] or "").split(",") if m)), r["first"], r["last"])
            for r in rows
        ]

    def study_last_received(self) -> list[tuple[str, float]]:
        """(study uid, last received time) of every study; completion reconciles with it at start."""
        return [(r[0], float(r[1])) for r in self.conn.execute(
            "SELECT study_instance_uid, MAX(received_at) FROM instances GROUP BY study_instance_uid")]

    def counts(self) -> dict[str, int]:
        """Totals: studies, series, instances, bytes."""
        r = self.conn.execute(
            "SELECT COUNT(DISTINCT study_instance_uid), COUNT(DISTINCT series_instance_uid), COUNT(*),"
            " COALESCE(SUM(size), 0) FROM instances"
        ).fetchone()
        return {"studies": r[0], "series": r[1], "instances": r[2], "bytes": r[3]}

    def paths(self) -> set[str]:
        """Stored (relative) paths of every row; recovery compares them with the disk."""
        return {r[0] for r in self.conn.execute("SELECT path FROM instances")}
