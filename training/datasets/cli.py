"""``cardionode datasets make-phantoms | nnunet-export`` and the helpers other areas use to mount
their commands (a shared ``datasets`` group, forwarding to a module's ``main``)."""
from __future__ import annotations

import argparse
import importlib

__all__ = ["register", "datasets_subparsers", "forward"]


def datasets_subparsers(subparsers: "argparse._SubParsersAction") -> "argparse._SubParsersAction":
    """The sub-command table of ``cardionode datasets`` (created once, shared by every area)."""
    datasets = subparsers.choices.get("datasets")
    if datasets is None:
        datasets = subparsers.add_parser("datasets", help="dataset tools (phantoms, conversions, statistics)")
    for action in datasets._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return datasets.add_subparsers(dest="datasets_command", required=True)


def forward(sub: "argparse._SubParsersAction", name: str, module: str, help_text: str) -> None:
    """``name ARGS...`` runs ``module.main(ARGS)``: the options are exactly the module's own."""

    def run(args: argparse.Namespace) -> int:
        return int(importlib.import_module(module).main(args.rest) or 0)

    # prefix_chars "+": every "-x" option is left to the forwarded module (argparse REMAINDER skips leading options)
    p = sub.add_parser(name, help=help_text, add_help=False, prefix_chars="+")
    p.add_argument("rest", nargs=argparse.REMAINDER, help=f"options of python -m {module} (--help there)")
    p.set_defaults(func=run)


def register(subparsers: "argparse._SubParsersAction") -> None:
    import importlib.util

    for name in ("torch", "nibabel", "nrrd"):  # the train extra (checked without importing torch at every start)
        if importlib.util.find_spec(name) is None:
            raise ImportError(f"No module named {name!r}")
    dsub = datasets_subparsers(subparsers)
    forward(dsub, "make-phantoms", "training.datasets.phantoms",
            "write synthetic phantoms in a published layout: coca, cardiosyntax or myops")
    forward(dsub, "nnunet-export", "training.datasets.nnunet",
            "COCA or MyoPS380 data as an nnU-Net v2 raw dataset (imagesTr, labelsTr, dataset.json)")
