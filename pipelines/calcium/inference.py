"""Model inference on a CT volume -> calcium label map (numpy only; the model is any tile predictor).

The same function serves the pipeline (ONNX Runtime handle) and the evaluation CLI (ONNX or torch):
slabs of slices are preprocessed (:mod:`pipelines.calcium.preprocess`), tiled, predicted, stitched,
arg-maxed on the coarse grid, optionally dilated by ``dilation_px`` coarse pixels, mapped back to the
original grid and intersected with ``HU >= threshold``.  When the model has a heart/aorta region output
(``PreprocessConfig.region_channel``: an anatomical output the model learns), calcium is decided per
dense structure in 3D, not per pixel (:func:`keep_inside_region`): every 26-connected structure of
``HU >= threshold`` counts only when at least :data:`REGION_MIN_INSIDE` of its voxels lie inside the
region, and then as a whole.  A rib, the sternum, costal cartilage, a vertebra, the table or a lead
runs through many slices and is mostly outside the region, so it never counts even in the slices
where its cross-section lies inside it (an in-plane decision kept those cross-sections, and clipping
at the region's edge kept the part it overlapped); a plaque at the region's edge is not cut.
Memory: the HU volume plus one uint8 label map, the region as one boolean volume and, for the 3D
decision, one component map of the volume (int16; int32 when it holds more than 32 767 structures).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from pipelines.qc.scores import ConfidenceTally

from .preprocess import PreprocessConfig, coarse_shape, from_tiles, prepare_slices, to_tiles, upsample_labels

__all__ = ["segment_calcium", "keep_inside_region", "TilePredictor", "REGION_MIN_INSIDE"]

#: a dense structure counts when at least this share of its pixels lies inside the model's region
REGION_MIN_INSIDE = 0.5

#: (T, C, tile, tile) float32 -> (T, K, tile, tile) logits
TilePredictor = Callable[[np.ndarray], np.ndarray]


def segment_calcium(
    hu: np.ndarray,
    z_positions: npt.ArrayLike,
    spacing_yx: Sequence[float],
    predict: TilePredictor,
    cfg: PreprocessConfig,
    *,
    threshold: float = 130.0,
    dilation_px: int = 1,
    slab: int = 16,
    progress: Callable[[int, int], None] | None = None,
    tally: ConfidenceTally | None = None,
    on_logits: Callable[[Sequence[int], np.ndarray], None] | None = None,
) -> np.ndarray:
    """Label map (z, y, x) uint8: class k where the model predicts k (dilated), inside its region (if it
    has one) and HU >= threshold.

    ``tally`` (output quality control, :mod:`pipelines.qc.scores`) counts the confident and
    low-confidence foreground of every coarse slice the model predicted (class logits only);
    ``on_logits`` (diagnostics, ``bench/calcium_lesions.py``) gets each slab's slice indices and its
    class logits (n, K, coarse y, coarse x), region output removed."""
    nz = hu.shape[0]
    out = np.zeros(hu.shape, dtype=np.uint8)
    inside: np.ndarray | None = None
    cy, cx = coarse_shape(hu.shape[1:], spacing_yx, cfg)
    zpos = np.asarray(z_positions, dtype=float)
    for start in range(0, nz, slab):
        idx = list(range(start, min(nz, start + slab)))
        x = prepare_slices(hu, zpos, spacing_yx, idx, cfg)
        tiles, places = to_tiles(x, cfg)
        logits = from_tiles(predict(tiles), places, len(idx), (cy, cx), cfg)
        region = None
        if cfg.region_channel:
            if logits.shape[1] <= cfg.region_channel:
                raise ValueError(f"model has {logits.shape[1]} outputs; region_channel {cfg.region_channel} missing")
            region = logits[:, cfg.region_channel] > 0
            logits = np.delete(logits, cfg.region_channel, axis=1)
            if inside is None:
                inside = np.zeros(hu.shape, dtype=bool)
            inside[idx[0]:idx[-1] + 1] = upsample_labels(region, hu.shape[1:])
        if tally is not None:
            tally.add_logits(logits, axis=1)
        if on_logits is not None:
            on_logits(idx, logits)
        coarse = np.argmax(logits, axis=1).astype(np.uint8)
        for i, k in enumerate(idx):
            lab = coarse[i]
            if not lab.any():
                continue
            if dilation_px > 0:
                grown = ndimage.grey_dilation(lab, size=(2 * dilation_px + 1,) * 2)
                lab = np.where(lab > 0, lab, grown)
            fine = upsample_labels(lab, hu.shape[1:])
            dense = hu[k] >= threshold
            fine[~dense] = 0
            out[k] = fine
        if progress is not None:
            progress(idx[-1] + 1, nz)
    if inside is not None and out.any():
        out = keep_inside_region(out, hu >= threshold, inside)
    return out


def keep_inside_region(labels: np.ndarray, dense: np.ndarray, region: np.ndarray,
                       min_inside: float = REGION_MIN_INSIDE) -> np.ndarray:
    """``labels`` (a slice or a volume, 0 = none) kept only on the fully connected (8 in 2D, 26 in 3D)
    structures of ``dense`` of which at least ``min_inside`` of the pixels lie in ``region``; those keep
    all their labelled pixels.  ``labels``, ``dense`` and ``region`` have the same shape."""
    if not labels.shape == dense.shape == region.shape:
        raise ValueError(f"shapes differ: labels {labels.shape}, dense {dense.shape}, region {region.shape}")
    structure = np.ones((3,) * dense.ndim, bool)
    try:  # int16 halves the component map of a 600-slice CT; a noisy volume may hold more structures
        comps, n = ndimage.label(dense, structure=structure, output=np.int16)
    except RuntimeError:  # scipy: "insufficient bit-depth in requested output type"
        comps, n = ndimage.label(dense, structure=structure, output=np.int32)
    if n == 0:
        return np.zeros_like(labels)
    inside = np.zeros(n + 1, np.int64)
    total = np.zeros(n + 1, np.int64)
    planes = (-1,) + comps.shape[-2:]
    for c, r in zip(comps.reshape(planes), region.reshape(planes)):
        # slice by slice: whole-volume bincounts and masks would copy the component map to int64 / bool
        inside += np.bincount(c[r], minlength=n + 1)
        total += np.bincount(c.ravel(), minlength=n + 1)
    keep = inside >= min_inside * total
    keep[0] = False
    out = labels.copy()
    for o, c in zip(out.reshape(planes), comps.reshape(planes)):
        o[~keep[c]] = 0
    return out
