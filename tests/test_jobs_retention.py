"""Retention sweeps: what is removed from the spool and results, and what is never touched."""
from __future__ import annotations

import time

import pytest

from node.config import RetentionSection
from node.state import add_deliveries
from node.jobs import JobQueue
from node.state import Connections
from node.retention import DAY, RetentionSweeper


@pytest.fixture()
def conn_factory(tmp_path):
    c = Connections(tmp_path)
    yield c
    c.close_all()


def _study(conn, uid, state, age_days, job_state=None, delivery_state=None, tmp_path=None):
    t = time.time() - age_days * DAY
    with conn:
        conn.execute("INSERT INTO pending_studies (study_uid, state, first_received_at, last_received_at, due_at,"
                     " quiet_seconds) VALUES (?, ?, ?, ?, NULL, 30)", (uid, state, t, t))
        if job_state:
            job = JobQueue.enqueue(conn, uid, 1, "r", "p", ["d"], now=t)
            conn.execute("UPDATE jobs SET state=?, finished_at=? WHERE id=?", (job_state, t, job))
            if delivery_state:
                add_deliveries(conn, job, [(uid + ".9", "/nope")], ["d"])
                conn.execute("UPDATE deliveries SET state=? WHERE job_id=?", (delivery_state, job))
                (tmp_path / "results" / str(job)).mkdir(parents=True)


def test_sweep_removes_delivered_and_old_studies_but_never_open_work(tmp_path, conn_factory):
    conn = conn_factory.get()
    _study(conn, "1.1", "processed", 0.1, "done", "sent", tmp_path)      # delivered -> removed (after success)
    _study(conn, "1.2", "processed", 0.1, "done", "pending", tmp_path)   # delivery open -> kept
    _study(conn, "1.3", "processed", 10, "failed")                        # failed, older than keep_days -> removed
    _study(conn, "1.4", "processed", 10, "running")                       # job running -> kept
    _study(conn, "1.5", "unmatched", 3)                                   # unmatched, 3 d > 2 d -> removed
    _study(conn, "1.6", "waiting", 30)                                    # not complete -> kept
    _study(conn, "1.7", "processed", 40, "done", "sent", tmp_path)       # results folder older than 30 d -> removed
    deleted: list[str] = []
    sweeper = RetentionSweeper(conn_factory.get, RetentionSection(delete_spool_after_success=True, keep_days=7,
                                                                 keep_unmatched_days=2, keep_results_days=30),
                               deleted.append, tmp_path)
    out = sweeper.sweep()
    assert sorted(deleted) == ["1.1", "1.3", "1.5", "1.7"]
    assert out == {"studies": 4, "result_folders": 1}
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["1", "2"]
    assert sweeper.sweep() == {"studies": 0, "result_folders": 0}  # recorded, not removed twice


def test_without_delete_after_success_recent_studies_stay(tmp_path, conn_factory):
    conn = conn_factory.get()
    _study(conn, "2.1", "processed", 1, "done", "sent", tmp_path)
    deleted: list[str] = []
    RetentionSweeper(conn_factory.get, RetentionSection(), deleted.append, tmp_path).sweep()
    assert deleted == []
