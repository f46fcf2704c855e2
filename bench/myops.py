"""myops benchmark on synthetic phantoms (prints figures; phantom figures, not clinical accuracy).

    python bench/myops.py [--cases 6] [--models pipelines/models] [--deformable]

For held-out phantoms (seeds the bundled model never saw in training) written as DICOM studies:
pipeline time per study (pipeline.run on StudyView.from_files, CPU ONNX Runtime), Dice per tissue on
the LGE grid through the full inference path (first-pass prior, registration, ROI, mapping back),
scar / edema burden error vs the phantom truth, and registration error vs the known misalignment.
Also prints the held-out Dice recorded in the model manifest at training time.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.config import ModelsSection  # noqa: E402
from pipelines.base import PipelineContext, StudyView  # noqa: E402
from pipelines.imaging import load_volume, match_series  # noqa: E402
from pipelines.myops import labels as cls  # noqa: E402
from pipelines.myops.options import DEFAULT_RULES, MyopsOptions  # noqa: E402
from pipelines.myops.pipeline import MyopsPipeline  # noqa: E402
from pipelines.myops.preprocess import build_grid_stack, label_on_grid, register_and_crop  # noqa: E402
from pipelines.myops.registration import SliceTransform  # noqa: E402
from pipelines.runtime import ModelStore, bundled_models_dir  # noqa: E402
from training.myops.metrics import dice  # noqa: E402
from training.myops.phantom import (ground_truth_figures, make_phantom, registration_error_mm,  # noqa: E402
                                    write_dicom_study)

SEED0 = 9000  # bench phantoms: disjoint from make_bundled's training (1000+) and held-out (5000+) seeds


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--cases", type=int, default=6)
    p.add_argument("--models", type=Path, default=bundled_models_dir())
    p.add_argument("--deformable", action="store_true", help="B-spline refinement after the affine (option deformable)")
    a = p.parse_args()
    store = ModelStore([a.models], ModelsSection(providers=("cpu",)))
    handle = store.acquire("myops-unet")
    m = handle.manifest
    print(f"model {m.name} {m.version}: {m.provenance.trained_on}")
    print(f"  held-out phantom Dice at training (preprocessed ROI, GT prior): {dict(m.provenance.metrics)}")
    pipe = MyopsPipeline()
    rows = []
    reg_before, reg_after = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(a.cases):
            seed = SEED0 + i
            case = make_phantom(seed, with_scar=True)
            files = write_dicom_study(case, Path(tmp) / str(seed), seed=seed)
            study = StudyView.from_files(files)
            ctx = PipelineContext(options={"deformable": a.deformable}, models=store, work_dir=Path(tmp))
            t0 = time.perf_counter()
            res = pipe.run(study, ctx)
            seconds = time.perf_counter() - t0
            truth = ground_truth_figures(case.label)
            vols = {k: load_volume(s) for k, s in match_series(study, DEFAULT_RULES, modalities=("MR",)).items()}
            classes, stack, _ = pipe.segment(vols, handle, pipe._config(m, MyopsOptions(deformable=a.deformable)))
            tm, pm = cls.tissue_masks(case.label.array), cls.tissue_masks(classes)
            z = stack.anchor_slices  # LGE slices matched across the three sequences (the analysed ones)
            rows.append({
                "seed": seed, "seconds": seconds,
                "dice_myo": dice(pm["myocardium"], tm["myocardium"]), "dice_scar_edema": dice(pm["edema"], tm["edema"]),
                "dice_scar": dice(pm["scar"], tm["scar"]),
                "matched_dice_myo": dice(pm["myocardium"][z], tm["myocardium"][z]),
                "matched_dice_scar_edema": dice(pm["edema"][z], tm["edema"][z]),
                "matched_dice_scar": dice(pm["scar"][z], tm["scar"][z]),
                "matched": f"{stack.n}/{case.label.shape[0]}",
                "scar_pct": res.summary["scar_burden_pct"], "scar_pct_truth": truth["scar_burden_pct"],
                "edema_pct": res.summary["edema_burden_pct"], "edema_pct_truth": truth["edema_burden_pct"],
                "myo_ml": res.summary["myocardium_ml"], "myo_ml_truth": truth["myocardium_ml"],
                "myo_ml_truth_analysed": float(tm["myocardium"][z].sum()) * case.label.voxel_volume_mm3 / 1000.0,
            })
            gst = build_grid_stack(case.volumes)
            prior = np.isin(label_on_grid(case.label, gst), (1, 2, 3))
            gmi = register_and_crop(gst, prior)
            for seq in ("bssfp", "t2"):
                reg_after.extend(registration_error_mm(case, gst, gmi.transforms[seq], seq, prior))
                reg_before.extend(registration_error_mm(case, gst, [SliceTransform.identity()] * gst.n, seq, prior))
            r = rows[-1]
            print(f"  seed {seed}: {seconds:5.1f} s  {r['matched']} LGE slices matched  Dice myo {r['dice_myo']:.3f} "
                  f"scar+edema {r['dice_scar_edema']:.3f} scar {r['dice_scar']:.3f}  scar burden {r['scar_pct']:.1f} % (truth {r['scar_pct_truth']:.1f} %)  "
                  f"edema burden {r['edema_pct']:.1f} % (truth {r['edema_pct_truth']:.1f} %)")
    t = np.array([r["seconds"] for r in rows])
    print(f"pipeline time per study (CPU, {len(rows)} phantom studies): median {np.median(t):.1f} s, max {t.max():.1f} s")
    for k in ("dice_myo", "dice_scar_edema", "dice_scar"):
        v = [r[k] for r in rows]
        mv = [r["matched_" + k] for r in rows]
        print(f"full-path phantom Dice on the LGE grid, {k[5:]}: all LGE slices mean {np.mean(v):.3f} "
              f"(min {np.min(v):.3f}); matched slices only mean {np.mean(mv):.3f} (min {np.min(mv):.3f})")
    se = np.array([abs(r["scar_pct"] - r["scar_pct_truth"]) for r in rows])
    ee = np.array([abs(r["edema_pct"] - r["edema_pct_truth"]) for r in rows])
    print(f"scar burden |error|: mean {se.mean():.2f} pp, max {se.max():.2f} pp; "
          f"edema burden |error|: mean {ee.mean():.2f} pp, max {ee.max():.2f} pp")
    mv = np.array([100.0 * (r["myo_ml"] - r["myo_ml_truth"]) / r["myo_ml_truth"] for r in rows])
    ma = np.array([100.0 * (r["myo_ml"] - r["myo_ml_truth_analysed"]) / r["myo_ml_truth_analysed"] for r in rows])
    print(f"myocardial volume vs truth on the analysed (matched) LGE slices: mean {ma.mean():+.1f} %, "
          f"range {ma.min():+.1f} .. {ma.max():+.1f} %; vs truth over all LGE slices (unmatched slices are not "
          f"analysed): mean {mv.mean():+.1f} %, range {mv.min():+.1f} .. {mv.max():+.1f} %")
    print(f"registration error over myocardium (GT prior): {np.mean(reg_before):.2f} mm before -> "
          f"{np.mean(reg_after):.2f} mm after (mean of {len(reg_after)} slices), 95th pct after "
          f"{np.percentile(reg_after, 95):.2f} mm")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
