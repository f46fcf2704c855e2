"""HTTP port: token checks, /healthz, status API against a real node database, /metrics; served by uvicorn."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest
import requests

from node.config import parse_config
from node.state import add_deliveries
from node.jobs import JobQueue
from node.state import Connections
from node.web.metrics import Metrics
from node.web.server import HttpServer, WebContext

TOKEN = "t0ken-for-tests"


def _config(tmp_path: Path, **api: object):
    return parse_config({
        "node": {"storage_dir": str(tmp_path / "var"), "http_host": "127.0.0.1", "http_port": 0},
        "api": api,
        "destinations": {"pacs": {"type": "dicomweb", "url": "http://127.0.0.1:9/dicom-web"}},
    })


def _serve(config) -> tuple[HttpServer, Connections]:
    conns = Connections(config.node.storage_dir)
    server = HttpServer(config, WebContext(config=config, get_conn=conns.get, metrics=Metrics(conns.get)))
    server.start()
    return server, conns


@pytest.fixture()
def node_http(tmp_path: Path) -> Iterator[tuple[HttpServer, Connections]]:
    server, conns = _serve(_config(tmp_path, token=TOKEN, stow_requires_token=True))
    yield server, conns
    server.stop()
    conns.close_all()


def _auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_healthz_needs_no_token(node_http) -> None:
    server, _ = node_http
    r = requests.get(server.url + "/healthz", timeout=5)
    assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["checks"]["database"] is True
    assert requests.get(server.url + "/healthz/ready", timeout=5).status_code == 200


@pytest.mark.parametrize("path", ["/api/studies", "/api/jobs", "/api/destinations", "/api/models", "/metrics"])
def test_protected_endpoints_refuse_missing_or_wrong_token(node_http, path: str) -> None:
    server, _ = node_http
    assert requests.get(server.url + path, timeout=5).status_code == 401
    r = requests.get(server.url + path, headers=_auth("nope"), timeout=5)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    assert requests.get(server.url + path, headers={"Authorization": f"Basic {TOKEN}"}, timeout=5).status_code == 401
    assert requests.get(server.url + path, headers=_auth(), timeout=5).status_code == 200


def test_stow_requires_token_when_configured(node_http) -> None:
    server, _ = node_http
    r = requests.post(server.url + "/dicom-web/studies", data=b"x", timeout=5,
                      headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'})
    assert r.status_code == 401


def test_default_config_needs_a_token_for_stow_and_serves_http_on_loopback(tmp_path: Path) -> None:
    """Secure defaults: without an ``api`` section STOW-RS refuses (401) like the status API, and
    ``node.http_host`` is loopback."""
    config = parse_config({"node": {"storage_dir": str(tmp_path / "var"), "http_port": 0}})
    assert config.node.http_host == "127.0.0.1" and config.api.stow_requires_token is True
    server, conns = _serve(config)
    try:
        r = requests.post(server.url + "/dicom-web/studies", data=b"--b--", timeout=5,
                          headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'})
        assert r.status_code == 401
        assert requests.get(server.url + "/api/studies", timeout=5).status_code == 401
    finally:
        server.stop()
        conns.close_all()


def test_no_configured_token_means_api_closed(tmp_path: Path) -> None:
    server, conns = _serve(_config(tmp_path))
    try:
        r = requests.get(server.url + "/api/jobs", headers=_auth(), timeout=5)
        assert r.status_code == 401 and "no API token" in r.json()["detail"]
    finally:
        server.stop()
        conns.close_all()


def test_token_file(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-file\n")
    server, conns = _serve(_config(tmp_path, token_file=str(tmp_path / "token")))
    try:
        assert requests.get(server.url + "/api/jobs", headers=_auth("from-file"), timeout=5).status_code == 200
        assert requests.get(server.url + "/api/jobs", headers=_auth("from-fil"), timeout=5).status_code == 401
    finally:
        server.stop()
        conns.close_all()


def _metric(server: HttpServer, line_prefix: str) -> float:
    text = requests.get(server.url + "/metrics", headers=_auth(), timeout=5).text
    for line in text.splitlines():
        if line.startswith(line_prefix + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{line_prefix} not in /metrics")


def test_jobs_destinations_retry_and_metrics(node_http) -> None:
    server, conns = node_http
    conn = conns.get()
    with conn:
        failed = JobQueue.enqueue(conn, "1.2.3", 1, "r0", "test-sr", ["pacs"])
        done = JobQueue.enqueue(conn, "1.2.4", 1, "r0", "test-sr", ["pacs"])
        conn.execute("UPDATE jobs SET state='failed', error='input: no CT series', attempts=1, finished_at=? "
                     "WHERE id=?", (time.time(), failed))
        conn.execute("UPDATE jobs SET state='done', finished_at=? WHERE id=?", (time.time(), done))
        add_deliveries(conn, done, [("9.9.1", "/nonexistent/a.dcm"), ("9.9.2", "/nonexistent/b.dcm")], ["pacs"])
        conn.execute("UPDATE deliveries SET attempts=2, last_error='HTTP 503' WHERE sop_instance_uid='9.9.1'")
    assert _metric(server, 'cardionode_jobs{state="failed"}') == 1
    assert _metric(server, 'cardionode_dispatch_queue{destination="pacs",state="pending"}') == 2
    assert _metric(server, 'cardionode_dispatch_failures_total{destination="pacs"}') == 2

    jobs = requests.get(server.url + "/api/jobs", headers=_auth(), timeout=5).json()["jobs"]
    by_id = {j["id"]: j for j in jobs}
    assert by_id[failed]["state"] == "failed" and by_id[failed]["error"] == "input: no CT series"
    one = requests.get(server.url + f"/api/jobs/{failed}", headers=_auth(), timeout=5).json()["job"]
    assert one["study_uid"] == "1.2.3"
    assert requests.get(server.url + "/api/jobs?state=done", headers=_auth(), timeout=5).json()["jobs"][0]["id"] == done
    dests = requests.get(server.url + "/api/destinations", headers=_auth(), timeout=5).json()["destinations"]
    assert dests[0]["name"] == "pacs" and dests[0]["queue_depth"] == 2

    assert requests.post(server.url + f"/api/jobs/{failed}/retry", timeout=5).status_code == 401
    r = requests.post(server.url + f"/api/jobs/{failed}/retry", headers=_auth(), timeout=5)
    assert r.status_code == 202 and r.json()["state"] == "queued"
    row = conn.execute("SELECT state, attempts, error FROM jobs WHERE id=?", (failed,)).fetchone()
    assert (row["state"], row["attempts"], row["error"]) == ("queued", 0, None)
    assert requests.post(server.url + f"/api/jobs/{done}/retry", headers=_auth(), timeout=5).status_code == 409
    assert requests.post(server.url + "/api/jobs/999/retry", headers=_auth(), timeout=5).status_code == 404
    assert _metric(server, 'cardionode_jobs{state="failed"}') == 0
    assert _metric(server, 'cardionode_jobs{state="queued"}') == 1
