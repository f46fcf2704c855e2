"""Benchmark the calcium pipeline: time and peak RSS for a 600-slice 512x512 phantom CT, and the
bundled model's coronary calcium agreement on held-out studies of two phantom families.  Prints
figures; asserts nothing.

    .venv/bin/python bench/calcium.py                 # 600 x 512 x 512, then agreement on both families
    .venv/bin/python bench/calcium.py --slices 200 --no-accuracy
    .venv/bin/python bench/calcium.py --no-timing --eval-seeds 0-39 --json agreement.json
    .venv/bin/python bench/calcium.py --no-timing --model DIR/calcium-unet2d   # a candidate (make_bundled --out DIR)

Agreement (:mod:`training.calcium.agreement`, the ONNX model through the pipeline's own inference and
Agatston functions): calcium-free studies scored 0 and category "0", mean bias and Bland-Altman limits
of the coronary score, share within 15 %, Cohen's kappa over the risk categories, calcium voxels on bone.
Families: held-out phantoms of the training generator (``training.calcium.phantom``) and studies of the
independent evaluation generator (``bench.phantoms.ct``), which no model is trained on.

The pipeline runs in a fresh child process (``--child``) so that its peak RSS (ru_maxrss) is the
pipeline's alone: StudyView.from_files + CalciumPipeline.run incl. DICOM reading and SEG/SR building.
The 0.5 mm / 0.7 mm study is outside the bundled model's accepted input ranges (pipelines.qc), on
which the pipeline would abstain before inference; to time the whole path the child runs a copy of
the model whose manifest has no input_domain / output_domain.
Phantom figures, not clinical accuracy.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def child(folder: Path) -> None:
    import logging

    from pipelines.base import PipelineContext, StudyView
    from pipelines.calcium.pipeline import CalciumPipeline
    from pipelines.runtime import ModelStore, bundled_models_dir
    from pipelines.runtime.settings import ModelsSection

    logging.basicConfig(level=logging.WARNING)
    t0 = time.perf_counter()
    files = sorted(folder.glob("*.dcm"))
    study = StudyView.from_files(files)
    t_index = time.perf_counter()
    models = folder / "models"
    shutil.copytree(bundled_models_dir() / "calcium-unet2d", models / "calcium-unet2d")
    manifest = json.loads((models / "calcium-unet2d" / "manifest.json").read_text())
    for key in ("input_domain", "output_domain"):  # time the model path, not the abstention
        manifest.pop(key, None)
    (models / "calcium-unet2d" / "manifest.json").write_text(json.dumps(manifest))
    store = ModelStore([models], ModelsSection(providers=("cpu",), warmup=False))
    result = CalciumPipeline().run(study, PipelineContext(options={}, models=store, work_dir=folder))
    t1 = time.perf_counter()
    print(json.dumps({"index_s": t_index - t0, "run_s": t1 - t_index, "summary": result.summary,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "outputs": sorted(d.Modality for d in result.datasets)}))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--slices", type=int, default=600)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--no-accuracy", "--no-dice", dest="no_accuracy", action="store_true")
    p.add_argument("--no-timing", action="store_true")
    p.add_argument("--heldout-seeds", default="1000-1019", help="held-out training-family phantoms")
    p.add_argument("--eval-seeds", default="0-19", help="evaluation-family studies (bench.phantoms.ct)")
    p.add_argument("--workers", type=int, default=2, help="evaluate the two families in this many processes")
    p.add_argument("--json", type=Path, default=None, help="write the agreement report (per case) here")
    p.add_argument("--model", type=Path, default=None,
                   help="model folder for the agreement figures (default: the bundled calcium-unet2d), e.g. a "
                        "candidate exported by make_bundled --out DIR")
    p.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child)
        return 0

    if not args.no_timing:
        timing(args)
    if not args.no_accuracy:
        accuracy(args)
    return 0


def timing(args: argparse.Namespace) -> None:
    from synth.dicom import new_study, write_ct_series
    from training.calcium.phantom import hand_agatston, make_phantom

    with tempfile.TemporaryDirectory(prefix="bench-calcium-") as tmp:
        dz, px = 0.5, 0.7 * 512 / args.size
        t = time.perf_counter()
        ph = make_phantom(31337, shape=(args.slices, args.size, args.size), spacing=(dz, px, px), plaque_shape="box",
                          noise_hu=10.0, classes=(1, 2, 3, 4, 5, 6, 7, 8))
        write_ct_series(ph.hu, ph.spacing, Path(tmp), new_study(seed=31337), origin_xyz=ph.origin_xyz, seed=31337,
                        slice_thickness=dz, series_description="Chest CT 0.5 mm")
        hand = hand_agatston(ph)
        del ph
        print(f"phantom {args.slices} x {args.size} x {args.size} ({dz} mm slices, {px:.2f} mm pixels) written in "
              f"{time.perf_counter() - t:.1f} s")
        out = subprocess.run([sys.executable, __file__, "--child", tmp], capture_output=True, text=True, cwd=ROOT)
        if out.returncode:
            print(out.stderr[-4000:])
            raise SystemExit(1)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        s = r["summary"]
        print(f"pipeline: {r['run_s']:.1f} s (index {r['index_s']:.1f} s; load {s['seconds']['load']} s, model "
              f"{s['seconds']['model']} s, outputs {s['seconds']['outputs']} s), peak RSS {r['peak_rss_mb']:.0f} MB, "
              f"outputs {r['outputs']}")
        print(f"Agatston total {s['agatston_total']:.1f} vs hand-computed {sum(hand.values()):.1f}; coronary "
              f"{s['agatston_coronary']:.1f} ({s['risk_category']})")


def accuracy(args: argparse.Namespace) -> None:
    from training.calcium.agreement import TARGETS
    from training.calcium.make_bundled import FIGURES, evaluate_both
    from pipelines.runtime import bundled_models_dir

    model_dir = args.model or bundled_models_dir() / "calcium-unet2d"
    manifest = json.loads((model_dir / "manifest.json").read_text())
    reports = evaluate_both(("onnx", model_dir), args.heldout_seeds, args.eval_seeds, workers=args.workers)
    print(f"coronary calcium agreement, calcium-unet2d {manifest['version']} (ONNX), PHANTOM FIGURES, not clinical "
          f"accuracy; targets: calcium-free -> 0 in >= {TARGETS['calcium_free_zero_rate']:.0%}, kappa >= "
          f"{TARGETS['kappa']}, bone voxels {TARGETS['bone_voxels']}")
    for fam, rep in reports.items():
        print(f"  {fam} ({rep['generator']} {rep['generator_version']}, seeds {rep['seeds']}, {rep['seconds']} s):")
        for k in FIGURES:
            print(f"    {k:30s} {rep[k]}")
        print(f"    {'targets_met':30s} {rep['targets_met']}")
    if args.json:
        args.json.write_text(json.dumps(reports, indent=2))


if __name__ == "__main__":
    sys.exit(main())
