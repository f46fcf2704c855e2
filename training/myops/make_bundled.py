"""Regenerate the bundled demo model ``myops-unet`` from synthetic CMR phantoms, deterministically.

    python -m training.myops.make_bundled --out pipelines/models

Writes ``--train-cases`` + ``--test-cases`` phantoms (training.myops.phantom, fixed seeds) as a
MyoPS380-format folder, reads it back with the release reader, preprocesses with the pipeline's
code, trains the small U-Net (fixed seeds, CPU), evaluates the held-out phantoms (Dice: scar,
scar + edema, myocardium), and exports ONNX + manifest to ``<out>/myops-unet/``.  On two CPU cores:
about 5 minutes to write and preprocess the phantoms (cached under ``--work``) and about 7 minutes
for the 1500 training steps.  Every figure is a phantom figure.
"""
from __future__ import annotations

import argparse
import datetime as dt
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Sequence

import torch

from pipelines.myops.preprocess import PreprocessConfig

from .dataset import MyoPSDataset
from .labels import MYOPS2020
from .phantom import make_phantom, write_myops_folder
from .train import TrainConfig, prepare_cases, save_checkpoint, setup_logging, train_model

log = logging.getLogger("cardionode.training.myops")

VERSION = "0.1.0-phantom"
TRAIN_SEED0, TEST_SEED0 = 1000, 5000


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.myops.make_bundled", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("pipelines/models"))
    p.add_argument("--work", type=Path, default=Path(".work/myops-bundled"))
    p.add_argument("--train-cases", type=int, default=28)
    p.add_argument("--test-cases", type=int, default=8)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--base", type=int, default=8)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    setup_logging(a.work)
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    train_ids = [f"case{i:04d}" for i in range(1, a.train_cases + 1)]
    test_ids = [f"case{i:04d}" for i in range(a.train_cases + 1, a.train_cases + a.test_cases + 1)]
    root = a.work / "MyoPS380_phantoms"
    if not (root / "Raw_data").is_dir():
        cases = [(cid, make_phantom(TRAIN_SEED0 + i)) for i, cid in enumerate(train_ids)]
        cases += [(cid, make_phantom(TEST_SEED0 + i)) for i, cid in enumerate(test_ids)]
        write_myops_folder(cases, root)
        log.info("wrote %d phantom cases to %s (%.0f s)", len(cases), root, time.perf_counter() - t0)
    ds = MyoPSDataset(root, MYOPS2020)
    pre = PreprocessConfig()
    cache = a.work / "cache"
    train = prepare_cases(ds, train_ids, pre, cache)
    test = prepare_cases(ds, test_ids, pre, cache)
    cfg = TrainConfig(steps=a.steps, batch=a.batch, base=a.base, depth=a.depth, seed=0, lr=3e-3)
    model, history = train_model(train, MYOPS2020.num_classes, cfg, pre.roi_size)
    from .evaluate import evaluate_cases

    metrics = evaluate_cases(model, test)
    log.info("held-out phantom Dice: %s", json.dumps(metrics))
    trained_on = (f"synthetic phantoms: {a.train_cases} CMR phantoms (training.myops.phantom seeds "
                  f"{TRAIN_SEED0}..{TRAIN_SEED0 + a.train_cases - 1}), held out {a.test_cases} "
                  f"(seeds {TEST_SEED0}..{TEST_SEED0 + a.test_cases - 1})")
    ckpt = save_checkpoint(a.work / "checkpoint.pt", model, labels=MYOPS2020, preprocess=pre, train_cfg=cfg,
                           split={"mode": "phantom-seeds", "seed": 0, "train": train_ids, "test": test_ids},
                           history=history, metrics=metrics, trained_on=trained_on, synthetic=True)
    from export.onnx_export import export_onnx

    from .export import build_export

    args = argparse.Namespace(version=VERSION, options={"date": dt.date.today().isoformat()}, fp16=False, simplify=False)
    for spec in build_export(ckpt, args):
        report = export_onnx(spec.module, spec.example_inputs, a.out, version=VERSION, **spec.export_kwargs())
        log.info("exported %s", report.summary())
        # accepted input ranges + output scores calibrated on the held-out phantoms (training/myops/domain.py)
        from export.domains import write_domains

        from .domain import INPUT_DOMAIN, calibrate_output_domain
        write_domains(report.directory, input_domain=INPUT_DOMAIN, output_domain={})
        write_domains(report.directory, output_domain=calibrate_output_domain(report.directory)[0])
    (a.work / "metrics.json").write_text(json.dumps({"metrics": metrics, "history": history,
                                                     "train_config": dataclasses.asdict(cfg),
                                                     "seconds": round(time.perf_counter() - t0, 1)}, indent=2))
    log.info("done in %.0f s", time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
