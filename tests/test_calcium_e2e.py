"""calcium end to end through the node: storescu sends a synthetic chest CT, SEG + SR (+ summary SC)
arrive at a dcmtk storescp, Agatston totals match the hand-computed phantom values, dciodvfy reports
no errors."""
from __future__ import annotations

import time

import pydicom
import pytest

from pipelines.calcium.labels import CLASS_BY_VALUE
from tests.support.peers import dciodvfy_errors
from tests.support.calcium import phantom_ct_study, sr_groups
from tests.support.node_proc import NodeProcess, pipeline_node_config
from tests.support.peers import StoreSCP, storescu, wait_for
from tests.test_calcium_pipeline import AGATSTON_REL_TOL
from training.calcium.phantom import hand_agatston

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_ct_in_seg_and_sr_out(tmp_path):
    files, ph = phantom_ct_study(tmp_path / "ct")
    hand = hand_agatston(ph)
    study_uid = pydicom.dcmread(files[0]).StudyInstanceUID
    # a plain storescp accepts uncompressed syntaxes only: the node sends the JPEG 2000 SEG decoded
    with StoreSCP(tmp_path / "scp") as scp:
        config = pipeline_node_config(tmp_path, "calcium", "CT", scp.port, {"risk_bounds": [0, 10, 100, 400]})
        node = NodeProcess(config).start()
        try:
            assert storescu(node.port, files).returncode == 0
            assert wait_for(lambda: {"SEG", "SR"} <= {d.Modality for d in scp.received()}, 120, interval=1.0), \
                node.status()["jobs"]
            time.sleep(2)
            received = {d.Modality: d for d in scp.received()}
        finally:
            node.terminate()
    seg, sr = received["SEG"], received["SR"]
    assert seg.StudyInstanceUID == sr.StudyInstanceUID == study_uid
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == pydicom.dcmread(files[0]).SeriesInstanceUID
    for path in sorted((tmp_path / "scp").iterdir()):
        assert dciodvfy_errors(path) == [], path.name
    groups = sr_groups(sr)
    coronary = sum(v for k, v in hand.items() if CLASS_BY_VALUE[k].coronary)
    assert groups["Calcium total coronary"]["450360000"] == pytest.approx(coronary, rel=AGATSTON_REL_TOL)
    assert groups["Calcium total all classes"]["ALL-CA-SCORE"] == pytest.approx(sum(hand.values()),
                                                                               rel=AGATSTON_REL_TOL)
    assert "phantom" in str(seg.ContentDescription).lower()
