"""Training-side preparation of a MyoPS case: the pipeline's preprocessing with the ground-truth prior."""
from __future__ import annotations

import dataclasses

import numpy as np

from pipelines.myops import labels as cls
from pipelines.myops.preprocess import (PreprocessConfig, build_grid_stack, label_on_grid, normalise,
                                        register_and_crop)

from .dataset import DatasetError, MyoPSCase

__all__ = ["PreparedCase", "prepare_case", "prepare_prealigned"]


@dataclasses.dataclass
class PreparedCase:
    case_id: str
    image: np.ndarray  # (n, C, R, R) float32 in [0, 255]
    label: np.ndarray  # (n, R, R) uint8 model classes
    grid_registered: np.ndarray | None = None  # (n, C, G, G) registered 224 grid (training augmentation)
    grid_raw: np.ndarray | None = None  # (n, C, G, G) before registration (first-pass robustness)
    grid_label: np.ndarray | None = None  # (n, G, G)
    roi_yx: tuple[int, int] = (0, 0)


def prepare_case(case: MyoPSCase, cfg: PreprocessConfig = PreprocessConfig()) -> PreparedCase:
    """Slice matching, 1 mm grid, normalisation, myocardium-guided registration, ROI crop -- exactly the
    pipeline's :func:`register_and_crop`, with the ground-truth myocardium as the prior."""
    if case.label is None:
        raise ValueError(f"{case.case_id}: training needs the label")
    stack = build_grid_stack(case.volumes, cfg)
    label = label_on_grid(case.label, stack)
    prior = np.isin(label, (cls.MYOCARDIUM, cls.EDEMA, cls.SCAR))
    mi = register_and_crop(stack, prior, cfg)
    y0, x0 = mi.roi_yx
    r = cfg.roi_size
    return PreparedCase(
        case.case_id, mi.tensor, np.ascontiguousarray(label[:, y0:y0 + r, x0:x0 + r]),
        grid_registered=np.stack([mi.registered[c] for c in cfg.channels], axis=1).astype(np.float32),
        grid_raw=np.stack([stack.images[c] for c in cfg.channels], axis=1).astype(np.float32),
        grid_label=label, roi_yx=mi.roi_yx,
    )


def prepare_prealigned(case: MyoPSCase, cfg: PreprocessConfig = PreprocessConfig()) -> PreparedCase:
    """A case of the MyoPS380 release as distributed: the sequences are already matched slice by slice,
    registered and cropped to the ROI on one grid, so only the intensity normalisation of the pipeline
    (percentiles to [0, 255] per sequence stack) is applied; no matching, resampling or registration."""
    if case.label is None:
        raise ValueError(f"{case.case_id}: training needs the label")
    shapes = {seq: case.volumes[seq].shape for seq in cfg.channels}
    if len(set(shapes.values()) | {case.label.shape}) > 1:
        raise DatasetError(f"{case.case_id}: pre-aligned sequences and label must share one grid, got {shapes} "
                           f"and label {case.label.shape}")
    n, rows, cols = case.label.shape
    if (rows, cols) != (cfg.roi_size, cfg.roi_size):
        raise DatasetError(f"{case.case_id}: pre-aligned slices are {rows}x{cols}, the model's ROI is "
                           f"{cfg.roi_size}x{cfg.roi_size}")
    image = np.stack([normalise(case.volumes[seq].array.astype(np.float32), cfg.percentiles) for seq in cfg.channels],
                     axis=1).astype(np.float32)
    label = np.ascontiguousarray(case.label.array.astype(np.uint8))
    return PreparedCase(case.case_id, image, label, grid_registered=image, grid_raw=image, grid_label=label,
                        roi_yx=(0, 0))
