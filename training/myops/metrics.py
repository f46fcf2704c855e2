"""MyoPS metrics: Dice of scar, of scar + edema (the edema region), of myocardium; per-class Dice too."""
from __future__ import annotations

import numpy as np

from pipelines.myops import labels as cls

__all__ = ["dice", "myops_dice", "accumulate"]


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty."""
    p, t = np.asarray(pred, bool), np.asarray(truth, bool)
    denom = p.sum() + t.sum()
    return 1.0 if denom == 0 else float(2.0 * np.logical_and(p, t).sum() / denom)


def accumulate(pred: np.ndarray, truth: np.ndarray, counts: dict | None = None) -> dict:
    """Add intersection / sizes of the MyoPS targets to ``counts`` (for dataset-level Dice)."""
    counts = counts if counts is not None else {}
    mp, mt = cls.tissue_masks(pred), cls.tissue_masks(truth)
    for name in ("scar", "edema", "myocardium"):
        c = counts.setdefault(name, [0, 0])
        c[0] += int(np.logical_and(mp[name], mt[name]).sum())
        c[1] += int(mp[name].sum() + mt[name].sum())
    return counts


def myops_dice(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """``scar``, ``scar_edema`` and ``myocardium`` Dice of one case (class maps of equal shape)."""
    mp, mt = cls.tissue_masks(pred), cls.tissue_masks(truth)
    return {"scar": dice(mp["scar"], mt["scar"]), "scar_edema": dice(mp["edema"], mt["edema"]),
            "myocardium": dice(mp["myocardium"], mt["myocardium"])}
