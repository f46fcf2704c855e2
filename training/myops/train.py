"""Train the myops 2D U-Net on a MyoPS380-format folder.

    python -m training.myops.train --data /data/MyoPS380_dataset --out runs/myops \
        [--split every5th|random] [--seed 0] [--steps 3000] [--batch 16] [--base 16] [--depth 4]

Cases go through the pipeline's own preprocessing (:mod:`pipelines.myops.preprocess`, ground-truth
myocardium as the registration/ROI prior); prepared cases are cached as .npz under ``--cache``.
Progress and losses are printed and written to ``<out>/train.log``; the checkpoint is
``<out>/checkpoint.pt`` (state dict + model config + label convention + preprocessing + split).

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
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from pipelines.myops.preprocess import PreprocessConfig

from .dataset import MyoPSDataset, split_cases
from .labels import MYOPS2020, LabelConvention
from .prepare import PreparedCase, prepare_case

__all__ = ["TrainConfig", "prepare_cases", "train_model", "save_checkpoint", "load_checkpoint", "main"]

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


def prepare_cases(dataset: MyoPSDataset, ids: Sequence[str], cfg: PreprocessConfig,
                  cache: Path | None = None) -> list[PreparedCase]:
    """Preprocess cases (cached as npz when ``cache`` is given), logging progress."""
    out = []
    t0 = time.perf_counter()
    for i, case_id in enumerate(ids, start=1):
        path = cache / f"{case_id}.npz" if cache else None
        if path is not None and path.is_file():
            z = np.load(path)
            pc = PreparedCase(case_id, z["image"], z["label"], z["grid_registered"], z["grid_raw"], z["grid_label"],
                              tuple(int(v) for v in z["roi_yx"]))
        else:
            pc = prepare_case(dataset.load(case_id), cfg)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                np.savez_compressed(path, image=pc.image, label=pc.label, grid_registered=pc.grid_registered,
                                    grid_raw=pc.grid_raw, grid_label=pc.grid_label, roi_yx=np.asarray(pc.roi_yx))
        out.append(pc)
        log.info("prepared %s (%d/%d, %d slices, %.0f s elapsed)", case_id, i, len(ids), pc.image.shape[0],
                 time.perf_counter() - t0)
    return out


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


def train_model(train: Sequence[PreparedCase], num_classes: int, cfg: TrainConfig, roi: int = 128):
    """Train a fresh U-Net; returns (model, history list of dicts)."""
    import torch
    import torch.nn.functional as F

    from .model import UNet2D

    torch.manual_seed(cfg.seed)
    model = UNet2D(in_channels=train[0].image.shape[1], num_classes=num_classes, base=cfg.base, depth=cfg.depth)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    sampler = _Sampler(train, roi, cfg)
    history = []
    t0 = time.perf_counter()
    running = 0.0
    weights = torch.ones(num_classes)
    weights[2:4] = cfg.lesion_weight  # edema, scar
    model.train()
    for step in range(1, cfg.steps + 1):
        xb, yb = sampler.batch()
        x, y = torch.from_numpy(xb), torch.from_numpy(yb)
        logits = model(x)
        ce = F.cross_entropy(logits, y, weight=weights)
        probs = logits.softmax(1)
        onehot = F.one_hot(y, num_classes).permute(0, 3, 1, 2).float()
        inter = (probs * onehot).sum((0, 2, 3))
        denom = probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
        dice = (2 * inter + 1.0) / (denom + 1.0)
        loss = ce + (1.0 - dice[1:].mean())
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        running += loss.item()
        if step % cfg.log_every == 0 or step == cfg.steps:
            elapsed = time.perf_counter() - t0
            entry = {"step": step, "loss": running / (cfg.log_every if step % cfg.log_every == 0 else
                                                     step % cfg.log_every), "elapsed_s": round(elapsed, 1),
                     "dice_fg_batch": [round(d.item(), 3) for d in dice[1:].detach()]}
            history.append(entry)
            log.info("step %d/%d loss %.4f batch dice %s (%.0f s, ~%.0f s left)", step, cfg.steps, entry["loss"],
                     entry["dice_fg_batch"], elapsed, elapsed / step * (cfg.steps - step))
            running = 0.0
    model.eval()
    return model, history


def save_checkpoint(path: Path, model, *, labels: LabelConvention, preprocess: PreprocessConfig,
                    train_cfg: TrainConfig, split: dict, history: list, metrics: dict | None = None,
                    trained_on: str = "", synthetic: bool = False) -> Path:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({
        "state_dict": model.state_dict(), "model_config": model.config,
        "labels": dataclasses.asdict(labels), "preprocess": preprocess.to_dict(),
        "train_config": dataclasses.asdict(train_cfg), "split": split, "history": history,
        "metrics": metrics or {}, "trained_on": trained_on, "synthetic": synthetic,
    }, path)
    return path


def load_checkpoint(path: Path):
    """(model in eval mode, checkpoint dict)."""
    import torch

    from .model import UNet2D

    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = UNet2D(**ckpt["model_config"])
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, ckpt


def setup_logging(out: Path | None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(out / "train.log"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", handlers=handlers, force=True)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.myops.train", description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="MyoPS380 folder (containing Raw_data/)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--split", choices=("every5th", "random"), default="every5th")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--labels", type=json.loads, default=None,
                   help='label values as JSON, e.g. \'{"myocardium": 200, "edema": 1220, "scar": 2221}\'')
    p.add_argument("--cache", type=Path, default=None)
    p.add_argument("--max-cases", type=int, default=None)
    for f in dataclasses.fields(TrainConfig):
        if f.name != "seed":
            p.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    a = p.parse_args(argv)
    setup_logging(a.out)
    labels = LabelConvention.from_mapping(a.labels) if a.labels else MYOPS2020
    ds = MyoPSDataset(a.data, labels)
    ids = ds.case_ids[: a.max_cases] if a.max_cases else ds.case_ids
    train_ids, test_ids = split_cases(ids, a.split, a.seed)
    cfg = TrainConfig(**{f.name: getattr(a, f.name) for f in dataclasses.fields(TrainConfig)})
    pre = PreprocessConfig()
    log.info("training on %d cases, %d held out (split %s, seed %d)", len(train_ids), len(test_ids), a.split, a.seed)
    cases = prepare_cases(ds, train_ids, pre, a.cache)
    model, history = train_model(cases, labels.num_classes, cfg, pre.roi_size)
    from .evaluate import evaluate_cases

    metrics = evaluate_cases(model, prepare_cases(ds, test_ids, pre, a.cache)) if test_ids else {}
    log.info("held-out Dice: %s", json.dumps(metrics))
    save_checkpoint(a.out / "checkpoint.pt", model, labels=labels, preprocess=pre, train_cfg=cfg,
                    split={"mode": a.split, "seed": a.seed, "train": train_ids, "test": test_ids},
                    history=history, metrics=metrics, trained_on=str(a.data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
