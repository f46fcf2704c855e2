"""Small COCA-format folders and phantom CT studies for the calcium tests (NRRD + DICOM + CSV)."""
from __future__ import annotations

from pathlib import Path


from synth.dicom import new_study, write_ct_series
from training.calcium.phantom import Phantom, make_phantom
from training.datasets.phantoms import COCA_CLASS_TO_FILE as CLASS_TO_FILE  # noqa: F401 - used by tests
from training.datasets.phantoms import COCA_FILE_SEGMENTS as FILE_SEGMENTS  # noqa: F401
from training.datasets.phantoms import COCA_SMALL, write_coca_folder, write_nrrd  # noqa: F401

SMALL = COCA_SMALL


def make_coca_folder(root: Path, exams: dict[str, str], crop_exam: str | None = None) -> dict[str, Phantom]:
    """``exams``: id -> 'train'|'test'.  Writes nrrd/<id>.nrrd, dicom/<id>/*.dcm, train_test_split.csv (and the
    generated-data marker).  ``crop_exam``'s NRRD is cropped to the labelled extent, as Slicer may write it."""
    return write_coca_folder(root, exams, seed0=100, crop_exam=crop_exam, phantom=COCA_SMALL)


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


