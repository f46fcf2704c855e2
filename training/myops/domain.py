"""The MyoPS model's accepted ranges: inputs from the phantom generator, output scores calibrated on held-out phantoms.

    python -m training.myops.domain --model pipelines/models/myops-unet   # re-calibrate, write manifest

Input ranges (:data:`INPUT_DOMAIN`) are what :func:`training.myops.phantom.make_phantom` renders
for training with ``varied=True`` (generator 2.1, :func:`training.myops.phantom.varied_spec`): bSSFP,
LGE and T2w short-axis stacks, pixel spacing 0.8-2.0 mm, slice thickness 6-14 mm.  The output scores
(:mod:`pipelines.qc.scores`) are measured by running the pipeline (ONNX Runtime) on make_bundled's
held-out phantoms (seeds from :data:`CALIBRATION_SEED0`): the accepted low-confidence fraction is at
most twice the largest value seen there, the myocardial volume between half the smallest and
twice the largest.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from pipelines.runtime.manifest import DomainRange

__all__ = ["INPUT_DOMAIN", "calibrate_output_domain", "main"]

_GEN = "training generator 2.1 (training.myops.phantom.varied_spec)"

INPUT_DOMAIN: dict[str, DomainRange] = {
    "modality": DomainRange(one_of=("MR",), note="cardiac MR phantoms"),
    "sequences": DomainRange(one_of=("bssfp", "lge", "t2"), note="the model's three input channels; all needed"),
    "pixel_spacing_mm": DomainRange(min=0.8, max=2.0, unit="mm", note=f"{_GEN}: 0.8-2.0 mm per sequence"),
    "slice_thickness_mm": DomainRange(min=6.0, max=14.0, unit="mm", note=f"{_GEN}: 6-14 mm per sequence"),
}

CALIBRATION_SEED0 = 5000  # make_bundled's held-out phantoms (TEST_SEED0)
CALIBRATION_CASES = 6  # make_bundled's held-out cases (--test-cases)


def calibrate_output_domain(model_dir: Path, cases: int = CALIBRATION_CASES, seed0: int = CALIBRATION_SEED0
                            ) -> tuple[dict[str, DomainRange], dict[str, list[float]]]:
    """Run the pipeline on held-out phantom studies; accepted ranges of the output scores."""
    from export.domains import upper_bound
    from pipelines.base import PipelineContext, StudyView
    from pipelines.myops.pipeline import MyopsPipeline
    from pipelines.runtime import ModelStore
    from pipelines.runtime.settings import ModelsSection
    from synth.dicom import new_study

    from .phantom import make_phantom, write_dicom_study

    store = ModelStore([Path(model_dir).parent], ModelsSection(providers=("cpu",), warmup=False))
    options = {"model": Path(model_dir).name}
    seen: dict[str, list[float]] = {"low_confidence_fraction": [], "myocardium_ml": []}
    with tempfile.TemporaryDirectory(prefix="myops-domain-") as tmp:
        for i in range(cases):
            folder = Path(tmp) / str(i)
            files = write_dicom_study(make_phantom(seed0 + i, with_scar=True, varied=True), folder, seed=seed0 + i,
                                      study=new_study(seed=seed0 + i))
            res = MyopsPipeline().run(StudyView.from_files(files),
                                      PipelineContext(options=options, models=store, work_dir=folder))
            for key in seen:
                seen[key].append(float(res.summary[key]))
    lc, myo = seen["low_confidence_fraction"], seen["myocardium_ml"]
    where = f"held-out phantoms (seeds {seed0}..{seed0 + cases - 1})"
    out = {
        "low_confidence_fraction": DomainRange(
            min=0.0, max=min(1.0, upper_bound(lc, 2.0, digits=2)),
            note=f"2 x the largest value ({max(lc):.3f}) on {where}, range there {min(lc):.3f}-{max(lc):.3f}; "
                 "re-calibrate with python -m training.myops.domain"),
        "myocardium_ml": DomainRange(
            min=round(min(myo) / 2, 1), max=round(max(myo) * 2, 1), unit="mL",
            note=f"half the smallest to twice the largest analysed myocardial volume on {where} "
                 f"({min(myo):.1f}-{max(myo):.1f} mL); re-calibrate with python -m training.myops.domain"),
    }
    return out, seen


def main(argv: Sequence[str] | None = None) -> int:
    from export.domains import write_domains

    p = argparse.ArgumentParser(prog="python -m training.myops.domain", description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=Path("pipelines/models/myops-unet"))
    args = p.parse_args(argv)
    write_domains(args.model, input_domain=INPUT_DOMAIN, output_domain={})
    output, seen = calibrate_output_domain(args.model)
    write_domains(args.model, output_domain=output)
    print({k: [round(v, 3) for v in vals] for k, vals in seen.items()})
    print({k: v.describe() for k, v in output.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
