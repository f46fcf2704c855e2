"""The bundled myops model on a study of the independent evaluation family (bench.phantoms.cmr):
another anatomy, contrasts, coil shading, an odd stored-value scale and vendor naming, through the
real pipeline (series identification, preprocessing, ONNX Runtime, SEG / SR).  Phantom figures."""
from __future__ import annotations

import pytest

from bench.phantoms.cmr import EvalSpec, make_study, write_study
from pipelines.base import PipelineContext, StudyView
from pipelines.myops.pipeline import MyopsPipeline
from pipelines.runtime import ModelStore, bundled_models_dir
from pipelines.runtime.settings import ModelsSection
from tests.support.myops import sr_measurements

CPU = ModelsSection(providers=("cpu",), intra_op_threads=1)

#: issue 13 item 3: scar burden within 3 percentage points of the phantom truth.  On this study
#: myops-unet 0.3.0-phantom reports 17.63 % for a truth of 19.49 % (-1.86 pp); 0.2.0 reported 15.14 %
#: (-4.35 pp, the target was a strict xfail then) and 0.1.0 8.71 % (-10.78 pp).  Over 16 studies of
#: the evaluation family 0.3.0 is within 3 pp in 62 % only (docs/myops.md): this one study passing
#: does not meet the issue's target.
TARGET_PP = 3.0
REGRESSION_GUARD_PP = 5.0


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    # 19-20 % scar in every slice, stored values with a vendor RescaleSlope, strong coil shading,
    # GE naming (MDE / Triple IR FSE / FIESTA), a localiser and a 4-chamber cine in the study; 256 rows
    # (FOV 300-400 mm: 1.2-1.6 mm pixels) keep every series inside the model's input_domain (0.8-2 mm)
    spec = EvalSpec(scar_burden=19.5, scar_every_slice=True, intensity="vendor", coil_shading=3.0, matrix=256,
                    slices=8, misregistration_mm=4.0, vendor="ge")
    st = make_study(21, spec)
    root = tmp_path_factory.mktemp("eval_cmr")
    return st, write_study(st, root / "study", extras=True)


def test_eval_family_study_has_what_the_test_claims(study):
    st, _ = study
    assert 19.0 <= st.truth["scar_burden_pct"] <= 20.0
    assert st.series["lge"].slope != 1.0 and st.description["coil"] == 3.0
    per_slice = [(st.label[k] == 3).sum() / max(1, (st.label[k] >= 1).sum() - (st.label[k] >= 4).sum())
                 for k in range(st.label.shape[0]) if ((st.label[k] >= 1) & (st.label[k] <= 3)).any()]
    assert min(per_slice) > 0.05  # scar in every slice with myocardium


def _run(study, tmp_path):
    st, files = study
    models = bundled_models_dir()
    assert models is not None and (models / "myops-unet" / "model.onnx").is_file()
    ctx = PipelineContext(options={}, models=ModelStore([models], CPU), work_dir=tmp_path)
    res = MyopsPipeline().run(StudyView.from_files(files), ctx)
    assert res.summary["matched_slices"] == st.label.shape[0]  # every LGE slice analysed
    return res, st.truth["scar_burden_pct"]


@pytest.fixture(scope="module")
def result(study, tmp_path_factory):
    return _run(study, tmp_path_factory.mktemp("run"))


def test_bundled_model_scar_burden_on_an_eval_family_study_regression_guard(result):
    res, truth = result
    got = res.summary["scar_burden_pct"]
    assert abs(got - truth) <= REGRESSION_GUARD_PP, (got, truth, res.summary)
    # the SR carries the same figure (private code SCAR-FRACTION, % of myocardium)
    values = [v for vs in sr_measurements(res.datasets[1]).values() for v in vs]
    assert any(abs(v - round(got, 2)) < 1e-6 for v in values)


def test_bundled_model_scar_burden_within_3pp_on_an_eval_family_study(result):
    res, truth = result
    assert abs(res.summary["scar_burden_pct"] - truth) <= TARGET_PP, (res.summary["scar_burden_pct"], truth)


def test_shading_correction_and_normalisation_remove_coil_field_and_scale():
    """A body with tissue contrast under a strong coil field (about 4x across) and two stored-value
    scales: after correction the halves agree, and the network input does not depend on the scale."""
    import numpy as np

    from pipelines.myops.preprocess import correct_shading, normalise

    g = 224
    yy, xx = np.mgrid[0:g, 0:g]
    x, y = (xx - 111.5) / 112.0, (yy - 111.5) / 112.0
    img = np.where((x / 0.9) ** 2 + (y / 0.7) ** 2 <= 1.0, 100.0, 2.0)
    img[(x - 0.2) ** 2 + (y + 0.1) ** 2 < 0.02] = 250.0  # a bright blood pool
    img[(x + 0.4) ** 2 + y ** 2 < 0.05] = 10.0  # a lung
    field = np.exp(0.7 * x + 0.3 * y * y)
    shaded = (img * field)[None].astype(np.float32)
    body = ((x / 0.9) ** 2 + (y / 0.7) ** 2 <= 0.8) & (img == 100.0)
    left, right = body & (x < -0.5), body & (x > 0.5)
    before = shaded[0][right].mean() / shaded[0][left].mean()
    fixed = correct_shading(shaded, 2)[0]
    after = fixed[right].mean() / fixed[left].mean()
    assert before > 2.0 and abs(after - 1.0) < 0.1, (before, after)
    assert fixed[(x - 0.2) ** 2 + (y + 0.1) ** 2 < 0.01].mean() > 2.0 * fixed[body].mean()  # contrast kept
    a = normalise(correct_shading(shaded, 2))
    b = normalise(correct_shading(shaded * np.float32(0.0137), 2))
    assert np.abs(a - b).max() < 0.05
