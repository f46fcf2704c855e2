"""Inference-side use of the shared preprocessing: first-pass prior, registration, ROI, mapping back.

Myocardial prior at inference: the model itself, run on the *unregistered* 224 x 224 grid stack in
four overlapping 128 x 128 tiles (offsets 0 and 96 per axis; logits averaged where tiles overlap).
Its myocardium (normal + edema + scar) is the prior that guides registration and centres the ROI;
the model then runs again on the registered ROI for the final prediction.  The network is trained
on ROIs placed with small random offsets and misalignments, so the first pass sees familiar input.
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
from scipy import ndimage

from pipelines.imaging import Volume
from pipelines.imaging.geometry import index_to_patient
from pipelines.qc.scores import softmax

from . import labels as cls
from .preprocess import GridStack, ModelInput, PreprocessConfig, build_grid_stack, register_and_crop

__all__ = ["model_input", "tile_predict", "first_pass_prior", "probabilities_to_anchor", "Predictor"]

#: (n, C, R, R) float32 -> (n, K, R, R) logits
Predictor = Callable[[np.ndarray], np.ndarray]


def model_input(volumes: Mapping[str, Volume], cfg: PreprocessConfig,
                prior_fn: Callable[[GridStack], np.ndarray]) -> tuple[GridStack, ModelInput]:
    """Grid stack, prior from ``prior_fn``, registration and ROI crop (what the network sees)."""
    stack = build_grid_stack(volumes, cfg)
    prior = np.asarray(prior_fn(stack), dtype=bool)
    return stack, register_and_crop(stack, prior, cfg)


def tile_predict(images: np.ndarray, predict: Predictor, roi: int) -> np.ndarray:
    """Class probabilities (n, K, G, G) from 2 x 2 overlapping roi tiles over (n, C, G, G) images."""
    n, _, g, _ = images.shape
    starts = sorted({0, g - roi})
    acc = None
    count = np.zeros((g, g), dtype=np.float32)
    for y in starts:
        for x in starts:
            probs = softmax(predict(np.ascontiguousarray(images[:, :, y:y + roi, x:x + roi])))
            if acc is None:
                acc = np.zeros((n, probs.shape[1], g, g), dtype=np.float32)
            acc[:, :, y:y + roi, x:x + roi] += probs
            count[y:y + roi, x:x + roi] += 1.0
    assert acc is not None
    return acc / count[None, None]


def first_pass_prior(stack: GridStack, predict: Predictor, cfg: PreprocessConfig) -> np.ndarray:
    """Myocardium mask (n, G, G) predicted on the unregistered stack; the largest 3D component is
    kept so a stray blob elsewhere cannot pull the ROI away."""
    images = np.stack([stack.images[c] for c in cfg.channels], axis=1)
    probs = tile_predict(images, predict, cfg.roi_size)
    classes = probs.argmax(axis=1)
    myo = np.isin(classes, (cls.MYOCARDIUM, cls.EDEMA, cls.SCAR))
    lab, n = ndimage.label(myo)
    if n > 1:
        sizes = ndimage.sum_labels(myo, lab, index=np.arange(1, n + 1))
        myo = lab == (int(np.argmax(sizes)) + 1)
    return myo


def probabilities_to_anchor(probs_roi: np.ndarray, stack: GridStack, roi_yx: tuple[int, int],
                            anchor: Volume) -> np.ndarray:
    """Class map (z, y, x) on the anchor (LGE) pixel grid from ROI probabilities (n, K, R, R).

    The ROI is placed back into the 224 grid (background outside), each anchor pixel of a matched
    slice is located in its slice's grid (grid and anchor share the plane) and the probabilities are
    interpolated linearly there; argmax gives the class.  Unmatched anchor slices stay background.
    """
    n, k, r, _ = probs_roi.shape
    g = stack.grid_points.shape[1]
    full = np.zeros((n, k, g, g), dtype=np.float32)
    full[:, cls.BACKGROUND] = 1.0
    y0, x0 = roi_yx
    full[:, :, y0:y0 + r, x0:x0 + r] = probs_roi
    nz, ny, nx = anchor.array.shape
    out = np.zeros((nz, ny, nx), dtype=np.uint8)
    yy, xx = np.mgrid[0:ny, 0:nx]
    for i in range(n):
        z = int(stack.anchor_slices[i])
        pts = stack.grid_points[i]
        # patient position of every anchor pixel in slice z, then its (y, x) in the grid
        p00, p01, p10 = pts[0, 0], pts[0, 1], pts[1, 0]
        ex, ey = p01 - p00, p10 - p00
        ex /= float(ex @ ex)
        ey /= float(ey @ ey)
        idx = np.stack([np.full(yy.size, z, dtype=float), yy.ravel(), xx.ravel()], axis=1)
        pp = np.atleast_2d(index_to_patient(anchor, idx)) - p00
        gy = (pp @ ey).reshape(ny, nx)
        gx = (pp @ ex).reshape(ny, nx)
        sampled = np.stack([ndimage.map_coordinates(full[i, c], [gy, gx], order=1, mode="constant",
                                                    cval=1.0 if c == cls.BACKGROUND else 0.0) for c in range(k)])
        out[z] = sampled.argmax(axis=0).astype(np.uint8)
    return out
