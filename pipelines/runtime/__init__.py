"""Model runtime: manifests, the shared ONNX Runtime model store, and the ``models`` CLI.

Pipelines use ``context.acquire(name)`` -> :class:`ModelHandle` and
``handle.run({...})``; see docs/models.md.
"""
from .manifest import LabelSpec, ManifestError, ModelManifest, Provenance, TensorSpec, sha256_file
from .store import ModelError, ModelHandle, ModelStore, bundled_models_dir

__all__ = [
    "LabelSpec",
    "ManifestError",
    "ModelManifest",
    "Provenance",
    "TensorSpec",
    "sha256_file",
    "ModelError",
    "ModelHandle",
    "ModelStore",
    "bundled_models_dir",
]
