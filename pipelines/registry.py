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
from typing import Any, Callable, Mapping

from .base import Pipeline
from .options import PipelineOptions

__all__ = ["PipelineRegistry", "UnknownPipelineError", "BUILTIN_PIPELINES", "default_registry"]

#: name -> "module:factory"; the factory takes no arguments and returns the pipeline.
BUILTIN_PIPELINES: dict[str, str] = {
    "syntax": "pipelines.syntax.pipeline:SyntaxPipeline",
    "calcium": "pipelines.calcium.pipeline:CalciumPipeline",
    "myops": "pipelines.myops.pipeline:MyopsPipeline",
}
#: name -> "module:Class" of the pipeline's options (:class:`pipelines.options.PipelineOptions`).
BUILTIN_OPTIONS: dict[str, str] = {
    "syntax": "pipelines.syntax.options:SyntaxOptions",
    "calcium": "pipelines.calcium.options:CalciumOptions",
    "myops": "pipelines.myops.options:MyopsOptions",
}


class UnknownPipelineError(KeyError):
    """A route or command named a pipeline that is not registered."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0])


class PipelineRegistry:
    """Maps pipeline names to factories ``factory() -> Pipeline``."""

    def __init__(self, builtins: dict[str, str] | None = None, builtin_options: dict[str, str] | None = None) -> None:
        self._lazy: dict[str, str] = dict(BUILTIN_PIPELINES if builtins is None else builtins)
        self._lazy_options: dict[str, str] = dict(BUILTIN_OPTIONS if builtin_options is None else builtin_options)
        self._factories: dict[str, Callable[[], Pipeline]] = {}
        self._options: dict[str, type[PipelineOptions] | None] = {}

    def register(self, name: str, factory: Callable[[], Pipeline],
                 options: type[PipelineOptions] | None = None) -> None:
        """Register (or replace) a pipeline factory under ``name``, with its options class (None: the
        pipeline gets its ``pipelines.<name>`` mapping as written and checks it itself)."""
        self._factories[name] = factory
        self._options[name] = options
        self._lazy.pop(name, None)
        self._lazy_options.pop(name, None)

    def parse_options(self, name: str, raw: Mapping[str, Any] | None) -> Any:
        """The pipeline's options read from ``raw`` by its options class; raises
        :class:`~pipelines.options.OptionsError` naming the key path.  Without an options class: ``raw``."""
        if name not in self._options:
            target = self._lazy_options.get(name)
            self._options[name] = _load(target) if target is not None else None
        options = self._options[name]
        return raw if options is None else options.parse(raw)

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
            self._factories[name] = _load(target)
        return self._factories[name]()

    def load_plugins(self, modules: tuple[str, ...] | list[str]) -> None:
        """Import plug-in modules; each must define ``register(registry)``."""
        for module_name in modules:
            module = _import_file(module_name) if module_name.endswith(".py") else importlib.import_module(module_name)
            hook = getattr(module, "register", None)
            if hook is None:
                raise ImportError(f"plugin module {module_name!r} has no register(registry) function")
            hook(self)


def _load(target: str) -> Any:
    """The object a ``"module:attribute"`` target names."""
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


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
