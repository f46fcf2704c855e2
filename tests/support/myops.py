"""Helpers shared by the myops tests (phantom studies, SR reading)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom

from pipelines.myops.preprocess import build_grid_stack
from synth.dicom import new_study
from training.myops.phantom import ground_truth_figures, make_phantom, write_dicom_study


def phantom_study(out: Path, seed: int, sequences=("bssfp", "lge", "t2")):
    """(files, truth figures) of a scarred phantom written as an MR study.

    Truth keys as :func:`ground_truth_figures` over every LGE slice, plus the same figures prefixed
    ``analysed_`` over the LGE slices matched across the three sequences (the ones the pipeline
    analyses; unmatched slices are dropped as the MyoPS380 card prescribes)."""
    case = make_phantom(seed, with_scar=True)
    files = write_dicom_study(case, out, seed=seed, sequences=sequences, study=new_study(seed=seed))
    truth = ground_truth_figures(case.label)
    keep = np.zeros(case.label.shape[0], dtype=bool)
    keep[build_grid_stack(case.volumes).anchor_slices] = True
    analysed = case.label.with_array(np.where(keep[:, None, None], case.label.array, 0).astype(np.uint8))
    truth.update({f"analysed_{k}": v for k, v in ground_truth_figures(analysed).items()})
    return files, truth


def sr_measurements(sr: pydicom.Dataset) -> dict[str, float]:
    """{code value: numeric value} of every NUM item in an SR content tree."""
    out: dict[str, float] = {}

    def walk(items):
        for item in items:
            if item.get("ValueType") == "NUM" and item.get("MeasuredValueSequence"):
                key = str(item.ConceptNameCodeSequence[0].CodeValue)
                group = out.setdefault(key, [])
                group.append(float(item.MeasuredValueSequence[0].NumericValue))
            if "ContentSequence" in item:
                walk(item.ContentSequence)

    walk(sr.ContentSequence)
    return out


