"""The node database's schema versions (node/state/schema.py): a database made by the releases before
versioning upgrades in place keeping every row; a database from a newer release stops start-up with one
line; the migrations are numbered as CONTRIBUTING.md says; writes that belong together are one transaction."""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from node.config import JobsSection
from node.jobs import Job, JobQueue
from node.state import (
    DB_FILENAME, SCHEMA_VERSION, Connections, Jobs, OwnResults, SchemaTooNew, Studies, connect, schema_version,
)
from node.state.schema import MIGRATIONS, migrate
from pipelines.base import PipelineResult

V1_SQL = Path(__file__).parent / "fixtures" / "state_schema_v1.sql"

_ROWS = [
    ("instances", "INSERT INTO instances VALUES ('1.2.3.1.1', '1.2.3', '1.2.3.1', '1.2.840.10008.5.1.4.1.1.12.1',"
                  " 'XA', 'LAO', 1, 1, '1.2.840.10008.1.2.1', 'spool/1.2.3/1.2.3.1/1.2.3.1.1.dcm', 1000, 'MODALITY',"
                  " 'dimse', 100.0)"),
    ("pending_studies", "INSERT INTO pending_studies VALUES ('1.2.3', 'processed', 1, 100.0, 101.0, NULL, 5.0, 1, 0,"
                        " 110.0, '[\"xa\"]', NULL)"),
    ("jobs", "INSERT INTO jobs VALUES (1, '1.2.3', 1, 'xa', 'syntax', '[\"pacs\"]', 'done', 1, 110.0, NULL, '1.0',"
             " '[]', '{}', 110.0, 111.0, 112.0)"),
    ("jobs", "INSERT INTO jobs VALUES (2, '1.2.4', 1, 'xa', 'syntax', '[]', 'queued', 0, 0.0, NULL, NULL, NULL, NULL,"
             " 120.0, NULL, NULL)"),
    ("results", "INSERT INTO results VALUES ('1.2.9.1', 1, '1.2.840.10008.5.1.4.1.1.88.33', 'results/1/1.2.9.1.dcm',"
                " 112.0, '1.2.9')"),
    ("deliveries", "INSERT INTO deliveries VALUES (1, 1, '1.2.9.1', 'pacs', 'results/1/1.2.9.1.dcm', 'sent', 1, 112.0,"
                   " NULL, 112.0, 113.0)"),
    ("destination_state", "INSERT INTO destination_state VALUES ('pacs', 113.0, 113.0, NULL, NULL)"),
]
_TABLES = ("instances", "pending_studies", "jobs", "results", "deliveries", "destination_state")


def _unversioned_database(storage: Path) -> None:
    """A database as the last release before versioning left it: its schema, a row in every table."""
    storage.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(storage / DB_FILENAME)
    conn.executescript(V1_SQL.read_text())
    for _table, sql in _ROWS:
        conn.execute(sql)
    conn.commit()
    assert schema_version(conn) == 0
    conn.close()


def _dump(conn: sqlite3.Connection, columns: dict[str, list[str]] | None = None) -> dict[str, list[tuple]]:
    """Every row of every v1 table; ``columns``: only these columns (later migrations add columns)."""
    return {t: [tuple(r) for r in conn.execute(
        f"SELECT {', '.join(columns[t]) if columns else '*'} FROM {t} ORDER BY rowid")] for t in _TABLES}


def _columns(conn: sqlite3.Connection) -> dict[str, list[str]]:
    return {t: [r[1] for r in conn.execute(f"PRAGMA table_info({t})")] for t in _TABLES}


def _schema(conn: sqlite3.Connection) -> set[tuple]:
    return {tuple(r) for r in conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"
                                           " WHERE name NOT LIKE 'sqlite_%'")}


def test_a_database_of_the_unversioned_release_upgrades_in_place_keeping_its_rows(tmp_path: Path) -> None:
    _unversioned_database(tmp_path)
    plain = sqlite3.connect(tmp_path / DB_FILENAME)
    before = _dump(plain)
    columns = _columns(plain)
    plain.close()
    assert all(before[t] for t in _TABLES)

    conn = connect(tmp_path)
    assert schema_version(conn) == SCHEMA_VERSION
    assert _dump(conn, columns) == before  # later migrations add columns; the old rows keep their values
    # v2 appended instances.header and pending_studies.incomplete, NULL in the old rows; v4 jobs.priority, 0
    assert all(r[0] is None for r in conn.execute("SELECT header FROM instances"))
    assert all(r[0] is None for r in conn.execute("SELECT incomplete FROM pending_studies"))
    assert [r[0] for r in conn.execute("SELECT priority FROM jobs")] == [0, 0]
    # the repositories read and write the old rows
    studies = Studies(lambda: conn).listing(10)
    assert [(r["study_uid"], r["study_state"]) for r in studies] == [("1.2.3", "processed")]
    claimed = Jobs(lambda: conn).claim(time.time())
    assert claimed is not None and claimed["id"] == 2
    conn.close()
    own = OwnResults(tmp_path)
    try:
        assert own.contains("1.2.9.1", "x") and own.contains("x", "1.2.9")
    finally:
        own.close()
    reopened = connect(tmp_path)  # a second start migrates nothing
    assert schema_version(reopened) == SCHEMA_VERSION
    reopened.close()


def test_version_1_is_exactly_the_schema_of_the_unversioned_release(tmp_path: Path) -> None:
    frozen = sqlite3.connect(tmp_path / "frozen.sqlite3")
    frozen.executescript(V1_SQL.read_text())
    fresh = sqlite3.connect(tmp_path / "fresh.sqlite3")
    migrate(fresh, MIGRATIONS[:1])
    assert schema_version(fresh) == 1
    assert _schema(fresh) == _schema(frozen)


def test_a_database_from_a_newer_release_is_refused_with_one_line(tmp_path: Path) -> None:
    connect(tmp_path).close()
    plain = sqlite3.connect(tmp_path / DB_FILENAME)
    plain.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    plain.close()
    with pytest.raises(SchemaTooNew) as err:
        connect(tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert str(tmp_path / DB_FILENAME) in message and f"schema version {SCHEMA_VERSION + 1}" in message
    assert "newer" in message and "node.storage_dir" in message
    plain = sqlite3.connect(tmp_path / DB_FILENAME)
    assert schema_version(plain) == SCHEMA_VERSION + 1  # left as it was
    plain.close()


@pytest.mark.integration
def test_serve_on_a_database_from_a_newer_release_stops_with_one_line(tmp_path: Path) -> None:
    from tests.test_startup_errors import one_line, serve

    work = tmp_path / "work"
    connect(work / "var").close()
    plain = sqlite3.connect(work / "var" / DB_FILENAME)
    plain.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    plain.close()
    r = serve(work)
    one_line(r, 1, "node.storage_dir", f"schema version {SCHEMA_VERSION + 1}", "newer")
    plain = sqlite3.connect(work / "var" / DB_FILENAME)
    assert schema_version(plain) == SCHEMA_VERSION + 1
    plain.close()


def test_migrations_are_numbered_in_order() -> None:
    assert SCHEMA_VERSION == len(MIGRATIONS)
    for n, step in enumerate(MIGRATIONS, start=1):
        assert step.__name__.startswith(f"v{n}_"), f"MIGRATIONS[{n - 1}] is {step.__name__}: name it v{n}_<what>"


def test_completing_a_job_is_one_transaction(tmp_path: Path) -> None:
    """A failure while the deliveries are written leaves no result row and the job running (re-run at start)."""
    conns = Connections(tmp_path)
    conn = conns.get()
    job_id = JobQueue.enqueue(conn, "1.2.3", 1, "r", "p", ["pacs"])
    queue = JobQueue(conns, JobsSection(), tmp_path)
    job = queue.claim()
    assert isinstance(job, Job) and job.id == job_id
    conn.execute("CREATE TEMP TRIGGER full BEFORE INSERT ON deliveries BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    result = PipelineResult(datasets=[], pipeline_name="p", pipeline_version="1")
    with pytest.raises(sqlite3.IntegrityError, match="disk full"):
        queue.complete(job, result, [("1.2.9.1", "1.2.840.10008.5.1.4.1.1.88.33", tmp_path / "r.dcm")])
    assert conn.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 0
    assert conn.execute("SELECT state FROM jobs WHERE id=?", (job_id,)).fetchone()[0] == "running"
    conns.close_all()
