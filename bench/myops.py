"""myops benchmark on two phantom families (prints figures; phantom figures, not clinical accuracy).

    python bench/myops.py [--studies 12] [--models pipelines/models] [--record] [--json out.json]

Held-out DICOM studies of both families go through the pipeline's own path (series identification,
load, slice matching, shading correction and normalisation, first-pass prior, registration, ROI,
ONNX model, mapping back to the LGE grid, volumes): ``MyopsPipeline.segment`` + ``measure``, which is
what ``MyopsPipeline.run`` computes before it builds the SEG / SR.

- **training family**: :mod:`training.myops.phantom` with ``varied=True`` (the generator the model was
  trained with), seeds 9000+ (training uses 1000+, held-out Dice 5000+);
- **evaluation family**: :mod:`bench.phantoms.cmr`, an independent generator (own anatomy, contrasts,
  coil shading, scaling, vendors' naming), seeds 0+; never used for training.

Per family: scar and edema burden error in percentage points (prediction minus truth over the LGE
slices the pipeline analysed): mean (bias), 95 % limits of agreement (bias +- 1.96 SD), mean |error|,
share of studies within 3 pp (target: all); Dice per tissue (myocardium, edema region incl. scar,
scar) on the analysed LGE slices, mean over the studies where it is defined.  ``--record`` writes the
figures into the model manifest (provenance.metrics.evaluation).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET_PP = 3.0
TRAIN_FAMILY_SEED0 = 9000
EVAL_FAMILY_SEED0 = 0


def _dice(p: np.ndarray, t: np.ndarray) -> float | None:
    denom = int(p.sum() + t.sum())
    return None if denom == 0 else float(2.0 * np.logical_and(p, t).sum() / denom)


def _truth(label: np.ndarray, voxel_ml: float, z: np.ndarray | None = None) -> dict[str, float]:
    """Volumes and burdens of a label, the pipeline's definitions (optionally on slices ``z`` only)."""
    from pipelines.myops import labels as cls

    m = cls.tissue_masks(label if z is None else label[z])
    myo, scar, edema = (float(m[k].sum()) * voxel_ml for k in ("myocardium", "scar", "edema"))
    return {"myocardium_ml": myo, "scar_ml": scar, "edema_ml": edema,
            "scar_burden_pct": 100.0 * scar / myo if myo > 0 else 0.0,
            "edema_burden_pct": 100.0 * edema / myo if myo > 0 else 0.0}


def _study(family: str, seed: int, root: Path) -> tuple[list[Path], np.ndarray, float, dict]:
    """(files, label on the LGE grid, LGE voxel volume in mL, description) of one held-out study."""
    if family == "training":
        from training.myops.phantom import make_phantom, write_dicom_study

        case = make_phantom(seed, varied=True)
        files = write_dicom_study(case, root, seed=seed)
        return files, case.label.array, case.label.voxel_volume_mm3 / 1000.0, {}
    from bench.phantoms.cmr import make_study, write_study

    st = make_study(seed)
    files = write_study(st, root, extras=True)
    lge = st.series["lge"]
    spacing = float(lge.slice_positions[1] - lge.slice_positions[0])
    voxel_ml = lge.pixel_mm[0] * lge.pixel_mm[1] * spacing / 1000.0
    d = st.description
    return files, st.label, voxel_ml, {"vendor": d["vendor"], "intensity": d["intensity"],
                                       "coil": round(d["coil"], 2), "misregistration_mm": round(d["mis"], 1),
                                       "slices": d["slices"], "lge_matrix": d["matrices"]["lge"]}


def run_family(family: str, studies: int, store: Any, *, verbose: bool = True) -> list[dict]:
    """One row per held-out study of ``family`` (``training`` or ``evaluation``)."""
    from pipelines.base import StudyView
    from pipelines.imaging import load_volume
    from pipelines.myops import labels as cls
    from pipelines.myops.options import MyopsOptions
    from pipelines.myops.pipeline import MyopsPipeline, measure
    from pipelines.myops.preprocess import CHANNELS
    from pipelines.myops.series import identify_series

    seed0 = TRAIN_FAMILY_SEED0 if family == "training" else EVAL_FAMILY_SEED0
    pipe = MyopsPipeline()
    handle = store.acquire("myops-unet")
    cfg = pipe._config(handle.manifest, MyopsOptions())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(studies):
            seed = seed0 + i
            files, label, voxel_ml, desc = _study(family, seed, Path(tmp) / str(seed))
            t0 = time.perf_counter()
            series = identify_series(StudyView.from_files(files), MyopsOptions().patterns)
            vols = {seq: load_volume(series[seq]) for seq in CHANNELS}
            classes, stack, _ = pipe.segment(vols, handle, cfg)
            got = measure(classes, vols["lge"])
            seconds = time.perf_counter() - t0
            z = np.asarray(stack.anchor_slices, dtype=int)
            truth, truth_all = _truth(label, voxel_ml, z), _truth(label, voxel_ml)
            pm, tm = cls.tissue_masks(classes[z]), cls.tissue_masks(label[z])
            row = {"seed": seed, "seconds": round(seconds, 1), "analysed_slices": f"{len(z)}/{label.shape[0]}",
                   "scar_pct": got["scar_burden_pct"], "scar_pct_truth": truth["scar_burden_pct"],
                   "scar_pct_truth_all_slices": truth_all["scar_burden_pct"],
                   "edema_pct": got["edema_burden_pct"], "edema_pct_truth": truth["edema_burden_pct"],
                   "myo_ml": got["myocardium_ml"], "myo_ml_truth": truth["myocardium_ml"],
                   "dice_myocardium": _dice(pm["myocardium"], tm["myocardium"]),
                   "dice_edema": _dice(pm["edema"], tm["edema"]), "dice_scar": _dice(pm["scar"], tm["scar"]), **desc}
            rows.append(row)
            if verbose:
                print(f"  {family} seed {seed}: {seconds:5.1f} s, {row['analysed_slices']} LGE slices analysed; "
                      f"scar {row['scar_pct']:.1f} % (truth {row['scar_pct_truth']:.1f}), "
                      f"edema {row['edema_pct']:.1f} % "
                      f"(truth {row['edema_pct_truth']:.1f}); Dice myo {row['dice_myocardium'] or 0:.3f} "
                      f"edema {row['dice_edema'] or 0:.3f} scar {row['dice_scar'] or 0:.3f}"
                      + (f"  [{desc['vendor']}, {desc['intensity']['lge']}, coil {desc['coil']}]" if desc else ""),
                      flush=True)
    return rows


def _agreement(err: np.ndarray) -> dict:
    sd = float(err.std(ddof=1)) if len(err) > 1 else 0.0
    bias = float(err.mean())
    return {"mean_pp": round(bias, 2), "sd_pp": round(sd, 2), "loa95_pp": [round(bias - 1.96 * sd, 2),
                                                                          round(bias + 1.96 * sd, 2)],
            "mean_abs_pp": round(float(np.abs(err).mean()), 2), "max_abs_pp": round(float(np.abs(err).max()), 2),
            "within_3pp": round(float((np.abs(err) <= TARGET_PP).mean()), 3)}


def summarise(rows: list[dict]) -> dict:
    """Burden agreement and mean Dice of one family's rows."""
    out: dict[str, Any] = {"studies": len(rows)}
    for key in ("scar", "edema"):
        out[f"{key}_burden_error"] = _agreement(np.array([r[f"{key}_pct"] - r[f"{key}_pct_truth"] for r in rows]))
    for key in ("myocardium", "edema", "scar"):
        vals = [r[f"dice_{key}"] for r in rows if r[f"dice_{key}"] is not None]
        out[f"dice_{key}"] = round(float(np.mean(vals)), 3) if vals else None
    out["median_seconds"] = round(float(np.median([r["seconds"] for r in rows])), 1)
    return out


def evaluate_families(models_dir: Path, studies: int, *, verbose: bool = True) -> dict:
    """Figures of both families (see the module docstring) for the model in ``models_dir``."""
    from pipelines.runtime import ModelStore
    from pipelines.runtime.settings import ModelsSection

    from bench.phantoms.cmr import GENERATOR as EVAL_GENERATOR, GENERATOR_VERSION as EVAL_VERSION
    from training.myops.phantom import GENERATOR, GENERATOR_VERSION

    store = ModelStore([Path(models_dir)], ModelsSection(providers=("cpu",)))
    figures: dict[str, Any] = {
        "note": "phantom figures, not clinical accuracy; burden error = pipeline minus truth over the analysed "
                "LGE slices, percentage points; Dice on the analysed LGE slices, mean over studies",
        "target": f"|burden error| <= {TARGET_PP:g} pp"}
    for family, gen, ver, seed0 in (("training", GENERATOR, GENERATOR_VERSION, TRAIN_FAMILY_SEED0),
                                    ("evaluation", EVAL_GENERATOR, EVAL_VERSION, EVAL_FAMILY_SEED0)):
        rows = run_family(family, studies, store, verbose=verbose)
        figures[f"{family}_family"] = {"generator": gen, "generator_version": ver,
                                       "seeds": f"{seed0}..{seed0 + studies - 1}", **summarise(rows)}
    return figures


def record_in_manifest(manifest: Path, figures: dict) -> None:
    """Add the figures to the manifest's provenance.metrics.evaluation (other keys untouched)."""
    data = json.loads(Path(manifest).read_text())
    data.setdefault("provenance", {}).setdefault("metrics", {})["evaluation"] = figures
    Path(manifest).write_text(json.dumps(data, indent=2) + "\n")


def _print(figures: dict) -> None:
    for family in ("training_family", "evaluation_family"):
        f = figures[family]
        print(f"{family.replace('_', ' ')} ({f['generator']} {f['generator_version']}, {f['studies']} studies, "
              f"seeds {f['seeds']}):")
        for key in ("scar", "edema"):
            e = f[f"{key}_burden_error"]
            print(f"  {key} burden error: mean {e['mean_pp']:+.2f} pp, 95 % limits {e['loa95_pp'][0]:+.2f} .. "
                  f"{e['loa95_pp'][1]:+.2f} pp, mean |error| {e['mean_abs_pp']:.2f} pp, max {e['max_abs_pp']:.2f} pp, "
                  f"within 3 pp {100 * e['within_3pp']:.0f} %")
        print(f"  Dice myocardium {f['dice_myocardium']}, edema (incl. scar) {f['dice_edema']}, scar {f['dice_scar']}; "
              f"median {f['median_seconds']} s per study")


def main() -> int:
    from pipelines.runtime import bundled_models_dir

    p = argparse.ArgumentParser(description="myops burden and Dice on two phantom families")
    p.add_argument("--studies", type=int, default=12, help="held-out studies per family")
    p.add_argument("--models", type=Path, default=bundled_models_dir())
    p.add_argument("--record", action="store_true", help="write the figures into the model manifest")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    figures = evaluate_families(a.models, a.studies)
    _print(figures)
    if a.json:
        a.json.write_text(json.dumps(figures, indent=2))
    if a.record:
        record_in_manifest(a.models / "myops-unet" / "manifest.json", figures)
        print(f"recorded in {a.models / 'myops-unet' / 'manifest.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
