"""A study's state says whether its results came out: a failed job (or a result that could not be delivered)
makes it "failed", never "processed"; in node.status, `cardionode status` (console script) and the status API."""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

from node import status
from node.state import connect
from node.state import add_deliveries
from node.jobs import JobQueue
from tests.test_quickstart import console_env, require_console


def _study(conn, uid: str, state: str = "processed", generation: int = 1, age: float = 0.0) -> None:
    now = time.time() - age
    conn.execute(
        "INSERT OR REPLACE INTO pending_studies (study_uid, state, generation, first_received_at, last_received_at,"
        " due_at, quiet_seconds, received, routes) VALUES (?, ?, ?, ?, ?, ?, 30, 3, ?)",
        (uid, state, generation, now, now, None if state != "waiting" else now + 30, json.dumps(["syntax"])))


def _job(conn, uid: str, state: str, generation: int = 1, error: str | None = None,
         delivery: str | None = None, delivery_error: str | None = None) -> int:
    job = JobQueue.enqueue(conn, uid, generation, f"r{generation}", "syntax", ["pacs"])
    conn.execute("UPDATE jobs SET state=?, error=? WHERE id=?", (state, error, job))
    if delivery:
        add_deliveries(conn, job, [(f"{uid}.{generation}.9", f"/results/{job}/sr.dcm")], ["pacs"])
        conn.execute("UPDATE deliveries SET state=?, last_error=? WHERE job_id=?", (delivery, delivery_error, job))
    return job


@pytest.fixture()
def storage(tmp_path: Path) -> Path:
    conn = connect(tmp_path / "var")
    with conn:
        _study(conn, "1.1", age=8)
        _job(conn, "1.1", "failed", error="os error: [Errno 2] No such file or directory: 'var/var/spool/1.1'\n...")
        _study(conn, "1.2", age=7)
        _job(conn, "1.2", "queued")
        _study(conn, "1.3", age=6)
        _job(conn, "1.3", "done", delivery="pending")
        _study(conn, "1.4", age=5)
        _job(conn, "1.4", "done", delivery="sent")
        _study(conn, "1.5", age=4)
        _job(conn, "1.5", "done", delivery="failed", delivery_error="pacs: association rejected")
        _study(conn, "1.6", "waiting", age=3)
        _study(conn, "1.7", "unmatched", age=2)
        _study(conn, "1.8", generation=2, age=1)  # generation 1 failed, the re-run delivered
        _job(conn, "1.8", "failed", generation=1, error="input: no XA series")
        _job(conn, "1.8", "done", generation=2, delivery="sent")
    conn.close()
    return tmp_path / "var"


EXPECTED = {"1.1": "failed", "1.2": "processing", "1.3": "sending", "1.4": "processed", "1.5": "failed",
            "1.6": "waiting", "1.7": "unmatched", "1.8": "processed"}


def test_state_is_derived_from_jobs_and_deliveries_of_the_current_generation(storage: Path) -> None:
    conn = connect(storage)
    rows = {s["study_uid"]: s for s in status.studies(conn, 100)}
    assert {uid: s["state"] for uid, s in rows.items()} == EXPECTED
    assert rows["1.1"]["completion_state"] == "processed"
    assert rows["1.1"]["error"] == ("job syntax failed: os error: [Errno 2] No such file or directory: "
                                    "'var/var/spool/1.1'")
    assert rows["1.5"]["error"] == "not delivered to pacs: pacs: association rejected"
    assert rows["1.4"]["error"] is None
    assert [s["study_uid"] for s in status.studies(conn, 100, state="failed")] == ["1.5", "1.1"]
    assert status.counts(conn)["studies"] == {"failed": 2, "processing": 1, "sending": 1, "processed": 2,
                                              "waiting": 1, "unmatched": 1}
    conn.close()


def test_cardionode_status_says_failed_with_the_reason(storage: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "node.yaml"
    cfg.write_text(yaml.safe_dump({"node": {"storage_dir": str(storage)}, "destinations": {
        "pacs": {"type": "dimse", "ae_title": "PACS", "host": "127.0.0.1", "port": 4242}}}))
    r = subprocess.run([require_console(), "status", "--config", str(cfg), "--no-models"], cwd=tmp_path,
                       env=console_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "studies: failed 2, processed 2, processing 1, sending 1, unmatched 1, waiting 1" in r.stdout
    study_lines = r.stdout.split("RECENT STUDIES")[1].splitlines()
    line = next(i for i, text in enumerate(study_lines) if text.strip().endswith("1.1 syntax"))
    assert study_lines[line].split()[0] == "failed"
    assert "job syntax failed: os error: [Errno 2]" in study_lines[line + 1]


def test_status_api_filters_and_shows_failed_studies(storage: Path) -> None:
    from node.config import parse_config
    from node.state import Connections
    from node.web.metrics import Metrics
    from node.web.server import HttpServer, WebContext

    config = parse_config({"node": {"storage_dir": str(storage), "http_host": "127.0.0.1", "http_port": 0},
                           "api": {"token": "tok"}})
    conns = Connections(storage)
    server = HttpServer(config, WebContext(config=config, get_conn=conns.get, metrics=Metrics(conns.get)))
    server.start()
    try:
        auth = {"Authorization": "Bearer tok"}
        failed = requests.get(server.url + "/api/studies?state=failed", headers=auth, timeout=5).json()["studies"]
        assert [s["study_uid"] for s in failed] == ["1.5", "1.1"]
        one = requests.get(server.url + "/api/studies/1.1", headers=auth, timeout=5).json()
        assert one["study"]["state"] == "failed" and one["jobs"][0]["state"] == "failed"
        processed = requests.get(server.url + "/api/studies?state=processed", headers=auth, timeout=5).json()
        assert sorted(s["study_uid"] for s in processed["studies"]) == ["1.4", "1.8"]
    finally:
        server.stop()
        conns.close_all()
