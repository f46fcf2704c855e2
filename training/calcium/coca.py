"""Reader for a COCA_Segmentations-format folder (as published) -- numpy, pynrrd, pydicom; no torch.

Layout (names configurable)::

    <root>/nrrd/<exam>.nrrd (or <exam>.seg.nrrd)   3D Slicer segmentation, label map
    <root>/dicom/<exam>/**                         the CT DICOM series of that exam (any file names)
    <root>/train_test_split.csv                    exam ids with their split (train / test)

The CTs of the real release are a separate download (Stanford AIMI COCA, non-gated part,
``deidentified_nongated/<exam>/<exam>/*.dcm``): pass that folder as ``dicom_dir`` (``--dicom-dir``); the
exam id is the NRRD file stem, looked up as ``<dicom_dir>/<exam>/`` at any depth, or through an
``exam_map`` CSV (``exam,folder``) when the folder names differ.  See docs/calcium.md.

Slices are matched by position along the slice normal, never by index: a CT with a missing slice keeps
every other label on its own slice (the labels of the missing position are dropped and reported).

Label values: never assumed.  Each NRRD header names its segments (``SegmentN_Name``,
``SegmentN_LabelValue``, optional ``SegmentN_Layer`` for 4D layered files); the name is mapped to
the model's class value (1..8, :mod:`pipelines.calcium.labels`) through a configurable alias table.
pynrrd returns arrays in (x, y, z) order; they are transposed to (z, y, x) = (slice, row, col) here.
"""
from __future__ import annotations

import csv
import dataclasses
import logging
import re
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from pipelines.calcium.labels import COCA_NAME_ALIASES, class_for_name

log = logging.getLogger("cardionode.training.calcium")

__all__ = ["SegmentInfo", "CocaSegmentation", "CocaDataset", "CocaError", "read_split_csv", "read_segmentation",
           "load_aliases", "read_exam_map", "slice_distances", "align_to_volume"]

SPLIT_NAMES = {"train": "train", "training": "train", "test": "test", "val": "test", "valid": "test",
               "validation": "test", "testing": "test"}


class CocaError(ValueError):
    """The folder or a file in it does not follow the COCA format (message names the file)."""


@dataclasses.dataclass(frozen=True)
class SegmentInfo:
    index: int  # N in SegmentN_*
    name: str
    label_value: int
    layer: int
    class_value: int | None  # model class (1..8), None when the name is unknown


@dataclasses.dataclass
class CocaSegmentation:
    exam: str
    labels: np.ndarray  # (z, y, x) uint8, the file's own label values (layer 0 / merged)
    segments: list[SegmentInfo]
    spacing: tuple[float, float, float]  # (z, y, x) mm
    origin_xyz: np.ndarray  # LPS
    direction: np.ndarray  # 3x3, columns = unit vectors of the x, y, z array axes (LPS)
    path: Path

    def class_map(self) -> np.ndarray:
        """(z, y, x) uint8 in model class values (unknown segment names -> 0)."""
        lut = np.zeros(256, dtype=np.uint8)
        for s in self.segments:
            if s.class_value is not None:
                lut[s.label_value] = s.class_value
        return lut[self.labels]

    @property
    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.spacing))


def load_aliases(path: Path | None) -> dict[str, int] | None:
    """Segment-name -> class-value table from a JSON file ``{"segment name": class value 1..8, ...}``.

    Replaces the built-in :data:`~pipelines.calcium.labels.COCA_NAME_ALIASES` (copy it and add names)."""
    if path is None:
        return None
    import json

    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise CocaError(f"{path}: cannot read the alias table: {exc}") from exc
    if not isinstance(raw, dict) or not raw:
        raise CocaError(f"{path}: expected a JSON object {{segment name: class value}}")
    out = {}
    for name, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 8:
            raise CocaError(f"{path}: {name!r}: class value must be an integer 1..8, got {value!r}")
        out[str(name)] = value
    return out


def read_split_csv(path: Path) -> dict[str, str]:
    """Exam id -> 'train' | 'test' from train_test_split.csv (header detected; 'val' counts as test)."""
    if not path.is_file():
        raise CocaError(f"{path}: split file not found")
    rows = [r for r in csv.reader(path.read_text().splitlines()) if any(c.strip() for c in r)]
    if not rows:
        raise CocaError(f"{path}: empty")
    header = [c.strip().lower() for c in rows[0]]
    has_header = not any(c in SPLIT_NAMES for c in header)
    body = rows[1:] if has_header else rows
    split_col = id_col = None
    if has_header:
        split_col = next((i for i, c in enumerate(header) if re.search(r"split|set|fold|partition", c)), None)
        id_col = next((i for i, c in enumerate(header) if re.search(r"id|exam|scan|patient|case|name", c)
                       and i != split_col), None)
    if split_col is None:
        split_col = next((i for i in range(len(body[0])) if all(
            r[i].strip().lower() in SPLIT_NAMES for r in body if len(r) > i)), None)
    if split_col is None:
        raise CocaError(f"{path}: no column with train/test values (header {rows[0]})")
    if id_col is None:
        id_col = next(i for i in range(len(body[0])) if i != split_col)
    out: dict[str, str] = {}
    for n, r in enumerate(body, start=2 if has_header else 1):
        value = r[split_col].strip().lower()
        if value not in SPLIT_NAMES:
            raise CocaError(f"{path}: line {n}: split {r[split_col]!r} is not train/test")
        out[_exam_id(r[id_col])] = SPLIT_NAMES[value]
    return out


def _exam_id(text: str) -> str:
    t = Path(text.strip()).name
    for suffix in (".seg.nrrd", ".nrrd"):
        if t.endswith(suffix):
            t = t[: -len(suffix)]
    return t


def read_segmentation(path: Path, aliases: Mapping[str, int] | None = None) -> CocaSegmentation:
    import nrrd

    data, hdr = nrrd.read(str(path))
    segments: list[SegmentInfo] = []
    for key in sorted(hdr):
        m = re.fullmatch(r"Segment(\d+)_Name", key)
        if not m:
            continue
        n = int(m.group(1))
        value = hdr.get(f"Segment{n}_LabelValue")
        if value is None:
            raise CocaError(f"{path}: Segment{n}_Name without Segment{n}_LabelValue")
        name = str(hdr[key])
        segments.append(SegmentInfo(n, name, int(value), int(hdr.get(f"Segment{n}_Layer", 0)),
                                    class_for_name(name, dict(aliases) if aliases else None)))
    if not segments:
        raise CocaError(f"{path}: no SegmentN_Name/SegmentN_LabelValue in the header; not a segmentation file")
    dirs = hdr.get("space directions")
    if data.ndim == 4:  # layered: (layer, x, y, z) with a 'none' first direction
        dirs = [d for d in dirs if d is not None and not (isinstance(d, np.ndarray) and np.isnan(d).all())]
        merged = np.zeros(data.shape[1:], dtype=np.uint8)
        for s in segments:
            merged[data[s.layer] == s.label_value] = s.label_value
        data = merged
    elif data.ndim != 3:
        raise CocaError(f"{path}: expected a 3D (or layered 4D) label map, got {data.ndim} dimensions")
    d = np.asarray(dirs if dirs is not None else np.eye(3), dtype=float)  # rows = axis vectors (x, y, z)
    spacing_xyz = np.linalg.norm(d, axis=1)
    origin = np.asarray(hdr.get("space origin", np.zeros(3)), dtype=float)
    space = str(hdr.get("space", "left-posterior-superior")).lower()
    if space in ("right-anterior-superior", "ras"):
        flip = np.array([-1.0, -1.0, 1.0])
        d, origin = d * flip, origin * flip
    direction = (d / spacing_xyz[:, None]).T
    labels = np.ascontiguousarray(np.transpose(data, (2, 1, 0))).astype(np.uint8)
    return CocaSegmentation(exam=_exam_id(path.name), labels=labels, segments=segments,
                            spacing=(float(spacing_xyz[2]), float(spacing_xyz[1]), float(spacing_xyz[0])),
                            origin_xyz=origin, direction=direction, path=path)


def align_to_volume(seg: CocaSegmentation, shape_zyx: tuple[int, int, int], spacing_zyx, origin_xyz,
                    direction: np.ndarray, values: np.ndarray | None = None, *,
                    slice_distances: np.ndarray | None = None, return_dropped: bool = False):
    """Place the segmentation (possibly cropped) into a CT volume grid; axis-aligned grids only.

    In-plane by the index map of the two grids; across slices by position along the normal
    (``slice_distances``: each CT slice's own position; default a uniform grid from the origin): a
    label voxel goes to the CT slice within a third of the slice spacing of its position, or is dropped
    when the CT has no slice there (``return_dropped`` also returns how many were dropped)."""
    src = seg.labels if values is None else values
    ct_axes = np.asarray(direction, float) * np.asarray(spacing_zyx[::-1], float)[None, :]  # columns x, y, z
    seg_axes = seg.direction * np.asarray(seg.spacing[::-1], float)[None, :]
    m = np.linalg.solve(ct_axes, seg_axes)  # seg index step -> ct index step (xyz)
    perm = np.rint(m)
    if not np.allclose(m, perm, atol=1e-3) or sorted(np.abs(perm).sum(0).tolist()) != [1, 1, 1]:
        raise CocaError(f"{seg.path}: segmentation grid is not aligned with the CT grid "
                        f"(index map {m.round(3).tolist()})")
    offset = np.linalg.solve(ct_axes, seg.origin_xyz - np.asarray(origin_xyz, float))
    if not np.allclose(offset[:2], np.rint(offset[:2]), atol=1e-2):
        raise CocaError(f"{seg.path}: segmentation origin is off the CT pixel grid by "
                        f"{offset[:2] - np.rint(offset[:2])}")
    if abs(perm[2, 2]) != 1:
        raise CocaError(f"{seg.path}: segmentation slices are not parallel to the CT slices (index map "
                        f"{m.round(3).tolist()})")
    out = np.zeros(shape_zyx, dtype=np.uint8)
    idx = np.nonzero(src)
    ijk = np.stack([idx[2], idx[1], idx[0]])  # x, y, z indices of seg voxels
    ct = (perm @ ijk + np.rint(offset)[:, None]).astype(np.int64)
    normal = np.asarray(direction, float)[:, 2]
    dz = float(spacing_zyx[0])
    dist = (np.asarray(slice_distances, float) if slice_distances is not None
            else float(np.dot(np.asarray(origin_xyz, float), normal)) + np.arange(shape_zyx[0]) * dz)
    if len(dist) != shape_zyx[0]:
        raise ValueError(f"slice_distances has {len(dist)} entries, the volume {shape_zyx[0]} slices")
    seg_d = float(np.dot(seg.origin_xyz, normal)) + idx[0] * float(np.dot(seg_axes[:, 2], normal))
    k = np.clip(np.searchsorted(dist, seg_d), 1, max(1, len(dist) - 1))
    k = np.where(np.abs(dist[k - 1] - seg_d) <= np.abs(dist[np.minimum(k, len(dist) - 1)] - seg_d), k - 1, k)
    k = np.minimum(k, len(dist) - 1)
    on_slice = np.abs(dist[k] - seg_d) <= dz / 3
    ct[2] = k
    inside = np.all((ct >= 0) & (ct < np.array(shape_zyx[::-1])[:, None]), axis=0)
    ok = inside & on_slice
    if not inside.all():
        log.warning("%s: %d labelled voxels fall outside the CT volume", seg.path.name, int((~inside).sum()))
    out[ct[2, ok], ct[1, ok], ct[0, ok]] = src[idx][ok]
    dropped = int((inside & ~on_slice).sum())
    return (out, dropped) if return_dropped else out


class CocaDataset:
    """A COCA-format folder; see the module docstring for the layout."""

    def __init__(self, root: str | Path, *, nrrd_dir: str = "nrrd", dicom_dir: str | Path | None = None,
                 split_csv: str = "train_test_split.csv", aliases: Mapping[str, int] | None = None,
                 exam_map: str | Path | None = None) -> None:
        self.root = Path(root)
        self.nrrd_dir = self.root / nrrd_dir
        self.dicom_dir = Path(dicom_dir) if dicom_dir is not None else self.root / "dicom"
        self.split_csv = self.root / split_csv
        self.aliases = dict(aliases or COCA_NAME_ALIASES)
        if not self.nrrd_dir.is_dir():
            raise CocaError(f"{self.nrrd_dir}: no nrrd/ folder; not a COCA-format folder")
        if dicom_dir is not None and not self.dicom_dir.is_dir():
            raise CocaError(f"--dicom-dir {self.dicom_dir}: not a folder")
        self.exam_map = read_exam_map(Path(exam_map)) if exam_map else {}

    def nrrd_files(self) -> dict[str, Path]:
        files = sorted(p for p in self.nrrd_dir.iterdir() if p.name.endswith(".nrrd"))
        return {_exam_id(p.name): p for p in files}

    def split(self) -> dict[str, str]:
        return read_split_csv(self.split_csv)

    def exams(self, split: str = "all") -> list[str]:
        files = self.nrrd_files()
        if split == "all":
            return sorted(files, key=_natural)
        sp = self.split()
        return sorted((e for e in files if sp.get(e) == split), key=_natural)

    def segmentation(self, exam: str) -> CocaSegmentation:
        path = self.nrrd_files().get(exam)
        if path is None:
            raise CocaError(f"{self.nrrd_dir}: no NRRD for exam {exam!r}")
        return read_segmentation(path, self.aliases)

    def ct_folder(self, exam: str) -> Path:
        """Where the exam's CT lies: ``exam_map[exam]`` (relative to the DICOM folder) or ``<dicom_dir>/<exam>``."""
        rel = self.exam_map.get(exam)
        return (self.dicom_dir / rel) if rel is not None else self.dicom_dir / exam

    def ct_series(self, exam: str):
        """The exam's CT series (the CT series with most instances below its folder)."""
        from pipelines.base import StudyView

        folder = self.ct_folder(exam)
        files = [p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")] if folder.is_dir() else []
        if not files:
            raise CocaError(f"exam {exam}: no CT files in {folder} (the CTs are a separate download: give "
                            "--dicom-dir, and --exam-map when folder names differ from the exam ids; docs/calcium.md)")
        study = StudyView.from_files(files)
        cts = study.by_modality("CT")
        if not cts:
            raise CocaError(f"exam {exam}: {folder} holds no CT series")
        return max(cts, key=len)

    def generated_reason(self) -> str | None:
        """Why the folder's data look generated (phantom manufacturer in the first CT header), else None."""
        import pydicom

        for exam in self.exams()[:1]:
            folder = self.ct_folder(exam)
            for f in sorted(folder.rglob("*.dcm"))[:1] if folder.is_dir() else []:
                try:
                    man = str(pydicom.dcmread(f, stop_before_pixels=True).get("Manufacturer", ""))
                except Exception:  # noqa: BLE001 - unreadable file: no signal
                    return None
                if "phantom" in man.lower():
                    return f"{f}: Manufacturer {man!r}"
        return None

    def ct_volume(self, exam: str):
        """(Volume int16 HU, slice distances along the normal in mm, one per array slice)."""
        from pipelines.base import PipelineInputError
        from pipelines.imaging import load_volume

        series = self.ct_series(exam)
        try:
            vol = load_volume(series, dtype=np.int16)
        except PipelineInputError as exc:
            raise CocaError(f"exam {exam}: {self.ct_folder(exam)}: {exc}") from None
        return vol, slice_distances(vol)

    def aligned(self, exam: str, values: str = "class") -> tuple[object, np.ndarray, np.ndarray]:
        """(CT volume, labels on the CT grid, slice distances).  ``values``: ``class`` (model classes) or
        ``file`` (the NRRD's own label values).  Slices are matched by position."""
        seg = self.segmentation(exam)
        vol, dist = self.ct_volume(exam)
        src = seg.class_map() if values == "class" else seg.labels
        labels, dropped = align_to_volume(seg, vol.shape, vol.spacing, vol.origin, vol.direction, src,
                                          slice_distances=dist, return_dropped=True)
        _report_gaps(exam, self.ct_folder(exam), dist, dropped, seg.path)
        return vol, labels, dist

    def cases(self, split: str = "all", exams: Sequence[str] | None = None
              ) -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray, tuple[float, float]]]:
        """(exam, HU int16 (z,y,x), class labels aligned to the CT by position, slice positions, pixel spacing)."""
        for exam in (exams if exams is not None else self.exams(split)):
            vol, labels, dist = self.aligned(exam)
            yield exam, vol.array, labels, dist, (vol.spacing[1], vol.spacing[2])


def read_exam_map(path: Path) -> dict[str, str]:
    """``exam,folder`` CSV (header optional): exam id -> CT folder relative to the DICOM folder."""
    if not path.is_file():
        raise CocaError(f"--exam-map {path}: file not found")
    out: dict[str, str] = {}
    for n, row in enumerate(csv.reader(path.read_text().splitlines()), start=1):
        if not row or not any(c.strip() for c in row):
            continue
        if len(row) < 2:
            raise CocaError(f"{path}: line {n}: expected 'exam,folder', got {row!r}")
        exam, folder = row[0].strip(), row[1].strip()
        if n == 1 and exam.lower() in ("exam", "exam_id", "id", "patient_id"):
            continue
        out[_exam_id(exam)] = folder
    return out


def slice_distances(vol) -> np.ndarray:
    """Position of every array slice along the slice normal (mm), from its own header, not from the
    first slice and the median spacing: a missing slice shows as a gap here."""
    normal = np.asarray(vol.direction, float)[:, 2]
    out = []
    for h, frame in zip(vol.headers, vol.frame_numbers or [None] * len(vol.headers)):
        if frame is None:
            ipp = h.ImagePositionPatient
        else:
            ipp = h.PerFrameFunctionalGroupsSequence[frame - 1].PlanePositionSequence[0].ImagePositionPatient
        out.append(float(np.dot(np.asarray([float(v) for v in ipp]), normal)))
    return np.asarray(out)


def _report_gaps(exam: str, folder: Path, dist: np.ndarray, dropped: int, nrrd: Path) -> None:
    if len(dist) < 3:
        return
    gaps = np.diff(dist)
    med = float(np.median(gaps))
    big = np.flatnonzero(gaps > 1.5 * med)
    if big.size:
        k = int(big[0])
        log.warning("exam %s: %s misses %d slice position(s) (first gap %.2f..%.2f mm, spacing %.2f mm elsewhere); "
                    "labels aligned by position, %d labelled voxel(s) of %s fall on missing slices and are dropped",
                    exam, folder, int(sum(round(g / med) - 1 for g in gaps[big])), dist[k], dist[k + 1], med,
                    dropped, nrrd.name)


def _natural(s: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]
