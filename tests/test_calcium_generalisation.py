"""Calcium only counts inside the heart: an evaluation-family study (bench.phantoms.ct, a generator the
model never saw) without calcium but with dense ribs, spine, sternum and calcified costal cartilage goes
through the real pipeline with the bundled model and scores 0; and the inference keeps labels only inside
the model's learned heart/aorta region.  Phantom checks, not clinical accuracy."""
from __future__ import annotations

import numpy as np
import pytest

from bench.phantoms.ct import generate, write_dicom
from pipelines.base import PipelineContext, StudyView
from pipelines.calcium.inference import segment_calcium
from pipelines.calcium.pipeline import CalciumPipeline
from pipelines.calcium.preprocess import PreprocessConfig
from pipelines.runtime import ModelStore, bundled_models_dir
from pipelines.runtime.settings import ModelsSection

MODEL = bundled_models_dir() / "calcium-unet2d"


def test_inference_keeps_calcium_inside_the_learned_region_only():
    """A model that calls every dense pixel LAD but whose region logit is positive only in a box: nothing
    outside the box is labelled (before: the region output did not exist and everything counted)."""
    cfg = PreprocessConfig(region_channel=9)
    hu = np.full((4, 128, 128), 700, np.int16)  # dense everywhere, like bone

    def predict(tiles: np.ndarray) -> np.ndarray:
        out = np.full((len(tiles), 10) + tiles.shape[2:], -5.0, np.float32)
        out[:, 3] = 5.0  # LAD everywhere
        out[:, 9, 20:40, 20:40] = 5.0  # region: one box on the 2 mm grid
        return out

    labels = segment_calcium(hu, np.arange(4) * 3.0, (1.0, 1.0), predict, cfg, dilation_px=1)
    assert labels.any()
    ys, xs = np.nonzero(labels.any(axis=0))
    assert ys.min() >= 40 and ys.max() < 80 and xs.min() >= 40 and xs.max() < 80  # 2 mm grid -> 1 mm pixels
    assert set(np.unique(labels)) == {0, 3}
    # a model without a region output still works as before (region_channel 0)
    plain = segment_calcium(hu, np.arange(4) * 3.0, (1.0, 1.0), lambda t: predict(t)[:, :9], PreprocessConfig())
    assert (plain == 3).all()


@pytest.mark.xfail(strict=True, reason="target not met by the bundled model yet (docs/calcium.md, 'What is missing'): "
                   "the bundled 0.1.0 scores this study coronary 7472; the first region-output candidate scored "
                   "149-5955 on calcium-free evaluation-family studies; strict: fails once a model meets it")
def test_calcium_free_eval_study_with_dense_bone_scores_zero(tmp_path):
    """Ribs/spine/sternum of 800-1000 HU and calcified costal cartilage (541 HU), noise 12 HU, no calcium at
    all: coronary 0, category "0", nothing in the SEG.  The 0.1.0 model scored ribs and spine as coronary,
    aortic and valve calcium on such studies."""
    # inside the bundled model's accepted input ranges (1.4 mm pixels, 3 mm slices, 168 mm): scored, not abstained
    study = generate(1, calcium_free=True, matrix=256, slice_mm=3.0, n_slices=56, noise_hu=12.0,
                     bone_hu=(800.0, 1000.0), fov_mm=358.0)
    assert not study.plaques and study.score.total == 0 and study.acquisition["costal_cartilage_hu"]
    assert np.count_nonzero(study.hu[study.bone] >= 400) > 10_000  # dense bone is really there
    files = write_dicom(study, tmp_path / "ct")
    store = ModelStore([bundled_models_dir()], ModelsSection(providers=("cpu",), warmup=False))
    result = CalciumPipeline().run(StudyView.from_files(files), PipelineContext(options={}, models=store,
                                                                                 work_dir=tmp_path))
    s = result.summary
    assert not s.get("not_assessable") and "agatston_coronary" in s, s
    assert s["agatston_coronary"] == 0 and s["risk_category"] == "0", s["per_class"]
    assert s["agatston_total"] == 0, s["per_class"]
    seg = next((d for d in result.datasets if d.Modality == "SEG"), None)
    assert seg is None or int(getattr(seg, "NumberOfFrames", 0)) == 0


def test_widened_training_phantoms_label_no_bone_or_device():
    """Training generator 2: stents, clips, sternal wires, a pacing lead, costal cartilage and a table are
    there and dense, yet background; every calcium label lies inside the heart/aorta region mask."""
    from training.calcium.phantom import Variation, draw_variation, make_phantom

    for seed in range(3):
        v = draw_variation(np.random.default_rng(seed))
        v = Variation(**{**v.__dict__, "stent": 3, "clips": 2, "lead": True, "sternal_wires": True,
                         "costal_hu": 600.0, "table": True})
        ph = make_phantom(seed, shape=(40, 320, 320), spacing=(3.0, 1.0, 1.0), variation=v, noise_hu=10.0,
                          classes=(2, 3, 4, 6, 8))
        assert np.count_nonzero(ph.devices) > 20 and np.median(ph.hu[ph.devices]) >= 600  # dense, even blurred
        assert not ph.labels[ph.devices].any()
        assert ph.labels.any() and not ph.labels[~ph.region].any()
        assert np.count_nonzero((ph.hu >= 400) & ~ph.region) > 1000  # bone outside, unlabelled
