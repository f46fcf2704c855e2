"""Evaluate a myops checkpoint with the MyoPS metrics (Dice: scar, scar + edema, myocardium).

    python -m training.myops.evaluate --checkpoint runs/myops/checkpoint.pt --data /data/MyoPS380_dataset \
        [--split every5th|random --seed 0]

Evaluated on the held-out cases in the preprocessed space (registered ROI, ground-truth prior), as
the MyoPS papers report.  Dice is pooled over all held-out voxels ("dataset Dice") and also given as
the mean of per-case Dice.  A case whose reference and prediction both lack a tissue has no Dice for
it (undefined, left out of the mean, as nnU-Net's evaluation does) -- it is not counted as 1.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from pipelines.myops.preprocess import PreprocessConfig

from training.runs.cli import one_line_errors

from .metrics import accumulate, myops_dice
from .prepare import PreparedCase

__all__ = ["predict_classes", "evaluate_cases", "main", "METHOD"]

#: how the figures are computed (recorded with the metrics in checkpoints and manifests)
METHOD = ("Dice of scar, scar+edema (edema region incl. scar) and myocardium (normal+edema+scar) in the "
          "preprocessed 128x128 ROI space, as the MyoPS papers report. dice_*: pooled over all voxels of all "
          "evaluated cases (None when no case has the tissue in reference or prediction). mean_case_dice_*: mean "
          "of per-case Dice over the cases where it is defined; a case with the tissue absent from both reference "
          "and prediction has no Dice and is left out (nnU-Net's convention), an empty reference with a "
          "non-empty prediction scores 0; cases_with_*: how many cases entered each mean.")


def predict_classes(model, image: np.ndarray, batch: int = 16, device="cpu") -> np.ndarray:
    import torch

    out = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for i in range(0, len(image), batch):
            x = torch.from_numpy(np.ascontiguousarray(image[i:i + batch])).to(device)
            out.append(model(x).argmax(1).cpu().numpy())
    model.train(was_training)
    return np.concatenate(out).astype(np.uint8)


def _mean(values: list) -> float | None:
    vals = [v for v in values if v is not None]
    return round(float(np.mean(vals)), 4) if vals else None


def evaluate_cases(model, cases: Sequence[PreparedCase], device="cpu") -> dict:
    counts: dict = {}
    per_case = []
    for c in cases:
        pred = predict_classes(model, c.image, device=device)
        accumulate(pred, c.label, counts)
        per_case.append(myops_dice(pred, c.label))
    pooled = {k: (round(2.0 * v[0] / v[1], 4) if v[1] else None) for k, v in counts.items()}
    out = {"dice_scar": pooled.get("scar"), "dice_scar_edema": pooled.get("edema"),
           "dice_myocardium": pooled.get("myocardium")}
    for key in ("scar", "scar_edema", "myocardium"):
        vals = [d[key] for d in per_case]
        out[f"mean_case_dice_{key}"] = _mean(vals)
        out[f"cases_with_{key}"] = sum(v is not None for v in vals)
    out["cases"] = len(per_case)
    return out


@one_line_errors
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
    p.add_argument("--prealigned", action="store_true", default=None,
                   help="the release as distributed (default: as the checkpoint was trained)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures (and how they are computed) here")
    a = p.parse_args(argv)
    model, ckpt = load_checkpoint(a.checkpoint)
    prealigned = bool(ckpt.get("prealigned")) if a.prealigned is None else a.prealigned
    ds = MyoPSDataset(a.data, LabelConvention(**ckpt["labels"]), prealigned=prealigned)
    if a.split == "all":
        ids = ds.case_ids
    elif a.split is None and a.seed is None and ckpt["split"].get("test"):
        ids = list(ckpt["split"]["test"])  # the checkpoint's own held-out cases (e.g. phantom seeds)
    else:
        mode = a.split or ckpt["split"]["mode"]
        seed = a.seed if a.seed is not None else ckpt["split"]["seed"]
        ids = split_cases(ds.case_ids, mode, seed)[1]
    ds.check(ids)
    metrics = evaluate_cases(model, prepare_cases(ds, ids, PreprocessConfig(), a.cache))
    print(json.dumps(metrics, indent=2))
    if a.json:
        a.json.write_text(json.dumps({"metrics": metrics, "method": METHOD, "cases": list(ids)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
