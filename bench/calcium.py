"""Benchmark the calcium pipeline: time and peak RSS for a 600-slice 512x512 phantom CT, and the
bundled model's held-out phantom Dice per class.  Prints figures; asserts nothing.

    .venv/bin/python bench/calcium.py                 # 600 x 512 x 512, then held-out phantom Dice
    .venv/bin/python bench/calcium.py --slices 200 --no-dice

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

    from node.config import ModelsSection
    from pipelines.base import PipelineContext, StudyView
    from pipelines.calcium.pipeline import CalciumPipeline
    from pipelines.runtime import ModelStore, bundled_models_dir

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
    p.add_argument("--no-dice", action="store_true")
    p.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child)
        return 0

    from training.calcium.phantom import hand_agatston, make_phantom
    from training.synth.dicom import new_study, write_ct_series

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
            return 1
        r = json.loads(out.stdout.strip().splitlines()[-1])
        s = r["summary"]
        print(f"pipeline: {r['run_s']:.1f} s (index {r['index_s']:.1f} s; load {s['seconds']['load']} s, model "
              f"{s['seconds']['model']} s, outputs {s['seconds']['outputs']} s), peak RSS {r['peak_rss_mb']:.0f} MB, "
              f"outputs {r['outputs']}")
        print(f"Agatston total {s['agatston_total']:.1f} vs hand-computed {sum(hand.values()):.1f}; coronary "
              f"{s['agatston_coronary']:.1f} ({s['risk_category']})")
    if not args.no_dice:
        from pipelines.runtime import bundled_models_dir
        from training.calcium.evaluate import evaluate_cases, onnx_predictor, phantom_cases

        predict, cfg = onnx_predictor(bundled_models_dir() / "calcium-unet2d")
        rep = evaluate_cases(phantom_cases(range(1000, 1016)), predict, cfg)
        print("held-out phantom Dice per class (phantoms 1000-1015, ONNX model, voxels >= 130 HU):")
        for name, v in rep["dice"].items():
            sens = rep["lesion_sensitivity"][name]
            print(f"  {name:26s} Dice {v if v is None else f'{v:.3f}'}  lesion sensitivity "
                  f"{sens if sens is None else f'{sens:.3f}'}")
        print(f"  coronary Agatston ICC(2,1) {rep['agatston_icc_2_1']}, risk kappa (0/1-100/101-400/>400) {rep['risk_kappa']}; "
              f"all-class Agatston ICC(2,1) {rep['agatston_icc_2_1_all_classes']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
