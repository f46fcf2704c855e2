"""MyoPS abstains outside its model's ranges (pipelines.qc): one test per issue code, phantom CMR
studies written by training.myops.phantom / training.synth through the real pipeline and the bundled
ONNX model.  The SR and summary image say "not assessable" with the reason; no volume or burden and
no SEG; the run still returns a result."""
from __future__ import annotations

from pathlib import Path

import pydicom

from node.config import ModelsSection
from pipelines.base import PipelineContext, StudyView
from pipelines.myops.pipeline import MyopsPipeline
from pipelines.runtime import ModelStore, bundled_models_dir
from tests.support.abstention import by_modality, numbers, reasons, save_checked
from training.myops.phantom import PhantomSpec, make_phantom, write_dicom_study
from training.synth.dicom import new_study

SEED = 7003


def _write(out: Path, spec: PhantomSpec = PhantomSpec(), **kw):
    return write_dicom_study(make_phantom(SEED, spec, with_scar=True), out, seed=SEED, study=new_study(seed=SEED), **kw)


def _run(files):
    store = ModelStore([bundled_models_dir()], ModelsSection(providers=("cpu",), warmup=False))
    return MyopsPipeline().run(StudyView.from_files(files), PipelineContext(options={}, models=store,
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


def test_missing_sequence(tmp_path):
    files = _write(tmp_path / "mr", sequences=("bssfp", "lge"))
    why = _not_assessable(_run(files), tmp_path, "IN-SEQUENCE")
    assert "t2 missing" in why["IN-SEQUENCE"] and "bssfp, lge" in why["IN-SEQUENCE"]


def test_pixel_spacing_outside(tmp_path):
    files = _write(tmp_path / "mr")
    _edit(files, "SAX T2 STIR", PixelSpacing=["1.4", "1.4"])
    why = _not_assessable(_run(files), tmp_path, "IN-SPACING")
    assert "1.4 mm" in why["IN-SPACING"] and "0.85-1.2 mm" in why["IN-SPACING"]


def test_slice_thickness_outside(tmp_path):
    files = _write(tmp_path / "mr")
    _edit(files, "SAX LGE PSIR", SliceThickness="6")
    why = _not_assessable(_run(files), tmp_path, "IN-THICKNESS")
    assert "6 mm" in why["IN-THICKNESS"] and "8-12 mm" in why["IN-THICKNESS"]


def test_noisy_study_gives_unusual_output(tmp_path):
    """Three times the generator's noise: inside every input range, but the model is unsure of
    more of what it paints than on any calibration phantom."""
    files = _write(tmp_path / "mr", PhantomSpec(noise=0.15))
    why = _not_assessable(_run(files), tmp_path, "OUT-LOWCONF")
    assert "fraction of low-confidence foreground" in why["OUT-LOWCONF"]


def test_very_noisy_study_gives_implausible_myocardium(tmp_path):
    files = _write(tmp_path / "mr", PhantomSpec(noise=0.3))
    why = _not_assessable(_run(files), tmp_path, "OUT-LOWCONF", "OUT-VOLUME")
    assert "myocardial volume" in why["OUT-VOLUME"] and "mL" in why["OUT-VOLUME"]


def test_in_range_study_is_measured(tmp_path):
    res = _run(_write(tmp_path / "mr"))
    assert res.summary["not_assessable"] == [] and res.summary["scar_burden_pct"] > 0
    assert {d.Modality for d in res.datasets} >= {"SEG", "SR"}
