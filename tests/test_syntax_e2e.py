"""syntax end to end through the node: storescu sends a synthetic XA angiography study, the SR (+ summary
SC) arrives at a dcmtk storescp with total = left + right, referencing the sent cines; dciodvfy reports
no errors."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pydicom
import pytest
import yaml

from tests.support.node_proc import NodeProcess
from tests.support.peers import StoreSCP, free_port, wait_for
from tests.test_syntax_pipeline import check_sr, dciodvfy_errors, xa_study

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _config(tmp_path: Path, scp_port: int) -> Path:
    cfg = {
        "node": {"ae_title": "CARDIONODE", "host": "127.0.0.1", "port": free_port(),
                 "storage_dir": str(tmp_path / "var"), "quiet_seconds": 1.5, "min_free_mb": 0,
                 "http_host": "127.0.0.1", "http_port": free_port(), "log_format": "json"},
        "models": {"providers": ["cpu"]},
        "dispatch": {"backoff_initial_s": 1.0, "backoff_max_s": 2.0, "timeout_s": 30},
        "destinations": {"pacs": {"type": "dimse", "ae_title": "PACS", "host": "127.0.0.1", "port": scp_port}},
        "routes": [{"name": "angio", "pipeline": "syntax", "match": {"modality": "XA"}, "destinations": ["pacs"]}],
        "pipelines": {"syntax": {"threshold": 22}},
    }
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_xa_in_sr_out(tmp_path):
    files, st = xa_study(tmp_path / "xa", seed=4712)
    sent = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
    study_uid = pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
    with StoreSCP(tmp_path / "scp") as scp:
        node = NodeProcess(_config(tmp_path, scp.port)).start()
        try:
            # -xy: propose JPEG Baseline too (one cine in three is JPEG-compressed, as angiography systems send)
            sent_ok = subprocess.run(["storescu", "-xy", "-aet", "MODALITY", "-aec", "CARDIONODE", "127.0.0.1",
                                      str(node.port), *map(str, files)], capture_output=True, text=True, timeout=120)
            assert sent_ok.returncode == 0, sent_ok.stderr
            assert wait_for(lambda: "SR" in {d.Modality for d in scp.received()}, 180, interval=1.0), \
                node.status()["jobs"]
            time.sleep(2)
            received = {d.Modality: d for d in scp.received()}
            job = next(j for j in node.status()["jobs"] if j["pipeline"] == "syntax")
        finally:
            node.terminate()
    assert job["state"] == "done", job
    paths = sorted((tmp_path / "scp").iterdir())
    assert len(paths) == 2  # SR + summary Secondary Capture
    for path in paths:
        assert dciodvfy_errors(path) == [], path.name
    sr = pydicom.dcmread(next(p for p in paths if pydicom.dcmread(p, stop_before_pixels=True).Modality == "SR"))
    assert sr.StudyInstanceUID == study_uid and received["SR"].SOPInstanceUID == sr.SOPInstanceUID
    check_sr(sr)
    evidence = {str(i.ReferencedSOPInstanceUID) for s in sr.CurrentRequestedProcedureEvidenceSequence
                for se in s.ReferencedSeriesSequence for i in se.ReferencedSOPSequence}
    assert evidence == sent
