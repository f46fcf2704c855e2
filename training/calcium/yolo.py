"""COCA NRRD -> YOLO labels, reproducing the published nrrd_to_yolo.py.

One line per 2D connected component (4-connectivity) per slice: ``class cx cy w h`` normalised to
[0, 1] by the slice's columns (x) and rows (y), after transposing pynrrd's (x, y, z) to
(z, rows, cols).  A file ``{exam}_{z+1}.txt`` is written for every slice (empty when the slice has
no calcium), into ``yolo/train_labels`` (train split) or ``yolo/val_labels`` (test split).
Class 0 for every segment (the seed's behaviour); ``per_class`` writes the model class index
(0..7 = label value - 1 of :mod:`pipelines.calcium.labels`) instead.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage

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


def convert(root: Path, out: Path | None = None, *, per_class: bool = False,
            aliases: dict[str, int] | None = None) -> ConversionReport:
    ds = CocaDataset(root, aliases=aliases)
    split = ds.split()
    out = out or root / "yolo"
    dirs = {"train": out / "train_labels", "test": out / "val_labels"}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    files = ds.nrrd_files()
    counts = {"train": 0, "test": 0}
    n_files = n_boxes = 0
    for exam in ds.exams():
        if exam not in split:
            continue
        seg = ds.segmentation(exam)
        lut = np.zeros(256, dtype=np.int64)
        for s in seg.segments:
            if per_class and s.class_value is None:
                raise CocaError(f"{seg.path}: segment {s.name!r} has no class mapping (needed for --per-class)")
            lut[s.label_value] = s.class_value or 0
        for z in range(seg.labels.shape[0]):
            boxes = slice_boxes(seg.labels[z], per_class, lut)
            text = "".join(f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in boxes)
            (dirs[split[exam]] / f"{exam}_{z + 1}.txt").write_text(text)
            n_files += 1
            n_boxes += len(boxes)
        counts[split[exam]] += 1
    return ConversionReport(exams=counts, files=n_files, boxes=n_boxes,
                            missing=sorted(set(split) - set(files)), unlisted=sorted(set(files) - set(split)))


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("root", type=Path, help="COCA-format folder (nrrd/, train_test_split.csv)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default <root>/yolo)")
    p.add_argument("--per-class", action="store_true", help="write class ids 0..7 instead of 0 for every segment")
    p.add_argument("--aliases", type=Path, default=None, help="JSON {segment name: class value 1..8} replacing the built-in name table")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    try:
        rep = convert(args.root, args.out, per_class=args.per_class, aliases=load_aliases(args.aliases))
    except CocaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    split = CocaDataset(args.root).split()
    n_train = sum(1 for v in split.values() if v == "train")
    print(f"split file lists {len(split)} exams ({n_train} train / {len(split) - n_train} test)")
    print(f"converted {rep.exams['train']} train + {rep.exams['test']} test exams: {rep.files} label files, "
          f"{rep.boxes} boxes")
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
