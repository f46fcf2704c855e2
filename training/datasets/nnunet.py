"""``cardionode datasets nnunet-export {coca,myops} SRC OUT``: a dataset as an nnU-Net v2 raw dataset, so the
baseline the docs compare with (nnU-Net) can be trained on exactly the same cases::

    OUT/Dataset<ID>_<Name>/imagesTr/<case>_0000.nii.gz [_0001, _0002]   training split
    OUT/Dataset<ID>_<Name>/labelsTr/<case>.nii.gz
    OUT/Dataset<ID>_<Name>/imagesTs/...                                 test split (no labels)
    OUT/Dataset<ID>_<Name>/dataset.json                                 channel_names, labels, numTraining, file_ending

- ``coca``: channel 0 = CT (HU, int16), labels = the model's 8 COCA classes (0 background), placed on the
  CT by position.  A CT with missing slices is refused (nnU-Net needs a regular grid).
- ``myops``: channels bSSFP, LGE, T2w after our slice matching, registration and ROI crop (or, with
  ``--prealigned``, the release as distributed), 1 mm pixels; labels 0 background, 1 normal myocardium,
  2 edema, 3 scar (+ 4 LV, 5 RV blood pool when the release has them).
A source folder carrying the generated-data marker passes it on to the export.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from .marker import find_marker, write_marker

__all__ = ["export_coca", "export_myops", "main"]


def _target(out: Path, dataset_id: int, name: str) -> Path:
    if not 1 <= dataset_id <= 999:
        raise ValueError(f"--dataset-id {dataset_id}: nnU-Net dataset ids are 1..999")
    root = Path(out) / f"Dataset{dataset_id:03d}_{name}"
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root}: exists and is not empty; choose another --dataset-id/--name or remove it")
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root


def _dataset_json(root: Path, channels: dict[str, str], labels: dict[str, int], n_train: int, source: Path,
                  description: str) -> None:
    found = find_marker(source)
    info = {"channel_names": channels, "labels": labels, "numTraining": n_train, "file_ending": ".nii.gz",
            "name": root.name, "description": description, "source": str(Path(source).resolve()),
            "generated": bool(found)}
    (root / "dataset.json").write_text(json.dumps(info, indent=1))
    if found:
        write_marker(root, generator=str(found[1].get("generator")), layout=f"nnU-Net v2 ({root.name})", cases=n_train)


def export_coca(src: Path, out: Path, *, dataset_id: int = 501, name: str = "COCACalcium",
                dicom_dir: Path | None = None, exam_map: Path | None = None, aliases: dict | None = None) -> Path:
    from pipelines.calcium.labels import CLASSES
    from training.calcium.coca import CocaDataset, CocaError
    from training.myops.dataset import volume_to_nifti

    ds = CocaDataset(src, aliases=aliases, dicom_dir=dicom_dir, exam_map=exam_map)
    split = ds.split()
    exams = [e for e in ds.exams() if e in split]
    for e in exams:
        ds.ct_series(e)
    root = _target(out, dataset_id, name)
    n_train = 0
    for exam in exams:
        vol, labels, dist = ds.aligned(exam)
        gaps = np.diff(dist)
        if len(gaps) and gaps.max() > 1.5 * np.median(gaps):
            raise CocaError(f"exam {exam}: {ds.ct_folder(exam)} has missing slices; nnU-Net needs a regular grid")
        case = f"coca_{exam}"
        if split[exam] == "train":
            volume_to_nifti(vol, root / "imagesTr" / f"{case}_0000.nii.gz", dtype=np.int16)
            volume_to_nifti(vol.with_array(labels), root / "labelsTr" / f"{case}.nii.gz", dtype=np.uint8)
            n_train += 1
        else:
            volume_to_nifti(vol, root / "imagesTs" / f"{case}_0000.nii.gz", dtype=np.int16)
    _dataset_json(root, {"0": "CT"}, {"background": 0, **{c.name: c.value for c in CLASSES}}, n_train, Path(src),
                  "COCA_Segmentations calcium classes on the CT grid (cardionode datasets nnunet-export coca)")
    return root


def export_myops(src: Path, out: Path, *, dataset_id: int = 502, name: str = "MyoPS380", prealigned: bool = False,
                 split: str = "every5th", seed: int = 0, labels_json: str | None = None) -> Path:
    from pipelines.imaging import Volume
    from pipelines.myops.preprocess import PreprocessConfig
    from training.myops.dataset import MyoPSDataset, split_cases, volume_to_nifti
    from training.myops.labels import MYOPS2020, LabelConvention
    from training.myops.prepare import prepare_case, prepare_prealigned

    conv = LabelConvention.from_mapping(json.loads(labels_json)) if labels_json else MYOPS2020
    ds = MyoPSDataset(src, conv, prealigned=prealigned)
    ds.check()
    train_ids, test_ids = split_cases(ds.case_ids, split, seed)
    cfg = PreprocessConfig()
    root = _target(out, dataset_id, name)
    for case_id in ds.case_ids:
        case = ds.load(case_id)
        pc = (prepare_prealigned if prealigned else prepare_case)(case, cfg)
        dz = float(case.volumes["lge"].spacing[0])
        grid = Volume(array=np.zeros(pc.label.shape, np.float32),
                      spacing=(dz, cfg.grid_spacing_mm, cfg.grid_spacing_mm),
                      origin=(0.0, 0.0, 0.0), direction=np.eye(3), headers=[], refs=[])
        part = "Tr" if case_id in train_ids else "Ts"
        for c in range(pc.image.shape[1]):
            volume_to_nifti(grid.with_array(pc.image[:, c].astype(np.float32)),
                            root / f"images{part}" / f"{case_id}_{c:04d}.nii.gz", dtype=np.float32)
        if part == "Tr":
            volume_to_nifti(grid.with_array(pc.label), root / "labelsTr" / f"{case_id}.nii.gz", dtype=np.uint8)
    names = ["background", "normal myocardium", "edema", "scar", "LV blood pool", "RV blood pool"]
    _dataset_json(root, {str(i): s for i, s in enumerate(cfg.channels)},
                  {names[i]: i for i in range(conv.num_classes)}, len(train_ids), Path(src),
                  "MyoPS380 cases after CardioNode's "
                  f"{'intensity normalisation' if prealigned else 'matching, registration and ROI crop'}"
                  f"; split {split}: {len(train_ids)} train / {len(test_ids)} test")
    return root


def main(argv: Sequence[str] | None = None) -> int:
    from training.runs.cli import one_line_errors

    p = argparse.ArgumentParser(prog="cardionode datasets nnunet-export", description=__doc__.splitlines()[0])
    p.add_argument("layout", choices=("coca", "myops"))
    p.add_argument("src", type=Path, help="COCA-format or MyoPS380-format folder")
    p.add_argument("out", type=Path, help="nnU-Net raw folder (nnUNet_raw)")
    p.add_argument("--dataset-id", type=int, default=None, help="default 501 (coca) / 502 (myops)")
    p.add_argument("--name", default=None, help="default COCACalcium / MyoPS380")
    p.add_argument("--dicom-dir", type=Path, default=None, help="coca: folder with the CTs by exam id")
    p.add_argument("--exam-map", type=Path, default=None, help="coca: CSV exam,folder")
    p.add_argument("--prealigned", action="store_true", help="myops: the release as distributed (128x128, aligned)")
    p.add_argument("--split", choices=("every5th", "random"), default="every5th", help="myops: test split")
    p.add_argument("--labels", default=None, help="myops: label values as JSON (see docs/myops.md)")
    a = p.parse_args(argv)

    @one_line_errors
    def run() -> int:
        if a.layout == "coca":
            root = export_coca(a.src, a.out, dataset_id=a.dataset_id or 501, name=a.name or "COCACalcium",
                               dicom_dir=a.dicom_dir, exam_map=a.exam_map)
        else:
            root = export_myops(a.src, a.out, dataset_id=a.dataset_id or 502, name=a.name or "MyoPS380",
                                prealigned=a.prealigned, split=a.split, labels_json=a.labels)
        info = json.loads((root / "dataset.json").read_text())
        n_test = len(list((root / 'imagesTs').glob('*_0000.nii.gz')))
        print(f"wrote {root}: {info['numTraining']} training cases, {n_test} test cases, labels {info['labels']}")
        return 0

    return run()


if __name__ == "__main__":
    sys.exit(main())
