"""Patient-space geometry helpers: slice positions, index <-> patient mapping, resampling.

Used for slice correspondence between MR series (bSSFP / LGE / T2w) and for placing results.
Index tuples are (z, y, x) like :class:`Volume.array`; points are (x, y, z) patient mm (LPS).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import numpy.typing as npt

from .volume import Volume

__all__ = ["slice_positions", "index_to_patient", "patient_to_index", "nearest_slice_index", "resample_like"]


def _affine(vol: Volume) -> npt.NDArray[np.float64]:
    """4x4 matrix mapping (x, y, z) *index* (column, row, slice) to patient xyz."""
    dz, dy, dx = vol.spacing
    m = np.eye(4)
    m[:3, :3] = np.asarray(vol.direction, dtype=float) @ np.diag([dx, dy, dz])
    m[:3, 3] = vol.origin
    return m


def slice_positions(vol: Volume) -> npt.NDArray[np.float64]:
    """(n_slices, 3) patient xyz of each slice's first voxel centre (ImagePositionPatient), array order."""
    k = np.arange(vol.array.shape[0], dtype=float)
    normal = np.asarray(vol.direction, dtype=float)[:, 2]
    positions: npt.NDArray[np.float64] = (np.asarray(vol.origin, dtype=float)[None, :]
                                          + k[:, None] * vol.spacing[0] * normal[None, :])
    return positions


def index_to_patient(vol: Volume, zyx: Sequence[float] | np.ndarray) -> npt.NDArray[np.float64]:
    """Patient xyz of (z, y, x) indices; accepts (3,) or (n, 3)."""
    idx = np.atleast_2d(np.asarray(zyx, dtype=float))[:, ::-1]  # -> (x, y, z) index
    hom = np.c_[idx, np.ones(len(idx))]
    out: npt.NDArray[np.float64] = (hom @ _affine(vol).T)[:, :3]
    return out[0] if np.ndim(zyx) == 1 else out


def patient_to_index(vol: Volume, xyz: Sequence[float] | np.ndarray) -> npt.NDArray[np.float64]:
    """Continuous (z, y, x) indices of patient points; accepts (3,) or (n, 3)."""
    pts = np.atleast_2d(np.asarray(xyz, dtype=float))
    hom = np.c_[pts, np.ones(len(pts))]
    idx: npt.NDArray[np.float64] = (hom @ np.linalg.inv(_affine(vol)).T)[:, :3][:, ::-1]
    return idx[0] if np.ndim(xyz) == 1 else idx


def nearest_slice_index(vol: Volume, xyz: Sequence[float]) -> tuple[int, float]:
    """Index of the slice nearest to a patient point, and the distance (mm) along the normal."""
    normal = np.asarray(vol.direction, dtype=float)[:, 2]
    d = (slice_positions(vol) - np.asarray(xyz, dtype=float)[None, :]) @ normal
    i = int(np.argmin(np.abs(d)))
    return i, float(abs(d[i]))


def resample_like(moving: Volume, reference: Volume, *, label: bool = False, default: float = 0.0) -> Volume:
    """Resample ``moving`` onto the grid of ``reference`` using patient coordinates (no registration).

    ``label=True`` uses nearest neighbour (masks); otherwise linear.  The result carries the
    reference's headers, so it can be used to build outputs against the reference series.
    """
    import SimpleITK as sitk

    interp = sitk.sitkNearestNeighbor if label else sitk.sitkLinear
    out = sitk.Resample(moving.to_sitk(), reference.to_sitk(), sitk.Transform(), interp, default)
    arr = sitk.GetArrayFromImage(out).astype(moving.array.dtype, copy=False)
    return reference.with_array(arr)
