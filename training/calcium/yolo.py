"""COCA NRRD + CT -> a YOLO training set, with the published nrrd_to_yolo.py's box rules.

Boxes: one line per 2D connected component (4-connectivity) of each segment per slice,
``class cx cy w h`` normalised to [0, 1].  Class 0 for every segment (the published script);
``per_class`` writes the model class index (0..7 = label value - 1 of :mod:`pipelines.calcium.labels`).

Default: **in the CT's frame**, laid out as the seed's training steps need::

    OUT/train/images/{exam}_{k+1}.png   OUT/train/labels/{exam}_{k+1}.txt     (train split)
    OUT/val/images/...                  OUT/val/labels/...                    (test split)
    OUT/dataset.yaml                    path, train, val, names

k is the CT slice (ascending position along the slice normal), boxes are normalised by the CT's
columns and rows, and the labels are placed by position (a cropped NRRD, as Slicer writes them, lands
where it belongs; a missing CT slice drops only its own labels).  Images are the CT slices windowed to
``window`` HU as 8-bit PNG; every slice gets an image and a (possibly empty) label file.

``labels_only``: the published script's output instead -- labels only, in the NRRD's own frame
(``{exam}_{z+1}.txt`` per NRRD slice, normalised by the NRRD's size) into ``train_labels`` / ``val_labels``;
right only for NRRDs that cover the whole CT.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage

from pipelines.calcium.labels import CLASSES
from training.datasets.marker import find_marker, write_marker
from training.runs.cli import one_line_errors

from .coca import CocaDataset, CocaError, load_aliases

__all__ = ["slice_boxes", "convert", "add_arguments", "main"]

FOUR = ndimage.generate_binary_structure(2, 1)


def slice_boxes(labels2d: np.ndarray, per_class: bool, lut: np.ndarray) -> list[tuple[int, float, float, float, float]]:
    """Boxes of one (rows, cols) slice of file label values."""
    rows, cols = labels2d.shape
    out = []
    for value in np.unique(labels2d[labels2d > 0]).tolist():
        comp, n = ndimage.label(labels2d == value, structure=FOUR)
        for sl in ndimage.find_objects(comp):
            if sl is None:
                continue
            r0, r1, c0, c1 = sl[0].start, sl[0].stop, sl[1].start, sl[1].stop
            cls = int(lut[value]) - 1 if per_class else 0
            out.append((cls, (c0 + c1) / 2 / cols, (r0 + r1) / 2 / rows, (c1 - c0) / cols, (r1 - r0) / rows))
    return out


@dataclasses.dataclass
class ConversionReport:
    exams: dict[str, int]  # split -> exams converted
    files: int
    boxes: int
    missing: list[str]  # exams in the CSV without an NRRD
    unlisted: list[str]  # NRRDs not in the CSV (skipped)
    images: int = 0


def _lut(seg, per_class: bool) -> np.ndarray:
    lut = np.zeros(256, dtype=np.int64)
    for s in seg.segments:
        if per_class and s.class_value is None:
            raise CocaError(f"{seg.path}: segment {s.name!r} has no class mapping (needed for --per-class)")
        lut[s.label_value] = s.class_value or 0
    return lut


def _png(hu: np.ndarray, window: tuple[float, float], path: Path) -> None:
    from PIL import Image

    lo, hi = window
    img = np.clip((hu.astype(np.float32) - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)
    Image.fromarray(img, mode="L").save(path, optimize=False)


def convert(root: Path, out: Path | None = None, *, per_class: bool = False, aliases: dict[str, int] | None = None,
            labels_only: bool = False, dicom_dir: Path | None = None, exam_map: Path | None = None,
            window: tuple[float, float] = (-800.0, 1200.0), ds: CocaDataset | None = None) -> ConversionReport:
    ds = ds or CocaDataset(root, aliases=aliases, dicom_dir=dicom_dir, exam_map=exam_map)
    split = ds.split()
    out = out or root / "yolo"
    files = ds.nrrd_files()
    todo = [e for e in ds.exams() if e in split]
    if not labels_only:  # every CT must be there before hours of conversion start
        for exam in todo:
            ds.ct_series(exam)
    counts = {"train": 0, "test": 0}
    n_files = n_boxes = n_images = 0
    for exam in todo:
        seg = ds.segmentation(exam)
        lut = _lut(seg, per_class)
        part = split[exam]
        if labels_only:
            ldir = out / ("train_labels" if part == "train" else "val_labels")
            ldir.mkdir(parents=True, exist_ok=True)
            for z in range(seg.labels.shape[0]):
                boxes = slice_boxes(seg.labels[z], per_class, lut)
                (ldir / f"{exam}_{z + 1}.txt").write_text(_lines(boxes))
                n_files += 1
                n_boxes += len(boxes)
        else:
            vol, labels, _ = ds.aligned(exam, values="file")
            sub = out / ("train" if part == "train" else "val")
            (sub / "images").mkdir(parents=True, exist_ok=True)
            (sub / "labels").mkdir(parents=True, exist_ok=True)
            for k in range(labels.shape[0]):
                boxes = slice_boxes(labels[k], per_class, lut)
                (sub / "labels" / f"{exam}_{k + 1}.txt").write_text(_lines(boxes))
                _png(vol.array[k], window, sub / "images" / f"{exam}_{k + 1}.png")
                n_files += 1
                n_images += 1
                n_boxes += len(boxes)
        counts[part] += 1
    if not labels_only:
        names = ({i: c.name for i, c in enumerate(CLASSES)} if per_class else {0: "calcium"})
        write_dataset_yaml(out, names, window)
        found = find_marker(root)
        if found:  # phantoms stay marked as generated in what is derived from them
            write_marker(out, generator=str(found[1].get("generator")), layout="YOLO (from COCA_Segmentations)",
                         cases=sum(counts.values()))
    return ConversionReport(exams=counts, files=n_files, boxes=n_boxes, images=n_images,
                            missing=sorted(set(split) - set(files)), unlisted=sorted(set(files) - set(split)))


def _lines(boxes) -> str:
    return "".join(f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in boxes)


def write_dataset_yaml(out: Path, names: dict[int, str], window: tuple[float, float]) -> Path:
    """The seed's dataset.yaml (ultralytics): path, train, val, names."""
    import yaml

    text = (f"# YOLO dataset written by cardionode datasets coca-to-yolo; images: CT slices, window "
            f"{window[0]:g}..{window[1]:g} HU, 8-bit PNG\n")
    text += yaml.safe_dump({"path": str(Path(out).resolve()), "train": "train/images", "val": "val/images",
                            "names": names}, sort_keys=False)
    path = Path(out) / "dataset.yaml"
    path.write_text(text)
    return path


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("root", type=Path, help="COCA-format folder (nrrd/, train_test_split.csv)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default <root>/yolo)")
    p.add_argument("--dicom-dir", type=Path, default=None,
                   help="folder with the CTs, one sub-folder per exam id (default <root>/dicom; docs/calcium.md)")
    p.add_argument("--exam-map", type=Path, default=None,
                   help="CSV exam,folder when CT folders are not named by exam id")
    p.add_argument("--per-class", action="store_true", help="write class ids 0..7 instead of 0 for every segment")
    p.add_argument("--aliases", type=Path, default=None,
                   help="JSON {segment name: class value 1..8} replacing the built-in name table")
    p.add_argument("--window", type=float, nargs=2, default=(-800.0, 1200.0), metavar=("LO", "HI"),
                   help="HU window of the PNG images (default -800 1200, the calcium model's)")
    p.add_argument("--labels-only", action="store_true",
                   help="the published script's output: labels in the NRRD's own frame, no images (no CT needed)")
    p.set_defaults(func=run)
    return p


@one_line_errors
def run(args: argparse.Namespace) -> int:
    ds = CocaDataset(args.root, aliases=load_aliases(args.aliases), dicom_dir=args.dicom_dir, exam_map=args.exam_map)
    rep = convert(args.root, args.out, per_class=args.per_class, labels_only=args.labels_only,
                  window=tuple(args.window), ds=ds)
    split = ds.split()
    n_train = sum(1 for v in split.values() if v == "train")
    print(f"split file lists {len(split)} exams ({n_train} train / {len(split) - n_train} test)")
    print(f"converted {rep.exams['train']} train + {rep.exams['test']} test exams: {rep.files} label files, "
          f"{rep.images} images, {rep.boxes} boxes")
    if rep.missing:
        print(f"{len(rep.missing)} exams in the split file have no NRRD: {', '.join(rep.missing[:10])}"
              f"{' ...' if len(rep.missing) > 10 else ''}")
    if rep.unlisted:
        print(f"{len(rep.unlisted)} NRRD files are not in the split file (skipped): {', '.join(rep.unlisted[:10])}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.calcium.yolo", description=__doc__.splitlines()[0])
    return run(add_arguments(p).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
