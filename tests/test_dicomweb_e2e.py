"""End to end with a real Orthanc (orthanc-dicomweb) on loopback and the whole node service:

* a study STOW'd into CardioNode is completed, processed by the test pipeline, and its SR is
  STOW'd into Orthanc (found there by Orthanc's REST API); /metrics changes along the way;
* a study already in Orthanc is pulled by ``cardionode process --study UID --from SOURCE``
  (WADO-RS and C-GET) and processed the same way.
"""
from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pydicom
import pytest
import requests
import yaml
from dicomweb_client.api import DICOMwebClient

from tests.fixtures.studies import write_ct_study
from tests.support.peers import Orthanc, free_port, storescu

TOKEN = "e2e-token"
ROOT = Path(__file__).resolve().parents[1]


def _wait(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from node.config import parse_config
    from node.service import NodeService

    work = tmp_path_factory.mktemp("e2e")
    node_port = free_port()
    with Orthanc(work / "orthanc", users={"cardio": "s3cret"},
                 modalities={"cardionode": ["CARDIONODE", "127.0.0.1", node_port]}) as orthanc:
        raw = {
            "node": {"ae_title": "CARDIONODE", "host": "127.0.0.1", "port": node_port,
                     "storage_dir": str(work / "var"), "quiet_seconds": 1.0, "min_free_mb": 0,
                     "http_host": "127.0.0.1", "http_port": 0, "plugins": ["tests.fixtures.sr_pipeline"]},
            "api": {"token": TOKEN},
            "dispatch": {"backoff_initial_s": 0.5, "backoff_max_s": 1.0, "timeout_s": 10},
            "destinations": {"orthanc": {"type": "dicomweb", "url": orthanc.dicomweb_url,
                                         "auth": {"type": "basic", "username": "cardio", "password": "s3cret"}}},
            "sources": {
                "orthanc-web": {"type": "dicomweb", "url": orthanc.dicomweb_url,
                                "auth": {"type": "basic", "username": "cardio", "password": "s3cret"}},
                "orthanc-get": {"type": "dimse", "ae_title": orthanc.aet, "host": "127.0.0.1",
                                "port": orthanc.dicom_port, "retrieve": "get"},
            },
            "routes": [{"pipeline": "test-sr", "match": {"modality": ["CT"]}, "destinations": ["orthanc"]}],
        }
        cfg_path = work / "node.yaml"
        cfg_path.write_text(yaml.safe_dump(raw))
        service = NodeService(parse_config(raw, str(cfg_path)))
        service.start()
        try:
            yield {"orthanc": orthanc, "service": service, "url": service.web.url, "config": cfg_path, "work": work}
        finally:
            service.stop()


def _api(env: dict[str, Any], path: str) -> Any:
    r = requests.get(env["url"] + path, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    r.raise_for_status()
    return r.json() if path != "/metrics" else r.text


def _metric(env: dict[str, Any], sample: str) -> float:
    for line in _api(env, "/metrics").splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


def _done_jobs(env: dict[str, Any], study_uid: str) -> list[dict[str, Any]]:
    jobs = _api(env, f"/api/jobs?study={study_uid}")["jobs"]
    return jobs if jobs and all(j["state"] in ("done", "failed") for j in jobs) else []


def _result_in_orthanc(env: dict[str, Any], study_uid: str) -> list[dict[str, Any]]:
    """SR instances in Orthanc that the node made for ``study_uid`` (by Orthanc's REST API)."""
    orthanc: Orthanc = env["orthanc"]
    found = orthanc.post("/tools/find", {"Level": "Instance", "Expand": True,
                                        "Query": {"StudyInstanceUID": study_uid, "Modality": "SR"}})
    return found


def test_stow_in_process_and_stow_out_to_orthanc(env: dict[str, Any], tmp_path: Path) -> None:
    paths = write_ct_study(tmp_path / "s", n=3)
    study = str(pydicom.dcmread(paths[0]).StudyInstanceUID)
    before = {
        "stow": _metric(env, 'cardionode_instances_received_total{source="stow"}'),
        "completed": _metric(env, "cardionode_studies_completed_total"),
        "done": _metric(env, 'cardionode_jobs{state="done"}'),
        "latency": _metric(env, 'cardionode_job_latency_seconds_count{pipeline="test-sr"}'),
        "sent": _metric(env, 'cardionode_dispatch_queue{destination="orthanc",state="sent"}'),
    }
    response = DICOMwebClient(url=env["url"] + "/dicom-web", headers={"Authorization": f"Bearer {TOKEN}"}
                              ).store_instances([pydicom.dcmread(p) for p in paths])
    assert len(response.ReferencedSOPSequence) == 3
    assert _metric(env, 'cardionode_instances_received_total{source="stow"}') == before["stow"] + 3

    jobs = _wait(lambda: _done_jobs(env, study), 30, "the job")
    assert [j["state"] for j in jobs] == ["done"] and jobs[0]["pipeline"] == "test-sr"
    results = _wait(lambda: _result_in_orthanc(env, study), 30, "the SR in Orthanc")
    assert len(results) == 1
    tags = env["orthanc"].get(f"/instances/{results[0]['ID']}/simplified-tags")
    assert tags["SOPClassUID"] == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert tags["StudyInstanceUID"] == study

    assert _metric(env, "cardionode_studies_completed_total") == before["completed"] + 1
    assert _metric(env, 'cardionode_jobs{state="done"}') == before["done"] + 1
    assert _metric(env, 'cardionode_job_latency_seconds_count{pipeline="test-sr"}') == before["latency"] + 1
    _wait(lambda: _metric(env, 'cardionode_dispatch_queue{destination="orthanc",state="sent"}') == before["sent"] + 1,
          10, "the delivery to be recorded as sent")
    dest = [d for d in _api(env, "/api/destinations")["destinations"] if d["name"] == "orthanc"][0]
    assert dest["queue_depth"] == 0 and dest["last_success_at"] is not None
    studies = {s["study_uid"]: s for s in _api(env, "/api/studies")["studies"]}
    assert studies[study]["state"] == "processed"


def test_own_result_sent_back_by_stow_is_acknowledged_not_stored_not_reprocessed(env: dict[str, Any],
                                                                                 tmp_path: Path) -> None:
    """A PACS that forwards the node's results back over DICOMweb makes no loop: the SR is answered as
    stored, is not stored, the study is not processed again, and the return is counted."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    paths = write_ct_study(tmp_path / "s", n=2)
    study = str(pydicom.dcmread(paths[0]).StudyInstanceUID)
    client = DICOMwebClient(url=env["url"] + "/dicom-web", headers=auth)
    client.store_instances([pydicom.dcmread(p) for p in paths])
    _wait(lambda: _done_jobs(env, study), 30, "the job")
    [sr] = _wait(lambda: _result_in_orthanc(env, study), 30, "the SR in Orthanc")
    returned = 'cardionode_own_results_returned_total{source="stow"}'
    before = _metric(env, returned)
    sr_bytes = env["orthanc"].instance_file(sr["ID"])
    ds = pydicom.dcmread(io.BytesIO(sr_bytes))
    response = client.store_instances([ds])
    assert [str(i.ReferencedSOPInstanceUID) for i in response.ReferencedSOPSequence] == [ds.SOPInstanceUID]
    assert _metric(env, returned) == before + 1
    assert not list((env["work"] / "var" / "spool" / study).rglob(f"{ds.SOPInstanceUID}.dcm"))
    time.sleep(2.5)  # > quiet_seconds: a reprocessing would have been queued by now
    jobs = _api(env, f"/api/jobs?study={study}")["jobs"]
    assert len(jobs) == 1 and jobs[0]["generation"] == 1, jobs
    studies = {s["study_uid"]: s for s in _api(env, "/api/studies")["studies"]}
    assert studies[study]["state"] == "processed" and studies[study]["generation"] == 1


def test_dimse_ingest_counts_in_metrics(env: dict[str, Any], tmp_path: Path) -> None:
    """Instances received by C-STORE count in /metrics (source="dimse") with their spooled bytes."""
    paths = write_ct_study(tmp_path / "s", n=2)
    study = str(pydicom.dcmread(paths[0]).StudyInstanceUID)
    count = 'cardionode_instances_received_total{source="dimse"}'
    nbytes = 'cardionode_received_bytes_total{source="dimse"}'
    before = {"count": _metric(env, count), "bytes": _metric(env, nbytes),
              "completed": _metric(env, "cardionode_studies_completed_total")}
    r = storescu(env["service"].dimse.port, paths, calling_ae="MODALITY")
    assert r.returncode == 0, r.stdout + r.stderr
    spooled = sum(p.stat().st_size for p in (env["work"] / "var" / "spool" / study).rglob("*.dcm"))
    assert _metric(env, count) == before["count"] + 2
    assert _metric(env, nbytes) == before["bytes"] + spooled
    _wait(lambda: _done_jobs(env, study), 30, "the job of the C-STORE'd study")
    assert _metric(env, "cardionode_studies_completed_total") == before["completed"] + 1


@pytest.mark.parametrize("source", ["orthanc-web", "orthanc-get"])
def test_process_pulls_study_from_orthanc(env: dict[str, Any], tmp_path: Path, source: str) -> None:
    paths = write_ct_study(tmp_path / "s", n=2)
    study = str(pydicom.dcmread(paths[0]).StudyInstanceUID)
    for p in paths:
        env["orthanc"].upload(p)
    cmd = [sys.executable, "-m", "node", "--config", str(env["config"]), "process", "--study", study,
           "--from", source, "--wait", "30"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=90,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert '"stored": 2' in proc.stdout
    jobs = _wait(lambda: _done_jobs(env, study), 30, "the pulled study's job")
    assert [j["state"] for j in jobs] == ["done"]
    _wait(lambda: _result_in_orthanc(env, study), 30, "the pulled study's SR in Orthanc")
