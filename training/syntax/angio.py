"""Anatomical angiography scenes for training the artery router (numpy + scipy; no torch).

Wider than :mod:`training.syntax.phantom` (kept for the SYNTAX regressors): every run is a 3D coronary
tree grown on a random heart and projected at a random C-arm angulation, so that the classifier learns
the tree's topology rather than one drawing.

- Heart: a tri-axial ellipsoid with a random orientation about "left, anterior, inferior".  Vessels
  are *walked* on its surface (a step along a heading pulled towards a goal: the apex, or around the
  atrioventricular ring), so every run has its own course.
- Left system: left main from an ostium above the base, LAD towards the apex with 0-3 diagonals and
  septals, LCX around the left ring with 0-3 marginals; sometimes a ramus.  Right system: RCA around
  the right ring (a C in LAO), acute marginals, conus branch, then PDA towards the apex and a
  posterolateral branch (dominance varies: short or long RCA).
- Projection: LAO -60..100, cranial -45..45, in-plane roll, field of view 80-260 mm for coronary
  runs (1.1.0: was 80-170, so that a tree may fill the frame or sit small in a wide field), pan.
- Rendering (different from the evaluation generator on purpose): centreline points splatted into
  three calibre bins and blurred with a Gaussian per bin; contrast arrives after a delay and travels
  down the tree by path length, washes out; cardiac contraction; lesions thin a vessel and an
  occlusion stops the flow.
- Scene: smooth tissue texture, spine, diaphragm dome, lungs, table edge, ribs, sternal wires or clips,
  ribs and vertebrae with cortical rims, end plates and pedicles, ECG / pacing leads and guide wires
  (1.2.0: sharp dark lines that survive the router's top-hat, as in real runs),
  collimator shutters, catheter from the frame edge to the ostium (1.1.0: from faint to as dark as
  the vessels), quantum noise, blur, gamma; contrast density 0.2-1.5 (1.1.0: was 0.35-1.5).
- Negatives (router target "neither"): left ventriculogram (opacified beating LV, pigtail),
  aortogram (opacified root/ascending aorta/arch), and test shots (catheter, no contrast).

Only the frames asked for are rendered (:func:`render`), so a 120-frame cine costs what its sampled
clip costs.  Phantoms only: nothing here says anything about clinical accuracy.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["GENERATOR", "VERSION", "KINDS", "ROUTER_TARGET", "Scene", "make_scene", "render", "render_all"]

GENERATOR = "training.syntax.angio"
VERSION = "1.2.0"
KINDS = ("left", "right", "ventriculogram", "aortogram", "testshot")
#: soft target of the artery classifier: p(right); negatives sit between the routing thresholds
ROUTER_TARGET = {"left": 0.02, "right": 0.98, "ventriculogram": 0.5, "aortogram": 0.5, "testshot": 0.5}


@dataclasses.dataclass
class _Vessel:
    pts: np.ndarray  # (n, 3) mm
    radius: np.ndarray  # (n,) mm
    dist: np.ndarray  # (n,) path length from the ostium (inf beyond an occlusion)


@dataclasses.dataclass
class Scene:
    """One run: geometry and acquisition; :func:`render` draws any of its frames."""

    kind: str
    frames: int
    fps: float
    size: int
    seed: int
    vessels: list[_Vessel]
    blob: np.ndarray | None  # (m, 3) points of an opacified cavity (ventriculogram / aortogram)
    blob_dist: np.ndarray | None
    catheter: np.ndarray  # (k, 2) pixel coordinates (static)
    centre: np.ndarray  # contraction centre, mm
    rot: np.ndarray  # (3, 3) patient -> detector
    px_per_mm: float
    offset: np.ndarray
    background: np.ndarray  # (size, size) line integral of static anatomy
    contrast: float
    noise: float
    blur: float
    gamma: float
    t_inject: float
    speed: float
    inject_len: float
    washout: float
    period: float
    squeeze: float
    blob_volume: float = 0.0
    window_low: float = 0.6
    catheter_density: float = 0.25


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


class _Ellipsoid:
    def __init__(self, rng: np.random.Generator) -> None:
        long_axis = _unit(np.array([0.6, -0.5, -0.6]) + rng.normal(0, 0.15, 3))
        ant = np.array([0.0, -1.0, 0.0]) + rng.normal(0, 0.2, 3)
        e1 = _unit(ant - ant.dot(long_axis) * long_axis)  # lon 0: anterior
        e2 = np.cross(long_axis, e1)
        if e2[0] > 0:  # lon +pi/2: the patient's right (-x)
            e2 = -e2
        self.frame = np.stack([long_axis, e1, e2])  # rows: axes (orthonormal, either handedness)
        self.semi = np.array([rng.uniform(50, 65), rng.uniform(36, 46), rng.uniform(34, 44)])
        self.centre = rng.normal(0, 5, 3)

    def local(self, p: np.ndarray) -> np.ndarray:
        return (p - self.centre) @ self.frame.T

    def world(self, q: np.ndarray) -> np.ndarray:
        return q @ self.frame + self.centre

    def snap(self, p: np.ndarray, lift: float = 1.0) -> np.ndarray:
        """The surface point on the ray from the centre through ``p`` (plus ``lift`` mm outward)."""
        q = self.local(p)
        s = 1.0 / max(float(np.sqrt(((q / self.semi) ** 2).sum())), 1e-9)
        on = q * s
        return self.world(on + _unit(on) * lift)

    def point(self, lat: float, lon: float, lift: float = 1.0) -> np.ndarray:
        """lat -1 (base) .. 1 (apex) along the long axis; lon around it (0: anterior)."""
        q = np.array([lat * self.semi[0], math.cos(lon) * self.semi[1], math.sin(lon) * self.semi[2]])
        return self.snap(self.world(q), lift)

    def lat_lon(self, p: np.ndarray) -> tuple[float, float]:
        q = self.local(p) / self.semi
        return float(q[0]), math.atan2(q[2], q[1])

    @property
    def apex(self) -> np.ndarray:
        return self.world(np.array([self.semi[0], 0.0, 0.0]))


def _walk(h: _Ellipsoid, start: np.ndarray, goal, length: float, rng: np.random.Generator, step: float = 1.5,
          wiggle: float = 0.12) -> np.ndarray:
    """Points walked on the surface from ``start``; ``goal(p)`` gives the preferred direction."""
    p = h.snap(start)
    d = _unit(goal(p))
    out = [p]
    for _ in range(max(2, int(length / step))):
        d = _unit(0.75 * d + 0.25 * _unit(goal(p)) + rng.normal(0, wiggle, 3))
        p = h.snap(p + d * step)
        out.append(p)
    return np.asarray(out)


def _ring_goal(h: _Ellipsoid, sign: float, lat: float):
    """Around the long axis (sign +1: increasing longitude), pulled back to latitude ``lat``."""

    def goal(p: np.ndarray) -> np.ndarray:
        la, lo = h.lat_lon(p)
        return h.point(lat, lo + sign * 0.25) - p

    return goal


def _meridian_goal(h: _Ellipsoid, lon: float | None, pull: float = 0.3):
    """Towards the apex along longitude ``lon`` (None: the current one)."""

    def goal(p: np.ndarray) -> np.ndarray:
        la, lo = h.lat_lon(p)
        target_lon = lo if lon is None else lo + float(np.clip(lon - lo, -pull, pull))
        return h.point(min(la + 0.3, 0.97), target_lon) - p

    return goal


def _vessel(pts: np.ndarray, r0: float, r1: float, d0: float, rng: np.random.Generator, p_lesion: float) -> _Vessel:
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    radius = np.linspace(r0, r1, len(pts))
    dist = d0 + s
    if rng.random() < p_lesion and len(pts) > 6:
        c = int(rng.integers(2, len(pts) - 2))
        sev = 1.0 if rng.random() < 0.07 else float(rng.uniform(0.4, 0.9))
        w = max(2, len(pts) // 15)
        prof = np.clip(1 - np.abs(np.arange(len(pts)) - c) / w, 0, 1)
        radius = radius * (1 - min(sev, 0.95) * prof)
        if sev >= 1.0:
            dist = np.where(np.arange(len(pts)) > c, np.inf, dist)
    return _Vessel(pts, radius, dist)


def _side_branches(h: _Ellipsoid, parent: _Vessel, n: int, rng: np.random.Generator, goal, length: tuple[float, float],
                   r: tuple[float, float], where: tuple[float, float]) -> list[_Vessel]:
    out = []
    for _ in range(n):
        i = int(rng.uniform(*where) * (len(parent.pts) - 1))
        pts = _walk(h, parent.pts[i], goal, rng.uniform(*length), rng)
        out.append(_vessel(pts, rng.uniform(*r), 0.35, float(parent.dist[i]), rng, 0.12))
    return out


def _left(h: _Ellipsoid, rng: np.random.Generator) -> tuple[list[_Vessel], np.ndarray]:
    lat = rng.uniform(-0.75, -0.5)
    lon_bif = rng.uniform(-0.5, 0.0)
    bif = h.point(lat, lon_bif)
    ostium = h.point(lat - rng.uniform(0.15, 0.3), lon_bif - rng.uniform(0.2, 0.6), lift=rng.uniform(6, 12))
    lm_pts = ostium[None] + np.linspace(0, 1, 8)[:, None] * (bif - ostium)[None]
    lm = _vessel(lm_pts, rng.uniform(1.9, 2.5), rng.uniform(1.7, 2.1), 0.0, rng, 0.1)
    lad = _vessel(_walk(h, bif, _meridian_goal(h, rng.uniform(-0.15, 0.15)), rng.uniform(85, 135), rng),
                  rng.uniform(1.5, 1.9), rng.uniform(0.4, 0.7), float(lm.dist[-1]), rng, 0.35)
    lcx = _vessel(_walk(h, bif, _ring_goal(h, -1.0, lat), rng.uniform(45, 95), rng),
                  rng.uniform(1.3, 1.7), rng.uniform(0.5, 0.8), float(lm.dist[-1]), rng, 0.3)
    out = [lm, lad, lcx]
    out += _side_branches(h, lad, int(rng.integers(0, 4)), rng, _meridian_goal(h, rng.uniform(-1.3, -0.7)),
                          (25, 55), (0.8, 1.2), (0.1, 0.6))
    out += _side_branches(h, lcx, int(rng.integers(0, 4)), rng, _meridian_goal(h, None),
                          (25, 60), (0.8, 1.2), (0.2, 0.9))
    if rng.random() < 0.5:  # septal perforators: short
        out += _side_branches(h, lad, int(rng.integers(1, 3)), rng, _meridian_goal(h, 0.6),
                              (10, 20), (0.4, 0.6), (0.1, 0.4))
    if rng.random() < 0.2:  # ramus intermedius
        out.append(_vessel(_walk(h, bif, _meridian_goal(h, -0.7), rng.uniform(40, 70), rng), 1.2, 0.5,
                           float(lm.dist[-1]), rng, 0.1))
    return out, ostium


def _right(h: _Ellipsoid, rng: np.random.Generator) -> tuple[list[_Vessel], np.ndarray]:
    lat = rng.uniform(-0.75, -0.5)
    lon0 = rng.uniform(0.3, 0.8)
    ostium = h.point(lat - rng.uniform(0.15, 0.3), lon0, lift=rng.uniform(6, 12))
    rca_pts = _walk(h, ostium, _ring_goal(h, 1.0, lat), rng.uniform(65, 110), rng, wiggle=0.08)
    rca = _vessel(rca_pts, rng.uniform(1.6, 2.1), rng.uniform(1.0, 1.4), 0.0, rng, 0.45)
    out = [rca]
    out += _side_branches(h, rca, int(rng.integers(1, 3)), rng, _meridian_goal(h, None),
                          (25, 50), (0.6, 0.9), (0.3, 0.7))
    if rng.random() < 0.5:  # conus
        out += _side_branches(h, rca, 1, rng, _meridian_goal(h, 0.0, 0.6), (15, 30), (0.5, 0.7), (0.02, 0.1))
    end = rca.pts[-1]
    pda = _vessel(_walk(h, end, _meridian_goal(h, None), rng.uniform(40, 80), rng), rng.uniform(0.9, 1.2), 0.4,
                  float(rca.dist[-1]), rng, 0.2)
    pl = _vessel(_walk(h, end, _ring_goal(h, 1.0, lat), rng.uniform(15, 45), rng), rng.uniform(0.9, 1.2), 0.6,
                 float(rca.dist[-1]), rng, 0.15)
    out += [pda, pl]
    out += _side_branches(h, pl, int(rng.integers(0, 2)), rng, _meridian_goal(h, None),
                          (20, 40), (0.6, 0.8), (0.5, 1.0))
    return out, ostium


def _rotation(lao: float, cran: float, roll: float) -> np.ndarray:
    a, c, r = (math.radians(v) for v in (lao, cran, roll))
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(c), -math.sin(c)], [0, math.sin(c), math.cos(c)]])
    m = rx @ rz
    det = np.stack([m[0], -m[2], m[1]])  # columns, rows, depth
    rr = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return rr @ det


def _background(rng: np.random.Generator, n: int) -> np.ndarray:
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / n
    mu = np.full((n, n), rng.uniform(0.8, 1.4), np.float32)
    coarse = ndimage.zoom(rng.normal(0, 1, (6, 6)).astype(np.float32), n / 6, order=3)[:n, :n]
    mu += rng.uniform(0.1, 0.4) * coarse / max(float(np.abs(coarse).max()), 1e-6)
    fine = ndimage.gaussian_filter(rng.normal(0, 1, (n, n)).astype(np.float32), n / rng.uniform(15, 40))
    mu += rng.uniform(0.02, 0.1) * fine / max(float(np.abs(fine).max()), 1e-6)
    if rng.random() < 0.8:  # spine
        x0, w = rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.12)
        mu += rng.uniform(0.2, 0.5) * np.exp(-((xx - x0 - 0.1 * (yy - 0.5) * rng.normal()) ** 2) / (2 * w * w))
    if rng.random() < 0.8:  # diaphragm dome
        y0, k, x0 = rng.uniform(0.55, 1.0), rng.uniform(0.0, 1.2), rng.uniform(0.2, 0.8)
        mu += rng.uniform(0.4, 1.0) * ndimage.gaussian_filter((yy > y0 + k * (xx - x0) ** 2).astype(np.float32), n / 60)
    if rng.random() < 0.5:  # lung
        mu -= rng.uniform(0.1, 0.35) * np.exp(-(((xx - rng.uniform(0, 1)) ** 2
                                                 + (yy - rng.uniform(0, 0.6)) ** 2) / 0.05))
    if rng.random() < 0.4:  # table edge
        a = rng.uniform(0, np.pi)
        mu += rng.uniform(0.1, 0.3) * ((xx - 0.5) * math.cos(a) + (yy - 0.5) * math.sin(a) > rng.uniform(-0.4, 0.4))
    for _ in range(int(rng.integers(0, 5))):  # ribs, soft
        y0, k = rng.uniform(-0.1, 1.0), rng.uniform(-0.6, 0.6)
        mu += rng.uniform(0.05, 0.15) * np.exp(-((yy - y0 - k * (xx - 0.5) ** 2 - 0.15 * xx) ** 2) / (2 * 0.015 ** 2))
    mu += _bone_edges(rng, n, xx, yy)
    for _ in range(int(rng.integers(0, 3)) if rng.random() < 0.2 else 0):  # sternal wires / clips
        cy, cx = rng.uniform(0.1, 0.9, 2)
        mu += 1.5 * ((np.abs(yy - cy) < 0.006) & (np.abs(xx - cx) < rng.uniform(0.01, 0.04)))
    mu += _wires(rng, n)
    mu = ndimage.gaussian_filter(mu, 0.6)
    if rng.random() < 0.35:  # collimator shutters
        for edge in rng.choice(4, int(rng.integers(1, 3)), replace=False):
            w = rng.uniform(0.03, 0.15)
            m = [xx < w, xx > 1 - w, yy < w, yy > 1 - w][int(edge)]
            mu = np.where(m, mu + 2.5, mu)
    return mu.astype(np.float32)


def _band(d: np.ndarray, half: float, edge: float) -> np.ndarray:
    """A band |d| < half with smooth edges of width ``edge`` (all in units of the frame)."""
    return 0.5 * (1 - np.tanh((np.abs(d) - half) / max(edge, 1e-4)))


def _bone_edges(rng: np.random.Generator, n: int, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """Ribs and vertebrae with cortical rims (1.2.0): sharp dark lines that a top-hat keeps, as in
    real runs, so that the router learns to look past them.  Units: line integral, frame = 1."""
    mu = np.zeros((n, n), np.float32)
    for _ in range(int(rng.integers(0, 8))):  # ribs: curved bands, rims darker than the body
        a = rng.uniform(-0.6, 0.6)  # oblique course
        u = (xx - 0.5) * math.cos(a) + (yy - 0.5) * math.sin(a)
        v = -(xx - 0.5) * math.sin(a) + (yy - 0.5) * math.cos(a)
        d = v - rng.uniform(-0.6, 0.6) - rng.uniform(-0.8, 0.8) * u ** 2
        half, rim = rng.uniform(0.015, 0.045), rng.uniform(0.002, 0.006)
        mu += rng.uniform(0.03, 0.2) * _band(d, half, rim)
        rim_amp = rng.uniform(0.05, 0.35)
        for side in (-1, 1):
            mu += rim_amp * np.exp(-((d - side * half) ** 2) / (2 * rim ** 2))
    if rng.random() < 0.6:  # vertebral column: body edges, end plates, pedicles
        x0, half = rng.uniform(0.05, 0.95), rng.uniform(0.06, 0.14)
        tilt = rng.uniform(-0.15, 0.15)
        d = xx - x0 - tilt * (yy - 0.5)
        col = _band(d, half, rng.uniform(0.002, 0.01))
        mu += rng.uniform(0.1, 0.4) * col
        rim_amp, rim = rng.uniform(0.05, 0.3), rng.uniform(0.002, 0.006)
        for side in (-1, 1):
            mu += rim_amp * np.exp(-((d - side * half) ** 2) / (2 * rim ** 2))
        pitch, phase = rng.uniform(0.1, 0.22), rng.uniform(0, 1)
        plate = np.exp(-((((yy / pitch + phase) % 1.0) - 0.5) ** 2) / (2 * (rim / pitch) ** 2))
        mu += rng.uniform(0.0, 0.25) * plate * col
        if rng.random() < 0.5:
            for side in (-1, 1):  # pedicles: small rings beside the column's centre
                cx = x0 + side * half * 0.6
                for cy in np.arange(-phase * pitch, 1.0, pitch) + pitch * 0.3:
                    r = np.sqrt((xx - cx - tilt * (yy - 0.5)) ** 2 + (yy - cy) ** 2)
                    mu += 0.15 * rim_amp * np.exp(-((r - half * 0.25) ** 2) / (2 * rim ** 2))
    return mu


def _wires(rng: np.random.Generator, n: int) -> np.ndarray:
    """ECG leads, pacing leads and guide wires (1.2.0): thin dark curves from edge to edge."""
    img = np.zeros((n, n), np.float32)
    for _ in range(int(rng.integers(0, 4)) if rng.random() < 0.6 else 0):
        p0, p2 = rng.uniform(-0.1, 1.1, 2) * n, rng.uniform(-0.1, 1.1, 2) * n
        p1 = rng.uniform(0, 1, 2) * n
        t = np.linspace(0, 1, 4 * n)[:, None]
        pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2
        one = np.zeros((n, n), np.float32)
        _splat(one, pts, np.full(len(pts), 1.0))
        width = rng.uniform(0.5, 1.5)
        img += rng.uniform(0.3, 1.5) * ndimage.gaussian_filter(one, width) * width * 2.0
    return img


def make_scene(kind: str, seed: int, *, size: int | None = None, frames: int | None = None) -> Scene:
    """A random run of ``kind`` (left, right, ventriculogram, aortogram, testshot), reproducible from ``seed``."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    rng = np.random.default_rng([seed, 101])
    n = int(size if size is not None else rng.choice([96, 128, 160]))
    T = int(frames if frames is not None else rng.integers(12, 131))
    fps = float(rng.choice([r for r in (6.0, 7.5, 10.0, 12.5, 15.0, 25.0, 30.0) if T / r >= 1.2] or [6.0]))
    h = _Ellipsoid(rng)
    vessels: list[_Vessel] = []
    blob = blob_dist = None
    volume = 0.0
    ostium = h.point(-0.9, 0.0, lift=10)
    if kind == "left":
        vessels, ostium = _left(h, rng)
    elif kind == "right":
        vessels, ostium = _right(h, rng)
    root = h.point(-1.0, rng.uniform(-0.5, 0.5), lift=rng.uniform(8, 20))
    arch_top = root + np.array([rng.uniform(-15, 5), rng.uniform(0, 15), rng.uniform(50, 80)])
    desc = arch_top + np.array([rng.uniform(15, 35), rng.uniform(20, 40), -rng.uniform(10, 30)])
    aorta = np.concatenate([np.linspace(root, arch_top, 30), np.linspace(arch_top, desc, 20),
                            np.linspace(desc, desc - [0, 0, 250], 60)])
    if kind == "ventriculogram":
        c = h.world(np.array([h.semi[0] * 0.25, 0, 0]))
        q = rng.normal(0, 1, (2500, 3))
        q = q / np.linalg.norm(q, axis=1, keepdims=True) * rng.uniform(0, 1, (2500, 1)) ** (1 / 3)
        blob = (q * (h.semi * np.array([0.65, 0.55, 0.55]))) @ h.frame + c
        blob_dist = np.linalg.norm(blob - root, axis=1)
        volume = 4 / 3 * np.pi * float(np.prod(h.semi * np.array([0.65, 0.55, 0.55])))
        tip = c
    elif kind == "aortogram":
        seg = aorta[:60]
        q = rng.normal(0, 1, (3000, 3))
        q = q / np.linalg.norm(q, axis=1, keepdims=True) * rng.uniform(0, 1, (3000, 1)) ** 0.5 * rng.uniform(11, 16)
        idx = rng.integers(0, len(seg), 3000)
        blob = seg[idx] + q
        blob_dist = idx.astype(np.float64) * 3.0
        volume = float(np.pi * 13.5 ** 2 * np.linalg.norm(np.diff(seg, axis=0), axis=1).sum())
        tip = root + np.array([0, 0, 10.0])
    else:
        tip = ostium
    cath3d = np.concatenate([aorta[::-1], np.linspace(root, tip, 15)])
    lao = float(rng.uniform(-60, 100)) if kind != "ventriculogram" else float(rng.uniform(-45, 70))
    cran = float(rng.uniform(-45, 45))
    rot = _rotation(lao, cran, float(rng.uniform(-20, 20)))
    fov = float(rng.uniform(80, 260) if kind in ("left", "right", "testshot") else rng.uniform(140, 260))
    px = n / fov
    look = ((np.concatenate([v.pts for v in vessels]).mean(0) if vessels else 0.5 * (h.centre + tip))
            + rng.normal(0, 8, 3))
    offset = np.array([n / 2, n / 2]) - (look @ rot.T)[:2] * px + rng.uniform(-0.1, 0.1, 2) * n
    cath_px = (cath3d @ rot.T)[:, :2] * px + offset
    return Scene(kind=kind, frames=T, fps=fps, size=n, seed=int(seed), vessels=vessels, blob=blob,
                 blob_dist=blob_dist, catheter=cath_px, centre=h.centre, rot=rot, px_per_mm=px, offset=offset,
                 background=_background(rng, n),
                 contrast=float(rng.uniform(0.2, 1.5)), noise=float(rng.uniform(0.005, 0.08)),
                 blur=float(rng.uniform(0.3, 1.2)), gamma=float(rng.uniform(0.7, 1.4)),
                 t_inject=float(rng.uniform(0, min(1.2, 0.3 * T / fps))), speed=float(rng.uniform(100, 400)),
                 inject_len=float(rng.uniform(2.0, 5.0)), washout=float(rng.uniform(0.8, 3.0)),
                 period=float(rng.uniform(0.5, 1.2)), squeeze=float(rng.uniform(0.03, 0.12)), blob_volume=volume,
                 window_low=float(rng.uniform(0.4, 1.2)), catheter_density=float(rng.uniform(0.1, 0.9)))


def _splat(img: np.ndarray, xy: np.ndarray, w: np.ndarray) -> None:
    """Bilinear splat of weights ``w`` at pixel coordinates ``xy`` into ``img``."""
    n = img.shape[0]
    x, y = xy[:, 0], xy[:, 1]
    ok = (x >= 0) & (y >= 0) & (x < n - 1) & (y < n - 1) & (w > 0)
    x, y, w = x[ok], y[ok], w[ok]
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    fx, fy = x - x0, y - y0
    for dx, dy, ww in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        np.add.at(img, (y0 + dy, x0 + dx), w * ww)


def _densify(pts: np.ndarray, vals: Sequence[np.ndarray], spacing_px: float,
             px: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """Resample a polyline (and per-point values) to ~``spacing_px`` pixels between points."""
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1) * px
    s = np.concatenate([[0.0], np.cumsum(seg)])
    t = np.arange(0, s[-1] + 1e-9, spacing_px)
    dense = np.stack([np.interp(t, s, pts[:, k]) for k in range(pts.shape[1])], axis=1)
    return dense, [np.interp(t, s, np.where(np.isfinite(v), v, 1e9)) for v in vals]


def render(scene: Scene, indices: Sequence[int]) -> np.ndarray:
    """Frames ``indices`` of the run as uint8 (len(indices), size, size); vessels dark on bright."""
    n, sc = scene.size, scene
    rng = np.random.default_rng([sc.seed, 202, *[int(i) for i in indices[:4]]])
    cath = np.zeros((n, n), np.float32)
    _splat(cath, *(lambda d: (d[0], np.full(len(d[0]), 1.0)))(_densify(sc.catheter, [], 0.5, 1.0)))
    cath = ndimage.gaussian_filter(cath, max(0.6, 0.9 * sc.px_per_mm)) * 1.2
    static = sc.background + cath * sc.catheter_density
    lo = hi = None
    out = np.empty((len(indices), n, n), np.uint8)
    bins = (0.6, 1.1, 1.7)  # calibre bins (mm radius)
    dense = [_densify(v.pts, [v.radius, v.dist], 0.7, sc.px_per_mm) for v in sc.vessels]
    for j, i in enumerate(indices):
        t = i / sc.fps
        phase = (t / sc.period) % 1.0
        s = 1 - sc.squeeze * math.sin(math.pi * min(phase / 0.4, 1.0)) ** 2
        tt = t - sc.t_inject
        iod = np.zeros((len(bins), n, n), np.float32)
        for pts, (rad, dist) in dense:
            p = (sc.centre + (pts - sc.centre) * s) @ sc.rot.T
            xy = p[:, :2] * sc.px_per_mm + sc.offset
            arr = tt - dist / sc.speed
            op = np.clip(arr / 0.12, 0, 1) * np.where(
                tt > sc.inject_len, np.exp(-np.clip(arr - sc.inject_len, 0, None) / sc.washout), 1.0)
            w = op * np.pi * rad ** 2 * 0.7 * sc.px_per_mm  # iodine volume per point / pixel area: mm of path
            b = np.digitize(rad, [(bins[0] + bins[1]) / 2, (bins[1] + bins[2]) / 2])
            for k in range(len(bins)):
                m = b == k
                if m.any():
                    _splat(iod[k], xy[m], w[m])
        mu = static.copy()
        for k, r in enumerate(bins):
            if iod[k].any():
                mu += sc.contrast * 0.8 * ndimage.gaussian_filter(iod[k], max(0.5, r * sc.px_per_mm * 0.7 + sc.blur))
        if sc.blob is not None:
            phase_s = 1 - ((0.25 if sc.kind == "ventriculogram" else 0.03)
                           * math.sin(math.pi * min(phase / 0.4, 1.0)) ** 2)
            c = sc.blob.mean(0)
            p = (c + (sc.blob - c) * phase_s) @ sc.rot.T
            fill = np.clip((tt - sc.blob_dist / 200.0) / 0.3, 0, 1) * (
                1.0 if tt < sc.inject_len else math.exp(-(tt - sc.inject_len) / 2.0))
            img = np.zeros((n, n), np.float32)
            _splat(img, p[:, :2] * sc.px_per_mm + sc.offset, fill.astype(np.float64))
            per_point = sc.blob_volume / len(sc.blob) * sc.px_per_mm ** 2  # mm of path per point and pixel
            mu += sc.contrast * 0.04 * ndimage.gaussian_filter(img, 1.0 + sc.blur) * per_point
        inten = np.exp(-mu) * (1 + sc.noise * rng.standard_normal((n, n)).astype(np.float32))
        disp = np.log(np.clip(inten, 1e-4, None))
        if lo is None:
            lo, hi = np.percentile(-sc.background, [0.5, 99.5]) + np.array([-sc.window_low, 0.1])
        out[j] = np.clip(((disp - lo) / max(hi - lo, 1e-6)).clip(0, 1) ** sc.gamma * 255, 0, 255).astype(np.uint8)
    return out


def render_all(scene: Scene) -> np.ndarray:
    """The whole cine (frames, size, size) uint8."""
    return render(scene, list(range(scene.frames)))
