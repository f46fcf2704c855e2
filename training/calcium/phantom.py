"""Synthetic non-contrast chest-CT phantoms with calcified plaques of known COCA class (numpy only).

Anatomy (patient coordinates, mm; x -> patient left, y -> posterior, z -> head): elliptic body
with a fat layer, two lungs (-850 HU), heart (40 HU) in epicardial fat, coronary tubes on the heart
surface (LM, LAD, LCX, RCA, PDA), ascending and descending aorta, aortic and mitral valve rings,
spine (cortical >= 600 HU) and rib bands / sternum (>= 400 HU) as high-density distractors.
Plaques are ellipsoids (training) or axis-aligned boxes of constant HU (tests: their Agatston
score is computed by hand with :func:`hand_agatston`).  Labels are the plaque voxels, by class,
like the COCA segmentations.  ``region`` marks the heart with its pericardial fat (where the
coronaries run) and the aorta: the anatomical region the model learns as an extra output, outside
which no calcium counts.

:class:`Variation` (drawn per seed by :func:`draw_variation`) widens the family for training: body
habitus and field of view, matrix 256-512, slices 0.5-3 mm, reconstruction kernels (blur/sharpen),
noise, a tilted heart with jittered coronary courses, rib slope and density, spine and sternum of
400-1000 HU, calcified costal cartilage, a patient table, and devices (coronary stents, surgical
clips, sternal wires, pacing leads).  Bone, table and devices are labelled background.  Bone is put
right next to the region on purpose (heart against the sternum, descending aorta against the vertebra,
ribs inside a muscular chest wall against the lungs): the region has to be learned from anatomy, not
from distance to bone.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

__all__ = ["Plaque", "Phantom", "Variation", "draw_variation", "make_phantom", "hand_agatston", "weight_of",
           "GENERATOR", "GENERATOR_VERSION"]

GENERATOR = "training.calcium.phantom"
#: 2.0.0: Variation (habitus, FOV, matrix, 0.5-3 mm slices, kernels, tilted heart, costal cartilage, table,
#: devices) and the heart/aorta region mask.  2.0.1: a plaque label grown by the kernel step no longer
#: reaches an adjacent stent voxel (labels only; images unchanged).  2.1.0: bone right next to the region
#: (descending aorta against the vertebral body, heart against the sternum and costal cartilage); the region
#: covers the whole aortic wall plaque (6 mm more around both aortas) and never a bone voxel; a muscular chest
#: wall between fat and lungs (60 %) with the ribs inside it against the lungs (65 %), as in patients (before:
#: ribs only in the subcutaneous fat, so a model never saw bone next to lung and soft tissue outside the heart).
#: 2.2.0: mediastinal fat around the ascending and descending aorta (85 % of widened phantoms, 2-10 mm of
#: -130...-60 HU), so the great vessels' 40 HU blood and wall stand out as in patients (before: 40 HU discs in a
#: 40 HU mediastinum above the heart, a region label without an image cue).  Plain anatomy unchanged.
GENERATOR_VERSION = "2.2.0"


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
    region: np.ndarray | None = None  # (z, y, x) bool: heart + pericardial fat + aorta
    devices: np.ndarray | None = None  # (z, y, x) bool: stents, clips, wires, leads (widened phantoms)

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


@dataclasses.dataclass(frozen=True)
class Variation:
    """Per-phantom widening of the training family (see the module docstring); bone and devices are background."""

    body_scale: tuple[float, float] = (1.0, 1.0)  # x, y scale of the trunk
    fat_mm: float = 12.0
    heart_rot_deg: float = 0.0  # in-plane rotation of the heart about its centre
    path_jitter: tuple[float, ...] = (0.0,) * 8  # phi / z offsets of the coronary courses
    kernel_px: float = 0.0  # Gaussian blur (pixels) of the reconstruction kernel
    sharpen: float = 0.0  # unsharp-mask gain (edge-enhancing kernels)
    noise_corr_px: float = 0.0  # spatial correlation of the noise
    bone_hu: tuple[float, float, float] = (650.0, 700.0, 520.0)  # spine cortex, ribs, sternum
    rib_period: float = 25.0
    rib_height: float = 9.0
    rib_slope: float = 0.0  # mm of z per mm of x towards the front: ribs run obliquely
    costal_hu: float | None = None  # calcified costal cartilage
    table: bool = False
    stent: int | None = None  # class of the artery holding a stent
    clips: int = 0
    sternal_wires: bool = False
    lead: bool = False
    plaque_max_hu: float = 900.0
    desc_aorta_mm: tuple[float, float] = (33.0, -27.0)  # descending aorta centre relative to the spine (x, y)
    heart_ant: float = 0.2  # heart centre at this share of the trunk's half depth in front of the centre
    chest_wall_mm: float = 0.0  # muscle between the subcutaneous fat and the lungs (0: lungs reach the fat)
    ribs_on_lung: bool = False  # ribs in the chest wall against the lungs (else in the subcutaneous layer)
    rib_thick_mm: float = 8.0  # in-plane thickness of a rib (ribs_on_lung)
    periaortic_fat_mm: float = 0.0  # mediastinal fat around both aortas (0: none, the vessels blend in)
    periaortic_fat_hu: float = -100.0


def draw_variation(rng: np.random.Generator) -> Variation:
    """A random :class:`Variation` (training family, generator version 2)."""
    u = rng.uniform
    return Variation(
        body_scale=(float(u(0.8, 1.25)), float(u(0.8, 1.25))), fat_mm=float(u(5, 30)),
        heart_rot_deg=float(u(-30, 30)), path_jitter=tuple(float(v) for v in rng.normal(0, 1, 8)),
        kernel_px=float(u(0.0, 1.2)), sharpen=float(u(0.0, 0.7)) if rng.random() < 0.35 else 0.0,
        noise_corr_px=float(u(0.0, 1.0)),
        bone_hu=(float(u(400, 1000)), float(u(400, 1000)), float(u(400, 1000))),
        rib_period=float(u(20, 32)), rib_height=float(u(5, 11)), rib_slope=float(u(0.0, 0.4)),
        costal_hu=float(u(250, 750)) if rng.random() < 0.45 else None, table=bool(rng.random() < 0.7),
        stent=int(rng.choice([2, 3, 4, 8])) if rng.random() < 0.25 else None,
        clips=int(rng.integers(1, 5)) if rng.random() < 0.2 else 0, sternal_wires=bool(rng.random() < 0.15),
        lead=bool(rng.random() < 0.2), plaque_max_hu=float(u(900, 1300)),
        desc_aorta_mm=_polar(float(u(36, 48)), float(u(15, 60))), heart_ant=float(u(0.12, 0.45)),
        chest_wall_mm=float(u(4, 22)) if rng.random() < 0.6 else 0.0, ribs_on_lung=bool(rng.random() < 0.65),
        rib_thick_mm=float(u(6, 12)),
        periaortic_fat_mm=float(u(2, 10)) if rng.random() < 0.85 else 0.0, periaortic_fat_hu=float(u(-130, -60)),
    )


def _polar(dist: float, angle_deg: float) -> tuple[float, float]:
    """(x, y) at ``dist`` mm, ``angle_deg`` from the patient's left towards anterior."""
    a = np.deg2rad(angle_deg)
    return float(dist * np.cos(a)), float(-dist * np.sin(a))


def _surface(h, r, phi_deg, zrel, out_mm=3.0, rot_deg=0.0):
    phi = np.deg2rad(phi_deg)
    s = np.sqrt(max(0.0, 1 - zrel ** 2))
    d = np.array([np.cos(phi) * s, np.sin(phi) * s, zrel])
    p = r * d
    n = d / r
    n = n / np.linalg.norm(n)
    q = p + out_mm * n
    if rot_deg:
        c, si = np.cos(np.deg2rad(rot_deg)), np.sin(np.deg2rad(rot_deg))
        q = np.array([c * q[0] - si * q[1], si * q[0] + c * q[1], q[2]])
    return h + q


def _paths(h: np.ndarray, r: np.ndarray, root: np.ndarray, rot_deg: float = 0.0,
           jitter: tuple[float, ...] = (0.0,) * 8) -> dict[int, np.ndarray]:
    """Centre lines (k, 3) per coronary class, on the heart surface (``jitter``: standard-normal offsets)."""
    t = np.linspace(0, 1, 24)
    j = [10 * v for v in jitter[:4]] + [0.06 * v for v in jitter[4:]]
    lad = np.array([_surface(h, r, -60 + j[0] + 30 * u, 0.55 + j[4] - 1.35 * u, rot_deg=rot_deg) for u in t])
    lcx = np.array([_surface(h, r, -20 + j[1] + 95 * u, 0.45 + j[5] - 0.15 * u, rot_deg=rot_deg) for u in t])
    rca = np.array([_surface(h, r, 235 + j[2] - 100 * u, 0.45 + j[6] - 0.9 * u, rot_deg=rot_deg) for u in t])
    pda = np.array([_surface(h, r, 115 + j[3] - 45 * u, -0.5 + j[7] - 0.35 * u, rot_deg=rot_deg) for u in t])
    lm_start = root + np.array([12.0, 0.0, -2.0])
    lm = np.array([lm_start + u * (lad[0] - lm_start) for u in t])
    return {1: pda, 2: lm, 3: lad, 4: lcx, 8: rca}


def _wire(hu: np.ndarray, path: np.ndarray, origin, spacing, radius: float, value: float) -> np.ndarray:
    """Burn a dense wire (swept sphere, patient mm) into ``hu``; returns its voxel mask."""
    dz, dy, dx = spacing
    mask = np.zeros(hu.shape, bool)
    for a, b in zip(path[:-1], path[1:]):
        for t in np.linspace(0, 1, max(2, int(np.linalg.norm(b - a) / 0.5))):
            p = a + (b - a) * t
            ci = np.array([(p[2] - origin[2]) / dz, (p[1] - origin[1]) / dy, (p[0] - origin[0]) / dx])
            rad = np.array([radius / dz, radius / dy, radius / dx])
            lo = np.maximum(np.floor(ci - rad).astype(int), 0)
            hi = np.minimum(np.ceil(ci + rad).astype(int) + 1, hu.shape)
            if np.any(hi <= lo):
                continue
            zi, yi, xi = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
            m = (((zi - ci[0]) / max(rad[0], 0.5)) ** 2 + ((yi - ci[1]) / rad[1]) ** 2
                 + ((xi - ci[2]) / rad[2]) ** 2 <= 1)
            mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] |= m
    hu[mask] = value
    return mask


def make_phantom(
    seed: int,
    *,
    shape: tuple[int, int, int] = (64, 256, 256),
    spacing: tuple[float, float, float] = (3.0, 1.4, 1.4),
    plaque_shape: str = "ellipsoid",
    noise_hu: float = 12.0,
    p_class: float = 0.6,
    classes: Sequence[int] | None = None,
    variation: Variation | None = None,
) -> Phantom:
    """One phantom; ``classes`` forces which classes get plaques (default: random, each with ``p_class``).
    ``variation`` None gives the original (version 1) anatomy, bit for bit."""
    rng = np.random.default_rng(seed)
    v = variation
    nz, ny, nx = shape
    dz, dy, dx = spacing
    origin = (-(nx - 1) * dx / 2, -(ny - 1) * dy / 2, 0.0)
    xs = origin[0] + np.arange(nx) * dx
    ys = origin[1] + np.arange(ny) * dy
    zs = origin[2] + np.arange(nz) * dz
    X, Y = np.meshgrid(xs, ys)
    zc = zs[nz // 2] + rng.uniform(-0.1, 0.1) * nz * dz
    r = np.array([rng.uniform(45, 58), rng.uniform(40, 50),
                  rng.uniform(min(45.0, nz * dz * 0.3), min(55.0, nz * dz * 0.38))])
    h = np.array([rng.uniform(8, 22), rng.uniform(-30, -18), zc])
    body = np.array([rng.uniform(140, 170), rng.uniform(100, 120)])
    if v is not None:
        r[2] = rng.uniform(42, 58)  # a real heart's height, whatever the coverage
        body = body * np.array(v.body_scale)
        half_fov = np.array([(nx - 1) * dx / 2, (ny - 1) * dy / 2])
        body = np.minimum(body, half_fov - np.array([4.0, 24.0 if v.table else 4.0]))
        body = np.maximum(body, r[:2] + np.array([55.0, 45.0]))
        # anterior heart up to its pericardial fat against the sternum (bone right next to the region)
        h[1] = -max(min(body[1] * v.heart_ant, body[1] - max(24.0, v.fat_mm + 10.0) - r[1] - 8.0), body[1] * 0.1)
    fat_mm = 12.0 if v is None else v.fat_mm
    rot = 0.0 if v is None else v.heart_rot_deg
    root = h + np.array([-0.15 * r[0], -0.1 * r[1], 0.72 * r[2]])
    asc_xy = root[:2] + np.array([-4.0, 0.0])
    desc_xy = np.array([rng.uniform(32, 40), rng.uniform(36, 44)])
    spine_xy = np.array([0.0, body[1] * 0.62])
    if v is not None:
        desc_xy = spine_xy + np.array(v.desc_aorta_mm)  # up to against the vertebral body
    mv = h + np.array([0.3 * r[0], 0.15 * r[1], 0.35 * r[2]])
    rib_phase = rng.uniform(0, 25)
    spine_hu, rib_hu, sternum_hu = (650.0, 700.0, 520.0) if v is None else v.bone_hu
    cos_r, sin_r = np.cos(np.deg2rad(-rot)), np.sin(np.deg2rad(-rot))
    Xh, Yh = cos_r * (X - h[0]) - sin_r * (Y - h[1]), sin_r * (X - h[0]) + cos_r * (Y - h[1])  # heart frame

    lung_ax = np.array([body[0] * 0.38, body[1] * 0.7])
    if v is not None and v.chest_wall_mm:  # a muscular chest wall between the fat and the lungs
        lung_ax = np.maximum(np.minimum(lung_ax, [body[0] * 0.55 - fat_mm - v.chest_wall_mm,
                                                  body[1] - 5 - fat_mm - v.chest_wall_mm]), lung_ax * 0.6)
    lung_axes = [tuple(lung_ax)] * 2
    hu = np.empty(shape, dtype=np.int16)
    region = np.zeros(shape, dtype=bool)
    for k, z in enumerate(zs):
        sl = np.full((ny, nx), -1000.0, dtype=np.float32)
        if v is not None and v.table:
            ty = body[1] + 6
            sl[(Y > ty) & (Y < ty + 10) & (np.abs(X) < body[0] + 40)] = -150
            sl[(Y > ty + 10) & (Y < ty + 15) & (np.abs(np.abs(X) - body[0] * 0.8) < 7)] = 600
        e = (X / body[0]) ** 2 + (Y / body[1]) ** 2
        sl[e <= 1] = -100  # subcutaneous fat
        e_in = (X / (body[0] - fat_mm)) ** 2 + (Y / (body[1] - fat_mm)) ** 2
        sl[e_in <= 1] = 40  # muscle / mediastinum
        for side, (lx, ly) in zip((-1, 1), lung_axes):
            lung = ((X - side * body[0] * 0.45) / lx) ** 2 + ((Y - 5) / ly) ** 2
            sl[lung <= 1] = -850
        zrel = (z - h[2]) / r[2]
        cardiac = None
        if abs(zrel) < 1:
            s = np.sqrt(1 - zrel ** 2)
            fat = (Xh / (r[0] * s + 5)) ** 2 + (Yh / (r[1] * s + 5)) ** 2
            cardiac = fat <= 1
            sl[fat <= 1] = -80
            heart = (Xh / (r[0] * s)) ** 2 + (Yh / (r[1] * s)) ** 2
            sl[heart <= 1] = 40
            region[k] |= fat <= 1
        zrel_r = (z - h[2]) / (r[2] + 5)
        if abs(zrel_r) < 1:
            s = np.sqrt(1 - zrel_r ** 2)
            region[k] |= (Xh / (r[0] * s + 6)) ** 2 + (Yh / (r[1] * s + 6)) ** 2 <= 1
        if v is not None and v.periaortic_fat_mm:  # mediastinal fat outlines the great vessels (not the heart)
            med = sl == 40
            if cardiac is not None:
                med &= ~cardiac
            f = v.periaortic_fat_mm
            if z >= root[2] - 5:
                med_a = med & ((X - asc_xy[0]) ** 2 + (Y - asc_xy[1]) ** 2 <= (14 + f) ** 2)
                sl[med_a] = v.periaortic_fat_hu
            sl[med & ((X - desc_xy[0]) ** 2 + (Y - desc_xy[1]) ** 2 <= (12 + f) ** 2)] = v.periaortic_fat_hu
        if z >= root[2] - 5:
            sl[(X - asc_xy[0]) ** 2 + (Y - asc_xy[1]) ** 2 <= 14 ** 2] = 40
            region[k] |= (X - asc_xy[0]) ** 2 + (Y - asc_xy[1]) ** 2 <= 20 ** 2  # wall plaques reach 18 mm
        sl[(X - desc_xy[0]) ** 2 + (Y - desc_xy[1]) ** 2 <= 12 ** 2] = 40
        region[k] |= (X - desc_xy[0]) ** 2 + (Y - desc_xy[1]) ** 2 <= 18 ** 2  # wall plaques reach 16 mm
        before = sl.copy()
        d_sp = (X - spine_xy[0]) ** 2 + (Y - spine_xy[1]) ** 2
        sl[d_sp <= 19 ** 2] = spine_hu  # cortical bone
        sl[d_sp <= 15 ** 2] = 250  # cancellous
        sl[(X - spine_xy[0]) ** 2 + (Y - spine_xy[1] - 26) ** 2 <= 7 ** 2] = 20  # canal
        if v is None:
            if ((z + rib_phase) % 25.0) < 9.0:  # rib band
                ring = (e_in > 1) & ((X / (body[0] - 4)) ** 2 + (Y / (body[1] - 4)) ** 2 <= 1) & (Y < body[1] * 0.5)
                sl[ring] = rib_hu
        else:
            for side in (-1, 1):  # posterior elements
                sl[(X - spine_xy[0] - side * 17) ** 2 + (Y - spine_xy[1] - 20) ** 2 <= 6 ** 2] = spine_hu * 0.85
            shell = ((X / (body[0] - fat_mm + 1)) ** 2 + (Y / (body[1] - fat_mm + 1)) ** 2 > 1) & \
                ((X / (body[0] - fat_mm + 10)) ** 2 + (Y / (body[1] - fat_mm + 10)) ** 2 <= 1)
            if v.ribs_on_lung:  # around the outer side of each lung, inside the chest wall
                shell = np.zeros_like(shell)
                for side in (-1, 1):
                    cx, (lx, ly) = side * body[0] * 0.45, lung_ax
                    e1 = ((X - cx) / (lx + 1)) ** 2 + ((Y - 5) / (ly + 1)) ** 2
                    e2 = ((X - cx) / (lx + 1 + v.rib_thick_mm)) ** 2 + ((Y - 5) / (ly + 1 + v.rib_thick_mm)) ** 2
                    shell |= (e1 > 1) & (e2 <= 1) & ((X - cx) * side > -0.3 * lx)
            zr = (z + rib_phase + v.rib_slope * (body[1] - Y)) % v.rib_period
            rib = shell & (zr < v.rib_height) & (Y < body[1] * 0.55)
            sl[rib] = rib_hu
            sl[rib & (zr > 1.5) & (zr < v.rib_height - 1.5)] = rib_hu * 0.4
            if v.costal_hu is not None:
                cc = shell & (zr < v.rib_height) & (Y < -body[1] * 0.55) & (np.abs(X) > 16)
                sl[cc] = v.costal_hu
        sl[(np.abs(X) < 14) & (np.abs(Y + body[1] - 18) < 6)] = sternum_hu  # sternum
        region[k] &= sl == before  # bone drawn over the region is never region
        if v is None:
            hu[k] = np.clip(np.rint(sl + rng.normal(0, noise_hu, sl.shape)), -1024, 3000)
        else:
            hu[k] = np.clip(np.rint(sl), -1024, 3000)  # kernel and noise after plaques and devices

    labels = np.zeros(shape, dtype=np.uint8)
    paths = _paths(h, r, root) if v is None else _paths(h, r, root, rot, v.path_jitter)
    if v is not None and rot:  # valves follow the heart
        c, si = np.cos(np.deg2rad(rot)), np.sin(np.deg2rad(rot))
        d = mv - h
        mv = h + np.array([c * d[0] - si * d[1], si * d[0] + c * d[1], d[2]])
    plaques: list[Plaque] = []
    wanted = list(classes) if classes is not None else [c for c in range(1, 9) if rng.random() < p_class]
    top_hu = 900.0 if v is None else v.plaque_max_hu

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
        return np.array(pts) if pts else np.zeros((0, 3))

    for c in wanted:
        pts = candidates(c)
        if len(pts) == 0:
            continue
        n = int(rng.integers(1, 4 if c != 6 else 6))
        for j in rng.choice(len(pts), size=min(n, len(pts)), replace=False):
            center = pts[j]
            band = rng.integers(0, 4)
            value = int([rng.uniform(150, 190), rng.uniform(215, 285), rng.uniform(315, 385),
                         rng.uniform(420, top_hu)][band])
            big = 1.6 if c in (5, 6, 7) else 1.0
            radii = tuple(float(v) for v in rng.uniform(1.3, 3.0, 3) * big)
            if v is not None:
                radii = tuple(float(x) for x in rng.uniform(0.8, 3.0, 3) * big)
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
                region_ = labels[lo[0] - 1 if lo[0] else 0:hi[0] + 1,
                                 max(lo[1] - 2, 0):hi[1] + 2, max(lo[2] - 2, 0):hi[2] + 2]
                if region_.any():  # keep boxes apart so that every box is its own lesion
                    continue
                labels[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = c
                hu[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = value
                plaques.append(Plaque(c, tuple(center), radii, value, "box",
                                      (int(lo[0]), int(hi[0]), int(lo[1]), int(hi[1]), int(lo[2]), int(hi[2]))))
                continue
            zi, yi, xi = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
            # at least the nearest slice sees the plaque (thin plaques on thick slices)
            rz = max(rad_i[0], 0.5) if v is not None else rad_i[0]
            d = ((zi - ci[0]) / rz) ** 2 + ((yi - ci[1]) / rad_i[1]) ** 2 + ((xi - ci[2]) / rad_i[2]) ** 2
            inside = d <= 1
            if not inside.any():
                continue
            sub = hu[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
            prof = (value - 40) * np.exp(-1.2 * d) + 40 + (rng.normal(0, noise_hu, d.shape) if v is None else 0.0)
            sub[inside] = np.maximum(sub[inside], np.rint(prof[inside])).astype(np.int16)
            lab = labels[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
            lab[inside & (sub >= 130)] = c
            plaques.append(Plaque(c, tuple(center), radii, value, "ellipsoid"))
    devices = None
    if v is not None:
        devices = _devices(hu, labels, v, rng, paths, h, r, body, origin, (dz, dy, dx), zs)
        _kernel_and_noise(hu, labels, v, noise_hu, rng)
        labels[devices] = 0  # the one-pixel label growth of the kernel step must not reach metal
    return Phantom(hu=hu, labels=labels, spacing=(dz, dy, dx), origin_xyz=origin, plaques=plaques, region=region,
                   devices=devices)


def _devices(hu, labels, v: Variation, rng, paths, h, r, body, origin, spacing, zs) -> np.ndarray:
    """Stents, clips, sternal wires and a pacing lead: dense metal, labelled background; returns their mask."""
    every = np.zeros(hu.shape, bool)
    metal = lambda: float(rng.uniform(1500, 3000))  # noqa: E731
    if v.stent is not None and v.stent in paths:
        p = paths[v.stent]
        i = int(rng.integers(0, max(1, len(p) - 6)))
        seg = p[i:i + int(rng.integers(3, 7))]
        if len(seg) >= 2:
            m = _wire(hu, seg, origin, spacing, float(rng.uniform(1.2, 2.0)), metal())
            labels[m] = 0
            every |= m
    for _ in range(v.clips):
        c = h + np.array([rng.uniform(-1.2, 1.2) * r[0], rng.uniform(-1.3, 0.5) * r[1], rng.uniform(-0.8, 1.2) * r[2]])
        d = rng.normal(0, 1, 3)
        d = d / np.linalg.norm(d) * rng.uniform(2.5, 4.0)
        m = _wire(hu, np.array([c - d, c + d]), origin, spacing, 0.8, metal())
        labels[m] = 0
        every |= m
    if v.sternal_wires:
        for zc in np.linspace(zs[0], zs[-1], 5)[1:-1] + rng.uniform(-10, 10):
            ang = np.linspace(0, 2 * np.pi, 24)
            loop = np.stack([17 * np.cos(ang), -body[1] + 18 + 8 * np.sin(ang), np.full_like(ang, zc)], 1)
            m = _wire(hu, loop, origin, spacing, 0.7, metal())
            labels[m] = 0
            every |= m
    if v.lead:
        top = zs[-1] + 10
        ra = h + np.array([-0.7 * r[0], -0.1 * r[1], 0.2 * r[2]])
        apex = h + np.array([0.5 * r[0], -0.6 * r[1], -0.7 * r[2]])
        path = np.array([[-60.0, -20.0, top], [-25.0, -10.0, h[2] + r[2] + 20], ra,
                         h + np.array([0, -0.3 * r[1], 0]), apex])
        m = _wire(hu, path, origin, spacing, 1.0, metal())
        labels[m] = 0
        every |= m
    return every


def _kernel_and_noise(hu, labels, v: Variation, noise_hu: float, rng) -> None:
    """Reconstruction kernel (in-plane blur, optional sharpening) and correlated noise, slice by slice;
    labels grow by one pixel where blurred calcium spreads and keep only voxels >= 130 HU."""
    from scipy import ndimage

    for k in range(hu.shape[0]):
        img = hu[k].astype(np.float32)
        if v.kernel_px > 0.05:
            img = ndimage.gaussian_filter(img, v.kernel_px)
        if v.sharpen:
            img = img + v.sharpen * (img - ndimage.gaussian_filter(img, max(1.0, 1.5 * v.kernel_px)))
        noise = rng.normal(0, 1, img.shape).astype(np.float32)
        if v.noise_corr_px > 0.05:
            noise = ndimage.gaussian_filter(noise, v.noise_corr_px)
            noise /= max(float(noise.std()), 1e-6)
        hu[k] = np.clip(np.rint(img + noise_hu * noise), -1024, 3000)
        lab = labels[k]
        if lab.any():
            grown = ndimage.grey_dilation(lab, size=(3, 3))
            lab = np.where(lab > 0, lab, grown)
            lab[hu[k] < 130] = 0
            labels[k] = lab
