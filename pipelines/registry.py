"""Pipeline registry: the names that routes refer to.

Built-in pipelines are listed by import path and imported only when first
used, so that starting the node does not load every model family.  Plug-ins
(tests, site-specific code) register theirs with :func:`register` from a
module named in ``node.plugins``: an importable module name
(``site_pipelines.ffr``) or the path of a Python file (``/etc/cardionode/ffr.py``,
made absolute when the config is loaded).  There is one registry object per node
process, passed explicitly to whoever needs it.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Callable

from .base import Pipeline

__all__ = ["PipelineRegistry", "UnknownPipelineError", "BUILTIN_PIPELINES", "default_registry"]

#: name -> "module:factory"; the factory takes the pipeline's options mapping.
BUILTIN_PIPELINES: dict[str, str] = {
    "syntax": "pipelines.syntax.pipeline:SyntaxPipeline",
    "calcium": "pipelines.calcium.pipeline:CalciumPipeline",
    "myops": "pipelines.myops.pipeline:MyopsPipeline",
}


class UnknownPipelineError(KeyError):
    """A route or command named a pipeline that is not registered."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0])


class PipelineRegistry:
    """Maps pipeline names to factories ``factory() -> Pipeline``."""

    def __init__(self, builtins: dict[str, str] | None = None) -> None:
        self._lazy: dict[str, str] = dict(BUILTIN_PIPELINES if builtins is None else builtins)
        self._factories: dict[str, Callable[[], Pipeline]] = {}

    def register(self, name: str, factory: Callable[[], Pipeline]) -> None:
        """Register (or replace) a pipeline factory under ``name``."""
        self._factories[name] = factory
        self._lazy.pop(name, None)

    def names(self) -> list[str]:
        return sorted(set(self._lazy) | set(self._factories))

    def __contains__(self, name: str) -> bool:
        return name in self._lazy or name in self._factories

    def create(self, name: str) -> Pipeline:
        """Instantiate the pipeline called ``name``."""
        if name not in self._factories:
            target = self._lazy.get(name)
            if target is None:
                raise UnknownPipelineError(
                    f"unknown pipeline {name!r} (registered: {', '.join(self.names()) or 'none'})"
                )
            module_name, _, attr = target.partition(":")
            module = importlib.import_module(module_name)
            self._factories[name] = getattr(module, attr)
        return self._factories[name]()

    def load_plugins(self, modules: tuple[str, ...] | list[str]) -> None:
        """Import plug-in modules; each must define ``register(registry)``."""
        for module_name in modules:
            module = _import_file(module_name) if module_name.endswith(".py") else importlib.import_module(module_name)
            hook = getattr(module, "register", None)
            if hook is None:
                raise ImportError(f"plugin module {module_name!r} has no register(registry) function")
            hook(self)


def _import_file(path: str) -> ModuleType:
    """Import a plug-in given as a Python file (its folder is not added to ``sys.path``)."""
    file = Path(path)
    if not file.is_file():
        raise ImportError(f"plugin file {path} does not exist")
    name = f"cardionode_plugin_{file.stem}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ImportError(f"plugin file {path} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def default_registry(plugins: tuple[str, ...] | list[str] = ()) -> PipelineRegistry:
    """A fresh registry with the built-ins and the given plug-in modules."""
    registry = PipelineRegistry()
    registry.load_plugins(plugins)
    return registry
