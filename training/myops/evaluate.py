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

from pipelines.myops.preprocess import PreprocessConfig

from training.runs.cli import one_line_errors

from .checkpoint import load_checkpoint
from .metrics import METHOD, evaluate_cases
from .prepare import prepare_cases

__all__ = ["main"]

@one_line_errors
def main(argv: Sequence[str] | None = None) -> int:
    from .dataset import MyoPSDataset, split_cases
    from .labels import LabelConvention

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
