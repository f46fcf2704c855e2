"""TID 1500 Measurement Report (Comprehensive 3D SR) built with highdicom.

One measurement group per finding (e.g. per artery, per tissue class, or the study total).  A
group that has a segment in a SEG references it (TID 1411 volumetric ROI group); one without
(study-level score, artery with zero calcium) is a TID 1501 group.  Source images are listed in
the Image Library and in CurrentRequestedProcedureEvidenceSequence.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from . import codes
from .algorithm import AlgorithmIdentity
from .common import MANUFACTURER, fill_type2, new_uid

log = logging.getLogger("cardionode.outputs")

#: Most sources listed in the Image Library by default (see build_measurement_report).
IMAGE_LIBRARY_MAX = 64

__all__ = ["MeasurementSpec", "QualitativeSpec", "MeasurementGroupSpec", "build_measurement_report"]


@dataclasses.dataclass(frozen=True)
class MeasurementSpec:
    """One numeric measurement: concept, value, UCUM unit, optional method / site / derivation."""

    name: Code
    value: float
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
    """One finding with its measurements; ``referenced_segment`` is ``(seg, segment_number)``
    (see :meth:`BuiltSegmentation.ref`) or None for study-level / empty findings."""

    tracking_id: str
    finding: Code
    finding_site: Code | None = None
    measurements: Sequence[MeasurementSpec] = ()
    qualitative: Sequence[QualitativeSpec] = ()
    referenced_segment: tuple[Dataset, int] | None = None
    tracking_uid: str | None = None
    finding_category: Code | None = None


def _segment_tracking_uid(seg: Dataset, number: int) -> str | None:
    for item in seg.SegmentSequence:
        if int(item.SegmentNumber) == number:
            return str(item.TrackingUID) if "TrackingUID" in item else None
    raise ValueError(f"segment {number} not in SEG {seg.SOPInstanceUID}")


def _group(spec: MeasurementGroupSpec, algorithm_id: hd.sr.AlgorithmIdentification):
    measurements = [
        hd.sr.Measurement(
            name=m.name,
            value=float(m.value),
            unit=m.unit,
            method=m.method,
            derivation=m.derivation,
            finding_sites=[hd.sr.FindingSite(m.finding_site)] if m.finding_site is not None else None,
            algorithm_id=algorithm_id,
        )
        for m in spec.measurements
    ]
    qualitative = [hd.sr.QualitativeEvaluation(name=q.name, value=q.value) for q in spec.qualitative]
    sites = [hd.sr.FindingSite(spec.finding_site)] if spec.finding_site is not None else None
    uid = spec.tracking_uid
    if spec.referenced_segment is not None:
        seg, number = spec.referenced_segment
        uid = uid or _segment_tracking_uid(seg, number)
        tracking = hd.sr.TrackingIdentifier(uid=uid or new_uid(), identifier=spec.tracking_id)
        return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking,
            referenced_segment=hd.sr.ReferencedSegment.from_segmentation(seg, number),
            finding_type=spec.finding,
            finding_category=spec.finding_category,
            finding_sites=sites,
            algorithm_id=algorithm_id,
            measurements=measurements or None,
            qualitative_evaluations=qualitative or None,
        )
    tracking = hd.sr.TrackingIdentifier(uid=uid or new_uid(), identifier=spec.tracking_id)
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking,
        finding_type=spec.finding,
        finding_category=spec.finding_category,
        finding_sites=sites,
        algorithm_id=algorithm_id,
        measurements=measurements or None,
        qualitative_evaluations=qualitative or None,
    )


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


def build_measurement_report(
    sources: Sequence[Dataset],
    *,
    title: Code = codes.IMAGING_MEASUREMENT_REPORT,
    procedure: Code,
    groups: Sequence[MeasurementGroupSpec],
    algorithm: AlgorithmIdentity,
    series_number: int,
    series_description: str,
    referenced_seg: Dataset | None = None,
    extra_text: Sequence[str] = (),
    image_library: bool | None = None,
    series_instance_uid: str | None = None,
) -> Dataset:
    """A Comprehensive 3D SR (TID 1500) with one measurement group per ``groups`` item.

    ``sources`` are the analysed images (headers are enough).  ``referenced_seg`` (and any SEG
    named in a group) is added to the evidence.  ``extra_text`` lines (thresholds used, excluded
    views, ...) are recorded as Algorithm Parameters text items next to the algorithm's name and
    version, together with the phantom disclaimer when it applies.

    ``image_library``: list the sources in the optional TID 1600 Image Library.  highdicom needs
    ~40 ms per entry (26 s for a 600-slice CT), so the default (None) includes it only for up to
    :data:`IMAGE_LIBRARY_MAX` sources; the sources are always in the evidence sequence.
    """
    if not groups:
        raise ValueError("an SR needs at least one measurement group")
    filled = fill_type2(sources)
    alg = dataclasses.replace(
        algorithm, parameters=tuple(algorithm.parameters) + tuple((f"note {i + 1}", t) for i, t in enumerate(extra_text))
    )
    algorithm_id = alg.to_sr()
    use_library = len(filled) <= IMAGE_LIBRARY_MAX if image_library is None else image_library
    if not use_library:
        log.info("SR: %d sources, image library left out (evidence lists them)", len(filled))
    observation_context = hd.sr.ObservationContext(observer_device_context=algorithm.observer_context())
    report = hd.sr.MeasurementReport(
        observation_context=observation_context,
        procedure_reported=procedure,
        imaging_measurements=[_group(g, algorithm_id) for g in groups],
        title=title,
        referenced_images=(_library_datasets(filled) or None) if use_library else None,
    )
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
        content=report,
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
    sr.SeriesDescription = algorithm.describe(series_description)
    return sr
