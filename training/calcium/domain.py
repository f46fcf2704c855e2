"""The calcium model's accepted ranges: inputs from the phantom generator, output score calibrated on held-out phantoms.

    python -m training.calcium.domain --model pipelines/models/calcium-unet2d   # re-calibrate, write manifest

Input ranges (:data:`INPUT_DOMAIN`) are what :func:`training.calcium.data.phantom_case` generates for
training (generator 2.x): a quarter plain (1.2-1.6 mm pixels on 256 x 256, 1.5/2/3 mm slices, about 168 mm),
the rest widened (256-512 matrices over a 300-460 mm field of view, i.e. 0.59-1.8 mm pixels; slices
0.5-3 mm; 150-220 mm of scan, at most 140 slices), non-contrast, written at 120 kV.  Scan lengths below
140 mm (thin-slice phantoms capped at 140 slices) do not always hold the whole heart and are not accepted.  The output
score (``low_confidence_fraction``, :mod:`pipelines.qc.scores`) is measured with the exported ONNX
model on held-out phantoms 1000-1015; the accepted maximum is twice the largest value seen there.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from pipelines.runtime.manifest import DomainRange

__all__ = ["INPUT_DOMAIN", "calibrate_output_domain", "main"]

_GEN = "training generator (training.calcium.data.phantom_case)"

INPUT_DOMAIN: dict[str, DomainRange] = {
    "modality": DomainRange(one_of=("CT",), note="chest CT phantoms"),
    "contrast": DomainRange(one_of=("none",), note="non-contrast phantoms; Agatston scoring needs non-contrast CT"),
    "pixel_spacing_mm": DomainRange(min=0.58, max=1.8, unit="mm",
                                    note=f"{_GEN}: 300-460 mm over 256-512 pixels (0.586-1.797 mm); plain 1.2-1.6 mm"),
    "slice_thickness_mm": DomainRange(min=0.5, max=3.0, unit="mm", note=f"{_GEN}: 0.5-3 mm"),
    "kvp": DomainRange(min=120, max=120, unit="kV", note="phantoms are written at 120 kV, the Agatston reference"),
    "z_coverage_mm": DomainRange(min=140, max=220, unit="mm",
                                 note=f"{_GEN}: 150-220 mm of scan (at most 140 slices), plain about 168 mm; "
                                      "below 140 mm the heart is not always fully inside"),
    "field_of_view_mm": DomainRange(min=300, max=460, unit="mm", note=f"{_GEN}: 300-460 mm"),
}

#: accepted maximum = MARGIN x the largest value on the calibration phantoms
MARGIN = 2.0
CALIBRATION_SEEDS = "1000-1015"


def calibrate_output_domain(model_dir: Path, seeds: Sequence[int]) -> tuple[dict[str, DomainRange], list[float]]:
    """Run the exported model (ONNX Runtime) on held-out phantoms; the accepted range of the score."""
    from export.domains import upper_bound
    from pipelines.calcium.inference import segment_calcium
    from pipelines.qc.scores import ConfidenceTally

    from .evaluate import onnx_predictor, phantom_cases

    predict, cfg = onnx_predictor(Path(model_dir))
    values = []
    for _, hu, _, zpos, spacing_yx in phantom_cases(seeds):
        tally = ConfidenceTally()
        segment_calcium(hu, zpos, spacing_yx, predict, cfg, tally=tally)
        values.append(tally.fraction)
    hi = min(1.0, upper_bound(values, MARGIN, digits=2))
    note = (f"{MARGIN:g} x the largest value ({max(values):.3f}) on held-out phantoms {seeds[0]}-{seeds[-1]} "
            f"(ONNX model; range there {min(values):.3f}-{max(values):.3f}); re-calibrate with "
            "python -m training.calcium.domain")
    return {"low_confidence_fraction": DomainRange(min=0.0, max=hi, note=note)}, values


def main(argv: Sequence[str] | None = None) -> int:
    from export.domains import write_domains

    from .evaluate import parse_seeds

    p = argparse.ArgumentParser(prog="python -m training.calcium.domain", description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=Path("pipelines/models/calcium-unet2d"))
    p.add_argument("--seeds", default=CALIBRATION_SEEDS, help="held-out phantom seeds to calibrate on")
    args = p.parse_args(argv)
    output, values = calibrate_output_domain(args.model, parse_seeds(args.seeds))
    m = write_domains(args.model, input_domain=INPUT_DOMAIN, output_domain=output)
    print(f"{m.name} {m.version}: low_confidence_fraction on phantoms {[round(v, 4) for v in values]} -> "
          f"accepted {output['low_confidence_fraction'].describe()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
