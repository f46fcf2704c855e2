"""Regenerate the bundled calcium model: train on synthetic phantoms, evaluate on two families, export.

    python -m training.calcium.make_bundled --out pipelines/models

Training family: ``training.calcium.phantom`` (generator version in :data:`GENERATOR_VERSION`), seeds
``--train-seeds``.  Evaluation on held-out studies of BOTH families with :mod:`training.calcium.agreement`:
the training family (seeds ``--heldout-seeds``, even seeds coronary-free) and the independent evaluation
family ``bench.phantoms.ct`` (seeds ``--eval-seeds``, even seeds calcium-free; never trained on).  CPU only,
niced, bounded: training stops after ``--max-minutes`` (default 28) and the command warns when the whole
run exceeds ``--budget-minutes`` (default 60).  CPU training is not bit-reproducible run to run, so figures
move a little between regenerations; the manifest records the ones of the exported model, with the
training generator, its version and the evaluation generator: phantom figures, NOT clinical accuracy.
``--checkpoint`` skips training and evaluates/exports an existing run.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from pipelines.calcium.preprocess import PreprocessConfig
from training.runs import RunOptions

from .agreement import TARGETS, evaluate_family
from .data import NEGATIVE_SETS, agreement_cases, phantom_slices
from .evaluate import load_checkpoint, onnx_predictor, parse_seeds, torch_predictor
from .export import export_checkpoint
from .phantom import GENERATOR, GENERATOR_VERSION
from .train import N_CLASSES, train

log = logging.getLogger("cardionode.training.calcium")

VERSION = "0.2.0"
#: figures copied from each family's agreement summary into the manifest metrics
FIGURES = ("cases", "calcium_free_cases", "calcium_cases", "calcium_free_zero_rate", "calcium_free_category0_rate",
           "calcium_free_max_false_score", "bias_agatston", "loa_agatston", "bias_relative", "loa_relative",
           "within_15pct_rate", "kappa", "kappa_4cat", "category_agreement_rate", "bone_voxels",
           "cases_with_bone_voxels")


def mean_dice(dice: dict[str, float | None]) -> float:
    """Mean over classes; a class absent from both prediction and truth (None) is left out."""
    vals = [v for v in dice.values() if v is not None]
    return float(sum(vals) / len(vals)) if vals else 0.0


def _family_report(family: str, model: tuple[str, str], seeds: str) -> dict:
    """Agreement on one family (runs in a worker process: its own predictor, one thread)."""
    from bench.phantoms.ct import GENERATOR as EVAL_GEN, GENERATOR_VERSION as EVAL_VER, agreement_cases as eval_cases

    kind, path = model
    if kind == "onnx":
        predict, cfg = onnx_predictor(Path(path), threads=1)
    else:
        import torch

        torch.set_num_threads(1)
        net, cfg, _ = load_checkpoint(Path(path))
        predict = torch_predictor(net)
    if family == "training_family":
        cases, gen, ver = agreement_cases(parse_seeds(seeds)), GENERATOR, GENERATOR_VERSION
    else:
        cases, gen, ver = eval_cases(parse_seeds(seeds)), EVAL_GEN, EVAL_VER
    t = time.time()
    rep = evaluate_family(cases, predict, cfg, log=lambda m: log.info("%s %s", family, m))
    rep.update(generator=gen, generator_version=ver, seeds=seeds, seconds=round(time.time() - t, 1))
    return rep


def evaluate_both(model: tuple[str, str | Path], heldout: str, eval_seeds: str, workers: int = 2) -> dict[str, dict]:
    """Agreement on held-out studies of the training family and of the evaluation family.  ``model``:
    ("torch", checkpoint) or ("onnx", model directory); the two families run in ``workers`` processes."""
    from concurrent.futures import ProcessPoolExecutor

    jobs = (("training_family", heldout), ("evaluation_family", eval_seeds))
    spec = (model[0], str(model[1]))
    if workers <= 1:
        reports = [_family_report(fam, spec, seeds) for fam, seeds in jobs]
    else:
        with ProcessPoolExecutor(min(workers, len(jobs))) as ex:
            futures = [ex.submit(_family_report, fam, spec, seeds) for fam, seeds in jobs]
            reports = [f.result() for f in futures]
    out = {}
    for (fam, _), rep in zip(jobs, reports):
        out[fam] = rep
        log.info("%s: %s", fam, json.dumps({k: rep[k] for k in FIGURES}))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    p = argparse.ArgumentParser(prog="python -m training.calcium.make_bundled", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("pipelines/models"))
    p.add_argument("--work", type=Path, default=None, help="keep checkpoint and reports here (default: temp dir)")
    p.add_argument("--checkpoint", type=Path, default=None, help="skip training: evaluate and export this run")
    p.add_argument("--train-seeds", default="0-63")
    p.add_argument("--heldout-seeds", default="1000-1019", help="held-out training-family phantoms")
    p.add_argument("--eval-seeds", default="0-19", help="evaluation-family studies (bench.phantoms.ct)")
    p.add_argument("--steps", type=int, default=8000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=96,
                   help="crop side on the 2 mm grid (96: 192 mm, enough context to tell the heart from the chest wall)")
    p.add_argument("--depth", type=int, default=4, help="U-Net poolings (4: wide enough context for the heart)")
    p.add_argument("--max-minutes", type=float, default=28.0, help="training time cap")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads for training (2 on 2 quiet cores: 8000 steps in 15 instead of 24 min)")
    p.add_argument("--negatives", choices=sorted(NEGATIVE_SETS), default="bone",
                   help="hard-negative crops: bone (0.2.0: a fifth on unlabelled >= 400 HU) or split (bone, "
                        "metal >= 1200 HU and 130-400 HU kernel overshoot sampled apart; tried, not bundled)")
    p.add_argument("--budget-minutes", type=float, default=60.0, help="warn when the whole run takes longer")
    p.add_argument("--workers", type=int, default=2, help="evaluate the two families in this many processes")
    p.add_argument("--nice", type=int, default=10, help="lower this process's priority by this much")
    args = p.parse_args(argv)
    if args.nice:
        os.nice(args.nice)
    t0 = time.time()
    work = args.work or Path(tempfile.mkdtemp(prefix="calcium-bundled-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.checkpoint is None:
        cfg = PreprocessConfig(region_channel=N_CLASSES)
        log.info("generating training phantoms %s (%s %s)", args.train_seeds, GENERATOR, GENERATOR_VERSION)
        sets = phantom_slices(parse_seeds(args.train_seeds), cfg)
        log.info("%d phantoms, %d slices prepared in %.0f s", len(sets), sum(len(s.x) for s in sets), time.time() - t0)
        ckpt = train(sets, work / "run", steps=args.steps, batch=args.batch, crop=args.crop, lr=3e-3, base=8,
                     depth=args.depth, balanced_ce=True, focus_boost={1: 2.0, 8: 2.0}, cfg=cfg, seed=0,
                     max_minutes=args.max_minutes, threads=args.threads, negatives=NEGATIVE_SETS[args.negatives],
                     run_opts=RunOptions(work / "run", overwrite=True))
        del sets
    else:
        ckpt = args.checkpoint
    model, cfg, ck = load_checkpoint(ckpt)
    t_train = time.time() - t0
    reports = evaluate_both(("torch", ckpt), args.heldout_seeds, args.eval_seeds, workers=args.workers)
    (work / "agreement.json").write_text(json.dumps(reports, indent=2))
    from bench.phantoms.ct import GENERATOR as EVAL_GEN, GENERATOR_VERSION as EVAL_VER

    metrics: dict = {"method": "training.calcium.agreement (coronary Agatston = PDA+LM+LAD+LCX+RCA; categories "
                               "0/1-10/11-100/101-400/>400; Bland-Altman predicted - true); phantom figures",
                     "targets": TARGETS}
    for fam, rep in reports.items():
        metrics[fam] = {"generator": rep["generator"], "generator_version": rep["generator_version"],
                        "seeds": rep["seeds"], **{k: rep[k] for k in FIGURES}, "targets_met": rep["targets_met"]}
    n_params = sum(p.numel() for p in model.parameters())
    notes = (f"2.5D U-Net (base 8, {model.config['depth']} poolings, {n_params} parameters) with 9 class outputs "
             f"and a heart/aorta region output (a dense structure counts as calcium only when at least half of it lies "
             f"inside that region) on a reduced {cfg.spacing_mm} mm "
             f"in-plane grid, 3 slices {cfg.context_mm} mm apart; {ck['steps']} of {ck['planned_steps']} steps "
             f"(batch {ck['batch']}, crops {ck['crop']}) in {ck['train_seconds']:.0f} s on CPU. Trained on synthetic "
             f"chest-CT phantoms ({GENERATOR} {GENERATOR_VERSION}, seeds {args.train_seeds}); evaluated on held-out "
             f"phantoms of that family ({args.heldout_seeds}) and of the independent evaluation family {EVAL_GEN} "
             f"{EVAL_VER} ({args.eval_seeds}): phantom figures, not clinical accuracy. "
             "Regenerate: python -m training.calcium.make_bundled --out pipelines/models")
    training_data = {"generated": True, "generator": GENERATOR, "generator_version": GENERATOR_VERSION,
                     "seeds": args.train_seeds, "cases": len(parse_seeds(args.train_seeds)),
                     "evaluation_generator": EVAL_GEN, "evaluation_generator_version": EVAL_VER}
    rep = export_checkpoint(ckpt, args.out, version=VERSION, trained_on="synthetic phantoms", synthetic=True,
                            metrics=metrics, notes=notes, training_data=training_data)
    print(rep.summary())
    from export.domains import write_domains

    from .domain import CALIBRATION_SEEDS, INPUT_DOMAIN, calibrate_output_domain
    output_domain, _ = calibrate_output_domain(rep.directory, parse_seeds(CALIBRATION_SEEDS))
    write_domains(rep.directory, input_domain=INPUT_DOMAIN, output_domain=output_domain)
    print(json.dumps(metrics, indent=2))
    total = time.time() - t0
    print(f"training {t_train / 60:.1f} min, total {total / 60:.1f} min; work dir {work}")
    if total > 60 * args.budget_minutes:
        log.warning("run took %.1f min, over the %.0f min budget", total / 60, args.budget_minutes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
