"""The model store's settings: where models come from and how ONNX Runtime runs them.

The ``models:`` section of the node's configuration is this dataclass, validated
by :func:`configschema.build` like every other section.  It lives here, next to
:class:`~pipelines.runtime.store.ModelStore` that reads it, so that benchmarks,
training tools and tests can build a store without importing the node; and it
imports nothing heavy (no onnxruntime), so that loading the configuration stays
cheap.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

from configschema import ConfigError, path_field

__all__ = ["ModelsSection"]


@dataclasses.dataclass(frozen=True)
class ModelsSection:
    """Where models come from and how ONNX Runtime runs them."""

    dir: str | None = path_field()
    providers: tuple[Literal["tensorrt", "cuda", "cpu"], ...] = ("tensorrt", "cuda", "cpu")
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"
    tensorrt_fp16: bool = True
    tensorrt_cache_dir: str | None = path_field()
    warmup: bool = True

    def validate(self, path: str) -> None:
        if not self.providers:
            raise ConfigError(f"{path}.providers: list at least one of tensorrt, cuda, cpu")
        if self.intra_op_threads < 0 or self.inter_op_threads < 0:
            raise ConfigError(f"{path}: thread counts must be >= 0 (0 = ONNX Runtime default)")
