"""Routing: which routes (pipeline + destinations) a study triggers.

A route matches a study when *one instance* of the study satisfies every
criterion the route gives (modality, SOP class, series description regex,
calling AE, and any DICOM keyword: ``keywords`` exact or any of a list,
``regex`` searched); a list in a criterion means "any of".  Every matching
route triggers its own job, so one study can run several pipelines; a route's
``priority`` goes with its jobs (higher ones are claimed first).  Keyword values
are read from the header of the first instance of each series, only when some
route names keywords.

The router works on :class:`InstanceFacts` (the few header values routing
needs) so that it can be used both on a complete study and on a single
instance as it arrives (to pick the quiet period).
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from pipelines.base import StudyView

from .config import NodeConfig, Route, RouteMatch

__all__ = ["InstanceFacts", "RouteDecision", "RouteExplanation", "Router", "facts_from_study", "header_values"]


@dataclasses.dataclass(frozen=True)
class InstanceFacts:
    """Header values of one instance that routing looks at. ``None`` = unknown."""

    modality: str | None = None
    sop_class_uid: str | None = None
    series_description: str | None = None
    calling_ae: str | None = None
    #: header values of the DICOM keywords routes name (None: not read yet, e.g. while receiving)
    values: Mapping[str, str] | None = dataclasses.field(default=None, hash=False, compare=False)


@dataclasses.dataclass(frozen=True)
class RouteDecision:
    """A route that matched: what to run, where results go, how urgent."""

    index: int
    name: str
    pipeline: str
    destinations: tuple[str, ...]
    priority: int = 0


@dataclasses.dataclass(frozen=True)
class RouteExplanation:
    """Whether a route matches a study and why: the instance that matched, or each failed criterion."""

    index: int
    name: str
    pipeline: str
    destinations: tuple[str, ...]
    priority: int
    matches: bool
    why: str


def _mismatch(match: RouteMatch, pattern: re.Pattern[str] | None, keyword_patterns: Mapping[str, re.Pattern[str]],
              facts: InstanceFacts, partial: bool) -> str | None:
    """None when ``facts`` satisfy ``match`` (with ``partial`` unknown values count as matching), else the
    first criterion that fails, in words."""

    def fails(name: str, allowed: Sequence[str], value: str | None, fold: bool) -> str | None:
        if not allowed or (value is None and partial):
            return None
        shown = "(none)" if not value else value.strip()
        if value is None:
            return f"{name} unknown, wanted {' or '.join(allowed)}"
        if fold:
            ok = value.strip().upper() in {a.strip().upper() for a in allowed}
        else:
            ok = value.strip() in {a.strip() for a in allowed}
        return None if ok else f"{name} {shown} is not {' or '.join(allowed)}"

    for why in (fails("Modality", match.modality, facts.modality, True),
                fails("SOP class", match.sop_class, facts.sop_class_uid, False),
                fails("calling AE", match.calling_ae, facts.calling_ae, False)):
        if why:
            return why
    if pattern is not None:
        if facts.series_description is None:
            if not partial:
                return f"SeriesDescription unknown, wanted /{pattern.pattern}/"
        elif not pattern.search(facts.series_description):
            return f"SeriesDescription {facts.series_description!r} does not match /{pattern.pattern}/"
    for keyword, allowed in match.keywords.items():
        value = None if facts.values is None else facts.values.get(keyword, "")
        why = fails(keyword, allowed, value, False)
        if why:
            return why
    for keyword, compiled in keyword_patterns.items():
        if facts.values is None:
            if partial:
                continue
            return f"{keyword} unknown, wanted /{compiled.pattern}/"
        value = facts.values.get(keyword, "")
        if not compiled.search(value):
            return f"{keyword} {value!r} does not match /{compiled.pattern}/"
    return None


def _matches(match: RouteMatch, pattern: re.Pattern[str] | None, keyword_patterns: Mapping[str, re.Pattern[str]],
             facts: InstanceFacts, partial: bool) -> bool:
    return _mismatch(match, pattern, keyword_patterns, facts, partial) is None


class Router:
    """Evaluates the configured routes against a study's instances."""

    def __init__(self, config: NodeConfig) -> None:
        self._config = config
        self._routes: list[tuple[int, Route, re.Pattern[str] | None, dict[str, re.Pattern[str]]]] = [
            (i, r, re.compile(r.match.series_description) if r.match.series_description is not None else None,
             {k: re.compile(v) for k, v in r.match.regex.items()})
            for i, r in enumerate(config.routes)
        ]
        #: DICOM keywords some route matches on: their values are read from each series' header
        self.keywords: tuple[str, ...] = tuple(sorted({k for r in config.routes for k in (*r.match.keywords,
                                                                                         *r.match.regex)}))

    def decide(self, facts: Iterable[InstanceFacts]) -> list[RouteDecision]:
        """Routes matched by at least one instance, in configuration order."""
        facts = list(facts)
        out = []
        for i, route, pattern, keyword_patterns in self._routes:
            if any(_matches(route.match, pattern, keyword_patterns, f, partial=False) for f in facts):
                out.append(RouteDecision(i, self._config.route_name(i), route.pipeline, tuple(route.destinations),
                                         route.priority))
        return out

    def explain(self, facts: Iterable[InstanceFacts]) -> list[RouteExplanation]:
        """Every configured route: would it match these instances, and why (not)."""
        facts = list(facts)
        out = []
        for i, route, pattern, keyword_patterns in self._routes:
            reasons = [(f, _mismatch(route.match, pattern, keyword_patterns, f, partial=False)) for f in facts]
            hits = [f for f, why in reasons if why is None]
            if hits:
                f = hits[0]
                why = (f"{f.modality or '?'} series {f.series_description or ''!r} from {f.calling_ae or '?'} "
                       "meets every criterion")
            elif reasons:
                why = "; ".join(dict.fromkeys(why for _f, why in reasons if why))
            else:
                why = "no instances to compare with"
            out.append(RouteExplanation(i, self._config.route_name(i), route.pipeline, tuple(route.destinations),
                                        route.priority, bool(hits), why))
        return out

    def route(self, index: int) -> Route:
        """The configured route ``index`` (a :attr:`RouteDecision.index`)."""
        return self._config.routes[index]

    @property
    def study_aware(self) -> bool:
        """True when a route declares the series it needs (``requires``): completion then checks the
        study's headers soon after each burst of arrivals instead of only after the quiet period."""
        return any(route.requires for _i, route, _p, _k in self._routes)

    def max_wait_seconds(self, facts: InstanceFacts) -> float | None:
        """The longest ``max_wait_seconds`` of the routes an instance with ``facts`` could match (None: none set)."""
        values = [
            route.max_wait_seconds
            for _i, route, pattern, keyword_patterns in self._routes
            if route.max_wait_seconds is not None
            and _matches(route.match, pattern, keyword_patterns, facts, partial=True)
        ]
        return max(values) if values else None

    def quiet_seconds(self, facts: InstanceFacts) -> float:
        """Quiet period for a study that just received an instance with ``facts``.

        The longest ``quiet_seconds`` of the routes this instance could match
        (criteria not known yet count as matching); the node default when no
        route sets its own or none could match.
        """
        default = self._config.node.quiet_seconds
        values = [
            route.quiet_seconds
            for _i, route, pattern, keyword_patterns in self._routes
            if route.quiet_seconds is not None and _matches(route.match, pattern, keyword_patterns, facts, partial=True)
        ]
        return max(values) if values else default


def _text(value: Any) -> str:
    """A header value as routing compares it: multi-valued joined with backslashes, blanks stripped."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v).strip() for v in value)
    return str(value).strip()


def header_values(path: str | Path, keywords: Sequence[str]) -> dict[str, str]:
    """The values of ``keywords`` in one file's header (absent or unreadable: empty string)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(keywords))
    except Exception:  # a file that cannot be read matches no keyword criterion
        return {k: "" for k in keywords}
    return {k: _text(ds.get(k)) for k in keywords}


def facts_from_study(study: StudyView, keywords: Sequence[str] = ()) -> list[InstanceFacts]:
    """Routing facts for every instance of ``study``, each paired with each of the study's calling AE
    titles (the study matches "by one of its senders").  ``keywords``: DICOM keywords whose values are
    read from the first instance of each series."""
    out = []
    aes: tuple[str | None, ...] = tuple(study.calling_ae_titles) or (None,)
    for series in study.series:
        values = header_values(series.instances[0].path, keywords) if keywords and series.instances else None
        for ref in series.instances:
            for ae in aes:
                out.append(
                    InstanceFacts(
                        modality=ref.modality or series.modality,
                        sop_class_uid=ref.sop_class_uid,
                        series_description=series.series_description,
                        calling_ae=ae,
                        values=values,
                    )
                )
    return out
