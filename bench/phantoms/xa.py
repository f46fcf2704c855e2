"""Evaluation-only X-ray angiography phantoms (XA multi-frame DICOM), independent of ``training/``.

Used by ``bench/syntax_routing.py`` and the routing tests to measure whether the bundled artery
classifier generalises; never used for training.  It shares no geometry, intensity or DICOM code with
``training/syntax`` or ``synth/``.  Figures on these runs are phantom figures.

Model (all lengths in mm, patient coordinates x = left, y = posterior, z = head):

- Heart: an ellipsoid whose long axis points left, anterior and inferior (random tilt).  Coronary
  vessels are curves on its surface, given by (u, phi): u in -1 (base) .. 1 (apex) along the long
  axis, phi the azimuth (0 anterior interventricular groove, +pi/2 the right side, pi the crux).
  Left system: left main from the aortic root, bifurcating into the LAD (anterior groove to the apex,
  1-3 diagonals) and the LCX (left atrioventricular groove, 1-3 obtuse marginals).  Right system:
  a C-shaped RCA in the right atrioventricular groove to the crux, an acute marginal, then PDA
  (posterior groove) and posterolateral branch.  Random stenoses narrow a vessel (occlusions cut
  the flow beyond them).
- Acquisition (matrices above 512 are rendered with their noise at 512 and interpolated):
  C-arm angulation LAO/RAO and cranial/caudal, perspective-free projection at a field
  of view of 100-180 mm, 512 or 1024 matrix, 15-120 frames at 7.5-30 frames/s, cardiac motion
  (contraction about the heart centre), contrast arriving at the ostium after a delay and travelling
  down the tree (arrival by path length), wash-out, contrast density, quantum noise, focal blur,
  8-, 10- or 12-bit storage, MONOCHROME1 or MONOCHROME2.
- Scene: soft-tissue background of random low-frequency texture, spine, diaphragm dome, table edge,
  lungs, a catheter (aorta -> ostium).
- Non-coronary runs (truth "neither"): left ventriculogram (opacified, beating LV cavity with a
  pigtail catheter) and aortogram (opacified root, ascending aorta and arch).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
from scipy.interpolate import CubicSpline

__all__ = ["KINDS", "TRUTH", "Acquisition", "XaRun", "sample_acquisition", "render_run", "make_study", "write_run",
           "write_study", "GENERATOR", "VERSION"]

GENERATOR = "bench.phantoms.xa"
VERSION = "1.1.0"
KINDS = ("left", "right", "ventriculogram", "aortogram")
#: what the artery router must say for each kind of run
TRUTH = {"left": "left", "right": "right", "ventriculogram": "neither", "aortogram": "neither"}
_XA_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.12.1"
_UID_ROOT = "2.25."
_RENDER_MAX = 512


@dataclasses.dataclass(frozen=True)
class Acquisition:
    """How one run is acquired (all random draws of a run live here or in its seed)."""

    kind: str
    seed: int
    frames: int
    fps: float
    matrix: int
    lao: float  # degrees, + LAO / - RAO
    cranial: float  # degrees, + cranial / - caudal
    fov_mm: float
    noise: float  # relative quantum noise
    contrast: float  # iodine attenuation scale
    bits: int  # 8, 10 or 12
    monochrome1: bool


@dataclasses.dataclass
class XaRun:
    acquisition: Acquisition
    pixels: np.ndarray  # (T, N, N) uint8 or uint16 as stored
    stenoses: list[tuple[str, float, float]]  # (vessel, position 0..1, severity)

    @property
    def truth(self) -> str:
        return TRUTH[self.acquisition.kind]


def sample_acquisition(kind: str, seed: int, *, frames: int | None = None, matrix: int | None = None) -> Acquisition:
    """Random acquisition parameters of a ``kind`` run, reproducible from ``seed``."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    rng = np.random.default_rng([seed, 7717])
    n = int(frames) if frames is not None else int(rng.integers(15, 121))
    if not 2 <= n <= 400:
        raise ValueError(f"frames must lie in 2..400, got {n}")
    rates = [r for r in (7.5, 10.0, 12.5, 15.0, 25.0, 30.0) if n / r >= 1.6] or [7.5]
    fps = float(rng.choice(rates))
    m = int(matrix) if matrix is not None else int(rng.choice([512, 512, 1024]))
    if kind == "left":
        views = [(-30, -25), (-30, 25), (40, 25), (45, -25), (0, 35), (0, -35), (-10, 40), (90, 0)]
    elif kind == "right":
        views = [(40, 0), (30, 20), (-30, 0), (0, 30), (60, -10), (20, -20)]
    elif kind == "ventriculogram":
        views = [(-30, 0), (60, 20), (-35, -5)]
    else:
        views = [(45, 0), (30, 10), (-30, 0)]
    lao, cran = views[int(rng.integers(len(views)))]
    return Acquisition(kind=kind, seed=int(seed), frames=n, fps=fps, matrix=m,
                       lao=float(lao + rng.uniform(-12, 12)), cranial=float(cran + rng.uniform(-10, 10)),
                       fov_mm=float(rng.uniform(100, 180) if kind in ("left", "right") else rng.uniform(160, 220)),
                       noise=float(rng.uniform(0.01, 0.06)), contrast=float(rng.uniform(0.45, 1.3)),
                       bits=int(rng.choice([8, 8, 10, 12])) if m == 1024 else int(rng.choice([8, 8, 8, 12])),
                       monochrome1=bool(rng.random() < 0.15))


# -- anatomy -----------------------------------------------------------------------------------------

@dataclasses.dataclass
class _Heart:
    centre: np.ndarray
    axis: np.ndarray  # base -> apex
    e_ant: np.ndarray
    e_right: np.ndarray
    half_length: float
    radius: float

    def surface(self, u: np.ndarray, phi: np.ndarray, lift: float = 1.5) -> np.ndarray:
        """Points (n, 3) on (slightly above) the ellipsoid at (u, phi)."""
        u = np.clip(u, -0.98, 0.99)
        r = self.radius * np.sqrt(1 - u ** 2) + lift
        return (self.centre[None] + (u * self.half_length)[:, None] * self.axis[None]
                + (r * np.cos(phi))[:, None] * self.e_ant[None] + (r * np.sin(phi))[:, None] * self.e_right[None])


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _heart(rng: np.random.Generator) -> _Heart:
    axis = _unit(np.array([0.62 + rng.uniform(-0.12, 0.12), -0.45 + rng.uniform(-0.1, 0.1),
                           -0.62 + rng.uniform(-0.12, 0.12)]))
    ant = np.array([0.0, -1.0, 0.0])
    e_ant = _unit(ant - ant.dot(axis) * axis)
    e_right = np.cross(axis, e_ant)
    if e_right[0] > 0:  # +phi must turn towards the patient's right (-x)
        e_right = -e_right
    return _Heart(centre=np.array([10.0, 0.0, -10.0]) + rng.normal(0, 4, 3), axis=axis, e_ant=e_ant, e_right=e_right,
                  half_length=float(rng.uniform(48, 62)), radius=float(rng.uniform(36, 46)))


@dataclasses.dataclass
class _Vessel:
    name: str
    points: np.ndarray  # (n, 3) dense centreline
    radius: np.ndarray  # (n,) mm
    arrival: np.ndarray  # (n,) path length from the ostium, mm (inf beyond an occlusion)


def _dense(ctrl: np.ndarray, step: float = 0.5) -> np.ndarray:
    """Points every ``step`` mm along a natural cubic spline through the control points, parametrised
    by chord length (two points: the straight segment)."""
    p = np.asarray(ctrl, np.float64)
    keep = np.concatenate([[True], np.linalg.norm(np.diff(p, axis=0), axis=1) > 1e-9])
    p = p[keep]
    chord = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(p, axis=0), axis=1))])
    if len(p) < 2:
        return p.copy()
    curve = CubicSpline(chord, p, axis=0, bc_type="natural")
    fine = curve(np.linspace(0.0, chord[-1], max(2, int(chord[-1] / 0.1) + 1)))
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(fine, axis=0), axis=1))])
    t = np.arange(0.0, arc[-1] + 1e-9, step)
    return np.stack([np.interp(t, arc, fine[:, k]) for k in range(3)], axis=1)


def _surface_curve(h: _Heart, u: Sequence[float], phi: Sequence[float], start: np.ndarray | None = None) -> np.ndarray:
    pts = h.surface(np.asarray(u, float), np.asarray(phi, float))
    if start is not None:
        pts = np.concatenate([start[None], pts])
    return _dense(pts)


def _lengths(points: np.ndarray) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])


def _vessel(name: str, points: np.ndarray, r0: float, r1: float, offset: float, rng: np.random.Generator,
            stenoses: list[tuple[str, float, float]], p_lesion: float) -> _Vessel:
    s = _lengths(points)
    frac = s / max(s[-1], 1e-6)
    radius = r0 + (r1 - r0) * frac
    arrival = offset + s
    if rng.random() < p_lesion:
        pos, sev = float(rng.uniform(0.12, 0.75)), float(rng.uniform(0.4, 0.95))
        if rng.random() < 0.06:
            sev = 1.0
        half = max(2.0, 0.05 * s[-1])
        prof = np.clip(1 - np.abs(s - pos * s[-1]) / half, 0, 1)
        radius = radius * (1 - min(sev, 0.97) * prof)
        if sev >= 1.0:
            arrival = np.where(s > pos * s[-1], np.inf, arrival)
        stenoses.append((name, pos, sev))
    return _Vessel(name, points, radius, arrival)


def _branch(h: _Heart, parent: _Vessel, at: float, du: float, dphi: float, n: int = 5,
            rng: np.random.Generator | None = None) -> tuple[np.ndarray, float]:
    """Control curve leaving ``parent`` at fraction ``at`` heading by (du, dphi) over its length."""
    i = int(at * (len(parent.points) - 1))
    p0 = parent.points[i]
    # (u, phi) of the branch point, from the heart frame
    rel = p0 - h.centre
    u0 = float(np.clip(rel.dot(h.axis) / h.half_length, -0.98, 0.98))
    phi0 = math.atan2(rel.dot(h.e_right), rel.dot(h.e_ant))
    w = (rng.normal(0, 0.05, n) if rng is not None else np.zeros(n))
    us = u0 + np.linspace(0, du, n)[1:]
    ps = phi0 + np.linspace(0, dphi, n)[1:] + w[1:]
    return _surface_curve(h, us, ps, start=p0), float(parent.arrival[i])


def _left_tree(h: _Heart, rng: np.random.Generator, stenoses: list) -> tuple[list[_Vessel], np.ndarray]:
    g = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    u_av = g(-0.72, -0.55)
    ostium = h.surface(np.array([u_av - 0.22]), np.array([g(-0.75, -0.45)]), lift=9.0)[0]
    bif = h.surface(np.array([u_av]), np.array([g(-0.3, -0.1)]))[0]
    lm = _vessel("LM", _dense(np.stack([ostium, 0.5 * (ostium + bif) + rng.normal(0, 1.0, 3), bif])),
                 g(2.0, 2.5), g(1.9, 2.2), 0.0, rng, stenoses, 0.12)
    out = [lm]
    uu = np.linspace(u_av, g(0.92, 0.99), 7)
    lad_pts = _surface_curve(h, uu, g(-0.15, 0.1) + np.cumsum(rng.normal(0, 0.05, 7)), start=bif)
    lad = _vessel("LAD", lad_pts, g(1.6, 1.9), g(0.5, 0.8), lm.arrival[-1], rng, stenoses, 0.35)
    phis = np.linspace(g(-0.35, -0.2), g(-2.6, -2.0), 7)
    lcx_pts = _surface_curve(h, np.full(7, u_av) + rng.normal(0, 0.03, 7), phis, start=bif)
    lcx = _vessel("LCX", lcx_pts, g(1.4, 1.7), g(0.6, 0.9), lm.arrival[-1], rng, stenoses, 0.3)
    out += [lad, lcx]
    for k in range(int(rng.integers(1, 4))):
        pts, off = _branch(h, lad, g(0.15, 0.55), g(0.45, 0.7), -g(0.5, 0.9), rng=rng)
        out.append(_vessel(f"D{k + 1}", pts, g(0.9, 1.2), g(0.4, 0.6), off, rng, stenoses, 0.15))
    for k in range(int(rng.integers(1, 4))):
        pts, off = _branch(h, lcx, g(0.25, 0.8), g(0.8, 1.2), -g(0.0, 0.3), rng=rng)
        out.append(_vessel(f"OM{k + 1}", pts, g(0.9, 1.2), g(0.4, 0.6), off, rng, stenoses, 0.15))
    if rng.random() < 0.4:  # septal perforators: short, thin, into the septum (drawn on the groove)
        pts, off = _branch(h, lad, g(0.15, 0.3), g(0.2, 0.3), g(0.3, 0.5), n=3, rng=rng)
        out.append(_vessel("S1", pts, 0.6, 0.35, off, rng, stenoses, 0.0))
    return out, ostium


def _right_tree(h: _Heart, rng: np.random.Generator, stenoses: list) -> tuple[list[_Vessel], np.ndarray]:
    g = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    u_av = g(-0.72, -0.55)
    ostium = h.surface(np.array([u_av - 0.2]), np.array([g(0.35, 0.6)]), lift=8.0)[0]
    phis = np.linspace(g(0.55, 0.75), g(2.9, 3.2), 9)
    rca_pts = _surface_curve(h, np.full(9, u_av) + rng.normal(0, 0.03, 9), phis, start=ostium)
    rca = _vessel("RCA", rca_pts, g(1.7, 2.1), g(1.1, 1.4), 0.0, rng, stenoses, 0.45)
    out = [rca]
    pts, off = _branch(h, rca, g(0.4, 0.6), g(0.7, 1.0), g(-0.1, 0.2), rng=rng)
    out.append(_vessel("AM", pts, g(0.7, 0.9), 0.4, off, rng, stenoses, 0.1))
    if rng.random() < 0.5:  # conus branch near the ostium
        pts, off = _branch(h, rca, g(0.05, 0.1), g(0.3, 0.5), -g(0.4, 0.8), n=4, rng=rng)
        out.append(_vessel("CB", pts, 0.6, 0.35, off, rng, stenoses, 0.0))
    pts, off = _branch(h, rca, 1.0, g(0.9, 1.25), g(-0.1, 0.1), rng=rng)
    out.append(_vessel("PDA", pts, g(0.9, 1.2), g(0.4, 0.6), off, rng, stenoses, 0.2))
    pts, off = _branch(h, rca, 1.0, g(0.05, 0.2), g(0.5, 0.9), rng=rng)
    pl = _vessel("PL", pts, g(0.9, 1.2), g(0.5, 0.7), off, rng, stenoses, 0.15)
    out.append(pl)
    pts, off = _branch(h, pl, 0.9, g(0.5, 0.8), g(0.0, 0.2), rng=rng)
    out.append(_vessel("PLB", pts, 0.7, 0.4, off, rng, stenoses, 0.0))
    return out, ostium


def _aorta(h: _Heart, rng: np.random.Generator) -> np.ndarray:
    """Aortic centreline from the root (just above the base) up, over the arch and down."""
    root = h.centre - h.axis * h.half_length * 0.95 + np.array([-8.0, 5.0, 5.0]) + rng.normal(0, 2, 3)
    top = root + np.array([-5.0, 5.0, 60.0]) + rng.normal(0, 4, 3)
    arch = top + np.array([25.0, 35.0, 22.0])
    desc = arch + np.array([15.0, 15.0, -40.0])
    low = desc + np.array([0.0, 5.0, -160.0])
    return _dense(np.stack([root, root + np.array([-2.0, 2.0, 25.0]), top, arch, desc, low]), step=1.0)


# -- projection and rendering ------------------------------------------------------------------------

def _rotation(lao: float, cranial: float) -> np.ndarray:
    """Patient -> detector coordinates: columns (patient left in AP), rows (feet in AP), depth."""
    a, c = math.radians(lao), math.radians(cranial)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(c), -math.sin(c)], [0, math.sin(c), math.cos(c)]])
    r = rx @ rz
    # image column = x', image row = -z', depth = y'
    return np.stack([r[0], -r[2], r[1]])


class _Projector:
    def __init__(self, acq: Acquisition, centre: np.ndarray, pan: np.ndarray, n: int) -> None:
        self.rot = _rotation(acq.lao, acq.cranial)
        self.scale = n / acq.fov_mm
        self.centre = centre
        self.offset = n / 2 + pan * n

    def __call__(self, pts: np.ndarray) -> np.ndarray:
        d = (pts - self.centre) @ self.rot.T
        return d[:, :2] * self.scale + self.offset


def _splat(img_thick: np.ndarray, img_arr: np.ndarray | None, xy: np.ndarray, radius_px: np.ndarray,
           arrival: np.ndarray | None) -> None:
    """Draw a tube: projected thickness 2 sqrt(r^2 - d^2) (max along the tube), arrival = min."""
    n = img_thick.shape[0]
    th = np.zeros_like(img_thick)
    xs = ys = np.arange(n, dtype=np.float32)
    step = max(1, int(0.5 / max(1e-3, float(np.median(np.linalg.norm(np.diff(xy, axis=0), axis=1)) or 1))))
    for i in range(0, len(xy), step):
        x, y = xy[i]
        r = float(radius_px[i])
        if r <= 0.05:
            continue
        rr = r + 1.0
        x0, x1, y0, y1 = int(max(0, x - rr)), int(min(n, x + rr + 2)), int(max(0, y - rr)), int(min(n, y + rr + 2))
        if x0 >= x1 or y0 >= y1:
            continue
        d2 = (xs[x0:x1][None, :] - x) ** 2 + (ys[y0:y1][:, None] - y) ** 2
        t = 2 * np.sqrt(np.maximum(r * r - d2, 0.0))
        np.maximum(th[y0:y1, x0:x1], t, out=th[y0:y1, x0:x1])
        if img_arr is not None and arrival is not None:
            sub = img_arr[y0:y1, x0:x1]
            np.minimum(sub, np.where(t > 0, arrival[i], np.inf), out=sub)
    img_thick += th


def _smooth_field(rng: np.random.Generator, n: int, scale: float) -> np.ndarray:
    """Low-frequency random texture in 0..1 (sum of random cosines)."""
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / n
    f = np.zeros((n, n), np.float32)
    for _ in range(6):
        kx, ky = rng.normal(0, scale, 2)
        f += (np.cos(2 * np.pi * (kx * xx + ky * yy) + rng.uniform(0, 2 * np.pi)).astype(np.float32)
              * float(rng.uniform(0.3, 1)))
    f -= f.min()
    return f / max(float(f.max()), 1e-6)


def _background(acq: Acquisition, rng: np.random.Generator, proj: _Projector, n: int) -> np.ndarray:
    """Line integral of the static anatomy (arbitrary units ~ 0.5 .. 3)."""
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / n
    mu = 1.0 + 0.5 * _smooth_field(rng, n, 1.5) + 0.15 * _smooth_field(rng, n, 5.0)
    # heart shadow (soft, broad)
    c = proj(np.array([proj.centre]))[0] / n
    mu += 0.35 * np.exp(-(((xx - c[0]) ** 2 + (yy - c[1]) ** 2) / (2 * 0.22 ** 2)))
    # lungs (less attenuation) to the sides
    mu -= 0.3 * np.exp(-(((xx - c[0] - 0.45) ** 2) / (2 * 0.12 ** 2))) / (1 + np.exp((yy - 0.75) * 20))
    # spine: a vertical band whose position depends on the rotation
    sx = 0.5 + 0.35 * math.sin(math.radians(acq.lao)) + rng.uniform(-0.05, 0.05)
    mu += 0.45 * np.exp(-((xx - sx) ** 2) / (2 * 0.06 ** 2))
    # diaphragm: a dome below which the liver attenuates
    h0, curv = rng.uniform(0.65, 0.95), rng.uniform(0.3, 0.9)
    dome = h0 + curv * (xx - rng.uniform(0.3, 0.7)) ** 2
    mu += 0.8 / (1 + np.exp(np.clip(-(yy - dome) * n / rng.uniform(6, 20), -50, 50)))
    # table edge at steep angulation: a straight band
    if abs(acq.lao) > 30 or rng.random() < 0.3:
        ang, off = rng.uniform(-0.3, 0.3), rng.uniform(0.05, 0.95)
        dist = (xx - off) * math.cos(ang) + (yy - 0.5) * math.sin(ang)
        mu += 0.25 / (1 + np.exp(np.clip(-dist * n / 3.0, -50, 50)))
    # a few ribs (faint curved bands)
    for _ in range(int(rng.integers(0, 4))):
        y0, a = rng.uniform(0.0, 0.8), rng.uniform(-0.4, 0.4)
        band = yy - (y0 + a * (xx - 0.5) ** 2 + 0.1 * xx)
        mu += 0.12 * np.exp(-(band ** 2) / (2 * 0.012 ** 2))
    return mu.astype(np.float32)


def _phase_curve(t: np.ndarray, period: float) -> np.ndarray:
    """Contraction 0 (diastole) .. 1 (end systole)."""
    ph = (t / period) % 1.0
    return np.where(ph < 0.35, np.sin(np.pi * ph / 0.7), np.clip(np.cos(np.pi * (ph - 0.35) / 0.8), 0, 1)) ** 2


def render_run(acq: Acquisition) -> XaRun:
    """Render the run described by ``acq`` (deterministic)."""
    rng = np.random.default_rng([acq.seed, 31337])
    T = acq.frames
    n = min(acq.matrix, _RENDER_MAX)  # larger matrices: rendered here, interpolated, noise at full size
    h = _heart(rng)
    stenoses: list[tuple[str, float, float]] = []
    vessels: list[_Vessel] = []
    ostium = h.centre
    if acq.kind == "left":
        vessels, ostium = _left_tree(h, rng, stenoses)
    elif acq.kind == "right":
        vessels, ostium = _right_tree(h, rng, stenoses)
    aorta = _aorta(h, rng)
    pan = rng.uniform(-0.1, 0.1, 2)
    look = 0.5 * (h.centre + (ostium if acq.kind in ("left", "right") else h.centre))
    proj = _Projector(acq, look, pan, n)
    bg = _background(acq, rng, proj, n)
    # catheter: aorta from below up to the root, then to the ostium (or into the LV / root)
    root = aorta[0]
    if acq.kind in ("left", "right"):
        tip_path = _dense(np.stack([root, 0.5 * (root + ostium) + np.array([0, 0, 6.0]), ostium]), step=1.0)
    elif acq.kind == "ventriculogram":
        lv_c = h.centre + h.axis * h.half_length * 0.25
        tip_path = _dense(np.stack([root, h.centre, lv_c]), step=1.0)
        loop = lv_c + 6 * np.stack([np.cos(np.linspace(0, 5.5, 20)), np.sin(np.linspace(0, 5.5, 20)), np.zeros(20)], 1)
        tip_path = np.concatenate([tip_path, loop])
    else:
        tip_path = _dense(np.stack([root + np.array([0, 0, 20.0]), root + np.array([3.0, 0, 8.0])]), step=1.0)
    cath = np.concatenate([aorta[::-1], tip_path])
    cath_px = proj(cath)
    period = float(rng.uniform(0.6, 1.1))
    times = np.arange(T) / acq.fps
    K = 5  # cardiac phases rendered
    levels = np.linspace(0, 1, K)
    squeeze = float(rng.uniform(0.05, 0.1))
    thick = np.zeros((K, n, n), np.float32)
    arrive = np.full((K, n, n), np.inf, np.float32)
    cath_img = np.zeros((n, n), np.float32)
    _splat(cath_img, None, cath_px, np.full(len(cath), 1.0 * proj.scale), None)
    lv_chord = None
    if acq.kind == "ventriculogram":
        lv_chord = np.zeros((K, n, n), np.float32)
    for k, lev in enumerate(levels):
        s = 1 - squeeze * lev
        if acq.kind in ("left", "right"):
            for v in vessels:
                pts = h.centre + (v.points - h.centre) * s
                _splat(thick[k], arrive[k], proj(pts), v.radius * proj.scale, v.arrival.astype(np.float32))
        elif acq.kind == "aortogram":
            seg = aorta[: int(0.7 * len(aorta))]
            rad = np.full(len(seg), float(rng.uniform(12, 16))) * proj.scale
            rad[:8] *= 1.25  # sinus bulge
            _splat(thick[k], arrive[k], proj(seg), rad, _lengths(seg).astype(np.float32))
        else:
            lv_chord[k] = _lv_chord(h, proj, n, 1 - 0.3 * lev)  # type: ignore[index]
    # contrast timing
    dur = T / acq.fps
    t_inj = float(rng.uniform(0.0, min(0.3 * dur, 1.5)))
    speed = float(rng.uniform(120, 320))  # mm/s along the tree
    inj_len = float(rng.uniform(1.8, 4.0))
    washout = float(rng.uniform(0.4, 1.0))
    period_phase = _phase_curve(times, period)
    m = acq.matrix
    if m % n:
        raise ValueError(f"matrix {m} must be a multiple of {n}")
    logs = np.empty((T, n, n), np.float32)
    blur = float(rng.uniform(0.4, 1.2)) * n / 512
    from scipy import ndimage  # numpy-adjacent; the bench installs scipy with the training extras

    # focal-spot blur applied to the line integrals (linear), once per cardiac phase; the iodine
    # maps are kept sparse (pixels a vessel covers) so that a frame costs little beyond its noise
    coef = (0.15 if acq.kind != "aortogram" else 0.05) / proj.scale
    sparse = []
    for k in range(K):
        arr_k = ndimage.grey_erosion(arrive[k], size=3) if np.isfinite(arrive[k]).any() else arrive[k]
        th = ndimage.gaussian_filter(thick[k], blur) if acq.kind != "ventriculogram" else \
            ndimage.gaussian_filter(lv_chord[k], blur)  # type: ignore[index]
        idx = np.flatnonzero(th > 1e-3)
        sparse.append((idx, th.ravel()[idx], arr_k.ravel()[idx] / speed))
    static = ndimage.gaussian_filter(bg + cath_img / proj.scale * 0.25, blur)
    drift = rng.normal(0, 0.01, 2) * n  # breathing: whole-image drift over the run (integer pixels)
    for t in range(T):
        k = int(round(period_phase[t] * (K - 1)))
        tt = times[t] - t_inj
        idx, th, at = sparse[k]
        if acq.kind == "ventriculogram":
            fill = float(np.clip(tt / 0.6, 0, 1)) * (1.0 if tt < inj_len else math.exp(-(tt - inj_len) / 2.5))
            iodine = th * 0.04 * fill
        else:
            with np.errstate(invalid="ignore"):
                op = np.clip((tt - at) / 0.15, 0, 1)
                if tt > inj_len:
                    op = op * np.exp(-np.clip(tt - inj_len - at, 0, None) / washout)
            iodine = th * coef * np.nan_to_num(op, nan=0.0, posinf=0.0)
        mu = static.copy()
        mu.ravel()[idx] += acq.contrast * iodine
        dy, dx = (int(round(v)) for v in drift * t / max(T, 1))
        if dy or dx:
            mu = np.roll(mu, (dy, dx), axis=(0, 1))
        intensity = np.exp(-mu)
        intensity *= 1 + (acq.noise * rng.standard_normal((n, n), dtype=np.float32)
                          / np.sqrt(np.maximum(intensity, 0.02) / 0.3))
        logs[t] = np.log(np.maximum(intensity, 1e-4))
    # display mapping: log, vessels dark, window from a subsample, the stored bit depth; then the matrix
    lo, hi = np.percentile(logs[:, ::4, ::4], [0.5, 99.5])
    gamma = float(rng.uniform(0.8, 1.25))
    top = (1 << acq.bits) - 1
    pixels = np.empty((T, m, m), np.uint8 if acq.bits == 8 else np.uint16)
    for t in range(T):
        disp = np.clip((logs[t] - lo) * (1.0 / max(hi - lo, 1e-6)), 0, 1) ** gamma * top
        if acq.monochrome1:
            disp = top - disp
        pixels[t] = _upsample(np.rint(disp), m // n) if m != n else np.rint(disp)
    return XaRun(acq, pixels, stenoses)


def _upsample(img: np.ndarray, f: int) -> np.ndarray:
    """Integer-factor bilinear-like upsampling (pixel replication smoothed by a 2-tap average)."""
    up = np.repeat(np.repeat(img, f, axis=0), f, axis=1)
    up[1:] = 0.5 * (up[1:] + up[:-1])
    up[:, 1:] = 0.5 * (up[:, 1:] + up[:, :-1])
    return up


def _lv_chord(h: _Heart, proj: _Projector, n: int, scale: float) -> np.ndarray:
    """Projected path length through the LV cavity (an ellipsoid in the apical two thirds)."""
    c = h.centre + h.axis * h.half_length * 0.2
    a = np.array([h.half_length * 0.7, h.radius * 0.6, h.radius * 0.6]) * scale
    basis = np.stack([h.axis, h.e_ant, h.e_right])  # rows: ellipsoid axes in patient coordinates
    inv_rot = proj.rot.T  # detector -> patient
    ys, xs = np.mgrid[0:n, 0:n].astype(np.float64)
    det = np.stack([(xs - proj.offset[0]) / proj.scale, (ys - proj.offset[1]) / proj.scale, np.zeros_like(xs)], -1)
    p0 = det @ inv_rot.T + proj.centre - c  # points on the plane through the look-at point
    d = inv_rot[:, 2]  # ray direction (depth axis)
    q0 = (p0 @ basis.T) / a
    qd = (basis @ d) / a
    A = float(qd @ qd)
    B = 2 * (q0 @ qd)
    C = (q0 ** 2).sum(-1) - 1
    disc = B * B - 4 * A * C
    return (np.sqrt(np.clip(disc, 0, None)) / A).astype(np.float32)


# -- studies and DICOM -------------------------------------------------------------------------------

def make_study(seed: int, *, n_left: int | None = None, n_right: int | None = None,
               negatives: Sequence[str] | None = None, frames: Sequence[int] | None = None,
               matrix: int | None = None) -> list[Acquisition]:
    """The runs of one study: 2-5 left, 1-3 right, sometimes a ventriculogram and/or an aortogram."""
    rng = np.random.default_rng([seed, 4242])
    nl = int(rng.integers(2, 6)) if n_left is None else n_left
    nr = int(rng.integers(1, 4)) if n_right is None else n_right
    if negatives is None:
        negatives = [k for k, p in (("ventriculogram", 0.35), ("aortogram", 0.25)) if rng.random() < p]
    kinds = ["left"] * nl + ["right"] * nr + list(negatives)
    out = []
    for i, kind in enumerate(kinds):
        f = None if frames is None else frames[i % len(frames)]
        out.append(sample_acquisition(kind, seed * 100 + i, frames=f, matrix=matrix))
    return out


def _uid(*parts: object) -> str:
    return _UID_ROOT + str(int(hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:30], 16))


def write_run(run: XaRun, path: str | Path, study_key: str, series_number: int) -> Path:
    """One multi-frame XA Image instance (uncompressed, explicit VR little endian)."""
    acq, px = run.acquisition, run.pixels
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sop = _uid(GENERATOR, study_key, series_number, "sop")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = _XA_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = _UID_ROOT + "1"
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = _XA_SOP_CLASS, sop
    ds.StudyInstanceUID = _uid(GENERATOR, study_key, "study")
    ds.SeriesInstanceUID = _uid(GENERATOR, study_key, series_number, "series")
    ds.FrameOfReferenceUID = _uid(GENERATOR, study_key, "for")
    day = _dt.date(2026, 1, 1) + _dt.timedelta(days=int(hashlib.sha1(study_key.encode()).hexdigest()[:4], 16) % 300)
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = day.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101500"
    ds.Modality = "XA"
    ds.Manufacturer = "CardioNode evaluation phantom"
    ds.ManufacturerModelName = f"{GENERATOR} {VERSION}"
    ds.PatientName = f"EVALPHANTOM^{study_key}"
    ds.PatientID = f"EVAL-{study_key}"
    ds.PatientBirthDate, ds.PatientSex = "", "O"
    ds.AccessionNumber, ds.StudyID, ds.ReferringPhysicianName = "", study_key[:16], ""
    ds.SeriesNumber, ds.InstanceNumber = int(series_number), 1
    short = {"left": "LCA", "right": "RCA", "ventriculogram": "LV", "aortogram": "AO"}[acq.kind]
    ds.SeriesDescription = f"{short} {series_number}"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "SINGLE PLANE"]
    ds.KVP = f"{70 + (acq.seed % 30)}"
    ds.PositionerPrimaryAngle = f"{acq.lao:.1f}"
    ds.PositionerSecondaryAngle = f"{acq.cranial:.1f}"
    ds.DistanceSourceToDetector = "1100"
    ds.DistanceSourceToPatient = "760"
    ds.ImagerPixelSpacing = [f"{acq.fov_mm * 1.45 / acq.matrix:.4f}"] * 2
    ds.FrameTime = f"{1000.0 / acq.fps:.3f}"
    ds.CineRate = int(round(acq.fps))
    ds.FrameIncrementPointer = pydicom.tag.Tag(0x0018, 0x1063)
    ds.NumberOfFrames = int(px.shape[0])
    ds.Rows, ds.Columns = int(px.shape[1]), int(px.shape[2])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if acq.monochrome1 else "MONOCHROME2"
    ds.BitsAllocated = 8 if px.dtype == np.uint8 else 16
    ds.BitsStored = acq.bits
    ds.HighBit = acq.bits - 1
    ds.PixelRepresentation = 0
    ds.PixelIntensityRelationship = "LIN"
    ds.PixelData = np.ascontiguousarray(px).tobytes()
    ds.ImageComments = f"evaluation phantom ({GENERATOR} {VERSION}); not a patient; truth {run.truth}"
    ds.save_as(path, enforce_file_format=True)
    return path


def write_study(seed: int, folder: str | Path, **kw) -> list[tuple[Path, XaRun]]:
    """Render and write the runs of :func:`make_study` under ``folder``; returns (file, run) pairs."""
    folder = Path(folder)
    out = []
    for i, acq in enumerate(make_study(seed, **kw)):
        run = render_run(acq)
        out.append((write_run(run, folder / f"{i:02d}.dcm", f"s{seed}", i + 1), run))
    return out
