"""``cardionode datasets coca-to-yolo | coca-stats`` and ``cardionode calcium train | evaluate``.

Mount with ``register(subparsers)`` from node/cli.py; every handler is ``args.func(args) -> int``.
"""
from __future__ import annotations

import argparse

__all__ = ["register"]


def register(subparsers: "argparse._SubParsersAction") -> None:
    from . import evaluate, stats, train, yolo

    existing = subparsers.choices.get("datasets")
    datasets = existing if existing is not None else subparsers.add_parser("datasets", help="dataset tools")
    dsub = None
    for action in datasets._actions:  # reuse a 'datasets' group another area created
        if isinstance(action, argparse._SubParsersAction):
            dsub = action
    if dsub is None:
        dsub = datasets.add_subparsers(dest="datasets_command", required=True)
    yolo.add_arguments(dsub.add_parser("coca-to-yolo", help="COCA NRRD -> YOLO labels (as the published script)"))
    stats.add_arguments(dsub.add_parser("coca-stats", help="COCA Table 1 for a COCA-format folder"))
    calcium = subparsers.add_parser("calcium", help="calcium model training and evaluation")
    csub = calcium.add_subparsers(dest="calcium_command", required=True)
    train.build_parser(csub.add_parser("train", help="train the calcium U-Net"))
    evaluate.build_parser(csub.add_parser("evaluate", help="Dice, lesion detection, Agatston ICC / kappa"))
