"""``cardionode syntax train | evaluate | make-bundled`` (mounted by node/cli.py with the train extra).

Each subcommand forwards its arguments to the module's own ``main`` so that the options are exactly
those of ``python -m training.syntax.<module>`` (documented in docs/syntax.md).
"""
from __future__ import annotations

import argparse

from training.datasets.cli import forward

__all__ = ["register"]

_COMMANDS = {
    "train": ("training.syntax.train", "stage 1 backbone / stage 2 head / artery classifier / calibration"),
    "evaluate": ("training.syntax.evaluate", "Pearson r and balanced accuracy (> 22), raw and calibrated, plots"),
    "make-bundled": ("training.syntax.make_bundled", "regenerate the bundled phantom demo models"),
}


def register(subparsers: "argparse._SubParsersAction") -> None:
    syntax = subparsers.add_parser("syntax", help="SYNTAX (CardioSyntax v2) training and evaluation")
    sub = syntax.add_subparsers(dest="syntax_command", required=True)
    for name, (module, help_text) in _COMMANDS.items():
        forward(sub, name, module, help_text)
