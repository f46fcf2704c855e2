"""Evaluation: Dice per class, lesion detection sensitivity/precision, Agatston agreement (ICC, kappa).

ICC(2,1) and Cohen's kappa are computed on the coronary Agatston score (PDA + LM + LAD + LCX + RCA),
the quantity the risk categories are defined on; the all-class ICC is reported beside it.

Run on held-out phantoms or a COCA-format folder, with a torch checkpoint or an exported ONNX model::

    python -m training.calcium.evaluate --checkpoint runs/calcium/model.pt --phantoms 900-909
    python -m training.calcium.evaluate --onnx pipelines/models/calcium-unet2d --coca /data/COCA --split test
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from pipelines.calcium.agatston import KAPPA_RISK, RiskScheme, agatston
from pipelines.calcium.inference import segment_calcium
from pipelines.calcium.labels import CLASSES
from pipelines.calcium.preprocess import PreprocessConfig

from training.runs.cli import one_line_errors

from .metrics import DiceAccumulator, cohen_kappa, icc_2_1, lesion_detection

log = logging.getLogger("cardionode.training.calcium")

__all__ = ["evaluate_cases", "torch_predictor", "onnx_predictor", "parse_seeds", "main"]

Case = tuple[str, np.ndarray, np.ndarray, np.ndarray, tuple[float, float]]  # id, hu, labels, z_positions, spacing_yx

#: how the figures are computed (recorded in reports, checkpoints and manifests)
METHOD = ("Dice per class pooled over all voxels of all cases (2*sum|P&G| / sum(|P|+|G|)), after keeping voxels "
          ">= 130 HU inside the predicted class; a class absent from prediction and reference in every case has no "
          "Dice (null), never 1. Lesion = 3D 26-connected component: sensitivity = reference lesions touched by a "
          "same-class prediction / reference lesions, precision = predicted lesions touching a same-class reference "
          "lesion / predicted lesions (null when the denominator is 0). Agatston ICC(2,1) and Cohen's kappa on the "
          "coronary score (PDA+LM+LAD+LCX+RCA) per case.")


def evaluate_cases(cases: Iterable[Case], predict: Callable[[np.ndarray], np.ndarray], cfg: PreprocessConfig, *,
                   kappa_risk: RiskScheme = KAPPA_RISK, dilation_px: int = 1) -> dict:
    classes = [c.value for c in CLASSES]
    dice = DiceAccumulator(classes)
    det = {c: {"tp_gt": 0, "gt": 0, "tp_pred": 0, "pred": 0} for c in classes}
    per_case = []
    coronary = {c.value for c in CLASSES if c.coronary}
    for cid, hu, gt, zpos, sp in cases:
        pred = segment_calcium(hu, zpos, sp, predict, cfg, dilation_px=dilation_px)
        dice.add(pred, gt)
        for c, d in lesion_detection(pred, gt, classes).items():
            for k in d:
                det[c][k] += d[k]
        z_mm = float(np.median(np.diff(zpos))) if len(zpos) > 1 else 3.0
        ag_p = agatston(hu, pred, sp, z_mm, classes=classes)
        ag_g = agatston(hu, gt, sp, z_mm, classes=classes)
        cac_p = sum(v.score for c, v in ag_p.per_class.items() if c in coronary)
        cac_g = sum(v.score for c, v in ag_g.per_class.items() if c in coronary)
        per_case.append({"case": cid, "agatston_pred": round(ag_p.total, 2), "agatston_gt": round(ag_g.total, 2),
                         "cac_pred": round(cac_p, 2), "cac_gt": round(cac_g, 2),
                         "per_class_pred": {c: round(v.score, 2) for c, v in ag_p.per_class.items()},
                         "per_class_gt": {c: round(v.score, 2) for c, v in ag_g.per_class.items()}})
        log.info("%s: coronary Agatston predicted %.1f, ground truth %.1f (all classes %.1f / %.1f)", cid, cac_p,
                 cac_g, ag_p.total, ag_g.total)
    names = {c.value: c.name for c in CLASSES}
    # the risk category (and so kappa) is defined on the coronary artery calcium score (CAC), not on aorta/valves
    pred_cac = [c["cac_pred"] for c in per_case]
    gt_cac = [c["cac_gt"] for c in per_case]
    cats_p = [kappa_risk.index(s) for s in pred_cac]
    cats_g = [kappa_risk.index(s) for s in gt_cac]
    n_cat = len(kappa_risk.names)
    return {
        "method": METHOD,
        "cases": len(per_case),
        "dice": {names[c]: (round(v, 4) if v is not None else None) for c, v in dice.dice().items()},
        "lesion_sensitivity": {names[c]: (round(d["tp_gt"] / d["gt"], 4) if d["gt"] else None) for c, d in det.items()},
        "lesion_precision": {names[c]: (round(d["tp_pred"] / d["pred"], 4) if d["pred"] else None)
                             for c, d in det.items()},
        "lesion_counts": {names[c]: d for c, d in det.items()},
        "agatston_icc_2_1": icc_2_1(np.array(gt_cac), np.array(pred_cac)),
        "agatston_icc_2_1_all_classes": icc_2_1(np.array([c["agatston_gt"] for c in per_case]),
                                                np.array([c["agatston_pred"] for c in per_case])),
        "risk_kappa": cohen_kappa(cats_g, cats_p, n_cat),
        "risk_kappa_linear": cohen_kappa(cats_g, cats_p, n_cat, "linear"),
        "risk_categories": list(kappa_risk.names),
        "per_case": per_case,
    }


def torch_predictor(model, batch: int = 16) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    model.eval()

    def predict(tiles: np.ndarray) -> np.ndarray:
        outs = []
        with torch.no_grad():
            for i in range(0, len(tiles), batch):
                outs.append(model(torch.from_numpy(tiles[i:i + batch])).numpy())
        return np.concatenate(outs) if outs else np.zeros((0, model.config["n_classes"]) + tiles.shape[2:], np.float32)

    return predict


def onnx_predictor(model_dir: Path, threads: int = 0) -> tuple[Callable[[np.ndarray], np.ndarray], PreprocessConfig]:
    """A predictor from an exported model directory (model.onnx + manifest.json), through the runtime;
    ``threads``: ONNX Runtime intra-op threads (0: its default)."""
    from pipelines.runtime import ModelStore
    from pipelines.runtime.settings import ModelsSection

    store = ModelStore([model_dir.parent], ModelsSection(providers=("cpu",), warmup=False, intra_op_threads=threads))
    handle = store.acquire(model_dir.name)
    in_name, out_name = handle.manifest.inputs[0].name, handle.manifest.outputs[0].name
    cfg = PreprocessConfig.from_dict(handle.manifest.preprocessing)

    def predict(tiles: np.ndarray) -> np.ndarray:
        return handle.run_batched({in_name: tiles})[out_name]

    return predict, cfg


def parse_seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out.extend(range(int(a), int(b) + 1) if b else [int(a)])
    return out


def phantom_cases(seeds: Sequence[int]) -> Iterator[Case]:
    from .data import phantom_case

    for s in seeds:
        ph = phantom_case(s)
        yield f"phantom-{s}", ph.hu, ph.labels, ph.z_positions(), ph.spacing[1:]


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(prog="python -m training.calcium.evaluate", description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="torch checkpoint written by training.calcium.train")
    src.add_argument("--onnx", type=Path, help="exported model directory (model.onnx + manifest.json)")
    p.add_argument("--phantoms", default=None, help="held-out phantom seeds, e.g. 900-909")
    p.add_argument("--coca", type=Path, default=None, help="COCA-format folder (nrrd/, dicom/, train_test_split.csv)")
    p.add_argument("--split", default="test", choices=["train", "test", "all"])
    p.add_argument("--dicom-dir", type=Path, default=None, help="folder with the CTs by exam id (default <coca>/dicom)")
    p.add_argument("--exam-map", type=Path, default=None,
                   help="CSV exam,folder when CT folders are not named by exam id")
    p.add_argument("--aliases", type=Path, default=None,
                   help="JSON {segment name: class value 1..8} replacing the built-in name table")
    p.add_argument("--dilation-px", type=int, default=1)
    p.add_argument("--json", type=Path, default=None, help="write the full report here")
    p.set_defaults(func=run)
    return p


def load_checkpoint(path: Path):
    """(model, preprocessing, checkpoint dict) from best.pt / last.pt / an older model.pt, or a run folder."""
    from training.runs.checkpoint import read_checkpoint

    from .model import UNet2D

    ck = read_checkpoint(path)
    model = UNet2D(**ck["model_config"])
    model.load_state_dict(ck["state_dict"])
    return model.eval(), PreprocessConfig.from_dict(ck["preprocessing"]), ck


@one_line_errors
def run(args: argparse.Namespace) -> int:
    if args.checkpoint:
        model, cfg, _ = load_checkpoint(args.checkpoint)
        predict = torch_predictor(model)
    else:
        predict, cfg = onnx_predictor(args.onnx)
    if args.coca:
        from .coca import CocaDataset, load_aliases

        ds = CocaDataset(args.coca, aliases=load_aliases(args.aliases), dicom_dir=args.dicom_dir,
                         exam_map=args.exam_map)
        cases = ds.cases(args.split)
    elif args.phantoms:
        cases = phantom_cases(parse_seeds(args.phantoms))
    else:
        print("give --phantoms or --coca", file=sys.stderr)
        return 2
    report = evaluate_cases(cases, predict, cfg, dilation_px=args.dilation_px)
    print(f"cases: {report['cases']}")
    print(f"{'class':28s} {'Dice':>6s} {'sens':>6s} {'prec':>6s}")
    def f(v: float | None) -> str:
        return f"{v:6.3f}" if v is not None else "   n/a"

    for name in report["dice"]:
        print(f"{name:28s} {f(report['dice'][name])} {f(report['lesion_sensitivity'][name])} "
              f"{f(report['lesion_precision'][name])}")
    icc, kap = report["agatston_icc_2_1"], report["risk_kappa"]
    print(f"coronary Agatston ICC(2,1): {icc if icc is None else round(icc, 4)}; Cohen's kappa over "
          f"{'/'.join(report['risk_categories'])}: {kap if kap is None else round(kap, 4)}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
