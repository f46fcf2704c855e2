"""DICOM Segmentation (BINARY, empty frames omitted, JPEG 2000 lossless) built with highdicom.

Masks may overlap (myocardium + scar + edema): they are stacked per segment, one frame per
(source frame, segment) that has any voxel.  Segments without voxels are left out (their numbers
are not assigned), and the result says which labels got which segment numbers so the SR can
reference them -- or state "no segment" for, e.g., an artery with zero calcium.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
from typing import TYPE_CHECKING, Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless

from pipelines.quality import QualityIssue, whole_result_issues

from .algorithm import AlgorithmIdentity
from .common import MANUFACTURER, fill_type2, new_uid, software_version

if TYPE_CHECKING:
    from pipelines.imaging.volume import Volume

__all__ = ["SegmentSpec", "BuiltSegmentation", "build_segmentation", "build_segmentation_for_volume", "CONTENT_LABEL"]

log = logging.getLogger("cardionode.outputs")

CONTENT_LABEL = "CARDIONODE"


@dataclasses.dataclass(frozen=True)
class SegmentSpec:
    """What one segment is: label (shown in viewers), coded category/type, colour, tracking id."""

    label: str
    category: Code
    property_type: Code
    anatomic_region: Code | None = None
    rgb: tuple[int, int, int] = (255, 0, 0)
    tracking_id: str | None = None


@dataclasses.dataclass
class BuiltSegmentation:
    """The SEG dataset (None when every segment was empty) and label -> segment number written."""

    dataset: Dataset | None
    segment_numbers: dict[str, int]
    skipped: list[str]

    def ref(self, label: str) -> tuple[Dataset, int] | None:
        """``(seg, segment_number)`` for an SR group's ``referenced_segment``, None if not written."""
        if self.dataset is None or label not in self.segment_numbers:
            return None
        return self.dataset, self.segment_numbers[label]


@functools.cache
def jpeg2000_encoder_available() -> bool:
    """True when pydicom can encode JPEG 2000 lossless (pylibjpeg-openjpeg installed)."""
    try:
        from pydicom.pixels.encoders import JPEG2000LosslessEncoder

        return bool(JPEG2000LosslessEncoder.is_available)
    except Exception:  # pragma: no cover - import errors mean unavailable
        return False


def _transfer_syntax(rows: int, cols: int) -> str:
    """JPEG 2000 lossless when it can be encoded, else Explicit VR Little Endian."""
    if rows < 32 or cols < 32:  # openjpeg limit, enforced by highdicom
        log.info("SEG frames %dx%d are below the JPEG 2000 minimum of 32: writing uncompressed", rows, cols)
        return ExplicitVRLittleEndian
    if jpeg2000_encoder_available():
        return JPEG2000Lossless
    log.warning("JPEG 2000 encoder (pylibjpeg-openjpeg) unavailable: writing SEG uncompressed")
    return ExplicitVRLittleEndian


def _present(masks: np.ndarray, n_segments: int) -> list[bool]:
    """Which segments have at least one voxel (cheap for sparse masks: only non-empty frames are scanned)."""
    if masks.ndim == 4:
        return [bool(masks[..., i].any()) for i in range(n_segments)]
    nonzero_frames = masks.reshape(masks.shape[0], -1).any(axis=1)
    values = set(np.unique(masks[nonzero_frames]).tolist()) if nonzero_frames.any() else set()
    return [(i + 1) in values for i in range(n_segments)]


def build_segmentation(
    sources: Sequence[Dataset],
    masks: np.ndarray,
    segments: Sequence[SegmentSpec],
    *,
    algorithm: AlgorithmIdentity,
    series_number: int,
    series_description: str,
    series_instance_uid: str | None = None,
    workers: int = 0,
    issues: Sequence[QualityIssue] = (),
) -> BuiltSegmentation:
    """Build a BINARY SEG for ``segments`` over ``sources`` (headers suffice; no pixel data needed).

    ``masks`` is either (n_frames, rows, cols, n_segments) bool -- overlapping segments allowed --
    or a (n_frames, rows, cols) integer label map whose value k marks ``segments[k-1]``.  Axis 0
    follows ``sources`` (single-frame sources) or the stored frames of one multi-frame source.

    ``issues`` (:mod:`pipelines.quality`): parts that could not be assessed (e.g. a segment that
    could not be produced); they are named in the series description ("<scope> not assessable")
    and, with their reasons, in the algorithm parameters.  A whole-result issue is a ValueError:
    a result that cannot be assessed has no SEG.
    """
    if not segments:
        raise ValueError("no segments described")
    if whole_result_issues(issues):
        raise ValueError("SEG: the whole result is not assessable; write no SEG (the SR and summary image say why)")
    masks = np.asarray(masks)
    if masks.ndim == 4:
        if masks.shape[-1] != len(segments):
            raise ValueError(f"masks have {masks.shape[-1]} segments, {len(segments)} described")
        if masks.dtype != bool:
            masks = masks.astype(bool)
    elif masks.ndim == 3:
        if not np.issubdtype(masks.dtype, np.integer) and masks.dtype != bool:
            raise ValueError(f"label map must be integer, got {masks.dtype}")
        if masks.size and int(masks.max()) > len(segments):
            raise ValueError(f"label map value {int(masks.max())} > {len(segments)} described segments")
    else:
        raise ValueError(f"masks must be 3D (label map) or 4D (stacked), got shape {masks.shape}")
    n_src = int(sources[0].get("NumberOfFrames", 1) or 1) if len(sources) == 1 else len(sources)
    if masks.shape[0] != n_src:
        raise ValueError(f"masks have {masks.shape[0]} frames, sources have {n_src}")

    present = _present(masks, len(segments))
    keep = [i for i, p in enumerate(present) if p]
    skipped = [segments[i].label for i, p in enumerate(present) if not p]
    if not keep:
        return BuiltSegmentation(dataset=None, segment_numbers={}, skipped=skipped)
    if len(keep) < len(segments):
        if masks.ndim == 4:
            masks = masks[..., keep]
        else:
            lut = np.zeros(len(segments) + 1, dtype=np.uint8 if len(keep) < 256 else np.uint16)
            for new, old in enumerate(keep, start=1):
                lut[old + 1] = new
            masks = lut[masks]
    elif masks.ndim == 3 and masks.dtype not in (np.uint8, np.uint16, bool):
        masks = masks.astype(np.uint8 if len(segments) < 256 else np.uint16)

    if issues:
        algorithm = dataclasses.replace(algorithm, parameters=tuple(algorithm.parameters) + tuple(
            (f"not assessable {i.scope}", f"{i.code}: {i.message}") for i in issues))
        scopes = ", ".join(dict.fromkeys(i.scope for i in issues))
        series_description = f"{series_description} - {scopes} not assessable"
    alg_seq = algorithm.to_highdicom()
    descriptions = []
    numbers: dict[str, int] = {}
    for number, idx in enumerate(keep, start=1):
        spec = segments[idx]
        numbers[spec.label] = number
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=spec.label[:64],
                segmented_property_category=spec.category,
                segmented_property_type=spec.property_type,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=alg_seq,
                tracking_id=spec.tracking_id,
                tracking_uid=new_uid() if spec.tracking_id else None,
                anatomic_regions=[spec.anatomic_region] if spec.anatomic_region is not None else None,
                display_color=hd.color.CIELabColor.from_rgb(*spec.rgb),
            )
        )
    seg = hd.seg.Segmentation(
        source_images=fill_type2(sources),
        pixel_array=masks,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=series_instance_uid or new_uid(),
        series_number=series_number,
        sop_instance_uid=new_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=algorithm.name[:64],
        software_versions=software_version(),
        device_serial_number="0",
        content_description=algorithm.short_disclaimer,
        content_label=CONTENT_LABEL,
        content_creator_name=None,
        transfer_syntax_uid=_transfer_syntax(int(masks.shape[1]), int(masks.shape[2])),
        omit_empty_frames=True,
        workers=workers,
    )
    seg.SeriesDescription = algorithm.describe(series_description)
    return BuiltSegmentation(dataset=seg, segment_numbers=numbers, skipped=skipped)


def build_segmentation_for_volume(
    volume: "Volume",
    masks: np.ndarray,
    segments: Sequence[SegmentSpec],
    *,
    algorithm: AlgorithmIdentity,
    series_number: int,
    series_description: str,
    series_instance_uid: str | None = None,
    issues: Sequence[QualityIssue] = (),
) -> BuiltSegmentation:
    """:func:`build_segmentation` for masks aligned with a :class:`~pipelines.imaging.Volume`
    (axis 0 = the volume's sorted slices); handles classic and enhanced multi-frame sources."""
    return build_segmentation(
        volume.source_datasets,
        volume.to_source_order(masks),
        segments,
        algorithm=algorithm,
        series_number=series_number,
        series_description=series_description,
        series_instance_uid=series_instance_uid,
        issues=issues,
    )
