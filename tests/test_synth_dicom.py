"""The synthetic study writer produces standard-conformant files the pipelines can read."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from training.synth.dicom import new_study, write_ct_series, write_mr_series, write_xa_cine


def _dciodvfy_errors(path: Path) -> list[str]:
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed")
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


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
    assert _dciodvfy_errors(paths[0]) == []


def test_seeded_uids_are_reproducible(tmp_path: Path) -> None:
    a = write_ct_series(np.zeros((1, 4, 4)), (1, 1, 1), tmp_path / "a", new_study(seed=3), seed=3)
    b = write_ct_series(np.zeros((1, 4, 4)), (1, 1, 1), tmp_path / "b", new_study(seed=3), seed=3)
    assert pydicom.dcmread(a[0]).SOPInstanceUID == pydicom.dcmread(b[0]).SOPInstanceUID


def test_mr_series_is_valid(tmp_path: Path) -> None:
    paths = write_mr_series(np.full((2, 16, 16), 300), (8, 1.25, 1.25), tmp_path, new_study(),
                            series_description="LGE PSIR", protocol_name="LGE", sequence_name="tfl2d1")
    ds = pydicom.dcmread(paths[1])
    assert (ds.Modality, ds.SeriesDescription, ds.ProtocolName) == ("MR", "LGE PSIR", "LGE")
    assert _dciodvfy_errors(paths[0]) == []


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
    assert _dciodvfy_errors(path) == []
