"""SYNTAX models' accepted ranges: cine inputs from the phantom generator, fold spread calibrated on held-out phantoms.

    python -m training.syntax.domain --models pipelines/models    # re-calibrate, write the 11 manifests

Input ranges are what each model was trained and evaluated on.  :data:`INPUT_DOMAIN` (every fold
model's manifest): :func:`training.syntax.phantom.make_study` cines of 96 x 96 pixels with 14-32
frames, written as XA.  :data:`ROUTER_INPUT_DOMAIN` (the artery router's manifest, checked before
routing; the fold models' ranges are checked after it, per side): the router's training scenes
(:mod:`training.syntax.angio`, 12-130 frames, rendered at 128-256 px, and the 96 px phantom cines)
and the evaluation runs it is measured on (bench/phantoms/xa: 15-120 frames, 512 / 1024 px).  The
output score ``fold_spread`` (:mod:`pipelines.qc.scores`: standard deviation of the 5 fold models'
raw scores of one coronary system, SYNTAX points) is measured by running the pipeline (ONNX Runtime)
on held-out phantom studies (seeds from :data:`CALIBRATION_SEED0`, never trained on); the accepted
maximum is twice the largest value seen there.  It is written into every fold manifest (the range
belongs to the ensemble).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from pipelines.runtime.manifest import DomainRange

__all__ = ["INPUT_DOMAIN", "ROUTER_INPUT_DOMAIN", "calibrate_output_domain", "write_all", "main"]

_GEN = "training generator (training.syntax.phantom.make_study, make_bundled --phantom-size 96)"

INPUT_DOMAIN: dict[str, DomainRange] = {
    "modality": DomainRange(one_of=("XA",), note="phantom cines written as X-ray angiography"),
    "frames": DomainRange(min=14, max=32, note=f"{_GEN}: 14-32 frames per cine"),
    "matrix": DomainRange(min=96, max=96, unit="px", note=f"{_GEN}: 96 x 96 pixels"),
}

_ROUTER = ("router training scenes (training.syntax.angio: 12-130 frames, 128-256 px; training.syntax.phantom "
           "96 px) and evaluation runs (bench/phantoms/xa: 15-120 frames, 512 / 1024 px)")

ROUTER_INPUT_DOMAIN: dict[str, DomainRange] = {
    "modality": DomainRange(one_of=("XA",), note="phantom cines written as X-ray angiography"),
    "frames": DomainRange(min=12, max=130, note=f"{_ROUTER}: 12-130 frames per cine"),
    "matrix": DomainRange(min=96, max=1024, unit="px", note=f"{_ROUTER}: 96-1024 pixels"),
}

MARGIN = 2.0
CALIBRATION_SEED0 = 90_000  # make_bundled's held-out studies (TEST_SEED0)
CALIBRATION_STUDIES = 20


def calibrate_output_domain(models_dir: Path, studies: int = CALIBRATION_STUDIES,
                            seed0: int = CALIBRATION_SEED0) -> tuple[dict[str, DomainRange], list[float]]:
    """Run the pipeline on held-out phantom studies; the accepted range of the fold spread."""
    from export.domains import upper_bound
    from pipelines.base import PipelineContext, StudyView
    from pipelines.runtime import ModelStore
    from pipelines.runtime.settings import ModelsSection
    from pipelines.syntax.pipeline import SyntaxPipeline
    from synth.dicom import new_study, write_xa_cine

    from .phantom import make_study

    store = ModelStore([Path(models_dir)], ModelsSection(providers=("cpu",), warmup=False))
    values: list[float] = []
    with tempfile.TemporaryDirectory(prefix="syntax-domain-") as tmp:
        for i in range(studies):
            st = make_study(seed0 + i, 96)
            ident = new_study(seed=seed0 + i)
            folder = Path(tmp) / str(i)
            files = [write_xa_cine(c.frames, folder / f"{n:02d}.dcm", ident, series_number=n + 1, seed=seed0 + i)
                     for n, c in enumerate(st.cines)]
            res = SyntaxPipeline().run(StudyView.from_files(files),
                                       PipelineContext(options={}, models=store, work_dir=folder))
            values += list(res.summary.get("fold_spread", {}).values())
    hi = upper_bound(values, MARGIN, digits=1)
    note = (f"{MARGIN:g} x the largest value ({max(values):.2f}) over {len(values)} coronary systems of held-out "
            f"phantom studies (seeds {seed0}..{seed0 + studies - 1}; range there {min(values):.2f}-{max(values):.2f}); "
            "re-calibrate with python -m training.syntax.domain")
    return {"fold_spread": DomainRange(min=0.0, max=hi, unit="points", note=note)}, values


def write_all(models_dir: Path, prefix: str = "syntax", folds: Sequence[int] = (0, 1, 2, 3, 4),
              artery: str = "syntax-artery") -> list[float]:
    """Input ranges into the artery and fold manifests, then the calibrated fold spread into the folds."""
    from export.domains import write_domains

    models_dir = Path(models_dir)
    fold_dirs = [models_dir / f"{prefix}-{side}-fold{k}" for side in ("left", "right") for k in folds]
    write_domains(models_dir / artery, input_domain=ROUTER_INPUT_DOMAIN, output_domain={})
    for d in fold_dirs:
        write_domains(d, input_domain=INPUT_DOMAIN, output_domain={})
    output, values = calibrate_output_domain(models_dir)
    for d in fold_dirs:
        write_domains(d, output_domain=output)
    return values


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.syntax.domain", description=__doc__.splitlines()[0])
    p.add_argument("--models", type=Path, default=Path("pipelines/models"))
    args = p.parse_args(argv)
    values = write_all(args.models)
    print(f"fold spread on held-out phantoms: {[round(v, 2) for v in values]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
