"""Regenerate the bundled SYNTAX demo models from synthetic angiography phantoms, deterministically.

    python -m training.syntax.make_bundled --out pipelines/models

1. Writes ``--train-studies`` + ``--test-studies`` phantom studies (training.syntax.phantom, fixed seeds)
   as a CardioSyntax v2 release folder (DICOM + Format 1/2 + test JSON) and reads it back with the
   release readers.
2. Stage 1 (backbone) per side on fold 0's train split (eval split for model selection), 30 epochs
   (12 left the left backbone under-trained: fold-0 eval left r 0.78 -> 0.83 with 30).  To fit the
   CPU budget (~16 min on 2 shared cores) the stage-1 backbone is shared by the five folds and
   frozen in stage 2; stage 2 (lstm_mean head) and the calibration a, b are per fold, as published.
3. The artery router is trained by :func:`router_main` (below), the same as ``--artery-only``.
4. Held-out phantom metrics (Pearson r, balanced accuracy at > 22, raw and calibrated) with the
   evaluation code; written into every manifest's provenance.
5. ONNX export: syntax-{left,right}-fold{0..4} (reduced R3D-18: widths 8/16/16/32, 4 frames at
   96x96 -- the manifests say so; the pipeline reads frames/size/mean/std from them), then the router.
Every figure is a phantom figure, not clinical accuracy.

    python -m training.syntax.make_bundled --artery-only --out pipelines/models --eval-studies 4

regenerates only the artery router (``syntax-artery``, version ``ROUTER_VERSION``) from the anatomical
scenes of :mod:`training.syntax.angio` (see :mod:`training.syntax.router`) within a wall-time budget
(``--budget-min``, default 55; the bundled 0.5.0-phantom: 7000 clips rendered in 2-5 min by
2 worker processes, 20 epochs in 11-13 min on 2 cores), exports it with its preprocessing (``subtract: max``,
digital subtraction of the sampled frames' per-pixel maximum, ``--router-subtract``; ``clip: minip`` over
``--router-samples`` frames, ``filter: tophat``, percentile stretch; the pipeline applies the same),
writes its accepted input ranges (:data:`training.syntax.domain.ROUTER_INPUT_DOMAIN`), measures its
routing through the real pipeline on held-out studies of the training generator and of the
independent evaluation generator (bench/phantoms/xa.py), and writes those figures, the training
generator and its version into the manifest.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from training.runs.logs import setup_logging

from .checkpoints import backbone_path
from .data import fold_path, read_format1, read_format2, read_test, rnn_fold_path
from .evaluate import evaluate_studies, format_table
from .phantom import make_study
from .phantom_dataset import write_release
from .predict import load_side_models, predict_studies
from .train import TrainArgs, fit_calibration, train_backbone, train_head, update_scaling

log = logging.getLogger("cardionode.training.syntax")

VERSION = "0.2.0-phantom"
ROUTER_VERSION = "0.5.0-phantom"
ROUTER_TRAIN_SEED0, ROUTER_HELD_SEED0 = 200_000, 600_000
TRAIN_SEED0, TEST_SEED0 = 10_000, 90_000


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.syntax.make_bundled", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("pipelines/models"))
    p.add_argument("--work", type=Path, default=Path(".work/syntax-bundled"))
    p.add_argument("--train-studies", type=int, default=400)
    p.add_argument("--test-studies", type=int, default=40)
    p.add_argument("--phantom-size", type=int, default=96)
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--widths", type=int, nargs=4, default=(8, 16, 16, 32))
    p.add_argument("--hidden", type=int, default=16)
    p.add_argument("--backbone-epochs", type=int, default=30)
    p.add_argument("--head-epochs", type=int, default=30)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-export", action="store_true")
    p.add_argument("--artery-only", action="store_true", help="regenerate only syntax-artery (the router)")
    p.add_argument("--router-train", type=int, default=7000, help="router training clips")
    p.add_argument("--router-held", type=int, default=300, help="router held-out clips (model selection)")
    p.add_argument("--router-epochs", type=int, default=20)
    p.add_argument("--router-batch", type=int, default=32)
    p.add_argument("--router-frames", type=int, default=2)
    p.add_argument("--router-samples", type=int, default=16,
                   help="frames read per cine; the clip is their running minimum projection "
                        "(preprocessing clip: minip)")
    p.add_argument("--router-size", type=int, default=64)
    p.add_argument("--router-tophat", type=int, default=7, help="black top-hat square in pixels (0: no filter)")
    p.add_argument("--router-subtract", choices=("none", "max"), default="max",
                   help="digital subtraction of the per-pixel maximum of the samples before the projection")
    p.add_argument("--router-register", type=int, default=0, metavar="PX",
                   help="before the subtraction, shift each sampled frame onto the run's mask within PX pixels at "
                        "twice the router's size (preprocessing register: shift; 0: no registration)")
    p.add_argument("--router-widths", type=int, nargs=4, default=(8, 16, 32, 64))
    p.add_argument("--eval-studies", type=int, default=6, help="studies per family for the manifest's routing figures")
    p.add_argument("--budget-min", type=float, default=55.0,
                   help="wall-time budget of --artery-only (data + training stop when it is spent; evaluation after)")
    a = p.parse_args(argv)
    setup_logging(a.work)
    if a.artery_only:
        torch.set_num_threads(a.threads)
        return router_main(a)
    torch.set_num_threads(a.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    t0 = time.perf_counter()
    root = a.work / "release"
    if not (root / "test_phantom.json").is_file():
        shutil.rmtree(root, ignore_errors=True)
        train = [make_study(TRAIN_SEED0 + i, a.phantom_size) for i in range(a.train_studies)]
        test = [make_study(TEST_SEED0 + i, a.phantom_size) for i in range(a.test_studies)]
        write_release(root, train, test, folds=a.folds, jpeg_every=4, seed=1)
        log.info("wrote %d + %d phantom studies to %s (%.0f s)", len(train), len(test), root, time.perf_counter() - t0)
    logdir = a.work / "weights"
    base = TrainArgs(dataset_root=root, fold=0, batch_size=16, frames_per_clip=a.frames, video_size=(a.size, a.size),
                     logdir=logdir, use_weighted_sampler=True, seed=0, widths=tuple(a.widths), hidden=a.hidden,
                     lr=3e-3, progress=False, max_views=8, overwrite=True)
    history: dict[str, list] = {}
    f1_train = read_format1(fold_path(root, 0, "train"), root)
    f1_eval = read_format1(fold_path(root, 0, "eval"), root)
    for side in ("left", "right"):
        args = TrainArgs(**{**base.__dict__, "artery": side, "max_epochs": a.backbone_epochs})
        src, history[f"backbone_{side}"] = train_backbone(args, f1_train, f1_eval)
        for k in range(1, a.folds):  # shared stage-1 backbone (see module doc)
            shutil.copyfile(src, backbone_path(logdir, side, k))
    for k in range(a.folds):
        tr = read_format2(rnn_fold_path(root, k, "train"), root)
        ev = read_format2(rnn_fold_path(root, k, "eval"), root)
        for side in ("left", "right"):
            args = TrainArgs(**{**base.__dict__, "artery": side, "fold": k, "max_epochs": a.head_epochs,
                                "freeze_backbone": True, "batch_size": 8, "lr": 1e-2, "variant": "lstm_mean"})
            _, history[f"head_{side}_fold{k}"] = train_head(args, tr, ev)
        cfg = base.cine_config
        pred = {side: predict_studies(load_side_models(logdir / "full_model_weights", side, [k], "lstm_mean")[0],
                                      ev, side, cfg)
                for side in ("left", "right")}
        coeffs = fit_calibration(pred["left"] + pred["right"], [s.syntax for s in ev])
        update_scaling(logdir / "scaling_coeffs.json", k, coeffs)
        log.info("fold %d calibration %s", k, coeffs)
    # held-out phantom evaluation (routing by the phantom truth; the bench measures the whole pipeline)
    from .checkpoints import read_scaling

    test = read_test(root / "test_phantom.json", root)
    scaling = read_scaling(logdir)
    per_fold = {k: {side: predict_studies(load_side_models(logdir / "full_model_weights", side, [k], "lstm_mean")[0],
                                          test, side, base.cine_config) for side in ("left", "right")}
                for k in range(a.folds)}
    res = evaluate_studies(per_fold, np.asarray([s.syntax for s in test]), scaling,
                           np.asarray([s.experts for s in test]))
    print(format_table(f"held-out phantoms (n={len(test)})", res))
    ens = res["rows"]["ensemble"]
    metrics = {"heldout_phantom_pearson_r": round(ens["pearson_r"], 4),
               "heldout_phantom_balanced_accuracy_gt22": round(ens["balanced_accuracy"], 4),
               "heldout_phantom_pearson_r_calibrated": round(ens["pearson_r_calibrated"], 4),
               "heldout_phantom_balanced_accuracy_gt22_calibrated": round(ens["balanced_accuracy_calibrated"], 4),
               "heldout_phantom_studies": len(test)}
    (a.work / "metrics.json").write_text(json.dumps(
        {"metrics": metrics, "evaluation": {k: v for k, v in res.items() if k not in ("truth",)},
         "history": history, "seconds": round(time.perf_counter() - t0, 1)}, indent=1))
    (a.work / "provenance_metrics.json").write_text(json.dumps(metrics))
    if a.no_export:
        return 0
    from export.onnx_export import export_onnx

    from .export import build_export

    trained_on = (f"synthetic phantoms: {a.train_studies} angiography phantom studies (training.syntax.phantom seeds "
                  f"{TRAIN_SEED0}..{TRAIN_SEED0 + a.train_studies - 1}); held out {a.test_studies} (seeds "
                  f"{TEST_SEED0}..{TEST_SEED0 + a.test_studies - 1})")
    notes = (f"reduced R3D-18 (widths {'/'.join(map(str, a.widths))}), {a.frames} frames at {a.size}x{a.size}; "
             "stage-1 backbone shared by the folds (CPU budget); NOT clinical weights")
    common = {"synthetic": "true", "trained_on": trained_on, "date": dt.date.today().isoformat(),
              "metrics_file": str(a.work / "provenance_metrics.json"),
              "notes": notes}
    ns = argparse.Namespace(version=VERSION, fp16=False, simplify=False,
                            options={**common, "frames": str(a.frames), "size": f"{a.size}x{a.size}",
                                     "folds": ",".join(str(k) for k in range(a.folds))})
    specs = build_export(logdir, ns)
    for spec in specs:
        report = export_onnx(spec.module, spec.example_inputs, a.out, version=VERSION, **spec.export_kwargs())
        log.info("exported %s", report.summary())
    log.info("fold models done in %.0f s; now the artery router", time.perf_counter() - t0)
    rc = router_main(a)
    from .domain import write_all  # accepted input ranges + fold spread calibrated on held-out phantoms

    write_all(a.out)
    log.info("done in %.0f s", time.perf_counter() - t0)
    return rc


def router_main(a: argparse.Namespace) -> int:
    """``--artery-only``: train, export and evaluate the artery router (see the module doc)."""
    from pipelines.syntax.preprocess import CineConfig

    from . import angio
    from .router import make_router_data, routing_accuracy, train_router

    t0 = time.time()
    deadline = t0 + a.budget_min * 60
    cfg = CineConfig(frames=a.router_frames, height=a.router_size, width=a.router_size, clip="minip",
                     samples=a.router_samples, intensity="percentile", filter="tophat" if a.router_tophat else "none",
                     tophat_px=a.router_tophat, subtract=a.router_subtract,
                     register="shift" if a.router_register else "none", register_px=a.router_register)
    a.work.mkdir(parents=True, exist_ok=True)
    # held-out first (small), then training data up to ~45 % of the budget
    held = make_router_data(a.router_held, ROUTER_HELD_SEED0, cfg, workers=a.threads)
    train = make_router_data(a.router_train, ROUTER_TRAIN_SEED0, cfg, deadline=t0 + 0.45 * a.budget_min * 60,
                             workers=a.threads)
    log.info("router data: %d train, %d held-out clips (%.0f s)", len(train.y), len(held.y), time.time() - t0)
    ckpt = a.work / "artery_weights" / "router.pt"
    model, hist = train_router(train, held, cfg, a.router_widths, epochs=a.router_epochs, batch_size=a.router_batch,
                               deadline=deadline, out=ckpt)
    from .router import _eval

    _, probs = _eval(model, held, cfg)
    generator = f"{angio.GENERATOR} {angio.VERSION}"
    metrics: dict = {"training_generator": generator, "train_clips": int(len(train.y)),
                     "heldout_training_family_clip_routing": round(routing_accuracy(probs, held.y), 4),
                     "heldout_training_family_clips": int(len(held.y)),
                     "training_seconds": round(time.time() - t0, 1), "epochs_run": len(hist),
                     "epochs_planned": a.router_epochs, "batch_size": a.router_batch}
    (a.work / "router_history.json").write_text(json.dumps({"history": hist, "metrics": metrics}, indent=1))
    if a.no_export:
        print(json.dumps(metrics, indent=1))
        return 0
    from export.onnx_export import export_onnx

    from .export import build_artery_export

    trained_on = (f"synthetic phantoms: {len(train.y)} angiography runs of {generator} (seeds {ROUTER_TRAIN_SEED0}+; "
                  f"left/right trees at LAO -60..100, cranial -45..45, field of view 80-260 mm, 12-130 frames, "
                  f"rendered at 128-256 px; ventriculogram/aortogram/test-shot negatives) and training.syntax.phantom "
                  f"cines; held out {len(held.y)} (seeds {ROUTER_HELD_SEED0}+)")
    sub = ", minus their per-pixel maximum (digital subtraction)" if cfg.subtract == "max" else ""
    if cfg.register == "shift":
        sub = f", each shifted onto the run's mask (within {cfg.register_px} px at twice the size){sub}"
    filt = f", black top-hat {cfg.tophat_px} px" if cfg.filter == "tophat" else ""
    notes = (f"reduced R3D-18 (torchvision r3d_18 topology, widths {'/'.join(map(str, a.router_widths))} instead of "
             f"64/128/256/512), {cfg.frames} frames at {cfg.height}x{cfg.width}: running minimum-intensity projection "
             f"of {cfg.n_samples} frames spread over the cine{sub}{filt}, 1-99 percentile stretch, ImageNet mean/std; "
             "routing figures are phantom figures; NOT clinical weights")
    ns = argparse.Namespace(version=ROUTER_VERSION, fp16=False, simplify=False,
                            options={"synthetic": "true", "trained_on": trained_on, "date": dt.date.today().isoformat(),
                                     "notes": notes, "frames": str(cfg.frames), "size": f"{cfg.height}x{cfg.width}",
                                     "clip": cfg.clip, "intensity": cfg.intensity, "samples": str(cfg.samples),
                                     "filter": cfg.filter, "tophat_px": str(cfg.tophat_px),
                                     "subtract": cfg.subtract, "register": cfg.register,
                                     "register_px": str(cfg.register_px)})
    for spec in build_artery_export(ckpt, ns):
        report = export_onnx(spec.module, spec.example_inputs, a.out, version=ROUTER_VERSION, **spec.export_kwargs())
        log.info("exported %s", report.summary())
    from export.domains import write_domains

    from .domain import ROUTER_INPUT_DOMAIN

    write_domains(a.out / "syntax-artery", input_domain=ROUTER_INPUT_DOMAIN, output_domain={})
    metrics.update(evaluate_router(a.out, a.eval_studies, a.threads))
    write_router_metrics(a.out / "syntax-artery" / "manifest.json", metrics)
    print(json.dumps(metrics, indent=1))
    log.info("router done in %.0f s", time.time() - t0)
    return 0


def evaluate_router(models: Path, studies: int, threads: int) -> dict:
    """Routing through the real pipeline on both phantom families (bench/syntax_routing.py)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bench.phantoms import xa
    from bench.syntax_routing import route_family
    from pipelines.runtime import ModelStore
    from pipelines.runtime.settings import ModelsSection

    # ``models`` as the node's models.dir, over the bundled ones: a candidate folder holding only
    # syntax-artery is evaluated with the bundled fold models
    store = ModelStore.from_config(ModelsSection(dir=str(models), providers=("cpu",), warmup=False,
                                                 intra_op_threads=threads))
    out: dict = {"evaluation_generator": f"{xa.GENERATOR} {xa.VERSION}"}
    for fam in ("training", "evaluation"):
        r = route_family(fam, studies, store, log=log.info)
        out[f"routing_{fam}_family"] = {k: r[k] for k in ("studies", "cines", "routing_accuracy",
                                                           "coronary_routed_correctly", "neither_as_other",
                                                           "left_right_separation", "confusion")}
    return out


def write_router_metrics(manifest: Path, metrics: dict) -> None:
    """Add the routing figures to the manifest's provenance.metrics (other keys are kept)."""
    data = json.loads(manifest.read_text())
    prov = data.setdefault("provenance", {})
    prov["metrics"] = {**prov.get("metrics", {}), **metrics}
    manifest.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
