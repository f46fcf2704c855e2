"""Routing: which routes (pipeline + destinations) a study triggers.

A route matches a study when *one instance* of the study satisfies every
criterion the route gives (modality, SOP class, series description regex,
calling AE); a list in a criterion means "any of".  Every matching route
triggers its own job, so one study can run several pipelines.

The router works on :class:`InstanceFacts` (the few header values routing
needs) so that it can be used both on a complete study and on a single
instance as it arrives (to pick the quiet period).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Iterable, Sequence

from pipelines.base import StudyView

from .config import NodeConfig, Route, RouteMatch

__all__ = ["InstanceFacts", "RouteDecision", "Router", "facts_from_study"]


@dataclasses.dataclass(frozen=True)
class InstanceFacts:
    """Header values of one instance that routing looks at. ``None`` = unknown."""

    modality: str | None = None
    sop_class_uid: str | None = None
    series_description: str | None = None
    calling_ae: str | None = None


@dataclasses.dataclass(frozen=True)
class RouteDecision:
    """A route that matched: what to run and where results go."""

    index: int
    name: str
    pipeline: str
    destinations: tuple[str, ...]


def _matches(match: RouteMatch, pattern: re.Pattern[str] | None, facts: InstanceFacts, partial: bool) -> bool:
    """True when ``facts`` satisfy ``match``; with ``partial`` unknown values count as matching."""

    def ok(allowed: Sequence[str], value: str | None, fold: bool) -> bool:
        if not allowed:
            return True
        if value is None:
            return partial
        if fold:
            return value.strip().upper() in {a.strip().upper() for a in allowed}
        return value.strip() in {a.strip() for a in allowed}

    if not ok(match.modality, facts.modality, fold=True):
        return False
    if not ok(match.sop_class, facts.sop_class_uid, fold=False):
        return False
    if not ok(match.calling_ae, facts.calling_ae, fold=False):
        return False
    if pattern is not None:
        if facts.series_description is None:
            return partial
        if not pattern.search(facts.series_description):
            return False
    return True


class Router:
    """Evaluates the configured routes against a study's instances."""

    def __init__(self, config: NodeConfig) -> None:
        self._config = config
        self._routes: list[tuple[int, Route, re.Pattern[str] | None]] = [
            (i, r, re.compile(r.match.series_description) if r.match.series_description is not None else None)
            for i, r in enumerate(config.routes)
        ]

    def decide(self, facts: Iterable[InstanceFacts]) -> list[RouteDecision]:
        """Routes matched by at least one instance, in configuration order."""
        facts = list(facts)
        out = []
        for i, route, pattern in self._routes:
            if any(_matches(route.match, pattern, f, partial=False) for f in facts):
                out.append(RouteDecision(i, self._config.route_name(i), route.pipeline, tuple(route.destinations)))
        return out

    def route(self, index: int) -> Route:
        """The configured route ``index`` (a :attr:`RouteDecision.index`)."""
        return self._config.routes[index]

    @property
    def study_aware(self) -> bool:
        """True when a route declares the series it needs (``requires``): completion then checks the
        study's headers soon after each burst of arrivals instead of only after the quiet period."""
        return any(route.requires for _i, route, _p in self._routes)

    def max_wait_seconds(self, facts: InstanceFacts) -> float | None:
        """The longest ``max_wait_seconds`` of the routes an instance with ``facts`` could match (None: none set)."""
        values = [
            route.max_wait_seconds
            for _i, route, pattern in self._routes
            if route.max_wait_seconds is not None and _matches(route.match, pattern, facts, partial=True)
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
            for _i, route, pattern in self._routes
            if route.quiet_seconds is not None and _matches(route.match, pattern, facts, partial=True)
        ]
        return max(values) if values else default


def facts_from_study(study: StudyView, calling_aes: dict[str, str] | None = None) -> list[InstanceFacts]:
    """Routing facts for every instance of ``study``.

    ``calling_aes`` maps SOP Instance UID -> calling AE title when the index
    knows it per instance; otherwise each instance is paired with each of the
    study's calling AE titles (the study matched "by one of its senders").
    """
    out = []
    for series in study.series:
        for ref in series.instances:
            if calling_aes and ref.sop_instance_uid in calling_aes:
                aes: tuple[str | None, ...] = (calling_aes[ref.sop_instance_uid],)
            else:
                aes = tuple(study.calling_ae_titles) or (None,)
            for ae in aes:
                out.append(
                    InstanceFacts(
                        modality=ref.modality or series.modality,
                        sop_class_uid=ref.sop_class_uid,
                        series_description=series.series_description,
                        calling_ae=ae,
                    )
                )
    return out
