"""Data readers that refuse or realign damaged data, the COCA CT-frame YOLO export, make-phantoms and the
nnU-Net export, on tiny generated folders."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from training.calcium.coca import CocaDataset, CocaError
from training.calcium.yolo import convert
from training.datasets.marker import MARKER
from training.datasets.nnunet import export_coca, export_myops
from training.datasets.phantoms import make_myops, write_coca_folder
from training.myops.dataset import DatasetError, MyoPSDataset
from training.myops.phantom import make_phantom, write_myops_folder

EXAMS = {"9": "train", "12": "train", "40": "test"}


@pytest.fixture(scope="module")
def coca(tmp_path_factory):
    root = tmp_path_factory.mktemp("coca-data")
    return root, write_coca_folder(root, EXAMS, crop_exam="12")


def _drop_slice(src: Path, dst: Path, exam: str, k: int) -> None:
    """A copy of the folder whose exam CT misses its k-th slice (by position)."""
    import pydicom

    shutil.copytree(src, dst)
    files = sorted((dst / "dicom" / exam).glob("*.dcm"),
                   key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]))
    files[k].unlink()


def test_missing_ct_slice_keeps_labels_on_their_slices(coca, tmp_path):
    """Before: one missing slice shifted every later label by one slice (labels >= 130 HU fell to 65 %)."""
    root, phantoms = coca
    ph = phantoms["9"]
    k = int(np.flatnonzero(ph.labels.reshape(ph.labels.shape[0], -1).any(1))[0]) + 1  # inside the labelled range
    _drop_slice(root, tmp_path / "gap", "9", k)
    cases = {c[0]: c for c in CocaDataset(tmp_path / "gap").cases(exams=["9"])}
    _, hu, labels, zpos, _ = cases["9"]
    keep = [i for i in range(ph.labels.shape[0]) if i != k]
    assert labels.shape[0] == len(keep)
    np.testing.assert_array_equal(labels, ph.labels[keep])
    np.testing.assert_array_equal(hu, ph.hu[keep])
    assert np.all(hu[labels > 0] >= 130)
    assert np.isclose(np.diff(zpos).max(), 2 * ph.spacing[0])  # the gap is kept, not hidden by a median spacing


def test_dicom_dir_and_exam_map(coca, tmp_path):
    """The CTs of the release are a separate download: --dicom-dir, and a CSV map when names differ."""
    root, phantoms = coca
    segs = tmp_path / "segs"
    segs.mkdir()
    shutil.copytree(root / "nrrd", segs / "nrrd")
    shutil.copy(root / "train_test_split.csv", segs / "train_test_split.csv")
    cts = tmp_path / "deidentified_nongated"
    for exam in EXAMS:
        shutil.copytree(root / "dicom" / exam, cts / exam / exam)  # the release nests <id>/<id>/*.dcm
    ds = CocaDataset(segs, dicom_dir=cts)
    _, _, labels, _, _ = next(iter(ds.cases(exams=["12"])))
    np.testing.assert_array_equal(labels, phantoms["12"].labels)
    shutil.move(str(cts / "40"), str(cts / "exam-forty"))
    with pytest.raises(CocaError, match=r"exam 40: no CT files in .*deidentified_nongated/40 .*--dicom-dir"):
        CocaDataset(segs, dicom_dir=cts).ct_series("40")
    (tmp_path / "map.csv").write_text("exam,folder\n40,exam-forty\n")
    assert len(CocaDataset(segs, dicom_dir=cts, exam_map=tmp_path / "map.csv").ct_series("40")) == 20


def _hand_boxes(ph):
    rows, cols = ph.labels.shape[1:]
    out = {}
    for p in ph.plaques:
        z0, z1, y0, y1, x0, x1 = p.index_box
        for z in range(z0, z1):
            out.setdefault(z, []).append(f"0 {(x0 + x1) / 2 / cols:.6f} {(y0 + y1) / 2 / rows:.6f} "
                                         f"{(x1 - x0) / cols:.6f} {(y1 - y0) / rows:.6f}")
    return out


def test_coca_to_yolo_in_the_ct_frame_with_images_and_dataset_yaml(coca, tmp_path):
    """Before: a cropped NRRD gave files numbered in its own frame, boxes normalised by the crop, no images."""
    import yaml
    from PIL import Image

    root, phantoms = coca
    rep = convert(root, tmp_path / "y")
    assert rep.exams == {"train": 2, "test": 1} and rep.images == rep.files == 60
    ph = phantoms["12"]  # the cropped NRRD
    expected = _hand_boxes(ph)
    lab = tmp_path / "y" / "train" / "labels"
    assert len(list(lab.glob("12_*.txt"))) == ph.labels.shape[0] == 20
    for z in range(ph.labels.shape[0]):
        assert sorted((lab / f"12_{z + 1}.txt").read_text().splitlines()) == sorted(expected.get(z, []))
    img = Image.open(tmp_path / "y" / "train" / "images" / "12_1.png")
    assert img.size == (64, 64) and img.mode == "L"
    assert len(list((tmp_path / "y" / "val" / "images").glob("40_*.png"))) == 20
    meta = yaml.safe_load((tmp_path / "y" / "dataset.yaml").read_text())
    assert meta["train"] == "train/images" and meta["val"] == "val/images" and meta["names"] == {0: "calcium"}
    assert (tmp_path / "y" / MARKER).is_file()  # derived from phantoms: still marked as generated
    # --labels-only keeps the published script's output (NRRD frame, no images)
    rep = convert(root, tmp_path / "p", labels_only=True)
    assert rep.images == 0 and len(list((tmp_path / "p" / "train_labels").glob("12_*.txt"))) < 20


@pytest.fixture(scope="module")
def myops_raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("myops-raw")
    write_myops_folder([(f"case000{i}", make_phantom(40 + i)) for i in (1, 2, 3)], root)
    return root


def test_myops_incomplete_cases_are_refused_before_any_work(myops_raw, tmp_path):
    """Before: a case without a modality file was silently dropped, a missing label failed mid-training."""
    ds = MyoPSDataset(myops_raw)
    assert ds.case_ids == ["case0001", "case0002", "case0003"]
    broken = tmp_path / "no-lge"
    shutil.copytree(myops_raw, broken)
    (broken / "Raw_data" / "LGE" / "case0002.nii.gz").unlink()
    with pytest.raises(DatasetError,
                       match=r"case0002: missing .*LGE/case0002\.nii\.gz \(the case has bSSFP, T2w, label\)"):
        MyoPSDataset(broken)
    broken = tmp_path / "no-label"
    shutil.copytree(myops_raw, broken)
    (broken / "Raw_data" / "label" / "case0003_gt.nii.gz").unlink()
    with pytest.raises(DatasetError, match=r"case0003: missing .*label/case0003_gt\.nii\.gz"):
        MyoPSDataset(broken)


def test_myops_wrong_label_values_name_case_and_file(myops_raw, tmp_path):
    broken = tmp_path / "labels"
    shutil.copytree(myops_raw, broken)
    path = broken / "Raw_data" / "label" / "case0002_gt.nii.gz"
    img = nib.load(str(path))
    data = np.asarray(img.dataobj).copy()
    data[data == 2221] = 3  # another convention's scar value
    nib.save(nib.Nifti1Image(data, img.affine), str(path))
    ds = MyoPSDataset(broken)
    with pytest.raises(DatasetError,
                       match=r"case0002: .*case0002_gt\.nii\.gz: label values \[3\] not in the convention"):
        ds.check()


def test_myops_prealigned_release_and_nnunet_export(tmp_path):
    """The pre-aligned 128x128 layout is read without matching/registration (--prealigned), and exported for
    nnU-Net with aligned channels and labels."""
    from training.myops.prepare import prepare_prealigned

    root = tmp_path / "pre"
    make_myops(root, cases=2, prealigned=True)
    assert (root / MARKER).is_file()
    ds = MyoPSDataset(root, prealigned=True)
    ds.check()
    pc = prepare_prealigned(ds.load("case0001"))
    assert pc.image.shape[1:] == (3, 128, 128) and pc.label.shape == (pc.image.shape[0], 128, 128)
    assert set(np.unique(pc.label)) >= {0, 1, 3} and 0 <= pc.image.min() and pc.image.max() <= 255
    out = export_myops(root, tmp_path / "nnunet", prealigned=True, split="random")
    info = json.loads((out / "dataset.json").read_text())
    assert info["channel_names"] == {"0": "bssfp", "1": "lge", "2": "t2"} and info["labels"]["scar"] == 3
    assert info["numTraining"] == 1 and info["generated"] is True
    case = next((out / "labelsTr").glob("*.nii.gz")).name.removesuffix(".nii.gz")
    lab = nib.load(str(out / "labelsTr" / f"{case}.nii.gz"))
    for c in range(3):
        assert nib.load(str(out / "imagesTr" / f"{case}_{c:04d}.nii.gz")).shape == lab.shape
    assert len(list((out / "imagesTs").glob("*_0000.nii.gz"))) == 1


def test_coca_nnunet_export(coca, tmp_path):
    root, phantoms = coca
    out = export_coca(root, tmp_path / "nnunet")
    info = json.loads((out / "dataset.json").read_text())
    assert info["numTraining"] == 2 and info["labels"]["Right Coronary"] == 8 and info["file_ending"] == ".nii.gz"
    lab = np.asarray(nib.load(str(out / "labelsTr" / "coca_12.nii.gz")).dataobj)
    np.testing.assert_array_equal(np.transpose(lab, (2, 1, 0)), phantoms["12"].labels)
    assert nib.load(str(out / "imagesTs" / "coca_40_0000.nii.gz")).shape == (64, 64, 20)
