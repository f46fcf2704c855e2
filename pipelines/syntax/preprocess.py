"""The one preprocessing of an angiography cine, shared by the pipeline and by training (numpy only).

Steps (reference notes, CardioSyntax apps): uint16 cines are rescaled to 0-255 by the clip maximum;
a clip shorter than ``frames`` is repeat-concatenated; ``frames`` consecutive frames are taken
(centred at inference, a given start in training); each frame is divided by 255 and resized with
antialiasing (PIL bilinear on float32, which averages over the source footprint when shrinking);
the grey frame is repeated into 3 channels normalised with ImageNet mean / std.

Result: float32 array (3, frames, height, width) -- one view of the model input
(batch, views, 3, frames, height, width).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image

__all__ = ["CineConfig", "PreprocessError", "to_uint8", "clip_indices", "sample_clip", "resize_frames", "preprocess_cine",
           "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PreprocessError(ValueError):
    """The cine or the preprocessing parameters are unusable (message names the problem)."""


@dataclasses.dataclass(frozen=True)
class CineConfig:
    """Preprocessing parameters; stored in every model manifest's ``preprocessing`` and read back from it."""

    frames: int = 32
    height: int = 256
    width: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.frames < 1 or self.height < 1 or self.width < 1:
            raise PreprocessError(f"frames/height/width must be >= 1, got {self.frames}/{self.height}/{self.width}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise PreprocessError(f"mean/std must be 3 values with std > 0, got {self.mean} / {self.std}")

    def to_manifest(self) -> dict[str, Any]:
        return {"frames": self.frames, "size": [self.height, self.width], "mean": list(self.mean),
                "std": list(self.std), "channels": 3, "clip": "centre", "scale": "1/255",
                "resize": "bilinear antialias (PIL)"}

    @classmethod
    def from_manifest(cls, pre: Mapping[str, Any], source: str = "manifest") -> "CineConfig":
        """Parameters from a manifest's ``preprocessing``; a missing or bad key raises PreprocessError naming it."""
        try:
            size = pre["size"]
            if not isinstance(size, Sequence) or len(size) != 2:
                raise PreprocessError(f"{source}: preprocessing.size must be [height, width], got {size!r}")
            return cls(frames=int(pre["frames"]), height=int(size[0]), width=int(size[1]),
                       mean=tuple(float(v) for v in pre.get("mean", IMAGENET_MEAN)),  # type: ignore[arg-type]
                       std=tuple(float(v) for v in pre.get("std", IMAGENET_STD)))  # type: ignore[arg-type]
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
    a = arr.astype(np.float32)
    peak = float(a.max())
    if peak <= 0:
        return np.zeros(arr.shape, np.uint8)
    return np.clip(np.rint(a * (255.0 / peak)), 0, 255).astype(np.uint8)


def clip_indices(n: int, frames: int, start: int | None = None) -> np.ndarray:
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


def sample_clip(cine: np.ndarray, frames: int, start: int | None = None) -> np.ndarray:
    """``frames`` frames of the cine (see :func:`clip_indices`)."""
    return cine[clip_indices(cine.shape[0], frames, start)]


def resize_frames(frames01: np.ndarray, height: int, width: int) -> np.ndarray:
    """Antialiased bilinear resize of float32 frames (T, H, W) to (T, height, width)."""
    if frames01.shape[1:] == (height, width):
        return frames01.astype(np.float32, copy=False)
    out = np.empty((frames01.shape[0], height, width), np.float32)
    for i, f in enumerate(frames01):
        img = Image.fromarray(np.ascontiguousarray(f, dtype=np.float32), mode="F")
        out[i] = np.asarray(img.resize((width, height), Image.BILINEAR), dtype=np.float32)
    return out


def preprocess_cine(cine: np.ndarray, cfg: CineConfig, start: int | None = None) -> np.ndarray:
    """One cine (T, H, W) -> float32 (3, frames, height, width), normalised.  ``start`` None = centred clip."""
    clip = sample_clip(to_uint8(cine), cfg.frames, start).astype(np.float32) / 255.0
    small = resize_frames(clip, cfg.height, cfg.width)
    mean = np.asarray(cfg.mean, np.float32)[:, None, None, None]
    std = np.asarray(cfg.std, np.float32)[:, None, None, None]
    return np.ascontiguousarray((small[None] - mean) / std, dtype=np.float32)
