"""MyoPS label conventions: raw label values in ``caseXXXX_gt.nii.gz`` -> model classes.

Default: the MyoPS 2020 convention -- 200 normal myocardium, 1220 edema, 2221 scar,
500 LV blood pool, 600 RV blood pool, 0 background.  Any other value is an error (not silently
background), so a release with a different convention is noticed at once.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

from pipelines.myops import labels as cls

__all__ = ["LabelConvention", "MYOPS2020", "LabelValueError"]


class LabelValueError(ValueError):
    """A label volume holds a value the convention does not know."""


@dataclasses.dataclass(frozen=True)
class LabelConvention:
    """Raw label value of each tissue; ``None`` for tissues the release does not annotate."""

    myocardium: int = 200
    edema: int = 1220
    scar: int = 2221
    lv_pool: int | None = 500
    rv_pool: int | None = 600
    background: int = 0

    @classmethod
    def from_mapping(cls, values: Mapping[str, int | None]) -> "LabelConvention":
        """Override some values, e.g. ``{"myocardium": 1, "edema": 2, "scar": 3, "lv_pool": None}``."""
        allowed = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - allowed)
        if unknown:
            raise ValueError(f"unknown label key(s) {unknown}; allowed: {sorted(allowed)}")
        return dataclasses.replace(cls(), **dict(values))

    @property
    def num_classes(self) -> int:
        """4 (background, myocardium, edema, scar) plus the blood pools the convention carries."""
        if self.rv_pool is not None and self.lv_pool is None:
            raise ValueError("an RV pool label without an LV pool label is not supported")
        return 4 + (self.lv_pool is not None) + (self.rv_pool is not None)

    def lut(self) -> dict[int, int]:
        out = {self.background: cls.BACKGROUND, self.myocardium: cls.MYOCARDIUM, self.edema: cls.EDEMA,
               self.scar: cls.SCAR}
        if self.lv_pool is not None:
            out[self.lv_pool] = cls.LV_POOL
        if self.rv_pool is not None:
            out[self.rv_pool] = cls.RV_POOL
        return out

    def to_classes(self, raw: np.ndarray) -> np.ndarray:
        """Raw label values -> model classes (uint8); unknown values raise :class:`LabelValueError`."""
        raw = np.rint(np.asarray(raw)).astype(np.int64)
        out = np.zeros(raw.shape, dtype=np.uint8)
        lut = self.lut()
        values = np.unique(raw)
        unknown = [int(v) for v in values if int(v) not in lut]
        if unknown:
            raise LabelValueError(f"label values {unknown} not in the convention {lut} (set the label values)")
        for v in values:
            out[raw == v] = lut[int(v)]
        return out

    def from_classes(self, classes: np.ndarray) -> np.ndarray:
        """Model classes -> raw values (for writing phantom labels in the release's convention)."""
        out = np.zeros(np.shape(classes), dtype=np.int16)
        for raw_value, c in self.lut().items():
            out[np.asarray(classes) == c] = raw_value
        return out


MYOPS2020 = LabelConvention()
