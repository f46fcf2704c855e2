"""Write a model's accepted input ranges and output-unusualness ranges into its manifest.

The ranges (``input_domain``, ``output_domain``: :class:`pipelines.runtime.manifest.DomainRange`)
describe what the model was trained for and how unusual its own output may be before a pipeline
abstains (:mod:`pipelines.qc`).  Input ranges come from the training generator's settings; output
ranges are calibrated by running the exported model on held-out phantoms, so they are written after
the export, into the manifest beside ``model.onnx`` (the ONNX file and its sha256 are untouched).
Each family's ``make_bundled`` calls :func:`write_domains`; ``python -m training.<family>.domain``
re-calibrates an installed model without retraining.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping

from pipelines.runtime.manifest import DomainRange, ModelManifest

__all__ = ["write_domains", "upper_bound"]


def upper_bound(observed: list[float], margin: float, floor: float = 0.0, digits: int = 3) -> float:
    """Accepted maximum of a score: ``margin`` x the largest value on the calibration phantoms (at
    least ``floor``), rounded up to ``digits`` decimals."""
    if not observed:
        raise ValueError("no calibration values")
    top = max(max(observed) * margin, floor)
    scale = 10 ** digits
    return -(-round(top * scale, 6) // 1) / scale


def write_domains(model_dir: str | Path, *, input_domain: Mapping[str, DomainRange] | None = None,
                  output_domain: Mapping[str, DomainRange] | None = None) -> ModelManifest:
    """Replace the given domain(s) in ``model_dir/manifest.json`` (validated, written atomically)."""
    manifest = ModelManifest.load(model_dir)
    changes = {}
    if input_domain is not None:
        changes["input_domain"] = dict(input_domain)
    if output_domain is not None:
        changes["output_domain"] = dict(output_domain)
    updated = dataclasses.replace(manifest, **changes)
    updated.save(Path(model_dir) / "manifest.json")
    return updated
