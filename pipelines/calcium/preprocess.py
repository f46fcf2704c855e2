"""The one preprocessing of the calcium model, used by the pipeline AND by training.

CT slices (HU, any pixel spacing) -> 2.5D model input on a reduced in-plane grid:

1. channels: the slice itself and its neighbours ``context_mm`` above and below (nearest slice
   by position; the edge slice repeats at the volume's ends);
2. in-plane resampling to ``spacing_mm`` (default 2 mm).  Before linear resampling each slice is
   max-filtered (:func:`max_footprint`) so that every coarse pixel is at least the peak of the fine
   pixels it stands for: small calcium survives the reduction and stays where its label goes;
3. HU window: clip to [hu_min, hu_max], then (hu - hu_center) / hu_scale;
4. tiling into fixed ``tile x tile`` patches (static ONNX shape) with ``overlap`` pixels;
   stitching averages the overlapping logits.

The model's outputs are background + 8 class logits and, when ``region_channel`` is set, a heart/aorta
region logit (:mod:`pipelines.calcium.inference` keeps calcium only inside that region).

Mapping a coarse prediction back to the original grid uses :func:`coarse_index` (nearest,
consistent with the edge-aligned resampling).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np
import numpy.typing as npt
from scipy import ndimage

__all__ = ["PreprocessConfig", "context_indices", "max_footprint", "resample_slice", "normalize", "prepare_slices",
           "tile_starts", "to_tiles", "from_tiles", "coarse_shape", "coarse_index", "upsample_labels",
           "downsample_labels"]


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    spacing_mm: float = 2.0
    context_mm: float = 3.0
    channels: int = 3
    tile: int = 128
    overlap: int = 16
    hu_min: float = -800.0
    hu_max: float = 1200.0
    hu_center: float = 200.0
    hu_scale: float = 500.0
    #: index of the model's heart/aorta region logit (0: the model has none).  Calcium counts only where
    #: that logit is > 0: the model learns the anatomy, so bone, table and lines outside it never count.
    region_channel: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "calcium-2.5d", **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PreprocessConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields - {"kind"}
        if unknown:
            raise ValueError(f"preprocessing: unknown keys {sorted(unknown)}")
        return cls(**{k: v for k, v in d.items() if k in fields})


def context_indices(z_positions: np.ndarray, k: int, cfg: PreprocessConfig) -> list[int]:
    """Indices of the ``channels`` slices centred on ``k`` (nearest to k's position +- n*context_mm)."""
    half = cfg.channels // 2
    pos = np.asarray(z_positions, dtype=float)
    out = []
    for j in range(-half, half + 1):
        target = pos[k] + j * cfg.context_mm
        out.append(int(np.argmin(np.abs(pos - target))))
    return out


def coarse_shape(shape_yx: Sequence[int], spacing_yx: Sequence[float], cfg: PreprocessConfig) -> tuple[int, int]:
    ny, nx = (max(1, int(round(n * s / cfg.spacing_mm))) for n, s in zip(shape_yx, spacing_yx))
    return ny, nx


def max_footprint(ratio: float) -> int:
    """Max-filter size along one axis for a ``ratio`` (fine pixels per coarse pixel) reduction.

    The fine pixels that :func:`coarse_index` maps to a coarse pixel lie within ``ratio / 2`` of its
    centre; linear (grid_mode) interpolation reads the two fine pixels around that centre.  A centred
    window of half-width ``floor(ratio / 2) + 1`` around each of those two covers every mapped pixel, so
    the coarse value is >= the peak HU of the fine pixels it stands for: a 1-pixel plaque that carries
    a label on the coarse grid is also visible there.  (Rounding ``spacing_mm / pixel`` instead gave
    no filter at all for 1.34-2 mm pixels and hid small plaques.)  The same holds when enlarging
    (pixels coarser than ``spacing_mm``: size 3); 1 (no filter) at ratio 1, where nothing is interpolated.
    """
    if abs(ratio - 1.0) < 1e-6:
        return 1
    return 2 * (int(np.floor(ratio / 2)) + 1) + 1


def resample_slice(img: np.ndarray, spacing_yx: Sequence[float], cfg: PreprocessConfig) -> npt.NDArray[np.float32]:
    """One slice (HU) -> float32 on the coarse grid (max-filtered, then linear, edge-aligned)."""
    out_shape = coarse_shape(img.shape, spacing_yx, cfg)
    foot = [max_footprint(n / o) for n, o in zip(img.shape, out_shape)]
    src = img
    if max(foot) > 1:
        src = ndimage.maximum_filter(img, size=foot, mode="nearest")
    src = src.astype(np.float32, copy=False)
    zoom = [o / n for o, n in zip(out_shape, img.shape)]
    out: npt.NDArray[np.float32] = ndimage.zoom(src, zoom, order=1, mode="nearest", grid_mode=True)
    if out.shape != tuple(out_shape):  # zoom rounding guard
        out = out[: out_shape[0], : out_shape[1]]
        out = np.pad(out, [(0, out_shape[0] - out.shape[0]), (0, out_shape[1] - out.shape[1])], mode="edge")
    return out


def normalize(hu: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    x = np.clip(hu.astype(np.float32, copy=False), cfg.hu_min, cfg.hu_max)
    return (x - np.float32(cfg.hu_center)) / np.float32(cfg.hu_scale)


def prepare_slices(volume: np.ndarray, z_positions: np.ndarray, spacing_yx: Sequence[float],
                   indices: Sequence[int], cfg: PreprocessConfig) -> np.ndarray:
    """Model input for slices ``indices`` of ``volume`` (z, y, x HU): (n, channels, cy, cx) float32."""
    cy, cx = coarse_shape(volume.shape[1:], spacing_yx, cfg)
    out = np.empty((len(indices), cfg.channels, cy, cx), dtype=np.float32)
    cache: dict[int, np.ndarray] = {}
    for i, k in enumerate(indices):
        for c, j in enumerate(context_indices(z_positions, k, cfg)):
            if j not in cache:
                cache[j] = normalize(resample_slice(volume[j], spacing_yx, cfg), cfg)
            out[i, c] = cache[j]
        if len(cache) > 4 * cfg.channels:  # keep only recent slices (indices are usually ascending)
            for old in sorted(cache)[: -2 * cfg.channels]:
                cache.pop(old)
    return out


def tile_starts(n: int, tile: int, overlap: int) -> list[int]:
    if n <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, n - tile, step))
    starts.append(n - tile)
    return sorted(set(starts))


def to_tiles(x: np.ndarray, cfg: PreprocessConfig) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """(n, C, H, W) -> (T, C, tile, tile) and placements (item, y0, x0); pads small slices with air."""
    n, c, h, w = x.shape
    ph, pw = max(0, cfg.tile - h), max(0, cfg.tile - w)
    if ph or pw:
        air = (cfg.hu_min - cfg.hu_center) / cfg.hu_scale
        x = np.pad(x, [(0, 0), (0, 0), (0, ph), (0, pw)], constant_values=air)
    ys, xs = tile_starts(x.shape[2], cfg.tile, cfg.overlap), tile_starts(x.shape[3], cfg.tile, cfg.overlap)
    places = [(i, y0, x0) for i in range(n) for y0 in ys for x0 in xs]
    tiles = np.stack([x[i, :, y0:y0 + cfg.tile, x0:x0 + cfg.tile] for i, y0, x0 in places]) if places else \
        np.empty((0, c, cfg.tile, cfg.tile), np.float32)
    return np.ascontiguousarray(tiles, dtype=np.float32), places


def from_tiles(out: np.ndarray, places: Sequence[tuple[int, int, int]], n: int, shape_hw: tuple[int, int],
               cfg: PreprocessConfig) -> np.ndarray:
    """Average tile outputs (T, K, tile, tile) back into (n, K, H, W)."""
    k = out.shape[1]
    H, W = max(shape_hw[0], cfg.tile), max(shape_hw[1], cfg.tile)
    acc = np.zeros((n, k, H, W), dtype=np.float32)
    cnt = np.zeros((n, 1, H, W), dtype=np.float32)
    for t, (i, y0, x0) in enumerate(places):
        acc[i, :, y0:y0 + cfg.tile, x0:x0 + cfg.tile] += out[t]
        cnt[i, :, y0:y0 + cfg.tile, x0:x0 + cfg.tile] += 1
    acc /= np.maximum(cnt, 1)
    return acc[:, :, : shape_hw[0], : shape_hw[1]]


def coarse_index(n_fine: int, n_coarse: int) -> np.ndarray:
    """For each fine pixel, the coarse pixel containing its centre (edge-aligned grids)."""
    idx = np.floor((np.arange(n_fine) + 0.5) * n_coarse / n_fine).astype(np.int64)
    return np.clip(idx, 0, n_coarse - 1)


def upsample_labels(coarse: np.ndarray, shape_yx: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour (2D or stacked 3D) coarse label map -> fine grid."""
    iy = coarse_index(shape_yx[0], coarse.shape[-2])
    ix = coarse_index(shape_yx[1], coarse.shape[-1])
    return coarse[..., iy[:, None], ix[None, :]]


def downsample_labels(labels: np.ndarray, coarse_hw: tuple[int, int]) -> np.ndarray:
    """Fine label slice -> coarse grid: a coarse pixel takes the largest label of the fine pixels mapped to it."""
    iy = coarse_index(labels.shape[0], coarse_hw[0])
    ix = coarse_index(labels.shape[1], coarse_hw[1])
    out = np.zeros(coarse_hw, dtype=labels.dtype)
    ys, xs = np.nonzero(labels)
    if ys.size:
        np.maximum.at(out, (iy[ys], ix[xs]), labels[ys, xs])
    return out
