"""TID 1500 Measurement Report (Comprehensive 3D SR) built with highdicom.

Layout (every container SEPARATE, so text renderers print "Concept: value unit"):

- "Imaging Measurements" (126010): one TID 1410 planar ROI group per finding that has an image
  region (:class:`~pipelines.outputs.regions.RegionSpec`) -- what viewers such as OHIF draw.
- "Derived Imaging Measurements" (126011): one TID 1501 group per finding without an image
  location (study totals, risk category, SYNTAX scores, counts, parts that could not be assessed).
  Viewers that build measurements from image regions only (OHIF 3.13 fails on a group without one
  under "Imaging Measurements") leave this container alone.
- "Qualitative Evaluations" (UMLS C0034375): present when the whole result is not assessable
  (:class:`pipelines.quality.QualityIssue` with scope ``result``).

Each container carries the full TID 4019 Algorithm Identification once (name, version, models,
software, disclaimer, provenance, notes); each group carries name, version and the disclaimer once.
A group linked to a SEG segment (``referenced_segment``) shares the segment's Tracking UID, and the
SEG is listed in the evidence.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Iterable, Iterator, Sequence, TypedDict

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from pipelines.quality import QualityIssue, check_scopes, issues_for, whole_result_issues

from . import codes
from .algorithm import AlgorithmIdentity
from .common import MANUFACTURER, fill_type2, keep_flag, new_uid
from .regions import RegionSpec

log = logging.getLogger("cardionode.outputs")

#: Most sources listed in the Image Library by default (see build_measurement_report).
IMAGE_LIBRARY_MAX = 64

__all__ = ["MeasurementSpec", "QualitativeSpec", "MeasurementGroupSpec", "build_measurement_report",
           "IMAGE_LIBRARY_MAX"]


@dataclasses.dataclass(frozen=True)
class MeasurementSpec:
    """One numeric measurement: concept, value, UCUM unit, optional method / site / derivation.

    ``value`` None: not measured, because the group is not assessable (a QualityIssue names it);
    the measurement is left out (an empty NUM with a "Measurement not attempted" qualifier is
    standard but highdicom's reader rejects it).  An ``int`` is written without decimals."""

    name: Code
    value: float | int | None
    unit: Code
    method: Code | None = None
    finding_site: Code | None = None
    derivation: Code | None = None


@dataclasses.dataclass(frozen=True)
class QualitativeSpec:
    """One coded evaluation, e.g. (HIGH_SYNTAX_SCORE, YES) or (CALCIUM_RISK_CATEGORY, <category>)."""

    name: Code
    value: Code


@dataclasses.dataclass(frozen=True)
class MeasurementGroupSpec:
    """One finding with its measurements.

    ``region``: where a viewer draws it (TID 1410 group under "Imaging Measurements"); without one
    the group is a TID 1501 group under "Derived Imaging Measurements".
    ``referenced_segment``: ``(seg, segment_number)`` (see :meth:`BuiltSegmentation.ref`): the group
    takes that segment's Tracking UID and the SEG goes into the evidence.
    ``tracking_id`` is also the name a :class:`~pipelines.quality.QualityIssue` scope refers to."""

    tracking_id: str
    finding: Code
    finding_site: Code | None = None
    measurements: Sequence[MeasurementSpec] = ()
    qualitative: Sequence[QualitativeSpec] = ()
    referenced_segment: tuple[Dataset, int] | None = None
    tracking_uid: str | None = None
    finding_category: Code | None = None
    region: RegionSpec | None = None


def _segment_tracking_uid(seg: Dataset, number: int) -> str | None:
    for item in seg.SegmentSequence:
        if int(item.SegmentNumber) == number:
            return str(item.TrackingUID) if "TrackingUID" in item else None
    raise ValueError(f"segment {number} not in SEG {seg.SOPInstanceUID}")


def _measurement(m: MeasurementSpec) -> hd.sr.Measurement:
    if m.value is None:
        raise ValueError(f"measurement {m.name.meaning!r} has no value")
    value = m.value if isinstance(m.value, int) and not isinstance(m.value, bool) else float(m.value)
    item = hd.sr.Measurement(
        name=m.name,
        value=value,
        unit=m.unit,
        method=m.method,
        derivation=m.derivation,
        finding_sites=[hd.sr.FindingSite(m.finding_site)] if m.finding_site is not None else None,
    )
    if isinstance(value, int):
        item[0].MeasuredValueSequence[0].NumericValue = str(value)  # a count reads "3", not "3.0"
    return item


def _not_assessable_items(issues: Sequence[QualityIssue]) -> list[hd.sr.ContentItem]:
    """Assessability = Not assessable, then per issue the coded reason and (when the coded meaning
    had to be cut) the full reason text."""
    contains = hd.sr.RelationshipTypeValues.CONTAINS
    items: list[hd.sr.ContentItem] = [
        hd.sr.CodeContentItem(name=codes.ASSESSABILITY, value=codes.NOT_ASSESSABLE, relationship_type=contains)]
    for issue in issues:
        items.append(hd.sr.CodeContentItem(name=codes.NOT_ASSESSABLE_REASON,
                                           value=codes.private_code(issue.code, issue.message[:64]),
                                           relationship_type=contains))
        if len(issue.message) > 64:
            items.append(hd.sr.TextContentItem(name=codes.COMMENT, value=issue.message[:1024],
                                               relationship_type=contains))
    return items


class _GroupArgs(TypedDict):
    """What TID 1410 and TID 1501 measurement groups have in common (highdicom keyword arguments)."""

    tracking_identifier: hd.sr.TrackingIdentifier
    finding_type: Code
    finding_category: Code | None
    finding_sites: list[hd.sr.FindingSite] | None
    algorithm_id: hd.sr.AlgorithmIdentification
    measurements: list[hd.sr.Measurement] | None
    qualitative_evaluations: list[hd.sr.QualitativeEvaluation] | None


def _group(spec: MeasurementGroupSpec, algorithm_id: hd.sr.AlgorithmIdentification, issues: Sequence[QualityIssue],
           ) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations | hd.sr.MeasurementsAndQualitativeEvaluations:
    unmeasured = [m.name.meaning for m in spec.measurements if m.value is None]
    if unmeasured and not issues:
        raise ValueError(f"group {spec.tracking_id!r}: {unmeasured} without a value, but no quality issue says why")
    measurements = [_measurement(m) for m in spec.measurements if m.value is not None]
    qualitative = [hd.sr.QualitativeEvaluation(name=q.name, value=q.value) for q in spec.qualitative]
    sites = [hd.sr.FindingSite(spec.finding_site)] if spec.finding_site is not None else None
    uid = spec.tracking_uid
    if spec.referenced_segment is not None:
        uid = uid or _segment_tracking_uid(*spec.referenced_segment)
    tracking = hd.sr.TrackingIdentifier(uid=uid or new_uid(), identifier=spec.tracking_id)
    common = _GroupArgs(tracking_identifier=tracking, finding_type=spec.finding,
                        finding_category=spec.finding_category, finding_sites=sites, algorithm_id=algorithm_id,
                        measurements=measurements or None, qualitative_evaluations=qualitative or None)
    group: hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations | hd.sr.MeasurementsAndQualitativeEvaluations
    if spec.region is not None:
        r = spec.region
        source = hd.sr.SourceImageForRegion.from_source_image(
            r.source, referenced_frame_numbers=[r.frame_number] if r.frame_number else None)
        region = hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE, graphic_data=r.graphic_data(),
                                   source_image=source)
        group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(referenced_region=region, **common)
    else:
        group = hd.sr.MeasurementsAndQualitativeEvaluations(**common)
    if issues:
        group[0].ContentSequence.extend(_not_assessable_items(issues))
    return group


def _library_datasets(sources: Sequence[Dataset]) -> list[Dataset]:
    """Sources that can be described in the TID 1600 Image Library.  Projection images (XA)
    without PatientOrientation / ImagerPixelSpacing cannot; they stay in the evidence only."""
    ok = []
    for ds in sources:
        try:
            hd.sr.ImageLibraryEntryDescriptors(ds)
        except (AttributeError, ValueError, TypeError) as exc:
            log.info("image library: leaving out %s (%s)", ds.get("SOPInstanceUID"), exc)
            continue
        ok.append(ds)
    return ok


def _container(name: Code, algorithm_id: hd.sr.AlgorithmIdentification,
               items: Iterable[hd.sr.ContentItem]) -> hd.sr.ContainerContentItem:
    c = hd.sr.ContainerContentItem(name=name, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
                                   is_content_continuous=False)
    c.ContentSequence = hd.sr.ContentSequence()
    c.ContentSequence.extend(items)
    c.ContentSequence.extend(algorithm_id)  # after the findings: a reader meets the numbers first
    return c


def _walk(items: Iterable[Dataset]) -> Iterator[Dataset]:
    for item in items:
        yield item
        if "ContentSequence" in item:
            yield from _walk(item.ContentSequence)


def _is_group(item: Dataset) -> bool:
    return item.get("ValueType") == "CONTAINER" and str(item.ConceptNameCodeSequence[0].CodeValue) == "125007"


def build_measurement_report(
    sources: Sequence[Dataset],
    *,
    title: Code | None = None,
    procedure: Code,
    groups: Sequence[MeasurementGroupSpec],
    algorithm: AlgorithmIdentity,
    series_number: int,
    series_description: str,
    referenced_seg: Dataset | None = None,
    extra_text: Sequence[str] = (),
    image_library: bool | None = None,
    series_instance_uid: str | None = None,
    issues: Sequence[QualityIssue] = (),
) -> Dataset:
    """A Comprehensive 3D SR (TID 1500) with one measurement group per ``groups`` item.

    ``sources`` are the analysed images (headers are enough).  ``referenced_seg`` (and any SEG
    named in a group) is added to the evidence.  ``extra_text`` lines (thresholds used, excluded
    views, ...) are recorded as Algorithm Parameters of the report's containers, next to the
    algorithm's name, version, models and disclaimer.

    ``issues``: what could not be assessed (:mod:`pipelines.quality`).  An issue scoped to a group's
    ``tracking_id`` marks that group "not assessable" with its reason; a whole-result issue
    (scope ``result``) is written to the "Qualitative Evaluations" container, and then ``groups``
    must be empty (a result that cannot be assessed reports no numbers).  A scope that names no
    group is a ValueError.

    ``title``: None chooses DCM 126000 "Imaging Measurement Report" when some group has an image
    region, else the private "Measurement Report" (:data:`codes.MEASUREMENT_REPORT_WITHOUT_REGIONS`):
    OHIF 3.13 fails on a 126000 report with nothing to draw and shows any other SR as text.

    ``image_library``: list the sources in the optional TID 1600 Image Library.  highdicom needs
    ~40 ms per entry (26 s for a 600-slice CT), so the default (None) includes it only for up to
    :data:`IMAGE_LIBRARY_MAX` sources; the sources are always in the evidence sequence.
    """
    whole = whole_result_issues(issues)
    check_scopes(issues, [g.tracking_id for g in groups], "SR")
    if whole and groups:
        raise ValueError("SR: the whole result is not assessable "
                         f"({'; '.join(i.message for i in whole)}): pass no measurement groups")
    if not groups and not whole:
        raise ValueError("an SR needs at least one measurement group or a whole-result quality issue")
    filled = fill_type2(sources)
    alg = dataclasses.replace(
        algorithm,
        parameters=tuple(algorithm.parameters) + tuple((f"note {i + 1}", t) for i, t in enumerate(extra_text)),
    )
    group_alg = alg.to_sr(full=False)
    use_library = len(filled) <= IMAGE_LIBRARY_MAX if image_library is None else image_library
    if not use_library:
        log.info("SR: %d sources, image library left out (evidence lists them)", len(filled))
    observation_context = hd.sr.ObservationContext(observer_device_context=algorithm.observer_context())
    built = [(g, _group(g, group_alg, issues_for(issues, g.tracking_id))) for g in groups]
    if title is None:
        drawn = any(g.region is not None for g in groups)
        title = codes.IMAGING_MEASUREMENT_REPORT if drawn else codes.MEASUREMENT_REPORT_WITHOUT_REGIONS
    placeholder = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=new_uid(), identifier="placeholder"))
    report = hd.sr.MeasurementReport(
        observation_context=observation_context,
        procedure_reported=procedure,
        imaging_measurements=[b for _, b in built] or [placeholder],  # highdicom needs one; regrouped below
        title=title,
        referenced_images=(_library_datasets(filled) or None) if use_library else None,
    )
    root = report[0]
    root.ContentSequence = hd.sr.ContentSequence(
        [i for i in root.ContentSequence if str(i.ConceptNameCodeSequence[0].CodeValue) != "126010"])
    planar = [b for g, b in built if g.region is not None]
    derived = [b for g, b in built if g.region is None]
    if planar:
        root.ContentSequence.append(_container(codes.IMAGING_MEASUREMENTS, alg.to_sr(), [i for b in planar for i in b]))
    if derived:
        root.ContentSequence.append(_container(codes.DERIVED_IMAGING_MEASUREMENTS, alg.to_sr(),
                                               [i for b in derived for i in b]))
    if whole:
        root.ContentSequence.append(_container(codes.QUALITATIVE_EVALUATIONS, alg.to_sr(),
                                               _not_assessable_items(whole)))
    for item in _walk([root]):
        if item.get("ValueType") == "CONTAINER":
            item.ContinuityOfContent = "SEPARATE"
    evidence: list[Dataset] = list(filled)
    segs = [referenced_seg] if referenced_seg is not None else []
    segs += [g.referenced_segment[0] for g in groups if g.referenced_segment is not None]
    seen = {str(d.SOPInstanceUID) for d in evidence}
    for seg in segs:
        if str(seg.SOPInstanceUID) not in seen:
            evidence.append(seg)
            seen.add(str(seg.SOPInstanceUID))
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=root,
        series_instance_uid=series_instance_uid or new_uid(),
        series_number=series_number,
        sop_instance_uid=new_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
        performed_procedure_codes=[procedure],
        coding_schemes=[codes.coding_scheme_item()],
    )
    flag = " - NOT ASSESSABLE" if whole else " - partly not assessable" if issues else ""
    sr.SeriesDescription = algorithm.describe(keep_flag(series_description, flag))
    return sr
