"""Training samples on the model's coarse grid, from phantoms or COCA cases (same preprocessing as the pipeline)."""
from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

import numpy as np

from pipelines.calcium.preprocess import PreprocessConfig, coarse_shape, downsample_labels, normalize, prepare_slices

from .phantom import Phantom, draw_variation, make_phantom

__all__ = ["SliceSet", "slices_from_volume", "phantom_slices", "sample_batch", "split_target", "PHANTOM_TRAIN_KW",
           "level", "BONE_NEGATIVES", "SPLIT_NEGATIVES", "NEGATIVE_SETS"]

#: phantom generator settings for the bundled model (in-plane spacing varies per case)
PHANTOM_TRAIN_KW = dict(shape=(56, 256, 256))


@dataclasses.dataclass
class SliceSet:
    x: np.ndarray  # (n, C, H, W) float16 preprocessed
    y: np.ndarray  # (n, H, W) uint8 coarse labels
    r: np.ndarray | None = None  # (n, H, W) uint8 coarse heart/aorta region (None: not known, e.g. COCA)
    _by_class: dict[int, np.ndarray] | None = None
    _dense: dict[tuple[float, float | None], np.ndarray] = dataclasses.field(default_factory=dict)

    def coords(self, c: int) -> np.ndarray:
        """(k, y, x) of coarse pixels of class ``c`` (cached)."""
        if self._by_class is None:
            pos = np.argwhere(self.y > 0)
            vals = self.y[tuple(pos.T)] if len(pos) else np.zeros(0, np.uint8)
            self._by_class = {int(v): pos[vals == v] for v in np.unique(vals)}
        return self._by_class.get(c, np.zeros((0, 3), np.int64))

    def dense(self, level: float, below: float | None = None) -> np.ndarray:
        """(k, y, x) of unlabelled pixels whose centre channel is >= ``level`` (and < ``below`` if given):
        hard negatives (cached per bounds)."""
        key = (level, below)
        if key not in self._dense:
            mid = self.x.shape[1] // 2
            sel = (self.x[:, mid] >= level) & (self.y == 0)
            if below is not None:
                sel &= self.x[:, mid] < below
            self._dense[key] = np.argwhere(sel)
        return self._dense[key]


def slices_from_volume(hu: np.ndarray, labels: np.ndarray, z_positions: np.ndarray, spacing_yx: Sequence[float],
                       cfg: PreprocessConfig, rng: np.random.Generator, keep_empty: float = 0.25,
                       region: np.ndarray | None = None) -> SliceSet:
    """Preprocess the labelled slices (and a share ``keep_empty`` of the others); ``region`` (bool, like
    ``labels``) is reduced to the coarse grid the same way."""
    has = labels.reshape(labels.shape[0], -1).any(axis=1)
    idx = [k for k in range(hu.shape[0]) if has[k] or rng.random() < keep_empty]
    ch = coarse_shape(hu.shape[1:], spacing_yx, cfg)
    x = prepare_slices(hu, z_positions, spacing_yx, idx, cfg).astype(np.float16)
    y = np.stack([downsample_labels(labels[k], ch) for k in idx]) if idx else np.zeros((0,) + ch, np.uint8)
    r = None
    if region is not None:
        r = np.stack([downsample_labels(region[k].astype(np.uint8), ch) for k in idx]) if idx else \
            np.zeros((0,) + ch, np.uint8)
    return SliceSet(x, y, r)


#: share of training phantoms drawn from the original (version 1) anatomy; the rest are widened (Variation)
P_PLAIN = 0.25


def phantom_case(seed: int, coronary_free: bool = False) -> Phantom:
    """The training/validation phantom of ``seed`` (generator version 2): a quarter plain, the rest widened:
    matrix 256-512, field of view 300-460 mm, slices 0.5-3 mm, noise 8-25 HU, kernels, habitus, devices.
    ``coronary_free``: plaques only in the aorta and valves (held-out calcium-free cases)."""
    rng = np.random.default_rng(seed + 10_000)
    classes = None
    if coronary_free:
        pick = np.random.default_rng(seed + 20_000)
        classes = [c for c in (5, 6, 7) if pick.random() < 0.5]
    if rng.random() < P_PLAIN:
        px = float(rng.uniform(1.2, 1.6))
        dz = float(rng.choice([1.5, 2.0, 3.0]))
        nz = int(round(170 / dz))
        return make_phantom(seed, shape=(nz, 256, 256), spacing=(dz, px, px), classes=classes)
    n = int(rng.choice([256, 320, 384, 512], p=[0.4, 0.25, 0.2, 0.15]))
    px = float(rng.uniform(300, 460)) / n
    dz = float(rng.choice([0.5, 0.625, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0]))
    nz = int(min(140, round(float(rng.uniform(150, 220)) / dz)))
    return make_phantom(seed, shape=(nz, n, n), spacing=(dz, px, px), noise_hu=float(rng.uniform(8, 25)),
                        variation=draw_variation(rng), classes=classes)


def phantom_slices(seeds: Iterable[int], cfg: PreprocessConfig, keep_empty: float = 0.3) -> list[SliceSet]:
    out = []
    for s in seeds:
        ph = phantom_case(s)
        out.append(slices_from_volume(ph.hu, ph.labels, ph.z_positions(), ph.spacing[1:], cfg,
                                      np.random.default_rng(s), keep_empty, region=ph.region))
    return out


#: target encoding of :func:`sample_batch`: class in the low 4 bits, +REGION_IN inside the heart/aorta region,
#: +REGION_UNKNOWN where the case carries no region (its region loss is masked)
REGION_IN, REGION_UNKNOWN = 16, 32


def split_target(y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(class, region 0/1, region known) from a :func:`sample_batch` target."""
    return y & 15, (y & REGION_IN) > 0, (y & REGION_UNKNOWN) == 0


def level(hu: float, cfg: PreprocessConfig | None = None) -> float:
    """Centre-channel value of ``hu`` after the model's HU window (the pipeline's :func:`normalize`; default
    window: (hu - 200) / 500, clipped to -800...1200 HU)."""
    return float(normalize(np.asarray(hu), cfg or PreprocessConfig()))


#: hard negatives, as (share of crops, lowest HU, HU bound or None) of unlabelled centre pixels: the
#: 0.1/0.2.0 models' sampler (bone and metal >= 400 HU, a fifth of the crops)
BONE_NEGATIVES: tuple[tuple[float, float, float | None], ...] = ((0.2, 400.0, None),)
#: tried for a 0.3.0 (not bundled, docs/calcium.md): bone 400-1200 HU; >= 1200 HU, where the window
#: saturates (metal: stents, clips, wires, leads at 1500-3000 HU in the phantoms; rare, so sampled on their
#: own); 130-400 HU (kernel overshoot at lung borders, noise peaks, bone edges).  All unlabelled: not calcium.
SPLIT_NEGATIVES: tuple[tuple[float, float, float | None], ...] = ((0.10, 400.0, 1200.0), (0.05, 1200.0, None),
                                                                  (0.10, 130.0, 400.0))
#: the hard-negative settings by name, as the training commands' ``--negatives`` take them
NEGATIVE_SETS = {"bone": BONE_NEGATIVES, "split": SPLIT_NEGATIVES}


def sample_batch(sets: Sequence[SliceSet], batch: int, crop: int, rng: np.random.Generator,
                 p_focus: float = 0.6, focus_boost: dict[int, float] | None = None,
                 negatives: Sequence[tuple[float, float, float | None]] = BONE_NEGATIVES,
                 cfg: PreprocessConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Random crops.  ``p_focus`` of them are centred (with jitter) on a pixel of a class drawn
    uniformly among the 8 (class-balanced: small coronary plaques are seen as often as the aorta), or with
    weights ``focus_boost`` {class: weight, others 1} (the bundled model draws PDA and RCA twice as often);
    for each ``(share, lo_hu, hi_hu)`` of ``negatives`` that share on unlabelled pixels whose centre
    channel lies in [lo_hu, hi_hu) (HU through the window of ``cfg``): hard negatives such as bone, metal
    and kernel overshoot; the rest anywhere.  No flips: left/right carries the anatomy.  Targets carry
    the region too (:func:`split_target`)."""
    bands = [(share, level(lo, cfg), None if hi is None else level(hi, cfg)) for share, lo, hi in negatives]
    if p_focus + sum(b[0] for b in bands) > 1.0:
        raise ValueError(f"crop shares add up to more than 1: focus {p_focus} + negatives {list(negatives)}")
    xs, ys = [], []
    present = sorted({c for s in sets for c in range(1, 10) if len(s.coords(c))})
    pw = np.array([(focus_boost or {}).get(c, 1.0) for c in present], dtype=float)
    pw = pw / pw.sum() if len(pw) else pw
    while len(xs) < batch:
        s = sets[int(rng.integers(len(sets)))]
        if len(s.x) == 0:
            continue
        h, w = s.y.shape[1:]
        k = int(rng.integers(len(s.x)))
        y0, x0 = int(rng.integers(0, max(1, h - crop + 1))), int(rng.integers(0, max(1, w - crop + 1)))
        u = rng.random()
        pts = None
        if u < p_focus and present:
            j = int(rng.choice(len(present), p=pw)) if focus_boost else int(rng.integers(len(present)))
            pts = s.coords(present[j])
        else:
            edge = p_focus
            for share, lo, hi in bands:
                edge += share
                if u < edge:
                    pts = s.dense(lo, hi)
                    break
        if pts is not None:
            if len(pts) == 0:
                continue
            k, cy, cx = (int(v) for v in pts[int(rng.integers(len(pts)))])
            j = crop // 3
            y0 = int(np.clip(cy - crop // 2 + rng.integers(-j, j + 1), 0, max(0, h - crop)))
            x0 = int(np.clip(cx - crop // 2 + rng.integers(-j, j + 1), 0, max(0, w - crop)))
        xs.append(s.x[k, :, y0:y0 + crop, x0:x0 + crop].astype(np.float32))
        yc = s.y[k, y0:y0 + crop, x0:x0 + crop].astype(np.int64)
        yc = yc + (REGION_IN * s.r[k, y0:y0 + crop, x0:x0 + crop] if s.r is not None else REGION_UNKNOWN)
        ys.append(yc)
    return np.stack(xs), np.stack(ys).astype(np.int64)


def agreement_cases(seeds: Iterable[int]):
    """Held-out training-family cases for :mod:`training.calcium.agreement`: even seeds coronary-free."""
    for s in seeds:
        ph = phantom_case(s, coronary_free=s % 2 == 0)
        yield f"train-family-{s}", ph.hu, ph.labels, None, ph.region, ph.z_positions(), ph.spacing[1:]
