"""Calcium results as DICOM: SEG of the scored calcium per class, SR (TID 1500), summary image.

SR layout (docs/outputs.md): one TID 1410 planar ROI group per class with calcium, drawn as the
box around that class's calcium on its key slice (the slice with the most of it) and carrying the
class's whole-scan figures; classes without calcium, the coronary total (with the risk category)
and the all-class total are location-less groups under "Derived Imaging Measurements".
Coronary classes and the coronary total use SCT 450360000 "Coronary artery calcium score"; valve
and aortic calcium and the all-class total have their own (private) concepts.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from pipelines.base import SeriesView
from pipelines.quality import QualityIssue
from pipelines.imaging import Volume
from pipelines.outputs import (AlgorithmIdentity, BuiltSegmentation, MeasurementGroupSpec, MeasurementSpec,
                               QualitativeSpec, RegionSpec, SegmentSpec, build_measurement_report, build_segmentation,
                               build_summary_image, codes, key_slice, outline_box)

from .agatston import AgatstonResult
from .labels import CLASSES, CalciumClass
from .options import CalciumOptions

__all__ = ["segment_specs", "score_concept", "CalciumOutputs", "build_outputs", "build_not_assessable"]

#: Agatston concept per non-coronary class value (coronary classes: SCT 450360000)
_NON_CORONARY_SCORE = {"MV": codes.MITRAL_VALVE_CALCIUM_SCORE, "AORTA": codes.THORACIC_AORTA_CALCIUM_SCORE,
                       "AV": codes.AORTIC_VALVE_CALCIUM_SCORE}


def score_concept(c: CalciumClass) -> Code:
    """The concept of a class's Agatston score: coronary artery calcium score only for coronary classes."""
    return codes.CORONARY_ARTERY_CALCIUM_SCORE if c.coronary else _NON_CORONARY_SCORE[c.key]


def segment_specs() -> list[SegmentSpec]:
    return [SegmentSpec(label=c.name, category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
                        property_type=codes.PATHOLOGIC_CALCIFICATION, anatomic_region=c.site, rgb=c.rgb,
                        tracking_id=f"calcium-{c.key}") for c in CLASSES]


@dataclasses.dataclass
class CalciumOutputs:
    datasets: list[Dataset]
    coronary: float
    total: float
    category: str


def _seg(vol: Volume, labels: np.ndarray, alg: AlgorithmIdentity, opts: CalciumOptions) -> BuiltSegmentation | None:
    """SEG over the slices that hold calcium (single-frame sources) or the whole multi-frame source."""
    keep = np.flatnonzero(labels.reshape(labels.shape[0], -1).any(axis=1))
    if keep.size == 0:
        return None
    if vol.is_multiframe:
        sources, masks = vol.source_datasets, vol.to_source_order(labels)
    else:
        sources, masks = [vol.headers[i] for i in keep], labels[keep]
    return build_segmentation(sources, masks, segment_specs(), algorithm=alg, series_number=opts.series_number_seg,
                              series_description="Calcium by class (COCA 8 classes)")


def _region(vol: Volume, mask: np.ndarray) -> RegionSpec | None:
    k = key_slice(mask)
    if k is None:
        return None
    return outline_box(mask[k], vol.headers[k], frame_number=vol.frame_numbers[k] if vol.is_multiframe else None)


def _groups(vol: Volume, labels: np.ndarray, score: AgatstonResult, seg: BuiltSegmentation | None,
            coronary: float, total: float, category: str) -> list[MeasurementGroupSpec]:
    groups = []
    for c in CLASSES:
        cs = score.per_class[c.value]
        groups.append(MeasurementGroupSpec(
            tracking_id=f"Calcium {c.key}",
            finding=codes.PATHOLOGIC_CALCIFICATION,
            finding_site=c.site,
            measurements=[
                MeasurementSpec(score_concept(c), round(cs.score, 3), codes.AGATSTON_UNIT,
                                method=codes.AGATSTON_SCORING_METHOD),
                MeasurementSpec(codes.CALCIUM_VOLUME, round(cs.volume_mm3, 3), codes.MM3,
                                method=codes.VOLUME_SCORING_METHOD),
                MeasurementSpec(codes.LESION_COUNT, int(cs.n_lesions), codes.LESIONS),
            ],
            referenced_segment=seg.ref(c.name) if seg is not None else None,
            region=_region(vol, labels == c.value) if cs.n_lesions else None,
        ))
    risk = codes.risk_category(f"CAC-{category}"[:16], f"Agatston risk category {category}")
    coronary_volume = sum(score.per_class[c.value].volume_mm3 for c in CLASSES if c.coronary)
    groups.append(MeasurementGroupSpec(
        tracking_id="Calcium total coronary",
        finding=codes.PATHOLOGIC_CALCIFICATION,
        finding_site=codes.HEART,
        measurements=[MeasurementSpec(codes.CORONARY_ARTERY_CALCIUM_SCORE, round(coronary, 3), codes.AGATSTON_UNIT,
                                      method=codes.AGATSTON_SCORING_METHOD),
                      MeasurementSpec(codes.CALCIUM_VOLUME, round(coronary_volume, 3), codes.MM3,
                                      method=codes.VOLUME_SCORING_METHOD)],
        qualitative=[QualitativeSpec(codes.CALCIUM_RISK_CATEGORY, risk)],
    ))
    groups.append(MeasurementGroupSpec(
        tracking_id="Calcium total all classes",
        finding=codes.PATHOLOGIC_CALCIFICATION,
        finding_site=codes.HEART,
        measurements=[MeasurementSpec(codes.TOTAL_CALCIUM_SCORE, round(total, 3), codes.AGATSTON_UNIT,
                                      method=codes.AGATSTON_SCORING_METHOD),
                      MeasurementSpec(codes.CALCIUM_VOLUME, round(score.total_volume_mm3, 3), codes.MM3,
                                      method=codes.VOLUME_SCORING_METHOD)],
    ))
    return groups


def _series_line(vol: Volume, series: SeriesView, opts: CalciumOptions) -> str:
    return (f"Series {series.series_number or ''} '{series.series_description}', {vol.shape[0]} slices of "
            f"{vol.spacing[0]:.2f} mm (Agatston scaled by increment/3)" if opts.z_rule == "increment" else
            f"Series {series.series_number or ''} '{series.series_description}'")


def build_not_assessable(vol: Volume, alg: AlgorithmIdentity, opts: CalciumOptions, series: SeriesView,
                         issues: Sequence[QualityIssue], checks: Sequence[str]) -> list[Dataset]:
    """SR (whole result not assessable, no measurement) and summary image: the study is outside what
    the model was trained for, or its output is unusual (:mod:`pipelines.qc`).  No SEG."""
    notes = [f"scored series {series.series_instance_uid} ({series.series_description})",
             *(f"check: {c}" for c in checks)]
    datasets = [build_measurement_report(
        vol.source_datasets, procedure=codes.CT_OF_HEART, groups=[], algorithm=alg,
        series_number=opts.series_number_sr, series_description="Calcium scores (Agatston)", extra_text=notes,
        issues=issues)]
    if opts.summary_image:
        lines = [_series_line(vol, series, opts), "No calcium score is reported for this study.",
                 "Checks against the model's accepted ranges:", *checks]
        datasets.append(build_summary_image(vol.headers[0], "Coronary artery calcium (Agatston)", lines, alg,
                                            opts.series_number_summary, issues=issues))
    return datasets


def build_outputs(vol: Volume, labels: np.ndarray, score: AgatstonResult, alg: AlgorithmIdentity,
                  opts: CalciumOptions, series: SeriesView, checks: Sequence[str] = ()) -> CalciumOutputs:
    """SEG (when any calcium was scored), SR and, unless disabled, the summary image.

    ``labels`` holds only scored calcium (lesions that passed the area threshold), class values
    as in :data:`~pipelines.calcium.labels.CLASSES`; ``checks`` are the input / output checks passed
    (:mod:`pipelines.qc`), recorded in the SR's notes."""
    coronary = sum(score.per_class[c.value].score for c in CLASSES if c.coronary)
    total = score.total
    category = opts.risk_bounds.name(coronary if opts.risk_basis == "coronary" else total)
    seg = _seg(vol, labels, alg, opts)
    datasets: list[Dataset] = [seg.dataset] if seg is not None and seg.dataset is not None else []
    extra = [
        f"Agatston: voxels >= {opts.threshold_hu:g} HU inside each predicted class; lesions = "
        f"{opts.connectivity}-connected per slice, >= {opts.min_lesion_area_mm2:g} mm2; weights 1-4 by peak HU",
        f"slice increment {vol.spacing[0]:.3f} mm; lesion scores x increment/3 ({opts.z_rule})",
        f"risk category from the {opts.risk_basis} total, bounds {list(opts.risk_bounds.bounds)}",
        f"scored series {series.series_instance_uid} ({series.series_description})",
        "each class with calcium is outlined on its key slice (most calcium); its figures cover the whole scan",
        *(f"check: {c}" for c in checks),
    ]
    datasets.append(build_measurement_report(
        vol.source_datasets, procedure=codes.CT_OF_HEART, groups=_groups(vol, labels, score, seg, coronary, total,
                                                                         category),
        algorithm=alg, series_number=opts.series_number_sr, series_description="Calcium scores (Agatston)",
        referenced_seg=seg.dataset if seg is not None else None, extra_text=extra))
    if opts.summary_image:
        lines = [_series_line(vol, series, opts),
                 f"Coronary artery calcium score (Agatston): {coronary:.1f}  -  risk category {category}",
                 f"All 8 classes (coronary, valves, aorta): Agatston {total:.1f}, "
                 f"volume {score.total_volume_mm3:.1f} mm3",
                 ""]
        for c in CLASSES:
            cs = score.per_class[c.value]
            lines.append(f"{c.name}: Agatston {cs.score:.1f}, volume {cs.volume_mm3:.1f} mm3, "
                         f"{cs.n_lesions} lesion{'' if cs.n_lesions == 1 else 's'}")
        datasets.append(build_summary_image(vol.headers[0], "Coronary artery calcium (Agatston)", lines, alg,
                                            opts.series_number_summary))
    return CalciumOutputs(datasets=datasets, coronary=coronary, total=total, category=category)
