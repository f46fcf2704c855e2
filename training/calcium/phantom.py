"""Synthetic non-contrast chest-CT phantoms with calcified plaques of known COCA class (numpy only).

Anatomy (patient coordinates, mm; x -> patient left, y -> posterior, z -> head): elliptic body
with a fat layer, two lungs (-850 HU), heart (40 HU) in epicardial fat, coronary tubes on the heart
surface (LM, LAD, LCX, RCA, PDA), ascending and descending aorta, aortic and mitral valve rings,
spine (cortical >= 600 HU) and rib bands / sternum (>= 400 HU) as high-density distractors.
Plaques are ellipsoids (training) or axis-aligned boxes of constant HU (tests: their Agatston
score is computed by hand with :func:`hand_agatston`).  Labels are the plaque voxels, by class,
like the COCA segmentations.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

__all__ = ["Plaque", "Phantom", "make_phantom", "hand_agatston", "weight_of"]


@dataclasses.dataclass(frozen=True)
class Plaque:
    label: int
    center_xyz: tuple[float, float, float]
    radii_mm: tuple[float, float, float]
    hu: int
    shape: str  # "ellipsoid" | "box"
    index_box: tuple[int, int, int, int, int, int] | None = None  # z0, z1, y0, y1, x0, x1 (boxes)


@dataclasses.dataclass
class Phantom:
    hu: np.ndarray  # (z, y, x) int16
    labels: np.ndarray  # (z, y, x) uint8, 0..8
    spacing: tuple[float, float, float]  # (z, y, x) mm
    origin_xyz: tuple[float, float, float]
    plaques: list[Plaque]

    def z_positions(self) -> np.ndarray:
        return self.origin_xyz[2] + np.arange(self.hu.shape[0]) * self.spacing[0]


def weight_of(hu: float) -> int:
    return 4 if hu >= 400 else 3 if hu >= 300 else 2 if hu >= 200 else 1 if hu >= 130 else 0


def hand_agatston(ph: Phantom) -> dict[int, float]:
    """Agatston per class of a box phantom by the formula: slices x (rows x cols x pixel area) x weight x dz/3."""
    out: dict[int, float] = {}
    dz, dy, dx = ph.spacing
    for p in ph.plaques:
        if p.index_box is None:
            raise ValueError("hand_agatston needs box plaques")
        z0, z1, y0, y1, x0, x1 = p.index_box
        area = (y1 - y0) * (x1 - x0) * dy * dx
        if area < 1.0:
            continue
        out[p.label] = out.get(p.label, 0.0) + (z1 - z0) * area * weight_of(p.hu) * dz / 3.0
    return out


def _surface(h, r, phi_deg, zrel, out_mm=3.0):
    phi = np.deg2rad(phi_deg)
    s = np.sqrt(max(0.0, 1 - zrel ** 2))
    d = np.array([np.cos(phi) * s, np.sin(phi) * s, zrel])
    p = h + r * d
    n = d / r
    n = n / np.linalg.norm(n)
    return p + out_mm * n


def _paths(h: np.ndarray, r: np.ndarray, root: np.ndarray) -> dict[int, np.ndarray]:
    """Centre lines (k, 3) per coronary class, on the heart surface."""
    t = np.linspace(0, 1, 24)
    lad = np.array([_surface(h, r, -60 + 30 * u, 0.55 - 1.35 * u) for u in t])
    lcx = np.array([_surface(h, r, -20 + 95 * u, 0.45 - 0.15 * u) for u in t])
    rca = np.array([_surface(h, r, 235 - 100 * u, 0.45 - 0.9 * u) for u in t])
    pda = np.array([_surface(h, r, 115 - 45 * u, -0.5 - 0.35 * u) for u in t])
    lm_start = root + np.array([12.0, 0.0, -2.0])
    lm = np.array([lm_start + u * (lad[0] - lm_start) for u in t])
    return {1: pda, 2: lm, 3: lad, 4: lcx, 8: rca}


def make_phantom(
    seed: int,
    *,
    shape: tuple[int, int, int] = (64, 256, 256),
    spacing: tuple[float, float, float] = (3.0, 1.4, 1.4),
    plaque_shape: str = "ellipsoid",
    noise_hu: float = 12.0,
    p_class: float = 0.6,
    classes: Sequence[int] | None = None,
) -> Phantom:
    """One phantom; ``classes`` forces which classes get plaques (default: random, each with ``p_class``)."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    dz, dy, dx = spacing
    origin = (-(nx - 1) * dx / 2, -(ny - 1) * dy / 2, 0.0)
    xs = origin[0] + np.arange(nx) * dx
    ys = origin[1] + np.arange(ny) * dy
    zs = origin[2] + np.arange(nz) * dz
    X, Y = np.meshgrid(xs, ys)
    zc = zs[nz // 2] + rng.uniform(-0.1, 0.1) * nz * dz
    r = np.array([rng.uniform(45, 58), rng.uniform(40, 50), rng.uniform(min(45.0, nz * dz * 0.3), min(55.0, nz * dz * 0.38))])
    h = np.array([rng.uniform(8, 22), rng.uniform(-30, -18), zc])
    body = np.array([rng.uniform(140, 170), rng.uniform(100, 120)])
    root = h + np.array([-0.15 * r[0], -0.1 * r[1], 0.72 * r[2]])
    asc_xy = root[:2] + np.array([-4.0, 0.0])
    desc_xy = np.array([rng.uniform(32, 40), rng.uniform(36, 44)])
    spine_xy = np.array([0.0, body[1] * 0.62])
    mv = h + np.array([0.3 * r[0], 0.15 * r[1], 0.35 * r[2]])
    rib_phase = rng.uniform(0, 25)

    hu = np.empty(shape, dtype=np.int16)
    for k, z in enumerate(zs):
        sl = np.full((ny, nx), -1000.0, dtype=np.float32)
        e = (X / body[0]) ** 2 + (Y / body[1]) ** 2
        sl[e <= 1] = -100  # subcutaneous fat
        e_in = (X / (body[0] - 12)) ** 2 + (Y / (body[1] - 12)) ** 2
        sl[e_in <= 1] = 40  # muscle / mediastinum
        for side in (-1, 1):
            lung = ((X - side * body[0] * 0.45) / (body[0] * 0.38)) ** 2 + ((Y - 5) / (body[1] * 0.7)) ** 2
            sl[lung <= 1] = -850
        zrel = (z - h[2]) / r[2]
        if abs(zrel) < 1:
            s = np.sqrt(1 - zrel ** 2)
            fat = ((X - h[0]) / (r[0] * s + 5)) ** 2 + ((Y - h[1]) / (r[1] * s + 5)) ** 2
            sl[fat <= 1] = -80
            heart = ((X - h[0]) / (r[0] * s)) ** 2 + ((Y - h[1]) / (r[1] * s)) ** 2
            sl[heart <= 1] = 40
        if z >= root[2] - 5:
            sl[(X - asc_xy[0]) ** 2 + (Y - asc_xy[1]) ** 2 <= 14 ** 2] = 40
        sl[(X - desc_xy[0]) ** 2 + (Y - desc_xy[1]) ** 2 <= 12 ** 2] = 40
        d_sp = (X - spine_xy[0]) ** 2 + (Y - spine_xy[1]) ** 2
        sl[d_sp <= 19 ** 2] = 650  # cortical bone
        sl[d_sp <= 15 ** 2] = 250  # cancellous
        sl[(X - spine_xy[0]) ** 2 + (Y - spine_xy[1] - 26) ** 2 <= 7 ** 2] = 20  # canal
        if ((z + rib_phase) % 25.0) < 9.0:  # rib band
            ring = (e_in > 1) & ((X / (body[0] - 4)) ** 2 + (Y / (body[1] - 4)) ** 2 <= 1) & (Y < body[1] * 0.5)
            sl[ring] = 700
        sl[(np.abs(X) < 14) & (np.abs(Y + body[1] - 18) < 6)] = 520  # sternum
        hu[k] = np.clip(np.rint(sl + rng.normal(0, noise_hu, sl.shape)), -1024, 3000)

    labels = np.zeros(shape, dtype=np.uint8)
    paths = _paths(h, r, root)
    plaques: list[Plaque] = []
    wanted = list(classes) if classes is not None else [c for c in range(1, 9) if rng.random() < p_class]

    def candidates(c: int) -> np.ndarray:
        if c in paths:
            return paths[c]
        ang = np.linspace(0, 2 * np.pi, 16, endpoint=False)
        if c == 5:  # mitral annulus ring
            return np.stack([mv[0] + 11 * np.cos(ang), mv[1] + 11 * np.sin(ang), np.full_like(ang, mv[2])], 1)
        if c == 7:  # aortic valve ring
            return np.stack([root[0] + 9 * np.cos(ang), root[1] + 9 * np.sin(ang), np.full_like(ang, root[2])], 1)
        # thoracic aorta wall: ascending (above the root) and descending
        zz = zs[(zs > zs[0] + 6) & (zs < zs[-1] - 6)]
        pts = []
        for z in zz[:: max(1, len(zz) // 12)]:
            a = rng.uniform(0, 2 * np.pi)
            pts.append([desc_xy[0] + 11 * np.cos(a), desc_xy[1] + 11 * np.sin(a), z])
            if z > root[2] + 10:
                pts.append([asc_xy[0] + 13 * np.cos(a), asc_xy[1] + 13 * np.sin(a), z])
        return np.array(pts)

    for c in wanted:
        pts = candidates(c)
        n = int(rng.integers(1, 4 if c != 6 else 6))
        for j in rng.choice(len(pts), size=min(n, len(pts)), replace=False):
            center = pts[j]
            band = rng.integers(0, 4)
            value = int([rng.uniform(150, 190), rng.uniform(215, 285), rng.uniform(315, 385), rng.uniform(420, 900)][band])
            big = 1.6 if c in (5, 6, 7) else 1.0
            radii = tuple(float(v) for v in rng.uniform(1.3, 3.0, 3) * big)
            ci = np.array([(center[2] - origin[2]) / dz, (center[1] - origin[1]) / dy, (center[0] - origin[0]) / dx])
            rad_i = np.array([radii[2] / dz, radii[1] / dy, radii[0] / dx])
            lo = np.floor(ci - rad_i).astype(int)
            hi = np.ceil(ci + rad_i).astype(int) + 1
            lo = np.maximum(lo, 0)
            hi = np.minimum(hi, shape)
            if np.any(hi - lo <= 0):
                continue
            if plaque_shape == "box":
                lo = np.round(ci - rad_i).astype(int)
                hi = np.maximum(lo + 1, np.round(ci + rad_i).astype(int))
                lo, hi = np.maximum(lo, 0), np.minimum(hi, shape)
                region = labels[lo[0] - 1 if lo[0] else 0:hi[0] + 1, max(lo[1] - 2, 0):hi[1] + 2, max(lo[2] - 2, 0):hi[2] + 2]
                if region.any():  # keep boxes apart so that every box is its own lesion
                    continue
                labels[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = c
                hu[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = value
                plaques.append(Plaque(c, tuple(center), radii, value, "box",
                                      (int(lo[0]), int(hi[0]), int(lo[1]), int(hi[1]), int(lo[2]), int(hi[2]))))
                continue
            zi, yi, xi = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
            d = ((zi - ci[0]) / rad_i[0]) ** 2 + ((yi - ci[1]) / rad_i[1]) ** 2 + ((xi - ci[2]) / rad_i[2]) ** 2
            inside = d <= 1
            if not inside.any():
                continue
            sub = hu[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
            prof = (value - 40) * np.exp(-1.2 * d) + 40 + rng.normal(0, noise_hu, d.shape)
            sub[inside] = np.maximum(sub[inside], np.rint(prof[inside])).astype(np.int16)
            lab = labels[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
            lab[inside & (sub >= 130)] = c
            plaques.append(Plaque(c, tuple(center), radii, value, "ellipsoid"))
    return Phantom(hu=hu, labels=labels, spacing=(dz, dy, dx), origin_xyz=origin, plaques=plaques)
