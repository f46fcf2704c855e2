"""Small COCA-format folders and phantom CT studies for the calcium tests (NRRD + DICOM + CSV)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from training.calcium.phantom import Phantom, make_phantom
from training.synth.dicom import new_study, write_ct_series

#: file label value -> segment name, deliberately NOT in the model's class order
FILE_SEGMENTS = [(1, "Right Coronary"), (2, "Thoracic Aorta"), (3, "Left Anterior Descending"), (4, "Left Main Coronary"),
                 (5, "Left Circumflex"), (6, "Aortic Valve"), (7, "Mitral Valve"), (8, "Posterior Descending")]
#: model class value (pipelines.calcium.labels) -> file label value
CLASS_TO_FILE = {8: 1, 6: 2, 3: 3, 2: 4, 4: 5, 7: 6, 5: 7, 1: 8}

SMALL = dict(shape=(20, 64, 64), spacing=(3.0, 5.5, 5.5), plaque_shape="box", noise_hu=8.0)


def write_nrrd(path: Path, file_labels_zyx: np.ndarray, spacing_zyx, origin_xyz) -> None:
    import nrrd

    header = {
        "type": "unsigned char",
        "space": "left-posterior-superior",
        "space directions": np.diag([spacing_zyx[2], spacing_zyx[1], spacing_zyx[0]]).astype(float),
        "space origin": np.asarray(origin_xyz, float),
        "kinds": ["domain", "domain", "domain"],
        "encoding": "gzip",
    }
    for i, (value, name) in enumerate(FILE_SEGMENTS):
        header[f"Segment{i}_Name"] = name
        header[f"Segment{i}_LabelValue"] = str(value)
        header[f"Segment{i}_Layer"] = "0"
    nrrd.write(str(path), np.transpose(file_labels_zyx, (2, 1, 0)), header)


def make_coca_folder(root: Path, exams: dict[str, str], crop_exam: str | None = None) -> dict[str, Phantom]:
    """``exams``: id -> 'train'|'test'.  Writes nrrd/<id>.nrrd, dicom/<id>/*.dcm, train_test_split.csv.
    ``crop_exam``'s NRRD is cropped to the labelled extent (origin moved), as Slicer may write it."""
    (root / "nrrd").mkdir(parents=True)
    phantoms = {}
    lut = np.zeros(9, np.uint8)
    for c, f in CLASS_TO_FILE.items():
        lut[c] = f
    for n, exam in enumerate(exams):
        ph = make_phantom(100 + n, classes=range(1, 9), **SMALL)
        phantoms[exam] = ph
        write_ct_series(ph.hu, ph.spacing, root / "dicom" / exam, new_study(seed=100 + n), origin_xyz=ph.origin_xyz,
                        seed=100 + n)
        flab = lut[ph.labels]
        origin = np.asarray(ph.origin_xyz, float)
        if exam == crop_exam:
            z, y, x = np.nonzero(flab)
            lo = np.array([z.min(), y.min(), x.min()])
            hi = np.array([z.max(), y.max(), x.max()]) + 1
            flab = flab[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
            origin = origin + np.array([lo[2] * ph.spacing[2], lo[1] * ph.spacing[1], lo[0] * ph.spacing[0]])
        write_nrrd(root / "nrrd" / f"{exam}.nrrd", flab, ph.spacing, origin)
    lines = ["patient_id,split"] + [f"{e},{s}" for e, s in exams.items()]
    (root / "train_test_split.csv").write_text("\n".join(lines) + "\n")
    return phantoms


# ---- phantom CT studies for pipeline / node tests ------------------------------------------------

#: the study the pipeline and node tests send: box plaques (hand-computable), in-distribution geometry
STUDY_PHANTOM = dict(seed=4242, shape=(56, 256, 256), spacing=(3.0, 1.4, 1.4), plaque_shape="box", noise_hu=10.0,
                     classes=(2, 3, 4, 5, 6, 7, 8))


def phantom_ct_study(out_dir: Path, **overrides) -> tuple[list[Path], Phantom]:
    kw = {**STUDY_PHANTOM, **overrides}
    seed = kw.pop("seed")
    ph = make_phantom(seed, **kw)
    files = write_ct_series(ph.hu, ph.spacing, out_dir, new_study(seed=seed), origin_xyz=ph.origin_xyz, seed=seed,
                            series_description="Chest CT 3.0 mm")
    return files, ph


def sr_groups(sr) -> dict[str, dict[str, float | str]]:
    """{tracking identifier: {concept code value: numeric value or coded value}} of a TID 1500 SR."""
    out: dict[str, dict[str, float | str]] = {}

    def walk(items, current):
        for item in items:
            code = str(item.ConceptNameCodeSequence[0].CodeValue) if "ConceptNameCodeSequence" in item else ""
            if item.get("ValueType") == "CONTAINER" and code == "125007":
                tid = next(str(c.TextValue) for c in item.ContentSequence
                           if str(c.ConceptNameCodeSequence[0].CodeValue) == "112039")
                out[tid] = {}
                walk(item.ContentSequence, out[tid])
                continue
            if current is not None and item.get("ValueType") == "NUM" and item.get("MeasuredValueSequence"):
                current[code] = float(item.MeasuredValueSequence[0].NumericValue)
            if current is not None and item.get("ValueType") == "CODE":
                current.setdefault(code, str(item.ConceptCodeSequence[0].CodeValue))
            if "ContentSequence" in item:
                walk(item.ContentSequence, current)

    walk(sr.ContentSequence, None)
    return out


def dciodvfy_errors(path: Path) -> list[str]:
    import subprocess

    r = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (r.stdout + r.stderr).splitlines() if line.startswith("Error")]
