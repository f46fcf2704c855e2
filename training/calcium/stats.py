"""Table 1 of the COCA_Segmentations README for any COCA-format folder.

Per segment name: Segmentations (3D connected calcium instances, 26-connectivity by default),
Patients (exams with >= 1 instance), mean and SD instance volume (mm^3, voxel count x voxel volume
from the NRRD space directions), Segmentations/Scan (= segmentations / patients), Dataset %
(share of all instances) and Patients % (share of all exams read).
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

from .coca import CocaDataset, CocaError, load_aliases

__all__ = ["Row", "table1", "format_table", "main"]

STRUCTURES = {6: ndimage.generate_binary_structure(3, 1), 18: ndimage.generate_binary_structure(3, 2),
              26: np.ones((3, 3, 3), bool)}


@dataclasses.dataclass
class Row:
    category: str
    segmentations: int
    patients: int
    mean_mm3: float
    sd_mm3: float
    per_scan: float
    dataset_pct: float
    patients_pct: float


def table1(root: Path, *, connectivity: int = 26, split: str = "all",
           aliases: dict[str, int] | None = None) -> tuple[list[Row], int]:
    ds = CocaDataset(root, aliases=aliases)
    exams = ds.exams(split)
    volumes: dict[str, list[float]] = {}
    patients: dict[str, set[str]] = {}
    for exam in exams:
        seg = ds.segmentation(exam)
        for s in seg.segments:
            comp, n = ndimage.label(seg.labels == s.label_value, structure=STRUCTURES[connectivity])
            volumes.setdefault(s.name, [])
            patients.setdefault(s.name, set())
            if n:
                counts = np.bincount(comp.ravel(), minlength=n + 1)[1:]
                volumes[s.name].extend((counts * seg.voxel_volume_mm3).tolist())
                patients[s.name].add(exam)
    order = {c.name.lower(): c.value for c in CLASSES}
    names = sorted(volumes, key=lambda n: (order.get(n.lower(), 99), n))
    total = sum(len(v) for v in volumes.values())
    rows = []
    for n in names:
        v = np.asarray(volumes[n])
        p = len(patients[n])
        rows.append(Row(n, len(v), p, float(v.mean()) if len(v) else 0.0,
                        float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v) / p if p else 0.0,
                        100 * len(v) / total if total else 0.0, 100 * p / len(exams) if exams else 0.0))
    return rows, len(exams)


def format_table(rows: list[Row], n_exams: int) -> str:
    head = ("| Category | Segmentations | Patients | Mean Volume (mm³) | Volume SD (mm³) | Segmentations/Scan "
            "| Dataset % | Patients % |")
    lines = [f"{n_exams} scans read", head, "|" + "---|" * 8]
    for r in rows:
        lines.append(f"| {r.category} | {r.segmentations} | {r.patients} | {r.mean_mm3:.1f} | {r.sd_mm3:.1f} | "
                     f"{r.per_scan:.2f} | {r.dataset_pct:.2f}% | {r.patients_pct:.2f}% |")
    lines.append(f"| Total | {sum(r.segmentations for r in rows)} | | | | | | |")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("root", type=Path, help="COCA-format folder (nrrd/)")
    p.add_argument("--connectivity", type=int, choices=(6, 18, 26), default=26, help="3D instance connectivity")
    p.add_argument("--split", choices=("all", "train", "test"), default="all")
    p.add_argument("--aliases", type=Path, default=None,
                   help="JSON {segment name: class value 1..8} replacing the built-in name table")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    try:
        rows, n = table1(args.root, connectivity=args.connectivity, split=args.split,
                         aliases=load_aliases(args.aliases))
    except CocaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(rows, n))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.calcium.stats", description=__doc__.splitlines()[0])
    return run(add_arguments(p).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
