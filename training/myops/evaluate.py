"""Evaluate a myops checkpoint with the MyoPS metrics (Dice: scar, scar + edema, myocardium).

    python -m training.myops.evaluate --checkpoint runs/myops/checkpoint.pt --data /data/MyoPS380_dataset \
        [--split every5th|random --seed 0]

Evaluated on the held-out cases in the preprocessed space (registered ROI, ground-truth prior), as
the MyoPS papers report.  Dice is pooled over all held-out voxels ("dataset Dice") and also given as
the mean of per-case Dice.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from pipelines.myops.preprocess import PreprocessConfig

from .metrics import accumulate, myops_dice
from .prepare import PreparedCase

__all__ = ["predict_classes", "evaluate_cases", "main"]


def predict_classes(model, image: np.ndarray, batch: int = 16) -> np.ndarray:
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(image), batch):
            out.append(model(torch.from_numpy(np.ascontiguousarray(image[i:i + batch]))).argmax(1).numpy())
    return np.concatenate(out).astype(np.uint8)


def evaluate_cases(model, cases: Sequence[PreparedCase]) -> dict:
    counts: dict = {}
    per_case = []
    for c in cases:
        pred = predict_classes(model, c.image)
        accumulate(pred, c.label, counts)
        per_case.append(myops_dice(pred, c.label))
    pooled = {k: (2.0 * v[0] / v[1] if v[1] else 1.0) for k, v in counts.items()}
    return {
        "dice_scar": round(pooled["scar"], 4),
        "dice_scar_edema": round(pooled["edema"], 4),
        "dice_myocardium": round(pooled["myocardium"], 4),
        "mean_case_dice_scar": round(float(np.mean([d["scar"] for d in per_case])), 4),
        "mean_case_dice_scar_edema": round(float(np.mean([d["scar_edema"] for d in per_case])), 4),
        "mean_case_dice_myocardium": round(float(np.mean([d["myocardium"] for d in per_case])), 4),
        "cases": len(per_case),
    }


def main(argv: Sequence[str] | None = None) -> int:
    from .dataset import MyoPSDataset, split_cases
    from .labels import LabelConvention
    from .train import load_checkpoint, prepare_cases

    p = argparse.ArgumentParser(prog="python -m training.myops.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", choices=("every5th", "random", "all"), default=None,
                   help="default: the checkpoint's own held-out cases")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--cache", type=Path, default=None)
    a = p.parse_args(argv)
    model, ckpt = load_checkpoint(a.checkpoint)
    ds = MyoPSDataset(a.data, LabelConvention(**ckpt["labels"]))
    if a.split == "all":
        ids = ds.case_ids
    elif a.split is None and a.seed is None and ckpt["split"].get("test"):
        ids = list(ckpt["split"]["test"])  # the checkpoint's own held-out cases (e.g. phantom seeds)
    else:
        mode = a.split or ckpt["split"]["mode"]
        seed = a.seed if a.seed is not None else ckpt["split"]["seed"]
        ids = split_cases(ds.case_ids, mode, seed)[1]
    metrics = evaluate_cases(model, prepare_cases(ds, ids, PreprocessConfig(), a.cache))
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
