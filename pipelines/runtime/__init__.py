"""Model runtime: manifests, the shared ONNX Runtime model store, its settings, and the ``models`` CLI.

Pipelines use ``context.acquire(name)`` -> :class:`ModelHandle` and
``handle.run({...})``; see docs/models.md.

The store and its handles (which need onnxruntime) are imported on first use,
so that :mod:`pipelines.runtime.settings` (the ``models:`` configuration
section) and :mod:`pipelines.runtime.manifest` load without onnxruntime.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .manifest import LabelSpec, ManifestError, ModelManifest, Provenance, TensorSpec, sha256_file
from .settings import ModelsSection

if TYPE_CHECKING:
    from .store import ModelError, ModelHandle, ModelStore, bundled_models_dir

__all__ = [
    "LabelSpec",
    "ManifestError",
    "ModelManifest",
    "ModelsSection",
    "Provenance",
    "TensorSpec",
    "sha256_file",
    "ModelError",
    "ModelHandle",
    "ModelStore",
    "bundled_models_dir",
]

_FROM_STORE = frozenset({"ModelError", "ModelHandle", "ModelStore", "bundled_models_dir"})


def __getattr__(name: str) -> Any:
    """The store's names, imported (with onnxruntime) when first asked for."""
    if name in _FROM_STORE:
        return getattr(importlib.import_module(".store", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
