"""SYNTAX pipeline: options, ensemble arithmetic, shared preprocessing parity, and a synthetic XA study
through the bundled ONNX models into an SR (highdicom read-back, total = left + right, dciodvfy clean)
and a summary image; unusable input gives a clear PipelineInputError."""
from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from pipelines.base import PipelineContext, PipelineInputError, StudyView
from pipelines.imaging import load_cine
from pipelines.syntax.ensemble import combine, score_from_output
from pipelines.syntax.options import OptionsError, SyntaxOptions
from pipelines.syntax.pipeline import SyntaxPipeline
from pipelines.syntax.preprocess import CineConfig, preprocess_cine
from pipelines.syntax.pipeline import side_scores
from synth.dicom import new_study, write_ct_series, write_xa_cine
from tests.support.sr_content import groups as sr_content_groups
from tests.support.sr_content import structure_problems
from training.syntax.data import load_video
from training.syntax.phantom import make_study
from tests.support.peers import dciodvfy_errors

MODELS = ["syntax-artery"] + [f"syntax-{s}-fold{k}" for s in ("left", "right") for k in range(5)]


def xa_study(out: Path, seed: int = 4711, jpeg_every: int = 3) -> tuple[list[Path], object]:
    """A phantom angiography study (left, right, maybe other cines) as multi-frame XA files."""
    st = make_study(seed, 96)
    ident = new_study(seed=seed)
    files = [write_xa_cine(c.frames, out / f"{n:02d}.dcm", ident, series_number=n + 1, seed=seed,
                           primary_angle=c.primary_angle, secondary_angle=c.secondary_angle,
                           jpeg=bool(jpeg_every) and n % jpeg_every == 1)
             for n, c in enumerate(st.cines)]
    return files, st


def sr_numbers(sr: pydicom.Dataset) -> dict[str, dict[str, float | str]]:
    """{tracking identifier: {concept code value: number or coded value}} of a TID 1500 SR."""
    out: dict[str, dict[str, float | str]] = {}

    def walk(items, cur):
        for it in items:
            code = str(it.ConceptNameCodeSequence[0].CodeValue) if "ConceptNameCodeSequence" in it else ""
            if it.get("ValueType") == "CONTAINER" and code == "125007":
                tid = next(str(c.TextValue) for c in it.ContentSequence
                           if str(c.ConceptNameCodeSequence[0].CodeValue) == "112039")
                out[tid] = {}
                walk(it.ContentSequence, out[tid])
                continue
            if cur is not None and it.get("ValueType") == "NUM" and it.get("MeasuredValueSequence"):
                cur.setdefault(code, float(it.MeasuredValueSequence[0].NumericValue))
            if cur is not None and it.get("ValueType") == "CODE":
                cur.setdefault(code, str(it.ConceptCodeSequence[0].CodeValue))
            if "ContentSequence" in it:
                walk(it.ContentSequence, cur)

    walk(sr.ContentSequence, None)
    return out


def sr_texts(sr: pydicom.Dataset) -> list[str]:
    """Every TEXT / UIDREF value in the SR content tree."""
    out: list[str] = []

    def walk(items):
        for it in items:
            for kw in ("TextValue", "UID"):
                if kw in it:
                    out.append(str(it.get(kw)))
            if "ContentSequence" in it:
                walk(it.ContentSequence)

    walk(sr.ContentSequence)
    return out




def check_sr(sr: pydicom.Dataset) -> dict[str, dict[str, float | str]]:
    """The assertions shared with the node e2e test: numbers present, total = left + right, finding."""
    g = sr_numbers(sr)
    total = g["SYNTAX total"]["SYNTAX"]
    left, right = g["SYNTAX left coronary"]["SYNTAX-L"], g["SYNTAX right coronary"]["SYNTAX-R"]
    assert total == pytest.approx(left + right, abs=2e-3)
    assert min(total, left, right) >= 0
    assert g["SYNTAX total"]["SYNTAX-HIGH"] == ("373066001" if total > 22 else "373067005")
    used = g["SYNTAX left coronary"]["CINES-USED"] + g["SYNTAX right coronary"]["CINES-USED"]
    assert g["SYNTAX total"]["CINES-USED"] == used
    assert "phantom" in str(sr.SeriesDescription).lower() or "not for clinical use" in str(sr.SeriesDescription).lower()
    return g


def test_options_name_the_key() -> None:
    o = SyntaxOptions.from_mapping({})
    assert o.folds == (0, 1, 2, 3, 4) and o.threshold == 22.0 and o.calibrate
    for raw, key in [({"treshold": 1}, "pipelines.syntax.treshold"), ({"folds": []}, "pipelines.syntax.folds"),
                     ({"left_max": 1.5}, "pipelines.syntax.left_max"),
                     ({"calibrate": "yes"}, "pipelines.syntax.calibrate"),
                     ({"max_views": 0}, "pipelines.syntax.max_views")]:
        with pytest.raises(OptionsError, match=key.replace(".", r"\.")):
            SyntaxOptions.from_mapping(raw)
    with pytest.raises(OptionsError, match="left_max"):
        SyntaxOptions.from_mapping({"left_max": 0.6, "right_min": 0.4})


def test_ensemble_calibration_keeps_total_equal_left_plus_right() -> None:
    assert score_from_output(np.log1p(7.0)) == pytest.approx(7.0) and score_from_output(-3.0) == 0.0
    per_fold = {0: (6.0, 2.0), 1: (10.0, 2.0)}
    raw = combine(per_fold, None)
    assert (raw.left, raw.right, raw.total) == (8.0, 2.0, 10.0)
    cal = combine(per_fold, {0: {"a": 2.0, "b": 1.0}, 1: {"a": 1.0, "b": -2.0}})
    assert cal.total == pytest.approx(((2 * 8 + 1) + (12 - 2)) / 2)  # mean over folds of a_k (L_k + R_k) + b_k
    assert cal.left == pytest.approx(cal.total * 0.8) and cal.left + cal.right == pytest.approx(cal.total)
    zero = combine({0: (0.0, 0.0)}, {0: {"a": 1.0, "b": 3.0}})
    assert zero.left == zero.right == pytest.approx(1.5)
    assert combine({0: (0.0, 0.0)}, {0: {"a": 1.0, "b": -3.0}}).total == 0.0  # clamped
    with pytest.raises(ValueError, match="fold"):
        combine({0: (1.0, 1.0), 3: (1.0, 1.0)}, {0: {"a": 1.0, "b": 0.0}})


def test_same_tensor_from_training_reader_and_pipeline_decoder(tmp_path) -> None:
    files, st = xa_study(tmp_path, seed=11, jpeg_every=1)  # every cine JPEG-compressed
    cfg = CineConfig(frames=8, height=64, width=64)
    for f in files[:2]:
        ref = StudyView.from_files([f]).instances[0]
        np.testing.assert_array_equal(preprocess_cine(load_cine(ref), cfg), preprocess_cine(load_video(f), cfg))


def test_xa_study_to_sr_and_summary(tmp_path, bundled_models) -> None:
    files, st = xa_study(tmp_path / "xa")
    ctx = PipelineContext(options={}, models=bundled_models, work_dir=tmp_path)
    res = SyntaxPipeline().run(StudyView.from_files(files), ctx)
    sr, sc = res.datasets
    assert sr.Modality == "SR" and str(sc.SOPClassUID).startswith("1.2.840.10008.5.1.4.1.1.7")
    paths = []
    for i, ds in enumerate(res.datasets):
        paths.append(tmp_path / f"out{i}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
        assert dciodvfy_errors(paths[-1]) == [], paths[-1].name
    # highdicom reads the SR back; scores without an image location are derived measurements
    back = hd.sr.srread(paths[0])
    groups = sr_content_groups(back)
    assert sorted(groups) == ["SYNTAX left coronary", "SYNTAX right coronary", "SYNTAX total"]
    assert {g.container for g in groups.values()} == {"126011"} and structure_problems(back) == []
    units = groups["SYNTAX total"].units
    assert units["SYNTAX"] == "{points}" and units["CINES-USED"] == "{cines}"
    g = check_sr(pydicom.dcmread(paths[0]))
    assert g["SYNTAX total"]["SYNTAX"] == pytest.approx(res.summary["syntax_total"], abs=0.01)
    c = res.summary["cines"]
    assert c["left"] + c["right"] + c["other"] == len(st.cines) and c["not_used"] == 0
    # every analysed instance is referenced as evidence
    evidence = {str(i.ReferencedSOPInstanceUID) for s in sr.CurrentRequestedProcedureEvidenceSequence
                for se in s.ReferencedSeriesSequence for i in se.ReferencedSOPSequence}
    used = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
    assert evidence == used
    assert {m.name for m in res.models} == set(MODELS) and all(m.provenance for m in res.models)
    text = " ".join(sr_texts(sr))
    assert "syntax-left-fold" in text and "phantom" in text.lower()
    assert res.summary["seconds"]["cpu"] > 0


def test_unusable_input_is_a_clear_input_error(tmp_path, bundled_models) -> None:
    ctx = PipelineContext(options={}, models=bundled_models, work_dir=tmp_path)
    ct = write_ct_series(np.zeros((3, 16, 16), np.int16), (3.0, 1.0, 1.0), tmp_path / "ct", new_study(seed=3), seed=3)
    with pytest.raises(PipelineInputError, match=r"no XA series in the study \(it has: CT"):
        SyntaxPipeline().run(StudyView.from_files(ct), ctx)
    single = [write_xa_cine(np.full((1, 32, 32), 100, np.uint8), tmp_path / "xa1.dcm", new_study(seed=4), seed=4)]
    with pytest.raises(PipelineInputError, match="no usable XA cine among 1 instance.*1 frame"):
        SyntaxPipeline().run(StudyView.from_files(single), ctx)


def test_a_study_with_no_coronary_cine_is_not_assessable(tmp_path, bundled_models) -> None:
    """Every cine routed as neither left nor right (forced here by the routing thresholds; in practice a
    ventriculogram or aortogram only): the job succeeds with an SR and summary image that say why and
    report no score, instead of failing."""
    files, _ = xa_study(tmp_path / "xa", seed=5, jpeg_every=0)
    res = SyntaxPipeline().run(StudyView.from_files(files), PipelineContext(
        options={"left_max": 0.0, "right_min": 1.0}, models=bundled_models, work_dir=tmp_path))
    assert [i["code"] for i in res.summary["not_assessable"]] == ["NO-CORONARY"]
    assert (res.summary["syntax_total"], res.summary["syntax_left"], res.summary["syntax_right"]) == (None, None, None)
    sr, sc = res.datasets
    text = " ".join(sr_texts(sr))
    assert "recognised as a left or right coronary injection" in text
    assert not [g for g in sr_numbers(sr).values() if any(isinstance(v, float) for v in g.values())]
    for i, ds in enumerate((sr, sc)):
        ds.save_as(tmp_path / f"out{i}.dcm", enforce_file_format=True)
        assert dciodvfy_errors(tmp_path / f"out{i}.dcm") == []


def test_side_scores_decide_high_only_when_possible() -> None:
    scores = combine({0: (30.0, 0.0)}, None)
    both = side_scores(scores, {"left": 2, "right": 1}, 0, 22.0)
    assert (both.total, both.high, both.issues) == (30.0, True, ())
    no_right = side_scores(scores, {"left": 2, "right": 0}, 1, 22.0)
    assert (no_right.total, no_right.left, no_right.right, no_right.high) == (None, 30.0, None, True)
    assert [i.scope for i in no_right.issues] == ["SYNTAX right coronary", "SYNTAX total"]
    assert "1 cine(s) excluded" in no_right.issues[0].message
    low = side_scores(combine({0: (10.0, 0.0)}, None), {"left": 2, "right": 0}, 0, 22.0)
    assert low.high is None  # 10 alone: the total may or may not exceed 22


def test_study_without_right_cines_is_partly_not_assessed(tmp_path, bundled_models) -> None:
    """No right coronary cine in the study: right and total are 'not assessable' with the reason in
    the SR (coded) and on the summary image, never a 0 score."""
    st = make_study(4713, 96, n_right=0, n_other=0)
    ident = new_study(seed=4713)
    files = [write_xa_cine(c.frames, tmp_path / f"{n:02d}.dcm", ident, series_number=n + 1, seed=4713)
             for n, c in enumerate(st.cines)]
    res = SyntaxPipeline().run(StudyView.from_files(files), PipelineContext(options={}, models=bundled_models,
                                                                            work_dir=tmp_path))
    assert res.summary["cines"]["right"] == 0 and res.summary["cines"]["left"] == len(files)
    assert res.summary["syntax_total"] is None and res.summary["syntax_right"] is None
    assert res.summary["syntax_left"] is not None and res.summary["raw"]["right"] is None
    assert [i["code"] for i in res.summary["not_assessable"]] == ["NO-CINE", "SIDE-MISSING"]
    sr, sc = res.datasets
    for i, ds in enumerate(res.datasets):
        ds.save_as(tmp_path / f"out{i}.dcm", enforce_file_format=True)
        assert dciodvfy_errors(tmp_path / f"out{i}.dcm") == []
    hd.sr.srread(tmp_path / "out0.dcm")
    g = sr_content_groups(sr)
    assert "SYNTAX-R" not in g["SYNTAX right coronary"].numbers and "SYNTAX" not in g["SYNTAX total"].numbers
    assert g["SYNTAX right coronary"].coded["ASSESSABILITY"] == "NOT-ASSESSABLE"
    assert g["SYNTAX right coronary"].coded["NA-REASON"] == "NO-CINE"
    assert g["SYNTAX total"].coded["NA-REASON"] == "SIDE-MISSING"
    assert g["SYNTAX right coronary"].numbers["CINES-USED"] == 0
    left = g["SYNTAX left coronary"].numbers["SYNTAX-L"]
    assert left == pytest.approx(res.summary["syntax_left"], abs=0.01)
    assert g["SYNTAX total"].coded.get("SYNTAX-HIGH") == ("373066001" if left > 22 else None)
    assert "partly not assessable" in sr.SeriesDescription
    assert "Right coronary: not assessed (0 cines)" in sc.ImageComments
    assert "right 0.0" not in sc.ImageComments and "right not assessed" in sc.ImageComments  # raw line too
    assert not [t for t in sr_texts(sr) if "right 0.00" in t]
    assert ("NOT ASSESSABLE - SYNTAX right coronary not assessable: no cine of the right coronary system"
            in sc.ImageComments)
