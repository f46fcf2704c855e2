"""The one preprocessing of an angiography cine, shared by the pipeline and by training (numpy only).

Steps (reference notes, CardioSyntax apps): uint16 cines are rescaled to 0-255 by the clip maximum;
a clip shorter than ``frames`` is repeat-concatenated; ``frames`` consecutive frames are taken
(centred at inference, a given start in training); each frame is divided by 255 and resized with
antialiasing (PIL bilinear on float32, which averages over the source footprint when shrinking);
the grey frame is repeated into 3 channels normalised with ImageNet mean / std.

Options a manifest may declare (absent: the reference behaviour above):

- ``clip: "spread"``: ``frames`` frames spread evenly over the whole cine instead of consecutive
  ones, so that a 15-frame and a 120-frame run (or 7.5 and 30 frames/s) both show the model the
  contrast arriving and filling the tree (see :func:`spread_indices`).
- ``clip: "minip"`` (with ``samples``): ``samples`` frames spread over the cine (as ``spread``), and
  output frame ``j`` is the running minimum-intensity projection of the samples up to the end of the
  ``j``-th of ``frames`` equal groups -- vessels are dark, so each frame shows every vessel that has
  filled so far and the last one the whole opacified tree, whatever the injection timing, wash-out
  or frame count.  The minimum is taken after the resize (less noise in it).
- ``filter: "tophat"`` (with ``tophat_px``): a black top-hat per output frame (grey closing with a
  ``tophat_px`` square, minus the frame): thin dark structures (vessels, catheter) stay, wide ones
  (diaphragm, spine, lungs, table, an opacified ventricle or aorta) and slow shading go.
- ``subtract: "max"``: digital subtraction before the projection: from each sampled frame the
  per-pixel maximum over the samples (the least opacified value, in practice the frame before the
  contrast arrives or after it washes out) is subtracted, so what stays still during the run -- spine,
  ribs, sternal wires, leads, table, an unfilled catheter, soft-tissue texture -- leaves the clip and
  what fills with contrast stays.  A run that already shows the whole tree in every sampled frame
  loses it, and the model, trained on contrast-free test shots as "neither", then abstains.
- ``register: "shift"`` (with ``subtract: "max"``, search radius ``register_px``): before the
  subtraction, each sampled frame is shifted onto the least opacified one (pixel shifting, as DSA
  units re-register the mask): breathing, table panning or a patient who moves would otherwise leave
  every edge of the background (diaphragm, spine, ribs, catheter, shutters) in the subtracted clip.
  The shift is the one, within ``register_px`` pixels at twice the model's size and refined to a
  fraction of a pixel, that leaves the least *brightening* between the two frames: contrast only
  darkens, so the filling vessels do not pull the shift, while a misaligned edge brightens on one
  side.  The band at the image border that a shift uncovers takes the nearest inner values after the
  subtraction.
- ``intensity: "percentile"``: after sampling, the clip is stretched so that its 1st / 99th
  percentiles map to 0 / 1, making the model indifferent to window, bit depth and contrast density.

Result: float32 array (3, frames, height, width) -- one view of the model input
(batch, views, 3, frames, height, width).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import numpy as np
import numpy.typing as npt
from PIL import Image

__all__ = ["CineConfig", "PreprocessError", "to_uint8", "clip_indices", "spread_indices", "sample_clip",
           "resize_frames", "read_indices", "preprocess_frames", "black_tophat", "preprocess_cine", "IMAGENET_MEAN",
           "IMAGENET_STD", "CLIPS", "INTENSITIES", "FILTERS", "SUBTRACTS", "REGISTERS",
           "register_shifts"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: temporal sampling: consecutive frames (reference) or spread over the cine
CLIPS = ("centre", "spread", "minip")
#: intensity scaling after sampling: 1/255 (reference) or the clip's 1-99 percentile stretch
INTENSITIES = ("1/255", "percentile")
#: spatial filter of each output frame: none (reference) or a black top-hat
FILTERS = ("none", "tophat")
#: temporal subtraction before the projection: none (reference) or the per-pixel maximum of the samples
SUBTRACTS = ("none", "max")
#: frame registration before the subtraction: none, or a translation per frame (pixel shifting)
REGISTERS = ("none", "shift")


class PreprocessError(ValueError):
    """The cine or the preprocessing parameters are unusable (message names the problem)."""


@dataclasses.dataclass(frozen=True)
class CineConfig:
    """Preprocessing parameters; stored in every model manifest's ``preprocessing`` and read back from it."""

    frames: int = 32
    height: int = 256
    width: int = 256
    mean: tuple[float, ...] = IMAGENET_MEAN  # 3 values (checked in __post_init__)
    std: tuple[float, ...] = IMAGENET_STD
    clip: str = "centre"
    intensity: str = "1/255"
    samples: int = 0  # clip "minip": frames read from the cine (0: ``frames``)
    filter: str = "none"
    tophat_px: int = 0  # filter "tophat": square side in output pixels
    subtract: str = "none"  # "max": subtract the per-pixel maximum of the samples (digital subtraction)
    register: str = "none"  # "shift": translate each sample onto the least opacified one before subtracting
    register_px: int = 0  # register "shift": search radius in pixels at twice the model's size

    def __post_init__(self) -> None:
        if self.clip not in CLIPS:
            raise PreprocessError(f"clip must be one of {', '.join(CLIPS)}, got {self.clip!r}")
        if self.intensity not in INTENSITIES:
            raise PreprocessError(f"intensity must be one of {', '.join(INTENSITIES)}, got {self.intensity!r}")
        if self.filter not in FILTERS:
            raise PreprocessError(f"filter must be one of {', '.join(FILTERS)}, got {self.filter!r}")
        if self.subtract not in SUBTRACTS:
            raise PreprocessError(f"subtract must be one of {', '.join(SUBTRACTS)}, got {self.subtract!r}")
        if self.register not in REGISTERS:
            raise PreprocessError(f"register must be one of {', '.join(REGISTERS)}, got {self.register!r}")
        if self.register != "none" and (self.subtract != "max" or self.register_px < 1):
            raise PreprocessError(f"register {self.register!r} needs subtract 'max' and register_px >= 1, "
                                  f"got subtract {self.subtract!r}, register_px {self.register_px}")
        if self.samples and self.samples < self.frames:
            raise PreprocessError(f"samples ({self.samples}) must be 0 or >= frames ({self.frames})")
        if self.filter == "tophat" and self.tophat_px < 2:
            raise PreprocessError(f"filter tophat needs tophat_px >= 2, got {self.tophat_px}")
        if self.frames < 1 or self.height < 1 or self.width < 1:
            raise PreprocessError(f"frames/height/width must be >= 1, got {self.frames}/{self.height}/{self.width}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise PreprocessError(f"mean/std must be 3 values with std > 0, got {self.mean} / {self.std}")

    def to_manifest(self) -> dict[str, Any]:
        out = {"frames": self.frames, "size": [self.height, self.width], "mean": list(self.mean),
               "std": list(self.std), "channels": 3, "clip": self.clip, "scale": "1/255",
               "resize": "bilinear antialias (PIL)"}
        if self.intensity != "1/255":
            out["intensity"] = self.intensity
        if self.clip == "minip":
            out["samples"] = self.n_samples
        if self.filter != "none":
            out["filter"], out["tophat_px"] = self.filter, self.tophat_px
        if self.subtract != "none":
            out["subtract"] = self.subtract
        if self.register != "none":
            out["register"], out["register_px"] = self.register, self.register_px
        return out

    @property
    def n_samples(self) -> int:
        """Frames read from the cine per clip."""
        return self.samples if self.clip == "minip" and self.samples else self.frames

    @classmethod
    def from_manifest(cls, pre: Mapping[str, Any], source: str = "manifest") -> "CineConfig":
        """Parameters from a manifest's ``preprocessing``; a missing or bad key raises PreprocessError naming it."""
        try:
            size = pre["size"]
            if not isinstance(size, Sequence) or len(size) != 2:
                raise PreprocessError(f"{source}: preprocessing.size must be [height, width], got {size!r}")
            return cls(frames=int(pre["frames"]), height=int(size[0]), width=int(size[1]),
                       mean=tuple(float(v) for v in pre.get("mean", IMAGENET_MEAN)),
                       std=tuple(float(v) for v in pre.get("std", IMAGENET_STD)),
                       clip=str(pre.get("clip", "centre")), intensity=str(pre.get("intensity", "1/255")),
                       samples=int(pre.get("samples", 0)), filter=str(pre.get("filter", "none")),
                       tophat_px=int(pre.get("tophat_px", 0)), subtract=str(pre.get("subtract", "none")),
                       register=str(pre.get("register", "none")), register_px=int(pre.get("register_px", 0)))
        except KeyError as exc:
            raise PreprocessError(f"{source}: preprocessing has no key {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            if isinstance(exc, PreprocessError):
                raise
            raise PreprocessError(f"{source}: bad preprocessing values: {exc}") from None


def to_uint8(cine: np.ndarray) -> np.ndarray:
    """(T, H, W) uint8; uint16 (or other integer / float) cines are rescaled to 0-255 by the clip maximum."""
    arr = np.asarray(cine)
    if arr.ndim != 3 or min(arr.shape) < 1:
        raise PreprocessError(f"expected a (frames, height, width) cine, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr
    return _scale_uint8(arr, float(arr.max()))


def _scale_uint8(arr: np.ndarray, peak: float) -> npt.NDArray[np.uint8]:
    if peak <= 0:
        return np.zeros(arr.shape, np.uint8)
    scaled: npt.NDArray[np.float32] = np.clip(np.rint(arr.astype(np.float32) * np.float32(255.0 / peak)), 0, 255)
    return scaled.astype(np.uint8)


def clip_indices(n: int, frames: int, start: int | None = None) -> npt.NDArray[np.int64]:
    """Frame indices of the clip: repeat-concatenate a short cine (0..n-1, 0..n-1, ...) then take
    ``frames`` consecutive ones from ``start`` (None = centred)."""
    if n < 1:
        raise PreprocessError("cine has no frames")
    reps = -(-frames // n)
    total = n * reps
    if start is None:
        start = (total - frames) // 2
    if not 0 <= start <= total - frames:
        raise PreprocessError(f"clip start {start} outside 0..{total - frames}")
    return (np.arange(start, start + frames) % n).astype(np.int64)


def spread_indices(n: int, frames: int, offset: float | None = None) -> npt.NDArray[np.int64]:
    """``frames`` indices spread evenly over 0..n-1: the centres of ``frames`` equal parts of the cine
    (``offset`` None = 0.5, the centre of each part; training draws it in [0, 1) to jitter the
    sampling).  Cines shorter than ``frames`` repeat frames in order."""
    if n < 1:
        raise PreprocessError("cine has no frames")
    off = 0.5 if offset is None else float(offset)
    if not 0.0 <= off < 1.0 + 1e-9:
        raise PreprocessError(f"spread offset {off} outside 0..1")
    idx = np.floor((np.arange(frames) + off) * (n / frames)).astype(np.int64)
    clipped: npt.NDArray[np.int64] = np.clip(idx, 0, n - 1)
    return clipped


def sample_clip(cine: np.ndarray, frames: int, start: int | None = None) -> np.ndarray:
    """``frames`` frames of the cine (see :func:`clip_indices`)."""
    clip: np.ndarray = cine[clip_indices(cine.shape[0], frames, start)]
    return clip


def resize_frames(frames01: np.ndarray, height: int, width: int) -> np.ndarray:
    """Antialiased bilinear resize of float32 frames (T, H, W) to (T, height, width)."""
    if frames01.shape[1:] == (height, width):
        return frames01.astype(np.float32, copy=False)
    out = np.empty((frames01.shape[0], height, width), np.float32)
    for i, f in enumerate(frames01):
        img = Image.fromarray(np.ascontiguousarray(f, dtype=np.float32), mode="F")
        out[i] = np.asarray(img.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)
    return out


def read_indices(n: int, cfg: CineConfig, start: int | float | None = None) -> npt.NDArray[np.int64]:
    """Indices of the frames a clip reads from an ``n``-frame cine (``start``: see :func:`preprocess_cine`)."""
    if cfg.clip in ("spread", "minip"):
        return spread_indices(n, cfg.n_samples, None if start is None else float(start))
    return clip_indices(n, cfg.frames, None if start is None else int(start))


def _window_reduce(a: npt.NDArray[np.float32], k: int, fn: np.ufunc) -> npt.NDArray[np.float32]:
    """``fn`` (np.minimum / np.maximum) over a k x k square centred on each pixel of (..., H, W), edges replicated."""
    lo, hi = (k - 1) // 2, k // 2
    for axis in (-2, -1):
        pad = [(0, 0)] * a.ndim
        pad[axis] = (lo, hi)
        p = np.pad(a, pad, mode="edge")
        n = a.shape[axis]
        out: npt.NDArray[np.float32] = np.take(p, range(0, n), axis=axis)
        for d in range(1, k):
            out = fn(out, np.take(p, range(d, d + n), axis=axis))
        a = out
    return a


def black_tophat(frames: npt.NDArray[np.float32], k: int) -> npt.NDArray[np.float32]:
    """Grey closing with a k x k square minus the frames (T, H, W): dark structures thinner than k pixels."""
    closing = _window_reduce(_window_reduce(frames, k, np.maximum), k, np.minimum)
    return (closing - frames).astype(np.float32)


#: weight of darkening against brightening in the shift search (contrast only darkens a frame)
DARKENING_WEIGHT = 0.1
#: share of the most darkened pixels (filled vessels) left out of the sub-pixel refinement
VESSEL_SHARE = 0.03


def _window(img: npt.NDArray[np.float32], r: int, dy: int, dx: int) -> npt.NDArray[np.float32]:
    """``img`` at (y + dy, x + dx) for the pixels of the core (the border r pixels wide left out)."""
    h, w = img.shape
    return img[r + dy:h - r + dy, r + dx:w - r + dx]


def _best_shift(ref: npt.NDArray[np.float32], img: npt.NDArray[np.float32], radius: int) -> tuple[float, float]:
    """(dy, dx) such that ``img`` at (y + dy, x + dx) matches ``ref`` at (y, x); see :func:`register_shifts`."""
    r = radius
    core = _window(ref, r, 0, 0)
    cost = np.empty((2 * r + 1, 2 * r + 1))
    for i in range(2 * r + 1):
        for j in range(2 * r + 1):
            d = _window(img, r, i - r, j - r) - core
            cost[i, j] = float(np.mean(np.where(d > 0, d * d, DARKENING_WEIGHT * d * d)))
    i, j = (int(v) for v in np.unravel_index(int(np.argmin(cost)), cost.shape))
    dy, dx = i - r, j - r
    d0 = _window(img, r, dy, dx) - core
    keep = d0 >= np.quantile(d0, VESSEL_SHARE)  # on the reference's grid: the same pixels for every neighbour

    def ssd(y: int, x: int) -> float:
        if max(abs(y), abs(x)) > r:
            return math.inf
        return float(np.mean(np.square(_window(img, r, y, x) - core)[keep]))

    c0 = ssd(dy, dx)
    return dy + _vertex(ssd(dy - 1, dx), c0, ssd(dy + 1, dx)), dx + _vertex(ssd(dy, dx - 1), c0, ssd(dy, dx + 1))


def _vertex(a: float, b: float, c: float) -> float:
    """Offset of the parabola's minimum through (-1, a), (0, b), (1, c), within -0.5..0.5 (0 at the search's edge)."""
    den = a - 2.0 * b + c
    if not math.isfinite(den) or den <= 1e-15:
        return 0.0
    return float(np.clip(0.5 * (a - c) / den, -0.5, 0.5))


def _shifted(frames: npt.NDArray[np.float32], shifts: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    """Each frame moved so that its content at +shift lands where the reference has it (bilinear, edges held)."""
    from scipy import ndimage

    out = frames.copy()
    for k, (dy, dx) in enumerate(shifts):
        if dy or dx:
            out[k] = ndimage.shift(frames[k], (-dy, -dx), order=1, mode="nearest")
    return out


def register_shifts(frames: npt.NDArray[np.float32], radius: int) -> npt.NDArray[np.float64]:
    """Per-frame translation (dy, dx) in pixels that moves each of ``frames`` (T, H, W; vessels dark)
    onto the run's mask, the least opacified value of every pixel.

    The integer shift within ``radius`` minimises the mean squared difference frame - mask with
    darkening weighted ``DARKENING_WEIGHT``: contrast only darkens a frame, so a filling vessel hardly
    pulls the shift, while a misaligned edge brightens on one side.  It is refined to a fraction of a
    pixel by a parabola through the plain squared differences of the neighbouring shifts, leaving out
    the ``VESSEL_SHARE`` most darkened pixels (a shift at the edge of the search is not refined).
    Two passes: the frames are first registered to the brightest one, then to the per-pixel maximum
    of the registered frames, which holds no vessel wherever a pixel is unopacified in some frame (the
    brightest frame may itself hold contrast, or have moved)."""
    from scipy import ndimage

    if min(frames.shape[1:]) <= 4 * radius:
        raise PreprocessError(f"frames of {frames.shape[1:]} pixels are too small to register within {radius}")
    smooth = ndimage.gaussian_filter(frames, (0, 0.7, 0.7))
    ref = smooth[int(np.argmax(smooth.reshape(len(smooth), -1).mean(axis=1)))]
    shifts = np.asarray([_best_shift(ref, f, radius) for f in smooth], np.float64)
    mask = _shifted(smooth, shifts).max(axis=0)
    return np.asarray([_best_shift(mask, f, radius) for f in smooth], np.float64)


def _registered_subtraction(frames01: npt.NDArray[np.float32], cfg: CineConfig) -> npt.NDArray[np.float32]:
    """Pixel-shifted digital subtraction at twice the model's size, then resized to it (``register: shift``)."""
    big = resize_frames(frames01, 2 * cfg.height, 2 * cfg.width)
    shifts = register_shifts(big, cfg.register_px)
    big = _shifted(big, shifts)
    big -= big.max(axis=0, keepdims=True)
    band = int(np.ceil(np.abs(shifts).max())) + 1 if np.abs(shifts).max() > 0 else 0
    if band:  # what a shift uncovered at the border: the nearest inner value (no edge for the top-hat to find)
        big = np.pad(big[:, band:-band, band:-band], ((0, 0), (band, band), (band, band)), mode="edge")
    return resize_frames(big, cfg.height, cfg.width)


def preprocess_frames(picked: np.ndarray, cfg: CineConfig, peak: float | None = None) -> np.ndarray:
    """The frames :func:`read_indices` chose (in that order) -> float32 (3, frames, height, width).
    ``peak``: the whole cine's maximum for non-uint8 cines (None: the picked frames' maximum)."""
    arr = np.asarray(picked)
    u8 = arr if arr.dtype == np.uint8 else _scale_uint8(arr, float(arr.max()) if peak is None else peak)
    if cfg.register == "shift":
        small = _registered_subtraction(u8.astype(np.float32) / 255.0, cfg)
    else:
        small = resize_frames(u8.astype(np.float32) / 255.0, cfg.height, cfg.width)
        if cfg.subtract == "max":
            small = (small - small.max(axis=0, keepdims=True)).astype(np.float32)
    if cfg.clip == "minip":
        run = np.minimum.accumulate(small, axis=0)
        ends = np.floor((np.arange(cfg.frames) + 1) * (len(small) / cfg.frames)).astype(np.int64) - 1
        small = run[np.clip(ends, 0, len(small) - 1)]
    if cfg.filter == "tophat":
        small = black_tophat(small, cfg.tophat_px)
    if cfg.intensity == "percentile":
        lo, hi = np.percentile(small, [1.0, 99.0])
        small = np.clip((small - lo) / max(float(hi - lo), 1e-3), 0.0, 1.0).astype(np.float32)
    mean = np.asarray(cfg.mean, np.float32)[:, None, None, None]
    std = np.asarray(cfg.std, np.float32)[:, None, None, None]
    return np.ascontiguousarray((small[None] - mean) / std, dtype=np.float32)


def preprocess_cine(cine: np.ndarray, cfg: CineConfig, start: int | float | None = None) -> np.ndarray:
    """One cine (T, H, W) -> float32 (3, frames, height, width), normalised.  ``start`` None = centred
    clip (or evenly spread frames); in training the clip start (``clip`` centre) or the spread offset
    in [0, 1) (``clip`` spread / minip).  Only the read frames are converted, so long 1024-pixel cines
    cost little beyond their decoding."""
    arr = np.asarray(cine)
    if arr.ndim != 3 or min(arr.shape) < 1:
        raise PreprocessError(f"expected a (frames, height, width) cine, got shape {arr.shape}")
    picked = arr[read_indices(arr.shape[0], cfg, start)]
    # scaled by the cine's peak
    return preprocess_frames(picked, cfg, None if arr.dtype == np.uint8 else float(arr.max()))
