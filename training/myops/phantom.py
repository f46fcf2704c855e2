"""Synthetic cardiac MR phantoms for the myops family (numpy + scipy only).

One phantom = one short-axis heart in patient space (LPS mm): an LV myocardial ring that thins and
narrows towards the apex, an RV crescent, a body ellipse, a scar sector (partly transmural, from
the endocardium) inside a wider full-thickness edema sector.  Each sequence (bSSFP, LGE, T2w) is
rendered on its own grid (pixel spacing, matrix, slice spacing and count, FOV centre) with its own
tissue contrast, bias field and noise.  bSSFP and T2w slices carry a known in-plane affine
misalignment (breath-hold differences) relative to LGE; the label lives on the LGE grid.

Nothing here is patient data; every figure computed on phantoms is a phantom figure.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from scipy import ndimage

from pipelines.imaging import Volume
from pipelines.myops import labels as cls

__all__ = ["PhantomCase", "PhantomSpec", "make_phantom", "varied_spec", "SEQUENCE_PROTOCOLS", "ground_truth_figures",
           "GENERATOR", "GENERATOR_VERSION"]

GENERATOR = "training.myops.phantom"
#: 2.1: ``varied=True`` also draws an RV free wall, papillary muscles and lungs, the RV touching the septum;
#: 2.0: ``varied=True`` draws acquisition (scale, bias field, matrix, slices, misalignment, noise) and a
#: wider pathology range per case; 1.0 was the fixed-acquisition generator of myops-unet 0.1.0.
GENERATOR_VERSION = "2.1"

# tissue ids used while rendering
AIR, BODY, MYO, EDEMA, SCAR, LV, RV, RV_WALL, PAPILLARY, LUNG = range(10)
_TISSUE_TO_CLASS = np.array([cls.BACKGROUND, cls.BACKGROUND, cls.MYOCARDIUM, cls.EDEMA, cls.SCAR, cls.LV_POOL,
                             cls.RV_POOL, cls.BACKGROUND, cls.LV_POOL, cls.BACKGROUND], dtype=np.uint8)

#: mean signal per tissue (air, body, myocardium, edema, scar, LV blood, RV blood)
CONTRAST = {
    "bssfp": (4.0, 90.0, 55.0, 62.0, 55.0, 230.0, 215.0),  # bright blood, dark myocardium
    "lge": (4.0, 70.0, 14.0, 22.0, 240.0, 140.0, 125.0),  # nulled myocardium, bright scar
    "t2": (4.0, 110.0, 70.0, 165.0, 150.0, 22.0, 25.0),  # black blood, bright edema
}

#: DICOM naming of each sequence when written as a study (matches the pipeline's default rules)
SEQUENCE_PROTOCOLS = {
    "bssfp": dict(series_description="SAX cine TrueFISP", protocol_name="sax_bssfp_cine", sequence_name="*tfi2d1",
                  scanning_sequence="GR", attributes=dict(SequenceVariant=["SK", "SS"])),
    "lge": dict(series_description="SAX LGE PSIR", protocol_name="sax_lge_psir", sequence_name="*tfl2d1",
                scanning_sequence="GR\\IR", attributes=dict(SequenceVariant=["SP", "MP"], InversionTime="300")),
    "t2": dict(series_description="SAX T2 STIR", protocol_name="sax_t2_stir", sequence_name="*tse2d1",
               scanning_sequence="SE\\IR", attributes=dict(SequenceVariant="SK", EchoTime="60", RepetitionTime="1800",
                                                             InversionTime="160", EchoTrainLength="16")),
}


@dataclasses.dataclass(frozen=True)
class PhantomSpec:
    """Acquisition geometry of the three sequences (defaults close to the MyoPS380 card)."""

    pixel_mm: dict = dataclasses.field(default_factory=lambda: {"bssfp": 1.172, "lge": 0.8929, "t2": 0.8929})
    matrix: dict = dataclasses.field(default_factory=lambda: {"bssfp": 208, "lge": 256, "t2": 256})
    slice_mm: dict = dataclasses.field(default_factory=lambda: {"bssfp": 8.0, "lge": 10.0, "t2": 12.0})
    max_shift_mm: float = 5.0  # per-slice misalignment of bSSFP / T2w relative to LGE
    max_rot_deg: float = 6.0
    max_scale: float = 0.04
    noise: float = 0.04  # gaussian noise as a fraction of the brightest tissue
    gain: tuple[float, float] = (3.0, 6.0)  # stored value = signal x gain, per sequence
    gain_log_uniform: bool = False  # draw the gain log-uniformly (wide ranges) instead of uniformly
    bias: float = 0.15  # amplitude of the multiplicative bias (shading) field
    bias_order: int = 1  # 1: the smooth cosine field of v1; 2: also a random quadratic log field
    contrast_jitter: float = 0.15


def varied_spec(rng: np.random.Generator) -> PhantomSpec:
    """Acquisition drawn per case over the axes a real scanner varies: pixel size and matrix
    (0.8-2.0 mm, 128-288), slice spacing 6-14 mm (about 6-16 slices over the LV), misalignment
    up to 2-8 mm, stored-value scale over three decades, shading up to about 3.5x, noise 2-6 %."""
    px, mat, dz = {}, {}, {}
    for seq in ("bssfp", "lge", "t2"):
        px[seq] = float(rng.uniform(0.8, 2.0))
        fov = float(rng.uniform(220, 380))
        mat[seq] = int(np.clip(round(fov / px[seq] / 8) * 8, 128, 288))
        dz[seq] = float(rng.uniform(6.0, 14.0))
    dz["lge"] = float(np.clip(dz["lge"], 6.0, 12.0))
    lo = float(np.exp(rng.uniform(np.log(0.2), np.log(20.0))))
    return PhantomSpec(pixel_mm=px, matrix=mat, slice_mm=dz, max_shift_mm=float(rng.uniform(2.0, 8.0)),
                       max_rot_deg=float(rng.uniform(2.0, 8.0)), max_scale=float(rng.uniform(0.0, 0.06)),
                       noise=float(rng.uniform(0.02, 0.06)), gain=(lo, lo * 3.0), gain_log_uniform=True,
                       bias=float(rng.uniform(0.1, 0.6)),
                       bias_order=2, contrast_jitter=0.3)


@dataclasses.dataclass
class PhantomCase:
    """A rendered phantom: volumes per sequence, model-class label on the LGE grid, and the truth."""

    volumes: dict[str, Volume]
    label: Volume  # model classes (uint8) on the LGE grid
    misalignment: dict[str, list[np.ndarray]]  # seq -> per slice 3x3 homogeneous (u, v) mm affine A
    heart_centre: np.ndarray  # xyz
    frame: np.ndarray  # 3x3 columns: row dir, col dir, normal (shared short-axis orientation)


def _rotation(rng: np.random.Generator, max_tilt_deg: float = 25.0) -> np.ndarray:
    """A short-axis orientation: random in-plane angle, tilted away from axial."""
    a, b, c = np.deg2rad([rng.uniform(-180, 180), rng.uniform(-max_tilt_deg, max_tilt_deg),
                          rng.uniform(-max_tilt_deg, max_tilt_deg)])
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    ry = np.array([[np.cos(c), 0, np.sin(c)], [0, 1, 0], [-np.sin(c), 0, np.cos(c)]])
    return rx @ ry @ rz


def _anatomy(rng: np.random.Generator, with_scar: bool, wide: bool = False) -> dict:
    length = rng.uniform(70, 90)
    scar_w = rng.uniform(35, 100)
    margin = rng.uniform(10, 30)
    scar_lo = rng.uniform(0.1, 0.45) * length
    scar_hi = scar_lo + rng.uniform(0.3, 0.5) * length
    if wide:  # burden from a few % to about half the myocardium, up to every slice
        length = rng.uniform(65, 100)
        scar_w = rng.uniform(15, 220)
        margin = rng.uniform(5, 45)
        if rng.uniform() < 0.35:
            scar_lo, scar_hi = -20.0, length + 20.0
        else:
            scar_lo = rng.uniform(-0.1, 0.6) * length
            scar_hi = scar_lo + rng.uniform(0.2, 0.9) * length
    a = dict(
        length=length,
        r_endo=rng.uniform(20, 27),
        thick=rng.uniform(7, 11),
        rv_radius=rng.uniform(28, 36),
        rv_angle=np.deg2rad(rng.uniform(160, 200)),
        theta0=np.deg2rad(rng.uniform(-180, 180)),
        scar_half=np.deg2rad(scar_w / 2),
        edema_half=np.deg2rad(scar_w / 2 + margin),
        transmural=rng.uniform(0.25, 1.0) if wide else rng.uniform(0.35, 1.0),
        scar_w=(scar_lo, scar_hi) if with_scar else (1.0, 0.0),
        edema_w=(scar_lo - 6.0, scar_hi + 6.0) if with_scar else (1.0, 0.0),
        body=(rng.uniform(120, 150), rng.uniform(95, 120), rng.uniform(-30, 30), rng.uniform(-20, 20)),
    )
    if wide:  # generator 2.1: an RV free wall, papillary muscles, lungs, the RV touching the septum
        a["rv_gap"] = float(rng.uniform(0.0, 3.0))
        a["rv_wall"] = float(rng.uniform(1.5, 4.0)) if rng.uniform() < 0.8 else 0.0
        a["papillary"] = [(a["theta0"] + np.deg2rad(rng.uniform(-180, 180)), float(rng.uniform(2.0, 4.5)))
                          for _ in range(int(rng.integers(0, 3)))]
        a["lungs"] = [(float(rng.uniform(-90, -55)), float(rng.uniform(-20, 20)), float(rng.uniform(25, 45)),
                       float(rng.uniform(35, 60))),
                      (float(rng.uniform(55, 90)), float(rng.uniform(-20, 20)), float(rng.uniform(25, 45)),
                       float(rng.uniform(35, 60)))] if rng.uniform() < 0.6 else []
    return a



def _tissue(u: np.ndarray, v: np.ndarray, w: np.ndarray, a: dict) -> np.ndarray:
    """Tissue id at heart coordinates (u, v in-plane mm from the LV axis, w mm from base to apex)."""
    t = np.full(u.shape, AIR, dtype=np.uint8)
    bu, bv, bx, by = a["body"]
    body = ((u - bx) / bu) ** 2 + ((v - by) / bv) ** 2 <= 1.0
    t[body] = BODY
    for cx, cy, ax, ay in a.get("lungs", ()):
        t[body & (((u - cx) / ax) ** 2 + ((v - cy) / ay) ** 2 <= 1.0)] = LUNG
    frac = np.clip(w / a["length"], 0.0, 1.0)
    inside = (w >= 0) & (w <= a["length"])
    r_endo = a["r_endo"] * np.sqrt(np.clip(1.0 - frac ** 2, 0.0, 1.0))
    r_epi = r_endo + a["thick"] * (1.0 - 0.3 * frac)
    r = np.hypot(u, v)
    # RV crescent: a disc beside the LV, outside the LV epicardium, basal 80 %
    ru = u - (a["r_endo"] + a["thick"]) * 0.9 * np.cos(a["rv_angle"])
    rv_ = v - (a["r_endo"] + a["thick"]) * 0.9 * np.sin(a["rv_angle"])
    rv_r = a["rv_radius"] * np.sqrt(np.clip(1.0 - (w / (0.8 * a["length"])) ** 2, 0.0, 1.0))
    gap, wall = a.get("rv_gap", 3.0), a.get("rv_wall", 0.0)
    rv_d = np.hypot(ru, rv_)
    if wall > 0:  # free wall only: along the septum the LV myocardium is the wall
        t[inside & (rv_d < rv_r + wall) & (rv_d >= rv_r) & (r > r_epi + gap + wall)] = RV_WALL
    rv_mask = inside & (rv_d < rv_r) & (r > r_epi + gap)
    t[rv_mask] = RV
    myo = inside & (r >= r_endo) & (r < r_epi)
    t[inside & (r < r_endo)] = LV
    for ang, rad in a.get("papillary", ()):
        pu, pv = u - 0.55 * r_endo * np.cos(ang), v - 0.55 * r_endo * np.sin(ang)
        t[inside & (r < r_endo) & (np.hypot(pu, pv) < rad) & (w > 0.2 * a["length"]) & (w < 0.75 * a["length"])] = \
            PAPILLARY
    t[myo] = MYO
    dtheta = np.angle(np.exp(1j * (np.arctan2(v, u) - a["theta0"])))
    ew0, ew1 = a["edema_w"]
    sw0, sw1 = a["scar_w"]
    edema = myo & (np.abs(dtheta) <= a["edema_half"]) & (w >= ew0) & (w <= ew1)
    t[edema] = EDEMA
    depth = (r - r_endo) / np.maximum(r_epi - r_endo, 1e-6)
    scar = myo & (np.abs(dtheta) <= a["scar_half"]) & (w >= sw0) & (w <= sw1) & (depth <= a["transmural"])
    t[scar] = SCAR
    return t


def _affine2d(rng: np.random.Generator, spec: PhantomSpec) -> np.ndarray:
    ang = np.deg2rad(rng.uniform(-spec.max_rot_deg, spec.max_rot_deg))
    s = 1.0 + rng.uniform(-spec.max_scale, spec.max_scale, size=2)
    m = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]]) @ np.diag(s)
    out = np.eye(3)
    out[:2, :2] = m
    out[:2, 2] = rng.uniform(-spec.max_shift_mm, spec.max_shift_mm, size=2)
    return out


def make_phantom(seed: int, spec: PhantomSpec | None = None, *, with_scar: bool | None = None,
                 misalign: bool = True, varied: bool = False) -> PhantomCase:
    """Render one phantom case; the same ``seed`` (and ``varied``) gives the same case.

    ``varied=True`` (generator 2.0) draws the acquisition with :func:`varied_spec` (unless ``spec`` is
    given) and a wider pathology range; the default is the fixed acquisition of generator 1.0."""
    rng = np.random.default_rng(seed)
    if spec is None:
        spec = varied_spec(np.random.default_rng([seed, 2])) if varied else PhantomSpec()
    if with_scar is None:
        with_scar = rng.uniform() > 0.1
    a = _anatomy(rng, with_scar, wide=varied)
    frame = _rotation(rng)
    row, col, normal = frame[:, 0], frame[:, 1], frame[:, 2]
    centre = np.array([rng.uniform(-20, 20), rng.uniform(-20, 20), rng.uniform(-20, 20)])
    volumes: dict[str, Volume] = {}
    label = None
    mis: dict[str, list[np.ndarray]] = {}
    for seq in ("lge", "t2", "bssfp"):
        px, n, dz = spec.pixel_mm[seq], spec.matrix[seq], spec.slice_mm[seq]
        w0 = rng.uniform(-dz, -0.2 * dz)
        nz = int(np.floor((a["length"] + 0.5 * dz - w0) / dz)) + 1
        fov_shift = rng.uniform(-12, 12, size=2)
        idx = (np.arange(n) - (n - 1) / 2.0) * px
        vv, uu = np.meshgrid(idx + fov_shift[1], idx + fov_shift[0], indexing="ij")  # (y, x)
        cj = spec.contrast_jitter
        contrast = np.asarray(CONTRAST[seq]) * rng.uniform(1.0 - cj, 1.0 + cj, size=7)
        # rv wall, papillary muscles, lung
        contrast = np.concatenate([contrast, [contrast[MYO], contrast[MYO], 2.5 * contrast[AIR]]])
        gain = (float(np.exp(rng.uniform(np.log(spec.gain[0]), np.log(spec.gain[1])))) if spec.gain_log_uniform
                else float(rng.uniform(*spec.gain)))
        quad = rng.normal(0, 1, size=5) if spec.bias_order >= 2 else None
        img = np.zeros((nz, n, n), dtype=np.float32)
        lab = np.zeros((nz, n, n), dtype=np.uint8)
        mis[seq] = []
        for k in range(nz):
            w = np.full(uu.shape, w0 + k * dz)
            A = _affine2d(rng, spec) if (misalign and seq != "lge") else np.eye(3)
            mis[seq].append(A)
            su = A[0, 0] * uu + A[0, 1] * vv + A[0, 2]
            sv = A[1, 0] * uu + A[1, 1] * vv + A[1, 2]
            t = _tissue(su, sv, w, a)
            base = contrast[t]
            bias = 1.0 + spec.bias * np.cos(uu / 70.0 + k) * np.sin(vv / 90.0 + seed)
            if quad is not None:  # coil-like shading: a random quadratic log field across the FOV
                x, y = uu / 150.0, vv / 150.0
                logf = quad[0] * x + quad[1] * y + 0.5 * (quad[2] * x * x + quad[3] * y * y + quad[4] * x * y)
                bias = np.clip(bias, 0.2, None) * np.exp(spec.bias * logf)
            texture = ndimage.gaussian_filter(rng.normal(0, 1, size=uu.shape), 4.0) * 0.06 * contrast[BODY]
            sl = ndimage.gaussian_filter(base * bias + np.where(t == BODY, texture, 0.0), 0.7)
            sl = np.abs(sl + rng.normal(0, spec.noise * contrast.max(), size=sl.shape))
            img[k] = sl * gain
            if seq == "lge":
                lab[k] = _TISSUE_TO_CLASS[t]
        origin = centre + w0 * normal + (idx[0] + fov_shift[0]) * row + (idx[0] + fov_shift[1]) * col
        if img.max() > 30000.0:  # stays within int16 when written as NIfTI
            img *= 30000.0 / float(img.max())
        vol = Volume(array=np.rint(img).astype(np.float32), spacing=(dz, px, px),
                     origin=tuple(float(x) for x in origin), direction=frame.copy(), headers=[], refs=[])
        volumes[seq] = vol
        if seq == "lge":
            label = vol.with_array(lab)
    assert label is not None
    return PhantomCase(volumes=volumes, label=label, misalignment=mis, heart_centre=centre, frame=frame)


def ground_truth_figures(label: Volume) -> dict[str, float]:
    """Myocardial / edema-region / scar volume (mL) and burden (% of myocardium) of a class label."""
    m = cls.tissue_masks(label.array)
    voxel_ml = label.voxel_volume_mm3 / 1000.0
    myo = float(m["myocardium"].sum()) * voxel_ml
    scar = float(m["scar"].sum()) * voxel_ml
    edema = float(m["edema"].sum()) * voxel_ml
    return {
        "myocardium_ml": myo,
        "scar_ml": scar,
        "edema_ml": edema,
        "scar_burden_pct": 100.0 * scar / myo if myo else 0.0,
        "edema_burden_pct": 100.0 * edema / myo if myo else 0.0,
    }


def write_myops_folder(cases: Sequence[tuple[str, PhantomCase]], root, labels=None):
    """Write phantoms as a MyoPS380-format folder (``root/Raw_data/...``); returns the Raw_data path."""
    from pathlib import Path

    from .dataset import SEQUENCES, volume_to_nifti
    from .labels import MYOPS2020

    labels = labels or MYOPS2020
    raw = Path(root) / "Raw_data"
    for case_id, case in cases:
        for seq, folder in SEQUENCES.items():
            volume_to_nifti(case.volumes[seq], raw / folder / f"{case_id}.nii.gz", dtype=np.int16)
        volume_to_nifti(case.label.with_array(labels.from_classes(case.label.array)),
                        raw / "label" / f"{case_id}_gt.nii.gz", dtype=np.int16)
    from training.datasets.marker import write_marker  # generated data: exports stay "synthetic"

    write_marker(root, generator="training.myops.phantom", layout="MyoPS380", cases=len(cases))
    return raw


def write_dicom_study(case: PhantomCase, out_dir, *, seed: int, sequences: Sequence[str] = ("bssfp", "lge", "t2"),
                      study=None):
    """Write the phantom's sequences as one MR study (one series each); returns all file paths."""
    from pathlib import Path

    from synth.dicom import new_study, write_mr_series

    study = study or new_study(seed=seed)
    paths = []
    for number, seq in enumerate(("bssfp", "lge", "t2"), start=1):
        if seq not in sequences:
            continue
        vol = case.volumes[seq]
        paths += write_mr_series(
            vol.array, vol.spacing, Path(out_dir) / seq, study, series_number=number,
            origin_xyz=vol.origin, row_dir=vol.direction[:, 0], col_dir=vol.direction[:, 1], seed=seed,
            **SEQUENCE_PROTOCOLS[seq],
        )
    return paths


def registration_error_mm(case: PhantomCase, stack, transforms, seq: str, mask: np.ndarray) -> np.ndarray:
    """Per-slice mean distance (mm) over ``mask`` (n, G, G) between the estimated registration
    transforms of ``seq`` and the phantom's true misalignment; ``stack`` is the GridStack."""
    frame = case.frame
    out = []
    g = stack.grid_points.shape[1]
    yy, xx = np.mgrid[0:g, 0:g]
    for i in range(stack.n):
        pts = stack.grid_points[i]
        h0 = (pts[0, 0] - case.heart_centre) @ frame[:, :2]  # heart (u, v) of grid pixel (0, 0)
        A = case.misalignment[seq][int(stack.match.indices[seq][i])]
        sel = mask[i]
        if not sel.any():
            continue
        xy = np.stack([xx[sel], yy[sel]], axis=1) * stack.spacing_mm
        h = xy + h0
        h_true = (np.c_[h, np.ones(len(h))] @ np.linalg.inv(A).T)[:, :2]
        true_xy = h_true - h0
        est_xy = transforms[i].apply(xy)
        out.append(float(np.linalg.norm(est_xy - true_xy, axis=1).mean()))
    return np.asarray(out)
