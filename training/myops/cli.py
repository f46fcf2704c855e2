"""``cardionode myops train | evaluate | make-bundled`` (mounted by node/cli.py with the train extra).

Each forwards its arguments to the module's own ``main``: the options are exactly those of
``python -m training.myops.<module>`` (docs/myops.md, docs/training.md).
"""
from __future__ import annotations

import argparse

from training.datasets.cli import forward

__all__ = ["register"]


def register(subparsers: "argparse._SubParsersAction") -> None:
    myops = subparsers.add_parser("myops", help="MyoPS (myocardial scar / edema) training and evaluation")
    sub = myops.add_subparsers(dest="myops_command", required=True)
    forward(sub, "train", "training.myops.train", "train the MyoPS U-Net on a MyoPS380-format folder")
    forward(sub, "evaluate", "training.myops.evaluate", "Dice of scar, scar + edema, myocardium on held-out cases")
    forward(sub, "make-bundled", "training.myops.make_bundled", "regenerate the bundled phantom demo model")
