"""``cardionode datasets make-phantoms {coca,cardiosyntax,myops} OUT``: synthetic phantoms written in
each published layout, so every reader, training, evaluation and export path can be tried without the
real data.  Every folder carries the generated-data marker (:mod:`training.datasets.marker`): models
trained on it are exported as ``synthetic: true`` whatever the options say.

- ``coca``: ``nrrd/<exam>.nrrd`` (Slicer segment names and label values in the header, deliberately not
  in the model's class order), ``dicom/<exam>/*.dcm`` (the CT), ``train_test_split.csv``.
- ``cardiosyntax``: ``dicom/`` cines, ``folds/fold{k}_{train,eval}.json`` (Format 1),
  ``rnn_folds/rnn_fold{k}_{train,eval}.json`` (Format 2), ``test_phantom.json`` (test format).
- ``myops``: ``Raw_data/{bSSFP,LGE,T2w}/caseXXXX.nii.gz`` and ``Raw_data/label/caseXXXX_gt.nii.gz``
  (MyoPS 2020 label values); ``--prealigned`` writes the release as distributed instead (the three
  sequences matched, registered and cropped to 128 x 128 on one grid per case).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .marker import write_marker

__all__ = ["write_coca_folder", "make_coca", "make_cardiosyntax", "make_myops", "main", "COCA_FILE_SEGMENTS"]

#: file label value -> segment name of the generated NRRDs, deliberately NOT in the model's class order
COCA_FILE_SEGMENTS = [(1, "Right Coronary"), (2, "Thoracic Aorta"), (3, "Left Anterior Descending"),
                      (4, "Left Main Coronary"), (5, "Left Circumflex"), (6, "Aortic Valve"), (7, "Mitral Valve"),
                      (8, "Posterior Descending")]
#: model class value (pipelines.calcium.labels) -> file label value
COCA_CLASS_TO_FILE = {8: 1, 6: 2, 3: 3, 2: 4, 4: 5, 7: 6, 5: 7, 1: 8}
#: tiny CTs for tests and quick tries; the default size is the training phantoms' geometry
COCA_SMALL = dict(shape=(20, 64, 64), spacing=(3.0, 5.5, 5.5), plaque_shape="box", noise_hu=8.0)
COCA_FULL = dict(shape=(40, 256, 256), spacing=(3.0, 1.4, 1.4), noise_hu=12.0)


def write_nrrd(path: Path, file_labels_zyx: np.ndarray, spacing_zyx: Sequence[float], origin_xyz) -> None:
    """A Slicer-style label-map NRRD (segment names and label values in the header)."""
    import nrrd

    header = {"type": "unsigned char", "space": "left-posterior-superior",
              "space directions": np.diag([spacing_zyx[2], spacing_zyx[1], spacing_zyx[0]]).astype(float),
              "space origin": np.asarray(origin_xyz, float), "kinds": ["domain", "domain", "domain"],
              "encoding": "gzip"}
    for i, (value, name) in enumerate(COCA_FILE_SEGMENTS):
        header[f"Segment{i}_Name"] = name
        header[f"Segment{i}_LabelValue"] = str(value)
        header[f"Segment{i}_Layer"] = "0"
    nrrd.write(str(path), np.transpose(file_labels_zyx, (2, 1, 0)), header)


def write_coca_folder(root: Path, exams: Mapping[str, str], *, seed0: int = 100, crop_exam: str | None = None,
                      phantom: Mapping | None = None, classes: Sequence[int] | None = tuple(range(1, 9))) -> dict:
    """``exams``: id -> 'train' | 'test'.  Writes nrrd/<id>.nrrd, dicom/<id>/*.dcm, train_test_split.csv and
    the marker; returns {id: Phantom}.  ``crop_exam``'s NRRD is cropped to the labelled extent (origin moved),
    as Slicer may write it."""
    from synth.dicom import new_study, write_ct_series
    from training.calcium.phantom import make_phantom

    root = Path(root)
    (root / "nrrd").mkdir(parents=True, exist_ok=True)
    kw = dict(phantom or COCA_SMALL)
    lut = np.zeros(9, np.uint8)
    for c, f in COCA_CLASS_TO_FILE.items():
        lut[c] = f
    phantoms = {}
    for n, exam in enumerate(exams):
        ph = make_phantom(seed0 + n, classes=classes, **kw)
        phantoms[exam] = ph
        write_ct_series(ph.hu, ph.spacing, root / "dicom" / exam, new_study(seed=seed0 + n), origin_xyz=ph.origin_xyz,
                        seed=seed0 + n)
        flab = lut[ph.labels]
        origin = np.asarray(ph.origin_xyz, float)
        if exam == crop_exam and flab.any():
            z, y, x = np.nonzero(flab)
            lo = np.array([z.min(), y.min(), x.min()])
            hi = np.array([z.max(), y.max(), x.max()]) + 1
            flab = flab[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
            origin = origin + np.array([lo[2] * ph.spacing[2], lo[1] * ph.spacing[1], lo[0] * ph.spacing[0]])
        write_nrrd(root / "nrrd" / f"{exam}.nrrd", flab, ph.spacing, origin)
    lines = ["patient_id,split"] + [f"{e},{s}" for e, s in exams.items()]
    (root / "train_test_split.csv").write_text("\n".join(lines) + "\n")
    write_marker(root, generator="training.calcium.phantom", layout="COCA_Segmentations", cases=len(exams),
                 details={"seeds": [seed0 + n for n in range(len(exams))],
                          "phantom": {k: str(v) for k, v in kw.items()}})
    return phantoms


def make_coca(out: Path, cases: int = 6, seed: int = 0, small: bool = False) -> dict:
    """``cases`` exams (every fifth, at least one, is test), all 8 classes possible."""
    exams = {str(i + 1): ("test" if (i + 1) % 5 == 0 or (cases < 5 and i == cases - 1) else "train")
             for i in range(cases)}
    return write_coca_folder(out, exams, seed0=1000 + 100 * seed, phantom=COCA_SMALL if small else COCA_FULL,
                             classes=None if not small else tuple(range(1, 9)))


def make_cardiosyntax(out: Path, studies: int = 20, seed: int = 0, size: int = 64, folds: int = 5) -> Path:
    """``studies`` training studies split into ``folds`` + a fifth as many (at least 2) held-out test studies."""
    from training.syntax.phantom import make_study
    from training.syntax.phantom_dataset import write_release

    base = 20_000 + 1000 * seed
    train = [make_study(base + i, size) for i in range(studies)]
    test = [make_study(base + 500 + i, size) for i in range(max(2, studies // 5))]
    root = write_release(out, train, test, folds=folds, jpeg_every=3, seed=seed)
    write_marker(out, generator="training.syntax.phantom", layout="CardioSyntax v2",
                 cases={"train": len(train), "test": len(test)}, details={"seeds": [base, base + 500], "size": size})
    return root


def make_myops(out: Path, cases: int = 6, seed: int = 0, prealigned: bool = False) -> Path:
    """``cases`` MyoPS phantoms (case0001..), raw acquisition geometry or pre-aligned 128 x 128."""
    from training.myops.phantom import make_phantom, write_myops_folder

    base = 30_000 + 1000 * seed
    # pre-aligned phantoms are rendered without the breath-hold misalignment: aligned by construction
    phantoms = [(f"case{i + 1:04d}", make_phantom(base + i, misalign=not prealigned)) for i in range(cases)]
    if prealigned:
        raw = _write_myops_prealigned(phantoms, Path(out))
    else:
        raw = write_myops_folder(phantoms, out)
    write_marker(out, generator="training.myops.phantom", layout="MyoPS380" + (" (pre-aligned)" if prealigned else ""),
                 cases=cases, details={"seeds": [base, base + cases - 1]})
    return raw


def _write_myops_prealigned(phantoms, out: Path) -> Path:
    """The release as distributed: our own slice matching, 1 mm grid and ROI crop (ground-truth prior; the
    phantoms are rendered aligned, so no registration is needed), written as one 128 x 128 grid per case."""
    from pipelines.imaging import Volume
    from training.myops.dataset import SEQUENCES, MyoPSCase, volume_to_nifti
    from training.myops.labels import MYOPS2020
    from training.myops.prepare import prepare_case

    from pipelines.myops.preprocess import PreprocessConfig
    from pipelines.myops.registration import RegistrationConfig

    no_registration = PreprocessConfig(registration=RegistrationConfig(enabled=False))
    raw = out / "Raw_data"
    for case_id, case in phantoms:
        pc = prepare_case(MyoPSCase(case_id, case.volumes, case.label), no_registration)
        n = pc.image.shape[0]
        lge = case.volumes["lge"]
        dz = float(lge.spacing[0])
        grid = Volume(array=np.zeros((n, pc.image.shape[2], pc.image.shape[3]), np.float32),
                      spacing=(dz, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=np.eye(3), headers=[], refs=[])
        for c, seq in enumerate(("bssfp", "lge", "t2")):
            volume_to_nifti(grid.with_array(np.rint(pc.image[:, c]).astype(np.float32)),
                            raw / SEQUENCES[seq] / f"{case_id}.nii.gz", dtype=np.int16)
        volume_to_nifti(grid.with_array(MYOPS2020.from_classes(pc.label).astype(np.float32)),
                        raw / "label" / f"{case_id}_gt.nii.gz", dtype=np.int16)
    return raw


def main(argv: Sequence[str] | None = None) -> int:
    from training.runs.cli import one_line_errors

    p = argparse.ArgumentParser(prog="cardionode datasets make-phantoms", description=__doc__.splitlines()[0])
    p.add_argument("layout", choices=("coca", "cardiosyntax", "myops"))
    p.add_argument("out", type=Path)
    p.add_argument("--cases", type=int, default=None,
                   help="exams / training studies / cases (default coca 6, cardiosyntax 20, myops 6)")
    p.add_argument("--seed", type=int, default=0, help="phantom seed offset (same seed, same data)")
    p.add_argument("--small", action="store_true", help="coca: tiny 64x64 CTs (tests, quick tries)")
    p.add_argument("--size", type=int, default=64, help="cardiosyntax: frame size in pixels")
    p.add_argument("--prealigned", action="store_true", help="myops: the pre-aligned 128x128 release layout")
    p.add_argument("--force", action="store_true", help="write into a folder that is not empty")
    a = p.parse_args(argv)

    @one_line_errors
    def run() -> int:
        if a.out.exists() and any(a.out.iterdir()) and not a.force:
            raise FileExistsError(f"{a.out}: not empty; choose a new folder (or --force)")
        t0 = time.perf_counter()
        if a.layout == "coca":
            make_coca(a.out, a.cases or 6, a.seed, a.small)
        elif a.layout == "cardiosyntax":
            make_cardiosyntax(a.out, a.cases or 20, a.seed, a.size)
        else:
            make_myops(a.out, a.cases or 6, a.seed, a.prealigned)
        print(f"wrote {a.layout} phantoms to {a.out} in {time.perf_counter() - t0:.0f} s (generated data: "
              f"marker {a.out / 'CARDIONODE_GENERATED.json'})")
        return 0

    return run()


if __name__ == "__main__":
    sys.exit(main())
