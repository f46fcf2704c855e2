"""Series completeness from instance headers, and whether a route has the series it needs.

A cardiac study usually says when it is complete: an Enhanced (multi-frame)
object or an XA run is one instance, a cine series has
``NumberOfTemporalPositions`` (or ``CardiacNumberOfImages``) images at each
slice position, and many scanners put ``ImagesInAcquisition`` in every
instance.  This module reads those values (as indexed by the spool, see
:class:`HeaderFacts`) and judges each series ``complete``, ``incomplete``
(its headers name a count not reached yet) or ``unknown`` (no rule applies:
only the quiet period can tell).  Routes that declare the series they need
(``routes[].requires``) are then ready when every requirement is met by
complete series.  Pure functions, no database, no torch: completion
(:mod:`node.completion`) calls them with what the index holds.

Limitation: a classic (one image per instance) multi-slice cine says how many
phases each position has, not how many positions there are; it is judged
complete when every position seen so far has all its phases, and the
settle time of completion (``node.settle_seconds`` without a new instance)
guards against judging it between two positions of one transfer.
"""
from __future__ import annotations

import dataclasses
import json
import re
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Iterable, Literal, Mapping, Sequence

if TYPE_CHECKING:
    from .config import SeriesRequirement

__all__ = [
    "HeaderFacts",
    "SeriesState",
    "Readiness",
    "SINGLE_OBJECT_SOP_CLASSES",
    "series_states",
    "series_state",
    "requirement_matches",
    "route_readiness",
]

Status = Literal["complete", "incomplete", "unknown"]

#: SOP classes whose one instance holds a whole acquisition: XA / XRF runs and Enhanced images
SINGLE_OBJECT_SOP_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.12.1",    # X-Ray Angiographic Image (a run: one multi-frame instance)
    "1.2.840.10008.5.1.4.1.1.12.1.1",  # Enhanced XA Image
    "1.2.840.10008.5.1.4.1.1.12.2",    # X-Ray Radiofluoroscopic Image
    "1.2.840.10008.5.1.4.1.1.12.2.1",  # Enhanced XRF Image
    "1.2.840.10008.5.1.4.1.1.2.1",     # Enhanced CT Image
    "1.2.840.10008.5.1.4.1.1.4.1",     # Enhanced MR Image
    "1.2.840.10008.5.1.4.1.1.4.3",     # Enhanced MR Color Image
    "1.2.840.10008.5.1.4.1.1.2.2",     # Legacy Converted Enhanced CT Image
    "1.2.840.10008.5.1.4.1.1.4.4",     # Legacy Converted Enhanced MR Image
})

#: header values kept per instance (the index's ``header`` column holds the ones present)
_EXTRA_KEYS = (
    "frames", "temporal_positions", "cardiac_images", "images_in_acquisition", "acquisition_number",
    "position", "scanning_sequence", "sequence_variant", "sequence_name", "concatenation_uid",
    "concatenation_number", "concatenation_total",
)


@dataclasses.dataclass(frozen=True)
class HeaderFacts:
    """Header values of one stored instance that completeness and route requirements look at.

    ``position`` is ImagePositionPatient (or SliceLocation) as text, rounded to 0.01 mm;
    ``sequence_name`` is SequenceName or, in Enhanced MR, PulseSequenceName.
    """

    series_instance_uid: str
    sop_class_uid: str = ""
    modality: str = ""
    series_description: str = ""
    instance_number: int | None = None
    frames: int | None = None
    temporal_positions: int | None = None
    cardiac_images: int | None = None
    images_in_acquisition: int | None = None
    acquisition_number: int | None = None
    position: str | None = None
    scanning_sequence: str | None = None
    sequence_variant: str | None = None
    sequence_name: str | None = None
    concatenation_uid: str | None = None
    concatenation_number: int | None = None
    concatenation_total: int | None = None

    def extra_json(self) -> str | None:
        """The values beyond the index's own columns, as compact JSON (None when there are none)."""
        extra = {k: getattr(self, k) for k in _EXTRA_KEYS if getattr(self, k) not in (None, "")}
        return json.dumps(extra, separators=(",", ":"), sort_keys=True) if extra else None

    @classmethod
    def from_index(cls, row: Mapping[str, Any]) -> "HeaderFacts":
        """From an ``instances`` row (its columns plus the ``header`` JSON)."""
        raw = row["header"] if "header" in row.keys() else None
        extra = json.loads(raw) if raw else {}
        return cls(
            series_instance_uid=row["series_instance_uid"], sop_class_uid=row["sop_class_uid"] or "",
            modality=row["modality"] or "", series_description=row["series_description"] or "",
            instance_number=row["instance_number"],
            **{k: v for k, v in extra.items() if k in _EXTRA_KEYS},
        )


@dataclasses.dataclass(frozen=True)
class SeriesState:
    """One series of a study and how complete its headers say it is."""

    series_instance_uid: str
    modality: str
    series_description: str
    sop_classes: tuple[str, ...]
    scanning_sequence: tuple[str, ...]
    sequence_variant: tuple[str, ...]
    sequence_name: str
    received: int
    expected: int | None
    status: Status
    rule: str


def _positions(instances: Sequence[HeaderFacts]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for f in instances:
        counts[f.position or "?"] += 1
    return counts


def series_state(instances: Sequence[HeaderFacts]) -> SeriesState:
    """Judge one series (all its stored instances) by the first rule its headers allow.

    1. concatenation (``InConcatenationTotalNumber``): every part present;
    2. multi-frame objects (XA/XRF runs, Enhanced CT/MR, any instance with NumberOfFrames > 1):
       each instance is a whole acquisition, so the series is complete once one is stored;
    3. cine (``NumberOfTemporalPositions`` or ``CardiacNumberOfImages`` > 1): that many images at
       every slice position seen (and at least ``ImagesInAcquisition`` when given);
    4. ``ImagesInAcquisition``: that many instances in each acquisition (``AcquisitionNumber``);
    5. otherwise ``unknown``.
    """
    if not instances:
        raise ValueError("a series has at least one instance")
    first = instances[0]
    n = len(instances)

    def state(status: Status, rule: str, expected: int | None) -> SeriesState:
        def split(value: str | None) -> tuple[str, ...]:
            return tuple(v.strip().upper() for v in (value or "").split("\\") if v.strip())

        return SeriesState(
            series_instance_uid=first.series_instance_uid,
            modality=next((f.modality for f in instances if f.modality), ""),
            series_description=next((f.series_description for f in instances if f.series_description), ""),
            sop_classes=tuple(sorted({f.sop_class_uid for f in instances if f.sop_class_uid})),
            scanning_sequence=split(next((f.scanning_sequence for f in instances if f.scanning_sequence), None)),
            sequence_variant=split(next((f.sequence_variant for f in instances if f.sequence_variant), None)),
            sequence_name=next((f.sequence_name for f in instances if f.sequence_name), "") or "",
            received=n, expected=expected, status=status, rule=rule,
        )

    totals = {f.concatenation_total for f in instances if f.concatenation_total}
    if totals:
        total = max(totals)
        parts = {(f.concatenation_uid, f.concatenation_number) for f in instances if f.concatenation_number}
        return state("complete" if len(parts) >= total else "incomplete", "concatenation", total)
    if all(f.sop_class_uid in SINGLE_OBJECT_SOP_CLASSES or (f.frames or 1) > 1 for f in instances):
        return state("complete", "multi-frame", n)
    phases = max((f.temporal_positions or f.cardiac_images or 0) for f in instances)
    if phases > 1:
        per_position = _positions(instances)
        expected = phases * len(per_position)
        iia = max((f.images_in_acquisition or 0) for f in instances)
        expected = max(expected, iia)
        done = all(c >= phases for c in per_position.values()) and n >= expected
        return state("complete" if done else "incomplete", "cine", expected)
    by_acq: dict[int | None, list[HeaderFacts]] = defaultdict(list)
    for f in instances:
        by_acq[f.acquisition_number].append(f)
    if all(any(f.images_in_acquisition for f in group) for group in by_acq.values()):
        expected = 0
        done = True
        for group in by_acq.values():
            want = max(f.images_in_acquisition or 0 for f in group)
            expected += want
            done = done and len(group) >= want
        return state("complete" if done else "incomplete", "images-in-acquisition", expected)
    return state("unknown", "none", None)


def series_states(instances: Iterable[HeaderFacts]) -> list[SeriesState]:
    """Every series of a study (instances grouped by Series Instance UID), in first-seen order."""
    groups: dict[str, list[HeaderFacts]] = {}
    for f in instances:
        groups.setdefault(f.series_instance_uid, []).append(f)
    return [series_state(items) for items in groups.values()]


def requirement_matches(req: SeriesRequirement, series: SeriesState) -> bool:
    """True when ``series`` is one ``req`` (a :class:`node.config.SeriesRequirement`) asks for.

    Lists mean any of; ``scanning_sequence`` / ``sequence_variant`` values match when the series
    has that value among its own (multi-valued CS); regexes are searched, case-sensitive as written.
    """
    if req.modality and series.modality.strip().upper() not in {m.strip().upper() for m in req.modality}:
        return False
    if req.sop_class and not set(req.sop_class) & set(series.sop_classes):
        return False
    if req.series_description is not None and not re.search(req.series_description, series.series_description):
        return False
    if req.scanning_sequence and not {v.upper() for v in req.scanning_sequence} & set(series.scanning_sequence):
        return False
    if req.sequence_variant and not {v.upper() for v in req.sequence_variant} & set(series.sequence_variant):
        return False
    if req.sequence_name is not None and not re.search(req.sequence_name, series.sequence_name):
        return False
    return True


@dataclasses.dataclass(frozen=True)
class Readiness:
    """A route's requirements against a study's series.

    ``ready``: every requirement is met by complete series (the study can complete at once);
    ``present``: every requirement is met by series not known to be incomplete (what the quiet
    period accepts); ``missing``: names of requirements not met in the ``present`` sense.
    """

    ready: bool
    present: bool
    missing: tuple[str, ...]


def route_readiness(requirements: Sequence[Any], series: Sequence[SeriesState]) -> Readiness:
    """Check ``requirements`` (``routes[].requires``) against the study's ``series``."""
    ready = True
    missing = []
    for req in requirements:
        matching = [s for s in series if requirement_matches(req, s)]
        complete = sum(1 for s in matching if s.status == "complete")
        usable = sum(1 for s in matching if s.status != "incomplete")
        ready = ready and complete >= req.min_series
        if usable < req.min_series:
            missing.append(req.name)
    return Readiness(ready=bool(requirements) and ready, present=not missing, missing=tuple(missing))
