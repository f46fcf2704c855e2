"""Where a measurement is drawn: a closed outline on one source image (SR SCOORD, TID 1410).

Viewers such as OHIF draw an SR measurement only when its group carries an image region on an
image they display.  For a finding that spans many slices (an artery's calcium, the scar) the
region is drawn on its *key slice* -- the slice where the finding has the most pixels -- as the box
around the finding's pixels there; the numbers of the group are those of the whole finding.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from pydicom.dataset import Dataset

__all__ = ["RegionSpec", "key_slice", "outline_box"]


@dataclasses.dataclass(frozen=True)
class RegionSpec:
    """A closed polyline in image pixel coordinates ``(column, row)`` on ``source`` (DICOM SCOORD
    convention: (0, 0) is the top-left corner of the top-left pixel).  ``frame_number`` (1-based)
    for a multi-frame source."""

    source: Dataset
    points: tuple[tuple[float, float], ...]
    frame_number: int | None = None

    def __post_init__(self) -> None:
        if len(self.points) < 4 or self.points[0] != self.points[-1]:
            raise ValueError("a region needs at least 3 corners and must be closed (first point = last point)")

    def graphic_data(self) -> np.ndarray:
        return np.asarray(self.points, dtype=np.float32)


def key_slice(mask: np.ndarray) -> int | None:
    """Index along axis 0 with the most non-zero pixels (the first of equals); None when empty."""
    counts = np.asarray(mask).reshape(mask.shape[0], -1).astype(bool).sum(axis=1)
    if not counts.any():
        return None
    return int(np.argmax(counts))


def outline_box(mask2d: np.ndarray, source: Dataset, *, frame_number: int | None = None,
                margin_px: float = 2.0) -> RegionSpec:
    """The box around the non-zero pixels of ``mask2d`` (rows, cols), ``margin_px`` wider on every
    side and kept inside the image, as a closed 5-point polyline on ``source``."""
    rows, cols = np.nonzero(mask2d)
    if rows.size == 0:
        raise ValueError("outline_box: empty mask")
    h, w = mask2d.shape
    x0 = max(0.0, float(cols.min()) - margin_px)
    y0 = max(0.0, float(rows.min()) - margin_px)
    x1 = min(float(w), float(cols.max()) + 1.0 + margin_px)
    y1 = min(float(h), float(rows.max()) + 1.0 + margin_px)
    pts = ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0))
    return RegionSpec(source=source, points=pts, frame_number=frame_number)
