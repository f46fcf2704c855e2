"""Evaluation as in the paper: Pearson r and balanced accuracy at SYNTAX > 22, raw and calibrated,
per fold and for the 5-fold ensemble, model-vs-expert and expert-vs-expert agreement; scatter and
Bland-Altman plots.

    python -m training.syntax.evaluate -r ROOT -d test_philips_100.json test_siemens_20.json \
        --model-dir full_model_weights --variant lstm_mean --use-scaling --scaling-file scaling_coeffs.json \
        -f 32 -v 256 256 --out results/

Side prediction per fold = max(0, exp(out[1]) - 1) of the side's model over that side's views (0 when
the study has none); total = left + right; calibrated total per fold = a_k * total_k + b_k; the
ensemble averages the fold values (calibrated: then clamps at 0).
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from pipelines.syntax.preprocess import CineConfig

from training.runs.cli import one_line_errors
from training.runs.logs import setup_logging

from .checkpoints import CheckpointError, read_scaling
from .data import read_test
from .model import VARIANTS
from .predict import load_side_models, predict_studies

log = logging.getLogger("cardionode.training.syntax")

THRESHOLD = 22.0

__all__ = ["pearson", "balanced_accuracy", "evaluate_studies", "format_table", "main"]


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    a, b = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def balanced_accuracy(pred: Sequence[float], true: Sequence[float], threshold: float = THRESHOLD) -> float:
    """Mean of sensitivity and specificity of ``pred > threshold`` against ``true > threshold``
    (a class absent from ``true`` is left out of the mean)."""
    p, t = np.asarray(pred) > threshold, np.asarray(true) > threshold
    rates = [float((p[t == c] == c).mean()) for c in (True, False) if (t == c).any()]
    return float(np.mean(rates)) if rates else float("nan")


def evaluate_studies(per_fold: dict[int, dict[str, np.ndarray]], truth: np.ndarray,
                     scaling: dict[int, dict[str, float]] | None = None,
                     experts: np.ndarray | None = None, threshold: float = THRESHOLD) -> dict:
    """Metrics dict from per-fold side predictions ``{fold: {"left": .., "right": ..}}``."""
    rows: dict[str, dict[str, float]] = {}
    totals, cal = [], []
    for k, pr in sorted(per_fold.items()):
        tot = pr["left"] + pr["right"]
        totals.append(tot)
        row = {"pearson_r": pearson(tot, truth), "balanced_accuracy": balanced_accuracy(tot, truth, threshold)}
        if scaling is not None and k in scaling:
            c = np.maximum(0.0, scaling[k]["a"] * tot + scaling[k]["b"])
            cal.append(scaling[k]["a"] * tot + scaling[k]["b"])
            row.update({"pearson_r_calibrated": pearson(c, truth),
                        "balanced_accuracy_calibrated": balanced_accuracy(c, truth, threshold)})
        rows[f"fold{k}"] = row
    ens = np.mean(totals, axis=0)
    erow = {"pearson_r": pearson(ens, truth), "balanced_accuracy": balanced_accuracy(ens, truth, threshold)}
    ens_cal = None
    if cal:
        ens_cal = np.maximum(0.0, np.mean(cal, axis=0))
        erow.update({"pearson_r_calibrated": pearson(ens_cal, truth),
                     "balanced_accuracy_calibrated": balanced_accuracy(ens_cal, truth, threshold)})
    rows["ensemble"] = erow
    result = {"n": int(len(truth)), "threshold": threshold, "rows": rows, "prediction": ens.tolist(),
              "prediction_calibrated": None if ens_cal is None else ens_cal.tolist(), "truth": truth.tolist()}
    if experts is not None and experts.size:
        best = ens_cal if ens_cal is not None else ens
        result["model_vs_expert"] = {
            f"expert{i}": {"pearson_r": pearson(best, experts[:, i]),
                           "balanced_accuracy": balanced_accuracy(best, experts[:, i], threshold)}
            for i in range(experts.shape[1])}
        pairs = {
            f"expert{i}-expert{j}": {"pearson_r": pearson(experts[:, i], experts[:, j]),
                                     "balanced_accuracy": balanced_accuracy(experts[:, i], experts[:, j], threshold)}
            for i, j in itertools.combinations(range(experts.shape[1]), 2)}
        result["expert_vs_expert"] = pairs
        result["expert_vs_expert_mean"] = {
            "pearson_r": float(np.nanmean([v["pearson_r"] for v in pairs.values()])),
            "balanced_accuracy": float(np.nanmean([v["balanced_accuracy"] for v in pairs.values()]))}
        result["model_vs_expert_mean"] = {
            "pearson_r": float(np.nanmean([v["pearson_r"] for v in result["model_vs_expert"].values()])),
            "balanced_accuracy": float(np.nanmean([v["balanced_accuracy"]
                                                   for v in result["model_vs_expert"].values()]))}
    return result


def format_table(name: str, res: dict) -> str:
    cols = ("pearson_r", "balanced_accuracy", "pearson_r_calibrated", "balanced_accuracy_calibrated")
    head = f"{name} (n={res['n']}, SYNTAX > {res['threshold']:g})"
    lines = [head, f"{'':10s} {'Pearson r':>10s} {'BalAcc':>8s} {'r (cal)':>9s} {'BalAcc (cal)':>13s}"]
    for key, row in res["rows"].items():
        vals = [row.get(c) for c in cols]
        lines.append(f"{key:10s} " + " ".join(f"{v:>{w}.3f}" if v is not None else f"{'-':>{w}s}"
                                              for v, w in zip(vals, (10, 8, 9, 13))))
    if "model_vs_expert_mean" in res:
        m, e = res["model_vs_expert_mean"], res["expert_vs_expert_mean"]
        lines.append(f"model vs each expert (mean): r {m['pearson_r']:.3f}, BalAcc {m['balanced_accuracy']:.3f}")
        lines.append(f"expert vs expert (mean of 15 pairs): r {e['pearson_r']:.3f}, "
                     f"BalAcc {e['balanced_accuracy']:.3f}")
    return "\n".join(lines)


def save_plots(res: dict, out: Path, title: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    truth = np.asarray(res["truth"])
    pred = np.asarray(res["prediction_calibrated"] if res.get("prediction_calibrated") is not None
                      else res["prediction"])
    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(truth, pred, s=12)
    lim = max(1.0, float(truth.max(initial=0)), float(pred.max(initial=0))) * 1.05
    ax.plot([0, lim], [0, lim], "k--", lw=0.8)
    ax.axhline(THRESHOLD, color="r", lw=0.5)
    ax.axvline(THRESHOLD, color="r", lw=0.5)
    ax.set(xlabel="reference SYNTAX", ylabel="predicted SYNTAX", title=title)
    p1 = out / "scatter.png"
    fig.savefig(p1, dpi=120, bbox_inches="tight")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 4))
    mean, diff = (truth + pred) / 2, pred - truth
    md, sd = float(diff.mean()), float(diff.std(ddof=1)) if len(diff) > 1 else 0.0
    ax.scatter(mean, diff, s=12)
    for v, ls in ((md, "-"), (md + 1.96 * sd, "--"), (md - 1.96 * sd, "--")):
        ax.axhline(v, color="k", ls=ls, lw=0.8)
    ax.set(xlabel="mean of reference and prediction", ylabel="prediction - reference", title=f"Bland-Altman: {title}")
    p2 = out / "bland_altman.png"
    fig.savefig(p2, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return [p1, p2]


def read_scaling_file(path: Path, dataset_root: Path) -> dict[int, dict[str, float]]:
    """``--scaling-file``: the path as given when it exists (absolute or relative to the working directory,
    as in ``--scaling-file logs/scaling_coeffs.json``), else relative to the dataset root (the card's
    convention), else an error naming both places."""
    candidates = [path] if path.is_absolute() else [path, dataset_root / path]
    for c in candidates:
        if c.is_file():
            return read_scaling(c.parent, c.name)
    raise CheckpointError(f"--scaling-file {path}: not found (looked at {' and '.join(str(c) for c in candidates)})")


@one_line_errors
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.syntax.evaluate", description="Evaluate the SYNTAX ensemble")
    p.add_argument("-d", "--dataset-paths", nargs="+", required=True)
    p.add_argument("-n", "--dataset-names", nargs="*")
    p.add_argument("-p", "--postfixes", nargs="*")
    p.add_argument("-r", "--dataset-root", type=Path, default=Path("."))
    p.add_argument("--model-dir", type=Path, default=Path("full_model_weights"))
    p.add_argument("-v", "--video-size", type=int, nargs=2, default=(256, 256))
    p.add_argument("-f", "--frames-per-clip", type=int, default=32)
    p.add_argument("--variant", choices=VARIANTS, default="lstm_mean")
    p.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--use-scaling", action="store_true")
    p.add_argument("--scaling-file", default="scaling_coeffs.json",
                   help="a path as given (absolute or relative to the working directory), "
                        "else relative to --dataset-root")
    p.add_argument("--threshold", type=float, default=THRESHOLD)
    p.add_argument("--devices", default="", help="the card's CUDA device id (same as --device cuda:N)")
    p.add_argument("--device", default="", help="cpu, cuda or cuda:N")
    p.add_argument("-m", "--metrics-file", type=Path, default=Path("metrics.json"))
    p.add_argument("--out", type=Path, default=Path("results"))
    p.add_argument("--seed", type=int, default=42)
    a = p.parse_args(argv)
    setup_logging()
    torch.manual_seed(a.seed)
    names = a.dataset_names or a.dataset_paths
    posts = a.postfixes or [Path(d).stem for d in a.dataset_paths]
    if len(names) != len(a.dataset_paths) or len(posts) != len(a.dataset_paths):
        p.error("-n and -p must have as many entries as -d")
    cfg = CineConfig(frames=a.frames_per_clip, height=a.video_size[0], width=a.video_size[1])
    from training.runs import resolve_device

    device = resolve_device(a.device or a.devices or "cpu")
    scaling = None
    if a.use_scaling:
        scaling = read_scaling_file(Path(a.scaling_file), a.dataset_root)
    models = {side: load_side_models(a.model_dir, side, a.folds, a.variant) for side in ("left", "right")}
    all_metrics = {}
    for path, name, post in zip(a.dataset_paths, names, posts):
        studies = read_test(a.dataset_root / path, a.dataset_root)
        per_fold = {k: {side: predict_studies(models[side][i], studies, side, cfg, device)
                        for side in ("left", "right")}
                    for i, k in enumerate(a.folds)}
        truth = np.asarray([s.mean_syntax for s in studies])
        experts = np.asarray([s.experts for s in studies])
        res = evaluate_studies(per_fold, truth, scaling, experts, a.threshold)
        print(format_table(name, res))
        res["plots"] = [str(x) for x in save_plots(res, a.out / post, name)]
        (a.out / f"{post}.json").write_text(json.dumps(res, indent=1))
        all_metrics[name] = {k: v for k, v in res.items() if k not in ("prediction", "prediction_calibrated", "truth")}
    a.metrics_file.write_text(json.dumps(all_metrics, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
