"""Train the myops 2D U-Net on a MyoPS380-format folder.

    python -m training.myops.train --data /data/MyoPS380_dataset --out runs/myops \
        [--split every5th|random] [--seed 0] [--steps 3000] [--batch 16] [--base 16] [--depth 4] [--prealigned]
    cardionode myops train ...        (the same options)

Cases go through the pipeline's own preprocessing (:mod:`pipelines.myops.preprocess`, ground-truth
myocardium as the registration/ROI prior), or only its intensity normalisation with ``--prealigned``
(the release as distributed is already matched, registered and cropped to 128 x 128); prepared
cases are cached as .npz under ``--cache``.  Every case is checked before any work (missing files,
label values, grids).  The run folder ``--out`` (training/runs) holds config.yaml, train.log,
metrics.csv, curves.png, last.pt (``--resume``) and best.pt (lowest validation loss; a share
``--val-fraction`` of the training cases is held out for it); after training best.pt is evaluated on
the held-out split and the Dice figures are stored in it.

Sampling, so that the same network also serves as the inference-time first pass: 30 % of the
samples come from the *unregistered* grid, 30 % of the windows are placed anywhere on the 224 grid
(the first pass tiles it), the rest around the ROI with +-16 px jitter; random flips / 90 degree
rotations.  Loss: cross-entropy (edema and scar weighted x4) + soft Dice over the foreground classes.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from pipelines.myops.preprocess import PreprocessConfig

from training.runs.cli import one_line_errors

from .dataset import DatasetError, MyoPSDataset, split_cases
from .labels import MYOPS2020, LabelConvention
from .metrics import METHOD, evaluate_cases
from .prepare import PreparedCase, prepare_cases

__all__ = ["TrainConfig", "train_model", "main"]

log = logging.getLogger("cardionode.training.myops")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int = 3000
    batch: int = 16
    lr: float = 2e-3
    base: int = 16
    depth: int = 4
    seed: int = 0
    p_unregistered: float = 0.3
    p_anywhere: float = 0.3
    jitter: int = 16
    lesion_weight: float = 4.0  # cross-entropy weight of the edema and scar classes (small, rare)
    log_every: int = 25
    max_seconds: float | None = None  # wall-clock budget of the step loop: stop early (and say so) when spent


class _Sampler:
    def __init__(self, cases: Sequence[PreparedCase], roi: int, cfg: TrainConfig) -> None:
        self.cases = list(cases)
        self.index = [(ci, s) for ci, c in enumerate(self.cases) for s in range(c.grid_label.shape[0])]
        self.roi = roi
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed)

    def batch(self) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        r = self.roi
        for _ in range(self.cfg.batch):
            ci, s = self.index[int(self.rng.integers(len(self.index)))]
            c = self.cases[ci]
            src = c.grid_raw if self.rng.uniform() < self.cfg.p_unregistered else c.grid_registered
            g = src.shape[-1]
            if self.rng.uniform() < self.cfg.p_anywhere:
                y0, x0 = (int(v) for v in self.rng.integers(0, g - r + 1, size=2))
            else:
                j = self.cfg.jitter
                y0 = int(np.clip(c.roi_yx[0] + self.rng.integers(-j, j + 1), 0, g - r))
                x0 = int(np.clip(c.roi_yx[1] + self.rng.integers(-j, j + 1), 0, g - r))
            x = src[s, :, y0:y0 + r, x0:x0 + r]
            y = c.grid_label[s, y0:y0 + r, x0:x0 + r]
            k = int(self.rng.integers(4))
            x, y = np.rot90(x, k, axes=(1, 2)), np.rot90(y, k)
            if self.rng.uniform() < 0.5:
                x, y = x[:, :, ::-1], y[:, ::-1]
            x = x * self.rng.uniform(0.9, 1.1)  # mild intensity scaling
            xs.append(np.ascontiguousarray(x))
            ys.append(np.ascontiguousarray(y))
        return np.stack(xs).astype(np.float32), np.stack(ys).astype(np.int64)


def _class_weights(num_classes: int, cfg: TrainConfig):
    import torch

    weights = torch.ones(num_classes)
    weights[2:4] = cfg.lesion_weight  # edema, scar
    return weights


def segmentation_loss(logits, y, weights, num_classes: int):
    """(loss, per-class soft Dice): cross-entropy (lesions weighted) + (1 - mean foreground soft Dice)."""
    import torch.nn.functional as F

    ce = F.cross_entropy(logits, y, weight=weights.to(logits.device))
    probs = logits.softmax(1)
    onehot = F.one_hot(y, num_classes).permute(0, 3, 1, 2).float()
    inter = (probs * onehot).sum((0, 2, 3))
    denom = probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    dice = (2 * inter + 1.0) / (denom + 1.0)
    return ce + (1.0 - dice[1:].mean()), dice


def validation_loss(model, cases: Sequence[PreparedCase], weights, num_classes: int, device, batch: int = 16) -> float:
    """Mean loss over every slice of the validation cases (eval mode, no gradient)."""
    import torch

    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for c in cases:
            for i in range(0, len(c.image), batch):
                x = torch.from_numpy(np.ascontiguousarray(c.image[i:i + batch])).to(device)
                y = torch.from_numpy(c.label[i:i + batch].astype(np.int64)).to(device)
                loss, _ = segmentation_loss(model(x).float(), y, weights, num_classes)
                total += float(loss) * len(x)
                n += len(x)
    model.train()
    return total / max(n, 1)


def train_model(train: Sequence[PreparedCase], num_classes: int, cfg: TrainConfig, roi: int = 128, *,
                run=None, val: Sequence[PreparedCase] = (), epoch_steps: int | None = None, extra: dict | None = None):
    """Train a fresh U-Net; returns (model, history list of dicts).

    With ``run`` (:class:`training.runs.TrainingRun`) the steps are grouped in epochs of ``epoch_steps``;
    after each epoch the validation loss on ``val`` (or, without validation cases, the training loss) is
    recorded and last.pt / best.pt are written; ``run.restore`` continues a resumed run.  The returned
    model then holds the best epoch's weights."""
    import torch

    from training.runs.schedule import one_cycle

    from .model import UNet2D

    torch.manual_seed(cfg.seed)
    model = UNet2D(in_channels=train[0].image.shape[1], num_classes=num_classes, base=cfg.base, depth=cfg.depth)
    device = run.device if run is not None else torch.device("cpu")
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = one_cycle(opt, cfg.lr, cfg.steps, pct_start=0.1)
    sampler = _Sampler(train, roi, cfg)
    history: list[dict] = []
    t0 = time.perf_counter()
    running, epoch_loss, epoch_n = 0.0, 0.0, 0
    weights = _class_weights(num_classes, cfg)
    per_epoch = max(1, epoch_steps or cfg.steps)
    start_epoch = run.restore(model, opt, sched, {"sampler": sampler.rng}) if run is not None else 0
    model.train()
    from training.runs.progress import progress

    steps = range(start_epoch * per_epoch + 1, cfg.steps + 1)
    for step in progress(steps, len(steps), "train myops", run is not None and run.opts.progress):
        if cfg.max_seconds is not None and time.perf_counter() - t0 > cfg.max_seconds:
            log.warning("training budget of %.0f s spent: stopped before step %d of %d", cfg.max_seconds, step,
                        cfg.steps)
            history.append({"step": step - 1, "stopped_early": True, "elapsed_s": round(time.perf_counter() - t0, 1)})
            break
        xb, yb = sampler.batch()
        x, y = torch.from_numpy(xb).to(device), torch.from_numpy(yb).to(device)
        if run is not None:
            with run.autocast():
                logits = model(x)
            loss, dice = segmentation_loss(logits.float(), y, weights, num_classes)
            run.backward_step(loss, opt, where=f"step {step}")
        else:
            loss, dice = segmentation_loss(model(x), y, weights, num_classes)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        running += loss.item()
        epoch_loss += loss.item()
        epoch_n += 1
        if step % cfg.log_every == 0 or step == cfg.steps:
            elapsed = time.perf_counter() - t0
            entry = {"step": step, "loss": running / (cfg.log_every if step % cfg.log_every == 0 else
                                                     step % cfg.log_every), "elapsed_s": round(elapsed, 1),
                     "dice_fg_batch": [round(d.item(), 3) for d in dice[1:].detach()]}
            history.append(entry)
            log.info("step %d/%d loss %.4f batch dice %s (%.0f s)", step, cfg.steps, entry["loss"],
                     entry["dice_fg_batch"], elapsed)
            running = 0.0
        if run is not None and (step % per_epoch == 0 or step == cfg.steps):
            epoch = -(-step // per_epoch)
            metrics = {"train_loss": epoch_loss / max(epoch_n, 1), "lr": opt.param_groups[0]["lr"]}
            if val:
                metrics["val_loss"] = validation_loss(model, val, weights, num_classes, device)
                metrics.update({f"val_{k}": v for k, v in evaluate_cases(model, val, device=device).items()
                                if k.startswith("dice_") and v is not None})
                model.train()
            run.end_epoch(epoch, metrics, model, opt, sched, {"sampler": sampler.rng},
                          extra={**(extra or {}), "step": step, "history_steps": history})
            epoch_loss, epoch_n = 0.0, 0
    if run is not None:
        model.load_state_dict(run.best_state())
    model.eval()
    return model, history


def build_parser() -> argparse.ArgumentParser:
    from training.runs.config import add_run_arguments

    p = argparse.ArgumentParser(prog="python -m training.myops.train", description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=None, help="MyoPS380 folder (containing Raw_data/)")
    p.add_argument("--out", type=Path, default=None, help="run folder")
    p.add_argument("--split", choices=("every5th", "random"), default="every5th")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--labels", type=json.loads, default=None,
                   help='label values as JSON, e.g. \'{"myocardium": 200, "edema": 1220, "scar": 2221}\'')
    p.add_argument("--prealigned", action="store_true",
                   help="the release as distributed: sequences already matched, registered and cropped to 128x128 "
                        "(no slice matching or registration, only intensity normalisation)")
    p.add_argument("--cache", type=Path, default=None)
    p.add_argument("--max-cases", type=int, default=None)
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of the training cases held out to pick best.pt (0: best = lowest training loss)")
    p.add_argument("--epoch-steps", type=int, default=100, help="training steps per epoch (checkpoint + validation)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    for f in dataclasses.fields(TrainConfig):
        if f.name != "seed":
            p.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    add_run_arguments(p)
    return p


def validation_split(ids: Sequence[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, validation): a seeded share ``fraction`` of ``ids`` (at least one when >= 2 cases and > 0)."""
    import random

    ids = list(ids)
    if fraction <= 0 or len(ids) < 2:
        return ids, []
    n = min(len(ids) - 1, max(1, int(round(fraction * len(ids)))))
    shuffled = ids[:]
    random.Random(seed + 7919).shuffle(shuffled)
    val = set(shuffled[:n])
    return [c for c in ids if c not in val], [c for c in ids if c in val]


@one_line_errors
def main(argv: Sequence[str] | None = None) -> int:
    from training.datasets.marker import data_source
    from training.runs import RunOptions, TrainingRun
    from training.runs.config import parse_with_config

    a = parse_with_config(build_parser(), argv, required=("data", "out"))
    if a.steps < 1:
        raise DatasetError(f"--steps must be >= 1, got {a.steps}")
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    labels = LabelConvention.from_mapping(a.labels) if a.labels else MYOPS2020
    ds = MyoPSDataset(a.data, labels, prealigned=a.prealigned)
    ids = ds.case_ids[: a.max_cases] if a.max_cases else ds.case_ids
    fit_ids, test_ids = split_cases(ids, a.split, a.seed)
    ds.check(fit_ids + test_ids)
    train_ids, val_ids = validation_split(fit_ids, a.val_fraction, a.seed)
    cfg = TrainConfig(**{f.name: getattr(a, f.name) for f in dataclasses.fields(TrainConfig)})
    pre = PreprocessConfig()
    source = data_source(ds.root, "MyoPS380" + (" (pre-aligned)" if a.prealigned else ""),
                         {"train": len(train_ids), "validation": len(val_ids), "test": len(test_ids)})
    data = {"sources": [source], "generated": source["generated"],
            "cases": {"train": len(train_ids), "validation": len(val_ids), "test": len(test_ids)}}
    run = TrainingRun(RunOptions.from_args(a, a.out, monitor="val_loss" if val_ids else "train_loss"),
                      family="myops", config=vars(a), logger_names=["cardionode.training.myops"], data=data)
    try:
        log.info("training on %d cases, %d for validation, %d held out (split %s, seed %d)%s", len(train_ids),
                 len(val_ids), len(test_ids), a.split, a.seed, "; generated data" if source["generated"] else "")
        cases = prepare_cases(ds, train_ids, pre, a.cache)
        val = prepare_cases(ds, val_ids, pre, a.cache)
        split = {"mode": a.split, "seed": a.seed, "train": train_ids, "validation": val_ids, "test": test_ids}
        trained_on = f"{'synthetic phantoms: ' if source['generated'] else ''}MyoPS380-format folder {ds.root.name}"
        extra = {"model_config": None, "labels": dataclasses.asdict(labels), "preprocess": pre.to_dict(),
                 "train_config": dataclasses.asdict(cfg), "split": split, "trained_on": trained_on,
                 "synthetic": bool(source["generated"]), "prealigned": a.prealigned}
        extra["model_config"] = _model_config(cases, labels.num_classes, cfg)
        model, history = train_model(cases, labels.num_classes, cfg, pre.roi_size, run=run, val=val,
                                     epoch_steps=a.epoch_steps, extra=extra)
        metrics = (evaluate_cases(model, prepare_cases(ds, test_ids, pre, a.cache), device=run.device)
                   if test_ids else {})
        log.info("held-out Dice (best.pt, epoch %s): %s", run.best and run.best["epoch"], json.dumps(metrics))
        run.update_best(metrics={f"heldout_{k}" if k != "cases" else "heldout_cases": v for k, v in metrics.items()},
                        metrics_method=METHOD + " Held-out split: " + a.split + ".")
        (run.folder / "metrics.json").write_text(json.dumps({"heldout": metrics, "method": METHOD}, indent=1))
        run.finish()
    except BaseException as exc:
        run.fail(exc)
        raise
    print(f"best checkpoint: {run.folder / 'best.pt'}")
    return 0


def _model_config(cases: Sequence[PreparedCase], num_classes: int, cfg: TrainConfig) -> dict:
    from .model import UNet2D

    return UNet2D(in_channels=cases[0].image.shape[1], num_classes=num_classes, base=cfg.base, depth=cfg.depth).config


if __name__ == "__main__":
    raise SystemExit(main())
