"""Evaluation metrics: Dice per class, lesion-level detection, ICC and Cohen's kappa (numpy/scipy)."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["DiceAccumulator", "lesion_detection", "icc_2_1", "cohen_kappa"]


class DiceAccumulator:
    """Global Dice per class over many cases: 2 sum|A and B| / sum(|A| + |B|)."""

    def __init__(self, classes: list[int]) -> None:
        self.classes = classes
        self.inter = {c: 0 for c in classes}
        self.total = {c: 0 for c in classes}

    def add(self, pred: np.ndarray, gt: np.ndarray) -> None:
        for c in self.classes:
            p, g = pred == c, gt == c
            self.inter[c] += int(np.count_nonzero(p & g))
            self.total[c] += int(np.count_nonzero(p) + np.count_nonzero(g))

    def dice(self) -> dict[int, float | None]:
        return {c: (2 * self.inter[c] / self.total[c]) if self.total[c] else None for c in self.classes}


def lesion_detection(pred: np.ndarray, gt: np.ndarray, classes: list[int]) -> dict[int, dict[str, int]]:
    """Per class: GT lesions (3D components, 26-connected) hit by a same-class prediction (tp_gt),
    all GT lesions, predicted lesions overlapping a same-class GT lesion (tp_pred), all predicted."""
    s = np.ones((3, 3, 3), bool)
    out = {}
    for c in classes:
        g, p = gt == c, pred == c
        gl, ng = ndimage.label(g, structure=s)
        pl, npred = ndimage.label(p, structure=s)
        tp_gt = len(set(np.unique(gl[p & g]).tolist()) - {0}) if ng else 0
        tp_pred = len(set(np.unique(pl[p & g]).tolist()) - {0}) if npred else 0
        out[c] = {"tp_gt": tp_gt, "gt": ng, "tp_pred": tp_pred, "pred": npred}
    return out


def icc_2_1(a: np.ndarray, b: np.ndarray) -> float | None:
    """ICC(2,1): two-way random effects, absolute agreement, single rater (Shrout & Fleiss)."""
    x = np.stack([np.asarray(a, float), np.asarray(b, float)], axis=1)
    n, k = x.shape
    if n < 2:
        return None
    grand = x.mean()
    ssr = k * ((x.mean(axis=1) - grand) ** 2).sum()
    ssc = n * ((x.mean(axis=0) - grand) ** 2).sum()
    sst = ((x - grand) ** 2).sum()
    sse = sst - ssr - ssc
    msr, msc, mse = ssr / (n - 1), ssc / (k - 1), sse / ((n - 1) * (k - 1))
    denom = msr + (k - 1) * mse + k * (msc - mse) / n
    if denom <= 0:
        return 1.0 if np.allclose(x[:, 0], x[:, 1]) else None
    return float((msr - mse) / denom)


def cohen_kappa(a: list[int], b: list[int], n_cat: int, weights: str | None = None) -> float | None:
    """Cohen's kappa over categories 0..n_cat-1 (``weights``: None, 'linear' or 'quadratic')."""
    if not a:
        return None
    m = np.zeros((n_cat, n_cat))
    for i, j in zip(a, b):
        m[i, j] += 1
    m /= m.sum()
    exp = np.outer(m.sum(1), m.sum(0))
    i, j = np.indices((n_cat, n_cat))
    if weights is None:
        w = (i != j).astype(float)
    elif weights == "linear":
        w = np.abs(i - j) / max(1, n_cat - 1)
    else:
        w = ((i - j) / max(1, n_cat - 1)) ** 2
    de = (w * exp).sum()
    if de == 0:
        return 1.0 if (w * m).sum() == 0 else None
    return float(1 - (w * m).sum() / de)
