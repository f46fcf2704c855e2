"""Evaluation-only cardiac MR studies (bSSFP + LGE + T2w short-axis stacks) with known scar and edema.

Independent of ``training/``: its own anatomy model, contrasts, acquisition parameters and DICOM
writer (pydicom directly), so the figures measure how the bundled myops model generalises beyond the
phantoms it was trained on.  Never used for training.

Anatomy (heart frame: ``w`` mm from the mitral plane towards the apex along the LV long axis,
``u, v`` in-plane): the LV is a truncated prolate ellipsoidal shell with an elliptical cross-section,
a septum thicker than the free wall and a wall that thins towards the apex; two papillary muscles in
the cavity (myocardial signal, labelled blood pool as in the MyoPS convention); the RV is an
elliptical cavity wrapped around the septum with a thin free wall (labelled background: MyoPS labels
LV myocardium only).  Around it: a superelliptic chest with subcutaneous fat, two lungs, a
descending aorta, a spine and, in the lower slices, the liver.

Pathology: scar is a sector of one coronary territory (anterior, lateral or inferior), subendocardial
(a share of the wall from the endocardium) or transmural, over a longitudinal range or every slice;
its angular width can be solved for a target burden.  Edema (T2 bright) is a wider full-thickness
sector over a longer range that contains the scar; burdens follow MyoPS (edema region includes scar).

Acquisition: the three series share the stack's planes (as planned on the scanner) but each has its
own matrix (128-320, rectangular allowed), pixel spacing, slice thickness; bSSFP and T2w slices are
displaced per slice (breath-hold mismatch: in-plane shift and rotation of the heart, small
through-plane shift) while the chest wall stays; a surface-coil sensitivity field (shading), Rician
noise, in-plane and through-plane partial volume; stored values on a per-series scale: 12-bit,
0-1000, or an arbitrary vendor scaling with RescaleSlope.  Naming and sequence attributes follow
one of several vendors' conventions (or none: anonymised descriptions).

The truth (labels on the LGE pixel grid, burdens) is sampled at pixel and slice centres; figures on
these studies are phantom figures, not clinical accuracy.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["EvalSpec", "EvalStudy", "SeriesData", "make_study", "write_study", "truth_figures", "VENDORS",
           "GENERATOR", "GENERATOR_VERSION"]

GENERATOR = "bench.phantoms.cmr"
GENERATOR_VERSION = "1.0"

# label values (the pipeline's model classes)
BG, MYO_L, EDEMA_L, SCAR_L, LV_L, RV_L = 0, 1, 2, 3, 4, 5

# tissue ids while rendering
(AIR, LUNG, MUSCLE, FAT, LIVER, BLOOD, MYO, EDEMA, SCAR, SCAR_EDEMA, PAPILLARY, RV_WALL, BONE) = range(13)
_TISSUE_LABEL = np.array([BG, BG, BG, BG, BG, LV_L, MYO_L, EDEMA_L, SCAR_L, SCAR_L, LV_L, BG, BG], dtype=np.uint8)

#: relative signal per tissue id (air, lung, muscle, fat, liver, blood, myo, edema, scar, scar+edema,
#: papillary, rv wall, bone); jittered per study
SIGNAL = {
    "bssfp": (0.0, 0.04, 0.30, 0.85, 0.36, 1.00, 0.27, 0.33, 0.25, 0.30, 0.27, 0.27, 0.20),
    "lge": (0.0, 0.02, 0.12, 0.42, 0.24, 0.55, 0.045, 0.08, 0.90, 0.92, 0.045, 0.06, 0.15),
    "t2": (0.0, 0.03, 0.28, 0.16, 0.22, 0.07, 0.30, 0.62, 0.52, 0.62, 0.30, 0.30, 0.12),
}


@dataclasses.dataclass(frozen=True)
class EvalSpec:
    """Knobs of one study; ``None`` draws the value from the study's seed."""

    scar_burden: float | None = None  # target scar burden in % (solved by the sector width); 0 = no scar
    scar_every_slice: bool | None = None
    transmural: bool | None = None
    intensity: str | None = None  # "12bit" | "0-1000" | "vendor" (one for all series when given)
    coil_shading: float | None = None  # max/min ratio of the coil field over the chest (1 = none)
    matrix: int | None = None  # rows of every series (drawn per series when None; columns drawn)
    slices: int | None = None  # slices in the stack (6-16)
    misregistration_mm: float | None = None  # max in-plane heart shift of bSSFP / T2w per slice
    vendor: str | None = None  # key of VENDORS


@dataclasses.dataclass
class SeriesData:
    """One series ready to write: stored values and how to turn them into signal."""

    key: str  # bssfp | lge | t2
    stored: np.ndarray  # (z, rows, cols) uint16
    slope: float
    intercept: float
    bits_stored: int
    origin: np.ndarray  # patient xyz of pixel (0, 0) of slice 0
    row_dir: np.ndarray
    col_dir: np.ndarray
    normal: np.ndarray
    pixel_mm: tuple[float, float]  # (row spacing, column spacing)
    slice_positions: np.ndarray  # (z,) mm along the normal from origin
    thickness: float
    attrs: dict  # naming and sequence attributes

    @property
    def signal(self) -> np.ndarray:
        return self.stored.astype(np.float32) * np.float32(self.slope) + np.float32(self.intercept)


@dataclasses.dataclass
class EvalStudy:
    seed: int
    series: dict[str, SeriesData]
    label: np.ndarray  # (z, rows, cols) model classes on the LGE grid
    truth: dict[str, float]
    description: dict  # what was drawn (vendor, intensity modes, coil ratio, misregistration, ...)


# -- vendors' conventions ---------------------------------------------------------------------------

VENDORS: dict[str, dict[str, dict]] = {
    "siemens": {
        "bssfp": dict(SeriesDescription="sa_cine_trufi_retro_iPAT", ProtocolName="sa_cine_trufi",
                      SequenceName="*tfi2d1_12", ScanningSequence="GR", SequenceVariant=["SK", "SS"],
                      ScanOptions="", EchoTime=1.2, RepetitionTime=2.8, FlipAngle=55,
                      ImageType=["ORIGINAL", "PRIMARY", "M", "RETRO", "NORM", "DIS2D"]),
        "lge": dict(SeriesDescription="de_tfl_psir_sax_MAG", ProtocolName="de_tfl_psir_sax",
                    SequenceName="*tfl2d1r", ScanningSequence=["GR", "IR"], SequenceVariant=["SK", "SP", "MP"],
                    ScanOptions="IR", EchoTime=1.6, RepetitionTime=3.9, InversionTime=300, FlipAngle=20,
                    ImageType=["ORIGINAL", "PRIMARY", "M", "NORM", "DIS2D"]),
        "t2": dict(SeriesDescription="t2_tse_db_sax_p2", ProtocolName="t2_tse_db_sax",
                   SequenceName="*tse2d1_13", ScanningSequence="SE", SequenceVariant=["SK", "SP", "OSP"],
                   ScanOptions="SAT1", EchoTime=62, RepetitionTime=1600, FlipAngle=180, EchoTrainLength=13,
                   ImageType=["ORIGINAL", "PRIMARY", "M", "NORM", "DIS2D"]),
    },
    "ge": {
        "bssfp": dict(SeriesDescription="FIESTA CINE SA STACK", ProtocolName="CARDIAC FUNCTION",
                      SequenceName="fiestac", ScanningSequence="GR", SequenceVariant="SS",
                      ScanOptions=["CG", "FAST_GEMS", "SEQ_GEMS"], EchoTime=1.4, RepetitionTime=3.3, FlipAngle=50),
        "lge": dict(SeriesDescription="MDE SAX", ProtocolName="CARDIAC VIABILITY", SequenceName="fgre",
                    ScanningSequence=["GR", "IR"], SequenceVariant=["SS", "SP", "MP"],
                    ScanOptions=["CG", "IR_GEMS", "FAST_GEMS"], EchoTime=2.2, RepetitionTime=5.4, InversionTime=275,
                    FlipAngle=20),
        "t2": dict(SeriesDescription="SAX Triple IR FSE", ProtocolName="CARDIAC VIABILITY",
                   SequenceName="fse-xl", ScanningSequence=["SE", "IR"], SequenceVariant=["SK", "OSP"],
                   ScanOptions=["CG", "IR_GEMS", "FAST_GEMS"], EchoTime=55, RepetitionTime=1800, InversionTime=150,
                   FlipAngle=90, EchoTrainLength=20),
    },
    "philips": {
        "bssfp": dict(SeriesDescription="sBTFE_BH SA", ProtocolName="WIP sBTFE_BH SA", SequenceName="",
                      ScanningSequence="GR", SequenceVariant="SS", ScanOptions="", EchoTime=1.5,
                      RepetitionTime=3.0, FlipAngle=45),
        "lge": dict(SeriesDescription="IR_TFE_SA late", ProtocolName="IR_TFE_SA late", SequenceName="",
                    ScanningSequence=["GR", "IR"], SequenceVariant=["SP", "MP"], ScanOptions="",
                    EchoTime=2.0, RepetitionTime=4.1, InversionTime=260, FlipAngle=25),
        "t2": dict(SeriesDescription="BB_T2W_SPAIR SA", ProtocolName="BB_T2W_SPAIR SA", SequenceName="",
                   ScanningSequence="SE", SequenceVariant="SK", ScanOptions="", EchoTime=70, RepetitionTime=1700,
                   FlipAngle=90, EchoTrainLength=24),
    },
    "anonymised": {  # descriptions stripped by an anonymiser; only the sequence attributes say what it is
        "bssfp": dict(SeriesDescription="Series 3", ProtocolName="", SequenceName="", ScanningSequence="GR",
                      SequenceVariant=["SK", "SS"], ScanOptions="", EchoTime=1.3, RepetitionTime=3.0, FlipAngle=60),
        "lge": dict(SeriesDescription="Series 11", ProtocolName="", SequenceName="",
                    ScanningSequence=["GR", "IR"], SequenceVariant=["SK", "SP", "MP"], ScanOptions="IR",
                    EchoTime=1.8, RepetitionTime=4.5, InversionTime=310, FlipAngle=20),
        "t2": dict(SeriesDescription="Series 7", ProtocolName="", SequenceName="", ScanningSequence=["SE", "IR"],
                   SequenceVariant=["SK", "SP"], ScanOptions="", EchoTime=58, RepetitionTime=2000,
                   InversionTime=170, FlipAngle=90, EchoTrainLength=16),
    },
}


# -- anatomy ------------------------------------------------------------------------------------------

def _anatomy(rng: np.random.Generator, spec: EvalSpec) -> dict:
    length = rng.uniform(72, 98)
    r0 = rng.uniform(19, 28)  # basal endocardial radius (mean)
    territory = rng.choice(["anterior", "lateral", "inferior"])
    sept = np.deg2rad(rng.uniform(150, 210))  # septum direction in the heart frame
    centre_angle = {"anterior": sept - np.deg2rad(70), "lateral": sept + np.pi,
                    "inferior": sept + np.deg2rad(75)}[territory]
    every = spec.scar_every_slice if spec.scar_every_slice is not None else bool(rng.uniform() < 0.4)
    transmural = spec.transmural if spec.transmural is not None else bool(rng.uniform() < 0.5)
    lo = 0.0 if every else rng.uniform(0.05, 0.45) * length
    hi = length * 1.05 if every else lo + rng.uniform(0.35, 0.6) * length
    return dict(
        length=length, r0=r0, ecc=rng.uniform(0.0, 0.12), ecc_angle=rng.uniform(0, np.pi),
        wall=rng.uniform(8, 13), septal_gain=rng.uniform(0.05, 0.25), sept=sept,
        rv_len=rng.uniform(0.7, 0.85) * length, rv_a=rng.uniform(30, 42), rv_b=rng.uniform(16, 24),
        rv_wall=rng.uniform(2.0, 3.5),
        pap=[(sept + np.deg2rad(rng.uniform(120, 150)), rng.uniform(2.5, 4.0)),
             (sept - np.deg2rad(rng.uniform(120, 150)), rng.uniform(2.5, 4.0))],
        scar_centre=centre_angle + np.deg2rad(rng.uniform(-15, 15)), scar_half=np.deg2rad(30.0),
        scar_depth=1.0 if transmural else rng.uniform(0.3, 0.65), scar_range=(lo, hi),
        edema_margin=np.deg2rad(rng.uniform(10, 35)), edema_ext=rng.uniform(5, 15),
        has_scar=True, territory=str(territory), every=every, transmural=transmural,
    )


def _radii(a: dict, theta: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(endocardial, epicardial) radius at angle ``theta`` and depth ``w`` (truncated ellipsoid shells)."""
    L, t0 = a["length"], a["wall"]
    f_in = np.sqrt(np.clip(1.0 - (w / L) ** 2, 0.0, 1.0))
    f_out = np.sqrt(np.clip(1.0 - (w / (L + t0)) ** 2, 0.0, 1.0))
    e, phi = a["ecc"], theta - a["ecc_angle"]
    shape = 1.0 / np.sqrt(((np.cos(phi) / (1 + e)) ** 2) + ((np.sin(phi) / (1 - e)) ** 2))
    thick = t0 * (1.0 + a["septal_gain"] * np.cos(theta - a["sept"]))
    r_in = a["r0"] * shape * f_in
    r_out = (a["r0"] * shape + thick) * f_out
    return r_in, r_out


def _heart_tissue(a: dict, u: np.ndarray, v: np.ndarray, w: np.ndarray, out: np.ndarray) -> None:
    """Paint heart tissues into ``out`` (tissue ids) where they lie."""
    rho = np.hypot(u, v)
    theta = np.arctan2(v, u)
    r_in, r_out = _radii(a, theta, w)
    inside = (w >= 0) & (w <= a["length"] + a["wall"])
    cavity = inside & (rho < r_in)
    myo = inside & (rho >= r_in) & (rho < r_out)
    # RV: ellipse centred beyond the septum, wrapped around it; free wall a thin shell
    s = a["sept"]
    d = a["r0"] + a["wall"] + 0.35 * a["rv_b"]
    ru, rv_ = u - d * np.cos(s), v - d * np.sin(s)
    pu, pv = ru * np.cos(s) + rv_ * np.sin(s), -ru * np.sin(s) + rv_ * np.cos(s)
    fr = np.sqrt(np.clip(1.0 - (w / a["rv_len"]) ** 2, 0.0, 1.0))
    qa, qb = a["rv_a"] * fr + 1e-3, a["rv_b"] * fr + 1e-3
    q = (pu / qb) ** 2 + (pv / qa) ** 2
    qo = (pu / (qb + a["rv_wall"])) ** 2 + (pv / (qa + a["rv_wall"])) ** 2
    rv_zone = (w >= 0) & (w <= a["rv_len"]) & (rho >= r_out)
    # the free wall only: along the septum the RV cavity meets the LV myocardium (one shared wall)
    out[rv_zone & (qo <= 1.0) & (rho >= r_out + a["rv_wall"] + 1.0)] = RV_WALL
    out[rv_zone & (q <= 1.0)] = BLOOD + 100  # marked RV blood, resolved below
    out[cavity] = BLOOD
    for ang, rad in a["pap"]:
        pu_, pv_ = u - 0.55 * r_in * np.cos(ang), v - 0.55 * r_in * np.sin(ang)
        pap = cavity & (np.hypot(pu_, pv_) < rad) & (w > 0.25 * a["length"]) & (w < 0.75 * a["length"])
        out[pap] = PAPILLARY
    out[myo] = MYO
    if a["has_scar"]:
        dth = np.abs(np.angle(np.exp(1j * (theta - a["scar_centre"]))))
        lo, hi = a["scar_range"]
        depth = (rho - r_in) / np.maximum(r_out - r_in, 1e-6)
        edema = (myo & (dth <= a["scar_half"] + a["edema_margin"])
                 & (w >= lo - a["edema_ext"]) & (w <= hi + a["edema_ext"]))
        scar = myo & (dth <= a["scar_half"]) & (w >= lo) & (w <= hi) & (depth <= a["scar_depth"])
        out[edema] = EDEMA
        out[scar & edema] = SCAR_EDEMA
        out[scar & ~edema] = SCAR


def _body_tissue(b: dict, x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Chest tissues at body-frame in-plane coordinates (x lateral, y anterior-posterior) and depth w."""
    out = np.full(x.shape, AIR, dtype=np.int16)
    sx, sy, p = b["half_w"], b["half_h"], b["power"]
    skin = (np.abs(x / sx) ** p + np.abs(y / sy) ** p)
    inner = (np.abs(x / (sx - b["fat"])) ** p + np.abs(y / (sy - b["fat"])) ** p)
    out[skin <= 1.0] = FAT
    out[inner <= 1.0] = MUSCLE
    for cx, cy, ax, ay in b["lungs"]:
        out[((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1.0] = LUNG
    out[np.hypot(x - b["spine"][0], y - b["spine"][1]) < 16] = BONE
    out[np.hypot(x - b["aorta"][0], y - b["aorta"][1]) < 11] = BLOOD
    lx, ly, lr = b["liver"]
    liver = (np.hypot(x - lx, y - ly) < lr) & (w > b["liver_w"])
    out[liver] = LIVER
    return out


def _body(rng: np.random.Generator) -> dict:
    hw, hh = rng.uniform(150, 195), rng.uniform(100, 130)
    return dict(half_w=hw, half_h=hh, power=rng.uniform(2.2, 3.0), fat=rng.uniform(8, 22),
                lungs=[(-0.45 * hw, 5.0, 0.33 * hw, 0.55 * hh), (0.5 * hw, 10.0, 0.3 * hw, 0.55 * hh)],
                spine=(0.0, hh - 35.0), aorta=(28.0, hh - 62.0),
                liver=(-0.2 * hw, 0.25 * hh, rng.uniform(55, 80)), liver_w=rng.uniform(55, 80))


# -- geometry helpers -----------------------------------------------------------------------------------

def _orthonormal(rng: np.random.Generator) -> np.ndarray:
    """A double-oblique short-axis orientation (columns: row dir, column dir, normal)."""
    n = np.array([0.55, 0.45, -0.70]) + rng.normal(0, 0.12, size=3)
    n /= np.linalg.norm(n)
    r = np.cross(n, [0.0, 0.0, 1.0]) + rng.normal(0, 0.1, size=3)
    r -= (r @ n) * n
    r /= np.linalg.norm(r)
    c = np.cross(n, r)
    return np.stack([r, c, n], axis=1)


def _rot2(deg: float) -> np.ndarray:
    t = np.deg2rad(deg)
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


def _coil_field(rng: np.random.Generator, ratio: float, body: dict):
    """Surface-coil sensitivity (anterior + posterior elements) as a function of body-frame (x, y),
    scaled so its max/min over the chest is about ``ratio``."""
    hw, hh = body["half_w"], body["half_h"]
    elems = [(rng.uniform(-0.6, 0.6) * hw, -hh - 10.0, rng.uniform(0.6, 1.4)) for _ in range(2)] + \
            [(rng.uniform(-0.6, 0.6) * hw, hh + 10.0, rng.uniform(0.3, 1.0)) for _ in range(2)]
    s = rng.uniform(90, 160)

    def raw(x, y):
        f = np.zeros_like(x, dtype=np.float64)
        for ex, ey, g in elems:
            f += g / (1.0 + ((x - ex) ** 2 + (y - ey) ** 2) / s ** 2)
        return f

    gx, gy = np.meshgrid(np.linspace(-hw, hw, 41), np.linspace(-hh, hh, 29))
    inside = (np.abs(gx / hw) ** 2.5 + np.abs(gy / hh) ** 2.5) <= 1.0
    vals = raw(gx, gy)[inside]
    lo, hi = float(vals.min()), float(vals.max())
    gamma = np.log(max(ratio, 1.0)) / max(np.log(hi / lo), 1e-6)  # reshape to the wanted ratio

    def field(x, y):
        return (raw(x, y) / hi) ** gamma

    return field


# -- the study -------------------------------------------------------------------------------------------

def _draw(rng: np.random.Generator, spec: EvalSpec) -> dict:
    vendor = spec.vendor or str(rng.choice(list(VENDORS)))
    slices = spec.slices or int(rng.integers(6, 17))
    modes = ["12bit", "0-1000", "vendor"]
    intensity = {k: spec.intensity or str(rng.choice(modes)) for k in ("bssfp", "lge", "t2")}
    lge_matrix = spec.matrix or int(rng.choice([128, 160, 192, 208, 224, 256, 288, 320]))
    return dict(vendor=vendor, slices=slices, intensity=intensity, lge_matrix=lge_matrix,
                coil=spec.coil_shading if spec.coil_shading is not None else float(rng.uniform(1.2, 3.5)),
                mis=spec.misregistration_mm if spec.misregistration_mm is not None else float(rng.uniform(1.0, 7.0)))


def _series_grid(rng: np.random.Generator, key: str, lge_matrix: int,
                 fixed_rows: bool = False) -> tuple[int, int, float, float]:
    """(rows, cols, row spacing, col spacing) of one series; FOV 300-400 mm; ``fixed_rows``: every
    series gets the LGE's rows (drawn all the same, so the other draws do not change)."""
    fov = rng.uniform(300, 400)
    rows = lge_matrix if key == "lge" else int(rng.choice([128, 144, 160, 192, 208, 224, 256, 288]))
    rows = lge_matrix if fixed_rows else rows
    cols = rows if rng.uniform() < 0.6 else int(round(rows * rng.uniform(1.0, 1.33) / 8) * 8)
    px = fov / max(rows, cols)
    return rows, cols, px, px


def _scaled(signal: np.ndarray, mode: str, rng: np.random.Generator) -> tuple[np.ndarray, float, float, int]:
    """(stored uint16, slope, intercept, bits stored) for one series' signal."""
    top = float(np.percentile(signal, 99.9)) or 1.0
    if mode == "12bit":
        target = rng.uniform(1800, 4095) / float(signal.max() / top)
        stored = np.clip(np.rint(signal / top * target * 0.98), 0, 4095)
        return stored.astype(np.uint16), 1.0, 0.0, 12
    if mode == "0-1000":
        stored = np.clip(np.rint(signal / float(signal.max()) * rng.uniform(600, 1000)), 0, 1000)
        return stored.astype(np.uint16), 1.0, 0.0, 16
    # vendor: stored integers up to ~30000 with an arbitrary slope (values in "scanner units")
    stored = np.clip(np.rint(signal / float(signal.max()) * rng.uniform(8000, 30000)), 0, 65535).astype(np.uint16)
    slope = float(np.exp(rng.uniform(np.log(0.003), np.log(40.0))))
    return stored, round(slope, 6), 0.0, 16


def _label_on_lge(a: dict, heart: dict, lge_geom: dict) -> np.ndarray:
    """Label of the LGE grid at pixel and slice centres (no displacement: LGE is the reference)."""
    pts = lge_geom["points"]  # (z, rows, cols, 3)
    hu, hv, hw = _to_heart(pts, heart, np.zeros(3), 0.0)
    t = np.zeros(pts.shape[:3], dtype=np.int16)
    _heart_tissue(a, hu, hv, hw, t)
    lab = np.zeros(t.shape, dtype=np.uint8)
    rvb = t == BLOOD + 100
    t[rvb] = 0
    lab[:] = _TISSUE_LABEL[np.clip(t, 0, len(_TISSUE_LABEL) - 1)]
    lab[(t == 0) & ~rvb] = BG
    lab[rvb] = RV_L
    return lab


def _to_heart(p: np.ndarray, heart: dict, shift_uvw: np.ndarray, rot_deg: float):
    d = p - heart["centre"]
    u = d @ heart["eu"]
    v = d @ heart["ev"]
    w = d @ heart["ew"] + heart["w_base_offset"]
    # the heart displaced by (shift, rotation) in this slice: sample the displaced heart
    u, v = u - shift_uvw[0], v - shift_uvw[1]
    if rot_deg:
        R = _rot2(-rot_deg)
        u, v = R[0, 0] * u + R[0, 1] * v, R[1, 0] * u + R[1, 1] * v
    return u, v, w - shift_uvw[2]


def truth_figures(label: np.ndarray, voxel_ml: float, slices: Sequence[int] | None = None) -> dict[str, float]:
    """Myocardial, scar and edema-region volume (mL) and burdens (%) of a label (optionally some slices)."""
    lab = label if slices is None else label[np.asarray(slices, dtype=int)]
    myo = float(np.isin(lab, (MYO_L, EDEMA_L, SCAR_L)).sum()) * voxel_ml
    scar = float((lab == SCAR_L).sum()) * voxel_ml
    edema = float(np.isin(lab, (EDEMA_L, SCAR_L)).sum()) * voxel_ml
    return {"myocardium_ml": myo, "scar_ml": scar, "edema_ml": edema,
            "scar_burden_pct": 100.0 * scar / myo if myo else 0.0,
            "edema_burden_pct": 100.0 * edema / myo if myo else 0.0}


def make_study(seed: int, spec: EvalSpec = EvalSpec()) -> EvalStudy:
    """Render one evaluation study; the same ``seed`` and ``spec`` give the same study."""
    rng = np.random.default_rng([seed, 7331])
    d = _draw(rng, spec)
    a = _anatomy(rng, spec)
    body = _body(rng)
    frame = _orthonormal(rng)
    r_dir, c_dir, n_dir = frame[:, 0], frame[:, 1], frame[:, 2]
    # LV long axis: the stack normal tilted by a small planning error
    tilt = np.deg2rad(rng.uniform(0, 6))
    az = rng.uniform(0, 2 * np.pi)
    ew = n_dir * np.cos(tilt) + np.sin(tilt) * (np.cos(az) * r_dir + np.sin(az) * c_dir)
    ew /= np.linalg.norm(ew)
    eu = r_dir - (r_dir @ ew) * ew
    eu /= np.linalg.norm(eu)
    ev = np.cross(ew, eu)
    body_centre = np.array([rng.uniform(-15, 15), rng.uniform(-15, 15), rng.uniform(-40, 40)])
    heart_xy = np.array([rng.uniform(10, 40), rng.uniform(-35, -10)])  # left-anterior of the chest centre
    heart_centre = body_centre + heart_xy[0] * r_dir + heart_xy[1] * c_dir
    # stack planning: covers base to apex with some margin, spacing 8-12 mm
    spacing = rng.uniform(8.0, 12.0)
    n = d["slices"]
    cover = (n - 1) * spacing
    w_first = rng.uniform(-0.6 * spacing, 0.2 * spacing) + max(0.0, (a["length"] - cover) / 2.0) * (cover < a["length"])
    heart = dict(centre=heart_centre, eu=eu, ev=ev, ew=ew, w_base_offset=0.0)
    thickness = {k: min(spacing, rng.uniform(6.0, 10.0)) for k in ("bssfp", "lge", "t2")}
    field = _coil_field(rng, d["coil"], body)

    # scar width for a target burden: bisection on the LGE label (cheap, no image rendering)
    lge_rows, lge_cols, lge_px, _ = _series_grid(rng, "lge", d["lge_matrix"])
    grids = {"lge": (lge_rows, lge_cols, lge_px)}
    for key in ("bssfp", "t2"):
        r_, c_, p_, _ = _series_grid(rng, key, d["lge_matrix"], fixed_rows=spec.matrix is not None)
        grids[key] = (r_, c_, p_)
    stack_centre = heart_centre + rng.uniform(-25, 25) * r_dir + rng.uniform(-25, 25) * c_dir

    def geometry(key: str) -> dict:
        rows, cols, px = grids[key]
        ws = w_first + spacing * np.arange(n)
        centres = heart_centre[None, :] + (ws[:, None]) * n_dir[None, :]
        # in-plane FOV centre = stack_centre projected into each plane
        off_r = (stack_centre - heart_centre) @ r_dir
        off_c = (stack_centre - heart_centre) @ c_dir
        jr, jc = np.arange(cols) - (cols - 1) / 2.0, np.arange(rows) - (rows - 1) / 2.0
        pts = (centres[:, None, None, :] + (off_r + jr[None, None, :, None] * px) * r_dir +
               (off_c + jc[None, :, None, None] * px) * c_dir)
        origin = pts[0, 0, 0]
        return dict(points=pts, origin=origin, px=px, rows=rows, cols=cols, positions=(ws - ws[0]))

    geoms = {k: geometry(k) for k in ("lge", "bssfp", "t2")}
    target = spec.scar_burden if spec.scar_burden is not None else float(rng.choice([0.0, *rng.uniform(3, 40, 9)]))
    if target <= 0:
        a["has_scar"] = False
    else:
        def burden(half: float) -> float:
            a["scar_half"] = half
            return truth_figures(_label_on_lge(a, heart, geoms["lge"]), 1.0)["scar_burden_pct"]

        max_half = np.deg2rad(110.0)
        while burden(max_half) < target and a["scar_depth"] < 1.0:  # too wide: make the scar deeper instead
            a["scar_depth"] = min(1.0, a["scar_depth"] + 0.15)
            a["transmural"] = a["scar_depth"] >= 1.0
        lo_h, hi_h = np.deg2rad(3.0), max_half
        for _ in range(16):
            mid = 0.5 * (lo_h + hi_h)
            if burden(mid) < target:
                lo_h = mid
            else:
                hi_h = mid
        a["scar_half"] = 0.5 * (lo_h + hi_h)
        a["edema_margin"] = min(a["edema_margin"], np.deg2rad(160.0) - a["scar_half"])
    label = _label_on_lge(a, heart, geoms["lge"])
    contrast = {k: np.asarray(SIGNAL[k]) * rng.uniform(0.85, 1.15, size=len(SIGNAL[k])) for k in SIGNAL}
    series: dict[str, SeriesData] = {}
    vendor = VENDORS[d["vendor"]]
    for key in ("bssfp", "lge", "t2"):
        g = geoms[key]
        rows, cols, px = g["rows"], g["cols"], g["px"]
        img = np.zeros((n, rows, cols), dtype=np.float64)
        noise = rng.uniform(0.012, 0.035) * float(contrast[key].max())
        for k in range(n):
            if key == "lge":
                shift, rot = np.zeros(3), 0.0
            else:
                m = d["mis"]
                shift = np.array([rng.uniform(-m, m), rng.uniform(-m, m), rng.uniform(-2.5, 2.5)])
                rot = rng.uniform(-4, 4)
            acc = np.zeros((rows, cols))
            # 2 x 2 in-plane supersampling x 2 through-plane samples (partial volume)
            for dr in (-0.25, 0.25):
                for dc in (-0.25, 0.25):
                    for dw in (-0.25, 0.25):
                        p = g["points"][k] + (dc * px) * r_dir + (dr * px) * c_dir + dw * thickness[key] * n_dir
                        hu, hv, hw = _to_heart(p, heart, shift, rot)
                        bx = (p - body_centre) @ r_dir
                        by = (p - body_centre) @ c_dir
                        t = _body_tissue(body, bx, by, hw)
                        _heart_tissue(a, hu, hv, hw, t)
                        t[t == BLOOD + 100] = BLOOD
                        acc += contrast[key][t]
            acc /= 8.0
            p = g["points"][k]
            coil = field((p - body_centre) @ r_dir, (p - body_centre) @ c_dir)
            sig = acc * coil
            img[k] = np.hypot(sig + rng.normal(0, noise, sig.shape), rng.normal(0, noise, sig.shape))  # Rician
        stored, slope, intercept, bits = _scaled(img, d["intensity"][key], rng)
        attrs = dict(vendor[key])
        attrs["Manufacturer"] = {"siemens": "SIEMENS", "ge": "GE MEDICAL SYSTEMS", "philips": "Philips Medical Systems",
                                 "anonymised": ""}[d["vendor"]]
        series[key] = SeriesData(key=key, stored=stored, slope=slope, intercept=intercept, bits_stored=bits,
                                 origin=g["origin"], row_dir=r_dir, col_dir=c_dir, normal=n_dir, pixel_mm=(px, px),
                                 slice_positions=g["positions"], thickness=thickness[key], attrs=attrs)
    voxel_ml = geoms["lge"]["px"] ** 2 * spacing / 1000.0
    truth = truth_figures(label, voxel_ml)
    desc = dict(d, territory=a["territory"], scar_every_slice=a["every"], transmural=a["transmural"],
                has_scar=a["has_scar"], spacing_mm=round(spacing, 2),
                matrices={k: (geoms[k]["rows"], geoms[k]["cols"]) for k in geoms})
    return EvalStudy(seed=seed, series=series, label=label, truth=truth, description=desc)


# -- DICOM ------------------------------------------------------------------------------------------------

_ROOT = "1.2.826.0.1.3680043.10.1446.77."


def _uid(*parts: object) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(prefix=_ROOT, entropy_srcs=[repr(parts)]))


def _ds(v: float) -> str:
    s = f"{v:.10g}"
    return s if len(s) <= 16 else f"{v:.8g}"


def write_study(study: EvalStudy, out_dir: str | Path, *, extras: bool = True) -> list[Path]:
    """Write the study as MR Image Storage files (one folder per series); returns all paths.

    ``extras`` adds what a real exam also holds: a three-plane localiser (bright-blood, like the cine)
    and a single-slice four-chamber cine, which series identification must not pick."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

    out_dir = Path(out_dir)
    seed = study.seed
    study_uid, for_uid = _uid(seed, "study"), _uid(seed, "for")
    date = (_dt.date(2026, 3, 1) + _dt.timedelta(days=seed % 200)).strftime("%Y%m%d")
    paths: list[Path] = []

    def write(ds: Dataset, path: Path) -> None:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)

    def base(number: int, series_uid: str, attrs: dict, k: int) -> Dataset:
        ds = Dataset()
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = _uid(seed, series_uid, k)
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.PatientName, ds.PatientID = f"EVALPHANTOM^{seed}", f"EVAL-CMR-{seed:05d}"
        ds.PatientBirthDate, ds.PatientSex = "", "O"
        ds.PatientIdentityRemoved = "YES"
        ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime = study_uid, date, "083000"
        ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = f"E{seed}", "", ""
        ds.StudyDescription = "Cardiac viability (evaluation phantom)"
        ds.Modality = "MR"
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = number
        ds.InstanceNumber = k + 1
        ds.FrameOfReferenceUID = for_uid
        ds.PositionReferenceIndicator = ""
        ds.BodyPartExamined = "HEART"
        ds.PatientPosition = "HFS"
        ds.MRAcquisitionType = "2D"
        ds.MagneticFieldStrength = "1.5"
        ds.ImagingFrequency = "63.6"
        ds.ImagedNucleus = "1H"
        for key, value in attrs.items():
            if isinstance(value, float):
                value = _ds(value)
            setattr(ds, key, value)
        if "ImageType" not in attrs:
            ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        return ds

    numbers = {"bssfp": 5, "t2": 9, "lge": 14}
    for key, s in study.series.items():
        series_uid = _uid(seed, "series", key)
        for k in range(s.stored.shape[0]):
            ds = base(numbers[key], series_uid, s.attrs, k)
            pos = s.origin + s.slice_positions[k] * s.normal
            ds.ImagePositionPatient = [_ds(float(x)) for x in pos]
            ds.ImageOrientationPatient = [_ds(float(x)) for x in (*s.row_dir, *s.col_dir)]
            ds.PixelSpacing = [_ds(s.pixel_mm[0]), _ds(s.pixel_mm[1])]
            ds.SliceThickness = _ds(s.thickness)
            if len(s.slice_positions) > 1:
                ds.SpacingBetweenSlices = _ds(float(s.slice_positions[1] - s.slice_positions[0]))
            ds.SliceLocation = _ds(float(pos @ s.normal))
            if key == "bssfp":
                ds.TriggerTime, ds.CardiacNumberOfImages = "0", 25
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.Rows, ds.Columns = int(s.stored.shape[1]), int(s.stored.shape[2])
            ds.BitsAllocated, ds.BitsStored = 16, s.bits_stored
            ds.HighBit, ds.PixelRepresentation = s.bits_stored - 1, 0
            if s.slope != 1.0 or s.intercept != 0.0:
                ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = _ds(s.slope), _ds(s.intercept), "US"
            ds.PixelData = np.ascontiguousarray(s.stored[k].astype("<u2")).tobytes()
            write(ds, out_dir / key / f"IM{k + 1:04d}.dcm")
    if extras:
        lge = study.series["lge"]
        bss = study.series["bssfp"]
        loc_uid = _uid(seed, "series", "localiser")
        r, c, nrm = lge.row_dir, lge.col_dir, lge.normal
        planes = [(np.array([1.0, 0, 0]), np.array([0, 1.0, 0])), (np.array([0, 1.0, 0]), np.array([0, 0, -1.0])),
                  (np.array([1.0, 0, 0]), np.array([0, 0, -1.0]))]
        loc_attrs = dict(bss.attrs, SeriesDescription="localizer_3plane", ProtocolName="localizer",
                         SequenceName=bss.attrs.get("SequenceName") or "")
        for k, (pr, pc) in enumerate(planes):
            ds = base(1, loc_uid, loc_attrs, k)
            ds.ImagePositionPatient = [_ds(float(x)) for x in (-200 * pr - 200 * pc)]
            ds.ImageOrientationPatient = [_ds(float(x)) for x in (*pr, *pc)]
            ds.PixelSpacing, ds.SliceThickness = ["1.5625", "1.5625"], "8"
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.Rows = ds.Columns = 256
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
            rng = np.random.default_rng([seed, k, 11])
            ds.PixelData = rng.integers(0, 400, size=(256, 256)).astype("<u2").tobytes()
            write(ds, out_dir / "localiser" / f"IM{k + 1:04d}.dcm")
        lax_uid = _uid(seed, "series", "4ch")
        lax_desc = {"siemens": "cine_trufi_4ch", "ge": "FIESTA CINE 4CH", "philips": "sBTFE_BH 4CH",
                    "anonymised": "Series 4"}[study.description["vendor"]]
        ds = base(4, lax_uid, dict(bss.attrs, SeriesDescription=lax_desc), 0)
        four_r = r * np.cos(1.2) + nrm * np.sin(1.2)
        ds.ImagePositionPatient = [_ds(float(x)) for x in (bss.origin + 0.5 * bss.slice_positions[-1] * nrm)]
        ds.ImageOrientationPatient = [_ds(float(x)) for x in (*four_r, *c)]
        ds.PixelSpacing, ds.SliceThickness = [_ds(bss.pixel_mm[0])] * 2, "8"
        ds.TriggerTime, ds.CardiacNumberOfImages = "0", 25
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = int(bss.stored.shape[1]), int(bss.stored.shape[2])
        ds.BitsAllocated, ds.BitsStored = 16, bss.bits_stored
        ds.HighBit, ds.PixelRepresentation = bss.bits_stored - 1, 0
        ds.PixelData = np.ascontiguousarray(bss.stored[len(bss.stored) // 2].astype("<u2")).tobytes()
        write(ds, out_dir / "lax" / "IM0001.dcm")
    return paths
