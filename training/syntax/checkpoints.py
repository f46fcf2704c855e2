"""Import of checkpoints in the published layout (and ours, which uses the same names).

Expected files (CardioSyntax v2 repository layout)::

    backbone_weights/{Left,Right}BinSyntax_R3D_full_fold{00..04}.pt        stage 1, plain state_dict
    full_model_weights/{Left,Right}BinSyntax_R3D_fold{00..04}_{variant}_post_best.pt   stage 2
    scaling_coeffs.json (or scaling_coeffs/scaling_coeffs.json)           {"fold{k}": {"a": .., "b": ..}}

Key names: backbone ``model.stem.*``, ``model.layer{1..4}.*``, ``model.fc.{weight,bias}``; full model the
same without ``model.fc.*`` plus the head (``lstm.weight_ih_l0`` (4h x 512), ``lstm.weight_hh_l0`` (4h x 2),
``lstm.bias_{ih,hh}_l0``, ``lstm.weight_hr_l0`` (2 x h) for lstm_*).  A ``state_dict`` nested in a
``{"state_dict": ...}`` Lightning checkpoint is accepted too.  The architecture (layer widths, LSTM / GRU
hidden size) is read from the tensor shapes, so full-size published weights and our reduced phantom
models load through the same code, always with ``strict=True``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import torch

from .model import ArteryClassifier, SyntaxBackbone, SyntaxMultiView

__all__ = ["CheckpointError", "load_state", "infer_widths", "build_full_model", "build_backbone", "build_classifier",
           "read_scaling", "full_model_path", "backbone_path"]


class CheckpointError(ValueError):
    """A checkpoint is missing or does not fit our modules (message names the file and keys)."""


def load_state(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: not a state_dict of tensors")
    return dict(obj)


def infer_widths(state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> tuple[int, int, int, int]:
    try:
        return (int(state["model.stem.0.weight"].shape[0]),) + tuple(
            int(state[f"model.layer{i}.0.conv1.0.weight"].shape[0]) for i in (2, 3, 4))  # type: ignore[return-value]
    except KeyError as exc:
        raise CheckpointError(f"{source}: no key {exc.args[0]!r}; expected torchvision r3d_18 names under 'model.' "
                              f"(found e.g. {sorted(state)[:3]})") from None


def _strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{source}: does not fit {type(model).__name__}: {str(exc)[:600]}") from None
    model.eval()


def build_backbone(state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> SyntaxBackbone:
    nc = int(state["model.fc.weight"].shape[0]) if "model.fc.weight" in state else 2
    m = SyntaxBackbone(nc, infer_widths(state, source))
    _strict(m, state, source)
    return m


def build_full_model(state: Mapping[str, torch.Tensor], variant: str, source: str = "checkpoint") -> SyntaxMultiView:
    widths = infer_widths(state, source)
    hidden, nc = 128, 2
    if variant.startswith("lstm"):
        if "lstm.weight_hr_l0" not in state:
            raise CheckpointError(f"{source}: variant {variant} needs 'lstm.weight_hr_l0' (LSTM with proj_size)")
        nc, hidden = (int(v) for v in state["lstm.weight_hr_l0"].shape)
    elif variant.startswith("gru"):
        hidden = int(state["gru.weight_hh_l0"].shape[1])
        nc = int(state["fc.weight"].shape[0])
    elif variant == "mean_out":
        nc = int(state["model.fc.weight"].shape[0])
    elif "fc.weight" in state:
        nc = int(state["fc.weight"].shape[0])
    ff = int(state["encoder.linear1.weight"].shape[0]) if "encoder.linear1.weight" in state else (
        int(state["encoder.layers.0.linear1.weight"].shape[0]) if "encoder.layers.0.linear1.weight" in state else 128)
    heads = 4 if widths[3] % 4 == 0 else 1
    m = SyntaxMultiView(variant, nc, widths, hidden=hidden, heads=heads, ff=ff)
    _strict(m, state, source)
    return m


def build_classifier(state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> ArteryClassifier:
    m = ArteryClassifier(infer_widths(state, source))
    _strict(m, state, source)
    return m


def backbone_path(root: Path, artery: str, fold: int) -> Path:
    return Path(root) / "backbone_weights" / f"{artery.capitalize()}BinSyntax_R3D_full_fold{fold:02d}.pt"


def full_model_path(root: Path, artery: str, fold: int, variant: str) -> Path:
    return (Path(root) / "full_model_weights"
            / f"{artery.capitalize()}BinSyntax_R3D_fold{fold:02d}_{variant}_post_best.pt")


def read_scaling(root: Path, name: str = "scaling_coeffs.json") -> dict[int, dict[str, float]]:
    """Calibration coefficients per fold, from ``root/name`` or ``root/scaling_coeffs/name``."""
    for cand in (Path(root) / name, Path(root) / "scaling_coeffs" / name):
        if cand.is_file():
            data = json.loads(cand.read_text())
            out = {}
            for key, val in data.items():
                if not key.startswith("fold") or not isinstance(val, Mapping) or not {"a", "b"} <= set(val):
                    raise CheckpointError(f"{cand}: key {key!r}: expected 'fold<k>': {{'a': .., 'b': ..}}")
                out[int(key[4:])] = {"a": float(val["a"]), "b": float(val["b"])}
            return out
    raise CheckpointError(f"{root}: no {name} (looked in {root} and {Path(root) / 'scaling_coeffs'})")
