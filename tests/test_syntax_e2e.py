"""syntax end to end through the node: storescu sends a synthetic XA angiography study, the SR (+ summary
SC) arrives at a dcmtk storescp with total = left + right, referencing the sent cines; dciodvfy reports
no errors."""
from __future__ import annotations

import subprocess
import time

import pydicom
import pytest

from tests.support.node_proc import NodeProcess, pipeline_node_config
from tests.support.peers import StoreSCP, wait_for
from tests.support.peers import dciodvfy_errors
from tests.test_syntax_pipeline import check_sr, xa_study

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_xa_in_sr_out(tmp_path):
    files, st = xa_study(tmp_path / "xa", seed=4712)
    sent = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
    study_uid = pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
    with StoreSCP(tmp_path / "scp") as scp:
        node = NodeProcess(pipeline_node_config(tmp_path, "syntax", "XA", scp.port, {"threshold": 22})).start()
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
