"""Model families the ``cardionode export`` command knows, and the contract each family implements.

A family is ``"module:function"``; the function is imported only when that
family is exported (so the CLI does not import every training package):

    def build_export(checkpoint: Path, args: argparse.Namespace) -> list[ExportSpec]

It loads the checkpoint into the torch module(s) and returns one
:class:`ExportSpec` per ONNX model to write (the SYNTAX family returns one per
artery side and fold).  ``args`` carries the CLI options (``args.version``,
``args.fp16``, ``args.simplify``, ``args.options`` = dict from repeated
``--option KEY=VALUE``).  See docs/models.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from pipelines.runtime.manifest import LabelSpec, Provenance

__all__ = ["FAMILIES", "ExportSpec", "UnknownFamilyError", "resolve_family"]

#: family name -> "module:build_export function"
FAMILIES: dict[str, str] = {
    "syntax": "training.syntax.export:build_export",
    "syntax-artery": "training.syntax.export:build_artery_export",
    "calcium": "training.calcium.export:build_export",
    "myops": "training.myops.export:build_export",
}


class UnknownFamilyError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


@dataclasses.dataclass
class ExportSpec:
    """One model to export: the module, example inputs, tensor names and the manifest fields.

    ``version`` may be left None: the CLI's ``--version`` then applies (and
    overrides it when given).  Tolerances default to the export defaults.
    """

    module: torch.nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    name: str
    task: str
    input_names: Sequence[str]
    output_names: Sequence[str]
    provenance: Provenance
    dynamic_axes: Mapping[str, Any] | None = None
    preprocessing: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    labels: Sequence[LabelSpec | Mapping[str, Any]] = ()
    calibration: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    check_inputs: Sequence[tuple[torch.Tensor, ...]] | None = None
    trt_profile: Mapping[str, Mapping[str, Sequence[int]]] | None = None
    version: str | None = None
    atol: float = 1e-4
    rtol: float = 1e-3
    fp16_atol: float = 1e-2
    fp16_rtol: float = 1e-2

    def export_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`export.onnx_export.export_onnx` (without out_dir/version/fp16/simplify)."""
        return {
            "name": self.name, "task": self.task, "input_names": list(self.input_names),
            "output_names": list(self.output_names), "dynamic_axes": self.dynamic_axes,
            "preprocessing": self.preprocessing, "labels": self.labels, "calibration": self.calibration,
            "provenance": self.provenance, "check_inputs": self.check_inputs, "trt_profile": self.trt_profile,
            "atol": self.atol, "rtol": self.rtol, "fp16_atol": self.fp16_atol, "fp16_rtol": self.fp16_rtol,
        }


BuildExport = Callable[[Path, argparse.Namespace], list[ExportSpec]]


def resolve_family(name: str, families: Mapping[str, str] | None = None) -> BuildExport:
    """Import and return the ``build_export`` function of family ``name``."""
    table = FAMILIES if families is None else families
    target = table.get(name)
    if target is None:
        raise UnknownFamilyError(f"unknown model family {name!r} (known: {', '.join(sorted(table))})")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise UnknownFamilyError(f"model family {name!r}: cannot import {module_name} ({exc}); "
                                 "is the training code for this family installed?") from None
    fn = getattr(module, attr, None)
    if fn is None:
        raise UnknownFamilyError(f"model family {name!r}: {module_name} has no function {attr}")
    return fn
