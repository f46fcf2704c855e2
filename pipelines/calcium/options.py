"""Options of the calcium pipeline (config section ``pipelines: {calcium: {...}}``) and their rules."""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Literal, Mapping

from pipelines.options import OptionsError, parse_options

from .agatston import DEFAULT_RISK, RiskScheme

__all__ = ["CalciumOptions", "SeriesOptions", "OptionsError"]

@dataclasses.dataclass(frozen=True)
class SeriesOptions:
    """Which CT series to score (all rules must hold; among several, thickness closest to
    ``prefer_thickness_mm`` wins, then most slices)."""

    include: tuple[str, ...] = (".*",)
    exclude: tuple[str, ...] = ("scout", "topogram", "localizer", "surview", r"\bmip\b", "minip", "dose", "report")
    min_slices: int = 16
    max_thickness_mm: float = 5.0
    min_thickness_mm: float = 0.0
    prefer_thickness_mm: float = 3.0
    require_axial: bool = True

    def validate(self, path: str) -> None:
        for key, patterns in (("include", self.include), ("exclude", self.exclude)):
            for pattern in patterns:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise OptionsError(f"{path}.{key}: invalid regular expression {pattern!r}: {exc}") from None
        if self.min_slices < 1:
            raise OptionsError(f"{path}.min_slices: expected a positive integer, got {self.min_slices}")
        for key, mm in (("max_thickness_mm", self.max_thickness_mm), ("min_thickness_mm", self.min_thickness_mm),
                        ("prefer_thickness_mm", self.prefer_thickness_mm)):
            if mm < 0:
                raise OptionsError(f"{path}.{key}: expected a non-negative number, got {mm}")


@dataclasses.dataclass(frozen=True)
class CalciumOptions:
    model: str = "calcium-unet2d"
    threshold_hu: float = 130.0
    min_lesion_area_mm2: float = 1.0
    connectivity: Literal[4, 8] = 8
    z_rule: Literal["increment", "none"] = "increment"
    mask_dilation_px: int = 1
    risk_bounds: RiskScheme = DEFAULT_RISK
    risk_basis: Literal["coronary", "all"] = "coronary"
    slab_slices: int = 16
    series: SeriesOptions = SeriesOptions()
    series_number_seg: int = 9101
    series_number_sr: int = 9102
    series_number_summary: int = 9103
    summary_image: bool = True

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | None) -> "CalciumOptions":
        """The ``pipelines.calcium`` mapping, validated (:func:`pipelines.options.parse_options`)."""
        return parse_options(cls, raw, "calcium", converters={RiskScheme: RiskScheme.from_option})

    from_mapping = parse

    def validate(self, path: str) -> None:
        if not self.model:
            raise OptionsError(f"{path}.model: expected a non-empty string, got {self.model!r}")
        for key, n in (("mask_dilation_px", self.mask_dilation_px), ("series_number_seg", self.series_number_seg),
                       ("series_number_sr", self.series_number_sr),
                       ("series_number_summary", self.series_number_summary)):
            if n < 0:
                raise OptionsError(f"{path}.{key}: expected a non-negative integer, got {n}")
        if self.slab_slices < 1:
            raise OptionsError(f"{path}.slab_slices: must be >= 1, got {self.slab_slices}")
