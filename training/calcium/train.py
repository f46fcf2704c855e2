"""Train the 2.5D calcium U-Net on phantoms (and/or a COCA-format folder).

    python -m training.calcium.train --out runs/calcium --steps 3000 --phantoms 0-59
    python -m training.calcium.train --out runs/calcium --coca /data/COCA_Segmentations --dicom-dir /data/coca-ct
    cardionode calcium train ...      (the same options)

The steps are grouped in epochs of ``--epoch-steps``; the run folder ``--out`` (training/runs) holds
config.yaml, train.log, metrics.csv, curves.png, last.pt (``--resume``) and best.pt (lowest loss on
fixed validation crops from a held-out share ``--val-fraction`` of the training cases).  best.pt is
what ``cardionode export calcium`` and ``calcium evaluate`` take.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pipelines.calcium.preprocess import PreprocessConfig

from training.runs import RunError, RunOptions, TrainingRun
from training.runs.cli import one_line_errors
from training.runs.config import add_run_arguments, parse_with_config
from training.runs.progress import progress

from .data import (BONE_NEGATIVES, NEGATIVE_SETS, REGION_IN, REGION_UNKNOWN, SliceSet, phantom_slices, sample_batch,
                   slices_from_volume)
from .evaluate import parse_seeds
from .model import UNet2D

log = logging.getLogger("cardionode.training.calcium")

#: background + 8 COCA classes; a model with a region output has one channel more (index N_CLASSES)
N_CLASSES = 9

__all__ = ["train", "lr_at", "class_weights", "dice_ce_loss", "parse_boost", "main", "build_parser"]


def class_weights(sets: Sequence[SliceSet], fg_weight: float = 8.0, n_classes: int = 9,
                  cap: float = 4.0) -> torch.Tensor:
    """Cross-entropy weights: background 1; class c gets ``fg_weight`` x (mean over classes of the pixels
    per labelled slice) / (class c's pixels per labelled slice), clipped to [1/cap, cap] x ``fg_weight``.

    The sampler shows every class equally often, but a crop on a 1-2 pixel coronary plaque carries far
    fewer labelled pixels than one on an aortic or valve plaque; without this the small classes (PDA,
    RCA, LM) contribute a fraction of the gradient and can end up never predicted."""
    per_slice = np.zeros(n_classes)
    for c in range(1, n_classes):
        counts = [np.bincount(s.coords(c)[:, 0]).sum() / max(1, len(np.unique(s.coords(c)[:, 0])))
                  for s in sets if len(s.coords(c))]
        per_slice[c] = float(np.mean(counts)) if counts else 0.0
    w = np.ones(n_classes)
    seen = per_slice[1:] > 0
    ref = per_slice[1:][seen].mean() if seen.any() else 1.0
    for c in range(1, n_classes):
        w[c] = fg_weight * (np.clip(ref / per_slice[c], 1 / cap, cap) if per_slice[c] > 0 else 1.0)
    return torch.tensor(w, dtype=torch.float32)


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, fg_weight: float = 8.0,
                 weights: torch.Tensor | None = None, region_weight: float = 1.0,
                 balanced: bool = False) -> torch.Tensor:
    """Cross-entropy + Dice over background and the 8 classes (channels 0-8); with a 10th channel, plus
    ``region_weight`` x binary cross-entropy of the heart/aorta region on every pixel whose case has one
    (targets encoded by :func:`training.calcium.data.sample_batch`)."""
    region_logit = logits[:, N_CLASSES] if logits.shape[1] > N_CLASSES else None
    logits = logits[:, :N_CLASSES]
    in_region = (target & REGION_IN) > 0
    known = (target & REGION_UNKNOWN) == 0
    target = target & 15
    k = logits.shape[1]
    if weights is None:
        w = torch.full((k,), fg_weight)
        w[0] = 1.0
    else:
        w = weights
    if balanced:  # background and calcium pixels carry equal shares of the cross-entropy from the first step
        px = F.cross_entropy(logits, target, weight=w.to(logits.device), reduction="none")
        fg = target > 0
        ce = px[~fg].mean() if (~fg).any() else px.sum() * 0
        if fg.any():
            ce = ce + px[fg].sum() / w.to(logits.device)[target[fg]].sum()
    else:
        ce = F.cross_entropy(logits, target, weight=w)
    prob = logits.softmax(1)[:, 1:]
    onehot = F.one_hot(target, k).permute(0, 3, 1, 2)[:, 1:].float()
    inter = (prob * onehot).sum((0, 2, 3))
    denom = prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    present = onehot.sum((0, 2, 3)) > 0
    dice = (2 * inter + 1) / (denom + 1)
    dl = (1 - dice[present]).mean() if present.any() else prob.sum() * 0
    if region_logit is None:
        return ce + dl
    kw = known.float()
    bce = F.binary_cross_entropy_with_logits(region_logit, in_region.float(), weight=kw, reduction="sum")
    return ce + dl + region_weight * bce / kw.sum().clamp(min=1.0)


def lr_at(progress: float, peak: float, warmup: float = 0.05, floor: float = 0.01) -> float:
    """Linear warm-up to ``peak`` over the first ``warmup`` of training, then cosine decay to ``floor * peak``."""
    p = min(max(progress, 0.0), 1.0)
    if p < warmup:
        return peak * (0.1 + 0.9 * p / warmup)
    q = (p - warmup) / (1 - warmup)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * q)))


def _validation_batches(val_sets: Sequence[SliceSet], batch: int, crop: int, seed: int, cfg: PreprocessConfig,
                        n: int = 8):
    """Fixed validation crops (same sampler as training, its own seeded generator, the default bone hard
    negatives whatever the training's ``negatives``, through the same HU window): comparable epoch to epoch
    and between runs."""
    rng = np.random.default_rng(seed + 104_729)
    return [sample_batch(val_sets, batch, crop, rng, cfg=cfg) for _ in range(n)]


def _validate(model, batches, weights, device) -> dict[str, float]:
    """Loss and foreground Dice (classes present in the crops, pooled over the crops) in eval mode."""
    model.eval()
    total, inter, denom = 0.0, np.zeros(9), np.zeros(9)
    with torch.no_grad():
        for x, y in batches:
            xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
            logits = model(xt).float()
            total += float(dice_ce_loss(logits, yt, weights=None if weights is None else weights.to(device)))
            pred = logits[:, :N_CLASSES].argmax(1).cpu().numpy()
            y = y & 15
            for c in range(1, 9):
                p, g = pred == c, y == c
                inter[c] += np.count_nonzero(p & g)
                denom[c] += np.count_nonzero(p) + np.count_nonzero(g)
    model.train()
    present = denom[1:] > 0
    dice = float(np.mean(2 * inter[1:][present] / denom[1:][present])) if present.any() else float("nan")
    return {"val_loss": total / max(len(batches), 1), "val_dice": dice}


METRICS_METHOD = ("val_loss / val_dice: loss and foreground Dice (mean over the classes present, pooled over the "
                  "crops) on 8 fixed batches of validation crops drawn once from the held-out validation cases")


def train(sets: Sequence[SliceSet], out: Path, *, steps: int, batch: int, crop: int, lr: float, base: int,
          cfg: PreprocessConfig, seed: int, depth: int = 3, balanced_ce: bool = False, threads: int = 1,
          extra: dict | None = None,
          max_minutes: float | None = None, balance: bool = True,
          focus_boost: dict[int, float] | None = None, val_sets: Sequence[SliceSet] = (),
          epoch_steps: int | None = None, run_opts: RunOptions | None = None, config: dict | None = None,
          data: dict | None = None,
          negatives: Sequence[tuple[float, float, float | None]] = BONE_NEGATIVES) -> Path:
    """Train; returns the path of best.pt in the run folder ``out`` (see the module docstring).

    ``negatives``: (share of crops, lowest HU, HU bound) of the hard negatives,
    :func:`training.calcium.data.sample_batch`.
    Without ``val_sets`` best.pt is the last epoch (nothing to choose by).  ``run_opts`` defaults to a new
    run in ``out`` that refuses to replace an existing one."""
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    opts = run_opts or RunOptions(out=Path(out))
    opts = dataclasses.replace(opts, out=Path(out), monitor="val_loss" if val_sets else "epoch",
                               mode="min" if val_sets else "max")
    config = dict(config or {"steps": steps, "batch": batch, "crop": crop, "lr": lr, "base": base, "depth": depth,
                             "balanced_ce": balanced_ce, "seed": seed,
                             "threads": threads, "max_minutes": max_minutes, "balance": balance,
                             "focus_boost": focus_boost, "epoch_steps": epoch_steps,
                             "negatives": [list(n) for n in negatives], "preprocessing": cfg.to_dict()})
    run = TrainingRun(opts, family="calcium", config=config, logger_names=["cardionode.training.calcium"],
                      data=data or {})
    try:
        return _train(run, sets, steps=steps, batch=batch, crop=crop, lr=lr, base=base, depth=depth,
                      balanced_ce=balanced_ce, cfg=cfg, seed=seed,
                      threads=threads, extra=extra, max_minutes=max_minutes, balance=balance,
                      focus_boost=focus_boost, val_sets=val_sets, epoch_steps=epoch_steps, rng=rng,
                      negatives=negatives)
    except BaseException as exc:
        run.fail(exc)
        raise


def _train(run: TrainingRun, sets, *, steps, batch, crop, lr, base, depth, balanced_ce, cfg, seed, threads, extra,
           max_minutes, balance,
           focus_boost, val_sets, epoch_steps, rng, negatives) -> Path:
    device = run.device
    weights = class_weights(sets) if balance else None
    if weights is not None:
        log.info("cross-entropy class weights %s", [round(float(v), 2) for v in weights])
    has_region = any(s.r is not None for s in sets)
    if has_region != bool(cfg.region_channel):
        raise RunError(f"preprocessing region_channel={cfg.region_channel} but the training cases "
                       f"{'carry' if has_region else 'carry no'} heart/aorta region")
    model = UNet2D(in_channels=cfg.channels, n_classes=N_CLASSES + (1 if has_region else 0), base=base,
                   depth=depth).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    val_batches = _validation_batches(val_sets, batch, crop, seed, cfg) if val_sets else []
    per_epoch = max(1, min(epoch_steps or steps, steps))
    epochs = -(-steps // per_epoch)
    start_epoch = run.restore(model, opt, None, {"sampler": rng})
    if not val_sets:
        log.info("no validation cases: best.pt is the last epoch")
    model.train()
    t0 = time.time() - (run.elapsed_before if start_epoch else 0.0)
    done = start_epoch * per_epoch
    capped = False
    w_dev = None if weights is None else weights.to(device)
    for epoch in range(start_epoch + 1, epochs + 1):
        first, last = (epoch - 1) * per_epoch + 1, min(epoch * per_epoch, steps)
        total, n = 0.0, 0
        for step in progress(range(first, last + 1), last - first + 1, f"calcium epoch {epoch}/{epochs}",
                             run.opts.progress):
            elapsed = time.time() - t0
            if max_minutes is not None and elapsed > 60 * max_minutes:
                log.warning("time cap of %.1f min reached after %d of %d steps: stopping early", max_minutes, done,
                            steps)
                capped = True
                break
            # progress drives the schedule: steps done, or the share of the time cap used, whichever is further,
            # so that a capped run still ends with a decayed learning rate instead of stopping at its peak
            prog = max((step - 1) / steps, elapsed / (60 * max_minutes) if max_minutes else 0.0)
            for group in opt.param_groups:
                group["lr"] = lr_at(prog, lr)
            x, y = sample_batch(sets, batch, crop, rng, focus_boost=focus_boost, negatives=negatives,
                                cfg=cfg)
            with run.autocast():
                logits = model(torch.from_numpy(x).to(device))
            loss = dice_ce_loss(logits.float(), torch.from_numpy(y).to(device), weights=w_dev, balanced=balanced_ce)
            run.backward_step(loss, opt, where=f"epoch {epoch} step {step}")
            total += float(loss.detach())
            n += 1
            done = step
        if n == 0:
            break
        metrics = {"train_loss": total / n, "lr": opt.param_groups[0]["lr"], "step": done}
        if val_batches:
            metrics.update(_validate(model, val_batches, weights, device))
        else:
            metrics["epoch"] = epoch  # the monitored value without validation cases (best.pt = last epoch)
        run.end_epoch(epoch, metrics, model, opt, None, {"sampler": rng}, extra={
            "model_config": model.config, "preprocessing": cfg.to_dict(), "steps": done, "planned_steps": steps,
            "batch": batch, "crop": crop, "lr": lr,
            "schedule": "warm-up 5% + cosine, driven by max(step, time) progress", "threads": threads,
            "class_weights": None if weights is None else [round(float(v), 3) for v in weights],
            "focus_boost": focus_boost, "seed": seed, "train_seconds": time.time() - t0,
            "final_loss": total / n, "metrics_method": METRICS_METHOD if val_batches else
            "train_loss: mean training loss of the epoch (no validation cases)", **(extra or {})})
        if capped:
            break
    return run.finish()


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(prog="python -m training.calcium.train", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=None, help="run folder (required)")
    p.add_argument("--phantoms", default=None, help="phantom seeds for training, e.g. 0-59")
    p.add_argument("--coca", type=Path, default=None, help="COCA-format folder (train split is used)")
    p.add_argument("--dicom-dir", type=Path, default=None,
                   help="folder with the CTs, one sub-folder per exam id (default <coca>/dicom; docs/calcium.md)")
    p.add_argument("--exam-map", type=Path, default=None,
                   help="CSV exam,folder when CT folders are not named by exam id")
    p.add_argument("--aliases", type=Path, default=None,
                   help="JSON {segment name: class value 1..8} replacing the built-in name table")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--epoch-steps", type=int, default=250, help="steps per epoch (validation + checkpoints)")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of the training cases held out for validation / best.pt (0: best = last epoch)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--crop", type=int, default=64, help="crop side on the coarse grid (multiple of 8)")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--base", type=int, default=8, help="U-Net base channels")
    p.add_argument("--spacing-mm", type=float, default=PreprocessConfig.spacing_mm)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (1 is fastest on shared cores: more threads spin against other jobs)")
    p.add_argument("--focus-boost", default=None,
                   help="focus-crop draw weights, e.g. '1:2' draws PDA crops twice as often as each other class")
    p.add_argument("--max-minutes", type=float, default=None, help="stop early after this wall time (recorded)")
    p.add_argument("--negatives", choices=sorted(NEGATIVE_SETS), default="bone",
                   help="hard-negative crops: bone (a fifth on unlabelled >= 400 HU) or split (bone, metal >= 1200 HU "
                        "and 130-400 HU apart; docs/calcium.md)")
    add_run_arguments(p)
    p.set_defaults(func=run)
    return p


def parse_boost(text: str | None) -> dict[int, float] | None:
    """'1:2,8:1.5' -> {1: 2.0, 8: 1.5}; None or '' -> None (uniform)."""
    if not text:
        return None
    out = {}
    for part in text.split(","):
        c, _, w = part.partition(":")
        if not w or not 1 <= int(c) <= 8 or float(w) <= 0:
            raise ValueError(f"--focus-boost: expected class:weight with class 1..8 and weight > 0, got {part!r}")
        out[int(c)] = float(w)
    return out


def _split_val(items: list, fraction: float, seed: int) -> tuple[list, list]:
    if fraction <= 0 or len(items) < 2:
        return items, []
    n = min(len(items) - 1, max(1, int(round(fraction * len(items)))))
    order = np.random.default_rng(seed + 7919).permutation(len(items))
    val = set(order[:n].tolist())
    return [x for i, x in enumerate(items) if i not in val], [x for i, x in enumerate(items) if i in val]


@one_line_errors
def run(args: argparse.Namespace) -> int:
    from training.datasets.marker import data_source

    from .coca import CocaDataset, load_aliases

    if args.out is None:
        raise RunError("--out is required (on the command line or in --config)")
    if args.steps < 1:
        raise RunError(f"--steps must be >= 1, got {args.steps}")
    # resolve the device/precision before minutes of data preparation
    from training.runs import resolve_device, resolve_precision

    resolve_precision(args.precision, resolve_device(args.device))
    # phantoms carry the heart/aorta region: the model learns it as channel 9 (COCA cases leave it masked)
    cfg = PreprocessConfig(spacing_mm=args.spacing_mm, region_channel=N_CLASSES if args.phantoms else 0)
    cases: list[tuple[str, str]] = []  # (source, case id)
    if args.phantoms:
        cases += [("phantoms", str(s)) for s in parse_seeds(args.phantoms)]
    ds = None
    if args.coca:
        ds = CocaDataset(args.coca, aliases=load_aliases(args.aliases), dicom_dir=args.dicom_dir,
                         exam_map=args.exam_map)
        exams = ds.exams("train")
        if not exams:
            raise RunError(f"{args.coca}: the split file lists no train exam with an NRRD")
        for exam in exams:  # every exam's CT must be there before minutes of work start
            ds.ct_series(exam)
        cases += [("coca", e) for e in exams]
    if not cases:
        raise RunError("nothing to train on: give --phantoms and/or --coca")
    fit, val = _split_val(cases, args.val_fraction, args.seed)
    rng = np.random.default_rng(args.seed)

    def load(items):
        out: list[SliceSet] = []
        ph = [int(c) for s, c in items if s == "phantoms"]
        if ph:
            out += phantom_slices(ph, cfg)
        coca = [c for s, c in items if s == "coca"]
        if coca:
            for _, hu, lab, zpos, sp in ds.cases(exams=coca):
                out.append(slices_from_volume(hu, lab, zpos, sp, cfg, rng))
        return out

    sources = []
    if args.phantoms:
        n_fit = sum(1 for s, _ in fit if s == "phantoms")
        sources.append({"layout": "calcium phantoms (training.calcium.phantom)", "path": "generated in memory",
                        "seeds": args.phantoms,
                        "cases": {"train": n_fit, "validation": sum(1 for s, _ in val if s == "phantoms")},
                        "generated": True, "generator": "training.calcium.phantom"})
    if ds is not None:
        sources.append(data_source(args.coca, "COCA_Segmentations", {
            "train": sum(1 for s, _ in fit if s == "coca"), "validation": sum(1 for s, _ in val if s == "coca")},
            content_generated=ds.generated_reason(), split="train", dicom_dir=str(ds.dicom_dir.resolve())))
    generated = any(s["generated"] for s in sources)
    data = {"sources": sources, "generated": generated, "cases": {"train": len(fit), "validation": len(val)}}
    trained_on = " + ".join(
        (f"synthetic phantoms (seeds {args.phantoms})" if s["layout"].startswith("calcium phantoms") else
         f"{'synthetic phantoms: ' if s['generated'] else ''}COCA-format folder {args.coca.name} (train split)")
        for s in sources)
    fit_sets, val_sets = load(fit), load(val)
    ckpt = train(fit_sets, args.out, steps=args.steps, batch=args.batch, crop=args.crop, lr=args.lr, base=args.base,
                 cfg=cfg, seed=args.seed, max_minutes=args.max_minutes, threads=args.threads,
                 focus_boost=parse_boost(args.focus_boost), val_sets=val_sets, epoch_steps=args.epoch_steps,
                 negatives=NEGATIVE_SETS[args.negatives], run_opts=RunOptions.from_args(args, args.out),
                 config=vars(args), data=data,
                 extra={"trained_on": trained_on, "synthetic": generated,
                        "split": {"train": [c for _, c in fit], "validation": [c for _, c in val]}})
    print(f"checkpoint: {ckpt}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return run(parse_with_config(build_parser(), argv))


if __name__ == "__main__":
    sys.exit(main())
