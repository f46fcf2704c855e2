"""Abstention end to end through the node: storescu sends a contrast-enhanced chest CT (outside what
the bundled calcium model was trained for), the job ends done, and a dcmtk storescp receives an SR and
a summary image saying "not assessable" with the reason, no score and no SEG."""
from __future__ import annotations

import time

import pydicom
import pytest

from tests.calcium_fixtures import phantom_ct_study
from tests.support.abstention import numbers, reasons
from tests.support.node_proc import NodeProcess, pipeline_node_config
from tests.support.peers import StoreSCP, dciodvfy_errors, storescu, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_out_of_range_ct_is_delivered_as_not_assessable(tmp_path):
    files, _ = phantom_ct_study(tmp_path / "ct")
    for f in files:
        ds = pydicom.dcmread(f)
        ds.ContrastBolusAgent = "IOHEXOL 350"
        ds.save_as(f)
    with StoreSCP(tmp_path / "scp") as scp:
        node = NodeProcess(pipeline_node_config(tmp_path, "calcium", "CT", scp.port)).start()
        try:
            assert storescu(node.port, files).returncode == 0
            assert wait_for(lambda: {"SR", "OT"} <= {d.Modality for d in scp.received()}, 120, interval=1.0), \
                node.status()["jobs"]
            assert wait_for(lambda: [j["state"] for j in node.status()["jobs"]] == ["done"], 30, interval=1.0), \
                node.status()["jobs"]
            time.sleep(2)
            received = scp.received()
            st = node.status()
        finally:
            node.terminate()
    assert sorted(d.Modality for d in received) == ["OT", "SR"], "no SEG for a study that is not assessable"
    assert st["studies"][0]["state"] == "processed"
    assert [i["code"] for i in st["jobs"][0]["not_assessable"]] == ["IN-CONTRAST"]  # cardionode status says so
    sr = next(d for d in received if d.Modality == "SR")
    sc = next(d for d in received if d.Modality == "OT")
    why = reasons(sr)
    assert list(why) == ["IN-CONTRAST"] and "contrast agent given" in why["IN-CONTRAST"]
    assert numbers(sr) == [] and "NOT ASSESSABLE" in sr.SeriesDescription
    assert sc.ImageComments.startswith("Coronary artery calcium (Agatston) - NOT ASSESSABLE")
    assert "contrast agent given" in sc.ImageComments
    for path in sorted((tmp_path / "scp").iterdir()):
        assert dciodvfy_errors(path) == [], path.name
