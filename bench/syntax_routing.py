"""Artery routing of the SYNTAX pipeline on two phantom families (phantom figures, not clinical accuracy).

    python bench/syntax_routing.py [--studies 20] [--family both|training|evaluation] [--json FILE]

For each study the whole pipeline runs (StudyView.from_files -> decode -> artery classifier ->
ensemble -> SR), and each cine's routing (left / right / other) is compared with its truth:

- ``training`` family: held-out runs of the training generator (training.syntax.angio, seeds
  700000+ never used by make_bundled), written with synth.dicom.
- ``evaluation`` family: bench.phantoms.xa, a generator that shares no code with training/ (its own
  anatomy, acquisition model and DICOM writer; 15-120 frames, 512 / 1024 matrices).

Target: at least 98 % of the cines routed to their artery, "other" only for ventriculograms and
aortograms.  Prints the accuracy and the confusion matrix per family, and the seconds per study; also
the left/right separation of p(right) whatever the thresholds (the share of (left, right) cine pairs in
which the right cine has the higher p(right): 1.0 = perfectly ordered, 0.5 = chance).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.base import PipelineContext, PipelineInputError, StudyView  # noqa: E402
from pipelines.runtime import ModelStore  # noqa: E402
from pipelines.runtime.settings import ModelsSection  # noqa: E402
from pipelines.syntax.pipeline import SyntaxPipeline  # noqa: E402

TRUTHS = ("left", "right", "neither")
ROUTES = ("left", "right", "other")
TRAIN_SEED0, EVAL_SEED0 = 700_000, 800_000


def _training_study(seed: int, folder: Path) -> list[tuple[Path, str]]:
    """Held-out study of the training generator: 2-4 left, 1-3 right, sometimes negatives."""
    from synth.dicom import new_study, write_xa_cine
    from training.syntax import angio

    rng = np.random.default_rng([seed, 5])
    kinds = ["left"] * int(rng.integers(2, 5)) + ["right"] * int(rng.integers(1, 4))
    kinds += [k for k, p in (("ventriculogram", 0.35), ("aortogram", 0.25)) if rng.random() < p]
    ident = new_study(seed=seed)
    out = []
    for n, kind in enumerate(kinds):
        scene = angio.make_scene(kind, seed * 10 + n, size=int(rng.choice([128, 256])))
        path = write_xa_cine(angio.render_all(scene), folder / f"{n:02d}.dcm", ident, series_number=n + 1, seed=seed,
                             frame_time_ms=1000.0 / scene.fps)
        out.append((path, "neither" if kind in ("ventriculogram", "aortogram", "testshot") else kind))
    return out


def _evaluation_study(seed: int, folder: Path) -> list[tuple[Path, str]]:
    from bench.phantoms import xa

    return [(p, run.truth) for p, run in xa.write_study(seed, folder)]


def route_family(family: str, studies: int, store: ModelStore, *, seed0: int | None = None, threads: int = 1,
                 log: Any = print) -> dict[str, Any]:
    """Routing figures of ``studies`` generated studies of ``family`` through the real pipeline."""
    import pydicom

    make = {"training": _training_study, "evaluation": _evaluation_study}[family]
    seed0 = seed0 if seed0 is not None else (TRAIN_SEED0 if family == "training" else EVAL_SEED0)
    art = store.manifest("syntax-artery").preprocessing
    left_max, right_min = float(art.get("left_max", 0.10)), float(art.get("right_min", 0.90))
    confusion = np.zeros((3, 3), np.int64)
    secs, gen_secs, misses = [], [], []
    p_by_truth: dict[str, list[float]] = {"left": [], "right": []}
    qc_abstained = 0
    pipe = SyntaxPipeline()
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(studies):
            folder = Path(tmp) / f"s{i}"
            t0 = time.perf_counter()
            pairs = make(seed0 + i, folder)
            gen_secs.append(time.perf_counter() - t0)
            view = StudyView.from_files([p for p, _ in pairs])
            ctx = PipelineContext(options={}, models=store, work_dir=folder)
            t0 = time.perf_counter()
            try:
                summary = pipe.run(view, ctx).summary
            except PipelineInputError:  # every cine "other": the pipeline refuses the study
                summary = {}
            # a study whose cines are all outside the models' accepted input ranges (pipelines.qc) is
            # "not assessable" before routing: its cines count as not routed ("other")
            probs = summary.get("artery_probabilities", {})
            if summary and not probs:
                qc_abstained += len(pairs)
            secs.append(time.perf_counter() - t0)
            for path, truth in pairs:
                uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
                pr = probs.get(uid)
                if pr is not None and truth in p_by_truth:
                    p_by_truth[truth].append(float(pr))
                got = "other" if pr is None else "left" if pr <= left_max else "right" if pr >= right_min else "other"
                confusion[TRUTHS.index(truth), ROUTES.index(got)] += 1
                if ROUTES.index(got) != TRUTHS.index(truth):
                    misses.append(f"seed {seed0 + i} {path.name}: {truth} -> {got} (p_right {pr})")
            log(f"  {family} study {i + 1}/{studies}: {len(pairs)} cines, generated in {gen_secs[-1]:.1f} s, "
                f"pipeline {secs[-1]:.1f} s")
    total = int(confusion.sum())
    correct = int(np.trace(confusion))
    coronary = confusion[:2].sum()
    return {"family": family, "studies": studies, "cines": total, "routing_accuracy": round(correct / max(total, 1), 4),
            "coronary_routed_correctly": round(float(np.trace(confusion[:2, :2]) / max(coronary, 1)), 4),
            "neither_as_other": round(float(confusion[2, 2] / max(confusion[2].sum(), 1)), 4),
            "left_right_separation": _separation(p_by_truth["left"], p_by_truth["right"]),
            "confusion": {t: {r: int(confusion[a, b]) for b, r in enumerate(ROUTES)} for a, t in enumerate(TRUTHS)},
            "not_assessable_before_routing": qc_abstained, "misses": misses,
            "pipeline_seconds_per_study": round(float(np.mean(secs)), 2),
            "generation_seconds_per_study": round(float(np.mean(gen_secs)), 2)}


def _separation(left: list[float], right: list[float]) -> float | None:
    """Share of (left, right) pairs whose right cine has the higher p(right) (ties count half); None without both."""
    if not left or not right:
        return None
    lv, rv = np.asarray(left)[None, :], np.asarray(right)[:, None]
    return round(float(((rv > lv).sum() + 0.5 * (rv == lv).sum()) / (lv.size * rv.size)), 4)


def format_result(r: dict[str, Any]) -> str:
    rows = [f"{r['family']} family: {r['studies']} studies, {r['cines']} cines -- routed to the right artery / "
            f"'other' for non-coronary runs: {100 * r['routing_accuracy']:.1f} % (target >= 98 %); coronary cines "
            f"{100 * r['coronary_routed_correctly']:.1f} %, "
            f"ventriculogram/aortogram as other {100 * r['neither_as_other']:.1f} %",
            f"  left/right separation of p(right), whatever the thresholds: {r['left_right_separation']}",
            "  truth \\ routed    left  right  other"]
    for t in TRUTHS:
        c = r["confusion"][t]
        rows.append(f"  {t:<16} {c['left']:>5} {c['right']:>6} {c['other']:>6}")
    if r["not_assessable_before_routing"]:
        rows.append(f"  {r['not_assessable_before_routing']} cines not routed: "
                    "outside the models' accepted input ranges")
    rows.append(f"  pipeline {r['pipeline_seconds_per_study']:.2f} s per study "
                f"(generation {r['generation_seconds_per_study']:.1f} s)")
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--studies", type=int, default=20)
    p.add_argument("--family", choices=("both", "training", "evaluation"), default="both")
    p.add_argument("--models", type=Path, default=None,
                   help="a models folder over the bundled ones (models.dir): e.g. a candidate syntax-artery alone")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (models.threads)")
    p.add_argument("--json", type=Path, help="also write the figures as JSON")
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    store = ModelStore.from_config(ModelsSection(dir=None if a.models is None else str(a.models), providers=("cpu",),
                                                 warmup=False, intra_op_threads=a.threads))
    m = store.manifest("syntax-artery")
    print(f"syntax-artery {m.version}: {m.provenance.trained_on}")
    print("phantom figures (generated studies), not clinical accuracy")
    families = ("training", "evaluation") if a.family == "both" else (a.family,)
    results = [route_family(f, a.studies, store) for f in families]
    for r in results:
        print(format_result(r))
        for miss in r["misses"][:20]:
            print("   miss:", miss)
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
