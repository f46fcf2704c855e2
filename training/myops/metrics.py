"""MyoPS metrics: Dice of scar, of scar + edema (the edema region), of myocardium.

Empty reference and empty prediction: Dice is undefined (None), not 1 -- as nnU-Net's evaluation does
(NaN, left out of the mean).  An empty reference with a non-empty prediction scores 0.  Dataset Dice is
pooled over all voxels; it is None only when no case has the tissue in reference or prediction."""
from __future__ import annotations

import numpy as np

from pipelines.myops import labels as cls

__all__ = ["dice", "myops_dice", "accumulate"]


def dice(pred: np.ndarray, truth: np.ndarray) -> float | None:
    """Dice of two boolean masks; None (undefined) when both are empty."""
    p, t = np.asarray(pred, bool), np.asarray(truth, bool)
    denom = p.sum() + t.sum()
    return None if denom == 0 else float(2.0 * np.logical_and(p, t).sum() / denom)


def accumulate(pred: np.ndarray, truth: np.ndarray, counts: dict | None = None) -> dict:
    """Add intersection / sizes of the MyoPS targets to ``counts`` (for dataset-level Dice)."""
    counts = counts if counts is not None else {}
    mp, mt = cls.tissue_masks(pred), cls.tissue_masks(truth)
    for name in ("scar", "edema", "myocardium"):
        c = counts.setdefault(name, [0, 0])
        c[0] += int(np.logical_and(mp[name], mt[name]).sum())
        c[1] += int(mp[name].sum() + mt[name].sum())
    return counts


def myops_dice(pred: np.ndarray, truth: np.ndarray) -> dict[str, float | None]:
    """``scar``, ``scar_edema`` and ``myocardium`` Dice of one case (class maps of equal shape)."""
    mp, mt = cls.tissue_masks(pred), cls.tissue_masks(truth)
    return {"scar": dice(mp["scar"], mt["scar"]), "scar_edema": dice(mp["edema"], mt["edema"]),
            "myocardium": dice(mp["myocardium"], mt["myocardium"])}
