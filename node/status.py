"""Read-only status queries shared by ``cardionode status`` and the HTTP status API.

Each function takes a SQLite connection to the node database (and the
config where destinations are needed) and returns plain JSON-serialisable
dicts, newest first.  No PHI: studies are identified by Study Instance UID.

A study's ``state`` says whether its results came out (:data:`STUDY_STATES`).
Completion records only that it handed the study to the jobs
(``pending_studies.state = 'processed'``, shown as ``completion_state``); what
happened next is in the jobs and deliveries of that generation, so the state is
derived by :class:`node.state.Studies`, for ``cardionode status``, the status API and filtering.
"""
from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from pipelines.runtime import ModelStore

from .config import DimseDestination, NodeConfig
from .executors.status_file import read_status
from .state import STUDY_STATES, Deliveries, Jobs, Studies

__all__ = ["STUDY_STATES", "studies", "jobs", "destinations", "counts", "models", "executor", "summary"]


def _repos(conn: sqlite3.Connection) -> tuple[Studies, Jobs, Deliveries]:
    def get() -> sqlite3.Connection:
        return conn
    return Studies(get), Jobs(get), Deliveries(get)


def studies(conn: sqlite3.Connection, limit: int = 50, state: str | None = None) -> list[dict[str, Any]]:
    """Studies known to completion, newest first: ``state`` (one of :data:`STUDY_STATES`), ``error`` when
    failed, ``completion_state`` (waiting/processed/unmatched), generation, timing, routes."""
    study_rows, _jobs, _deliveries = _repos(conn)
    out = []
    for r in study_rows.listing(limit, state):
        out.append({
            "study_uid": r["study_uid"],
            "state": r["study_state"],
            "error": study_rows.failure(r["study_uid"], r["generation"]) if r["study_state"] == "failed" else None,
            "completion_state": r["state"],
            "generation": r["generation"],
            "first_received_at": r["first_received_at"],
            "last_received_at": r["last_received_at"],
            "due_at": r["due_at"],
            "received": r["received"],
            "late_ignored": r["late_ignored"],
            "processed_at": r["processed_at"],
            "routes": json.loads(r["routes"]) if r["routes"] else [],
            "incomplete": json.loads(r["incomplete"]) if r["incomplete"] else None,
        })
    return out


def jobs(conn: sqlite3.Connection, limit: int = 50, state: str | None = None,
         study_uid: str | None = None) -> list[dict[str, Any]]:
    """Jobs with state, attempts, error text and pipeline/model versions."""
    out = []
    for r in _repos(conn)[1].listing(limit, state, study_uid):
        out.append({
            "id": r["id"],
            "study_uid": r["study_uid"],
            "generation": r["generation"],
            "route": r["route_name"],
            "priority": r["priority"],
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
    deliveries = _repos(conn)[2]
    now = time.time()
    out = []
    for name, dest in sorted(config.destinations.items()):
        counts = {"pending": 0, "sent": 0, "failed": 0, **deliveries.count_by_state(name)}
        due_now = deliveries.count_due(name, now)
        st = deliveries.destination_state(name)
        address = (f"{dest.ae_title}@{dest.host}:{dest.port}" if isinstance(dest, DimseDestination) else dest.url)
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
    study_rows, job_rows, deliveries = _repos(conn)
    return {
        "studies": study_rows.count_by_derived_state(),
        "pending_studies": study_rows.count_by_state(),
        "jobs": job_rows.count_by_state(),
        "deliveries": deliveries.count_by_state(),
    }


def models(model_store: ModelStore | None) -> list[dict[str, Any]] | None:
    """What the model store says about its models (``describe()``), or None without a store."""
    if model_store is None:
        return None
    return model_store.describe()


def executor(conn: sqlite3.Connection, config: NodeConfig) -> dict[str, Any]:
    """Where jobs run and whether they can run now: the config's executor plus what the node last reported."""
    settings = config.executor
    queued = _repos(conn)[1].count_by_state().get("queued", 0)
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


def summary(conn: sqlite3.Connection, config: NodeConfig, model_store: ModelStore | None = None,
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
