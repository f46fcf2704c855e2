"""Reader for a COCA_Segmentations-format folder (as published) -- numpy, pynrrd, pydicom; no torch.

Layout (names configurable)::

    <root>/nrrd/<exam>.nrrd (or <exam>.seg.nrrd)   3D Slicer segmentation, label map
    <root>/dicom/<exam>/**                         the CT DICOM series of that exam (any file names)
    <root>/train_test_split.csv                    exam ids with their split (train / test)

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
from typing import Iterator, Mapping

import numpy as np

from pipelines.calcium.labels import COCA_NAME_ALIASES, class_for_name

log = logging.getLogger("cardionode.training.calcium")

__all__ = ["SegmentInfo", "CocaSegmentation", "CocaDataset", "CocaError", "read_split_csv", "read_segmentation",
           "load_aliases"]

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
                    direction: np.ndarray, values: np.ndarray | None = None) -> np.ndarray:
    """Place the segmentation (possibly cropped) into a CT volume grid; axis-aligned grids only."""
    src = seg.labels if values is None else values
    ct_axes = np.asarray(direction, float) * np.asarray(spacing_zyx[::-1], float)[None, :]  # columns x, y, z
    seg_axes = seg.direction * np.asarray(seg.spacing[::-1], float)[None, :]
    m = np.linalg.solve(ct_axes, seg_axes)  # seg index step -> ct index step (xyz)
    perm = np.rint(m)
    if not np.allclose(m, perm, atol=1e-3) or sorted(np.abs(perm).sum(0).tolist()) != [1, 1, 1]:
        raise CocaError(f"{seg.path}: segmentation grid is not aligned with the CT grid (index map {m.round(3).tolist()})")
    offset = np.linalg.solve(ct_axes, seg.origin_xyz - np.asarray(origin_xyz, float))
    if not np.allclose(offset, np.rint(offset), atol=1e-2):
        raise CocaError(f"{seg.path}: segmentation origin is off the CT voxel grid by {offset - np.rint(offset)}")
    out = np.zeros(shape_zyx, dtype=np.uint8)
    idx = np.nonzero(src)
    ijk = np.stack([idx[2], idx[1], idx[0]])  # x, y, z indices of seg voxels
    ct = (perm @ ijk + np.rint(offset)[:, None]).astype(np.int64)
    ok = np.all((ct >= 0) & (ct < np.array(shape_zyx[::-1])[:, None]), axis=0)
    if not ok.all():
        log.warning("%s: %d labelled voxels fall outside the CT volume", seg.path.name, int((~ok).sum()))
    out[ct[2, ok], ct[1, ok], ct[0, ok]] = src[idx][ok]
    return out


class CocaDataset:
    """A COCA-format folder; see the module docstring for the layout."""

    def __init__(self, root: str | Path, *, nrrd_dir: str = "nrrd", dicom_dir: str = "dicom",
                 split_csv: str = "train_test_split.csv", aliases: Mapping[str, int] | None = None) -> None:
        self.root = Path(root)
        self.nrrd_dir = self.root / nrrd_dir
        self.dicom_dir = self.root / dicom_dir
        self.split_csv = self.root / split_csv
        self.aliases = dict(aliases or COCA_NAME_ALIASES)
        if not self.nrrd_dir.is_dir():
            raise CocaError(f"{self.nrrd_dir}: no nrrd/ folder; not a COCA-format folder")

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

    def ct_series(self, exam: str):
        """The exam's CT series (the CT series with most instances under dicom/<exam>/)."""
        from pipelines.base import StudyView

        folder = self.dicom_dir / exam
        files = [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []
        if not files:
            raise CocaError(f"{folder}: no DICOM files for exam {exam!r}")
        study = StudyView.from_files(files)
        cts = study.by_modality("CT")
        if not cts:
            raise CocaError(f"{folder}: no CT series")
        return max(cts, key=len)

    def cases(self, split: str = "all") -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray, tuple[float, float]]]:
        """(exam, HU int16 (z,y,x), class labels aligned to the CT, slice positions, pixel spacing)."""
        from pipelines.imaging import load_volume

        for exam in self.exams(split):
            seg = self.segmentation(exam)
            vol = load_volume(self.ct_series(exam), dtype=np.int16)
            labels = align_to_volume(seg, vol.shape, vol.spacing, vol.origin, vol.direction, seg.class_map())
            zpos = np.asarray(vol.origin, float) @ vol.direction[:, 2] + np.arange(vol.shape[0]) * vol.spacing[0]
            yield exam, vol.array, labels, zpos, (vol.spacing[1], vol.spacing[2])


def _natural(s: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]
