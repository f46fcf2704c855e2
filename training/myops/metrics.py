"""MyoPS metrics: Dice of scar, of scar + edema (the edema region), of myocardium.

Empty reference and empty prediction: Dice is undefined (None), not 1 -- as nnU-Net's evaluation does
(NaN, left out of the mean).  An empty reference with a non-empty prediction scores 0.  Dataset Dice is
pooled over all voxels; it is None only when no case has the tissue in reference or prediction."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from pipelines.myops import labels as cls

from .prepare import PreparedCase

__all__ = ["dice", "myops_dice", "accumulate", "predict_classes", "evaluate_cases", "METHOD"]

#: how the figures are computed (recorded with the metrics in checkpoints and manifests)
METHOD = ("Dice of scar, scar+edema (edema region incl. scar) and myocardium (normal+edema+scar) in the "
          "preprocessed 128x128 ROI space, as the MyoPS papers report. dice_*: pooled over all voxels of all "
          "evaluated cases (None when no case has the tissue in reference or prediction). mean_case_dice_*: mean "
          "of per-case Dice over the cases where it is defined; a case with the tissue absent from both reference "
          "and prediction has no Dice and is left out (nnU-Net's convention), an empty reference with a "
          "non-empty prediction scores 0; cases_with_*: how many cases entered each mean.")


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


def predict_classes(model, image: np.ndarray, batch: int = 16, device="cpu") -> np.ndarray:
    """Model classes per pixel of a (n, C, R, R) stack; the model's train/eval mode is restored."""
    import torch

    out = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for i in range(0, len(image), batch):
            x = torch.from_numpy(np.ascontiguousarray(image[i:i + batch])).to(device)
            out.append(model(x).argmax(1).cpu().numpy())
    model.train(was_training)
    return np.concatenate(out).astype(np.uint8)


def _mean(values: list) -> float | None:
    vals = [v for v in values if v is not None]
    return round(float(np.mean(vals)), 4) if vals else None


def evaluate_cases(model, cases: Sequence[PreparedCase], device="cpu") -> dict:
    """The figures :data:`METHOD` describes, for ``model`` over prepared cases (validation, held-out, bundled)."""
    counts: dict = {}
    per_case = []
    for c in cases:
        pred = predict_classes(model, c.image, device=device)
        accumulate(pred, c.label, counts)
        per_case.append(myops_dice(pred, c.label))
    pooled = {k: (round(2.0 * v[0] / v[1], 4) if v[1] else None) for k, v in counts.items()}
    out = {"dice_scar": pooled.get("scar"), "dice_scar_edema": pooled.get("edema"),
           "dice_myocardium": pooled.get("myocardium")}
    for key in ("scar", "scar_edema", "myocardium"):
        vals = [d[key] for d in per_case]
        out[f"mean_case_dice_{key}"] = _mean(vals)
        out[f"cases_with_{key}"] = sum(v is not None for v in vals)
    out["cases"] = len(per_case)
    return out
