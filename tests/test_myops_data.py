"""MyoPS380 reader, splits, label conventions and the shared preprocessing (tiny phantom data)."""
from __future__ import annotations

import numpy as np
import pytest

from pipelines.base import StudyView
from pipelines.imaging import load_volume, match_series
from pipelines.myops import labels as cls
from pipelines.myops.inference import model_input
from pipelines.myops.options import DEFAULT_RULES
from pipelines.myops.preprocess import (
    PreprocessConfig,
    build_grid_stack,
    label_on_grid,
    match_slices,
    register_and_crop,
)
from pipelines.myops.registration import RegistrationConfig, SliceTransform
from training.myops.dataset import DatasetError, MyoPSDataset, split_cases
from training.myops.labels import MYOPS2020, LabelConvention, LabelValueError
from training.myops.phantom import make_phantom, registration_error_mm, write_dicom_study, write_myops_folder
from training.myops.prepare import prepare_case


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(5)


@pytest.fixture(scope="module")
def release(tmp_path_factory, phantom):
    root = tmp_path_factory.mktemp("myops380")
    write_myops_folder([("case0001", make_phantom(1)), ("case0005", phantom)], root)
    return root


def test_reader_reads_release_layout(release, phantom):
    ds = MyoPSDataset(release)
    assert ds.case_ids == ["case0001", "case0005"]
    case = ds.load("case0005")
    assert set(case.volumes) == {"bssfp", "lge", "t2"}
    for seq, vol in case.volumes.items():
        ref = phantom.volumes[seq]
        assert vol.shape == ref.shape
        np.testing.assert_allclose(vol.spacing, ref.spacing, atol=1e-4)
        np.testing.assert_allclose(vol.origin, ref.origin, atol=1e-3)
        np.testing.assert_allclose(vol.direction, ref.direction, atol=1e-5)
        np.testing.assert_array_equal(vol.array, ref.array)
    np.testing.assert_array_equal(case.label.array, phantom.label.array)
    assert set(np.unique(case.label.array)) <= {0, 1, 2, 3, 4, 5}
    assert (case.label.array == cls.SCAR).any()


def test_reader_rejects_other_folders(tmp_path):
    with pytest.raises(DatasetError, match="LGE"):
        (tmp_path / "Raw_data" / "bSSFP").mkdir(parents=True)
        MyoPSDataset(tmp_path)


def test_label_convention_default_and_custom():
    raw = np.array([0, 200, 1220, 2221, 500, 600])
    np.testing.assert_array_equal(MYOPS2020.to_classes(raw), [0, 1, 2, 3, 4, 5])
    with pytest.raises(LabelValueError, match="7"):
        MYOPS2020.to_classes(np.array([0, 7]))
    custom = LabelConvention.from_mapping({"myocardium": 1, "edema": 2, "scar": 3, "lv_pool": None, "rv_pool": None})
    assert custom.num_classes == 4
    np.testing.assert_array_equal(custom.to_classes(np.array([0, 1, 2, 3])), [0, 1, 2, 3])
    with pytest.raises(ValueError, match="blood"):
        LabelConvention.from_mapping({"blood": 1})


def test_splits_every5th_and_seeded():
    ids = [f"case{i:04d}" for i in range(1, 381)]
    train, test = split_cases(ids)
    assert len(test) == 76 and len(train) == 304 and test[0] == "case0005" and not set(train) & set(test)
    a = split_cases(ids, "random", seed=3)
    assert a == split_cases(ids, "random", seed=3)
    assert a != split_cases(ids, "random", seed=4)
    assert len(a[1]) == 76


def test_slice_matching_fewest_slices_reference(phantom):
    vols = phantom.volumes
    m = match_slices(vols)
    counts = {k: v.shape[0] for k, v in vols.items()}
    assert m.reference == min(counts, key=counts.get)
    assert len(m) <= min(counts.values())
    for seq, idx in m.indices.items():
        assert len(set(idx.tolist())) == len(idx)  # one-to-one
        assert np.all(m.distances_mm[seq] <= 0.5 * max(v.spacing[0] for v in vols.values()) + 1e-9)
    # a sequence shifted far away leaves nothing to match
    far = dict(vols)
    far["t2"] = vols["t2"].with_array(vols["t2"].array)
    far["t2"] = type(far["t2"])(**{**far["t2"].__dict__, "origin": tuple(np.asarray(far["t2"].origin)
                                                                      + 500 * vols["t2"].direction[:, 2])})
    with pytest.raises(ValueError, match="no slice"):
        match_slices(far)


def test_grid_stack_shapes_and_intensity_range(phantom):
    st = build_grid_stack(phantom.volumes)
    for img in st.images.values():
        assert img.shape == (st.n, 224, 224) and img.min() >= 0 and img.max() <= 255 and img.max() > 200
    lab = label_on_grid(phantom.label, st)
    assert lab.shape == (st.n, 224, 224) and (lab == cls.MYOCARDIUM).any()


def test_registration_recovers_known_misalignment(phantom):
    """Mean error over the myocardium, all slices of bSSFP and T2w: < 2.0 mm after vs > 3.5 mm before."""
    st = build_grid_stack(phantom.volumes)
    prior = np.isin(label_on_grid(phantom.label, st), (1, 2, 3))
    mi = register_and_crop(st, prior)
    for seq in ("bssfp", "t2"):
        after = registration_error_mm(phantom, st, mi.transforms[seq], seq, prior)
        before = registration_error_mm(phantom, st, [SliceTransform.identity()] * st.n, seq, prior)
        assert before.mean() > 3.5, before
        assert after.mean() < 2.0, (seq, after)


def test_training_and_pipeline_make_the_same_tensor(tmp_path, release, phantom):
    """The same phantom through the NIfTI reader (training) and DICOM files + load_volume (pipeline)."""
    files = write_dicom_study(phantom, tmp_path / "dicom", seed=5)
    study = StudyView.from_files(files)
    chosen = match_series(study, DEFAULT_RULES, modalities=("MR",))
    dicom_vols = {seq: load_volume(s) for seq, s in chosen.items()}
    case = MyoPSDataset(release).load("case0005")
    prepared = prepare_case(case)
    cfg = PreprocessConfig()

    def gt_prior(stack):
        return np.isin(label_on_grid(case.label, stack), (1, 2, 3))

    # every step except registration is exactly the same computation
    no_reg = PreprocessConfig(registration=RegistrationConfig(enabled=False))
    _, plain = model_input(dicom_vols, no_reg, gt_prior)
    np.testing.assert_allclose(plain.tensor, prepare_case(case, no_reg).image, atol=0.2)
    # with registration: the DICOM path rounds positions to 6 digits, which can move an optimum on a
    # poorly constrained (apical/basal) slice; the bulk of the slices must agree to 0.05 mm
    _, mi = model_input(dicom_vols, cfg, gt_prior)
    assert mi.tensor.shape == prepared.image.shape == (prepared.label.shape[0], 3, 128, 128)
    st = build_grid_stack(case.volumes, cfg)
    train_mi = register_and_crop(st, gt_prior(st), cfg)
    assert mi.roi_yx == train_mi.roi_yx
    for seq in ("bssfp", "t2"):
        diffs = [np.abs(a.translation - b.translation).max()
                 for a, b in zip(mi.transforms[seq], train_mi.transforms[seq])]
        assert np.mean(np.asarray(diffs) < 0.05) >= 0.6, diffs
    assert np.abs(mi.tensor - prepared.image).mean() < 3.0
