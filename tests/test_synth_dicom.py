"""The synthetic study writer produces standard-conformant files the pipelines can read (or, with
``sparse``, files that lack the Type 2 attributes real archives often lack)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from synth.dicom import new_study, write_ct_series, write_enhanced_ct, write_mr_series, write_xa_cine
from tests.support.peers import dciodvfy_errors

TYPE2 = ("AccessionNumber", "StudyID", "PatientBirthDate", "PatientSex", "ReferringPhysicianName")


def test_ct_series_geometry_and_values(tmp_path: Path) -> None:
    study = new_study(seed=7)
    hu = np.arange(3 * 8 * 8, dtype=np.int16).reshape(3, 8, 8) - 1000
    paths = write_ct_series(hu, (2.5, 0.5, 0.6), tmp_path, study, origin_xyz=(10, 20, 30), seed=7)
    assert len(paths) == 3
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        assert ds.StudyInstanceUID == study.study_instance_uid
        assert [float(v) for v in ds.ImagePositionPatient] == [10, 20, 30 + 2.5 * k]
        assert [float(v) for v in ds.PixelSpacing] == [0.5, 0.6]
        np.testing.assert_array_equal(ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept), hu[k])
    assert dciodvfy_errors(paths[0]) == []


def test_ct_series_without_images_in_acquisition_with_tags_named_by_uid(tmp_path: Path) -> None:
    """What node tests need of the one CT writer: a scanner that omits ImagesInAcquisition, a wrong count
    set through ``tags`` (written last), files named by SOP Instance UID."""
    hu = np.zeros((3, 4, 4), dtype=np.int16)
    plain = write_ct_series(hu, (1, 1, 1), tmp_path / "plain", new_study())
    assert [p.name for p in plain] == ["CT001_0001.dcm", "CT001_0002.dcm", "CT001_0003.dcm"]
    assert pydicom.dcmread(plain[0]).ImagesInAcquisition == 3
    bare = write_ct_series(hu, (1, 1, 1), tmp_path / "bare", new_study(), images_in_acquisition=False,
                           file_names="uid")
    for path in bare:
        ds = pydicom.dcmread(path)
        assert "ImagesInAcquisition" not in ds and path.name == f"{ds.SOPInstanceUID}.dcm"
    tagged = write_ct_series(hu, (1, 1, 1), tmp_path / "tagged", new_study(), tags={"ImagesInAcquisition": 2,
                                                                                       "RescaleIntercept": "-5"})
    ds = pydicom.dcmread(tagged[2])
    assert (ds.ImagesInAcquisition, float(ds.RescaleIntercept)) == (2, -5.0)
    with pytest.raises(ValueError, match="outside the int16 range"):
        write_ct_series(np.full((2, 2, 2), 40000), (1, 1, 1), tmp_path / "bad", new_study())


def test_seeded_uids_are_reproducible(tmp_path: Path) -> None:
    a = write_ct_series(np.zeros((1, 4, 4)), (1, 1, 1), tmp_path / "a", new_study(seed=3), seed=3)
    b = write_ct_series(np.zeros((1, 4, 4)), (1, 1, 1), tmp_path / "b", new_study(seed=3), seed=3)
    assert pydicom.dcmread(a[0]).SOPInstanceUID == pydicom.dcmread(b[0]).SOPInstanceUID


def test_mr_series_is_valid(tmp_path: Path) -> None:
    paths = write_mr_series(np.full((2, 16, 16), 300), (8, 1.25, 1.25), tmp_path, new_study(),
                            series_description="LGE PSIR", protocol_name="LGE", sequence_name="tfl2d1")
    ds = pydicom.dcmread(paths[1])
    assert (ds.Modality, ds.SeriesDescription, ds.ProtocolName) == ("MR", "LGE PSIR", "LGE")
    assert dciodvfy_errors(paths[0]) == []


@pytest.mark.parametrize("jpeg", [False, True])
def test_xa_cine_roundtrip(tmp_path: Path, jpeg: bool) -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(6, 32, 32), dtype=np.uint8)
    path = write_xa_cine(frames, tmp_path / "xa.dcm", new_study(), jpeg=jpeg)
    ds = pydicom.dcmread(path)
    assert int(ds.NumberOfFrames) == 6
    decoded = ds.pixel_array
    assert decoded.shape == (6, 32, 32)
    if jpeg:
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.JPEGBaseline8Bit
        assert np.abs(decoded.astype(int) - frames).mean() < 8  # lossy, but close
    else:
        np.testing.assert_array_equal(decoded, frames)
    assert dciodvfy_errors(path) == []


def test_enhanced_ct_is_valid_and_frames_follow_frame_order(tmp_path: Path) -> None:
    study = new_study(seed=11)
    hu = np.arange(4 * 8 * 8, dtype=np.int16).reshape(4, 8, 8) - 1000
    order = [2, 0, 3, 1]
    path = write_enhanced_ct(hu, (2.0, 0.5, 0.6), tmp_path / "enh.dcm", study, origin_xyz=(10, 20, 30),
                             frame_order=order, rescale_intercept=-1024, unsigned=True, seed=11)
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == pydicom.uid.EnhancedCTImageStorage and int(ds.NumberOfFrames) == 4
    assert ds.PixelRepresentation == 0 and ds.FrameOfReferenceUID == study.frame_of_reference_uid
    shared = ds.SharedFunctionalGroupsSequence[0]
    pvt = shared.PixelValueTransformationSequence[0]
    assert (float(pvt.RescaleSlope), float(pvt.RescaleIntercept)) == (1.0, -1024.0)
    assert [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing] == [0.5, 0.6]
    frames = ds.PerFrameFunctionalGroupsSequence
    assert [float(f.PlanePositionSequence[0].ImagePositionPatient[2]) for f in frames] == [30 + 2.0 * k for k in order]
    assert [int(f.FrameContentSequence[0].InStackPositionNumber) for f in frames] == [k + 1 for k in order]
    np.testing.assert_array_equal(ds.pixel_array.astype(int) - 1024, hu[order])
    assert dciodvfy_errors(path) == []
    again = write_enhanced_ct(hu, (2.0, 0.5, 0.6), tmp_path / "again.dcm", new_study(seed=11), seed=11)
    assert pydicom.dcmread(again).SOPInstanceUID == ds.SOPInstanceUID


def test_sparse_study_omits_type2_attributes(tmp_path: Path) -> None:
    full = pydicom.dcmread(write_ct_series(np.zeros((1, 4, 4)), (1, 1, 1), tmp_path / "f", new_study(seed=5))[0])
    for keyword in TYPE2:
        assert keyword in full, keyword
    assert full.AccessionNumber != "" and full.ReferringPhysicianName == ""  # present-but-empty stays present
    sparse = new_study(seed=5, sparse=True, study_id="42")
    assert sparse.accession_number is None and sparse.study_id == "42"
    files = [*write_ct_series(np.zeros((1, 4, 4)), (1, 1, 1), tmp_path / "s", sparse),
             write_enhanced_ct(np.zeros((2, 4, 4)), (1, 1, 1), tmp_path / "e.dcm", sparse),
             write_xa_cine(np.zeros((2, 8, 8), np.uint8), tmp_path / "x.dcm", sparse)]
    for path in files:
        ds = pydicom.dcmread(path)
        assert [k for k in TYPE2 if k in ds] == ["StudyID"], path
        assert ds.StudyID == "42" and ds.PatientID == sparse.patient_id


def test_series_of_one_study_share_the_frame_of_reference(tmp_path: Path) -> None:
    study = new_study()
    lge = write_mr_series(np.ones((2, 8, 8)), (8, 1, 1), tmp_path / "lge", study, series_description="LGE",
                          series_number=1)
    t2 = write_mr_series(np.ones((2, 8, 8)), (8, 1, 1), tmp_path / "t2", study, series_description="T2",
                         series_number=2)
    ct = write_ct_series(np.zeros((1, 4, 4)), (1, 1, 1), tmp_path / "ct", study, series_number=3)
    uids = {str(pydicom.dcmread(p).FrameOfReferenceUID) for p in (*lge, *t2, *ct)}
    assert uids == {study.frame_of_reference_uid}
    other = write_mr_series(np.ones((1, 8, 8)), (8, 1, 1), tmp_path / "o", study, series_description="moved",
                            frame_of_reference_uid="1.2.3.4")
    assert pydicom.dcmread(other[0]).FrameOfReferenceUID == "1.2.3.4"
    assert new_study(seed=1).frame_of_reference_uid == new_study(seed=1).frame_of_reference_uid
    assert new_study(seed=1).frame_of_reference_uid != new_study(seed=2).frame_of_reference_uid
    assert new_study().frame_of_reference_uid != study.frame_of_reference_uid


def test_shuffled_oblique_scanner_encoded_ct_is_valid(tmp_path: Path) -> None:
    c, s = np.cos(0.5), np.sin(0.5)
    hu = 2.0 * np.arange(3 * 8 * 8).reshape(3, 8, 8) - 1000  # even: exact with slope 2
    paths = write_ct_series(hu, (3, 0.5, 0.5), tmp_path, new_study(), row_dir=(c, s, 0), col_dir=(0, 0, -1),
                            order=[2, 0, 1], rescale_slope=2, rescale_intercept=-2048, unsigned=True)
    normal = np.cross((c, s, 0), (0, 0, -1))
    for i, k in enumerate([2, 0, 1]):
        ds = pydicom.dcmread(paths[i])
        assert ds.InstanceNumber == i + 1 and ds.PixelRepresentation == 0
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], k * 3 * normal, atol=1e-9)
        np.testing.assert_allclose(ds.pixel_array * 2.0 - 2048, hu[k])
    assert dciodvfy_errors(paths[0]) == []
    with pytest.raises(ValueError, match="permutation"):
        write_ct_series(hu, (3, 1, 1), tmp_path / "bad", new_study(), order=[0, 0, 1])
    with pytest.raises(ValueError, match="uint16 range"):
        write_ct_series(hu, (3, 1, 1), tmp_path / "bad", new_study(), unsigned=True)  # negative stored values


def test_xa_cine_12_bit(tmp_path: Path) -> None:
    frames = np.random.default_rng(1).integers(0, 4096, size=(3, 16, 16)).astype(np.uint16)
    path = write_xa_cine(frames, tmp_path / "xa.dcm", new_study())
    ds = pydicom.dcmread(path)
    assert (ds.BitsAllocated, ds.BitsStored) == (16, 12)
    np.testing.assert_array_equal(ds.pixel_array, frames)
    assert dciodvfy_errors(path) == []
    with pytest.raises(ValueError, match="0..4095"):
        write_xa_cine(frames + 4096, tmp_path / "bad.dcm", new_study())
