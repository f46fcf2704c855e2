"""Synthetic coronary angiography phantoms with a known, SYNTAX-like score (numpy only).

A study has left-injection cines (left main splitting into LAD and LCX with a diagonal), right-
injection cines (a C-shaped RCA with a posterior descending branch) and sometimes an "other" cine
(catheter only, no opacified tree).  Each view is the tree under a random rotation / scale / shift,
with contrast filling the tree from the ostium over the first frames, a cardiac wobble, a smooth
background and noise.  Vessels are dark on a bright background, as in X-ray angiography.

Lesions narrow a vessel over a short stretch (triangular profile, half length
``LESION_HALF_LENGTH`` of the vessel), and the projected contrast density drops with the lumen
diameter, as X-ray attenuation follows the path length through the lumen; severity >= 0.99 is an
occlusion (no contrast beyond it).  The synthetic score of an artery is, like SYNTAX, the sum over
lesions of the segment weight times 2 (stenosis) or 5 (occlusion).  This is a *phantom* score for
testing the plumbing and for demo models; it says nothing about clinical accuracy.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["Lesion", "PhantomCine", "PhantomStudy", "make_study", "make_cine", "tree", "SEGMENT_WEIGHTS"]

#: vessel -> (segment weight per SYNTAX-like convention, control points in unit coordinates, width)
_LEFT = {
    "LM": (5.0, [(0.62, 0.12), (0.55, 0.22)], 0.040),
    "LAD": (3.5, [(0.55, 0.22), (0.45, 0.40), (0.36, 0.62), (0.28, 0.88)], 0.032),
    "LCX": (1.5, [(0.55, 0.22), (0.70, 0.35), (0.80, 0.55), (0.78, 0.80)], 0.030),
    "D1": (1.0, [(0.45, 0.40), (0.55, 0.55), (0.58, 0.72)], 0.022),
}
_RIGHT = {
    "RCA": (1.0, [(0.62, 0.12), (0.40, 0.18), (0.24, 0.40), (0.26, 0.66), (0.45, 0.84), (0.66, 0.86)], 0.034),
    "PDA": (1.0, [(0.45, 0.84), (0.55, 0.70), (0.64, 0.58)], 0.022),
}
#: half length of a lesion's narrowing, as a fraction of its vessel's length
LESION_HALF_LENGTH = 0.08
SEGMENT_WEIGHTS = {side: {k: v[0] for k, v in t.items()} for side, t in (("left", _LEFT), ("right", _RIGHT))}


def tree(side: str) -> dict[str, tuple[float, list[tuple[float, float]], float]]:
    """Vessel definitions of the ``left`` or ``right`` coronary tree."""
    return {"left": _LEFT, "right": _RIGHT}[side]


@dataclasses.dataclass(frozen=True)
class Lesion:
    vessel: str
    position: float  # 0..1 along the vessel
    severity: float  # fraction of diameter lost; >= 0.99 occlusion

    @property
    def occlusion(self) -> bool:
        return self.severity >= 0.99

    def score(self, side: str) -> float:
        return SEGMENT_WEIGHTS[side][self.vessel] * (5.0 if self.occlusion else 2.0)


@dataclasses.dataclass
class PhantomCine:
    frames: np.ndarray  # (T, H, W) uint8
    artery: str  # left | right | other
    primary_angle: float
    secondary_angle: float


@dataclasses.dataclass
class PhantomStudy:
    seed: int
    cines: list[PhantomCine]
    lesions: dict[str, list[Lesion]]

    @property
    def syntax_left(self) -> float:
        return float(sum(lesion.score("left") for lesion in self.lesions["left"]))

    @property
    def syntax_right(self) -> float:
        return float(sum(lesion.score("right") for lesion in self.lesions["right"]))

    @property
    def syntax(self) -> float:
        return self.syntax_left + self.syntax_right


def _polyline(points: Sequence[tuple[float, float]], n: int = 160) -> np.ndarray:
    """Smooth-ish dense polyline (linear interpolation of a Chaikin-smoothed control polygon)."""
    p = np.asarray(points, np.float64)
    for _ in range(2):
        if len(p) < 3:
            break
        q = [p[0]]
        for a, b in zip(p[:-1], p[1:]):
            q += [0.75 * a + 0.25 * b, 0.25 * a + 0.75 * b]
        q.append(p[-1])
        p = np.asarray(q)
    seg = np.linalg.norm(np.diff(p, axis=0), axis=1)
    s = np.concatenate([[0], np.cumsum(seg)])
    t = np.linspace(0, s[-1], n)
    return np.stack([np.interp(t, s, p[:, 0]), np.interp(t, s, p[:, 1])], axis=1)


def _sample_lesions(side: str, rng: np.random.Generator) -> list[Lesion]:
    vessels = list(tree(side))
    max_n = 5 if side == "left" else 3
    n = 0 if rng.random() < 0.3 else int(rng.integers(1, max_n + 1))
    out = []
    for _ in range(n):
        v = vessels[int(rng.integers(len(vessels)))]
        sev = 1.0 if rng.random() < 0.08 else float(rng.uniform(0.55, 0.9))
        out.append(Lesion(v, float(rng.uniform(0.25, 0.8)), sev))
    return out


def _render_tree(side: str, lesions: Sequence[Lesion], size: int, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Opacity map (size, size) in 0..1 of the whole tree, and for each pixel the fraction of its
    vessel's length at which contrast reaches it (for filling over time; 2 where no vessel)."""
    img = np.zeros((size, size), np.float32)
    arc = np.full((size, size), 2.0, np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for name, (_, pts, width) in tree(side).items():
        line = _polyline(pts)
        n = len(line)
        radius = np.full(n, width * size / 2, np.float32)
        radius *= np.linspace(1.0, 0.7, n, dtype=np.float32)  # taper
        nominal = radius.copy()
        alive = np.ones(n, bool)
        for les in lesions:
            if les.vessel != name:
                continue
            c = les.position * (n - 1)
            half = LESION_HALF_LENGTH * n
            prof = np.clip(1 - np.abs(np.arange(n) - c) / half, 0, 1)
            radius *= (1 - les.severity * prof).astype(np.float32)
            if les.occlusion:
                alive &= np.arange(n) < c
        # projected contrast density follows the lumen diameter (X-ray path length through the lumen)
        density = radius / nominal
        xy = (line @ affine[:, :2].T + affine[:, 2]) * size
        for i in range(0, n, 2):
            (x, y), r = xy[i], radius[i]
            if not alive[i] or r < 0.15:
                continue
            rr = max(r, 0.5)
            x0, x1 = int(max(0, x - rr - 2)), int(min(size, x + rr + 3))
            y0, y1 = int(max(0, y - rr - 2)), int(min(size, y + rr + 3))
            if x0 >= x1 or y0 >= y1:
                continue
            d = np.hypot(xx[y0:y1, x0:x1] - x, yy[y0:y1, x0:x1] - y)
            op = np.clip(rr + 0.5 - d, 0, 1) * min(1.0, r / 0.5) * float(density[i])
            sub, sarc = img[y0:y1, x0:x1], arc[y0:y1, x0:x1]
            hit = op > 0
            np.minimum(sarc, np.where(hit, i / (n - 1), 2.0), out=sarc)
            np.maximum(sub, op, out=sub)
    return img, arc


def _view_affine(rng: np.random.Generator) -> np.ndarray:
    ang = math.radians(rng.uniform(-20, 20))
    sc = rng.uniform(0.85, 1.1)
    c, s = math.cos(ang) * sc, math.sin(ang) * sc
    a = np.array([[c, -s], [s, c]])
    shift = np.array([0.5, 0.5]) - a @ np.array([0.5, 0.5]) + rng.uniform(-0.06, 0.06, 2)
    return np.concatenate([a, shift[:, None]], axis=1)


def make_cine(artery: str, lesions: Sequence[Lesion], rng: np.random.Generator, size: int = 96,
              n_frames: int | None = None) -> PhantomCine:
    """One cine: ``artery`` left / right (tree with its lesions) or other (catheter only)."""
    t_n = int(n_frames if n_frames is not None else rng.integers(14, 33))
    base = _view_affine(rng)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    bg = 0.78 + 0.08 * np.sin(2 * np.pi * (xx * rng.uniform(0.5, 1.5) + yy * rng.uniform(0.2, 1.0)) + rng.uniform(0, 6))
    period = rng.uniform(8, 14)
    fill_frames = max(2, int(0.35 * t_n))
    frames = np.empty((t_n, size, size), np.uint8)
    side = artery if artery in ("left", "right") else "left"
    cath = _polyline([(0.62, 0.12), (0.66, 0.0)], 20)
    if artery == "other":
        op0, arc = np.zeros((size, size), np.float32), np.full((size, size), 2.0, np.float32)
    else:
        op0, arc = _render_tree(side, lesions, size, base)
    # catheter tip at the ostium in every cine
    for x, y in (cath @ base[:, :2].T + base[:, 2]) * size:
        xi, yi = int(round(x)), int(round(y))
        if 0 <= xi < size and 0 <= yi < size:
            op0[max(0, yi - 1):yi + 1, max(0, xi - 1):xi + 1] = np.maximum(
                op0[max(0, yi - 1):yi + 1, max(0, xi - 1):xi + 1], 0.7)
            arc[max(0, yi - 1):yi + 1, max(0, xi - 1):xi + 1] = 0.0
    centre = np.array([size / 2, size / 2])
    for t in range(t_n):
        zoom = 1 + 0.02 * math.sin(2 * np.pi * t / period)
        op = np.where(arc <= min(1.0, (t + 1) / fill_frames), op0, 0).astype(np.float32)
        op = ndimage.affine_transform(op, np.eye(2) / zoom, offset=centre - centre / zoom, order=1)
        img = bg * (1 - 0.6 * op) + rng.normal(0, 0.02, (size, size)).astype(np.float32)
        frames[t] = np.clip(img * 255, 0, 255).astype(np.uint8)
    return PhantomCine(frames, artery, float(rng.uniform(-40, 40)), float(rng.uniform(-30, 30)))


def make_study(seed: int, size: int = 96, *, n_left: int | None = None, n_right: int | None = None,
               n_other: int | None = None) -> PhantomStudy:
    """A phantom study, fully determined by ``seed``."""
    rng = np.random.default_rng(seed)
    lesions = {"left": _sample_lesions("left", rng), "right": _sample_lesions("right", rng)}
    nl = int(rng.integers(2, 5)) if n_left is None else n_left
    nr = int(rng.integers(1, 4)) if n_right is None else n_right
    no = int(rng.random() < 0.3) if n_other is None else n_other
    cines = [make_cine("left", lesions["left"], rng, size) for _ in range(nl)]
    cines += [make_cine("right", lesions["right"], rng, size) for _ in range(nr)]
    cines += [make_cine("other", [], rng, size) for _ in range(no)]
    order = rng.permutation(len(cines))
    return PhantomStudy(seed, [cines[i] for i in order], lesions)
