"""Export a calcium checkpoint to ONNX through the shared export path (export.onnx_export).

Static input (8, 3, 128, 128) float32 -> logits (8, 9 or 10, 128, 128): background + 8 classes (+ the
heart/aorta region logit of models trained with one, ``preprocessing.region_channel``); TensorRT-friendly, opset 17.
The manifest carries the preprocessing (pipelines.calcium.preprocess.PreprocessConfig), the 8 COCA
labels with their SNOMED CT codes, and the provenance given by the caller.
"""
from __future__ import annotations

import argparse
import dataclasses
import subprocess
from pathlib import Path
from typing import Any, Mapping

import torch

from pipelines.calcium.labels import CLASSES
from pipelines.outputs import codes

__all__ = ["MODEL_NAME", "BATCH", "export_checkpoint", "build_export", "label_specs", "code_version"]

MODEL_NAME = "calcium-unet2d"
BATCH = 8


def code_version() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def label_specs() -> list[dict[str, Any]]:
    cat = codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE
    out: list[dict[str, Any]] = [{"value": 0, "name": "Background", "code": None}]
    for c in CLASSES:
        out.append({"value": c.value, "name": c.name,
                    "code": {"value": codes.PATHOLOGIC_CALCIFICATION.value, "scheme": "SCT",
                             "meaning": codes.PATHOLOGIC_CALCIFICATION.meaning},
                    "category": {"value": cat.value, "scheme": "SCT", "meaning": cat.meaning}})
    return out


def checkpoint_record(ck: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """What the run recorded: training data, configuration, code version, metrics and how they were computed.

    Checkpoints from before the run layer carry only ``trained_on`` / ``synthetic``; a ``synthetic`` flag then
    counts as generated training data (so it can only be made stricter by an export option, never dropped)."""
    data = dict(ck.get("training_data") or {})
    if ck.get("synthetic") and not data.get("generated"):
        data = {**data, "generated": True, "sources": data.get("sources") or [
            {"layout": "calcium phantoms", "path": str(ck.get("trained_on", "")), "generated": True}]}
    return {"training_data": data, "config": ck.get("config"), "code_version": ck.get("code_version"),
            "metrics": dict(ck.get("metrics") or {}), "metrics_method": ck.get("metrics_method"),
            "run": str(path.parent if path.is_file() else path)}


def export_checkpoint(checkpoint: Path, out_dir: Path, *, version: str, trained_on: str, synthetic: bool,
                      metrics: Mapping[str, Any], notes: str, name: str = MODEL_NAME,
                      training_data: Mapping[str, Any] | None = None):
    """Export with explicit provenance (make_bundled); the run's own record still decides "generated"."""
    from export.onnx_export import export_onnx

    spec = export_spec(checkpoint, version=version, options={
        "trained_on": trained_on, "synthetic": str(synthetic).lower(), "notes": notes})
    prov = dataclasses.replace(spec.provenance, metrics=dict(metrics))
    if training_data:  # what the caller knows (generator, version) on top of the run's record
        prov = dataclasses.replace(prov, training_data={**dict(prov.training_data), **dict(training_data)})
    kwargs = spec.export_kwargs()
    kwargs.update(provenance=prov, name=name)
    return export_onnx(spec.module, spec.example_inputs, out_dir, version=version, opset=17, verbose=False, **kwargs)


def export_spec(checkpoint: Path, *, version: str | None = None, options: Mapping[str, Any] | None = None):
    """An :class:`export.families.ExportSpec` for a calcium checkpoint (best.pt, last.pt, a run folder or an
    older model.pt); provenance from the run's record and the ``--option`` values (export/provenance.py)."""
    from export.families import ExportSpec
    from export.provenance import build_provenance

    from .evaluate import load_checkpoint

    checkpoint = Path(checkpoint)
    model, cfg, ck = load_checkpoint(checkpoint)
    torch.manual_seed(0)
    example = torch.randn(BATCH, cfg.channels, cfg.tile, cfg.tile)
    prov = build_provenance(checkpoint_record(ck, checkpoint), dict(options or {}),
                            default_trained_on=str(ck.get("trained_on", "unknown data")),
                            default_notes=str(ck.get("notes", "")))
    return ExportSpec(
        module=model, example_inputs=(example,), name=MODEL_NAME, task="segmentation", input_names=["image"],
        output_names=["logits"], provenance=prov, dynamic_axes=None, preprocessing=cfg.to_dict(),
        labels=label_specs(), calibration={}, version=version or ck.get("version"), atol=1e-3, rtol=1e-3,
    )


def build_export(checkpoint: Path, args: argparse.Namespace) -> list[Any]:
    """``cardionode export calcium --checkpoint X --out DIR [--option synthetic=.. trained_on=.. metrics_file=..]``
    (export/families.py): one static-shape U-Net."""
    return [export_spec(Path(checkpoint), version=getattr(args, "version", None),
                        options=dict(getattr(args, "options", None) or {}))]
