"""SYNTAX benchmark on held-out angiography phantoms (prints figures; phantom figures, not clinical accuracy).

    python bench/syntax.py [--studies 40] [--models DIR] [--threads 2]

Writes held-out phantom studies (training.syntax.phantom, seeds 95000+: never used by make_bundled's
training (10000+) nor its held-out evaluation (90000+)) as multi-frame XA DICOM (every third cine
JPEG-compressed) and runs the whole pipeline on each (StudyView.from_files -> decode -> artery
classifier -> 5-fold ensemble -> SR + summary image, CPU ONNX Runtime).  Prints Pearson r and balanced
accuracy at SYNTAX > 22 of the total against the phantom truth, raw (mean of the folds' L + R) and
calibrated (what the SR reports), artery routing accuracy, and wall / CPU seconds per study.  Also
prints the held-out figures recorded in the manifests at training time.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.base import PipelineContext, PipelineInputError, StudyView  # noqa: E402
from pipelines.runtime import ModelStore  # noqa: E402
from pipelines.runtime.settings import ModelsSection  # noqa: E402
from pipelines.syntax.pipeline import SyntaxPipeline  # noqa: E402
from synth.dicom import new_study, write_xa_cine  # noqa: E402
from training.syntax.evaluate import THRESHOLD, balanced_accuracy, pearson  # noqa: E402
from training.syntax.phantom import make_study  # noqa: E402

SEED0 = 95_000


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--studies", type=int, default=40)
    p.add_argument("--models", type=Path, default=None,
                   help="a models folder over the bundled ones (models.dir): e.g. a candidate syntax-artery alone")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (models.threads)")
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    store = ModelStore.from_config(ModelsSection(dir=None if a.models is None else str(a.models), providers=("cpu",),
                                                 warmup=False, intra_op_threads=a.threads))
    m = store.manifest("syntax-left-fold0")
    print(f"models: syntax-artery + syntax-{{left,right}}-fold0..4 {m.version}: {m.provenance.trained_on}")
    print(f"  notes: {m.provenance.notes}")
    print(f"  held-out phantom figures recorded at training (phantom-truth routing): {dict(m.provenance.metrics)}")
    art = store.manifest("syntax-artery").preprocessing
    left_max, right_min = float(art.get("left_max", 0.10)), float(art.get("right_min", 0.90))
    pipe = SyntaxPipeline()
    truth, raw, cal, secs, cpus, failed, ncines = [], [], [], [], [], [], []
    routed = correct = 0
    with tempfile.TemporaryDirectory() as tmp:
        ctx = PipelineContext(options={}, models=store, work_dir=Path(tmp))
        for i in range(a.studies):
            st = make_study(SEED0 + i, 96)
            ident = new_study(seed=SEED0 + i)
            files = [write_xa_cine(c.frames, Path(tmp) / f"s{i}" / f"{n:02d}.dcm", ident, series_number=n + 1,
                                   seed=SEED0 + i, jpeg=n % 3 == 1) for n, c in enumerate(st.cines)]
            view = StudyView.from_files(files)
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                res = pipe.run(view, ctx)
            except PipelineInputError as exc:
                failed.append(f"seed {SEED0 + i}: {exc}")
                continue
            secs.append(time.perf_counter() - t0)
            ncines.append(len(files))
            cpus.append(time.process_time() - c0)
            s = res.summary
            probs = s["artery_probabilities"]  # every cine counts, also in a study left not assessed
            for ref, cine in zip(view.instances, [st.cines[int(r.path.stem)] for r in view.instances]):
                pr = probs[ref.sop_instance_uid]
                got = "left" if pr <= left_max else "right" if pr >= right_min else "other"
                routed += 1
                correct += got == cine.artery
            if s["syntax_total"] is None:  # a coronary system without an analysed cine: not assessed
                failed.append(f"seed {SEED0 + i}: " + "; ".join(q["message"] for q in s["not_assessable"]))
                continue
            truth.append(st.syntax)
            raw.append(s["raw"]["left"] + s["raw"]["right"])
            cal.append(s["syntax_total"])
    t, r_, c_ = np.asarray(truth), np.asarray(raw), np.asarray(cal)
    print(f"held-out phantom studies: {len(truth)} scored, {len(failed)} rejected"
          + ("".join(f"\n  rejected {f}" for f in failed)))
    print(f"  truth: mean {t.mean():.1f}, > {THRESHOLD:g}: {int((t > THRESHOLD).sum())}")
    print(f"  Pearson r   raw {pearson(r_, t):.3f}   calibrated {pearson(c_, t):.3f}")
    print(f"  BalAcc >{THRESHOLD:g} raw {balanced_accuracy(r_, t):.3f}   calibrated {balanced_accuracy(c_, t):.3f}")
    print(f"  artery routing (default thresholds) matches the phantom kind for {correct}/{routed} cines")
    print(f"pipeline per study ({np.mean(ncines):.1f} cines of 96x96 x 14-32 frames, CPU ONNX Runtime, "
          f"{a.threads} threads): wall {np.mean(secs):.2f} s (median {np.median(secs):.2f}, "
          f"max {np.max(secs):.2f}), CPU {np.mean(cpus):.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
