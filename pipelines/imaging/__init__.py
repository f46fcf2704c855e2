"""The one DICOM -> array layer shared by all pipelines.

- :func:`load_volume` -- a sorted, rescaled 3D volume (CT, MR; classic or enhanced multi-frame).
- :func:`load_cine` -- the frames of an XA (or any multi-frame) instance as (T, H, W).
- :func:`match_series` -- keyword selection of series from a study.
- geometry helpers for slice correspondence between series.
"""
from .cine import cine_frame_time_ms, load_cine
from .geometry import index_to_patient, nearest_slice_index, patient_to_index, resample_like, slice_positions
from .select import SeriesRule, describe_series, match_series
from .volume import Volume, load_volume

__all__ = [
    "Volume",
    "load_volume",
    "load_cine",
    "cine_frame_time_ms",
    "match_series",
    "describe_series",
    "SeriesRule",
    "slice_positions",
    "patient_to_index",
    "index_to_patient",
    "nearest_slice_index",
    "resample_like",
]
