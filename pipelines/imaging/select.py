"""Keyword selection of series shared by pipelines (e.g. LGE / T2w / bSSFP in a cardiac MR study)."""
from __future__ import annotations

import dataclasses
import re
from typing import Mapping, Sequence

from pipelines.base import PipelineInputError, SeriesView, StudyView

__all__ = ["SeriesRule", "match_series", "describe_series", "series_text"]

#: Header attributes searched by the rules (from the first instance of each series).
SEARCHED_ATTRIBUTES = ("SeriesDescription", "ProtocolName", "SequenceName")


@dataclasses.dataclass(frozen=True)
class SeriesRule:
    """Patterns (case-insensitive regular expressions) for one wanted series."""

    include: Sequence[str]
    exclude: Sequence[str] = ()
    modalities: Sequence[str] = ()
    optional: bool = False


def series_text(series: SeriesView) -> str:
    """The text the rules search: description, protocol and sequence name, ' | '-joined."""
    parts = [series.series_description]
    try:
        hdr = series.first_header
    except Exception:  # unreadable first file: match on the index's description only
        hdr = None
    if hdr is not None:
        for attr in SEARCHED_ATTRIBUTES:
            v = hdr.get(attr)
            if v not in (None, "") and str(v) not in parts:
                parts.append(str(v))
    return " | ".join(p for p in parts if p)


def describe_series(series: SeriesView) -> str:
    return f"#{series.series_number if series.series_number is not None else '?'} {series.modality} " \
        f"'{series_text(series)}' ({len(series)} instances)"


def _rule(value: SeriesRule | Sequence[str]) -> SeriesRule:
    if isinstance(value, SeriesRule):
        return value
    if isinstance(value, str):
        return SeriesRule(include=(value,))
    return SeriesRule(include=tuple(value))


def _matches(series: SeriesView, rule: SeriesRule) -> bool:
    if rule.modalities and series.modality.upper() not in {m.upper() for m in rule.modalities}:
        return False
    text = series_text(series)
    if not any(re.search(p, text, re.IGNORECASE) for p in rule.include):
        return False
    return not any(re.search(p, text, re.IGNORECASE) for p in rule.exclude)


def match_series(
    study: StudyView,
    rules: Mapping[str, SeriesRule | Sequence[str]],
    *,
    modalities: Sequence[str] = (),
    exclusive: bool = True,
) -> dict[str, SeriesView]:
    """Pick one series per rule name.

    ``rules`` maps a name to patterns (case-insensitive regexes, plain keywords work) searched in
    SeriesDescription / ProtocolName / SequenceName, or to a :class:`SeriesRule`.  Among several
    candidates the one with most instances wins, then the highest SeriesNumber (a repeat).  With
    ``exclusive`` a series is given to the first rule that claims it.  Missing non-optional rules
    raise :class:`PipelineInputError` naming what was missing and what the study holds.
    """
    candidates = [s for s in study.series if not modalities or s.modality.upper() in {m.upper() for m in modalities}]
    chosen: dict[str, SeriesView] = {}
    used: set[str] = set()
    missing: list[str] = []
    for name, raw in rules.items():
        rule = _rule(raw)
        hits = [s for s in candidates if _matches(s, rule) and not (exclusive and s.series_instance_uid in used)]
        if not hits:
            if not rule.optional:
                missing.append(f"{name} (patterns {list(rule.include)})")
            continue
        best = max(hits, key=lambda s: (len(s), s.series_number or 0))
        chosen[name] = best
        used.add(best.series_instance_uid)
    if missing:
        found = "; ".join(describe_series(s) for s in study.series) or "no series"
        raise PipelineInputError(f"missing series: {', '.join(missing)}. Study has: {found}")
    return chosen
