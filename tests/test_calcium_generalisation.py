"""Calcium only counts inside the heart: an evaluation-family study (bench.phantoms.ct, a generator the
model never saw) without calcium but with dense ribs, spine, sternum and calcified costal cartilage goes
through the real pipeline with the bundled model and scores 0; and the inference keeps labels only inside
the model's learned heart/aorta region.  Phantom checks, not clinical accuracy."""
from __future__ import annotations

import numpy as np
import pytest

from bench.phantoms.ct import generate, write_dicom
from pipelines.base import PipelineContext, StudyView
from pipelines.calcium.inference import keep_inside_region, segment_calcium
from pipelines.calcium.pipeline import CalciumPipeline
from pipelines.calcium.preprocess import PreprocessConfig
from pipelines.runtime import ModelStore, bundled_models_dir
from pipelines.runtime.settings import ModelsSection

MODEL = bundled_models_dir() / "calcium-unet2d"


def test_inference_keeps_calcium_inside_the_learned_region_only():
    """A model that calls every pixel LAD but whose region logit is positive only in a box: a plaque inside
    the box counts, a plaque at the box's edge counts whole, a plaque outside does not, and a bone band
    reaching into the box does not count at all (clipping at the edge would have kept its inner end)."""
    cfg = PreprocessConfig(region_channel=9)
    hu = np.full((4, 128, 128), 40, np.int16)
    hu[:, 55:59, 55:59] = 300  # plaque inside the region (1 mm pixels: region = rows/cols 40-79)
    hu[:, 60:64, 76:82] = 300  # plaque on the region's edge, 4 of its 6 columns inside
    hu[:, 100:104, 100:104] = 300  # plaque outside
    hu[:, 44:48, 70:128] = 700  # a rib: 10 of its 58 columns inside the region

    def predict(tiles: np.ndarray) -> np.ndarray:
        out = np.full((len(tiles), 10) + tiles.shape[2:], -5.0, np.float32)
        out[:, 3] = 5.0  # LAD everywhere
        out[:, 9, 20:40, 20:40] = 5.0  # region: one box on the 2 mm grid
        return out

    labels = segment_calcium(hu, np.arange(4) * 3.0, (1.0, 1.0), predict, cfg, dilation_px=1)
    expected = np.zeros_like(labels)
    expected[:, 55:59, 55:59] = 3
    expected[:, 60:64, 76:82] = 3
    np.testing.assert_array_equal(labels, expected)
    # a model without a region output still works as before (region_channel 0): every dense pixel counts
    plain = segment_calcium(hu, np.arange(4) * 3.0, (1.0, 1.0), lambda t: predict(t)[:, :9], PreprocessConfig())
    np.testing.assert_array_equal(plain > 0, hu >= 130)


def test_region_decision_is_made_per_3d_structure():
    """A rib that crosses the region in four of its twelve slices and runs outside it in the others does
    not count, although in those slices its cross-section lies (almost) wholly inside the region; a plaque
    inside the region counts.  An in-plane decision kept the rib's four inner cross-sections."""
    cfg = PreprocessConfig(region_channel=9)
    hu = np.full((12, 128, 128), 40, np.int16)
    for z in range(12):  # a rib sweeping across the image, 10 columns further per slice (overlapping by 2)
        hu[z, 60:64, 10 * z:10 * z + 12] = 700
    hu[3:6, 50:54, 50:54] = 300  # plaque inside the region

    def predict(tiles: np.ndarray) -> np.ndarray:
        out = np.full((len(tiles), 10) + tiles.shape[2:], -5.0, np.float32)
        out[:, 3] = 5.0  # LAD everywhere
        out[:, 9, 20:40, 20:40] = 5.0  # region: rows/cols 40-79 on the 1 mm grid
        return out

    seen: list[tuple[list[int], tuple[int, ...]]] = []
    labels = segment_calcium(hu, np.arange(12) * 3.0, (1.0, 1.0), predict, cfg, dilation_px=1, slab=5,
                             on_logits=lambda idx, logits: seen.append((list(idx), logits.shape)))
    # the diagnostics hook sees every slab's class logits, region output removed
    assert [i for idx, _ in seen for i in idx] == list(range(12)) and all(sh[1] == 9 for _, sh in seen)
    expected = np.zeros_like(labels)
    expected[3:6, 50:54, 50:54] = 3
    np.testing.assert_array_equal(labels, expected)
    # the same slices decided one by one keep the rib where its cross-section is inside the region
    region = np.zeros(hu.shape, bool)
    region[:, 40:80, 40:80] = True
    dense = hu >= 130
    per_slice = np.stack([keep_inside_region(dense[z].astype(np.uint8), dense[z], region[z]) for z in range(12)])
    assert per_slice[4:7, 60:64].any() and not labels[:, 60:64].any()
    with pytest.raises(ValueError, match="shapes differ"):
        keep_inside_region(dense.astype(np.uint8), dense, region[0])


def test_region_decision_with_more_structures_than_a_16_bit_map_holds():
    """A noisy volume can hold more dense structures than an int16 component map counts (32 767): the
    decision then takes int32 and is the same as for few structures."""
    dense = np.zeros((1, 400, 400), bool)
    dense[:, ::2, ::2] = True  # 40 000 single-pixel structures
    labels = dense.astype(np.uint8) * 4
    region = np.zeros_like(dense)
    region[:, :200] = True
    kept = keep_inside_region(labels, dense, region)
    np.testing.assert_array_equal(kept[:, :200], labels[:, :200])
    assert kept[:, :200].any() and not kept[:, 200:].any()


def test_calcium_free_eval_study_with_dense_bone_scores_zero(tmp_path):
    """Ribs/spine/sternum of 800-1000 HU and calcified costal cartilage (541 HU), noise 12 HU, no calcium at
    all: coronary 0, category "0", nothing in the SEG.  The 0.1.0 model scored ribs and spine as coronary,
    aortic and valve calcium on such studies; with an in-plane region decision 0.2.0 scored one false LCX
    lesion (7.8) here, on a structure inside the region in its own slices and mostly outside it in 3D."""
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


def test_widened_training_phantoms_outline_the_great_vessels_with_fat():
    """Generator 2.2: mediastinal fat around both aortas gives the region an image cue above the heart.  The fat
    changes only pixels inside the heart/aorta region, to the fat's HU, and never a label; without it (and in
    the plain anatomy) the vessels are 40 HU in a 40 HU mediastinum."""
    from training.calcium.phantom import Variation, draw_variation, make_phantom

    v = draw_variation(np.random.default_rng(4))
    v = Variation(**{**v.__dict__, "kernel_px": 0.0, "sharpen": 0.0, "periaortic_fat_hu": -100.0})
    kw = dict(shape=(48, 256, 256), spacing=(3.0, 1.4, 1.4), noise_hu=0.0, classes=(6,))
    fat = make_phantom(7, variation=Variation(**{**v.__dict__, "periaortic_fat_mm": 6.0}), **kw)
    none = make_phantom(7, variation=Variation(**{**v.__dict__, "periaortic_fat_mm": 0.0}), **kw)
    changed = fat.hu != none.hu
    assert np.count_nonzero(changed) > 5000  # rings on every slice
    assert np.all(fat.hu[changed] == -100) and np.all(none.hu[changed] == 40)
    assert fat.region[changed].all()
    np.testing.assert_array_equal(fat.labels, none.labels)
    np.testing.assert_array_equal(fat.region, none.region)
