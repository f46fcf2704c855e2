"""What the input checks measure on a study: one small function per kind of input (CT, XA cine, MR).

Each returns ``{property: value}`` with the keys of :data:`pipelines.qc.domain.CHECKS`; a value
that the files do not record (a tag missing) is None.  Header reads only, except where the
pipeline already holds the decoded pixels (the volume's geometry, a cine's frame count).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from pydicom.dataset import Dataset

from pipelines.imaging import Volume

__all__ = ["ct_properties", "xa_properties", "mr_properties"]


def _float(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _find(ds: Dataset, keyword: str) -> Any:
    """``keyword`` at the top level or in the first item of a shared / per-frame functional group
    (Enhanced CT / MR keep slice thickness, kVp and contrast there)."""
    if keyword in ds and ds.get(keyword) not in (None, ""):
        return ds.get(keyword)
    for group in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for item in (ds.get(group) or [])[:1]:
            for sub in item:
                if sub.VR == "SQ":
                    for inner in sub.value[:1]:
                        if keyword in inner and inner.get(keyword) not in (None, ""):
                            return inner.get(keyword)
    return None


def _contrast(ds: Dataset) -> str:
    agent = _find(ds, "ContrastBolusAgent")
    if agent in (None, "") or str(agent).strip().upper() in ("NONE", "NO"):
        return "none"
    return "given"


def ct_properties(vol: Volume, modality: str) -> dict[str, Any]:
    """Modality, contrast ("none" / "given" from ContrastBolusAgent), in-plane pixel spacing (both
    axes), slice thickness (tag), kVp (tag), scan length and the smaller in-plane field of view."""
    hdr = vol.headers[0]
    nz, ny, nx = vol.shape
    dz, dy, dx = vol.spacing
    spacing = sorted({round(float(dy), 4), round(float(dx), 4)})
    return {
        "modality": modality.upper(),
        "contrast": _contrast(hdr),
        "pixel_spacing_mm": spacing,
        "slice_thickness_mm": _float(_find(hdr, "SliceThickness")),
        "kvp": _float(_find(hdr, "KVP")),
        "z_coverage_mm": round(float((nz - 1) * dz), 2),
        "field_of_view_mm": round(float(min(ny * dy, nx * dx)), 1),
    }


def xa_properties(header: Dataset, frames: np.ndarray, modality: str) -> dict[str, Any]:
    """Modality, number of frames and matrix (the larger of rows and columns) of one cine."""
    return {
        "modality": modality.upper(),
        "frames": int(frames.shape[0]),
        "matrix": int(max(frames.shape[1], frames.shape[2])),
    }


def mr_properties(volumes: Mapping[str, Volume], found: list[str], modality: str = "MR") -> dict[str, Any]:
    """Modality, the sequences found (names of the pipeline's series rules), and per series the
    in-plane pixel spacing and slice thickness (tag, else the slice spacing)."""
    spacing: list[float] = []
    thickness: list[float] = []
    for vol in volumes.values():
        spacing.extend(sorted({round(float(vol.spacing[1]), 4), round(float(vol.spacing[2]), 4)}))
        t = _float(_find(vol.headers[0], "SliceThickness"))
        thickness.append(round(t if t is not None else float(vol.spacing[0]), 3))
    return {
        "modality": modality.upper(),
        "sequences": list(found),
        "pixel_spacing_mm": spacing,
        "slice_thickness_mm": thickness,
    }
