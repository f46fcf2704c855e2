"""Export a calcium checkpoint to ONNX through the shared export path (export.onnx_export).

Static input (8, 3, 128, 128) float32 -> logits (8, 9, 128, 128): TensorRT-friendly, opset 17.
The manifest carries the preprocessing (pipelines.calcium.preprocess.PreprocessConfig), the 8 COCA
labels with their SNOMED CT codes, and the provenance given by the caller.
"""
from __future__ import annotations

import argparse
import datetime as dt
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


def export_checkpoint(checkpoint: Path, out_dir: Path, *, version: str, trained_on: str, synthetic: bool,
                      metrics: Mapping[str, Any], notes: str, name: str = MODEL_NAME):
    from export.onnx_export import export_onnx
    from pipelines.runtime import Provenance

    from .evaluate import load_checkpoint

    model, cfg, ck = load_checkpoint(checkpoint)
    torch.manual_seed(0)
    example = torch.randn(BATCH, cfg.channels, cfg.tile, cfg.tile)
    return export_onnx(
        model, (example,), out_dir, name=name, version=version, task="segmentation",
        input_names=["image"], output_names=["logits"], dynamic_axes=None,
        preprocessing=cfg.to_dict(), labels=label_specs(), calibration={},
        provenance=Provenance(trained_on=trained_on, synthetic=synthetic, date=dt.date.today().isoformat(),
                              code_version=code_version(), metrics=dict(metrics), notes=notes),
        opset=17, atol=1e-3, rtol=1e-3, verbose=False,
    )


def export_spec(checkpoint: Path, *, version: str | None = None):
    """An :class:`export.families.ExportSpec` for a calcium checkpoint (provenance/metrics from the checkpoint)."""
    from export.families import ExportSpec
    from pipelines.runtime import Provenance

    from .evaluate import load_checkpoint

    model, cfg, ck = load_checkpoint(checkpoint)
    torch.manual_seed(0)
    example = torch.randn(BATCH, cfg.channels, cfg.tile, cfg.tile)
    return ExportSpec(
        module=model, example_inputs=(example,), name=MODEL_NAME, task="segmentation", input_names=["image"],
        output_names=["logits"],
        provenance=Provenance(trained_on=str(ck.get("trained_on", "unknown data")), synthetic=bool(ck.get("synthetic", False)),
                              date=dt.date.today().isoformat(), code_version=code_version(),
                              metrics=dict(ck.get("metrics", {})), notes=str(ck.get("notes", ""))),
        dynamic_axes=None, preprocessing=cfg.to_dict(), labels=label_specs(), calibration={},
        version=version or ck.get("version"), atol=1e-3, rtol=1e-3,
    )


def build_export(checkpoint: Path, args: argparse.Namespace) -> list[Any]:
    """``cardionode export calcium --checkpoint X --out DIR`` (export/families.py): one static-shape U-Net."""
    return [export_spec(Path(checkpoint), version=getattr(args, "version", None))]
