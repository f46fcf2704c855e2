"""``cardionode datasets coca-to-yolo | coca-stats`` and ``cardionode calcium train | evaluate``.

Mount with ``register(subparsers)`` from node/cli.py.  ``calcium train`` / ``evaluate`` forward their
arguments to the module's own ``main`` (so ``--config`` files and the options are exactly those of
``python -m training.calcium.train`` / ``.evaluate``).
"""
from __future__ import annotations

import argparse

from training.datasets.cli import datasets_subparsers, forward

__all__ = ["register"]


def register(subparsers: "argparse._SubParsersAction") -> None:
    from . import stats, yolo

    dsub = datasets_subparsers(subparsers)
    yolo.add_arguments(dsub.add_parser("coca-to-yolo", help="COCA NRRD + CT -> YOLO images, labels, dataset.yaml"))
    stats.add_arguments(dsub.add_parser("coca-stats", help="COCA Table 1 for a COCA-format folder"))
    calcium = subparsers.add_parser("calcium", help="calcium model training and evaluation")
    csub = calcium.add_subparsers(dest="calcium_command", required=True)
    forward(csub, "train", "training.calcium.train", "train the calcium U-Net")
    forward(csub, "evaluate", "training.calcium.evaluate", "Dice, lesion detection, Agatston ICC / kappa")
