"""Train the 2.5D calcium U-Net on phantoms (and/or a COCA-format folder).

    python -m training.calcium.train --out runs/calcium --steps 3000 --phantoms 0-59
    python -m training.calcium.train --out runs/calcium --coca /data/COCA_Segmentations --steps 20000

Progress bar on stderr (tqdm), a log line every ``--log-every`` steps to ``<out>/train.log``,
checkpoint ``<out>/model.pt`` (state dict + model config + preprocessing + seeds).
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from pipelines.calcium.preprocess import PreprocessConfig

from .data import SliceSet, phantom_slices, sample_batch, slices_from_volume
from .evaluate import parse_seeds
from .model import UNet2D

log = logging.getLogger("cardionode.training.calcium")

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
                 weights: torch.Tensor | None = None) -> torch.Tensor:
    k = logits.shape[1]
    if weights is None:
        w = torch.full((k,), fg_weight)
        w[0] = 1.0
    else:
        w = weights
    ce = F.cross_entropy(logits, target, weight=w)
    prob = logits.softmax(1)[:, 1:]
    onehot = F.one_hot(target, k).permute(0, 3, 1, 2)[:, 1:].float()
    inter = (prob * onehot).sum((0, 2, 3))
    denom = prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    present = onehot.sum((0, 2, 3)) > 0
    dice = (2 * inter + 1) / (denom + 1)
    dl = (1 - dice[present]).mean() if present.any() else prob.sum() * 0
    return ce + dl


def lr_at(progress: float, peak: float, warmup: float = 0.05, floor: float = 0.01) -> float:
    """Linear warm-up to ``peak`` over the first ``warmup`` of training, then cosine decay to ``floor * peak``."""
    p = min(max(progress, 0.0), 1.0)
    if p < warmup:
        return peak * (0.1 + 0.9 * p / warmup)
    q = (p - warmup) / (1 - warmup)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * q)))


def train(sets: Sequence[SliceSet], out: Path, *, steps: int, batch: int, crop: int, lr: float, base: int,
          cfg: PreprocessConfig, seed: int, log_every: int = 100, threads: int = 1, extra: dict | None = None,
          max_minutes: float | None = None, balance: bool = True,
          focus_boost: dict[int, float] | None = None) -> Path:
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    fh = logging.FileHandler(out / "train.log")
    fh.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(fh)
    weights = class_weights(sets) if balance else None
    if weights is not None:
        log.info("cross-entropy class weights %s", [round(float(v), 2) for v in weights])
    model = UNet2D(in_channels=cfg.channels, n_classes=9, base=base)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    model.train()
    t0, running = time.time(), 0.0
    bar = tqdm(range(1, steps + 1), desc="train calcium", unit="step", file=sys.stderr, mininterval=5)
    done = 0
    for step in bar:
        elapsed = time.time() - t0
        if max_minutes is not None and elapsed > 60 * max_minutes:
            log.warning("time cap of %.1f min reached after %d of %d steps: stopping early", max_minutes, done, steps)
            break
        # progress drives the schedule: steps done, or the share of the time cap used, whichever is further,
        # so that a capped run still ends with a decayed learning rate instead of stopping at its peak
        progress = max((step - 1) / steps, elapsed / (60 * max_minutes) if max_minutes else 0.0)
        for group in opt.param_groups:
            group["lr"] = lr_at(progress, lr)
        x, y = sample_batch(sets, batch, crop, rng, focus_boost=focus_boost)
        loss = dice_ce_loss(model(torch.from_numpy(x)), torch.from_numpy(y), weights=weights)
        opt.zero_grad()
        loss.backward()
        opt.step()
        lv = float(loss.detach())
        running = 0.98 * running + 0.02 * lv if step > 1 else lv
        done = step
        bar.set_postfix(loss=f"{running:.3f}")
        if step % log_every == 0 or step == steps:
            log.info("step %d/%d loss %.4f lr %.2e %.0fs", step, steps, running, opt.param_groups[0]["lr"], time.time() - t0)
    ckpt = out / "model.pt"
    torch.save({"state_dict": model.state_dict(), "model_config": model.config, "preprocessing": cfg.to_dict(),
                "steps": done, "planned_steps": steps, "batch": batch, "crop": crop, "lr": lr,
                "schedule": "warm-up 5% + cosine, driven by max(step, time) progress", "threads": threads,
                "class_weights": None if weights is None else [round(float(v), 3) for v in weights],
                "focus_boost": focus_boost,
                "seed": seed, "train_seconds": time.time() - t0,
                "final_loss": running, **(extra or {})}, ckpt)
    log.removeHandler(fh)
    return ckpt


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(prog="python -m training.calcium.train", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--phantoms", default=None, help="phantom seeds for training, e.g. 0-59")
    p.add_argument("--coca", type=Path, default=None, help="COCA-format folder (train split is used)")
    p.add_argument("--aliases", type=Path, default=None, help="JSON {segment name: class value 1..8} replacing the built-in name table")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--crop", type=int, default=64, help="crop side on the coarse grid (multiple of 8)")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--base", type=int, default=8, help="U-Net base channels")
    p.add_argument("--spacing-mm", type=float, default=PreprocessConfig.spacing_mm)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (1 is fastest on shared cores: more threads spin against other jobs)")
    p.add_argument("--focus-boost", default=None,
                   help="focus-crop draw weights, e.g. '1:2' draws PDA crops twice as often as each other class")
    p.add_argument("--max-minutes", type=float, default=None, help="stop early after this wall time (recorded)")
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


def run(args: argparse.Namespace) -> int:
    cfg = PreprocessConfig(spacing_mm=args.spacing_mm)
    sets: list[SliceSet] = []
    if args.phantoms:
        sets += phantom_slices(parse_seeds(args.phantoms), cfg)
    if args.coca:
        from .coca import CocaDataset, load_aliases

        rng = np.random.default_rng(args.seed)
        for cid, hu, lab, zpos, sp in CocaDataset(args.coca, aliases=load_aliases(args.aliases)).cases("train"):
            sets.append(slices_from_volume(hu, lab, zpos, sp, cfg, rng))
    if not sets:
        print("nothing to train on: give --phantoms and/or --coca", file=sys.stderr)
        return 2
    ckpt = train(sets, args.out, steps=args.steps, batch=args.batch, crop=args.crop, lr=args.lr, base=args.base,
                 cfg=cfg, seed=args.seed, log_every=args.log_every, max_minutes=args.max_minutes, threads=args.threads,
                 focus_boost=parse_boost(args.focus_boost),
                 extra={"trained_on": " + ".join(x for x in (
                     f"synthetic phantoms (seeds {args.phantoms})" if args.phantoms else "",
                     f"COCA-format folder {args.coca.name} (train split)" if args.coca else "") if x),
                     "synthetic": not args.coca})
    print(f"checkpoint: {ckpt}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
