"""Reader for the MyoPS380 release as published (NIfTI, nibabel) and reproducible case splits.

Layout::

    <root>/Raw_data/{bSSFP,LGE,T2w}/caseXXXX.nii.gz
    <root>/Raw_data/label/caseXXXX_gt.nii.gz

(``<root>`` may also be the ``Raw_data`` folder itself.)  A case missing any of the four files, a label
file with values outside the label convention, or a label whose grid differs from the LGE grid is
refused before any preprocessing, with one line naming the case and the file.  ``prealigned=True``
reads the release as distributed (already matched, registered and cropped: the three sequences and
the label share one grid per case) and skips our slice matching and registration.  Volumes are returned as
:class:`pipelines.imaging.Volume` in DICOM patient space (LPS, array (z, y, x)), exactly as the
pipeline gets them from DICOM, so the same preprocessing code runs on both.
"""
from __future__ import annotations

import dataclasses
import random
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from pipelines.imaging import Volume

from .labels import MYOPS2020, LabelConvention, LabelValueError

__all__ = ["SEQUENCES", "MyoPSCase", "MyoPSDataset", "nifti_to_volume", "volume_to_nifti", "split_cases",
           "DatasetError"]

#: sequence key -> folder name in Raw_data
SEQUENCES = {"bssfp": "bSSFP", "lge": "LGE", "t2": "T2w"}
_CASE_RE = re.compile(r"^(case\d+)\.nii(\.gz)?$")
_LABEL_RE = re.compile(r"^(case\d+)_gt\.nii(\.gz)?$")
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


class DatasetError(FileNotFoundError):
    """The folder is not a MyoPS380 release, or a case is incomplete or damaged (message names case and file)."""


def nifti_to_volume(path: str | Path, dtype=np.float32) -> Volume:
    """A NIfTI file as a :class:`Volume` (LPS, (z, y, x)); nibabel's (i, j, k) -> array (k, j, i)."""
    import nibabel as nib

    img = nib.load(str(path))
    data = np.asarray(img.dataobj, dtype=dtype)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DatasetError(f"{path}: expected a 3D volume, got shape {data.shape}")
    aff = _RAS_TO_LPS @ np.asarray(img.affine, dtype=float)
    m = aff[:3, :3]
    spacing_xyz = np.linalg.norm(m, axis=0)
    direction = m / spacing_xyz[None, :]
    return Volume(
        array=np.ascontiguousarray(data.transpose(2, 1, 0)),
        spacing=(float(spacing_xyz[2]), float(spacing_xyz[1]), float(spacing_xyz[0])),
        origin=tuple(float(v) for v in aff[:3, 3]),  # type: ignore[arg-type]
        direction=direction,
        headers=[],
        refs=[],
    )


def volume_to_nifti(vol: Volume, path: str | Path, dtype=None) -> Path:
    """Write a :class:`Volume` as NIfTI (RAS affine), the inverse of :func:`nifti_to_volume`."""
    import nibabel as nib

    dz, dy, dx = vol.spacing
    aff = np.eye(4)
    aff[:3, :3] = np.asarray(vol.direction, dtype=float) @ np.diag([dx, dy, dz])
    aff[:3, 3] = vol.origin
    aff = _RAS_TO_LPS @ aff  # LPS -> RAS (the same flip)
    arr = vol.array.transpose(2, 1, 0)
    if dtype is not None:
        arr = arr.astype(dtype)
    img = nib.Nifti1Image(np.ascontiguousarray(arr), aff)
    img.set_qform(aff, code=1)
    img.set_sform(aff, code=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


@dataclasses.dataclass
class MyoPSCase:
    """One case: the three sequences as volumes and the label converted to model classes."""

    case_id: str
    volumes: dict[str, Volume]  # keys: bssfp, lge, t2
    label: Volume | None  # array holds model classes (uint8)


class MyoPSDataset:
    """Lists, checks and loads cases of a MyoPS380-format folder."""

    def __init__(self, root: str | Path, labels: LabelConvention = MYOPS2020, *, prealigned: bool = False) -> None:
        root = Path(root)
        raw = root / "Raw_data" if (root / "Raw_data").is_dir() else root
        missing = [name for name in (*SEQUENCES.values(), "label") if not (raw / name).is_dir()]
        if missing:
            raise DatasetError(f"{raw}: not a MyoPS380 Raw_data folder, missing {missing}")
        self.raw = raw
        self.root = root
        self.labels = labels
        self.prealigned = prealigned
        found: dict[str, set[str]] = {}
        for folder in SEQUENCES.values():
            found[folder] = {m.group(1) for p in (raw / folder).iterdir() if (m := _CASE_RE.match(p.name))}
        found["label"] = {m.group(1) for p in (raw / "label").iterdir() if (m := _LABEL_RE.match(p.name))}
        every = set().union(*found.values())
        incomplete = sorted(c for c in every if any(c not in ids for ids in found.values()))
        if incomplete:
            c = incomplete[0]
            lacks = [k for k, ids in found.items() if c not in ids]
            has = [k for k, ids in found.items() if c in ids]
            name = f"{c}_gt.nii.gz" if lacks[0] == "label" else f"{c}.nii.gz"
            more = f" ({len(incomplete) - 1} more incomplete case(s))" if len(incomplete) > 1 else ""
            raise DatasetError(f"{c}: missing {raw / lacks[0] / name} (the case has {', '.join(has)}); "
                               f"add the file or remove the case{more}")
        self.case_ids: list[str] = sorted(every)
        if not self.case_ids:
            raise DatasetError(f"{raw}: no case found in {list(SEQUENCES.values())}")

    def __len__(self) -> int:
        return len(self.case_ids)

    def label_path(self, case_id: str) -> Path:
        for suffix in (".nii.gz", ".nii"):
            p = self.raw / "label" / f"{case_id}_gt{suffix}"
            if p.is_file():
                return p
        raise DatasetError(f"{case_id}: missing {self.raw / 'label' / f'{case_id}_gt.nii.gz'}")

    def image_path(self, case_id: str, seq: str) -> Path:
        for suffix in (".nii.gz", ".nii"):
            p = self.raw / SEQUENCES[seq] / f"{case_id}{suffix}"
            if p.is_file():
                return p
        raise DatasetError(f"{case_id}: missing {self.raw / SEQUENCES[seq] / f'{case_id}.nii.gz'}")

    def check(self, case_ids: Sequence[str] | None = None) -> None:
        """Read every label (and the image headers) of ``case_ids`` before any training work: label values
        outside the convention, a label on another grid than the LGE, or (``prealigned``) sequences on
        different grids are refused with the case and the file."""
        import nibabel as nib

        for case_id in case_ids if case_ids is not None else self.case_ids:
            lpath = self.label_path(case_id)
            try:
                limg = nib.load(str(lpath))
                self.labels.to_classes(np.asarray(limg.dataobj))
            except LabelValueError as exc:
                raise DatasetError(f"{case_id}: {lpath}: {exc}") from None
            except Exception as exc:  # noqa: BLE001 - nibabel raises many types for a damaged file
                raise DatasetError(f"{case_id}: {lpath}: unreadable label file ({exc})") from None
            shapes = {}
            for seq in SEQUENCES:
                ipath = self.image_path(case_id, seq)
                try:
                    shapes[seq] = tuple(nib.load(str(ipath)).shape[:3])
                except Exception as exc:  # noqa: BLE001
                    raise DatasetError(f"{case_id}: {ipath}: unreadable image file ({exc})") from None
            if tuple(limg.shape[:3]) != shapes["lge"]:
                raise DatasetError(f"{case_id}: {lpath}: label grid {tuple(limg.shape[:3])} differs from the LGE "
                                   f"grid {shapes['lge']} ({self.image_path(case_id, 'lge')})")
            if self.prealigned and len(set(shapes.values())) > 1:
                seq = next(s for s in SEQUENCES if shapes[s] != shapes["lge"])
                raise DatasetError(f"{case_id}: {self.image_path(case_id, seq)}: grid {shapes[seq]} differs from LGE "
                                   f"{shapes['lge']}; a pre-aligned release has one grid per case (drop --prealigned "
                                   "to match and register the sequences)")

    def load(self, case_id: str, with_label: bool = True) -> MyoPSCase:
        vols = {seq: nifti_to_volume(self.image_path(case_id, seq)) for seq in SEQUENCES}
        label = None
        if with_label:
            lpath = self.label_path(case_id)
            raw = nifti_to_volume(lpath, dtype=np.float64)
            try:
                label = raw.with_array(self.labels.to_classes(raw.array))
            except LabelValueError as exc:
                raise DatasetError(f"{case_id}: {lpath}: {exc}") from None
        return MyoPSCase(case_id=case_id, volumes=vols, label=label)


def _case_number(case_id: str) -> int:
    m = re.search(r"(\d+)$", case_id)
    if m is None:
        raise ValueError(f"case id {case_id!r} has no number")
    return int(m.group(1))


def split_cases(case_ids: Sequence[str], mode: str = "every5th", seed: int = 0,
                test_fraction: float = 0.2) -> tuple[list[str], list[str]]:
    """(train, test) case ids.

    ``every5th`` (default, the MyoPS380 code's split): cases whose number is a multiple of 5 are
    test (case0005, case0010, ... -> 76 of 380).  ``random``: a seeded shuffle, ``test_fraction``
    of the cases (rounded, at least one) go to test; the same seed gives the same split.
    """
    ids = sorted(case_ids)
    if mode == "every5th":
        test = [c for c in ids if _case_number(c) % 5 == 0]
    elif mode == "random":
        rng = random.Random(seed)
        shuffled = ids[:]
        rng.shuffle(shuffled)
        n_test = max(1, int(round(test_fraction * len(ids))))
        test = sorted(shuffled[:n_test])
    else:
        raise ValueError(f"unknown split mode {mode!r} (allowed: every5th, random)")
    test_set = set(test)
    return [c for c in ids if c not in test_set], test
