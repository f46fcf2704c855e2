"""Learning-rate schedules that work for any number of steps (torch's OneCycleLR divides by zero
when the warm-up phase rounds to no step, e.g. ``total_steps=10, pct_start=0.1``)."""
from __future__ import annotations

import torch

__all__ = ["one_cycle"]


def one_cycle(optimizer: torch.optim.Optimizer, max_lr: float, total_steps: int,
              pct_start: float = 0.3) -> torch.optim.lr_scheduler.LRScheduler:
    """OneCycleLR (cosine) for ``total_steps`` >= 4 with the warm-up widened to at least two steps;
    a constant ``max_lr`` for shorter runs.  Identical to OneCycleLR whenever that one works."""
    total_steps = max(1, int(total_steps))
    if total_steps < 4:
        for g in optimizer.param_groups:
            g["lr"] = max_lr
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    pct = pct_start if pct_start * total_steps - 1 >= 1 else 2.0 / total_steps
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total_steps, pct_start=pct)
