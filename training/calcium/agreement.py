"""Coronary calcium agreement on held-out generated studies: the figures issue targets are stated in.

Per case: predicted vs true coronary Agatston (PDA + LM + LAD + LCX + RCA, both from
:func:`pipelines.calcium.agatston.agatston` with the pipeline's defaults), their risk categories, and
the predicted calcium voxels that lie on bone (or, where a family has no bone mask, on dense voxels
outside the heart/aorta region).  Summary: calcium-free cases scored 0 and category "0"; mean bias and
Bland-Altman 95 % limits of agreement (predicted - true, Agatston units); share of calcium cases within
15 % of the true score; Cohen's kappa over the pipeline's default categories 0 / 1-10 / 11-100 /
101-400 / > 400 and over 0 / 1-100 / 101-400 / > 400.  Phantom figures, not clinical accuracy.
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import numpy as np

from pipelines.calcium.agatston import DEFAULT_RISK, KAPPA_RISK, agatston
from pipelines.calcium.inference import segment_calcium
from pipelines.calcium.labels import CLASSES
from pipelines.calcium.preprocess import PreprocessConfig

from .metrics import cohen_kappa

__all__ = ["AgreementCase", "score_case", "summarise", "TARGETS", "evaluate_family"]

CORONARY = tuple(c.value for c in CLASSES if c.coronary)
#: issue targets (phantom figures): calcium-free -> 0 rate, kappa, share within 15 %, bone voxels
TARGETS = {"calcium_free_zero_rate": 0.95, "kappa": 0.9, "bone_voxels": 0}

#: (id, hu, truth labels, bone mask or None, region mask or None, z positions, spacing yx)
AgreementCase = tuple[str, np.ndarray, np.ndarray, "np.ndarray | None", "np.ndarray | None", np.ndarray,
                      tuple[float, float]]


def score_case(cid: str, hu: np.ndarray, pred: np.ndarray, truth: np.ndarray, bone: np.ndarray | None,
               region: np.ndarray | None, z_positions: np.ndarray, spacing_yx: Sequence[float]) -> dict:
    """Coronary Agatston of prediction and truth, categories, calcium voxels on bone (or outside ``region``)."""
    z_mm = float(np.median(np.diff(z_positions))) if len(z_positions) > 1 else 3.0
    ag_p = agatston(hu, pred, spacing_yx, z_mm, classes=range(1, 9))
    ag_t = agatston(hu, truth, spacing_yx, z_mm, classes=range(1, 9))
    cp = float(sum(ag_p.per_class[c].score for c in CORONARY))
    ct = float(sum(ag_t.per_class[c].score for c in CORONARY))
    if bone is not None:
        off = int(np.count_nonzero((pred > 0) & bone))
    elif region is not None:
        off = int(np.count_nonzero((pred > 0) & ~region & (truth == 0)))
    else:
        off = 0
    return {"case": cid, "coronary_pred": round(cp, 2), "coronary_true": round(ct, 2),
            "total_pred": round(ag_p.total, 2), "total_true": round(ag_t.total, 2),
            "category_pred": DEFAULT_RISK.name(cp), "category_true": DEFAULT_RISK.name(ct),
            "bone_voxels": off}


def summarise(cases: Sequence[dict]) -> dict:
    """Agreement figures over scored cases (see the module docstring)."""
    free = [c for c in cases if c["coronary_true"] == 0]
    pos = [c for c in cases if c["coronary_true"] > 0]
    d = np.array([c["coronary_pred"] - c["coronary_true"] for c in cases], float)
    bias = float(d.mean()) if len(d) else None
    sd = float(d.std(ddof=1)) if len(d) > 1 else None
    rel = [abs(c["coronary_pred"] - c["coronary_true"]) / c["coronary_true"] for c in pos]
    rel_d = np.array([(c["coronary_pred"] - c["coronary_true"]) / c["coronary_true"] for c in pos], float)
    cat = lambda scheme, key: [scheme.index(c[key]) for c in cases]  # noqa: E731
    out = {
        "cases": len(cases), "calcium_free_cases": len(free), "calcium_cases": len(pos),
        "calcium_free_zero_rate": (sum(c["coronary_pred"] == 0 for c in free) / len(free)) if free else None,
        "calcium_free_category0_rate": (sum(c["category_pred"] == "0" for c in free) / len(free)) if free else None,
        "calcium_free_max_false_score": max((c["coronary_pred"] for c in free), default=None),
        "bias_agatston": None if bias is None else round(bias, 2),
        "loa_agatston": None if sd is None else [round(bias - 1.96 * sd, 2), round(bias + 1.96 * sd, 2)],
        "bias_relative": round(float(rel_d.mean()), 4) if len(rel_d) else None,
        "loa_relative": [round(float(rel_d.mean() - 1.96 * rel_d.std(ddof=1)), 4),
                         round(float(rel_d.mean() + 1.96 * rel_d.std(ddof=1)), 4)] if len(rel_d) > 1 else None,
        "within_15pct_rate": (sum(r <= 0.15 for r in rel) / len(rel)) if rel else None,
        "kappa": cohen_kappa(cat(DEFAULT_RISK, "coronary_true"), cat(DEFAULT_RISK, "coronary_pred"),
                             len(DEFAULT_RISK.names)) if cases else None,
        "kappa_4cat": cohen_kappa(cat(KAPPA_RISK, "coronary_true"), cat(KAPPA_RISK, "coronary_pred"),
                                  len(KAPPA_RISK.names)) if cases else None,
        "category_agreement_rate": (sum(c["category_pred"] == c["category_true"] for c in cases) / len(cases))
        if cases else None,
        "bone_voxels": int(sum(c["bone_voxels"] for c in cases)),
        "cases_with_bone_voxels": int(sum(c["bone_voxels"] > 0 for c in cases)),
    }
    for k in ("calcium_free_zero_rate", "calcium_free_category0_rate", "within_15pct_rate", "kappa", "kappa_4cat",
              "category_agreement_rate"):
        if out[k] is not None:
            out[k] = round(float(out[k]), 4)
    out["targets_met"] = {
        "calcium_free_zero_rate": out["calcium_free_zero_rate"] is not None
        and min(out["calcium_free_zero_rate"], out["calcium_free_category0_rate"]) >= TARGETS["calcium_free_zero_rate"],
        "kappa": out["kappa"] is not None and out["kappa"] >= TARGETS["kappa"],
        "bone_voxels": out["bone_voxels"] == TARGETS["bone_voxels"],
    }
    return out


def evaluate_family(cases: Iterable[AgreementCase], predict: Callable[[np.ndarray], np.ndarray],
                    cfg: PreprocessConfig, *, log: Callable[[str], None] | None = None) -> dict:
    """Segment every case with ``predict`` (the pipeline's inference) and summarise; per-case rows included."""
    rows = []
    for cid, hu, truth, bone, region, zpos, sp in cases:
        pred = segment_calcium(hu, zpos, sp, predict, cfg)
        row = score_case(cid, hu, pred, truth, bone, region, zpos, sp)
        rows.append(row)
        if log:
            log(f"{cid}: coronary {row['coronary_pred']:.1f} vs true {row['coronary_true']:.1f} "
                f"({row['category_pred']} / {row['category_true']}), bone voxels {row['bone_voxels']}")
    return {**summarise(rows), "per_case": rows}
