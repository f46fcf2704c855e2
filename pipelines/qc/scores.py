"""Output-unusualness scores measured from a model's own output (numpy only).

- :class:`ConfidenceTally`: the fraction of foreground pixels (argmax not background) whose winning
  class has softmax probability below :data:`LOW_CONFIDENCE` (over at least :data:`MIN_FOREGROUND`
  pixels) -- on inputs like its training data a
  segmentation model is sure of most of what it paints; on unfamiliar input that fraction rises.
  Segmentation pipelines (calcium, myops) feed it every batch of logits they predict.
- :func:`ensemble_spread`: the standard deviation of the members' predictions of one quantity
  (the 5 SYNTAX fold models of a coronary system), in the quantity's unit.

The accepted range of each score is the model manifest's ``output_domain`` (checked by
:func:`pipelines.qc.domain.check` with ``kind="output"``).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

__all__ = ["LOW_CONFIDENCE", "softmax", "ConfidenceTally", "ensemble_spread"]

#: a foreground pixel whose winning class probability is below this counts as low-confidence
LOW_CONFIDENCE = 0.5
#: the fraction's denominator is at least this many pixels: a handful of painted pixels, a few of
#: them unsure, is no evidence of unfamiliar input (one small plaque would otherwise abstain)
MIN_FOREGROUND = 100


def softmax(logits: np.ndarray, axis: int = 1) -> np.ndarray:
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    probs: np.ndarray = e / e.sum(axis=axis, keepdims=True)
    return probs


@dataclasses.dataclass
class ConfidenceTally:
    """Running count over batches of class probabilities (classes on ``axis``; class 0 = background)."""

    threshold: float = LOW_CONFIDENCE
    foreground: int = 0
    low: int = 0

    def add(self, probs: np.ndarray, axis: int = 1) -> None:
        top = probs.max(axis=axis)
        fg = probs.argmax(axis=axis) > 0
        self.foreground += int(fg.sum())
        self.low += int((fg & (top < self.threshold)).sum())

    def add_logits(self, logits: np.ndarray, axis: int = 1) -> None:
        self.add(softmax(np.asarray(logits, dtype=np.float32), axis=axis), axis=axis)

    min_foreground: int = MIN_FOREGROUND

    @property
    def fraction(self) -> float:
        """Low-confidence pixels over the foreground, or over ``min_foreground`` when less was painted
        (0 when nothing was: nothing to doubt)."""
        return self.low / max(self.foreground, self.min_foreground, 1)


def ensemble_spread(values: Sequence[float]) -> float:
    """Population standard deviation of the members' values (0 for fewer than two members)."""
    v = np.asarray(list(values), dtype=np.float64)
    return float(v.std()) if v.size > 1 else 0.0
