"""``cardionode export myops --checkpoint <ckpt> --out <models dir>``: the checkpoint as one ONNX model.

Model ``myops-unet`` (override with ``--option name=...``): input ``image`` (N, 3, 128, 128) float32
in [0, 255] (bSSFP, LGE, T2w after :mod:`pipelines.myops.preprocess`), output ``logits``
(N, K, 128, 128).  Only the batch axis is dynamic (TensorRT-friendly); opset 17.  The manifest
carries the preprocessing parameters, the label map with SNOMED CT codes and the checkpoint's
provenance and held-out metrics.
"""
from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import torch

from export.families import ExportSpec
from export.provenance import build_provenance
from pipelines.myops import labels as cls
from pipelines.runtime.manifest import LabelSpec

from .checkpoint import load_checkpoint

__all__ = ["build_export", "label_specs", "code_version", "MODEL_NAME"]

MODEL_NAME = "myops-unet"
_MAO = {"value": "49755003", "scheme": "SCT", "meaning": "Morphologically abnormal structure"}
_ANAT = {"value": "123037004", "scheme": "SCT", "meaning": "Anatomical structure"}


def label_specs(num_classes: int) -> list[LabelSpec]:
    specs = [
        LabelSpec(cls.BACKGROUND, "background"),
        LabelSpec(cls.MYOCARDIUM, "normal myocardium", {"value": "74281007", "scheme": "SCT", "meaning": "Myocardium"},
                  _ANAT),
        LabelSpec(cls.EDEMA, "edema", {"value": "79654002", "scheme": "SCT", "meaning": "Edema"}, _MAO),
        LabelSpec(cls.SCAR, "scar", {"value": "12402003", "scheme": "SCT", "meaning": "Scar tissue"}, _MAO),
        LabelSpec(cls.LV_POOL, "left ventricular blood pool"),
        LabelSpec(cls.RV_POOL, "right ventricular blood pool"),
    ]
    return specs[:num_classes]


def code_version() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def build_export(checkpoint: Path, args: argparse.Namespace) -> list[ExportSpec]:
    model, ckpt = load_checkpoint(Path(checkpoint))
    options = dict(getattr(args, "options", {}) or {})
    cfg = ckpt["model_config"]
    roi = int(ckpt["preprocess"]["roi_size"])
    example = torch.rand(2, cfg["in_channels"], roi, roi) * 255.0
    check = [(torch.rand(1, cfg["in_channels"], roi, roi) * 255.0,),
             (torch.rand(5, cfg["in_channels"], roi, roi) * 255.0,)]
    split = ckpt.get("split") or {}
    synthetic_default = bool(ckpt.get("synthetic"))
    record = _record(ckpt, Path(checkpoint))
    provenance = build_provenance(
        record, options,
        default_trained_on=ckpt.get("trained_on") or "unknown",
        default_notes=(("Held-out Dice on synthetic phantoms, not clinical accuracy. " if synthetic_default else "")
                       + f"Split {split.get('mode')} seed {split.get('seed')}: {len(split.get('train', []))} train / "
                         f"{len(split.get('test', []))} held-out cases."))
    pre = dict(ckpt["preprocess"])
    pre.update({"input_range": [0, 255], "implementation": "pipelines.myops.preprocess"})
    return [ExportSpec(
        module=model, example_inputs=(example,), name=options.get("name", MODEL_NAME),
        task="segmentation", input_names=["image"], output_names=["logits"],
        dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}},
        preprocessing=pre, labels=label_specs(cfg["num_classes"]),
        calibration={}, provenance=provenance, check_inputs=check,
        trt_profile={"image": {"min": [1, cfg["in_channels"], roi, roi], "opt": [4, cfg["in_channels"], roi, roi],
                               "max": [16, cfg["in_channels"], roi, roi]}},
        version=getattr(args, "version", None) or ckpt.get("version"),
        atol=1e-3, rtol=1e-3,
    )]


def _record(ckpt: dict, path: Path) -> dict:
    """What the run recorded (training data, config, code version, metrics and how they were computed).

    Checkpoints written before the run layer carry only ``trained_on`` / ``synthetic``: a ``synthetic``
    flag then counts as generated training data (it can only be made stricter, never dropped)."""
    data = dict(ckpt.get("training_data") or {})
    if ckpt.get("synthetic") and not data.get("generated"):
        data = {**data, "generated": True, "sources": data.get("sources") or [
            {"layout": "phantoms", "path": ckpt.get("trained_on", ""), "generated": True}]}
    return {"training_data": data, "config": ckpt.get("config"), "code_version": ckpt.get("code_version"),
            "metrics": ckpt.get("metrics") or {}, "metrics_method": ckpt.get("metrics_method"),
            "run": str(path.parent if path.is_file() else path)}
