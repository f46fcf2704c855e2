"""The one SR / SEG / summary-image builder layer shared by all pipelines (highdicom).

Typical use in a pipeline::

    alg = AlgorithmIdentity.from_models(self.name, self.version, models, trained_on_phantoms=True)
    seg = build_segmentation_for_volume(vol, masks, segments, algorithm=alg, series_number=901,
                                        series_description="Coronary calcium SEG")
    sr = build_measurement_report(vol.source_datasets, procedure=codes.CT_OF_HEART, groups=[...],
                                  algorithm=alg, series_number=902, series_description="Calcium SR",
                                  referenced_seg=seg.dataset)
    sc = build_summary_image(vol.headers[0], "Coronary calcium", lines, alg, series_number=903)
"""
from pipelines.quality import RESULT, QualityIssue

from . import codes
from .algorithm import AlgorithmIdentity
from .common import MANUFACTURER, PHANTOM_DISCLAIMER, RESEARCH_DISCLAIMER, fill_type2, software_version
from .regions import RegionSpec, key_slice, outline_box
from .report import build_summary_image, render_text_image
from .seg import BuiltSegmentation, SegmentSpec, build_segmentation, build_segmentation_for_volume
from .sr import MeasurementGroupSpec, MeasurementSpec, QualitativeSpec, build_measurement_report

__all__ = [
    "codes",
    "AlgorithmIdentity",
    "MANUFACTURER",
    "PHANTOM_DISCLAIMER",
    "RESEARCH_DISCLAIMER",
    "QualityIssue",
    "RESULT",
    "RegionSpec",
    "key_slice",
    "outline_box",
    "fill_type2",
    "software_version",
    "SegmentSpec",
    "BuiltSegmentation",
    "build_segmentation",
    "build_segmentation_for_volume",
    "MeasurementSpec",
    "QualitativeSpec",
    "MeasurementGroupSpec",
    "build_measurement_report",
    "build_summary_image",
    "render_text_image",
]
