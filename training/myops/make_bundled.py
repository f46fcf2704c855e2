"""Regenerate the bundled demo model ``myops-unet`` from synthetic CMR phantoms, deterministically.

    nice -n 10 python -m training.myops.make_bundled --out pipelines/models [--budget-min 50]

Writes ``--train-cases`` + ``--test-cases`` phantoms of the training generator
(:mod:`training.myops.phantom`, ``varied=True``: acquisition drawn per case -- stored-value scale,
shading, matrix, slice spacing and count, misalignment, noise -- and scar / edema burdens from a few %
to about half the myocardium; fixed seeds) as a MyoPS380-format folder, reads it back with the release
reader, preprocesses with the pipeline's code (shading correction order 2, percentile normalisation;
two worker processes), trains the small U-Net (fixed seeds, CPU), evaluates the held-out phantoms
(Dice: scar, scar + edema, myocardium, in the preprocessed ROI) and exports ONNX + manifest to
``<out>/myops-unet/``.  Then the exported model runs through the real pipeline on held-out DICOM
studies of both families -- the training generator and the independent evaluation generator
:mod:`bench.phantoms.cmr` -- and the burden errors and Dice (see ``bench/myops.py``) go into the
manifest (provenance.metrics.evaluation) with the generator names and versions
(provenance.training_data).

CPU budget: ``--budget-min`` (default 50) bounds the whole run: the training loop stops early when the
minutes left after preparation fall below what evaluation and export need (the manifest then says at
which step).  The bundled 0.3.0-phantom (the defaults: 96 + 6 phantoms, 4000 steps, two torch
threads) took 28 minutes on a quiet two-core machine: 4 to write and prepare the phantoms, 21 for
training (~0.25-0.3 s per step of 12 slices), 2 for the evaluation (bench/myops.py evaluates more
studies).  On a loaded machine (load ~10) a step took ~1.5 s and one thread ran faster than two.
Every figure is a phantom figure.
"""
from __future__ import annotations

import argparse
import datetime as dt
import dataclasses
import json
import logging
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Sequence

import torch

from pipelines.myops.preprocess import PreprocessConfig

from .dataset import MyoPSDataset
from .labels import MYOPS2020
from training.runs.logs import setup_logging

from .checkpoint import save_checkpoint
from .metrics import evaluate_cases
from .phantom import GENERATOR, GENERATOR_VERSION, make_phantom, write_myops_folder
from .prepare import prepare_cases
from .train import TrainConfig, train_model

log = logging.getLogger("cardionode.training.myops")

VERSION = "0.3.0-phantom"
TRAIN_SEED0, TEST_SEED0 = 1000, 5000
#: the preprocessing the model is trained with (recorded in the manifest; the pipeline reads it there)
PREPROCESS = PreprocessConfig(bias_order=2)
EVAL_RESERVE_S = 660.0  # what evaluation + export need after training, kept out of the training budget


def _prepare_one(args):
    root, case_id, cache = args
    ds = MyoPSDataset(root, MYOPS2020)
    return prepare_cases(ds, [case_id], PREPROCESS, cache)[0]


def _prepare(root: Path, ids: Sequence[str], cache: Path, workers: int):
    if workers <= 1:
        return prepare_cases(MyoPSDataset(root, MYOPS2020), ids, PREPROCESS, cache)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_prepare_one, [(root, cid, cache) for cid in ids]))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.myops.make_bundled", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("pipelines/models"))
    p.add_argument("--work", type=Path, default=Path(".work/myops-bundled"))
    p.add_argument("--train-cases", type=int, default=96)
    p.add_argument("--test-cases", type=int, default=6)
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--base", type=int, default=8)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--threads", type=int, default=2,
                   help="torch threads (use 1 on a shared, loaded machine: more threads spin and run slower)")
    p.add_argument("--workers", type=int, default=2, help="processes preparing phantoms")
    p.add_argument("--budget-min", type=float, default=50.0, help="wall-clock budget of the whole run (minutes)")
    p.add_argument("--eval-studies", type=int, default=4,
                   help="held-out DICOM studies per family through the pipeline after export (0: skip)")
    a = p.parse_args(argv)
    setup_logging(a.work, sys.stdout)
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    train_ids = [f"case{i:04d}" for i in range(1, a.train_cases + 1)]
    test_ids = [f"case{i:04d}" for i in range(a.train_cases + 1, a.train_cases + a.test_cases + 1)]
    root = a.work / f"MyoPS380_phantoms_v{GENERATOR_VERSION}"
    if not (root / "Raw_data").is_dir():
        cases = [(cid, make_phantom(TRAIN_SEED0 + i, varied=True)) for i, cid in enumerate(train_ids)]
        cases += [(cid, make_phantom(TEST_SEED0 + i, varied=True)) for i, cid in enumerate(test_ids)]
        write_myops_folder(cases, root)
        log.info("wrote %d phantom cases to %s (%.0f s)", len(cases), root, time.perf_counter() - t0)
    pre = PREPROCESS
    cache = a.work / f"cache_v{GENERATOR_VERSION}"
    train = _prepare(root, train_ids, cache, a.workers)
    test = _prepare(root, test_ids, cache, a.workers)
    log.info("prepared %d + %d cases (%.0f s)", len(train), len(test), time.perf_counter() - t0)
    left = a.budget_min * 60.0 - (time.perf_counter() - t0) - EVAL_RESERVE_S
    cfg = TrainConfig(steps=a.steps, batch=a.batch, base=a.base, depth=a.depth, seed=0, lr=3e-3,
                      max_seconds=max(60.0, left))
    model, history = train_model(train, MYOPS2020.num_classes, cfg, pre.roi_size)
    stopped = next((h["step"] for h in history if h.get("stopped_early")), None)
    metrics = evaluate_cases(model, test)
    log.info("held-out phantom Dice: %s", json.dumps(metrics))
    trained_on = (f"synthetic phantoms: {a.train_cases} CMR phantoms ({GENERATOR} {GENERATOR_VERSION}, varied "
                  f"acquisition, seeds {TRAIN_SEED0}..{TRAIN_SEED0 + a.train_cases - 1}), held out {a.test_cases} "
                  f"(seeds {TEST_SEED0}..{TEST_SEED0 + a.test_cases - 1})")
    ckpt = save_checkpoint(a.work / "checkpoint.pt", model, labels=MYOPS2020, preprocess=pre, train_cfg=cfg,
                           split={"mode": "phantom-seeds", "seed": 0, "train": train_ids, "test": test_ids},
                           history=history, metrics=metrics, trained_on=trained_on, synthetic=True)
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    saved["training_data"] = {
        "generated": True, "generator": GENERATOR, "generator_version": GENERATOR_VERSION,
        "sources": [{"layout": "MyoPS380", "generated": True, "generator": GENERATOR,
                     "generator_version": GENERATOR_VERSION, "path": root.name,
                     "cases": {"train": a.train_cases, "test": a.test_cases}}],
        "steps_done": stopped if stopped is not None else a.steps, "steps_planned": a.steps,
        "budget_min": a.budget_min,
    }
    torch.save(saved, ckpt)
    from export.onnx_export import export_onnx

    from .export import build_export

    notes = ("Held-out Dice on synthetic phantoms, not clinical accuracy. "
             + (f"Training stopped early at step {stopped} of {a.steps} (budget {a.budget_min:g} min). "
                if stopped is not None else ""))
    args = argparse.Namespace(version=VERSION, options={"date": dt.date.today().isoformat(), "notes": notes},
                              fp16=False, simplify=False)
    for spec in build_export(ckpt, args):
        report = export_onnx(spec.module, spec.example_inputs, a.out, version=VERSION, **spec.export_kwargs())
        log.info("exported %s", report.summary())
        # accepted input ranges + output scores calibrated on the held-out phantoms (training/myops/domain.py)
        from export.domains import write_domains

        from .domain import INPUT_DOMAIN, calibrate_output_domain
        write_domains(report.directory, input_domain=INPUT_DOMAIN, output_domain={})
        write_domains(report.directory, output_domain=calibrate_output_domain(report.directory)[0])
    figures = None
    if a.eval_studies > 0:
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
        from bench.myops import evaluate_families, record_in_manifest

        figures = evaluate_families(a.out, a.eval_studies)
        record_in_manifest(a.out / "myops-unet" / "manifest.json", figures)
    (a.work / "metrics.json").write_text(json.dumps({"metrics": metrics, "evaluation": figures, "history": history,
                                                     "train_config": dataclasses.asdict(cfg),
                                                     "seconds": round(time.perf_counter() - t0, 1)}, indent=2))
    log.info("done in %.0f s", time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
