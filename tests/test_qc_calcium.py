"""Calcium abstains outside its model's ranges (pipelines.qc): one test per issue code, each from phantom
CT DICOM written by synth.dicom through the real pipeline and the bundled ONNX model.  The SR and
summary image say "not assessable" with the reason naming the value and the accepted range; no score
is reported and no SEG is written; the run still returns a result."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom
import pytest

from pipelines.base import PipelineContext, StudyView
from pipelines.calcium.pipeline import CalciumPipeline
from pipelines.runtime import ModelStore, bundled_models_dir
from pipelines.runtime.settings import ModelsSection
from synth.dicom import new_study, write_ct_series
from tests.support.calcium import STUDY_PHANTOM
from tests.support.abstention import by_modality, numbers, reasons, save_checked
from tests.support.sr_content import walk
from training.calcium.phantom import make_phantom

MODEL = "calcium-unet2d"


@pytest.fixture(scope="module")
def phantom():
    kw = dict(STUDY_PHANTOM)
    return make_phantom(kw.pop("seed"), **kw)


def _run(files, models_dir: Path | None = None):
    store = ModelStore([models_dir or bundled_models_dir()], ModelsSection(providers=("cpu",), warmup=False))
    return CalciumPipeline().run(StudyView.from_files(files), PipelineContext(options={}, models=store,
                                                                              work_dir=Path(files[0]).parent))


def _write(ph, out: Path, hu=None, spacing=None, **kw):
    return write_ct_series(ph.hu if hu is None else hu, spacing or ph.spacing, out, new_study(seed=4242),
                           origin_xyz=ph.origin_xyz, seed=4242, series_description="Chest CT", **kw)


def _assert_not_assessable(result, tmp: Path, code: str, *words: str) -> str:
    mods = by_modality(result.datasets)
    assert set(mods) == {"SR", "OT"} or set(mods) == {"SR", "SC"} or "SEG" not in mods
    assert "SEG" not in mods, "no SEG for a result that is not assessable"
    sr = save_checked(mods["SR"], tmp / "sr.dcm")
    why = reasons(sr)
    assert code in why, why
    for w in words:
        assert w in why[code], why[code]
    assert numbers(sr) == [], "no number may be reported"
    assert "NOT ASSESSABLE" in str(sr.SeriesDescription)
    sc = next(d for d in result.datasets if d.Modality != "SR")
    save_checked(sc, tmp / "sc.dcm")
    text = str(sc.ImageComments)
    assert "NOT ASSESSABLE" in text.splitlines()[0] and why[code][:40] in text
    assert "Agatston):" not in text and "risk category" not in text.lower()
    assert result.summary["agatston_coronary"] is None and result.summary["risk_category"] is None
    assert code in {i["code"] for i in result.summary["not_assessable"]}
    return why[code]


def test_contrast_enhanced_ct(tmp_path, phantom):
    files = _write(phantom, tmp_path / "ct")
    for f in files:
        ds = pydicom.dcmread(f)
        ds.ContrastBolusAgent = "IOPAMIDOL 370"
        ds.save_as(f)
    why = _assert_not_assessable(_run(files), tmp_path, "IN-CONTRAST", "given", "none")
    assert MODEL in why


def test_pixel_spacing_outside(tmp_path, phantom):
    # 240 x 1.85 mm = 444 mm field of view: only the spacing is out
    files = _write(phantom, tmp_path / "ct", hu=phantom.hu[:, 8:248, 8:248].copy(), spacing=(3.0, 1.85, 1.85))
    result = _run(files)
    _assert_not_assessable(result, tmp_path, "IN-SPACING", "1.85 mm", "0.58-1.8 mm")
    assert [i["code"] for i in result.summary["not_assessable"]] == ["IN-SPACING"]


def test_slice_thickness_outside(tmp_path, phantom):
    files = _write(phantom, tmp_path / "ct", slice_thickness=4.0)
    _assert_not_assessable(_run(files), tmp_path, "IN-THICKNESS", "4 mm", "0.5-3 mm")


def test_tube_voltage_outside(tmp_path, phantom):
    files = _write(phantom, tmp_path / "ct")
    for f in files:
        ds = pydicom.dcmread(f)
        ds.KVP = "100"
        ds.save_as(f)
    _assert_not_assessable(_run(files), tmp_path, "IN-KVP", "100 kV", "120-120 kV")


def test_scan_too_short_for_the_heart(tmp_path, phantom):
    files = _write(phantom, tmp_path / "ct", hu=phantom.hu[8:48])  # 40 slices: 117 mm
    _assert_not_assessable(_run(files), tmp_path, "IN-COVERAGE", "117 mm", "140-220 mm")


def test_field_of_view_outside(tmp_path, phantom):
    files = _write(phantom, tmp_path / "ct", hu=phantom.hu[:, 8:248, 8:248].copy(), spacing=(3.0, 1.2, 1.2))
    _assert_not_assessable(_run(files), tmp_path, "IN-FOV", "288 mm", "300-460 mm")


def test_unusual_output(tmp_path):
    """The model's own output: a model whose manifest accepts less low-confidence foreground than this
    study produces (a retrained model carries its own range) -> not assessable after inference.  The study
    is the test phantom with 25 HU noise: the bundled 0.2.0 is sure of every pixel on the 10 HU one
    (fraction 0), here 0.0025 of its foreground is low-confidence."""
    kw = {**STUDY_PHANTOM, "noise_hu": 25.0}
    phantom = make_phantom(kw.pop("seed"), **kw)
    models = tmp_path / "models"
    shutil.copytree(bundled_models_dir() / MODEL, models / MODEL)
    manifest = json.loads((models / MODEL / "manifest.json").read_text())
    manifest["output_domain"]["low_confidence_fraction"]["max"] = 0.001
    (models / MODEL / "manifest.json").write_text(json.dumps(manifest))
    files = _write(phantom, tmp_path / "ct")
    result = _run(files, models)
    why = _assert_not_assessable(result, tmp_path, "OUT-LOWCONF", "0-0.001")
    assert "fraction of low-confidence foreground" in why


def test_in_range_study_is_scored_and_says_what_was_checked(tmp_path, phantom):
    files = _write(phantom, tmp_path / "ct")
    result = _run(files)
    assert result.summary["not_assessable"] == [] and result.summary["agatston_coronary"] > 0
    assert 0 <= result.summary["low_confidence_fraction"] <= 0.28  # the bundled manifest's accepted maximum
    sr = by_modality(result.datasets)["SR"]
    text = " ".join(str(i.get("TextValue", "")) for i in walk(sr.ContentSequence))
    assert "pixel spacing 1.4 mm: within 0.58-1.8 mm" in text


def test_manifest_bounding_an_unknown_property_is_an_error(tmp_path, phantom):
    models = tmp_path / "models"
    shutil.copytree(bundled_models_dir() / MODEL, models / MODEL)
    manifest = json.loads((models / MODEL / "manifest.json").read_text())
    manifest["input_domain"]["heart_rate_bpm"] = {"max": 70}
    (models / MODEL / "manifest.json").write_text(json.dumps(manifest))
    from pipelines.base import PipelineInputError

    with pytest.raises(PipelineInputError, match="heart_rate_bpm"):
        _run(_write(phantom, tmp_path / "ct"), models)
