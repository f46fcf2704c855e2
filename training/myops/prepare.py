"""Training-side preparation of a MyoPS case: the pipeline's preprocessing with the ground-truth prior."""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from pipelines.myops import labels as cls
from pipelines.myops.preprocess import (PreprocessConfig, build_grid_stack, label_on_grid, normalise,
                                        register_and_crop)

from .dataset import DatasetError, MyoPSCase, MyoPSDataset

__all__ = ["PreparedCase", "prepare_case", "prepare_prealigned", "prepare_cases"]

log = logging.getLogger("cardionode.training.myops")


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


def prepare_cases(dataset: MyoPSDataset, ids: Sequence[str], cfg: PreprocessConfig,
                  cache: Path | None = None) -> list[PreparedCase]:
    """Preprocess cases (cached as npz when ``cache`` is given), logging progress."""
    out = []
    t0 = time.perf_counter()
    prealigned = getattr(dataset, "prealigned", False)
    if cache is not None and prealigned:
        cache = cache / "prealigned"
    for i, case_id in enumerate(ids, start=1):
        path = cache / f"{case_id}.npz" if cache else None
        if path is not None and path.is_file():
            z = np.load(path)
            pc = PreparedCase(case_id, z["image"], z["label"], z["grid_registered"], z["grid_raw"], z["grid_label"],
                              tuple(int(v) for v in z["roi_yx"]))
        else:
            pc = (prepare_prealigned if prealigned else prepare_case)(dataset.load(case_id), cfg)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                np.savez_compressed(path, image=pc.image, label=pc.label, grid_registered=pc.grid_registered,
                                    grid_raw=pc.grid_raw, grid_label=pc.grid_label, roi_yx=np.asarray(pc.roi_yx))
        out.append(pc)
        log.info("prepared %s (%d/%d, %d slices, %.0f s elapsed)", case_id, i, len(ids), pc.image.shape[0],
                 time.perf_counter() - t0)
    return out
