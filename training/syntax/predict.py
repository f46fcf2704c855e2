"""SYNTAX scores from trained models: the fold models of one side loaded, their predictions per study.

Shared by the calibration stage of training, the evaluation and make_bundled, so that all three turn
model outputs into scores the same way (the node does the same with ONNX Runtime in pipelines/syntax).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from pipelines.syntax.preprocess import CineConfig, preprocess_cine

from .checkpoints import build_full_model, full_model_path, load_state
from .data import StudyRecord, load_video
from .model import SyntaxMultiView

__all__ = ["invert", "load_side_models", "predict_studies"]


def invert(reg: np.ndarray | torch.Tensor) -> np.ndarray:
    """Artery score from the regression output: max(0, exp(x) - 1)."""
    x = reg.detach().cpu().numpy() if isinstance(reg, torch.Tensor) else np.asarray(reg)
    return np.maximum(0.0, np.expm1(x.astype(np.float64)))


def load_side_models(model_dir: Path, side: str, folds: Sequence[int], variant: str) -> list[SyntaxMultiView]:
    """The full models of ``side`` for ``folds`` from ``model_dir`` (a ``full_model_weights`` folder or
    any folder holding files of the same names)."""
    models = []
    for k in folds:
        path = (full_model_path(Path(model_dir).parent, side, k, variant)
                if Path(model_dir).name == "full_model_weights"
                else Path(model_dir) / full_model_path(Path("."), side, k, variant).name)
        models.append(build_full_model(load_state(path), variant, str(path)))
    return models


@torch.no_grad()
def predict_studies(model: SyntaxMultiView, studies: Sequence[StudyRecord], side: str, cfg: CineConfig,
                    device: torch.device | str = "cpu") -> np.ndarray:
    """One side's score per study: the model over that side's cines (0 when the study has none)."""
    model.eval().to(device)
    out = []
    for s in studies:
        vids = sorted(s.side(side), key=lambda v: (v.series_uid, v.path.name))
        if not vids:
            out.append(0.0)
            continue
        x = np.stack([preprocess_cine(load_video(v.path), cfg) for v in vids])
        y = model(torch.from_numpy(x)[None].to(device)).float().cpu()
        out.append(float(invert(y[0, 1])))
    return np.asarray(out)
