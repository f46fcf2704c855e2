"""The node database's schema and its migrations, numbered by ``PRAGMA user_version``.

``MIGRATIONS[n - 1]`` brings a database from version ``n - 1`` to ``n``; a
database is at the version of the last migration it ran, and
:data:`SCHEMA_VERSION` is the version this code writes.  :func:`migrate` runs
the missing ones in one transaction per step, so a crash leaves the database at
a version it can continue from.  A database at a version higher than
:data:`SCHEMA_VERSION` was written by a newer CardioNode: :func:`migrate`
refuses it (:class:`SchemaTooNew`) rather than guess.

Version 1 is the schema the releases before versioning made with
``CREATE TABLE IF NOT EXISTS`` (their databases are at ``user_version`` 0),
so an existing installation upgrades in place; it also adds the one column
that was added to a shipped table before (``results.series_instance_uid``).

Adding a migration (CONTRIBUTING.md, "Changing the database"): write
``def vN_what(conn)`` below, add it at the end of :data:`MIGRATIONS`, never
edit a migration that has shipped.
"""
from __future__ import annotations

import sqlite3
from typing import Callable

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "SchemaTooNew", "migrate", "schema_version", "too_new_message"]

Migration = Callable[[sqlite3.Connection], None]


class SchemaTooNew(RuntimeError):
    """The database was written by a newer CardioNode than this one; the message says what to do."""


_V1_TABLES = [
    # spool index (node.state.instances)
    """CREATE TABLE IF NOT EXISTS instances (
        sop_instance_uid TEXT PRIMARY KEY,
        study_instance_uid TEXT NOT NULL,
        series_instance_uid TEXT NOT NULL,
        sop_class_uid TEXT NOT NULL,
        modality TEXT NOT NULL DEFAULT '',
        series_description TEXT NOT NULL DEFAULT '',
        series_number INTEGER,
        instance_number INTEGER,
        transfer_syntax_uid TEXT NOT NULL,
        path TEXT NOT NULL,
        size INTEGER NOT NULL,
        calling_ae TEXT NOT NULL DEFAULT '',
        source TEXT NOT NULL DEFAULT '',
        received_at REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS instances_study ON instances (study_instance_uid, series_instance_uid)",
    "CREATE INDEX IF NOT EXISTS instances_received ON instances (received_at)",
    # study completion (node.state.studies)
    """CREATE TABLE IF NOT EXISTS pending_studies (
        study_uid TEXT PRIMARY KEY,
        state TEXT NOT NULL CHECK (state IN ('waiting', 'processed', 'unmatched')),
        generation INTEGER NOT NULL DEFAULT 1,
        first_received_at REAL NOT NULL,
        last_received_at REAL NOT NULL,
        due_at REAL,
        quiet_seconds REAL NOT NULL,
        received INTEGER NOT NULL DEFAULT 0,
        late_ignored INTEGER NOT NULL DEFAULT 0,
        processed_at REAL,
        routes TEXT,
        spool_deleted_at REAL
    )""",
    "CREATE INDEX IF NOT EXISTS pending_studies_state ON pending_studies (state, due_at)",
    # jobs and their results (node.state.jobs)
    """CREATE TABLE IF NOT EXISTS jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        study_uid TEXT NOT NULL,
        generation INTEGER NOT NULL DEFAULT 1,
        route_name TEXT NOT NULL,
        pipeline TEXT NOT NULL,
        destinations TEXT NOT NULL DEFAULT '[]',
        state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        error TEXT,
        pipeline_version TEXT,
        models TEXT,
        summary TEXT,
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        UNIQUE (study_uid, generation, route_name)
    )""",
    "CREATE INDEX IF NOT EXISTS jobs_state_due ON jobs (state, next_attempt_at)",
    "CREATE INDEX IF NOT EXISTS jobs_study ON jobs (study_uid)",
    """CREATE TABLE IF NOT EXISTS results (
        sop_instance_uid TEXT PRIMARY KEY,
        job_id INTEGER NOT NULL REFERENCES jobs (id),
        sop_class_uid TEXT NOT NULL,
        path TEXT NOT NULL,
        created_at REAL NOT NULL,
        series_instance_uid TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS results_job ON results (job_id)",
    # result deliveries (node.state.deliveries)
    """CREATE TABLE IF NOT EXISTS deliveries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id INTEGER,
        sop_instance_uid TEXT NOT NULL,
        destination TEXT NOT NULL,
        path TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        last_error TEXT,
        created_at REAL NOT NULL,
        sent_at REAL,
        UNIQUE (destination, sop_instance_uid)
    )""",
    "CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (destination, state, next_attempt_at)",
    "CREATE INDEX IF NOT EXISTS deliveries_job ON deliveries (job_id)",
    """CREATE TABLE IF NOT EXISTS destination_state (
        name TEXT PRIMARY KEY,
        last_attempt_at REAL,
        last_success_at REAL,
        last_error TEXT,
        last_error_at REAL
    )""",
]


def v1_unversioned_schema(conn: sqlite3.Connection) -> None:
    """The schema of the releases before versioning, created where missing (their databases keep their rows).

    Databases from before ``results.series_instance_uid`` get that column
    (NULL for old rows), as those releases added it at start.
    """
    for sql in _V1_TABLES:
        conn.execute(sql)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(results)")}
    if "series_instance_uid" not in columns:
        conn.execute("ALTER TABLE results ADD COLUMN series_instance_uid TEXT")
    conn.execute("CREATE INDEX IF NOT EXISTS results_series ON results (series_instance_uid)")


def v2_study_aware_completion(conn: sqlite3.Connection) -> None:
    """Study-aware completion (issue 18): ``instances.header`` holds the header values completeness
    judges a series by (JSON, :class:`node.completeness.HeaderFacts`; NULL for rows from before, which
    then count as series of unknown completeness: the quiet period applies, as before), and
    ``pending_studies.incomplete`` the routes given up for missing series (JSON {route: [names]})."""
    for table, column in (("instances", "header"), ("pending_studies", "incomplete")):
        if column not in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} TEXT")


def v3_console_accounts_audit(conn: sqlite3.Connection) -> None:
    """The operator console's tables: users, login sessions, the append-only audit trail, and the
    destinations an operator paused (node.state.accounts, node.state.audit, node.state.deliveries)."""
    conn.execute("""CREATE TABLE console_users (
        username TEXT PRIMARY KEY,
        role TEXT NOT NULL CHECK (role IN ('read-only', 'operator', 'admin')),
        password_hash TEXT NOT NULL,
        created_at REAL NOT NULL,
        password_changed_at REAL NOT NULL
    )""")
    conn.execute("""CREATE TABLE console_sessions (
        token_sha256 TEXT PRIMARY KEY,
        username TEXT NOT NULL REFERENCES console_users (username) ON DELETE CASCADE,
        csrf_token TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL
    )""")
    conn.execute("CREATE INDEX console_sessions_user ON console_sessions (username)")
    conn.execute("""CREATE TABLE audit_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        subject TEXT,
        detail TEXT
    )""")
    conn.execute("CREATE INDEX audit_events_at ON audit_events (at)")
    conn.execute("""CREATE TRIGGER audit_events_append_only BEFORE UPDATE ON audit_events
        BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END""")
    conn.execute("""CREATE TABLE destination_pause (
        name TEXT PRIMARY KEY,
        paused_by TEXT NOT NULL,
        paused_at REAL NOT NULL
    )""")


def v4_jobs_priority(conn: sqlite3.Connection) -> None:
    """Jobs carry their route's priority (0 for every existing job); higher ones are claimed first."""
    conn.execute("ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0")
    conn.execute("CREATE INDEX jobs_claim ON jobs (state, priority, next_attempt_at)")


def v5_notifications(conn: sqlite3.Connection) -> None:
    """Webhook messages and their delivery state (node.state.notifications)."""
    conn.execute("""CREATE TABLE notifications (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event TEXT NOT NULL,
        webhook TEXT NOT NULL,
        subject TEXT,
        payload TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        last_error TEXT,
        created_at REAL NOT NULL,
        sent_at REAL
    )""")
    conn.execute("CREATE INDEX notifications_due ON notifications (state, next_attempt_at)")


#: Every migration, in order: entry ``n - 1`` takes a database to version ``n``.  Append only.
MIGRATIONS: tuple[Migration, ...] = (
    v1_unversioned_schema,
    v2_study_aware_completion,
    v3_console_accounts_audit,
    v4_jobs_priority,
    v5_notifications,
)
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(conn: sqlite3.Connection) -> int:
    """The database's ``PRAGMA user_version`` (0: never migrated)."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _database_path(conn: sqlite3.Connection) -> str:
    for row in conn.execute("PRAGMA database_list"):
        if row[1] == "main":
            return str(row[2]) or ":memory:"
    return "the node database"


def too_new_message(path: str, found: int, known: int = SCHEMA_VERSION) -> str:
    """One line: what is wrong and what to do."""
    return (f"the node database {path} has schema version {found}, newer than this CardioNode knows ({known}): "
            "a newer CardioNode wrote it; run that release (or newer) again, or change node.storage_dir to start "
            "from an empty folder")


def _too_new(conn: sqlite3.Connection, found: int, known: int) -> SchemaTooNew:
    return SchemaTooNew(too_new_message(_database_path(conn), found, known))


def migrate(conn: sqlite3.Connection, migrations: tuple[Migration, ...] = MIGRATIONS) -> int:
    """Bring the database to ``len(migrations)``; returns the number of migrations run.

    Each step runs in its own ``BEGIN IMMEDIATE`` transaction, which re-reads
    the version, so two processes opening one old database migrate it once.
    """
    known = len(migrations)
    found = schema_version(conn)
    if found == known:
        return 0
    if found > known:
        raise _too_new(conn, found, known)
    ran = 0
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            found = schema_version(conn)
            if found > known:
                raise _too_new(conn, found, known)
            if found == known:
                conn.execute("COMMIT")
                return ran
            migrations[found](conn)
            conn.execute(f"PRAGMA user_version={found + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        ran += 1
