"""Evaluation-only non-contrast chest CT studies with known coronary calcium (numpy + pydicom).

Written from scratch for evaluation; it shares no geometry, intensity or DICOM-writing code with
``training/`` (nothing here is ever used for training).  Anatomy model, in patient LPS millimetres
(x -> patient left, y -> posterior, z -> head), slice by slice:

* trunk: a super-ellipse ``|x/a|^p + |y/b|^p <= 1`` (habitus: a 125-205 mm, b 85-140 mm, p 2-2.8)
  with a subcutaneous fat layer of 6-40 mm, a muscle wall and two lungs filling the thoracic cavity;
* a patient table below the back (carbon-fibre slab and two dense rails);
* skeleton: vertebral bodies with cortical rims of 400-1000 HU, discs, posterior elements; ribs as
  sloped bands around the thoracic wall (cortex 400-1000 HU), a sternum, and in some studies
  calcified costal cartilage (250-700 HU);
* heart: a tilted ellipsoid (long axis to the left, anterior and down) in a pericardial fat shell,
  aorta (root, ascending, arch, descending) and pulmonary trunk as soft-tissue tubes;
* coronary arteries on the heart surface along their grooves: LM from the aortic root, LAD in the
  anterior interventricular groove, LCX in the left atrioventricular groove, RCA in the right
  atrioventricular groove to the crux, PDA in the posterior interventricular groove;
* calcified plaques: ellipsoids on those courses with analytic partial volume through the slice
  (valve and aortic calcium in some studies too); blurred by a reconstruction kernel, plus
  spatially correlated noise of 8-25 HU.

Acquisition: 256 or 512 matrix, field of view 280-440 mm, slices 0.5-3 mm (contiguous), 120-300 mm
coverage capped at 300 slices.  Ground truth: voxels >= 130 HU within one pixel of a plaque's
footprint carry its class; the Agatston scores are computed from that label map with the
repository's :func:`pipelines.calcium.agatston.agatston`.  ``bone`` marks the skeleton (for the
"no bone in the SEG" check).  Phantom figures only, never clinical accuracy.
"""
from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage

from pipelines.calcium.agatston import AgatstonResult, agatston

__all__ = ["Plaque", "CtStudy", "generate", "write_dicom", "agreement_cases", "CORONARY", "GENERATOR",
           "GENERATOR_VERSION"]

GENERATOR = "bench.phantoms.ct"
GENERATOR_VERSION = "1.0.0"
CORONARY = (1, 2, 3, 4, 8)  # PDA, LM, LAD, LCX, RCA (pipelines.calcium.labels)
_SLICE_CHOICES = (0.5, 0.625, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)


@dataclasses.dataclass(frozen=True)
class Plaque:
    """An axis-aligned calcified ellipsoid (patient mm), peak HU at its centre."""

    label: int
    centre: tuple[float, float, float]
    radii: tuple[float, float, float]
    peak_hu: float


@dataclasses.dataclass
class CtStudy:
    """One generated study: HU volume (z, y, x), truth labels, bone mask and its true Agatston scores."""

    seed: int
    hu: np.ndarray  # int16
    truth: np.ndarray  # uint8, 0..8
    bone: np.ndarray  # bool
    spacing: tuple[float, float, float]  # (z, y, x) mm
    origin_xyz: tuple[float, float, float]
    plaques: list[Plaque]
    calcium_free: bool
    acquisition: dict
    score: AgatstonResult

    @property
    def coronary(self) -> float:
        return float(sum(self.score.per_class[c].score for c in CORONARY))

    def z_positions(self) -> np.ndarray:
        return self.origin_xyz[2] + np.arange(self.hu.shape[0]) * self.spacing[0]


def _rotation(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """Columns: the heart's long axis (base -> apex) and two short axes, in patient coordinates."""
    yaw, pitch = np.deg2rad(yaw_deg), np.deg2rad(pitch_deg)
    # long axis points to the patient's left (+x), anterior (-y) and down (-z)
    long = np.array([np.cos(pitch) * np.cos(yaw), -np.cos(pitch) * np.sin(yaw), -np.sin(pitch)])
    up = np.array([0.0, 0.0, 1.0])
    s1 = np.cross(long, up)
    s1 /= np.linalg.norm(s1)
    s2 = np.cross(long, s1)
    return np.stack([long, s1, s2], axis=1)


class _Heart:
    """Tilted ellipsoid; surface points by (u along the long axis in [-1, 1], phi around it)."""

    def __init__(self, centre: np.ndarray, axes: np.ndarray, rot: np.ndarray) -> None:
        self.c, self.axes, self.rot = centre, axes, rot

    def surface(self, u: float, phi_deg: float, out_mm: float) -> np.ndarray:
        phi = np.deg2rad(phi_deg)
        s = np.sqrt(max(0.0, 1.0 - u * u))
        local = np.array([self.axes[0] * u, self.axes[1] * s * np.cos(phi), self.axes[2] * s * np.sin(phi)])
        normal = local / self.axes ** 2
        normal /= np.linalg.norm(normal)
        return self.c + self.rot @ (local + out_mm * normal)

    def anterior_phi(self) -> float:
        """phi whose surface normal points most anteriorly (-y)."""
        phis = np.arange(0, 360, 2.0)
        ys = [self.surface(0.0, p, 0.0)[1] for p in phis]
        return float(phis[int(np.argmin(ys))])

    def inside(self, X: np.ndarray, Y: np.ndarray, z: float, grow: float = 0.0) -> np.ndarray:
        d = np.stack([X - self.c[0], Y - self.c[1], np.full_like(X, z - self.c[2])], axis=-1) @ self.rot
        a = self.axes + grow
        return (d[..., 0] / a[0]) ** 2 + (d[..., 1] / a[1]) ** 2 + (d[..., 2] / a[2]) ** 2 <= 1.0


def _polyline(points: Sequence[np.ndarray], step: float = 1.0) -> np.ndarray:
    """Resample a polyline to about ``step`` mm."""
    out = [points[0]]
    for a, b in zip(points[:-1], points[1:]):
        n = max(1, int(np.ceil(np.linalg.norm(b - a) / step)))
        out += [a + (b - a) * t for t in np.linspace(0, 1, n + 1)[1:]]
    return np.array(out)


def _tube(sl: np.ndarray, X: np.ndarray, Y: np.ndarray, z: float, path: np.ndarray, radius: float,
          value: float) -> None:
    """Paint a swept sphere (radius mm) along ``path`` into slice ``sl`` at height z."""
    near = path[np.abs(path[:, 2] - z) < radius]
    for p in near:
        r2 = radius ** 2 - (p[2] - z) ** 2
        sl[(X - p[0]) ** 2 + (Y - p[1]) ** 2 <= r2] = value


def _tube_mask(X: np.ndarray, Y: np.ndarray, z: float, path: np.ndarray, radius: float) -> np.ndarray:
    m = np.zeros(X.shape, bool)
    for p in path[np.abs(path[:, 2] - z) < radius]:
        m |= (X - p[0]) ** 2 + (Y - p[1]) ** 2 <= radius ** 2 - (p[2] - z) ** 2
    return m


def generate(seed: int, *, calcium_free: bool | None = None, matrix: int | None = None,
             slice_mm: float | None = None, noise_hu: float | None = None, n_slices: int | None = None,
             fov_mm: float | None = None, bone_hu: tuple[float, float] | None = None) -> CtStudy:
    """One study; every unset parameter is drawn from ``seed``.  ``calcium_free``: no coronary plaque
    (aortic/valve calcium may still be present); default: calcium-free with probability 0.5."""
    rng = np.random.default_rng([seed, 0xC7])
    free = bool(rng.random() < 0.5) if calcium_free is None else bool(calcium_free)
    n = int(matrix or rng.choice([256, 512]))
    fov = float(fov_mm or rng.uniform(280, 440))
    px = fov / n
    dz = float(slice_mm or rng.choice(_SLICE_CHOICES))
    coverage = float(rng.uniform(120, 300))
    nz = int(n_slices or min(300, max(24, int(round(coverage / dz)))))
    sigma = float(noise_hu if noise_hu is not None else rng.uniform(8, 25))
    kernel = float(rng.uniform(0.35, 1.1))  # reconstruction blur (pixels at 0.7 mm equivalent)
    sharpen = float(rng.uniform(0.0, 0.6)) if rng.random() < 0.35 else 0.0  # edge-enhancing kernels
    cort_lo, cort_hi = bone_hu or (400.0, 1000.0)

    # --- anatomy parameters (mm) ---
    a, b, p_exp = rng.uniform(125, 205), rng.uniform(85, 140), rng.uniform(2.0, 2.8)
    a, b = min(a, fov / 2 - 6), min(b, fov / 2 - 30)
    fat = rng.uniform(6, 40) * (a / 165)
    trunk_y = rng.uniform(-12, 12)
    heart_axes = np.array([rng.uniform(52, 70), rng.uniform(38, 50), rng.uniform(36, 48)])
    heart_c = np.array([rng.uniform(8, 30), trunk_y - b * rng.uniform(0.12, 0.32), 0.0])
    rot = _rotation(rng.uniform(30, 60), rng.uniform(15, 40))
    # z layout: the heart somewhere in the coverage, base not above the top slice
    z0 = 0.0
    z_top = z0 + (nz - 1) * dz
    span = z_top - z0
    heart_c[2] = z0 + span * rng.uniform(0.35, 0.6) if span > 160 else z0 + span * 0.5
    heart = _Heart(heart_c, heart_axes, rot)
    spine_c = np.array([rng.uniform(-4, 4), trunk_y + b - rng.uniform(32, 48)])
    spine_r = rng.uniform(14, 21)
    cort = rng.uniform(cort_lo, cort_hi)
    rib_cort = rng.uniform(cort_lo, cort_hi)
    stern_cort = rng.uniform(cort_lo, cort_hi)
    costal = rng.random() < 0.5
    costal_hu = rng.uniform(250, 700)
    disc_period, disc_phase = rng.uniform(24, 32), rng.uniform(0, 30)
    rib_period, rib_phase, rib_h = rng.uniform(22, 30), rng.uniform(0, 30), rng.uniform(4, 7)
    rib_slope = rng.uniform(0.12, 0.35)  # mm down per mm of arc towards the front
    table_gap, table_hu = rng.uniform(4, 25), rng.uniform(-350, 50)
    rail_hu = rng.uniform(300, 900)
    soft, blood = rng.uniform(30, 55), rng.uniform(30, 50)
    lung_hu, fat_hu = rng.uniform(-900, -780), rng.uniform(-115, -80)
    peri_mm, marrow_hu, rail_x = rng.uniform(3, 9), rng.uniform(150, 280), rng.uniform(120, 160)

    # vessels: aortic root at the heart base, ascending up, arch, descending left of the spine
    base = heart.surface(-0.9, heart.anterior_phi() + 180, 0.0)
    root = base + np.array([-rng.uniform(8, 16), -rng.uniform(0, 8), rng.uniform(6, 12)])
    ao_r = rng.uniform(12, 17)
    desc_xy = spine_c + np.array([rng.uniform(22, 32), -rng.uniform(6, 16)])
    arch_z = min(z_top + 40, root[2] + rng.uniform(45, 80))
    aorta = _polyline([root, root + np.array([2, 0, 0.5 * (arch_z - root[2])]),
                       np.array([root[0] + 4, root[1] + 8, arch_z]),
                       np.array([desc_xy[0] - 4, desc_xy[1] - 8, arch_z]),
                       np.array([desc_xy[0], desc_xy[1], arch_z - 25]),
                       np.array([desc_xy[0], desc_xy[1], z0 - 40])], step=2.0)
    pa_start = heart.surface(-0.7, heart.anterior_phi() - 20, 0.0)
    pulm = _polyline([pa_start, pa_start + np.array([-4, 10, 30]), pa_start + np.array([-6, 30, 45])], step=2.0)

    # coronaries along their grooves; (u, phi) chosen relative to the anterior direction
    ant = heart.anterior_phi()
    out = rng.uniform(2.0, 4.0)
    u_av = rng.uniform(-0.72, -0.55)
    t = np.linspace(0, 1, 40)
    lad = np.array([heart.surface(u_av + (0.95 - u_av) * s, ant + rng.uniform(-3, 3), out) for s in t])
    lcx = np.array([heart.surface(u_av, ant + 15 + 100 * s, out) for s in t])
    rca = np.array([heart.surface(u_av, ant - 20 - 150 * s, out) for s in t])
    crux_phi = ant - 170
    pda = np.array([heart.surface(u_av + 0.1 + 0.7 * s, crux_phi + 10 * s, out) for s in t])
    lm_end = lad[0]
    lm_start = root + (lm_end - root) * 0.25
    lm = _polyline([lm_start, lm_end], step=1.0)
    courses = {1: pda, 2: lm, 3: lad, 4: lcx, 8: rca}

    # plaques
    plaques: list[Plaque] = []
    if not free:
        k = int(rng.integers(1, 9))
        weights = np.array([0.08, 0.1, 0.35, 0.2, 0.27])
        for _ in range(k):
            cls = int(rng.choice(CORONARY, p=weights / weights.sum()))
            path = courses[cls]
            c = path[int(rng.integers(0, len(path)))] + rng.normal(0, 0.6, 3)
            big = rng.random() < 0.3
            radii = tuple(float(v) for v in rng.uniform(1.0, 2.2 if not big else 3.8, 3))
            plaques.append(Plaque(cls, tuple(float(v) for v in c), radii, float(rng.uniform(160, 1100))))
    if rng.random() < 0.4:  # aortic wall calcium
        for _ in range(int(rng.integers(1, 6))):
            pt = aorta[int(rng.integers(0, len(aorta)))]
            ang = rng.uniform(0, 2 * np.pi)
            c = pt + np.array([np.cos(ang), np.sin(ang), 0.0]) * (ao_r - 1.5)
            plaques.append(Plaque(6, tuple(float(v) for v in c), tuple(float(v) for v in rng.uniform(1.5, 4, 3)),
                                  float(rng.uniform(200, 1000))))
    if rng.random() < 0.2:  # aortic valve / mitral annulus
        av = root - np.array([0, 0, 4.0])
        plaques.append(Plaque(7, tuple(float(v) for v in av + rng.normal(0, 3, 3)),
                              tuple(float(v) for v in rng.uniform(2, 4, 3)), float(rng.uniform(250, 900))))
    if rng.random() < 0.15:
        mv = heart.surface(-0.6, ant + 80, -12.0)
        plaques.append(Plaque(5, tuple(float(v) for v in mv), tuple(float(v) for v in rng.uniform(2, 4, 3)),
                              float(rng.uniform(250, 900))))

    # --- render ---
    origin = (-(n - 1) * px / 2, -(n - 1) * px / 2 + trunk_y * 0.3, z0)
    xs = origin[0] + np.arange(n) * px
    ys = origin[1] + np.arange(n) * px
    X, Y = np.meshgrid(xs.astype(np.float32), ys.astype(np.float32))
    hu = np.empty((nz, n, n), np.int16)
    truth = np.zeros((nz, n, n), np.uint8)
    bone = np.zeros((nz, n, n), bool)
    blur_px = kernel * 0.7 / px
    noise_blur = max(0.5, 0.6 * 0.7 / px)
    Xt, Yt = X, Y - trunk_y
    trunk = np.abs(Xt / a) ** p_exp + np.abs(Yt / b) ** p_exp
    inner = np.abs(Xt / (a - fat)) ** p_exp + np.abs(Yt / (b - fat)) ** p_exp
    cavity = np.abs(Xt / (a - fat - 14)) ** p_exp + np.abs(Yt / (b - fat - 14)) ** p_exp
    theta = np.arctan2(Xt, Yt)  # 0 at the back (posterior, +y), +-pi at the front
    table_y = trunk_y + b + table_gap
    top = z_top
    for k in range(nz):
        z = z0 + k * dz
        sl = np.full((n, n), -1000.0, np.float32)
        sl[(Y > table_y) & (Y < table_y + 12) & (np.abs(X) < min(a + 60, fov / 2))] = table_hu
        sl[(Y > table_y + 12) & (Y < table_y + 18) & (np.abs(np.abs(X) - rail_x) < 8)] = rail_hu
        sl[trunk <= 1] = fat_hu
        sl[inner <= 1] = soft
        lung_shrink = 1.0 if z < top - 40 else max(0.5, 1.0 - (z - (top - 40)) / 120)
        for side in (-1.0, 1.0):
            cx = side * (a - fat) * 0.48
            lung = ((X - cx) / ((a - fat) * 0.42 * lung_shrink)) ** 2 + ((Yt - 4) / ((b - fat) * 0.78)) ** 2
            sl[(lung <= 1) & (cavity <= 1)] = lung_hu
        # mediastinum: pericardial fat, heart, vessels
        peri = heart.inside(X, Y, z, grow=peri_mm)
        sl[peri] = fat_hu + 20
        sl[heart.inside(X, Y, z)] = blood
        _tube(sl, X, Y, z, aorta, ao_r, blood)
        _tube(sl, X, Y, z, pulm, 12.0, blood)
        for path in courses.values():
            _tube(sl, X, Y, z, path, 1.6, soft)
        # skeleton
        d_sp = np.hypot(X - spine_c[0], Y - spine_c[1])
        disc = ((z + disc_phase) % disc_period) < 5.0
        bmask = np.zeros((n, n), bool)
        if disc:
            sl[d_sp <= spine_r] = 80
        else:
            sl[d_sp <= spine_r] = cort
            sl[d_sp <= spine_r - 2.5] = marrow_hu
            bmask |= d_sp <= spine_r
        post = (np.hypot(X - spine_c[0], Y - spine_c[1] - spine_r - 14) <= 9) & ~(
            np.hypot(X - spine_c[0], Y - spine_c[1] - spine_r - 6) <= 6)
        for side in (-1, 1):
            post |= np.hypot(X - spine_c[0] - side * 18, Y - spine_c[1] - spine_r - 4) <= 6
        sl[post] = cort * 0.85
        bmask |= post
        sl[np.hypot(X - spine_c[0], Y - spine_c[1] - spine_r - 6) <= 6] = 15  # canal
        # ribs: bands in the wall, their height falling towards the front (|theta| -> pi)
        band = (inner <= 1.0) & (cavity > 0.86)
        zr = (z + rib_phase + rib_slope * np.abs(theta) * (a + b) / 2) % rib_period
        rib = band & (zr < rib_h) & (np.abs(theta) > 0.25)
        rib_core = rib & (zr > 1.2) & (zr < rib_h - 1.2)
        sl[rib] = rib_cort
        sl[rib_core] = rib_cort * 0.45
        bmask |= rib
        # sternum and costal cartilage at the front
        sy = trunk_y - b + fat + 7
        st = (np.abs(X) < 16) & (np.abs(Y - sy) < 6) & (z > heart_c[2] - 70)
        sl[st] = stern_cort
        sl[st & (np.abs(X) < 13) & (np.abs(Y - sy) < 3.5)] = 250
        bmask |= st
        if costal:
            cc = band & (np.abs(theta) > np.pi - 0.7) & (zr < rib_h) & (np.abs(X) > 18)
            sl[cc] = costal_hu
            bmask |= cc
        # plaques with partial volume through the slice: value x fraction of the slab inside
        foot = np.zeros((n, n), np.uint8)
        for pq in plaques:
            cxp, cyp, czp = pq.centre
            rx, ry, rz = pq.radii
            if abs(z - czp) > rz + dz / 2:
                continue
            q = ((X - cxp) / rx) ** 2 + ((Y - cyp) / ry) ** 2
            inside = q < 1.0
            if not inside.any():
                continue
            half = rz * np.sqrt(np.clip(1.0 - q, 0, 1))
            lo = np.maximum(czp - half, z - dz / 2)
            hi = np.minimum(czp + half, z + dz / 2)
            frac = np.clip(hi - lo, 0, None) / dz
            val = soft + (pq.peak_hu - soft) * np.exp(-1.0 * q) * frac
            m = inside & (frac > 0)
            sl[m] = np.maximum(sl[m], val[m])
            foot[m] = pq.label
        # reconstruction kernel and noise
        img = ndimage.gaussian_filter(sl, blur_px)
        if sharpen:
            img = img + sharpen * (img - ndimage.gaussian_filter(img, 1.5 * max(blur_px, 0.7)))
        noise = ndimage.gaussian_filter(rng.normal(0, 1, (n, n)).astype(np.float32), noise_blur)
        noise *= sigma / max(float(noise.std()), 1e-6)
        hu[k] = np.clip(np.rint(img + noise), -1024, 3071)
        if foot.any():
            grown = ndimage.grey_dilation(foot, size=(3, 3))
            lab = np.where(foot > 0, foot, grown)
            lab[hu[k] < 130] = 0
            truth[k] = lab
        bone[k] = bmask
    spacing = (dz, px, px)
    score = agatston(hu, truth, (px, px), dz, classes=range(1, 9))
    acq = {"matrix": n, "fov_mm": round(fov, 1), "pixel_mm": round(px, 3), "slice_mm": dz, "slices": nz,
           "noise_hu": round(sigma, 1), "kernel_blur_px": round(float(blur_px), 2), "sharpen": round(sharpen, 2),
           "bone_cortex_hu": [round(cort), round(rib_cort), round(stern_cort)],
           "costal_cartilage_hu": round(costal_hu) if costal else None, "habitus_mm": [round(a), round(b)]}
    return CtStudy(seed=seed, hu=hu, truth=truth, bone=bone, spacing=spacing, origin_xyz=origin, plaques=plaques,
                   calcium_free=free, acquisition=acq, score=score)


def write_dicom(study: CtStudy, out_dir: str | Path, *, patient_id: str | None = None) -> list[Path]:
    """Write the study as an axial CT series, scanner style (unsigned 16 bit, RescaleIntercept -1024,
    files in reverse z order, feet-first numbering)."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prefix = "1.2.826.0.1.3680043.10.1521."
    study_uid, series_uid, frame_uid = (generate_uid(prefix=prefix) for _ in range(3))
    now = datetime.datetime(2026, 1, 1) + datetime.timedelta(minutes=study.seed)
    dz, py, pxx = study.spacing
    nz = study.hu.shape[0]
    stored = (study.hu.astype(np.int32) + 1024).clip(0, 4095).astype(np.uint16)
    paths = []
    for i in range(nz):
        k = nz - 1 - i  # top of the chest first, like many scanners
        ds = Dataset()
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid(prefix=prefix)
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PatientName = f"EVAL^CT{study.seed}"
        ds.PatientID = patient_id or f"EVALCT{study.seed:05d}"
        ds.PatientSex = "M" if study.seed % 2 else "F"
        ds.PatientBirthDate = "19600101"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
        ds.AccessionNumber = f"E{study.seed:07d}"
        ds.StudyID = str(study.seed)
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "CT CHEST WO CONTRAST"
        ds.SeriesDescription = f"Thorax {dz:g}mm evaluation phantom"
        ds.Modality = "CT"
        ds.Manufacturer = "Evaluation phantom (bench.phantoms.ct)"
        ds.SeriesNumber = 3
        ds.InstanceNumber = i + 1
        ds.PatientPosition = "HFS"
        ds.BodyPartExamined = "CHEST"
        ds.KVP = "120"
        ds.ConvolutionKernel = "B" + str(int(30 + 40 * study.acquisition["sharpen"]))
        ds.ImagePositionPatient = [f"{study.origin_xyz[0]:.4f}", f"{study.origin_xyz[1]:.4f}",
                                   f"{study.origin_xyz[2] + k * dz:.4f}"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.PixelSpacing = [f"{py:.6g}", f"{pxx:.6g}"]
        ds.SliceThickness = f"{dz:g}"
        ds.SliceLocation = f"{study.origin_xyz[2] + k * dz:.4f}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = study.hu.shape[1:]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
        ds.WindowCenter, ds.WindowWidth = "40", "400"
        ds.PixelData = stored[k].tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        path = out / f"IM{i + 1:05d}"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths


def agreement_cases(seeds: Sequence[int]):
    """(id, hu, truth, bone, None, z positions, spacing yx) per seed for ``training.calcium.agreement``;
    even seeds calcium-free (no coronary plaque)."""
    for s in seeds:
        st = generate(s, calcium_free=s % 2 == 0)
        yield f"eval-family-{s}", st.hu, st.truth, st.bone, None, st.z_positions(), st.spacing[1:]
