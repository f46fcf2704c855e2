"""The MyoPS checkpoint file: written after training, read by evaluation and export.

One ``torch.save`` dict: ``state_dict`` and ``model_config`` (to rebuild the U-Net), ``labels``,
``preprocess``, ``train_config``, ``split``, ``history``, ``metrics``, ``trained_on``, ``synthetic``.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.myops.preprocess import PreprocessConfig

from .labels import LabelConvention

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = ["save_checkpoint", "load_checkpoint"]


def save_checkpoint(path: Path, model, *, labels: LabelConvention, preprocess: PreprocessConfig,
                    train_cfg: DataclassInstance, split: dict, history: list, metrics: dict | None = None,
                    trained_on: str = "", synthetic: bool = False) -> Path:
    """Write the weights with everything export and evaluation need to rebuild and describe the model."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({
        "state_dict": model.state_dict(), "model_config": model.config,
        "labels": dataclasses.asdict(labels), "preprocess": preprocess.to_dict(),
        "train_config": dataclasses.asdict(train_cfg), "split": split, "history": history,
        "metrics": metrics or {}, "trained_on": trained_on, "synthetic": synthetic,
    }, path)
    return path


def load_checkpoint(path: Path):
    """(model in eval mode, checkpoint dict) from a run folder (its best.pt) or a checkpoint file."""
    from training.runs.checkpoint import read_checkpoint

    from .model import UNet2D

    ckpt = read_checkpoint(path)
    model = UNet2D(**ckpt["model_config"])
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, ckpt
