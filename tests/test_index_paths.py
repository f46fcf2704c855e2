"""Spool index paths: stored relative to the storage folder whatever the working directory, and rows an
older version stored relative to its working directory (``var/spool/...``) repaired at start-up."""
from __future__ import annotations

from pathlib import Path

import pydicom

from node.state import connect
from node.state import InstanceIndex
from node.spool import Spool
from tests.fixtures.studies import write_ct_study


def _study_paths(storage: Path, study_uid: str) -> list[Path]:
    conn = connect(storage)
    try:
        view = InstanceIndex(conn).study_view(study_uid)
        return [ref.path for series in view for ref in series]
    finally:
        conn.close()


def test_relative_storage_dir_gives_paths_that_exist_from_any_working_directory(tmp_path, monkeypatch) -> None:
    """`storage_dir: ./var` handed to the spool as given: the study view must name the files it stored."""
    files = write_ct_study(tmp_path / "in", 2)
    study_uid = pydicom.dcmread(files[0]).StudyInstanceUID
    monkeypatch.chdir(tmp_path)
    spool = Spool("var")
    try:
        for f in files:
            spool.store_file(f, calling_ae="MODALITY", source="dimse")
    finally:
        spool.close()
    conn = connect(tmp_path / "var")
    stored = sorted(r["path"] for r in conn.execute("SELECT path FROM instances"))
    conn.close()
    assert all(p.startswith("spool/") for p in stored), stored  # relative to the storage folder
    monkeypatch.chdir(tmp_path / "in")  # a job or `status` may run elsewhere
    paths = _study_paths(tmp_path / "var", study_uid)
    assert len(paths) == 2 and all(p.is_file() for p in paths), paths
    assert all(p.is_relative_to(tmp_path / "var" / "spool") for p in paths)


def test_rows_stored_relative_to_an_old_working_directory_are_repaired_keeping_their_facts(tmp_path) -> None:
    files = write_ct_study(tmp_path / "in", 2)
    study_uid = pydicom.dcmread(files[0]).StudyInstanceUID
    storage = tmp_path / "var"
    spool = Spool(storage)
    for f in files:
        spool.store_file(f, calling_ae="MODALITY", source="dimse")
    spool.close()
    conn = connect(storage)
    with conn:  # what the older version wrote for `storage_dir: ./var` started in tmp_path
        conn.execute("UPDATE instances SET path = 'var/' || path")
    conn.close()
    assert not any(p.is_file() for p in _study_paths(storage, study_uid))  # var/var/spool/...: the reported failure

    spool = Spool(storage)
    report = spool.recover()
    spool.close()
    assert (report.indexed, report.dropped_rows) == (0, 0)  # repaired in place, not re-indexed from the files
    paths = _study_paths(storage, study_uid)
    assert len(paths) == 2 and all(p.is_file() for p in paths), paths
    conn = connect(storage)
    rows = conn.execute("SELECT path, calling_ae, source FROM instances").fetchall()
    conn.close()
    assert {(r["calling_ae"], r["source"]) for r in rows} == {("MODALITY", "dimse")}
    assert all(r["path"].startswith("spool/") for r in rows)
