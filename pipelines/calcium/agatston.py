"""Agatston and volume scoring of calcium, per class and in total (numpy/scipy only, pure).

Standard definition (Agatston 1990), as implemented here:

* a voxel is calcified when its HU is >= ``threshold`` (130 HU);
* a *lesion* is a 2D connected component of calcified voxels of one class on one axial slice
  (8-connectivity in-plane by default, configurable to 4);
* lesions smaller than ``min_area_mm2`` (1 mm^2) are ignored (noise);
* each lesion scores ``area_mm2 x weight(peak HU)`` with weight 1 for 130-199, 2 for 200-299,
  3 for 300-399 and 4 for >= 400 HU;
* the score is the sum over lesions and slices.

Slice thickness/increment rule: the definition assumes contiguous 3 mm slices.  For any other
reconstruction every lesion score is multiplied by ``z_mm / 3`` where ``z_mm`` is the slice
*increment* (distance between slice positions; equals the thickness for contiguous slices and is
the right quantity for overlapping reconstructions, which would otherwise count calcium twice).
So a 1 mm contiguous series contributes 1/3 per slice and sums to the same score as 3 mm slices
of the same calcium.  ``z_rule="none"`` disables the scaling (raw per-slice sum).

Calcium volume = number of scored voxels (those in lesions that passed the area threshold)
x voxel volume (pixel area x slice increment), in mm^3.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping, Sequence

import numpy as np
import numpy.typing as npt
from scipy import ndimage

__all__ = [
    "HU_THRESHOLD",
    "density_weight",
    "Lesion",
    "ClassScore",
    "AgatstonResult",
    "agatston",
    "RiskScheme",
    "DEFAULT_RISK",
    "KAPPA_RISK",
]

HU_THRESHOLD = 130.0
REFERENCE_THICKNESS_MM = 3.0


def density_weight(peak_hu: float, threshold: float = HU_THRESHOLD) -> int:
    """Agatston density factor of a lesion from its peak HU (0 below the threshold)."""
    if peak_hu >= 400:
        return 4
    if peak_hu >= 300:
        return 3
    if peak_hu >= 200:
        return 2
    if peak_hu >= threshold:
        return 1
    return 0


@dataclasses.dataclass(frozen=True)
class Lesion:
    """One scored 2D lesion (slice index in the array's z order)."""

    label: int
    slice_index: int
    area_mm2: float
    peak_hu: float
    weight: int
    score: float  # area x weight x z factor
    n_voxels: int


@dataclasses.dataclass
class ClassScore:
    """Agatston score, calcium volume and lesion count of one class."""

    label: int
    score: float = 0.0
    volume_mm3: float = 0.0
    n_lesions: int = 0


@dataclasses.dataclass
class AgatstonResult:
    """Scores per class (every requested class present, zero when no calcium) and in total."""

    per_class: dict[int, ClassScore]
    lesions: list[Lesion]
    z_factor: float
    z_mm: float
    pixel_area_mm2: float

    @property
    def total(self) -> float:
        return float(sum(c.score for c in self.per_class.values()))

    @property
    def total_volume_mm3(self) -> float:
        return float(sum(c.volume_mm3 for c in self.per_class.values()))


def _structure(connectivity: int) -> npt.NDArray[np.bool_]:
    if connectivity == 8:
        return np.ones((3, 3), dtype=bool)
    if connectivity == 4:
        cross: npt.NDArray[np.bool_] = ndimage.generate_binary_structure(2, 1)
        return cross
    raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")


def agatston(
    hu: np.ndarray,
    labels: np.ndarray,
    pixel_spacing_yx: Sequence[float],
    z_mm: float,
    *,
    classes: Iterable[int] | None = None,
    threshold: float = HU_THRESHOLD,
    min_area_mm2: float = 1.0,
    connectivity: int = 8,
    z_rule: str = "increment",
    reference_mm: float = REFERENCE_THICKNESS_MM,
) -> AgatstonResult:
    """Score calcium inside ``labels`` (same shape as ``hu``, (z, y, x); 0 = none, k = class k).

    ``hu`` may be int16 or float.  Only slices with labelled voxels are touched, so a 600-slice
    volume with sparse labels costs little memory.  ``z_rule``: ``"increment"`` (scale by
    ``z_mm / reference_mm``) or ``"none"``.
    """
    if hu.shape != labels.shape:
        raise ValueError(f"hu {hu.shape} and labels {labels.shape} differ in shape")
    if hu.ndim != 3:
        raise ValueError(f"expected (z, y, x) arrays, got {hu.ndim} dimensions")
    if z_rule == "increment":
        z_factor = float(z_mm) / reference_mm
    elif z_rule == "none":
        z_factor = 1.0
    else:
        raise ValueError(f"z_rule must be 'increment' or 'none', got {z_rule!r}")
    px_area = float(pixel_spacing_yx[0]) * float(pixel_spacing_yx[1])
    structure = _structure(connectivity)
    wanted = None if classes is None else [int(c) for c in classes]
    per_class: dict[int, ClassScore] = {c: ClassScore(c) for c in (wanted or [])}
    lesions: list[Lesion] = []
    zs = np.flatnonzero(labels.reshape(labels.shape[0], -1).any(axis=1))
    for z in zs:
        lab = labels[z]
        calc = hu[z] >= threshold
        present = np.unique(lab[calc & (lab > 0)])
        for c in present.tolist():
            if wanted is not None and c not in wanted:
                continue
            comp, n = ndimage.label(calc & (lab == c), structure=structure)
            if n == 0:
                continue
            idx = np.arange(1, n + 1)
            counts = ndimage.sum_labels(np.ones_like(comp, dtype=np.int32), comp, idx)
            peaks = ndimage.maximum(hu[z], comp, idx)
            cs = per_class.setdefault(c, ClassScore(c))
            for count, peak in zip(np.atleast_1d(counts), np.atleast_1d(peaks)):
                area = float(count) * px_area
                if area < min_area_mm2:
                    continue
                w = density_weight(float(peak), threshold)
                score = area * w * z_factor
                lesions.append(Lesion(c, int(z), area, float(peak), w, score, int(count)))
                cs.score += score
                cs.volume_mm3 += area * float(z_mm)
                cs.n_lesions += 1
    return AgatstonResult(per_class=dict(sorted(per_class.items())), lesions=lesions, z_factor=z_factor,
                          z_mm=float(z_mm), pixel_area_mm2=px_area)


@dataclasses.dataclass(frozen=True)
class RiskScheme:
    """Risk categories from upper bounds: ``bounds=(0, 10, 100, 400)`` gives
    0 / 1-10 / 11-100 / 101-400 / >400 (a score s falls in the first category whose bound >= s)."""

    bounds: tuple[float, ...]
    names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        b = tuple(float(x) for x in self.bounds)
        if not b or b[0] != 0 or any(y <= x for x, y in zip(b, b[1:])):
            raise ValueError(f"risk bounds must start at 0 and increase strictly, got {list(self.bounds)}")
        object.__setattr__(self, "bounds", b)
        if not self.names:
            names = ["0"]
            for lo, hi in zip(b, b[1:]):
                names.append(f"{int(lo) + 1}-{int(hi)}")
            names.append(f">{int(b[-1])}")
            object.__setattr__(self, "names", tuple(names))
        if len(self.names) != len(b) + 1:
            raise ValueError(f"{len(b)} bounds need {len(b) + 1} category names, got {len(self.names)}")

    def index(self, score: float) -> int:
        for i, hi in enumerate(self.bounds):
            if score <= hi + 1e-9:
                return i
        return len(self.bounds)

    def name(self, score: float) -> str:
        return self.names[self.index(score)]

    @classmethod
    def from_option(cls, value: object, key: str) -> "RiskScheme":
        """From a config value: a list of bounds, or a mapping {bounds: [...], names: [...]}."""
        try:
            if isinstance(value, Mapping):
                return cls(tuple(value["bounds"]), tuple(value.get("names", ())))
            if not isinstance(value, Iterable):
                raise TypeError(f"'{type(value).__name__}' object is not iterable")
            return cls(tuple(value))
        except (TypeError, KeyError, ValueError) as exc:
            raise ValueError(f"{key}: {exc}") from exc


DEFAULT_RISK = RiskScheme((0, 10, 100, 400))
KAPPA_RISK = RiskScheme((0, 100, 400))
