"""The one myops preprocessing implementation, used by training (NIfTI) and the pipeline (DICOM).

Steps (the MyoPS380 card's pipeline; deviations are stated):

1. Slice correspondence: the sequence with the fewest slices is the reference; every reference
   slice is paired with the nearest slice of each other sequence (distance between slice centres
   along the reference slice normal), one-to-one; reference slices without a partner within
   ``max_slice_distance_mm`` (default: half the largest slice spacing) are dropped.  The card uses
   the Euclidean distance of ImagePositionPatient; slice centres along the normal give the same
   pairs when FOVs are co-centred and stay right when they are not.
2. In-plane resampling to 1 x 1 mm and centre crop 224 x 224, done in one step: every matched slice
   is sampled (linear; labels nearest) on a 224 x 224, 1 mm grid lying in the *anchor* (LGE)
   slice plane, centred on the anchor image centre, using patient coordinates.  Prediction on this
   grid therefore maps straight back onto the LGE pixel grid.
3. Intensities: optional shading (bias) correction per slice (``bias_order`` > 0: a low-order
   polynomial fitted robustly to the log signal of the body pixels, divided out, so coil shading and
   slice-to-slice gain differences go), then each sequence's stack is mapped linearly to [0, 255]
   between its 0.5th and 99.5th percentiles (clipped): invariant to the stored-value scale (12-bit,
   0-1000, a vendor's RescaleSlope) and robust to a few hot pixels; the card says "linear" without the
   range.  Models whose manifest has no ``bias_order`` were trained without the correction and get none.
4. Slice-wise 2D affine registration of bSSFP and T2w onto LGE guided by the myocardial prior
   (see :mod:`.registration`); optional B-spline refinement.
5. ROI crop 128 x 128 centred on the centroid of the myocardial prior over all slices.

The myocardial prior is the ground-truth myocardium in training and, at inference, a first-pass
prediction of the same model on the unregistered 224 x 224 grid (see :mod:`.inference`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from pipelines.imaging import Volume
from pipelines.imaging.geometry import index_to_patient, patient_to_index

from .registration import RegistrationConfig, SliceTransform, register_stack

__all__ = ["PreprocessConfig", "SliceMatch", "GridStack", "match_slices", "build_grid_stack", "normalise",
           "roi_origin", "register_and_crop", "ModelInput", "CHANNELS", "PreprocessError", "shading_field",
           "correct_shading"]

#: Input channel order of the network.
CHANNELS = ("bssfp", "lge", "t2")


class PreprocessError(ValueError):
    """The sequences cannot be brought onto a common grid (e.g. no slice correspondence)."""


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    grid_size: int = 224
    grid_spacing_mm: float = 1.0
    roi_size: int = 128
    anchor: str = "lge"
    channels: tuple[str, ...] = CHANNELS
    max_slice_distance_mm: float | None = None
    percentiles: tuple[float, float] = (0.5, 99.5)
    bias_order: int = 0  # polynomial order of the per-slice shading correction (0: none)
    registration: RegistrationConfig = RegistrationConfig()

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["channels"] = list(self.channels)
        d["percentiles"] = list(self.percentiles)
        return d


@dataclasses.dataclass(frozen=True)
class SliceMatch:
    """Matched slice indices: ``indices[seq][i]`` is the slice of ``seq`` in matched tuple ``i``."""

    reference: str
    indices: dict[str, np.ndarray]
    distances_mm: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.indices[self.reference])


def _slice_centres(vol: Volume) -> np.ndarray:
    nz, ny, nx = vol.array.shape
    idx = np.stack([np.arange(nz, dtype=float), np.full(nz, (ny - 1) / 2.0), np.full(nz, (nx - 1) / 2.0)], axis=1)
    return np.atleast_2d(index_to_patient(vol, idx))


def match_slices(volumes: Mapping[str, Volume], max_distance_mm: float | None = None) -> SliceMatch:
    """Nearest-neighbour, one-to-one slice correspondence with the fewest-slice sequence as reference."""
    names = list(volumes)
    reference = min(names, key=lambda n: (volumes[n].array.shape[0], n != "lge"))
    ref = volumes[reference]
    normal = np.asarray(ref.direction, dtype=float)[:, 2]
    ref_pos = _slice_centres(ref) @ normal
    limit = max_distance_mm if max_distance_mm is not None else 0.5 * max(v.spacing[0] for v in volumes.values())
    keep = np.ones(len(ref_pos), dtype=bool)
    chosen: dict[str, np.ndarray] = {}
    dists: dict[str, np.ndarray] = {}
    for name in names:
        if name == reference:
            continue
        pos = _slice_centres(volumes[name]) @ normal
        d = np.abs(ref_pos[:, None] - pos[None, :])
        nearest = np.argmin(d, axis=1)
        best = d[np.arange(len(ref_pos)), nearest]
        ok = best <= limit
        for j in np.unique(nearest):  # one-to-one: a partner slice goes to its closest reference slice
            claim = np.flatnonzero((nearest == j) & ok)
            if len(claim) > 1:
                winner = claim[np.argmin(best[claim])]
                ok[claim[claim != winner]] = False
        keep &= ok
        chosen[name], dists[name] = nearest, best
    if not keep.any():
        found = {n: volumes[n].array.shape[0] for n in names}
        raise PreprocessError(f"no slice of {reference} has a partner within {limit:.1f} mm in every other "
                              f"sequence (slices: {found}); are the series from the same stack?")
    indices = {reference: np.flatnonzero(keep)}
    distances = {reference: np.zeros(int(keep.sum()))}
    for name in chosen:
        indices[name] = chosen[name][keep]
        distances[name] = dists[name][keep]
    return SliceMatch(reference=reference, indices=indices, distances_mm=distances)


@dataclasses.dataclass
class GridStack:
    """Matched slices of every sequence sampled on the 1 mm grids in the anchor slice planes."""

    images: dict[str, np.ndarray]  # seq -> (n, G, G) float32, [0, 255]
    match: SliceMatch
    anchor: str
    grid_points: np.ndarray  # (n, G, G, 3) patient xyz of every grid point (anchor planes)
    anchor_slices: np.ndarray  # (n,) slice index in the anchor volume
    spacing_mm: float

    @property
    def n(self) -> int:
        return int(self.anchor_slices.shape[0])


def _grid_points(vol: Volume, k: int, size: int, spacing: float) -> npt.NDArray[np.float64]:
    nz, ny, nx = vol.array.shape
    centre = index_to_patient(vol, (float(k), (ny - 1) / 2.0, (nx - 1) / 2.0))
    row, col = np.asarray(vol.direction, dtype=float)[:, 0], np.asarray(vol.direction, dtype=float)[:, 1]
    off = (np.arange(size) - (size - 1) / 2.0) * spacing
    points: npt.NDArray[np.float64] = (centre[None, None, :] + off[None, :, None] * row[None, None, :]
                                       + off[:, None, None] * col[None, None, :])
    return points


def sample_on_grid(vol: Volume, k: int, points: np.ndarray, *, order: int) -> npt.NDArray[np.float32]:
    """Sample slice ``k`` of ``vol`` at patient ``points`` (G, G, 3), projected into the slice plane."""
    g = points.shape[0]
    idx = patient_to_index(vol, points.reshape(-1, 3))
    yx = idx[:, 1:].T.reshape(2, g, g)
    sampled: npt.NDArray[np.float32] = ndimage.map_coordinates(np.asarray(vol.array[k], dtype=np.float32), yx,
                                                               order=order, mode="constant", cval=0.0)
    return sampled.astype(np.float32)


def normalise(stack: np.ndarray, percentiles: Sequence[float] = (0.5, 99.5)) -> npt.NDArray[np.float32]:
    """Linear map of the stack's [p_lo, p_hi] percentile range to [0, 255], clipped."""
    lo, hi = np.percentile(stack, percentiles)
    if hi - lo < 1e-6:
        return np.zeros_like(stack, dtype=np.float32)
    scaled: np.ndarray = np.clip((stack - lo) * (255.0 / (hi - lo)), 0.0, 255.0)
    return scaled.astype(np.float32)


def shading_field(image: np.ndarray, order: int = 2, iterations: int = 3) -> np.ndarray:
    """Smooth multiplicative field (same shape as the 2D ``image``, mean 1 over the body) that explains
    its large-scale brightness variation: a polynomial of ``order`` in (x, y) fitted by least squares
    to log(signal) of the body pixels (above 15 % of the 98th percentile), refitted without the pixels
    it explains worst (tissue contrast, vessels) so anatomy does not bend the field."""
    img = np.asarray(image, dtype=np.float64)
    ref = float(np.percentile(img, 98.0))
    if order <= 0 or ref <= 0:
        return np.ones_like(img, dtype=np.float32)
    body = img > 0.15 * ref
    if body.sum() < 50:
        return np.ones_like(img, dtype=np.float32)
    ny, nx = img.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    x, y = (xx - (nx - 1) / 2.0) / (nx / 2.0), (yy - (ny - 1) / 2.0) / (ny / 2.0)
    terms = [np.ones_like(x)] + [x ** i * y ** j for n in range(1, order + 1) for i in range(n + 1) for j in [n - i]]
    basis = np.stack([t.ravel() for t in terms], axis=1)
    logv = np.log(np.maximum(img, 1e-6 * ref)).ravel()
    use = body.ravel().copy()
    coef = np.zeros(basis.shape[1])
    for _ in range(iterations):
        coef, *_ = np.linalg.lstsq(basis[use], logv[use], rcond=None)
        resid = logv - basis @ coef
        spread = float(np.std(resid[use])) or 1.0
        use = body.ravel() & (np.abs(resid) < 1.5 * spread)
        if use.sum() < 50:
            break
    fit = (basis @ coef).reshape(ny, nx)
    fit -= float(fit[body].mean())
    return np.exp(fit).astype(np.float32)


def correct_shading(stack: np.ndarray, order: int) -> np.ndarray:
    """Every slice of a (n, G, G) stack divided by its :func:`shading_field` (order 0: unchanged)."""
    if order <= 0:
        return stack
    return np.stack([sl / shading_field(sl, order) for sl in stack]).astype(np.float32)


def build_grid_stack(volumes: Mapping[str, Volume], cfg: PreprocessConfig = PreprocessConfig()) -> GridStack:
    """Steps 1-3: slice correspondence, 1 mm sampling on the 224 grid, intensity normalisation."""
    missing = [c for c in cfg.channels if c not in volumes]
    if missing:
        raise PreprocessError(f"missing sequences {missing}")
    match = match_slices({c: volumes[c] for c in cfg.channels}, cfg.max_slice_distance_mm)
    anchor = volumes[cfg.anchor]
    anchor_slices = match.indices[cfg.anchor]
    points = np.stack([_grid_points(anchor, int(k), cfg.grid_size, cfg.grid_spacing_mm) for k in anchor_slices])
    images = {}
    for seq in cfg.channels:
        vol = volumes[seq]
        raw = np.stack([sample_on_grid(vol, int(k), points[i], order=1)
                        for i, k in enumerate(match.indices[seq])])
        images[seq] = normalise(correct_shading(raw, cfg.bias_order), cfg.percentiles)
    return GridStack(images=images, match=match, anchor=cfg.anchor, grid_points=points,
                     anchor_slices=anchor_slices, spacing_mm=cfg.grid_spacing_mm)


def label_on_grid(label: Volume, stack: GridStack) -> np.ndarray:
    """A class label volume (in the anchor frame) sampled nearest-neighbour on the stack's grids."""
    out = []
    for i in range(stack.n):
        pts = stack.grid_points[i]
        idx = patient_to_index(label, pts[(pts.shape[0] // 2,), (pts.shape[1] // 2,)].reshape(1, 3))[0]
        k = int(np.clip(np.rint(idx[0]), 0, label.array.shape[0] - 1))
        out.append(np.rint(sample_on_grid(label, k, pts, order=0)).astype(np.uint8))
    return np.stack(out)


def roi_origin(prior: np.ndarray, roi: int, grid: int) -> tuple[int, int]:
    """Top-left (y, x) of the ROI centred on the prior's centroid over all slices (grid centre if empty)."""
    if prior.any():
        cy, cx = ndimage.center_of_mass(prior.any(axis=0) if prior.ndim == 3 else prior)
    else:
        cy = cx = (grid - 1) / 2.0
    y0 = int(np.clip(int(round(cy - roi / 2.0)), 0, grid - roi))
    x0 = int(np.clip(int(round(cx - roi / 2.0)), 0, grid - roi))
    return y0, x0


@dataclasses.dataclass
class ModelInput:
    """Network input (n, C, R, R) float32 in [0, 255], plus what is needed to map predictions back."""

    tensor: np.ndarray
    roi_yx: tuple[int, int]
    transforms: dict[str, list[SliceTransform]]
    registered: dict[str, np.ndarray]  # seq -> (n, G, G) after registration


def register_and_crop(stack: GridStack, prior: np.ndarray, cfg: PreprocessConfig = PreprocessConfig()) -> ModelInput:
    """Steps 4-5: register every non-anchor sequence onto the anchor guided by ``prior`` (n, G, G)
    myocardium mask, then crop the ROI.  Same code for training (prior = ground truth) and inference."""
    prior = np.asarray(prior, dtype=bool)
    if prior.shape != stack.images[stack.anchor].shape:
        raise PreprocessError(f"prior shape {prior.shape} != grid stack {stack.images[stack.anchor].shape}")
    registered = {stack.anchor: stack.images[stack.anchor]}
    transforms: dict[str, list[SliceTransform]] = {}
    for seq in cfg.channels:
        if seq == stack.anchor:
            continue
        registered[seq], transforms[seq] = register_stack(stack.images[stack.anchor], stack.images[seq], prior,
                                                          stack.spacing_mm, cfg.registration)
    y0, x0 = roi_origin(prior, cfg.roi_size, cfg.grid_size)
    r = cfg.roi_size
    tensor = np.stack([registered[c][:, y0:y0 + r, x0:x0 + r] for c in cfg.channels], axis=1).astype(np.float32)
    return ModelInput(tensor=np.ascontiguousarray(tensor), roi_yx=(y0, x0), transforms=transforms,
                      registered=registered)
