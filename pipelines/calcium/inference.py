"""Model inference on a CT volume -> calcium label map (numpy only; the model is any tile predictor).

The same function serves the pipeline (ONNX Runtime handle) and the evaluation CLI (ONNX or torch):
slabs of slices are preprocessed (:mod:`pipelines.calcium.preprocess`), tiled, predicted, stitched,
arg-maxed on the coarse grid, optionally dilated by ``dilation_px`` coarse pixels, restricted to the
model's heart/aorta region when it has one (``PreprocessConfig.region_channel``: an anatomical output
the model learns, so ribs, spine, table and devices outside the region never count), mapped back to
the original grid and intersected with ``HU >= threshold``.  Memory: the HU volume plus one uint8
label map plus one slab.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from pipelines.qc.scores import ConfidenceTally

from .preprocess import PreprocessConfig, coarse_shape, from_tiles, prepare_slices, to_tiles, upsample_labels

__all__ = ["segment_calcium", "TilePredictor"]

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
) -> np.ndarray:
    """Label map (z, y, x) uint8: class k where the model predicts k (dilated), inside its region (if it
    has one) and HU >= threshold.

    ``tally`` (output quality control, :mod:`pipelines.qc.scores`) counts the confident and
    low-confidence foreground of every coarse slice the model predicted (class logits only)."""
    nz = hu.shape[0]
    out = np.zeros(hu.shape, dtype=np.uint8)
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
        if tally is not None:
            tally.add_logits(logits, axis=1)
        coarse = np.argmax(logits, axis=1).astype(np.uint8)
        for i, k in enumerate(idx):
            lab = coarse[i]
            if not lab.any():
                continue
            if dilation_px > 0:
                grown = ndimage.grey_dilation(lab, size=(2 * dilation_px + 1,) * 2)
                lab = np.where(lab > 0, lab, grown)
            if region is not None:
                lab = np.where(region[i], lab, 0).astype(np.uint8)
            fine = upsample_labels(lab, hu.shape[1:])
            fine[hu[k] < threshold] = 0
            out[k] = fine
        if progress is not None:
            progress(idx[-1] + 1, nz)
    return out
