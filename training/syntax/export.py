"""Export family ``syntax`` / ``syntax-artery`` (see export/families.py and docs/syntax.md).

ONNX layout chosen: one model per artery side and fold, backbone + head fused, input
``video`` (1, views, 3, frames, H, W) with a dynamic ``views`` axis (TensorRT profile views 1 / 4 / 16),
output ``output`` (1, 2) = [classification logit, log(1 + artery score)].  Names
``syntax-{left,right}-fold{k}``; each manifest carries its fold's calibration ``{"fold", "a", "b"}``.
The artery classifier is ``syntax-artery``: ``video`` (1, 3, frames, H, W) -> ``logit`` (1, 1).

    cardionode export syntax --checkpoint DIR --out MODELS [--option variant=lstm_mean --option frames=32
        --option size=256x256 --option folds=0,1,2,3,4]
    cardionode export syntax-artery --checkpoint FILE.pt --out MODELS [--option frames=32 --option size=224x224]

``DIR`` is a published-layout folder (full_model_weights/, scaling_coeffs.json); see
:mod:`training.syntax.checkpoints` for the expected file and key names.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping

import torch

from export.families import ExportSpec
from export.provenance import build_provenance
from pipelines.runtime.manifest import Provenance
from pipelines.syntax.preprocess import CineConfig

from .checkpoints import CheckpointError, build_classifier, build_full_model, full_model_path, load_state, read_scaling

__all__ = ["build_export", "build_artery_export", "cine_config_from", "LEFT_MAX", "RIGHT_MIN"]

LEFT_MAX, RIGHT_MIN = 0.10, 0.90
CODE_VERSION = "training.syntax 0.1.0"


def _size(text: str, key: str) -> tuple[int, int]:
    parts = str(text).lower().replace(",", "x").split("x")
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        raise CheckpointError(f"--option {key}={text!r}: expected HxW, e.g. 256x256") from None
    if len(vals) == 1:
        vals *= 2
    if len(vals) != 2 or min(vals) < 1:
        raise CheckpointError(f"--option {key}={text!r}: expected HxW, e.g. 256x256")
    return vals[0], vals[1]


def cine_config_from(options: Mapping[str, str], frames: int, size: tuple[int, int]) -> CineConfig:
    f = int(options.get("frames", frames))
    h, w = _size(options["size"], "size") if "size" in options else size
    return CineConfig(frames=f, height=h, width=w, clip=options.get("clip", "centre"),
                      intensity=options.get("intensity", "1/255"), samples=int(options.get("samples", 0)),
                      filter=options.get("filter", "none"), tophat_px=int(options.get("tophat_px", 0)),
                      subtract=options.get("subtract", "none"), register=options.get("register", "none"),
                      register_px=int(options.get("register_px", 0)))


def _record(checkpoint: Path) -> dict[str, Any] | None:
    """The ``<checkpoint>.run.json`` our training writes beside each published-layout file (None for
    imported published weights, which have none)."""
    side = Path(str(checkpoint) + ".run.json")
    if not side.is_file():
        return None
    try:
        return json.loads(side.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{side}: unreadable run record ({exc})") from None


def _provenance(options: Mapping[str, Any], default_source: str, checkpoint: Path | None = None,
                fold: int | None = None) -> Provenance:
    """Shared export provenance (export/provenance.py) from the checkpoint's run record and the options;
    each fold model records its own run (so a re-exported fold says which run made it)."""
    record = _record(checkpoint) if checkpoint is not None else None
    opts = dict(options)
    opts.setdefault("code_version", (record or {}).get("code_version") or CODE_VERSION)
    prov = build_provenance(record, opts, default_trained_on=default_source,
                            default_notes=str(options.get("notes", "")))
    if checkpoint is not None:
        data = dict(prov.training_data)
        data["checkpoint"] = Path(checkpoint).name
        if fold is not None:
            data["fold"] = fold
        prov = dataclasses.replace(prov, training_data=data)
    return prov


def build_export(checkpoint: Path, args: argparse.Namespace) -> list[ExportSpec]:
    """One ExportSpec per (side, fold) from a published-layout folder."""
    opts: dict[str, str] = dict(getattr(args, "options", None) or {})
    root = Path(checkpoint)
    if root.is_file():
        root = root.parent.parent if root.parent.name == "full_model_weights" else root.parent
    variant = opts.get("variant", "lstm_mean")
    folds = [int(f) for f in opts.get("folds", "0,1,2,3,4").split(",")]
    sides = opts.get("sides", "left,right").split(",")
    cfg = cine_config_from(opts, 32, (256, 256))
    prefix = opts.get("name_prefix", "syntax")
    scaling = read_scaling(root, opts.get("scaling_file", "scaling_coeffs.json"))
    default_source = f"CardioSyntax v2 published weights ({variant}) imported from {root.name}"
    specs = []
    f, h, w = cfg.frames, cfg.height, cfg.width
    for side in sides:
        for k in folds:
            path = full_model_path(root, side, k, variant)
            model = build_full_model(load_state(path), variant, str(path))
            if k not in scaling:
                raise CheckpointError(f"{root}: scaling coefficients have no fold{k}")
            widths = model.model.widths
            pre = cfg.to_manifest() | {"artery": side, "fold": k, "variant": variant,
                                       "views_order": "SeriesInstanceUID, file name",
                                       "widths": list(widths),
                                       "reduced": list(widths) != [64, 128, 256, 512],
                                       "output": "[classification logit, log(1 + artery SYNTAX)]; "
                                                 "score = max(0, exp(x) - 1)"}
            g = torch.Generator().manual_seed(k)
            ex = (torch.randn(1, 2, 3, f, h, w, generator=g),)
            specs.append(ExportSpec(
                module=model.eval(), example_inputs=ex, name=f"{prefix}-{side}-fold{k}",
                task="syntax-artery-regression",
                input_names=["video"], output_names=["output"],
                provenance=_provenance(opts, default_source, path, k),
                dynamic_axes={"video": {1: "views"}}, preprocessing=pre,
                calibration={"fold": k, "a": scaling[k]["a"], "b": scaling[k]["b"],
                             "formula": "per fold a*(L+R)+b, averaged over folds, clamped >= 0"},
                check_inputs=[(torch.randn(1, 1, 3, f, h, w, generator=g),),
                              (torch.randn(1, 3, 3, f, h, w, generator=g),)],
                trt_profile={"video": {"min": [1, 1, 3, f, h, w], "opt": [1, 4, 3, f, h, w],
                                       "max": [1, 16, 3, f, h, w]}},
                atol=float(opts.get("atol", 1e-4)), rtol=float(opts.get("rtol", 1e-3))))
    return specs


def build_artery_export(checkpoint: Path, args: argparse.Namespace) -> list[ExportSpec]:
    """The artery classifier (.pt with ``model.*`` r3d_18 names, fc = Linear(512, 1))."""
    opts: dict[str, str] = dict(getattr(args, "options", None) or {})
    path = Path(checkpoint)
    if path.is_dir():
        cands = sorted((path / "artery_weights").glob("*.pt")) or sorted(path.glob("*.pt"))
        if not cands:
            raise CheckpointError(f"{path}: no artery classifier .pt (looked in artery_weights/ and the folder)")
        path = cands[0]
    model = build_classifier(load_state(path), str(path))
    cfg = cine_config_from(opts, 32, (224, 224))
    f, h, w = cfg.frames, cfg.height, cfg.width
    pre = cfg.to_manifest() | {"left_max": LEFT_MAX, "right_min": RIGHT_MIN, "widths": list(model.model.widths),
                               "reduced": list(model.model.widths) != [64, 128, 256, 512],
                               "output": "logit; sigmoid <= left_max: left, >= right_min: right, else other"}
    prov = _provenance(opts, f"artery classifier imported from {path.name}", path)
    g = torch.Generator().manual_seed(0)
    return [ExportSpec(module=model.eval(), example_inputs=(torch.randn(1, 3, f, h, w, generator=g),),
                       name=opts.get("name", "syntax-artery"), task="syntax-artery-classification",
                       input_names=["video"], output_names=["logit"], provenance=prov, preprocessing=pre,
                       labels=[{"value": 0, "name": "left", "code": None}, {"value": 1, "name": "right", "code": None}],
                       atol=float(opts.get("atol", 1e-4)), rtol=float(opts.get("rtol", 1e-3)))]
