"""The ``ray`` executor against a real Ray cluster on this machine (head + two worker nodes).

Every test runs the node as a subprocess (``python -m node serve``) with
``executor.type: ray``; the test pipeline ``test-sr`` needs the custom resource
``cn_worker``, which only the worker nodes have (the head has no CPU either),
and records the pid and ``CARDIONODE_TEST_NODE_TAG`` of the process that ran
it, so each test proves the job ran in a worker node's process group and not
in the node.  Results go to a dcmtk storescp (``+uf``: a duplicate would be a
second file).  The tests share one cluster and run in file order: the first one
starts the node while nothing listens at the cluster's address and brings the
cluster up mid-test; the last one kills a worker node.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pydicom
import pytest
import requests
import yaml

from node.state import connect
from node.config import parse_config
from node.executors import JobRequest, make_executor
from node.executors.status_file import read_status
from pipelines.base import StudyView
from pipelines.registry import default_registry
from tests.fixtures.studies import write_ct_study
from tests.support.node_proc import NodeProcess, node_config, pipeline_node_config
from tests.support.peers import StoreSCP, storescu, wait_for
from tests.support.ray_cluster import RayCluster, descendants, require_ray
from tests.test_syntax_pipeline import check_sr, xa_study

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.ray]

API_TOKEN = "ray-test-token"
WORKERS = ("wa", "wb")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    require_ray()
    c = RayCluster(tmp_path_factory.mktemp("ray"))
    yield c
    c.stop()


def _bring_up(c: RayCluster) -> None:
    """Head and both worker nodes (``cn_worker: 1`` each); idempotent."""
    if c.head is None:
        c.start_head()
    if not c.workers:
        c.add_workers(WORKERS, {"cn_worker": 1})


def _config(tmp_path: Path, scp: StoreSCP, c: RayCluster, address: str, options: dict,
            jobs: dict | None = None) -> Path:
    executor = {"type": "ray", "address": address, "auth_token_file": str(c.token_file), "max_in_flight": 2,
                "connect_timeout_s": 60, "reconnect_max_s": 2,
                "pipelines": {"test-sr": {"num_cpus": 1, "resources": {"cn_worker": 1}}}}
    sections = {"executor": executor, "api": {"token": API_TOKEN},
                "jobs": jobs or {"max_attempts": 5, "backoff_initial_s": 0.5, "backoff_max_s": 1.0}}
    dest = {"pacs": {"type": "dimse", "ae_title": "PACS", "host": "127.0.0.1", "port": scp.port}}
    return node_config(tmp_path, dest, pipeline_options={"record_process": True, **options}, quiet=1.0,
                       sections=sections)


def _srs(scp: StoreSCP) -> list[pydicom.Dataset]:
    return [ds for ds in scp.received() if ds.Modality == "SR"]


def _jobs(storage: Path) -> list[sqlite3.Row]:
    conn = connect(storage)
    try:
        return conn.execute("SELECT * FROM jobs ORDER BY id").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def _metric(node: NodeProcess, name: str) -> dict[str, float]:
    """``{labels: value}`` of one metric family from the node's /metrics."""
    port = node.http_port
    text = requests.get(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {API_TOKEN}"},
                        timeout=10).text
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, _, value = line.rpartition(" ")
            out[key[len(name):]] = float(value)
    return out


def _ancestry(pid: int) -> str:
    """``pid (command) <- parent ...`` up to init, for failure messages."""
    chain = []
    while pid > 1:
        try:
            head, tail = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)
        except OSError:
            chain.append(f"{pid} (gone)")
            break
        chain.append(f"{pid} {head.split('(', 1)[1][:20]}")
        pid = int(tail.split()[1])
    return " <- ".join(chain)


def _ran_on_worker(c: RayCluster, node: NodeProcess, summary: dict) -> str:
    """The worker node's name where the recorded pipeline process ran (asserting it is no node process)."""
    pid = summary["pid"]
    assert pid != node.proc.pid
    owner = c.node_of(pid)
    assert owner is not None and owner.name in WORKERS, f"pid {pid} is in no worker node ({summary}; {_ancestry(pid)})"
    assert summary["node_tag"] == owner.name
    return owner.name


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


class _Node(NodeProcess):
    @property
    def http_port(self) -> int:
        return int(yaml.safe_load(self.config.read_text())["node"]["http_port"])


def _driver_pid(node: NodeProcess) -> int | None:
    """The node's Ray driver child process (``python -m node.executors.ray_driver``)."""
    return _driver_pid_of(node.proc.pid)


def _driver_pid_of(parent: int) -> int | None:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if ppid == parent and b"node.executors.ray_driver" in cmd:
            return int(entry)
    return None


def _job_done_records(node: NodeProcess) -> list[dict]:
    records = [json.loads(line) for line in node.log_path.read_text().splitlines() if line.startswith("{")]
    return [r for r in records if r.get("msg") == "job done"]


def _send_and_wait_for_run(node: NodeProcess, files: list[Path], pid_file: Path) -> int:
    """C-STORE the study and return the pid of the process that started running its pipeline."""
    assert storescu(node.port, files).returncode == 0
    assert wait_for(lambda: _read_pid(pid_file) is not None, 120), node.log_path.read_text()[-3000:]
    pid = _read_pid(pid_file)
    assert pid is not None
    return pid


def _one_sr(scp: StoreSCP, node: NodeProcess) -> pydicom.Dataset:
    """Wait for the SR at storescp, give a duplicate time to show up, return the only one."""
    assert wait_for(lambda: len(_srs(scp)) == 1, 120), node.log_path.read_text()[-3000:]
    time.sleep(2)
    (sr,) = _srs(scp)
    return sr


def test_cluster_unreachable_jobs_wait_then_run_on_a_worker_node_and_survive_losing_the_driver(tmp_path, cluster):
    """Nothing listens at the address: the node receives, the job waits queued (status and /metrics say why).
    The cluster comes up and the job starts on a worker node; then the node's Ray driver dies mid-job (what
    Ray does to a driver that lost the GCS for 60 s): the job goes back to the queue without using an
    attempt, a new driver connects, and the study goes storescu -> node -> Ray worker node -> storescp once."""
    files = write_ct_study(tmp_path / "study", 3)
    pid_file = tmp_path / "pipeline.pid"
    with StoreSCP(tmp_path / "scp") as scp:
        node = _Node(_config(tmp_path, scp, cluster, cluster.address, {"delay_s": 6, "pid_file": str(pid_file)}))
        node.start()
        try:
            assert storescu(node.port, files).returncode == 0  # the node keeps receiving
            assert wait_for(lambda: len(_jobs(node.storage)) == 1, 30)
            time.sleep(3)
            (job,) = _jobs(node.storage)
            assert (job["state"], job["attempts"]) == ("queued", 0)
            ex = node.status()["executor"]
            assert (ex["type"], ex["available"], ex["state"]) == ("ray", False, "unavailable")
            assert "cannot reach the Ray GCS" in ex["detail"] and ex["queued_jobs"] == 1
            assert _metric(node, "cardionode_executor_up") == {'{executor="ray",state="unavailable"}': 0.0}

            _bring_up(cluster)
            assert wait_for(lambda: (read_status(node.storage) or {}).get("available"), 120), \
                node.log_path.read_text()[-3000:]
            driver = _driver_pid(node)
            assert driver is not None
            assert wait_for(lambda: _read_pid(pid_file) is not None, 120), node.log_path.read_text()[-3000:]
            os.kill(driver, signal.SIGKILL)  # mid-job: the pipeline sleeps 6 s after writing its pid
            first = _read_pid(pid_file)
            assert _srs(scp) == [] and _jobs(node.storage)[0]["state"] == "running"
            assert wait_for(lambda: not _pid_alive(first), 30), "the dead driver's actor kept running"
            _one_sr(scp, node)
            (job,) = _jobs(node.storage)
            assert (job["state"], job["attempts"]) == ("done", 1)  # the lost run did not count
            summary = json.loads(job["summary"])
            assert _ran_on_worker(cluster, node, summary) in WORKERS and summary["pid"] != first
            ex = node.status()["executor"]
            assert (ex["available"], ex["state"]) == (True, "connected")
            assert _metric(node, "cardionode_executor_up") == {'{executor="ray",state="connected"}': 1.0}
        finally:
            assert node.terminate() == 0


def test_syntax_pipeline_on_a_worker_through_ray_client_with_shared_filesystem(tmp_path, cluster):
    """The real SYNTAX pipeline (ONNX Runtime models loaded by the actor) on a worker node, reached through
    ``address: ray://host:port`` with ``transfer: shared_filesystem``: XA study by storescu -> node -> Ray
    worker -> SR + summary image at storescp, once each, the SR valid as in the local e2e test."""
    _bring_up(cluster)
    files, _st = xa_study(tmp_path / "xa", seed=4712)
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    with StoreSCP(tmp_path / "scp") as scp:
        path = pipeline_node_config(tmp_path, "syntax", "XA", scp.port, {"threshold": 22})
        cfg = yaml.safe_load(path.read_text())
        cfg["executor"] = {"type": "ray", "address": cluster.client_address, "auth_token_file": str(cluster.token_file),
                           "transfer": "shared_filesystem", "max_in_flight": 1,
                           "pipelines": {"syntax": {"num_cpus": 1, "resources": {"cn_worker": 1}}}}
        path.write_text(yaml.safe_dump(cfg))
        node = _Node(path).start()
        try:
            sent = subprocess.run(["storescu", "-xy", "-aet", "MODALITY", "-aec", "CARDIONODE", "127.0.0.1",
                                   str(node.port), *map(str, files)], capture_output=True, text=True, timeout=120)
            assert sent.returncode == 0, sent.stderr
            assert wait_for(lambda: "SR" in {d.Modality for d in scp.received()}, 180, interval=1.0), \
                node.log_path.read_text()[-3000:]
            time.sleep(2)
            received = scp.received()
            assert len(received) == 2  # SR + summary Secondary Capture, each once
            assert {str(d.SOPClassUID).startswith("1.2.840.10008.5.1.4.1.1.7") for d in received} == {True, False}
            (job,) = _jobs(node.storage)
            assert (job["state"], job["attempts"]) == ("done", 1)
            assert {m["provider"] for m in json.loads(job["models"])} == {"cpu"}
            (done,) = _job_done_records(node)
            worker_pid = int(done["worker"].split(" pid ")[1].split()[0])
            owner = cluster.node_of(worker_pid)
            assert owner is not None and owner.name in WORKERS and worker_pid != node.proc.pid
            assert done["t_study_bytes"] == 0  # by path: nothing went through the object store
            groups = node.status()["executor"]["groups"]
            assert [(g["pipeline"], g["configured"], g["ready"]) for g in groups] == [("syntax", 1, 1)]
        finally:
            assert node.terminate() == 0
    sr = pydicom.dcmread(next(p for p in (tmp_path / "scp").iterdir()
                              if pydicom.dcmread(p, stop_before_pixels=True).Modality == "SR"))
    assert sr.StudyInstanceUID == study_uid
    check_sr(sr)


def test_node_killed_mid_job_restarts_and_delivers_once(tmp_path, cluster):
    """kill -9 of the node while its job runs on a worker: the driver sees the node gone and shuts Ray down
    (the actor and its run end); after the restart the job is resubmitted (attempt 2) and sent once."""
    _bring_up(cluster)
    files = write_ct_study(tmp_path / "study", 2)
    pid_file = tmp_path / "pipeline.pid"
    with StoreSCP(tmp_path / "scp") as scp:
        node = _Node(_config(tmp_path, scp, cluster, cluster.address, {"delay_s": 6, "pid_file": str(pid_file)}))
        node.start()
        try:
            first = _send_and_wait_for_run(node, files, pid_file)
            assert cluster.node_of(first) is not None
            node.kill9()
            assert wait_for(lambda: not _pid_alive(first), 30), "the killed node's job kept running on the cluster"
            assert _srs(scp) == []
            pid_file.unlink()
            node.start()
            _one_sr(scp, node)
            (job,) = _jobs(node.storage)
            assert (job["state"], job["attempts"]) == ("done", 2)
            summary = json.loads(job["summary"])
            _ran_on_worker(cluster, node, summary)
            assert summary["pid"] != first
        finally:
            node.stop_quietly()


def test_worker_process_then_worker_node_killed_mid_job_retried_on_the_other_node_and_delivered_once(
        tmp_path, cluster):
    """kill -9 of the worker process running the job, then of the whole worker node running its retry: each
    time the job goes back to the queue under jobs.* and runs again; the third attempt runs on the other
    worker node and its SR is the only one sent."""
    _bring_up(cluster)
    files = write_ct_study(tmp_path / "study", 2)
    pid_file = tmp_path / "pipeline.pid"
    with StoreSCP(tmp_path / "scp") as scp:
        node = _Node(_config(tmp_path, scp, cluster, cluster.address, {"delay_s": 5, "pid_file": str(pid_file)}))
        node.start()
        try:
            first = _send_and_wait_for_run(node, files, pid_file)
            assert cluster.node_of(first) is not None
            os.kill(first, signal.SIGKILL)  # the worker process dies mid-job

            assert wait_for(lambda: _read_pid(pid_file) not in (None, first), 120), node.log_path.read_text()[-3000:]
            second = _read_pid(pid_file)
            doomed = cluster.node_of(second)
            assert doomed is not None and doomed.name in WORKERS
            doomed.kill9()  # the whole worker node dies mid-job
            survivor = next(n for n in cluster.workers if n is not doomed)
            _one_sr(scp, node)
            (job,) = _jobs(node.storage)
            assert (job["state"], job["attempts"]) == ("done", 3)
            summary = json.loads(job["summary"])
            assert _ran_on_worker(cluster, node, summary) == survivor.name
            records = [json.loads(line) for line in node.log_path.read_text().splitlines() if line.startswith("{")]
            lost = [r for r in records if r.get("msg") == "job transient error" and "worker lost" in r.get("error", "")]
            assert len(lost) == 2
        finally:
            assert node.terminate() == 0


def test_embedded_ray_runs_the_job_in_an_actor_process_with_its_own_token(tmp_path):
    """``address: null``: the executor's driver starts a one-machine Ray of its own; the job runs in an actor
    process below the driver, the cluster's token is created under the storage dir (mode 0600), and
    nothing is written to the user's ~/.ray."""
    require_ray()
    home_token = Path.home() / ".ray" / "auth_token"
    had_home_token = home_token.exists()
    storage = tmp_path / "var"
    storage.mkdir()
    cfg = parse_config({"node": {"storage_dir": str(storage), "plugins": ["tests.fixtures.sr_pipeline"]},
                        "executor": {"type": "ray", "max_in_flight": 1,
                                     "embedded": {"num_cpus": 1, "object_store_mb": 80}},
                        "routes": [{"pipeline": "test-sr"}]})
    executor = make_executor(cfg, default_registry(cfg.node.plugins), None)
    study = StudyView.from_files(write_ct_study(tmp_path / "study", 2))
    executor.start()
    try:
        assert wait_for(executor.available, 120), executor.status()
        out = executor.run(JobRequest(1, 1, "test-sr", study, {"record_process": True}, tmp_path / "work"))
        (sr,) = out.result.datasets
        assert sr.Modality == "SR" and sr.StudyInstanceUID == study.study_instance_uid
        driver = _driver_pid_of(os.getpid())
        assert driver is not None and out.result.summary["pid"] in descendants(driver)
        assert out.timings["overhead_s"] >= 0 and out.timings["study_bytes"] > 0
    finally:
        executor.stop()
    token = storage / "ray-auth-token"
    assert token.stat().st_mode & 0o777 == 0o600 and len(token.read_text()) == 64
    assert home_token.exists() == had_home_token
