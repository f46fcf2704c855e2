"""Frames of an XA (or other multi-frame, non-volumetric) instance as a (T, H, W) array."""
from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset

from pipelines.base import InstanceRef, PipelineInputError

__all__ = ["load_cine", "cine_frame_time_ms"]


def load_cine(ref: InstanceRef) -> np.ndarray:
    """Decode all frames of ``ref`` as (T, H, W) in the stored integer type (uint8 or uint16).

    A single-frame instance gives T=1.  Compressed transfer syntaxes (JPEG Baseline/Lossless,
    JPEG-LS, JPEG 2000, RLE) are decoded through pydicom's pixel handlers (pylibjpeg).  Colour
    frames (rare for XA) are reduced to luma with ITU-R BT.601 weights; MONOCHROME1 is inverted so
    that bright always means more signal.
    """
    ds = ref.read()
    if "PixelData" not in ds:
        raise PipelineInputError(f"{ref.path.name}: no pixel data")
    try:
        arr = ds.pixel_array
    except (NotImplementedError, RuntimeError, ValueError) as exc:
        raise PipelineInputError(
            f"{ref.path.name}: cannot decode pixel data (transfer syntax {ds.file_meta.TransferSyntaxUID}): {exc}"
        ) from exc
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    spp = int(ds.get("SamplesPerPixel", 1))
    if spp == 3:
        if frames == 1:
            arr = arr[None]
        # pydicom returns RGB (YBR is converted on decode): reduce to BT.601 luma
        luma = arr.astype(np.float32) @ np.asarray([0.299, 0.587, 0.114], dtype=np.float32)
        arr = np.clip(np.rint(luma), 0, np.iinfo(arr.dtype).max).astype(arr.dtype)
    elif frames == 1:
        arr = arr[None]
    if arr.ndim != 3:
        raise PipelineInputError(f"{ref.path.name}: unexpected cine shape {arr.shape}")
    if arr.dtype.kind == "i":  # signed stored values: shift into the unsigned range of the same width
        arr = (arr.astype(np.int64) - np.iinfo(arr.dtype).min).astype(np.dtype(f"u{arr.dtype.itemsize}"))
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        bits = int(ds.get("BitsStored", arr.dtype.itemsize * 8))
        arr = ((1 << bits) - 1 - arr.astype(np.int64)).clip(0).astype(arr.dtype)
    return np.ascontiguousarray(arr)


def cine_frame_time_ms(ds: Dataset) -> float | None:
    """Nominal time between frames in ms (FrameTime, FrameTimeVector mean, CineRate or
    RecommendedDisplayFrameRate), or None when the header does not say."""
    ft = ds.get("FrameTime")
    if ft not in (None, ""):
        return float(ft)
    ftv = ds.get("FrameTimeVector")
    if ftv not in (None, ""):
        vals = [float(v) for v in (ftv if isinstance(ftv, (list, tuple)) or hasattr(ftv, "__iter__") else [ftv])]
        vals = vals[1:] if len(vals) > 1 else vals  # first entry is 0 by definition
        if vals and np.mean(vals) > 0:
            return float(np.mean(vals))
    for attr in ("CineRate", "RecommendedDisplayFrameRate"):
        rate = ds.get(attr)
        if rate not in (None, "") and float(rate) > 0:
            return 1000.0 / float(rate)
    return None
