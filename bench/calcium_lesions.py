"""Where the calcium model's coronary calcium comes from: every predicted coronary lesion of phantom studies.

For each 26-connected lesion that holds a coronary label: its size, the label it mostly has, the truth
class mostly under it (0: no plaque under it, a false lesion), the model's mean class probabilities over
its voxels (coronary classes, aorta/valves, background) and its peak HU.  One JSON line per lesion.
Phantom figures, for diagnosis (docs/calcium.md, "What is missing"), not clinical accuracy.

    python bench/calcium_lesions.py eval 0 20      # evaluation family (bench.phantoms.ct), seeds 0-19
    python bench/calcium_lesions.py training 1000 1020
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.calcium.inference import segment_calcium  # noqa: E402
from pipelines.calcium.labels import CLASSES  # noqa: E402
from pipelines.calcium.preprocess import coarse_index  # noqa: E402
from pipelines.qc.scores import softmax  # noqa: E402

CORONARY = [c.value for c in CLASSES if c.coronary]
OTHER = [c.value for c in CLASSES if not c.coronary]


def lesions(hu: np.ndarray, truth: np.ndarray, zpos: np.ndarray, spacing_yx, predict, cfg) -> list[dict]:
    """The coronary lesions of one study with the model's class probabilities (see the module doc)."""
    nz = hu.shape[0]
    probs: np.ndarray | None = None

    def keep(idx, logits: np.ndarray) -> None:
        nonlocal probs
        p = softmax(logits, axis=1)
        if probs is None:
            probs = np.zeros((nz,) + p.shape[1:], np.float16)
        probs[idx[0]:idx[-1] + 1] = p

    pred = segment_calcium(hu, zpos, spacing_yx, predict, cfg, on_logits=keep)
    assert probs is not None
    iy, ix = coarse_index(hu.shape[1], probs.shape[2]), coarse_index(hu.shape[2], probs.shape[3])
    comps, n = ndimage.label(pred > 0, structure=np.ones((3, 3, 3), bool))
    out = []
    for c, box in enumerate(ndimage.find_objects(comps), start=1):
        sub = comps[box] == c
        labs = pred[box][sub]
        if not np.isin(labs, CORONARY).any():
            continue
        zz, yy, xx = (a + s.start for a, s in zip(np.nonzero(sub), box))
        pv = probs[zz, :, iy[yy], ix[xx]].astype(np.float32)
        under = truth[box][sub]
        under = under[under > 0]
        out.append({"voxels": int(labs.size), "label": int(np.bincount(labs).argmax()),
                    "truth": int(np.bincount(under).argmax()) if under.size else 0,
                    "p_coronary": round(float(pv[:, CORONARY].sum(1).mean()), 3),
                    "p_aorta_valves": round(float(pv[:, OTHER].sum(1).mean()), 3),
                    "p_background": round(float(pv[:, 0].mean()), 3), "peak_hu": int(hu[box][sub].max())})
    return out


def main(argv: list[str] | None = None) -> int:
    from bench.phantoms.ct import agreement_cases as evaluation_cases
    from pipelines.runtime import bundled_models_dir
    from training.calcium.data import agreement_cases as training_cases
    from training.calcium.make_bundled import onnx_predictor

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("family", choices=("eval", "training"))
    ap.add_argument("first", type=int)
    ap.add_argument("stop", type=int, help="last seed + 1")
    ap.add_argument("--model", type=Path, default=None, help="model folder (default: the bundled calcium-unet2d)")
    args = ap.parse_args(argv)
    predict, cfg = onnx_predictor(args.model or bundled_models_dir() / "calcium-unet2d", threads=1)
    seeds = range(args.first, args.stop)
    cases = evaluation_cases(seeds) if args.family == "eval" else training_cases(seeds)
    for cid, hu, truth, _bone, _, zpos, spacing_yx in cases:
        for row in lesions(hu, truth, np.asarray(zpos), spacing_yx, predict, cfg):
            kind = "coronary" if row["truth"] in CORONARY else "aorta/valve" if row["truth"] else "no plaque"
            print(json.dumps({"case": cid, **row, "under": kind}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
