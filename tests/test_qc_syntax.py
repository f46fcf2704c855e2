"""SYNTAX abstains outside its models' ranges (pipelines.qc): one test per issue code, phantom XA cines
written by synth.dicom through the real pipeline and the bundled ONNX models."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom

from pipelines.base import PipelineContext, StudyView
from pipelines.runtime import ModelStore, bundled_models_dir
from pipelines.runtime.settings import ModelsSection
from pipelines.syntax.pipeline import SyntaxPipeline
from synth.dicom import new_study, write_xa_cine
from tests.support.abstention import by_modality, numbers, reasons, save_checked
from tests.support.sr_content import groups as sr_groups
from tests.support.sr_content import walk
from training.syntax.phantom import make_study


def _study(out: Path, seed: int = 4711, frames=lambda f: f):
    st = make_study(seed, 96)
    ident = new_study(seed=seed)
    return [write_xa_cine(frames(c.frames), out / f"{n:02d}.dcm", ident, series_number=n + 1, seed=seed)
            for n, c in enumerate(st.cines)]


def _run(files, models_dir: Path | None = None, **options):
    store = ModelStore([models_dir or bundled_models_dir()], ModelsSection(providers=("cpu",), warmup=False))
    return SyntaxPipeline().run(StudyView.from_files(files), PipelineContext(options=options, models=store,
                                                                             work_dir=Path(files[0]).parent))


def _whole(result, tmp: Path, code: str, *words: str) -> None:
    sr = save_checked(by_modality(result.datasets)["SR"], tmp / "sr.dcm")
    why = reasons(sr)
    assert code in why, why
    for w in words:
        assert w in why[code], why[code]
    assert numbers(sr) == [] and "NOT ASSESSABLE" in str(sr.SeriesDescription)
    sc = next(d for d in result.datasets if d.Modality != "SR")
    save_checked(sc, tmp / "sc.dcm")
    assert "NOT ASSESSABLE" in sc.ImageComments.splitlines()[0] and why[code][:40] in sc.ImageComments
    assert "SYNTAX score (total):" not in sc.ImageComments
    assert result.summary["syntax_total"] is None and result.summary["syntax_left"] is None
    assert code in {i["code"] for i in result.summary["not_assessable"]}


def test_too_many_frames(tmp_path):
    files = _study(tmp_path / "xa", frames=lambda f: np.concatenate([f, f, f])[:40])
    _whole(_run(files), tmp_path, "IN-FRAMES", "number of frames 40", "14-32")


def test_matrix_outside(tmp_path):
    files = _study(tmp_path / "xa", frames=lambda f: np.pad(f, ((0, 0), (16, 16), (16, 16)), mode="edge"))
    _whole(_run(files), tmp_path, "IN-MATRIX", "128 px", "96-96 px")


def test_modality_outside(tmp_path):
    files = _study(tmp_path / "xa")
    for f in files:
        ds = pydicom.dcmread(f)
        ds.Modality = "RF"
        ds.save_as(f)
    _whole(_run(files, modalities=["XA", "RF"]), tmp_path, "IN-MODALITY", "RF", "XA")


def test_fold_models_disagree(tmp_path):
    """A left ensemble whose manifests accept less spread than this study shows: left and total are
    not assessable (OUT-DISAGREE, SIDE-MISSING), the right score is still reported."""
    models = tmp_path / "models"
    shutil.copytree(bundled_models_dir(), models, ignore=shutil.ignore_patterns("calcium*", "myops*"))
    for k in range(5):
        path = models / f"syntax-left-fold{k}" / "manifest.json"
        m = json.loads(path.read_text())
        m["output_domain"]["fold_spread"]["max"] = 0.0
        path.write_text(json.dumps(m))
    result = _run(_study(tmp_path / "xa"), models)
    assert result.summary["cines"]["left"] and result.summary["cines"]["right"]
    assert result.summary["fold_spread"]["left"] > 0
    sr = save_checked(by_modality(result.datasets)["SR"], tmp_path / "sr.dcm")
    g = sr_groups(sr)
    assert g["SYNTAX left coronary"].coded["NA-REASON"] == "OUT-DISAGREE"
    assert "SYNTAX-L" not in g["SYNTAX left coronary"].numbers and "SYNTAX" not in g["SYNTAX total"].numbers
    assert g["SYNTAX total"].coded["NA-REASON"] == "SIDE-MISSING"
    assert "SYNTAX-R" in g["SYNTAX right coronary"].numbers
    why = reasons(sr)["OUT-DISAGREE"]
    assert "disagreement between the ensemble members" in why and "0-0 points" in why
    sc = next(d for d in result.datasets if d.Modality != "SR")
    assert "SYNTAX left coronary not assessable: disagreement" in sc.ImageComments
    assert "Left coronary: not assessed" in sc.ImageComments and "Raw ensemble: left not assessed" in sc.ImageComments
    assert result.summary["syntax_left"] is None and result.summary["syntax_right"] is not None


def test_one_cine_outside_is_left_out_and_named(tmp_path):
    """A cine longer than the router accepts (checked before routing) is not analysed and is named."""
    files = _study(tmp_path / "xa")
    long = write_xa_cine(np.zeros((150, 96, 96), np.uint8) + 80, tmp_path / "xa" / "99.dcm",
                         new_study(seed=4711), series_number=99, seed=4711)
    result = _run(files + [long])
    assert result.summary["cines_outside_domain"] == 1 and result.summary["syntax_total"] is not None
    text = " ".join(str(i.get("TextValue", "")) for i in walk(
        by_modality(result.datasets)["SR"].ContentSequence))
    assert "1 cine(s) outside the models' accepted input ranges not analysed" in text and "number of frames 150" in text
