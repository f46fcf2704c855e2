"""`cardionode process` and `cardionode status` as real subprocesses."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pydicom
import yaml

from node.state import DB_FILENAME, connect
from node.state import add_deliveries
from node.jobs import JobQueue
from tests.fixtures.studies import write_ct_study

ROOT = Path(__file__).resolve().parents[1]


def _run(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "node", *args], capture_output=True, text=True, env=env,
                          cwd=cwd or ROOT, timeout=120)


def _config(tmp_path, **extra):
    cfg = {
        "node": {"storage_dir": str(tmp_path / "var"), "plugins": ["tests.fixtures.sr_pipeline"]},
        "destinations": {"pacs": {"type": "dimse", "ae_title": "PACS", "host": "127.0.0.1", "port": 4242}},
        "routes": [{"pipeline": "test-sr", "match": {"modality": "CT"}, "destinations": ["pacs"]}],
        **extra,
    }
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_process_runs_a_pipeline_over_files_and_writes_results(tmp_path):
    files = write_ct_study(tmp_path / "in", 3)
    r = _run("process", "--config", str(_config(tmp_path)), "--study-dir", str(tmp_path / "in"),
             "--pipeline", "test-sr", "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["pipeline"] == "test-sr" and out["summary"] == {"instances": 3}
    sr = pydicom.dcmread(out["results"][0]["path"])
    assert sr.StudyInstanceUID == pydicom.dcmread(files[0]).StudyInstanceUID


def test_process_unknown_pipeline_is_a_one_line_error(tmp_path):
    write_ct_study(tmp_path / "in", 1)
    r = _run("process", "--config", str(_config(tmp_path)), "--study-dir", str(tmp_path / "in"),
             "--pipeline", "nope")
    assert r.returncode == 1 and "unknown pipeline 'nope'" in r.stderr


def test_status_shows_jobs_and_destination_queue_depth_and_last_error(tmp_path):
    cfg = _config(tmp_path)
    r = _run("status", "--config", str(cfg), "--no-models")
    assert r.returncode == 2 and "no node database" in r.stderr
    conn = connect(tmp_path / "var")
    with conn:
        job = JobQueue.enqueue(conn, "1.2.3", 1, "r0", "test-sr", ["pacs"])
        conn.execute("UPDATE jobs SET state='failed', error='input: no CT series' WHERE id=?", (job,))
        add_deliveries(conn, job, [("1.2.3.9", "/x.dcm")], ["pacs"])
        conn.execute("INSERT INTO destination_state (name, last_error) VALUES ('pacs', 'pacs: cannot associate')")
    conn.close()
    r = _run("status", "--config", str(cfg), "--json", "--no-models")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["jobs"][0]["state"] == "failed" and data["jobs"][0]["error"] == "input: no CT series"
    dest = data["destinations"][0]
    assert (dest["name"], dest["queue_depth"], dest["last_error"]) == ("pacs", 1, "pacs: cannot associate")
    text = _run("status", "--config", str(cfg), "--no-models")
    assert text.returncode == 0 and "pacs" in text.stdout and "cannot associate" in text.stdout


def test_serve_with_the_default_config_file_answers_echo_and_stops_on_sigterm(tmp_path):
    """`cardionode serve` with conf/node.yaml as shipped (storage ./var under the working directory), except
    for its two ports: a copy with free ones, so a CI box with 11112 or 8080 in use cannot make it fail."""
    import re
    import signal
    import time

    from tests.support.peers import echo, free_port, wait_for

    shipped = (ROOT / "conf" / "node.yaml").read_text()
    dimse_port, http_port = free_port(), free_port()
    text, n_dimse = re.subn(r"(?m)^(  port:\s*)11112\b", rf"\g<1>{dimse_port}", shipped)
    text, n_http = re.subn(r"(?m)^(  http_port:\s*)8080\b", rf"\g<1>{http_port}", text)
    assert (n_dimse, n_http) == (1, 1), "conf/node.yaml no longer has node.port 11112 / node.http_port 8080"
    cfg = tmp_path / "node.yaml"
    cfg.write_text(text)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + (os.pathsep + os.environ["PYTHONPATH"]
                                                   if os.environ.get("PYTHONPATH") else ""))
    proc = subprocess.Popen([sys.executable, "-m", "node", "serve", "--config", str(cfg)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 60
        while not echo(dimse_port, "CARDIONODE", timeout=2):
            assert proc.poll() is None, proc.stdout.read()
            assert time.time() < deadline, f"default node did not answer C-ECHO on {dimse_port}"
            time.sleep(0.3)
        assert (tmp_path / "var" / DB_FILENAME).exists()
        import requests

        def healthy() -> bool:
            try:
                return requests.get(f"http://127.0.0.1:{http_port}/healthz", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        assert wait_for(healthy, 30), f"no /healthz on the HTTP port {http_port}"
        # secure defaults: the HTTP port listens on loopback only, STOW-RS and the status API need a token
        assert _listening_addresses(http_port) == {"127.0.0.1"}
        assert requests.post(f"http://127.0.0.1:{http_port}/dicom-web/studies", data=b"--b--", timeout=5, headers={
            "Content-Type": 'multipart/related; type="application/dicom"; boundary=b'}).status_code == 401
        assert requests.get(f"http://127.0.0.1:{http_port}/api/studies", timeout=5).status_code == 401
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
        assert rc == 0, proc.stdout.read()[-4000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _listening_addresses(port: int) -> set[str]:
    """Local addresses of the TCP sockets listening on ``port`` (Linux /proc/net/tcp and tcp6)."""
    import ipaddress

    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr_hex, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(addr_hex)
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # host-order words
            found.add(str(ipaddress.ip_address(raw)))
    return found
