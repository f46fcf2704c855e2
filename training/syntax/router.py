"""Training the artery router (``syntax-artery``) on anatomical angiography scenes, within a CPU budget.

Training cines come from :mod:`training.syntax.angio` (left / right trees at any angulation, and
ventriculograms, aortograms and test shots as negatives) plus a share of the older
:mod:`training.syntax.phantom` cines (so that the phantom studies the SYNTAX regressors were trained on
keep routing).  Each cine goes through the pipeline's own preprocessing
(:func:`pipelines.syntax.preprocess.preprocess_frames` on the frames
:func:`~pipelines.syntax.preprocess.read_indices` picks with a random spread offset), so what the
model sees in training is what the pipeline feeds it; scenes are rendered at a random matrix
(``RENDER_SIZES``) and only the frames the clip reads are rendered.  Targets are soft: left 0.02, right 0.98,
negatives 0.5 (between the routing thresholds 0.10 / 0.90).

The budget is wall time (``budget_s``): data generation and epochs stop when it is spent; the state
with the lowest held-out loss is kept.  Phantoms only; no clinical claim.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from pipelines.syntax.preprocess import CineConfig, preprocess_cine, preprocess_frames, read_indices

from . import angio
from .model import ArteryClassifier
from .phantom import _sample_lesions, make_cine

__all__ = ["RouterData", "make_router_data", "train_router", "ROUTER_MIX"]

log = logging.getLogger("cardionode.training.syntax.router")

#: share of each kind among the generated training cines
ROUTER_MIX = {"left": 0.33, "right": 0.30, "ventriculogram": 0.10, "aortogram": 0.08, "testshot": 0.04,
              "phantom": 0.15}
_PHANTOM_TARGET = {"left": 0.02, "right": 0.98, "other": 0.5}
#: matrices the angiography scenes are rendered at (the pipeline resizes every cine to the model's size)
RENDER_SIZES = (128, 192, 256)


@dataclasses.dataclass
class RouterData:
    """Preprocessed clips (channel 0 before normalisation, float16) and targets."""

    x: np.ndarray  # (n, frames, h, w) float16 in 0..1
    y: np.ndarray  # (n,) float32 p(right) target
    kinds: list[str]


def _clip01(cine: np.ndarray, cfg: CineConfig, offset: float | None) -> np.ndarray:
    return _channel01(preprocess_cine(cine, cfg, offset), cfg)


def _channel01(x: np.ndarray, cfg: CineConfig) -> np.ndarray:
    return (x[0] * cfg.std[0] + cfg.mean[0]).astype(np.float16)


def _plan(n: int, seed0: int, mix: dict[str, float]) -> list[tuple[str, int, float, int]]:
    """(kind, seed, spread offset, render size) of each clip, drawn in order from ``seed0``."""
    rng = np.random.default_rng(seed0)
    kinds = list(mix)
    p = np.asarray([mix[k] for k in kinds], np.float64)
    plan = []
    for i in range(n):
        kind = kinds[int(rng.choice(len(kinds), p=p / p.sum()))]
        offset = float(rng.uniform(0, 1))
        size = int(rng.choice(RENDER_SIZES)) if kind != "phantom" else 96
        plan.append((kind, seed0 + i, offset, size))
    return plan


def _one_clip(item: tuple[str, int, float, int], cfg: CineConfig) -> tuple[np.ndarray, float, str]:
    """One preprocessed clip (channel 0, 0..1), its target and its kind."""
    kind, seed, offset, size = item
    if kind == "phantom":
        prng = np.random.default_rng(seed)
        art = ("left", "right", "other")[int(prng.choice(3, p=[0.45, 0.4, 0.15]))]
        les = _sample_lesions(art, prng) if art != "other" else []
        cine = make_cine(art, les, prng, size).frames
        return _clip01(cine, cfg, offset), _PHANTOM_TARGET[art], f"phantom-{art}"
    scene = angio.make_scene(kind, seed, size=size)
    frames = angio.render(scene, read_indices(scene.frames, cfg, offset))  # only what the clip reads
    return _channel01(preprocess_frames(frames, cfg), cfg), angio.ROUTER_TARGET[kind], kind


def make_router_data(n: int, seed0: int, cfg: CineConfig, *, deadline: float | None = None,
                     mix: dict[str, float] | None = None, workers: int = 1) -> RouterData:
    """``n`` clips from seeds ``seed0``.. (kinds, offsets and sizes drawn from ``seed0``, so the data
    are the same whatever ``workers``).  Stops early at ``deadline`` (time.time())."""
    plan = _plan(n, seed0, mix or ROUTER_MIX)
    xs, ys, ks = [], [], []
    chunk = 64
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    try:
        for s in range(0, n, chunk):
            if deadline is not None and time.time() > deadline:
                log.warning("router data: budget reached after %d of %d clips", len(ys), n)
                break
            part = plan[s:s + chunk]
            done = (list(pool.map(_one_clip, part, [cfg] * len(part), chunksize=8)) if pool is not None
                    else [_one_clip(item, cfg) for item in part])
            for x, y, k in done:
                xs.append(x)
                ys.append(y)
                ks.append(k)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return RouterData(np.stack(xs), np.asarray(ys, np.float32), ks)


def _batch(d: RouterData, idx: np.ndarray, cfg: CineConfig) -> tuple[torch.Tensor, torch.Tensor]:
    v = torch.from_numpy(d.x[idx].astype(np.float32))[:, None]  # (b, 1, f, h, w)
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1, 1)
    return (v - mean) / std, torch.from_numpy(d.y[idx])


@torch.no_grad()
def _eval(model: nn.Module, d: RouterData, cfg: CineConfig, bs: int = 64) -> tuple[float, np.ndarray]:
    model.eval()
    losses, probs = [], []
    for s in range(0, len(d.y), bs):
        x, y = _batch(d, np.arange(s, min(s + bs, len(d.y))), cfg)
        out = model(x)[:, 0]
        losses.append(float(nn.functional.binary_cross_entropy_with_logits(out, y, reduction="sum")))
        probs.append(torch.sigmoid(out).numpy())
    return sum(losses) / max(len(d.y), 1), np.concatenate(probs)


def routing_accuracy(probs: np.ndarray, targets: np.ndarray, left_max: float = 0.10, right_min: float = 0.90) -> float:
    """Share of clips routed as their target says (left <= left_max, right >= right_min, else neither)."""
    got = np.where(probs <= left_max, 0, np.where(probs >= right_min, 2, 1))
    want = np.where(targets < 0.25, 0, np.where(targets > 0.75, 2, 1))
    return float((got == want).mean())


def train_router(train: RouterData, held: RouterData, cfg: CineConfig, widths: Sequence[int], *, epochs: int,
                 lr: float = 5e-3, batch_size: int = 32, seed: int = 0, deadline: float | None = None,
                 out: Path | None = None) -> tuple[ArteryClassifier, list[dict[str, float]]]:
    """AdamW with a cosine schedule; the state with the lowest held-out loss is returned (and saved to
    ``out`` as a ``model.*`` state dict, the published classifier layout)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = ArteryClassifier(widths)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = max(1, epochs * math.ceil(len(train.y) / batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    best, best_loss, hist = None, float("inf"), []
    for ep in range(epochs):
        model.train()
        order = rng.permutation(len(train.y))
        tot, t0 = 0.0, time.time()
        for s in range(0, len(order), batch_size):
            x, y = _batch(train, order[s:s + batch_size], cfg)
            if cfg.clip != "minip" and rng.random() < 0.5:  # time reversal does not change the artery
                x = x.flip(2)  # (a running minimum projection is never reversed at inference)
            loss = nn.functional.binary_cross_entropy_with_logits(model(x)[:, 0], y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach()) * len(y)
        ev_loss, probs = _eval(model, held, cfg)
        acc = routing_accuracy(probs, held.y)
        hist.append({"epoch": ep + 1, "train_loss": tot / len(train.y), "eval_loss": ev_loss, "eval_routing": acc,
                     "seconds": round(time.time() - t0, 1)})
        log.info("router epoch %d: train %.4f held-out %.4f routing %.3f (%.0f s)", ep + 1, tot / len(train.y), ev_loss,
                 acc, time.time() - t0)
        if ev_loss <= best_loss:
            best_loss, best = ev_loss, {k: v.detach().clone() for k, v in model.state_dict().items()}
        if deadline is not None and time.time() > deadline and ep + 1 < epochs:
            log.warning("router: wall budget reached after epoch %d of %d", ep + 1, epochs)
            break
    assert best is not None
    model.load_state_dict(best)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(best, out)
    return model, hist
