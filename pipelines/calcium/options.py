"""Options of the calcium pipeline (config section ``pipelines: {calcium: {...}}``), validated here."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from pipelines.base import PipelineInputError

from .agatston import DEFAULT_RISK, RiskScheme

__all__ = ["CalciumOptions", "SeriesOptions", "OptionsError"]

PREFIX = "pipelines.calcium"


class OptionsError(PipelineInputError):
    """A calcium option is invalid; the message names the key."""


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


@dataclasses.dataclass(frozen=True)
class CalciumOptions:
    model: str = "calcium-unet2d"
    threshold_hu: float = 130.0
    min_lesion_area_mm2: float = 1.0
    connectivity: int = 8
    z_rule: str = "increment"
    mask_dilation_px: int = 1
    risk_bounds: RiskScheme = DEFAULT_RISK
    risk_basis: str = "coronary"
    slab_slices: int = 16
    series: SeriesOptions = SeriesOptions()
    series_number_seg: int = 9101
    series_number_sr: int = 9102
    series_number_summary: int = 9103
    summary_image: bool = True

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None) -> "CalciumOptions":
        raw = dict(raw or {})
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - set(fields))
        if unknown:
            raise OptionsError(f"{PREFIX}.{unknown[0]}: unknown option (allowed: {', '.join(sorted(fields))})")
        kw: dict[str, Any] = {}
        for key, value in raw.items():
            path = f"{PREFIX}.{key}"
            if key == "series":
                kw[key] = _series(value, path)
            elif key == "risk_bounds":
                try:
                    kw[key] = RiskScheme.from_option(value, path)
                except ValueError as exc:
                    raise OptionsError(str(exc)) from exc
            elif key in ("model", "z_rule", "risk_basis"):
                if not isinstance(value, str) or not value:
                    raise OptionsError(f"{path}: expected a non-empty string, got {value!r}")
                kw[key] = value
            elif key == "summary_image":
                if not isinstance(value, bool):
                    raise OptionsError(f"{path}: expected true or false, got {value!r}")
                kw[key] = value
            elif key in ("connectivity", "mask_dilation_px", "slab_slices") or key.startswith("series_number"):
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise OptionsError(f"{path}: expected a non-negative integer, got {value!r}")
                kw[key] = value
            else:
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise OptionsError(f"{path}: expected a number, got {value!r}")
                kw[key] = float(value)
        opts = cls(**kw)
        if opts.connectivity not in (4, 8):
            raise OptionsError(f"{PREFIX}.connectivity: must be 4 or 8, got {opts.connectivity}")
        if opts.z_rule not in ("increment", "none"):
            raise OptionsError(f"{PREFIX}.z_rule: must be 'increment' or 'none', got {opts.z_rule!r}")
        if opts.risk_basis not in ("coronary", "all"):
            raise OptionsError(f"{PREFIX}.risk_basis: must be 'coronary' or 'all', got {opts.risk_basis!r}")
        if opts.slab_slices < 1:
            raise OptionsError(f"{PREFIX}.slab_slices: must be >= 1")
        return opts


def _series(value: Any, path: str) -> SeriesOptions:
    if not isinstance(value, Mapping):
        raise OptionsError(f"{path}: expected a mapping, got {type(value).__name__}")
    fields = {f.name for f in dataclasses.fields(SeriesOptions)}
    unknown = sorted(set(value) - fields)
    if unknown:
        raise OptionsError(f"{path}.{unknown[0]}: unknown option (allowed: {', '.join(sorted(fields))})")
    kw: dict[str, Any] = {}
    for k, v in value.items():
        if k in ("include", "exclude"):
            if isinstance(v, str):
                v = [v]
            if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
                raise OptionsError(f"{path}.{k}: expected a list of regular expressions, got {v!r}")
            import re

            for x in v:
                try:
                    re.compile(x)
                except re.error as exc:
                    raise OptionsError(f"{path}.{k}: invalid regular expression {x!r}: {exc}") from exc
            kw[k] = tuple(v)
        elif k == "require_axial":
            if not isinstance(v, bool):
                raise OptionsError(f"{path}.{k}: expected true or false, got {v!r}")
            kw[k] = v
        elif k == "min_slices":
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise OptionsError(f"{path}.{k}: expected a positive integer, got {v!r}")
            kw[k] = v
        else:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise OptionsError(f"{path}.{k}: expected a non-negative number, got {v!r}")
            kw[k] = float(v)
    return SeriesOptions(**kw)
