"""Readers for the CardioSyntax v2 release as published, and DICOM cine loading.

- Format 1 (stage 1, one record per cine): ``folds/fold{k}_{split}.json``.
- Format 2 (stage 2, one record per study): ``rnn_folds/rnn_fold{k}_{split}.json`` with ``videos``,
  ``videos_left``, ``videos_right``, ``videos_other``.
- Test format (``test_philips_100.json``, ``test_siemens_20.json``): Format 2 plus ``mean_syntax`` and
  ``expert0..5``; ``videos`` and ``bin_syntax`` may be absent (the card's example has neither).

Paths (e.g. ``../anon_data/chunk1/.../IM-2254-0039.dcm``) are resolved against the dataset root
first, then against the folder of the JSON file that names them; an unresolvable path raises
:class:`DatasetError` naming both candidates.  Cines are decoded by the node's own
:func:`pipelines.imaging.load_cine` (uint8 or uint16, JPEG-compressed XA included).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pydicom

from pipelines.base import InstanceRef, PipelineInputError
from pipelines.imaging import load_cine

__all__ = ["DatasetError", "VideoRecord", "StudyRecord", "read_format1", "read_format2", "read_test",
           "fold_path", "rnn_fold_path", "load_video", "EXPERT_KEYS", "SPLITS"]

EXPERT_KEYS = tuple(f"expert{i}" for i in range(6))
SPLITS = ("train", "eval")


class DatasetError(ValueError):
    """A release file is missing or malformed (message names file, record and key)."""


@dataclasses.dataclass(frozen=True)
class VideoRecord:
    """One cine.  ``path`` is resolved (absolute).  Study-level fields are filled for Format 1 records."""

    path: Path
    series_uid: str
    sop_uid: str
    shape: tuple[int, ...]
    artery: int  # 0 left, 1 right
    artery_prob: float
    study_uid: str = ""
    syntax: float | None = None
    syntax_left: float | None = None
    syntax_right: float | None = None
    bin_syntax: int | None = None
    manufacturer: str = ""
    device_model: str = ""

    def artery_score(self, artery: str) -> float:
        value = self.syntax_left if artery == "left" else self.syntax_right
        if value is None:
            raise DatasetError(f"{self.path}: no syntax_{artery}")
        return float(value)


@dataclasses.dataclass(frozen=True)
class StudyRecord:
    study_uid: str
    syntax: float
    syntax_left: float
    syntax_right: float
    bin_syntax: int | None
    videos: tuple[VideoRecord, ...]
    videos_left: tuple[VideoRecord, ...]
    videos_right: tuple[VideoRecord, ...]
    videos_other: tuple[VideoRecord, ...]
    manufacturer: str = ""
    device_model: str = ""
    mean_syntax: float | None = None
    experts: tuple[float, ...] = ()  # expert0..5 in order, when present

    def side(self, artery: str) -> tuple[VideoRecord, ...]:
        if artery not in ("left", "right"):
            raise ValueError(f"artery must be left or right, got {artery!r}")
        return self.videos_left if artery == "left" else self.videos_right

    def artery_score(self, artery: str) -> float:
        return self.syntax_left if artery == "left" else self.syntax_right


def fold_path(root: Path, fold: int, split: str) -> Path:
    return Path(root) / "folds" / f"fold{fold}_{split}.json"


def rnn_fold_path(root: Path, fold: int, split: str, rnn_folds_dir: str = "rnn_folds") -> Path:
    return Path(root) / rnn_folds_dir / f"rnn_fold{fold}_{split}.json"


def _load_json(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    return data


class _Rec:
    def __init__(self, source: Path, index: int, data: Any, where: str = "") -> None:
        if not isinstance(data, dict):
            raise DatasetError(f"{source}: record {index}{where}: expected an object, got {type(data).__name__}")
        self.source, self.index, self.data, self.where = source, index, data, where

    def fail(self, key: str, msg: str) -> DatasetError:
        return DatasetError(f"{self.source}: record {self.index}{self.where}: key {key!r}: {msg}")

    def get(self, key: str, kind: type, default: Any = ...) -> Any:
        if key not in self.data or self.data[key] is None:
            if default is ...:
                raise self.fail(key, "missing")
            return default
        v = self.data[key]
        try:
            if kind is float:
                if isinstance(v, bool):
                    raise TypeError
                return float(v)
            if kind is int:
                if isinstance(v, bool) or float(v) != int(float(v)):
                    raise TypeError
                return int(float(v))
            if kind is str:
                return str(v)
        except (TypeError, ValueError):
            raise self.fail(key, f"expected {kind.__name__}, got {v!r}") from None
        return v


def _resolve(path_text: str, root: Path, json_dir: Path, rec: _Rec) -> Path:
    p = Path(path_text)
    if p.is_absolute():
        return p
    candidates = [(root / p).resolve(), (json_dir / p).resolve()]
    for c in candidates:
        if c.is_file():
            return c
    raise rec.fail("path", f"{path_text!r} not found (tried {candidates[0]} and {candidates[1]})")


def _video(rec: _Rec, root: Path, json_dir: Path, study: bool) -> VideoRecord:
    shape = rec.get("shape", list, [])
    artery = rec.get("artery", int)
    if artery not in (0, 1):
        raise rec.fail("artery", f"expected 0 (left) or 1 (right), got {artery}")
    kw: dict[str, Any] = {}
    if study:
        kw = dict(study_uid=rec.get("study_uid", str), syntax=rec.get("syntax", float),
                  syntax_left=rec.get("syntax_left", float), syntax_right=rec.get("syntax_right", float),
                  bin_syntax=rec.get("bin_syntax", int, None), manufacturer=rec.get("manufacturer", str, ""),
                  device_model=rec.get("device_model", str, ""))
    return VideoRecord(path=_resolve(rec.get("path", str), root, json_dir, rec),
                       series_uid=rec.get("series_uid", str, ""),
                       sop_uid=rec.get("sop_uid", str, ""), shape=tuple(int(v) for v in shape), artery=artery,
                       artery_prob=rec.get("artery_prob", float, float(artery)), **kw)


def read_format1(path: str | Path, root: str | Path | None = None) -> list[VideoRecord]:
    """Format 1 file (one record per cine) -> VideoRecords with resolved paths."""
    path = Path(path)
    root = Path(root) if root is not None else path.parent.parent
    return [_video(_Rec(path, i, d), root, path.parent, study=True) for i, d in enumerate(_load_json(path))]


def _study(path: Path, root: Path, i: int, d: Any) -> StudyRecord:
    rec = _Rec(path, i, d)
    lists: dict[str, tuple[VideoRecord, ...]] = {}
    for key in ("videos", "videos_left", "videos_right", "videos_other"):
        items = d.get(key, None) if isinstance(d, dict) else None
        if items is None:
            if key in ("videos_left", "videos_right"):
                raise rec.fail(key, "missing")
            lists[key] = ()
            continue
        if not isinstance(items, list):
            raise rec.fail(key, f"expected a list, got {type(items).__name__}")
        lists[key] = tuple(_video(_Rec(path, i, v, f" {key}[{j}]"), root, path.parent, study=False)
                           for j, v in enumerate(items))
    if not lists["videos"]:  # test files list only the three groups
        lists["videos"] = lists["videos_left"] + lists["videos_right"] + lists["videos_other"]
    experts = tuple(rec.get(k, float) for k in EXPERT_KEYS if k in d)
    return StudyRecord(study_uid=rec.get("study_uid", str), syntax=rec.get("syntax", float),
                       syntax_left=rec.get("syntax_left", float), syntax_right=rec.get("syntax_right", float),
                       bin_syntax=rec.get("bin_syntax", int, None), manufacturer=rec.get("manufacturer", str, ""),
                       device_model=rec.get("device_model", str, ""), mean_syntax=rec.get("mean_syntax", float, None),
                       experts=experts, **lists)


def read_format2(path: str | Path, root: str | Path | None = None) -> list[StudyRecord]:
    """Format 2 file (one record per study) -> StudyRecords with resolved paths."""
    path = Path(path)
    root = Path(root) if root is not None else path.parent.parent
    return [_study(path, root, i, d) for i, d in enumerate(_load_json(path))]


def read_test(path: str | Path, root: str | Path | None = None) -> list[StudyRecord]:
    """Multi-expert test file (Format 2 + mean_syntax + expert0..5); experts are required."""
    path = Path(path)
    root = Path(root) if root is not None else path.parent
    studies = [_study(path, root, i, d) for i, d in enumerate(_load_json(path))]
    for i, s in enumerate(studies):
        if s.mean_syntax is None:
            raise DatasetError(f"{path}: record {i}: key 'mean_syntax': missing")
        if len(s.experts) != len(EXPERT_KEYS):
            raise DatasetError(f"{path}: record {i}: expected expert0..expert5, found {len(s.experts)}")
    return studies


def load_video(path: str | Path) -> np.ndarray:
    """(T, H, W) frames of one DICOM cine (uint8, or uint16 as stored), compressed XA included."""
    path = Path(path)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    ref = InstanceRef(sop_instance_uid=str(ds.get("SOPInstanceUID", "")), sop_class_uid=str(ds.get("SOPClassUID", "")),
                      series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
                      study_instance_uid=str(ds.get("StudyInstanceUID", "")), path=path)
    try:
        return load_cine(ref)
    except PipelineInputError as exc:
        raise DatasetError(str(exc)) from None


def scores_of(records: Iterable[VideoRecord], artery: str) -> np.ndarray:
    return np.asarray([r.artery_score(artery) for r in records], np.float64)
