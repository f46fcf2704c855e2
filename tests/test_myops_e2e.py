"""myops end to end through the node: storescu sends a synthetic three-series CMR study, SEG + SR come
back at a dcmtk storescp, scar burden matches the phantom truth, dciodvfy reports no errors; a study
without LGE is delivered as "not assessable" (IN-SEQUENCE) and the node keeps serving."""
from __future__ import annotations

import time

import pydicom
import pytest

from pipelines.runtime import bundled_models_dir
from tests.support.node_proc import NodeProcess, pipeline_node_config
from tests.support.peers import StoreSCP, echo, storescu, wait_for
from tests.support.peers import dciodvfy_errors
from tests.support.myops import phantom_study, sr_measurements
from tests.test_myops_pipeline import MYO_VOLUME_REL_TOL, SCAR_BURDEN_TOLERANCE_PP  # see there how measured

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_cmr_study_in_seg_and_sr_out_and_missing_lge_is_not_assessable(tmp_path):
    models = bundled_models_dir()
    assert models is not None and (models / "myops-unet" / "model.onnx").is_file(), \
        "bundled myops-unet missing: python -m training.myops.make_bundled --out pipelines/models"
    good, truth = phantom_study(tmp_path / "good", seed=7001)
    no_lge, _ = phantom_study(tmp_path / "nolge", seed=7002, sequences=("bssfp", "t2"))
    with StoreSCP(tmp_path / "scp", accept_all=True) as scp:  # the SEG is JPEG 2000 lossless
        node = NodeProcess(pipeline_node_config(tmp_path, "myops", "MR", scp.port, None)).start()
        try:
            # 1. a study without LGE: the job is done and its results say "not assessable" with the
            #    reason (the bundled model's input_domain requires all three sequences)
            assert storescu(node.port, no_lge).returncode == 0
            no_lge_uid = pydicom.dcmread(no_lge[0]).StudyInstanceUID
            assert wait_for(lambda: any(d.Modality == "SR" and d.StudyInstanceUID == no_lge_uid
                                        for d in scp.received()), 120, interval=1.0), node.status()["jobs"]
            job = next(j for j in node.status()["jobs"] if j["study_uid"] == no_lge_uid)
            assert job["pipeline"] == "myops" and job["state"] == "done" and job["attempts"] == 1
            assert [i["code"] for i in job["not_assessable"]] == ["IN-SEQUENCE"]
            assert "lge missing" in job["not_assessable"][0]["message"]
            na_sr = next(d for d in scp.received() if d.Modality == "SR" and d.StudyInstanceUID == no_lge_uid)
            assert "NOT ASSESSABLE" in na_sr.SeriesDescription
            # 2. the node keeps serving: C-ECHO and a good study
            assert echo(node.port, "CARDIONODE")
            study_uid = pydicom.dcmread(good[0]).StudyInstanceUID
            assert storescu(node.port, good).returncode == 0
            sc_storage = "1.2.840.10008.5.1.4.1.1.7"  # the summary Secondary Capture
            mine = lambda: [d for d in scp.received() if d.StudyInstanceUID == study_uid]  # noqa: E731
            assert wait_for(lambda: {"SEG", "SR"} <= {d.Modality for d in mine()}
                            and sc_storage in {d.SOPClassUID for d in mine()}, 240, interval=1.0), \
                node.status()["jobs"]
            time.sleep(2)
            received = {d.Modality: d for d in scp.received() if d.StudyInstanceUID == study_uid}
            seg, sr = received["SEG"], received["SR"]
            assert seg.StudyInstanceUID == sr.StudyInstanceUID == study_uid
            lge_uid = pydicom.dcmread(next(p for p in good if "/lge/" in str(p))).SeriesInstanceUID
            assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == lge_uid
            labels = {str(s.SegmentLabel): str(s.SegmentedPropertyTypeCodeSequence[0].CodeValue)
                      for s in seg.SegmentSequence}
            assert labels.get("Myocardium") == "74281007" and labels.get("Scar") == "12402003"
            assert labels.get("Edema") == "79654002"
            # trained on phantoms, and says so
            assert "phantom" in str(seg.ContentDescription).lower()
            assert "NOT FOR CLINICAL USE" in str(sr.SeriesDescription).upper() or "phantom" in str(sr.SeriesDescription)
            values = sr_measurements(sr)
            scar_burden = values["SCAR-FRACTION"][0]
            assert abs(scar_burden - truth["scar_burden_pct"]) <= SCAR_BURDEN_TOLERANCE_PP, (scar_burden, truth)
            myo_ml = max(values["118565006"])  # the myocardial volume is the largest volume
            # against the truth on the analysed (matched) LGE slices: unmatched slices are not analysed
            myo_truth = truth["analysed_myocardium_ml"]
            assert abs(myo_ml - myo_truth) <= MYO_VOLUME_REL_TOL * myo_truth, (myo_ml, truth)
            for path in scp.files():  # SEG, SR and the summary Secondary Capture
                assert dciodvfy_errors(path) == [], (path.name, dciodvfy_errors(path))
            jobs = node.status()["jobs"]
            assert sorted(j["state"] for j in jobs) == ["done", "done"]
        finally:
            assert node.terminate() == 0
