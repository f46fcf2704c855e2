"""Training-side preparation of a MyoPS case: the pipeline's preprocessing with the ground-truth prior."""
from __future__ import annotations

import dataclasses

import numpy as np

from pipelines.myops import labels as cls
from pipelines.myops.preprocess import PreprocessConfig, build_grid_stack, label_on_grid, register_and_crop

from .dataset import MyoPSCase

__all__ = ["PreparedCase", "prepare_case"]


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
