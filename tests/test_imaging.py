"""The shared DICOM -> array layer on small synthetic series written to disk (no mocks)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, RLELossless

from pipelines.base import PipelineInputError, StudyView
from pipelines.imaging import (
    Volume,
    cine_frame_time_ms,
    index_to_patient,
    load_cine,
    load_volume,
    match_series,
    nearest_slice_index,
    patient_to_index,
    resample_like,
    slice_positions,
)
from synth.dicom import new_study, write_ct_series, write_enhanced_ct, write_mr_series, write_xa_cine

RNG = np.random.default_rng(7)


def _hu(n: int = 8, size: int = 32) -> np.ndarray:
    hu = RNG.integers(-1000, 1500, size=(n, size, size)).astype(np.float64)
    hu[:, 0, 0] = np.arange(n) * 10  # a per-slice marker that reveals the order
    return hu


def _study():
    """A sparse phantom study (no AccessionNumber, StudyID, birth date...), as many archives send."""
    return new_study(sparse=True, patient_id="PHANTOM-001")


def _ct(out_dir: Path, hu: np.ndarray, study=None, *, spacing=(2.5, 0.7, 0.7), origin=(-22.0, -22.0, 100.0),
        orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0), order=None, slope: float = 1.0, intercept: float = -1024.0):
    """Scanner-style CT: uint16 stored with intercept -1024, SliceThickness twice the spacing (readers must use
    positions), files shuffled by ``order``."""
    return write_ct_series(hu, spacing, out_dir, study or _study(), origin_xyz=origin, row_dir=orientation[:3],
                           col_dir=orientation[3:], slice_thickness=spacing[0] * 2, order=order,
                           rescale_slope=slope, rescale_intercept=intercept, unsigned=True, series_number=2,
                           series_description="CT calcium score 3.0")


def _series(paths):
    study = StudyView.from_files(paths)
    assert len(study.series) == 1
    return study.series[0]


def test_shuffled_ct_is_sorted_rescaled_and_spaced_from_positions(tmp_path: Path) -> None:
    hu = _hu()
    order = [5, 2, 7, 0, 3, 1, 6, 4]
    paths = _ct(tmp_path, hu, spacing=(1.25, 0.6, 0.7), order=order, slope=2.0, intercept=-2048.0)
    series = _series(paths)
    # the node sorts by InstanceNumber, which here is the shuffled file order
    assert [int(r.instance_number) for r in series] == list(range(1, 9))
    vol = load_volume(series)
    assert vol.array.dtype == np.float32
    assert vol.array.shape == (8, 32, 32)
    np.testing.assert_allclose(vol.array, np.rint((hu + 2048) / 2) * 2 - 2048)  # HU via slope/intercept
    assert vol.array[:, 0, 0].tolist() == [i * 10 for i in range(8)]
    assert vol.spacing == pytest.approx((1.25, 0.6, 0.7))  # SliceThickness (2.5) is not used
    assert vol.origin == pytest.approx((-22.0, -22.0, 100.0))
    np.testing.assert_allclose(vol.direction, np.eye(3))
    assert [float(h.ImagePositionPatient[2]) for h in vol.headers] == pytest.approx([100 + 1.25 * k for k in range(8)])
    assert [r.sop_instance_uid for r in vol.refs] == [str(h.SOPInstanceUID) for h in vol.headers]
    assert "PixelData" not in vol.headers[0]
    assert vol.voxel_volume_mm3 == pytest.approx(1.25 * 0.6 * 0.7)
    assert vol.frame_numbers == [None] * 8 and not vol.is_multiframe


def test_int16_halves_memory_and_keeps_hu(tmp_path: Path) -> None:
    hu = _hu()
    series = _series(_ct(tmp_path, hu))
    vol = load_volume(series, dtype=np.int16)
    assert vol.array.dtype == np.int16
    np.testing.assert_array_equal(vol.array, hu.astype(np.int16))
    raw = load_volume(series, rescale=False, dtype=np.uint16)
    np.testing.assert_array_equal(raw.array, (hu + 1024).astype(np.uint16))


def test_oblique_series_sorted_along_normal(tmp_path: Path) -> None:
    c, s = np.cos(0.5), np.sin(0.5)
    orientation = (c, s, 0.0, 0.0, 0.0, -1.0)  # coronal-ish, rotated: normal is not z
    hu = _hu(5)
    paths = _ct(tmp_path, hu, orientation=orientation, order=[4, 0, 3, 1, 2], spacing=(3.0, 0.5, 0.5))
    vol = load_volume(_series(paths))
    assert vol.array[:, 0, 0].tolist() == [0, 10, 20, 30, 40]
    assert vol.spacing[0] == pytest.approx(3.0, abs=1e-3)
    normal = np.cross(orientation[:3], orientation[3:])
    np.testing.assert_allclose(vol.direction[:, 2], normal, atol=1e-6)
    pos = slice_positions(vol)
    np.testing.assert_allclose(pos, [[float(v) for v in h.ImagePositionPatient] for h in vol.headers], atol=1e-3)
    # index <-> patient round trip, and the position of voxel (k, 0, 0) is slice k's IPP
    np.testing.assert_allclose(index_to_patient(vol, (3, 0, 0)), pos[3], atol=1e-3)
    pts = index_to_patient(vol, np.array([[1.0, 2.0, 3.0], [4.0, 5.5, 0.5]]))
    np.testing.assert_allclose(patient_to_index(vol, pts), [[1, 2, 3], [4, 5.5, 0.5]], atol=1e-6)
    k, dist = nearest_slice_index(vol, pos[2] + 0.4 * normal)
    assert k == 2 and dist == pytest.approx(0.4, abs=1e-3)


def test_mixed_orientation_is_rejected(tmp_path: Path) -> None:
    study = _study()
    paths = _ct(tmp_path / "a", _hu(4), study)
    ds = pydicom.dcmread(paths[2])
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    ds.save_as(paths[2])
    with pytest.raises(PipelineInputError, match="mixed slice orientations"):
        load_volume(_series(paths))


def test_inconsistent_matrix_and_duplicate_positions_are_rejected(tmp_path: Path) -> None:
    study = _study()
    paths = _ct(tmp_path / "a", _hu(4), study)
    ds = pydicom.dcmread(paths[1])
    ds.Rows, ds.Columns = 16, 64
    ds.save_as(paths[1])
    with pytest.raises(PipelineInputError, match="inconsistent Rows/Columns"):
        load_volume(_series(paths))
    paths = _ct(tmp_path / "b", _hu(4), study)
    ds = pydicom.dcmread(paths[3])
    ds.ImagePositionPatient = pydicom.dcmread(paths[0]).ImagePositionPatient
    ds.save_as(paths[3])
    with pytest.raises(PipelineInputError, match="duplicate slice positions"):
        load_volume(_series(paths))


def test_enhanced_ct_multiframe(tmp_path: Path) -> None:
    hu = _hu(6)
    frame_order = [3, 0, 5, 1, 4, 2]
    path = write_enhanced_ct(hu, (2.0, 0.8, 0.8), tmp_path / "enh.dcm", _study(), frame_order=frame_order,
                             origin_xyz=(-22.0, -22.0, 100.0), rescale_intercept=-1024.0, unsigned=True)
    vol = load_volume(_series([path]))
    np.testing.assert_allclose(vol.array, hu)
    assert vol.spacing == pytest.approx((2.0, 0.8, 0.8))
    assert vol.is_multiframe
    assert vol.frame_numbers == [frame_order.index(k) + 1 for k in range(6)]
    assert len(vol.source_datasets) == 1
    # to_source_order gives stored frame order back (frame i holds z index frame_order[i])
    back = vol.to_source_order(vol.array)
    np.testing.assert_allclose(back, hu[frame_order])


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
def test_compressed_ct_is_decoded(tmp_path: Path, syntax: str) -> None:
    hu = _hu(3)
    paths = _ct(tmp_path, hu)
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.compress(syntax)
        ds.save_as(p)
    series = _series(paths)
    assert {r.transfer_syntax_uid for r in series} == {syntax}
    np.testing.assert_allclose(load_volume(series).array, hu)


def test_sitk_round_trip_and_resample(tmp_path: Path) -> None:
    hu = _hu(4)
    vol = load_volume(_series(_ct(tmp_path, hu, spacing=(3.0, 0.5, 0.7))))
    img = vol.to_sitk()
    assert img.GetSize() == (32, 32, 4)
    assert img.GetSpacing() == pytest.approx((0.7, 0.5, 3.0))
    assert img.GetOrigin() == pytest.approx(vol.origin)
    # SimpleITK's own index -> physical mapping agrees with ours
    assert img.TransformIndexToPhysicalPoint((5, 7, 2)) == pytest.approx(tuple(index_to_patient(vol, (2, 7, 5))))
    again = Volume.from_sitk(img, like=vol)
    np.testing.assert_array_equal(again.array, vol.array)
    assert again.spacing == pytest.approx(vol.spacing) and again.headers == vol.headers
    same = resample_like(vol, vol)
    np.testing.assert_allclose(same.array, vol.array, atol=1e-3)


def _xa_frames(dtype, t=5, size=48):
    hi = 255 if dtype == np.uint8 else 4095
    return RNG.integers(0, hi, size=(t, size, size)).astype(dtype)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_load_cine_uncompressed(tmp_path: Path, dtype) -> None:
    frames = _xa_frames(dtype)
    path = write_xa_cine(frames, tmp_path / "xa.dcm", _study(), frame_time_ms=40.0)
    ref = StudyView.from_files([path]).series[0].instances[0]
    cine = load_cine(ref)
    assert cine.dtype == dtype and cine.shape == frames.shape
    np.testing.assert_array_equal(cine, frames)
    assert cine_frame_time_ms(ref.header()) == pytest.approx(40.0)


def test_load_cine_single_frame(tmp_path: Path) -> None:
    frames = _xa_frames(np.uint8, t=1)
    path = write_xa_cine(frames, tmp_path / "xa.dcm", _study())
    cine = load_cine(StudyView.from_files([path]).series[0].instances[0])
    assert cine.shape == (1, 48, 48)


@pytest.mark.skipif(shutil.which("dcmcjpeg") is None, reason="dcmtk dcmcjpeg not installed")
def test_load_cine_jpeg_baseline(tmp_path: Path) -> None:
    yy, xx = np.mgrid[0:64, 0:64]
    frames = np.stack([((xx * 3 + yy * 2 + 10 * t) % 256) for t in range(4)]).astype(np.uint8)
    raw = write_xa_cine(frames, tmp_path / "raw.dcm", _study())
    jpeg = tmp_path / "jpeg.dcm"
    subprocess.run(["dcmcjpeg", "+eb", "+q", "95", str(raw), str(jpeg)], check=True, capture_output=True)
    ref = StudyView.from_files([jpeg]).series[0].instances[0]
    assert ref.transfer_syntax_uid == "1.2.840.10008.1.2.4.50"
    cine = load_cine(ref)
    assert cine.shape == frames.shape and cine.dtype == np.uint8
    assert np.abs(cine.astype(int) - frames.astype(int)).mean() < 4  # lossy, but the same picture


def test_match_series(tmp_path: Path) -> None:
    study = _study()
    vals = RNG.integers(0, 500, size=(3, 16, 16))
    spacing = (8.0, 1.5, 1.5)
    paths = []
    paths += write_mr_series(vals, spacing, tmp_path / "lge", study, series_number=5,
                             series_description="LGE PSIR SAX", sequence_name="*tfl2d1", protocol_name="LGE PSIR SAX")
    paths += write_mr_series(vals, spacing, tmp_path / "t2", study, series_number=6,
                             series_description="SAX T2w STIR", sequence_name="*tse2d1", protocol_name="SAX T2w STIR")
    paths += write_mr_series(vals, spacing, tmp_path / "ssfp", study, series_number=7, series_description="cine sax",
                             sequence_name="*tfi2d1_12", protocol_name="bSSFP short axis")
    view = StudyView.from_files(paths)
    chosen = match_series(view, {"lge": ["lge", "psir", "delayed"], "t2": [r"t2w?\b", "stir"],
                                 "bssfp": ["ssfp", "tfi", "fiesta", "truefisp"]}, modalities=["MR"])
    assert {k: v.series_number for k, v in chosen.items()} == {"lge": 5, "t2": 6, "bssfp": 7}
    with pytest.raises(PipelineInputError) as err:
        match_series(view, {"lge": ["lge"], "perfusion": ["perf"]})
    msg = str(err.value)
    assert "perfusion" in msg and "LGE PSIR SAX" in msg and "bSSFP short axis" in msg
