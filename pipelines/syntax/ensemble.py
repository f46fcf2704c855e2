"""Combining the per-fold artery outputs into left / right / total SYNTAX (numpy only).

Per fold k: side score S_k = max(0, exp(out[1]) - 1) of the side's model (0 when the study has no
cine of that side).  Raw: L = mean_k L_k, R = mean_k R_k, total = L + R.  Calibrated (reference
apps): total = max(0, mean_k (a_k (L_k + R_k) + b_k)).  So that the report keeps total = left + right,
the calibrated total is shared between the sides in proportion to the raw L and R (half each when
both are 0).
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

__all__ = ["SyntaxScores", "score_from_output", "combine"]


def score_from_output(reg: float) -> float:
    """Artery score from the regression output (log(1 + score)): max(0, exp(x) - 1)."""
    return float(max(0.0, np.expm1(float(reg))))


@dataclasses.dataclass(frozen=True)
class SyntaxScores:
    left: float
    right: float
    raw_left: float
    raw_right: float
    calibrated: bool
    per_fold: tuple[tuple[int, float, float], ...]  # (fold, L_k, R_k)

    @property
    def total(self) -> float:
        return self.left + self.right

    @property
    def raw_total(self) -> float:
        return self.raw_left + self.raw_right

    def side(self, side: str) -> float:
        """The calibrated score of the ``left`` or ``right`` coronary system."""
        return _pick(side, self.left, self.right)

    def raw(self, side: str) -> float:
        """The raw ensemble score of the ``left`` or ``right`` coronary system."""
        return _pick(side, self.raw_left, self.raw_right)


def _pick(side: str, left: float, right: float) -> float:
    if side == "left":
        return left
    if side == "right":
        return right
    raise ValueError(f"side must be 'left' or 'right', got {side!r}")


def combine(per_fold: Mapping[int, tuple[float, float]],
            calibration: Mapping[int, Mapping[str, float]] | None) -> SyntaxScores:
    """``per_fold``: fold -> (L_k, R_k); ``calibration``: fold -> {"a", "b"} or None for raw."""
    if not per_fold:
        raise ValueError("no fold outputs to combine")
    folds: Sequence[int] = sorted(per_fold)
    lk = np.asarray([per_fold[k][0] for k in folds], np.float64)
    rk = np.asarray([per_fold[k][1] for k in folds], np.float64)
    raw_l, raw_r = float(lk.mean()), float(rk.mean())
    rows = tuple((int(k), float(per_fold[k][0]), float(per_fold[k][1])) for k in folds)
    if calibration is None:
        return SyntaxScores(raw_l, raw_r, raw_l, raw_r, False, rows)
    missing = [k for k in folds if k not in calibration]
    if missing:
        raise ValueError(f"no calibration for fold(s) {missing}")
    a = np.asarray([float(calibration[k]["a"]) for k in folds])
    b = np.asarray([float(calibration[k]["b"]) for k in folds])
    total = float(max(0.0, np.mean(a * (lk + rk) + b)))
    raw = raw_l + raw_r
    share = raw_l / raw if raw > 0 else 0.5
    left = total * share
    return SyntaxScores(left, total - left, raw_l, raw_r, True, rows)
