"""Read-only status queries shared by ``cardionode status`` and the HTTP status API.

Each function takes a SQLite connection to the node database (and the
config where destinations are needed) and returns plain JSON-serialisable
dicts, newest first.  No PHI: studies are identified by Study Instance UID.

A study's ``state`` says whether its results came out (:data:`STUDY_STATES`).
Completion records only that it handed the study to the jobs
(``pending_studies.state = 'processed'``, shown as ``completion_state``); what
happened next is in the jobs and deliveries of that generation, so the state is
derived here, in SQL, for ``cardionode status``, the status API and filtering.
"""
from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from .config import NodeConfig
from .executors.status_file import read_status

__all__ = ["STUDY_STATES", "studies", "jobs", "destinations", "counts", "models", "executor", "summary"]

#: A study's state as users see it, in the order of its life.
STUDY_STATES = (
    "waiting",     # receiving: the quiet period has not passed
    "unmatched",   # complete, no route matched: stored, nothing to run
    "processing",  # a job of the current generation is queued or running (retries included)
    "sending",     # every job done, results waiting to be delivered (retries included)
    "processed",   # every job done and every result delivered
    "failed",      # a job failed for good, or a result could not be delivered: its results did not come out
)


def _table_exists(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None


def _study_state_sql(conn: sqlite3.Connection) -> str:
    """SQL for the derived state of the ``pending_studies`` row ``p`` (see :data:`STUDY_STATES`)."""
    if not (_table_exists(conn, "jobs") and _table_exists(conn, "deliveries")):
        return "p.state"
    same_generation = "j.study_uid = p.study_uid AND j.generation = p.generation"
    delivery = f"SELECT 1 FROM deliveries d JOIN jobs j ON d.job_id = j.id WHERE {same_generation} AND d.state"
    return (
        "CASE WHEN p.state != 'processed' THEN p.state"
        f" WHEN EXISTS (SELECT 1 FROM jobs j WHERE {same_generation} AND j.state = 'failed') THEN 'failed'"
        f" WHEN EXISTS (SELECT 1 FROM jobs j WHERE {same_generation} AND j.state IN ('queued', 'running'))"
        " THEN 'processing'"
        f" WHEN EXISTS ({delivery} = 'failed') THEN 'failed'"
        f" WHEN EXISTS ({delivery} = 'pending') THEN 'sending'"
        " ELSE 'processed' END"
    )


def _study_error(conn: sqlite3.Connection, study_uid: str, generation: int) -> str | None:
    """Why a failed study's results did not come out: the failed job's error or the delivery's."""
    row = conn.execute(
        "SELECT pipeline, error FROM jobs WHERE study_uid=? AND generation=? AND state='failed' ORDER BY id LIMIT 1",
        (study_uid, generation)).fetchone()
    if row is not None:
        first = (row["error"] or "").strip().splitlines()
        return f"job {row['pipeline']} failed: {first[0] if first else 'no error text'}"
    row = conn.execute(
        "SELECT d.destination, d.last_error FROM deliveries d JOIN jobs j ON d.job_id = j.id"
        " WHERE j.study_uid=? AND j.generation=? AND d.state='failed' ORDER BY d.id LIMIT 1",
        (study_uid, generation)).fetchone()
    if row is not None:
        return f"not delivered to {row['destination']}: {row['last_error'] or 'no error text'}"
    return None


def studies(conn: sqlite3.Connection, limit: int = 50, state: str | None = None) -> list[dict[str, Any]]:
    """Studies known to completion, newest first: ``state`` (one of :data:`STUDY_STATES`), ``error`` when
    failed, ``completion_state`` (waiting/processed/unmatched), generation, timing, routes."""
    if not _table_exists(conn, "pending_studies"):
        return []
    sql = f"SELECT * FROM (SELECT p.*, {_study_state_sql(conn)} AS study_state FROM pending_studies p)"
    args: list[Any] = []
    if state:
        sql += " WHERE study_state=?"
        args.append(state)
    sql += " ORDER BY last_received_at DESC LIMIT ?"
    args.append(limit)
    out = []
    for r in conn.execute(sql, args).fetchall():
        out.append({
            "study_uid": r["study_uid"],
            "state": r["study_state"],
            "error": _study_error(conn, r["study_uid"], r["generation"]) if r["study_state"] == "failed" else None,
            "completion_state": r["state"],
            "generation": r["generation"],
            "first_received_at": r["first_received_at"],
            "last_received_at": r["last_received_at"],
            "due_at": r["due_at"],
            "received": r["received"],
            "late_ignored": r["late_ignored"],
            "processed_at": r["processed_at"],
            "routes": json.loads(r["routes"]) if r["routes"] else [],
        })
    return out


def jobs(conn: sqlite3.Connection, limit: int = 50, state: str | None = None,
         study_uid: str | None = None) -> list[dict[str, Any]]:
    """Jobs with state, attempts, error text and pipeline/model versions."""
    if not _table_exists(conn, "jobs"):
        return []
    where, args = [], []
    if state:
        where.append("state=?")
        args.append(state)
    if study_uid:
        where.append("study_uid=?")
        args.append(study_uid)
    sql = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC LIMIT ?"
    args.append(limit)
    out = []
    for r in conn.execute(sql, args).fetchall():
        out.append({
            "id": r["id"],
            "study_uid": r["study_uid"],
            "generation": r["generation"],
            "route": r["route_name"],
            "pipeline": r["pipeline"],
            "destinations": json.loads(r["destinations"]),
            "state": r["state"],
            "attempts": r["attempts"],
            "next_attempt_at": r["next_attempt_at"] if r["state"] == "queued" else None,
            "error": r["error"],
            "pipeline_version": r["pipeline_version"],
            "models": json.loads(r["models"]) if r["models"] else [],
            "created_at": r["created_at"],
            "started_at": r["started_at"],
            "finished_at": r["finished_at"],
            "not_assessable": _not_assessable(r["summary"]),
        })
    return out


def _not_assessable(summary: str | None) -> list[dict[str, str]]:
    """The quality issues a done job reported (``summary.not_assessable``, pipelines.quality): what the
    delivered results say could not be assessed, and why."""
    try:
        data = json.loads(summary) if summary else {}
    except ValueError:
        return []
    issues = data.get("not_assessable") if isinstance(data, dict) else None
    return [i for i in issues if isinstance(i, dict)] if isinstance(issues, list) else []


def destinations(conn: sqlite3.Connection, config: NodeConfig) -> list[dict[str, Any]]:
    """Every configured destination with queue depth (pending/failed/sent) and last error."""
    have_deliveries = _table_exists(conn, "deliveries")
    have_state = _table_exists(conn, "destination_state")
    out = []
    for name, dest in sorted(config.destinations.items()):
        counts = {"pending": 0, "sent": 0, "failed": 0}
        due_now = 0
        if have_deliveries:
            for r in conn.execute(
                "SELECT state, COUNT(*) AS n FROM deliveries WHERE destination=? GROUP BY state", (name,)
            ):
                counts[r["state"]] = r["n"]
            due_now = conn.execute(
                "SELECT COUNT(*) FROM deliveries WHERE destination=? AND state='pending' AND next_attempt_at<=?",
                (name, time.time()),
            ).fetchone()[0]
        st = None
        if have_state:
            st = conn.execute("SELECT * FROM destination_state WHERE name=?", (name,)).fetchone()
        address = (f"{dest.ae_title}@{dest.host}:{dest.port}" if dest.type == "dimse" else getattr(dest, "url", ""))
        out.append({
            "name": name,
            "type": dest.type,
            "address": address,
            "queue_depth": counts["pending"],
            "due_now": due_now,
            "sent": counts["sent"],
            "failed": counts["failed"],
            "last_attempt_at": st["last_attempt_at"] if st else None,
            "last_success_at": st["last_success_at"] if st else None,
            "last_error": st["last_error"] if st else None,
            "last_error_at": st["last_error_at"] if st else None,
        })
    return out


def counts(conn: sqlite3.Connection) -> dict[str, dict[str, int]]:
    """Totals per state: ``studies`` (derived, :data:`STUDY_STATES`), and the rows of ``pending_studies``
    (completion's own states), ``jobs`` and ``deliveries``."""
    out: dict[str, dict[str, int]] = {"studies": {}}
    if _table_exists(conn, "pending_studies"):
        for r in conn.execute(f"SELECT {_study_state_sql(conn)} AS s, COUNT(*) AS n FROM pending_studies p GROUP BY s"):
            out["studies"][r["s"]] = r["n"]
    for table in ("pending_studies", "jobs", "deliveries"):
        out[table] = {}
        if _table_exists(conn, table):
            for r in conn.execute(f"SELECT state, COUNT(*) AS n FROM {table} GROUP BY state"):
                out[table][r["state"]] = r["n"]
    return out


def models(model_store: Any) -> list[dict[str, Any]] | dict[str, Any] | None:
    """What the model store says about its models (``describe()``), or None without a store."""
    if model_store is None:
        return None
    describe = getattr(model_store, "describe", None)
    if describe is None:
        return [{"name": n} for n in model_store.names()]
    return describe()


def executor(conn: sqlite3.Connection, config: NodeConfig) -> dict[str, Any]:
    """Where jobs run and whether they can run now: the config's executor plus what the node last reported."""
    settings = config.executor
    queued = 0
    if _table_exists(conn, "jobs"):
        queued = conn.execute("SELECT COUNT(*) FROM jobs WHERE state='queued'").fetchone()[0]
    if settings.type == "local":
        return {"type": "local", "state": "ready", "available": True, "queued_jobs": queued,
                "detail": f"in the node process ({config.node.workers} job thread(s))", "groups": []}
    reported = read_status(config.node.storage_path) or {}
    out: dict[str, Any] = {
        "type": "ray",
        "address": settings.address or "embedded",
        "state": reported.get("state", "unknown"),
        "available": bool(reported.get("available", False)),
        "detail": reported.get("detail", "the node has not reported its executor state yet"),
        "since": reported.get("since"),
        "groups": reported.get("groups", []),
        "node_running": reported.get("node_running", False),
        "queued_jobs": queued,
    }
    if reported and not out["node_running"]:
        out["detail"] = f"node not running; last reported: {out['state']}: {out['detail']}"
        out["state"], out["available"] = "node not running", False
    return out


def summary(conn: sqlite3.Connection, config: NodeConfig, model_store: Any = None,
            limit: int = 20) -> dict[str, Any]:
    """Everything ``cardionode status`` shows."""
    return {
        "node": {"ae_title": config.node.ae_title, "port": config.node.port, "storage_dir": config.node.storage_dir},
        "counts": counts(conn),
        "studies": studies(conn, limit),
        "jobs": jobs(conn, limit),
        "destinations": destinations(conn, config),
        "executor": executor(conn, config),
        "models": models(model_store),
    }
