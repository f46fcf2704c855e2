"""MyoPS abstains outside its model's ranges (pipelines.qc): one test per issue code, phantom CMR
studies written by training.myops.phantom / synth.dicom through the real pipeline and the bundled
ONNX model.  The SR and summary image say "not assessable" with the reason; no volume or burden and
no SEG; the run still returns a result."""
from __future__ import annotations

from pathlib import Path

import pydicom

from pipelines.base import PipelineContext, StudyView
from pipelines.myops.pipeline import MyopsPipeline
from pipelines.runtime import ModelStore
from synth.dicom import new_study
from tests.support.abstention import by_modality, numbers, reasons, save_checked
from training.myops.phantom import PhantomSpec, make_phantom, write_dicom_study

SEED = 7003


def _write(out: Path, spec: PhantomSpec = PhantomSpec(), **kw):
    return write_dicom_study(make_phantom(SEED, spec, with_scar=True), out, seed=SEED, study=new_study(seed=SEED), **kw)


def _run(files, models: ModelStore):
    return MyopsPipeline().run(StudyView.from_files(files), PipelineContext(options={}, models=models,
                                                                            work_dir=Path(files[0]).parent))


def _edit(files, description: str, **attrs):
    for f in files:
        ds = pydicom.dcmread(f)
        if ds.SeriesDescription == description:
            for k, v in attrs.items():
                setattr(ds, k, v)
            ds.save_as(f)


def _not_assessable(result, tmp: Path, *codes: str) -> dict[str, str]:
    mods = by_modality(result.datasets)
    assert "SEG" not in mods, "no SEG for a result that is not assessable"
    sr = save_checked(mods["SR"], tmp / "sr.dcm")
    why = reasons(sr)
    assert set(codes) <= set(why), why
    assert numbers(sr) == [] and "NOT ASSESSABLE" in str(sr.SeriesDescription)
    sc = next(d for d in result.datasets if d.Modality != "SR")
    save_checked(sc, tmp / "sc.dcm")
    assert "NOT ASSESSABLE" in sc.ImageComments.splitlines()[0]
    assert all(why[c][:40] in sc.ImageComments for c in codes)
    assert "% of myocardium" not in sc.ImageComments
    assert result.summary["scar_burden_pct"] is None and result.summary["myocardium_ml"] is None
    return why


def test_missing_sequence(tmp_path, bundled_models):
    files = _write(tmp_path / "mr", sequences=("bssfp", "lge"))
    why = _not_assessable(_run(files, bundled_models), tmp_path, "IN-SEQUENCE")
    assert "t2 missing" in why["IN-SEQUENCE"] and "bssfp, lge" in why["IN-SEQUENCE"]


def test_pixel_spacing_outside(tmp_path, bundled_models):
    files = _write(tmp_path / "mr")
    _edit(files, "SAX T2 STIR", PixelSpacing=["2.4", "2.4"])
    why = _not_assessable(_run(files, bundled_models), tmp_path, "IN-SPACING")
    assert "2.4 mm" in why["IN-SPACING"] and "0.8-2 mm" in why["IN-SPACING"]


def test_slice_thickness_outside(tmp_path, bundled_models):
    files = _write(tmp_path / "mr")
    _edit(files, "SAX LGE PSIR", SliceThickness="16")
    why = _not_assessable(_run(files, bundled_models), tmp_path, "IN-THICKNESS")
    assert "16 mm" in why["IN-THICKNESS"] and "6-14 mm" in why["IN-THICKNESS"]


def test_noisy_study_gives_unusual_output(tmp_path, bundled_models):
    """Five times the widest training noise (generator 2.1 draws 2-6 %): inside every input range, but
    the model is unsure of more of what it paints than on any calibration phantom (myops-unet 0.2.0:
    fraction 0.050 vs at most 0.03; at noise 0.15 it stays confident)."""
    files = _write(tmp_path / "mr", PhantomSpec(noise=0.3))
    why = _not_assessable(_run(files, bundled_models), tmp_path, "OUT-LOWCONF")
    assert "fraction of low-confidence foreground" in why["OUT-LOWCONF"]


def test_very_noisy_study_gives_implausible_myocardium(tmp_path, bundled_models):
    # myops-unet 0.2.0 finds no myocardium at all in this noise (0 mL)
    files = _write(tmp_path / "mr", PhantomSpec(noise=0.6))
    why = _not_assessable(_run(files, bundled_models), tmp_path, "OUT-VOLUME")
    assert "myocardial volume" in why["OUT-VOLUME"] and "mL" in why["OUT-VOLUME"]


def test_in_range_study_is_measured(tmp_path, bundled_models):
    res = _run(_write(tmp_path / "mr"), bundled_models)
    assert res.summary["not_assessable"] == [] and res.summary["scar_burden_pct"] > 0
    assert {d.Modality for d in res.datasets} >= {"SEG", "SR"}
