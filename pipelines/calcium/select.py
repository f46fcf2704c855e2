"""Choose the CT series to score: axial, slice thickness within limits, enough slices, patterns."""
from __future__ import annotations

import re

import numpy as np

from pipelines.base import PipelineInputError, SeriesView, StudyView
from pipelines.imaging import describe_series
from pipelines.imaging.select import series_text

from .options import SeriesOptions

__all__ = ["select_ct_series", "series_problem"]


def _thickness(series: SeriesView) -> float | None:
    v = series.first_header.get("SliceThickness")
    try:
        return float(v) if v not in (None, "") else None
    except (TypeError, ValueError):
        return None


def series_problem(series: SeriesView, rules: SeriesOptions) -> str | None:
    """Why ``series`` cannot be scored (None when it can)."""
    if series.modality.upper() != "CT":
        return f"modality {series.modality}"
    text = series_text(series)
    if not any(re.search(p, text, re.IGNORECASE) for p in rules.include):
        return f"description does not match include {list(rules.include)}"
    hit = next((p for p in rules.exclude if re.search(p, text, re.IGNORECASE)), None)
    if hit:
        return f"description matches exclude {hit!r}"
    if len(series) < rules.min_slices:
        return f"{len(series)} instances < min_slices {rules.min_slices}"
    hdr = series.first_header
    image_type = [str(t).upper() for t in (hdr.get("ImageType") or [])]
    if "LOCALIZER" in image_type:
        return "ImageType LOCALIZER"
    if rules.require_axial:
        iop = hdr.get("ImageOrientationPatient")
        enhanced = "PerFrameFunctionalGroupsSequence" in hdr or "SharedFunctionalGroupsSequence" in hdr
        if iop is None and not enhanced:
            return "no ImageOrientationPatient"
        if iop is not None:
            o = np.asarray([float(v) for v in iop])
            normal = np.cross(o[:3], o[3:])
            if abs(normal[2]) < 0.95:
                return "not axial (slice normal %s)" % np.round(normal, 2).tolist()
    t = _thickness(series)
    if t is not None and not (rules.min_thickness_mm <= t <= rules.max_thickness_mm):
        return f"slice thickness {t:g} mm outside [{rules.min_thickness_mm:g}, {rules.max_thickness_mm:g}]"
    return None


def select_ct_series(study: StudyView, rules: SeriesOptions) -> SeriesView:
    """The best-fitting series, or PipelineInputError listing every series and why it was rejected."""
    ok, rejected = [], []
    for s in study.series:
        why = series_problem(s, rules)
        (rejected.append(f"{describe_series(s)}: {why}") if why else ok.append(s))
    if not ok:
        raise PipelineInputError("no CT series fits the calcium scoring rules (pipelines.calcium.series): "
                                 + "; ".join(rejected or ["study is empty"]))

    def key(s: SeriesView) -> tuple[float, int, int]:
        t = _thickness(s)
        return (abs((t if t is not None else rules.prefer_thickness_mm) - rules.prefer_thickness_mm), -len(s),
                -(s.series_number or 0))

    return min(ok, key=key)
