"""Job queue, worker pool and study completion against a real SQLite database and the test SR pipeline."""
from __future__ import annotations

import time
from pathlib import Path

import pydicom
from apscheduler.schedulers.background import BackgroundScheduler

from node.state import connect
from node.completion import CompletionTracker
from node.config import JobsSection, parse_config

from node.executors import LocalExecutor
from node.jobs import JobQueue, JobRunner
from node.routing import Router
from pipelines.base import StudyView
from pipelines.registry import PipelineRegistry
from tests.fixtures import sr_pipeline
from tests.fixtures.studies import write_ct_study


def _runner(tmp_path, conns, options, settings=JobsSection(max_attempts=3, backoff_initial_s=0.01)):
    files = write_ct_study(tmp_path / "study", 2)
    view = StudyView.from_files(files)
    registry = PipelineRegistry(builtins={})
    sr_pipeline.register(registry)
    queue = JobQueue(conns, settings, tmp_path)
    runner = JobRunner(queue, LocalExecutor(registry, None), lambda uid: view, lambda name: options, tmp_path / "work")
    return view, queue, runner


def _enqueue(conns, uid, dests=("a", "b"), route="r"):
    conn = conns.get()
    with conn:
        return JobQueue.enqueue(conn, uid, 1, route, "test-sr", dests)


def test_job_runs_writes_result_before_deliveries_and_is_enqueued_once(tmp_path, conns):
    view, queue, runner = _runner(tmp_path, conns, {})
    job_id = _enqueue(conns, view.study_instance_uid)
    assert _enqueue(conns, view.study_instance_uid) is None  # same study/generation/route: no second job
    job = queue.claim()
    assert job.id == job_id and job.attempts == 1 and queue.claim() is None
    assert runner.run_job(job) == "done"
    conn = conns.get()
    row = conn.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
    assert row["state"] == "done" and row["pipeline_version"] == sr_pipeline.VERSION
    results = conn.execute("SELECT * FROM results WHERE job_id=?", (job_id,)).fetchall()
    assert len(results) == 1
    ds = pydicom.dcmread(results[0]["path"])
    assert ds.StudyInstanceUID == view.study_instance_uid
    assert Path(results[0]["path"]).parent == tmp_path / "results" / str(job_id)
    deliveries = conn.execute("SELECT destination, state FROM deliveries ORDER BY destination").fetchall()
    assert [(d["destination"], d["state"]) for d in deliveries] == [("a", "pending"), ("b", "pending")]
    assert not (tmp_path / "work" / str(job_id)).exists()


def test_transient_errors_retry_with_backoff_then_succeed(tmp_path, conns):
    counter = tmp_path / "count"
    view, queue, runner = _runner(tmp_path, conns, {"transient_failures": 2, "counter_file": str(counter)})
    job_id = _enqueue(conns, view.study_instance_uid)
    runner.start()
    try:
        deadline = time.time() + 10
        while time.time() < deadline:
            state = conns.get().execute("SELECT state FROM jobs WHERE id=?", (job_id,)).fetchone()["state"]
            if state in ("done", "failed"):
                break
            time.sleep(0.05)
    finally:
        assert runner.stop(5)
    row = conns.get().execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
    assert (row["state"], row["attempts"]) == ("done", 3)
    assert counter.read_text() == "2"


def test_transient_errors_fail_after_max_attempts_with_error_text(tmp_path, conns):
    view, queue, runner = _runner(tmp_path, conns, {"transient_failures": 5, "counter_file": str(tmp_path / "c")},
                                  JobsSection(max_attempts=2, backoff_initial_s=0.0))
    job_id = _enqueue(conns, view.study_instance_uid)
    assert runner.run_job(queue.claim()) == "queued"
    assert runner.run_job(queue.claim()) == "failed"
    row = conns.get().execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
    assert row["state"] == "failed" and "simulated transient failure 2/5" in row["error"]


def test_input_error_fails_at_once_and_creates_no_delivery(tmp_path, conns):
    view, queue, runner = _runner(tmp_path, conns, {"input_error": "no CT series"})
    job_id = _enqueue(conns, view.study_instance_uid)
    assert runner.run_job(queue.claim()) == "failed"
    row = conns.get().execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
    assert row["attempts"] == 1 and row["error"] == "input: no CT series"
    assert conns.get().execute("SELECT COUNT(*) FROM deliveries").fetchone()[0] == 0


def test_interrupted_running_job_is_requeued_and_rerun_from_empty_results(tmp_path, conns):
    view, queue, runner = _runner(tmp_path, conns, {})
    job_id = _enqueue(conns, view.study_instance_uid)
    job = queue.claim()
    stale = tmp_path / "results" / str(job_id) / "stale.dcm"  # a half-finished run before the "crash"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"x")
    assert queue.requeue_interrupted() == (1, 0)
    job = queue.claim()
    assert job.id == job_id and job.attempts == 2
    assert runner.run_job(job) == "done"
    assert not stale.exists()
    assert conns.get().execute("SELECT COUNT(*) FROM deliveries").fetchone()[0] == 2


def test_a_job_that_cannot_be_marked_done_leaves_no_result_or_delivery_behind(tmp_path, conns):
    """complete() is one transaction: results, deliveries and state 'done' commit together or not at all.
    (In autocommit mode ``with conn:`` committed each statement: the dispatcher sent the results of a run
    whose job was still 'running'; after kill -9 the job ran again and new SRs went out as well.)"""
    view, queue, runner = _runner(tmp_path, conns, {})
    job_id = _enqueue(conns, view.study_instance_uid)
    conn = conns.get()
    # the last statement of complete() fails, as a kill -9 just before it would leave it undone
    conn.execute("CREATE TRIGGER refuse_done BEFORE UPDATE OF state ON jobs WHEN NEW.state='done'"
                 " BEGIN SELECT RAISE(ABORT, 'refused by test'); END")
    job = queue.claim()
    assert runner.run_job(job) == "failed"  # the error is recorded as the job's failure
    assert conn.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0] == 0
    assert conn.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 0
    conn.execute("DROP TRIGGER refuse_done")
    conn.execute("UPDATE jobs SET state='running' WHERE id=?", (job_id,))
    assert queue.requeue_interrupted() == (1, 0)
    assert runner.run_job(queue.claim()) == "done"
    assert conn.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0] == 2  # the re-run's only


def test_a_burst_of_arrivals_moves_the_timer_lazily_and_completion_still_waits_for_the_last(tmp_path, conns):
    """100 arrivals within 0.5 s set the completion timer a few times, not once per instance (each set
    wakes the scheduler's thread), and the study still completes a quiet period after the last one."""
    files = write_ct_study(tmp_path / "study", 2)
    view = StudyView.from_files(files)
    config = parse_config({"node": {"quiet_seconds": 0.4}, "routes": [{"pipeline": "test-sr", "match": {}}]})
    sched = BackgroundScheduler(timezone="UTC")
    sets: list[str] = []
    real_add_job = sched.add_job

    def add_job(*args, **kwargs):  # the real scheduler's add_job, counted
        sets.append(kwargs["id"])
        return real_add_job(*args, **kwargs)

    sched.add_job = add_job  # type: ignore[method-assign]
    sched.start()
    try:
        tracker = CompletionTracker(conns.get, Router(config), lambda uid: view, sched)
        uid = view.study_instance_uid
        for _ in range(100):
            tracker.arrived(uid, 0.4)
            time.sleep(0.005)
        last = time.time()
        conn = conns.get()
        while conn.execute("SELECT state FROM pending_studies").fetchone()["state"] == "waiting":
            assert time.time() - last < 5
            time.sleep(0.01)
        assert time.time() - last >= 0.39  # a quiet period after the last arrival, not the first
        assert conn.execute("SELECT COUNT(*) FROM jobs WHERE generation=1").fetchone()[0] == 1
        assert 1 <= len(sets) <= 4, sets  # first arrival + one re-set per early firing
    finally:
        sched.shutdown(wait=False)


def test_completion_waits_for_quiet_then_enqueues_each_route_once_and_rearms_after_restart_with_fresh_quiet(
        tmp_path, conns):
    files = write_ct_study(tmp_path / "study", 2)
    view = StudyView.from_files(files)
    config = parse_config({
        "node": {"quiet_seconds": 0.4},
        "routes": [{"pipeline": "test-sr", "match": {"modality": "CT"}},
                   {"pipeline": "x", "match": {"modality": "CT"}}],
    })
    sched = BackgroundScheduler(timezone="UTC")
    sched.start()
    try:
        tracker = CompletionTracker(conns.get, Router(config), lambda uid: view, sched)
        uid = view.study_instance_uid
        t0 = time.time()
        tracker.arrived(uid, 0.4)
        time.sleep(0.25)
        tracker.arrived(uid, 0.4)  # a new instance pushes completion out
        conn = conns.get()
        while conn.execute("SELECT state FROM pending_studies").fetchone()["state"] == "waiting":
            assert time.time() - t0 < 5
            time.sleep(0.02)
        assert time.time() - t0 >= 0.6
        assert conn.execute("SELECT COUNT(*) FROM jobs WHERE generation=1").fetchone()[0] == 2
        assert tracker.fire(uid) == []  # a second timer firing does nothing
        # late arrival with reprocess: generation 2 after a new quiet period
        tracker.arrived(uid, 0.1)
        time.sleep(0.6)
        assert conn.execute("SELECT COUNT(*) FROM jobs WHERE generation=2").fetchone()[0] == 2
        # a re-sent copy of a stored instance does not re-run anything
        assert tracker.arrived(uid, 0.1, replaced=True) is None
    finally:
        sched.shutdown(wait=False)
    # "restart": a study left waiting (timer lost) whose deadline passed while the node was down is
    # re-armed with a fresh quiet period (its sender was probably still retrying), not fired at once
    other = "1.2.826.0.1.3680043.99.1"
    conn.execute("INSERT INTO pending_studies (study_uid, state, first_received_at, last_received_at, due_at,"
                 " quiet_seconds) VALUES (?, 'waiting', 0, 0, 1, 0.8)", (other,))
    sched2 = BackgroundScheduler(timezone="UTC")
    tracker2 = CompletionTracker(conns.get, Router(config), lambda u: view, sched2)
    restarted = time.time()
    assert tracker2.rearm() == 1
    assert conn.execute("SELECT due_at FROM pending_studies WHERE study_uid=?",
                        (other,)).fetchone()[0] >= restarted + 0.8
    sched2.start()
    try:
        time.sleep(0.5)
        assert conn.execute("SELECT state FROM pending_studies WHERE study_uid=?",
                            (other,)).fetchone()["state"] == "waiting"
        deadline = time.time() + 5
        while conn.execute("SELECT state FROM pending_studies WHERE study_uid=?",
                           (other,)).fetchone()["state"] == "waiting":
            assert time.time() < deadline
            time.sleep(0.02)
        assert time.time() - restarted >= 0.8
    finally:
        sched2.shutdown(wait=False)
    assert conn.execute("SELECT COUNT(*) FROM jobs WHERE study_uid=?", (other,)).fetchone()[0] == 2


def test_late_arrival_with_ignore_policy_is_counted_not_reprocessed(tmp_path, conns):
    files = write_ct_study(tmp_path / "study", 1)
    view = StudyView.from_files(files)
    config = parse_config({"node": {"late_arrivals": "ignore"}, "routes": [{"pipeline": "test-sr"}]})
    sched = BackgroundScheduler(timezone="UTC")
    tracker = CompletionTracker(conns.get, Router(config), lambda uid: view, sched, late_arrivals="ignore")
    uid = view.study_instance_uid
    tracker.arrived(uid, 0.0)
    assert len(tracker.fire(uid)) == 1
    assert tracker.arrived(uid, 0.0) is None
    row = conns.get().execute("SELECT state, generation, late_ignored FROM pending_studies").fetchone()
    assert tuple(row) == ("processed", 1, 1)
    assert conns.get().execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 1


def test_an_older_database_gains_the_results_series_column(tmp_path):
    import sqlite3

    from node.state import DB_FILENAME, OwnResults

    old = sqlite3.connect(tmp_path / DB_FILENAME)  # a release from before results.series_instance_uid
    old.execute("CREATE TABLE results (sop_instance_uid TEXT PRIMARY KEY, job_id INTEGER NOT NULL,"
                " sop_class_uid TEXT NOT NULL, path TEXT NOT NULL, created_at REAL NOT NULL)")
    old.execute("INSERT INTO results VALUES ('1.2.3', 1, '1.2', 'p', 0)")
    old.commit()
    old.close()
    connect(tmp_path).close()
    conn = connect(tmp_path)  # idempotent
    assert "series_instance_uid" in {r[1] for r in conn.execute("PRAGMA table_info(results)")}
    conn.close()
    own = OwnResults(tmp_path)
    try:
        assert own.contains("1.2.3", "9.9") and not own.contains("1.2.4", "9.9")
    finally:
        own.close()
