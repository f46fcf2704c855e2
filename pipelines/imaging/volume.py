"""Sorted, rescaled 3D volumes from a DICOM series (classic single-frame or enhanced multi-frame).

Frames are sorted by their position along the slice normal (ImagePositionPatient . normal), the
z spacing is computed from those positions (SliceThickness is not a spacing), and pixel values are
rescaled (RescaleSlope/Intercept -> HU for CT).  The output array is preallocated and filled one
frame at a time, so peak memory is the array plus one decoded instance.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
import numpy.typing as npt
import pydicom
import pydicom.pixels
from pydicom.dataset import Dataset

from pipelines.base import InstanceRef, PipelineInputError, SeriesView

if TYPE_CHECKING:  # SimpleITK is imported lazily: not every pipeline needs it
    import SimpleITK as sitk

__all__ = ["Volume", "load_volume", "FrameInfo"]

log = logging.getLogger("cardionode.imaging")

#: Tolerance for "same orientation" (direction cosines) and relative spacing uniformity.
ORIENTATION_TOL = 1e-3
SPACING_REL_TOL = 0.05


@dataclasses.dataclass
class Volume:
    """A 3D image in (z, y, x) order with its patient-space geometry.

    ``direction`` columns are the row direction (x index), column direction (y index) and slice
    normal (z index); slices are sorted so that z increases along the normal.  ``headers`` and
    ``refs`` hold one entry per slice in array order (for a multi-frame source the same header and
    ref repeat; ``frame_numbers`` then gives the 1-based frame of each slice, else ``None``).
    """

    array: np.ndarray  # (z, y, x)
    spacing: tuple[float, float, float]  # (z, y, x) mm
    origin: tuple[float, float, float]  # xyz patient position of the first slice's first voxel centre
    direction: npt.NDArray[np.float64]  # 3x3, columns = row dir, col dir, slice normal
    headers: list[Dataset]  # one per slice in array order, header-only
    refs: list[InstanceRef]
    frame_numbers: list[int | None] = dataclasses.field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)

    @property
    def voxel_volume_mm3(self) -> float:
        """Volume of one voxel in mm^3 (z spacing from slice positions)."""
        return float(np.prod(self.spacing))

    @property
    def is_multiframe(self) -> bool:
        return any(f is not None for f in self.frame_numbers)

    @property
    def source_datasets(self) -> list[Dataset]:
        """The distinct source headers (one per instance) in the order SEG building expects."""
        seen: dict[str, Dataset] = {}
        for h in self.headers:
            seen.setdefault(str(h.SOPInstanceUID), h)
        return list(seen.values())

    def to_source_order(self, arr: np.ndarray) -> np.ndarray:
        """Reorder an array aligned with this volume (axis 0 = slices) into source order.

        Single-frame sources: order of :attr:`source_datasets` (which is array order already).
        One multi-frame source: stored frame order (frame 1 first), as highdicom expects.
        """
        if arr.shape[0] != self.array.shape[0]:
            raise ValueError(f"array has {arr.shape[0]} slices, volume has {self.array.shape[0]}")
        if not self.is_multiframe:
            return arr
        if len(self.source_datasets) != 1:
            raise ValueError("volume mixes several multi-frame instances; build one output per instance")
        order = np.argsort(np.asarray(self.frame_numbers, dtype=np.int64))
        return arr[order]

    def to_sitk(self) -> "sitk.Image":
        """A SimpleITK image with the same geometry (array zyx -> image xyz)."""
        import SimpleITK as sitk

        img = sitk.GetImageFromArray(np.ascontiguousarray(self.array))
        img.SetSpacing((float(self.spacing[2]), float(self.spacing[1]), float(self.spacing[0])))
        img.SetOrigin(tuple(float(v) for v in self.origin))
        img.SetDirection(tuple(float(v) for v in np.asarray(self.direction, dtype=float).reshape(-1)))
        return img

    @classmethod
    def from_sitk(cls, img: "sitk.Image", like: "Volume") -> "Volume":
        """A Volume from a SimpleITK image; headers/refs are taken from ``like`` when the slice
        count matches (e.g. a mask predicted on ``like``), else left empty."""
        import SimpleITK as sitk

        arr = sitk.GetArrayFromImage(img)
        sx, sy, sz = img.GetSpacing()
        direction = np.asarray(img.GetDirection(), dtype=float).reshape(3, 3)
        same = arr.shape[0] == like.array.shape[0]
        return cls(
            array=arr,
            spacing=(float(sz), float(sy), float(sx)),
            origin=_xyz(img.GetOrigin()),
            direction=direction,
            headers=list(like.headers) if same else [],
            refs=list(like.refs) if same else [],
            frame_numbers=list(like.frame_numbers) if same else [],
        )

    def with_array(self, array: np.ndarray) -> "Volume":
        """Same geometry and headers, another array (e.g. a mask or probability map)."""
        if array.shape[:3] != self.array.shape:
            raise ValueError(f"shape {array.shape} does not match volume {self.array.shape}")
        return dataclasses.replace(self, array=array)


@dataclasses.dataclass
class FrameInfo:
    """Geometry and rescale of one frame, before sorting."""

    ref: InstanceRef
    header: Dataset
    frame_index: int | None  # 0-based index in a multi-frame instance, None for single-frame
    position: npt.NDArray[np.float64]  # xyz
    orientation: npt.NDArray[np.float64]  # 6 direction cosines
    pixel_spacing: tuple[float, float]  # (row spacing, column spacing)
    rows: int
    cols: int
    slope: float
    intercept: float
    thickness: float | None


def _xyz(values: Iterable[float]) -> tuple[float, float, float]:
    x, y, z = (float(v) for v in values)
    return x, y, z


def _floats(value: Any, n: int, what: str, ref: InstanceRef) -> npt.NDArray[np.float64]:
    try:
        arr = np.asarray([float(v) for v in value], dtype=float)
    except (TypeError, ValueError) as exc:
        raise PipelineInputError(f"{ref.path.name}: unreadable {what} {value!r}") from exc
    if arr.shape != (n,):
        raise PipelineInputError(f"{ref.path.name}: {what} must have {n} values, got {value!r}")
    return arr


def _group_attr(groups: Sequence[Dataset | None], seq: str, attr: str) -> Any:
    """First value of ``attr`` inside functional group ``seq`` among ``groups`` (per-frame first)."""
    for g in groups:
        if g is None or seq not in g:
            continue
        items = g[seq].value
        if items and attr in items[0]:
            return items[0][attr].value
    return None


def _frames_of(ref: InstanceRef, ds: Dataset) -> list[FrameInfo]:
    rows, cols = int(ds.Rows), int(ds.Columns)
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared = ds.get("SharedFunctionalGroupsSequence")
    if per_frame is not None:  # enhanced multi-frame (CT/MR)
        shared_item = shared[0] if shared else None
        out = []
        for i in range(n_frames):
            groups = [per_frame[i] if i < len(per_frame) else None, shared_item]
            ipp = _group_attr(groups, "PlanePositionSequence", "ImagePositionPatient")
            iop = _group_attr(groups, "PlaneOrientationSequence", "ImageOrientationPatient")
            ps = _group_attr(groups, "PixelMeasuresSequence", "PixelSpacing")
            thick = _group_attr(groups, "PixelMeasuresSequence", "SliceThickness")
            slope = _group_attr(groups, "PixelValueTransformationSequence", "RescaleSlope")
            intercept = _group_attr(groups, "PixelValueTransformationSequence", "RescaleIntercept")
            if ipp is None or iop is None or ps is None:
                raise PipelineInputError(
                    f"{ref.path.name}: frame {i + 1} lacks plane position/orientation/pixel measures"
                )
            out.append(
                FrameInfo(
                    ref=ref,
                    header=ds,
                    frame_index=i,
                    position=_floats(ipp, 3, "ImagePositionPatient", ref),
                    orientation=_floats(iop, 6, "ImageOrientationPatient", ref),
                    pixel_spacing=tuple(_floats(ps, 2, "PixelSpacing", ref)),
                    rows=rows,
                    cols=cols,
                    slope=float(slope) if slope not in (None, "") else 1.0,
                    intercept=float(intercept) if intercept not in (None, "") else 0.0,
                    thickness=float(thick) if thick not in (None, "") else None,
                )
            )
        return out
    if n_frames != 1:
        raise PipelineInputError(
            f"{ref.path.name}: multi-frame instance without per-frame geometry ({n_frames} frames); "
            "not a volume (use load_cine for XA/cine)"
        )
    for attr in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        if attr not in ds:
            raise PipelineInputError(f"{ref.path.name}: missing {attr}; cannot place the slice in 3D")
    slope = ds.get("RescaleSlope")
    intercept = ds.get("RescaleIntercept")
    thick = ds.get("SliceThickness")
    return [
        FrameInfo(
            ref=ref,
            header=ds,
            frame_index=None,
            position=_floats(ds.ImagePositionPatient, 3, "ImagePositionPatient", ref),
            orientation=_floats(ds.ImageOrientationPatient, 6, "ImageOrientationPatient", ref),
            pixel_spacing=tuple(_floats(ds.PixelSpacing, 2, "PixelSpacing", ref)),
            rows=rows,
            cols=cols,
            slope=float(slope) if slope not in (None, "") else 1.0,
            intercept=float(intercept) if intercept not in (None, "") else 0.0,
            thickness=float(thick) if thick not in (None, "") else None,
        )
    ]


def slice_normal(orientation: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Unit normal (row x col) of an ImageOrientationPatient."""
    o = np.asarray(orientation, dtype=float)
    n = np.cross(o[:3], o[3:])
    norm = np.linalg.norm(n)
    if norm < 1e-6:
        raise PipelineInputError(f"degenerate ImageOrientationPatient {list(o)}")
    unit: npt.NDArray[np.float64] = n / norm
    return unit


def _sorted_frames(frames: list[FrameInfo], label: str) -> tuple[list[FrameInfo], np.ndarray]:
    if not frames:
        raise PipelineInputError(f"series {label}: no image frames")
    ref_o = frames[0].orientation
    for f in frames[1:]:
        if np.max(np.abs(f.orientation - ref_o)) > ORIENTATION_TOL:
            raise PipelineInputError(
                f"series {label}: mixed slice orientations ({list(np.round(ref_o, 4))} vs "
                f"{list(np.round(f.orientation, 4))} in {f.ref.path.name}); not a single volume"
            )
    shapes = {(f.rows, f.cols) for f in frames}
    if len(shapes) != 1:
        raise PipelineInputError(f"series {label}: inconsistent Rows/Columns {sorted(shapes)}")
    spacings = {tuple(round(v, 4) for v in f.pixel_spacing) for f in frames}
    if len(spacings) != 1:
        raise PipelineInputError(f"series {label}: inconsistent PixelSpacing {sorted(spacings)}")
    normal = slice_normal(ref_o)
    dist = np.asarray([float(np.dot(f.position, normal)) for f in frames])
    order = np.argsort(dist, kind="stable")
    frames = [frames[i] for i in order]
    dist = dist[order]
    if len(dist) > 1:
        gaps = np.diff(dist)
        dup = np.flatnonzero(gaps < 1e-3)
        if dup.size:
            f = frames[int(dup[0])]
            raise PipelineInputError(
                f"series {label}: duplicate slice positions ({dup.size} pairs; "
                f"first at {dist[int(dup[0])]:.3f} mm along the normal, e.g. {f.ref.path.name}); several phases or "
                "echoes in one series are not a single volume"
            )
    return frames, dist


def _z_spacing(frames: list[FrameInfo], dist: np.ndarray, label: str) -> float:
    if len(dist) < 2:
        h = frames[0].header
        for v in (h.get("SpacingBetweenSlices"), frames[0].thickness):
            if v not in (None, ""):
                return float(v)
        return 1.0
    gaps = np.diff(dist)
    med = float(np.median(gaps))
    spread = float(gaps.max() - gaps.min())
    if spread > SPACING_REL_TOL * med + 1e-3:
        log.warning(
            "series %s: non-uniform slice spacing (%.3f..%.3f mm); using the median %.3f mm",
            label, gaps.min(), gaps.max(), med,
        )
    return med


def load_volume(series: SeriesView, *, dtype: Any = np.float32, rescale: bool = True) -> Volume:
    """Read a series into a sorted, rescaled :class:`Volume`.

    ``dtype=np.int16`` halves memory for CT (HU fits; values are rounded and clipped).
    ``rescale=False`` keeps stored values.  Raises :class:`PipelineInputError` for series that
    are not one volume (mixed orientation, inconsistent matrix, duplicate positions, missing
    geometry).
    """
    label = f"{series.series_number or ''} '{series.series_description}' ({series.series_instance_uid})".strip()
    frames: list[FrameInfo] = []
    for ref in series.instances:
        ds = ref.header()
        if "Rows" not in ds or "Columns" not in ds:
            log.info("series %s: skipping non-image instance %s", label, ref.path.name)
            continue
        frames.extend(_frames_of(ref, ds))
    frames, dist = _sorted_frames(frames, label)
    dz = _z_spacing(frames, dist, label)
    first = frames[0]
    row_dir, col_dir = first.orientation[:3], first.orientation[3:]
    direction = np.stack([row_dir, col_dir, slice_normal(first.orientation)], axis=1)
    rows, cols = first.rows, first.cols
    dtype = np.dtype(dtype)
    array = np.empty((len(frames), rows, cols), dtype=dtype)
    _fill(array, frames, dtype, rescale, label)
    return Volume(
        array=array,
        spacing=(dz, float(first.pixel_spacing[0]), float(first.pixel_spacing[1])),
        origin=_xyz(first.position),
        direction=direction,
        headers=[f.header for f in frames],
        refs=[f.ref for f in frames],
        frame_numbers=[None if f.frame_index is None else f.frame_index + 1 for f in frames],
    )


def _store(out: np.ndarray, px: np.ndarray, f: FrameInfo, dtype: np.dtype, rescale: bool) -> None:
    if px.ndim != 2:
        raise PipelineInputError(f"{f.ref.path.name}: expected a greyscale frame, got shape {px.shape}")
    if rescale and (f.slope != 1.0 or f.intercept != 0.0):
        val = px.astype(np.float32) * np.float32(f.slope) + np.float32(f.intercept)
    else:
        val = px
    if np.issubdtype(dtype, np.integer) and val.dtype != dtype:
        info = np.iinfo(dtype)
        if np.issubdtype(val.dtype, np.floating):
            val = np.rint(val)
        val = np.clip(val, info.min, info.max)
    out[...] = val


def _fill(array: np.ndarray, frames: list[FrameInfo], dtype: np.dtype, rescale: bool, label: str) -> None:
    """Decode each instance once and copy its frame(s) into the preallocated array."""
    by_instance: dict[str, list[tuple[int, FrameInfo]]] = {}
    for out_idx, f in enumerate(frames):
        by_instance.setdefault(f.ref.sop_instance_uid, []).append((out_idx, f))
    for items in by_instance.values():
        ref = items[0][1].ref
        try:
            if items[0][1].frame_index is None:
                px = pydicom.pixels.pixel_array(str(ref.path))
                _store(array[items[0][0]], px, items[0][1], dtype, rescale)
            else:
                wanted = {f.frame_index: (i, f) for i, f in items}
                # iter_pixels decodes one frame at a time: no full multi-frame array in memory
                for k, px in enumerate(pydicom.pixels.iter_pixels(str(ref.path))):
                    if k in wanted:
                        i, f = wanted[k]
                        _store(array[i], px, f, dtype, rescale)
        except PipelineInputError:
            raise
        except (NotImplementedError, RuntimeError, ValueError) as exc:
            raise PipelineInputError(
                f"series {label}: cannot decode {ref.path.name} "
                f"(transfer syntax {ref.transfer_syntax_uid or 'unknown'}): {exc}"
            ) from exc
