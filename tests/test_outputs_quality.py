"""The "not assessable" contract (pipelines.quality.QualityIssue) through the real SR, SEG and
summary-image builders: coded assessability + reason in the SR (group and whole result), the SEG's
description and parameters, the summary image's lines; dciodvfy-clean, read back with highdicom."""
from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from pipelines.base import ModelInfo, StudyView
from pipelines.imaging import load_volume
from pipelines.outputs import (AlgorithmIdentity, MeasurementGroupSpec, MeasurementSpec, QualityIssue, SegmentSpec,
                               build_measurement_report, build_segmentation_for_volume, build_summary_image)
from pipelines.outputs import codes as C
from pipelines.quality import RESULT
from synth.dicom import new_study, write_ct_series, write_xa_cine
from tests.support.peers import DCIODVFY_BIN, dciodvfy_errors
from tests.support.sr_content import containers, groups, structure_problems, walk

needs_dciodvfy = pytest.mark.skipif(not Path(DCIODVFY_BIN).exists(), reason="dicom3tools dciodvfy not installed")
ALG = AlgorithmIdentity.from_models("syntax", "0.2.0", [ModelInfo("m", "1", "phantoms")], trained_on_phantoms=True)
NO_RIGHT = QualityIssue("NO-CINE", "no cine of the right coronary system could be analysed", scope="SYNTAX right")
NO_TOTAL = QualityIssue("PART-MISSING", "the right coronary system is not assessed, so the total is not known",
                        scope="SYNTAX total")


def _save(ds, path: Path) -> pydicom.Dataset:
    ds.save_as(path, enforce_file_format=True)
    errors = dciodvfy_errors(path)
    assert errors == [], errors
    return pydicom.dcmread(path)


def _xa(tmp_path: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(write_xa_cine(np.zeros((3, 32, 32), np.uint8), tmp_path / "xa.dcm", new_study(sparse=True)),
                            stop_before_pixels=True)]


def test_issue_is_validated():
    for bad in ("", "no", "TOO-LONG-CODE-FOR-DICOM", "A B"):
        with pytest.raises(ValueError, match="code"):
            QualityIssue(bad, "x")
    with pytest.raises(ValueError, match="message"):
        QualityIssue("X", " ")
    assert QualityIssue("X", "why").is_whole_result and QualityIssue("X", "why").scope == RESULT
    assert NO_RIGHT.describe() == "SYNTAX right not assessable: no cine of the right coronary system could be analysed"


@needs_dciodvfy
def test_part_not_assessable_in_sr_and_summary(tmp_path: Path) -> None:
    xa = _xa(tmp_path)
    specs = [
        MeasurementGroupSpec("SYNTAX total", C.CORONARY_ARTERY_DISEASE_COMPLEXITY, C.HEART,
                             measurements=[MeasurementSpec(C.SYNTAX_SCORE, None, C.POINTS)]),
        MeasurementGroupSpec("SYNTAX left", C.CORONARY_ARTERY_DISEASE_COMPLEXITY, C.LEFT_MAIN_CORONARY_ARTERY,
                             measurements=[MeasurementSpec(C.SYNTAX_SCORE_LEFT, 12.5, C.POINTS)]),
        MeasurementGroupSpec("SYNTAX right", C.CORONARY_ARTERY_DISEASE_COMPLEXITY, C.RIGHT_CORONARY_ARTERY,
                             measurements=[MeasurementSpec(C.SYNTAX_SCORE_RIGHT, None, C.POINTS)]),
    ]
    sr = build_measurement_report(xa, procedure=C.CORONARY_ARTERIOGRAPHY, groups=specs, algorithm=ALG,
                                  series_number=950, series_description="SYNTAX", issues=[NO_RIGHT, NO_TOTAL])
    back = _save(sr, tmp_path / "sr.dcm")
    hd.sr.srread(tmp_path / "sr.dcm")
    assert structure_problems(back) == [] and "partly not assessable" in back.SeriesDescription
    g = groups(back)
    right, total, left = g["SYNTAX right"], g["SYNTAX total"], g["SYNTAX left"]
    # coded: Assessability = Not assessable, reason code with the reason as meaning; no number
    assert right.coded["ASSESSABILITY"] == "NOT-ASSESSABLE" and right.coded["NA-REASON"] == "NO-CINE"
    assert right.coded_meaning["NA-REASON"] == NO_RIGHT.message
    assert right.numbers == {}
    assert total.coded["NA-REASON"] == "PART-MISSING"
    assert total.texts["Comment"] == [NO_TOTAL.message]  # longer than 64: the full text as well
    assert left.numbers == {"SYNTAX-L": 12.5} and "ASSESSABILITY" not in left.coded
    sc = build_summary_image(xa[0], "SYNTAX score", ["Left coronary: 12.5"], ALG, 951, issues=[NO_RIGHT])
    back_sc = _save(sc, tmp_path / "sc.dcm")
    assert f"NOT ASSESSABLE - {NO_RIGHT.describe()}" in back_sc.ImageComments
    assert back_sc.ImageComments.splitlines()[0] == "SYNTAX score"  # a part only: the title is unchanged


@needs_dciodvfy
def test_whole_result_not_assessable(tmp_path: Path) -> None:
    xa = _xa(tmp_path)
    issue = QualityIssue("NO-CINE", "no usable cine in the study")
    with pytest.raises(ValueError, match="pass no measurement groups"):
        build_measurement_report(xa, procedure=C.CORONARY_ARTERIOGRAPHY, algorithm=ALG, series_number=950,
                                 series_description="SYNTAX", issues=[issue], groups=[MeasurementGroupSpec(
                                     "SYNTAX total", C.CORONARY_ARTERY_DISEASE_COMPLEXITY)])
    with pytest.raises(ValueError, match="no quality issue says why"):
        build_measurement_report(xa, procedure=C.CORONARY_ARTERIOGRAPHY, algorithm=ALG, series_number=950,
                                 series_description="SYNTAX", groups=[MeasurementGroupSpec(
                                     "SYNTAX total", C.CORONARY_ARTERY_DISEASE_COMPLEXITY,
                                     measurements=[MeasurementSpec(C.SYNTAX_SCORE, None, C.POINTS)])])
    with pytest.raises(ValueError, match="name no part"):
        build_measurement_report(xa, procedure=C.CORONARY_ARTERIOGRAPHY, algorithm=ALG, series_number=950,
                                 series_description="SYNTAX", issues=[NO_RIGHT], groups=[MeasurementGroupSpec(
                                     "SYNTAX total", C.CORONARY_ARTERY_DISEASE_COMPLEXITY)])
    sr = build_measurement_report(xa, procedure=C.CORONARY_ARTERIOGRAPHY, groups=[], algorithm=ALG,
                                  series_number=950, series_description="SYNTAX", issues=[issue])
    back = _save(sr, tmp_path / "sr.dcm")
    hd.sr.srread(tmp_path / "sr.dcm")
    assert set(containers(back)) == {"111028", "C0034375"}  # image library + qualitative evaluations only
    qual = containers(back)["C0034375"]
    coded = {str(i.ConceptNameCodeSequence[0].CodeValue): str(i.ConceptCodeSequence[0].CodeValue)
             for i in walk(qual.ContentSequence) if i.get("ValueType") == "CODE"}
    assert coded == {"ASSESSABILITY": "NOT-ASSESSABLE", "NA-REASON": "NO-CINE"}
    assert "NOT ASSESSABLE" in back.SeriesDescription
    assert structure_problems(back) == []
    sc = _save(build_summary_image(xa[0], "SYNTAX score", [], ALG, 951, issues=[issue]), tmp_path / "sc.dcm")
    assert sc.ImageComments.splitlines()[:2] == ["SYNTAX score - NOT ASSESSABLE",
                                                 "NOT ASSESSABLE: no usable cine in the study"]


@needs_dciodvfy
def test_seg_names_what_is_not_assessable(tmp_path: Path) -> None:
    hu = np.zeros((3, 32, 32))
    files = write_ct_series(hu, (3.0, 1.0, 1.0), tmp_path / "ct", new_study(sparse=True))
    vol = load_volume(StudyView.from_files(files).series[0])
    masks = np.zeros(vol.shape + (1,), bool)
    masks[1, 5:9, 5:9, 0] = True
    spec = [SegmentSpec("Scar", C.MORPHOLOGICALLY_ABNORMAL_STRUCTURE, C.SCAR_TISSUE, rgb=(255, 230, 40))]
    edema = QualityIssue("NO-T2", "no T2-weighted series matched", scope="Edema")
    built = build_segmentation_for_volume(vol, masks, spec, algorithm=ALG, series_number=960,
                                          series_description="Pathology", issues=[edema])
    seg = _save(built.dataset, tmp_path / "seg.dcm")
    assert seg.SeriesDescription.startswith("Pathology - Edema not assessable")
    params = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmParameters
    assert "NO-T2: no T2-weighted series matched" in params
    with pytest.raises(ValueError, match="write no SEG"):
        build_segmentation_for_volume(vol, masks, spec, algorithm=ALG, series_number=960, series_description="x",
                                      issues=[QualityIssue("THICK", "slices too thick")])
