"""Pipeline options: each pipeline declares a frozen dataclass, read by the configuration's own loader.

A pipeline's options live under ``pipelines: {<name>: {...}}`` of the node
configuration.  They are checked when the node starts (a typo stops
``cardionode serve`` with its key path, like any other key) and parsed again,
by the same function, when a job runs, since the pipeline receives them as a
plain mapping (they travel to remote workers that way).

:func:`parse_options` reads a mapping into the pipeline's options class with
:func:`configschema.build`: the same types, spellings and messages as the rest
of the configuration; an options class adds ``validate(path)`` for what types
cannot say.
"""
from __future__ import annotations

from typing import Any, Mapping, Protocol, TypeVar

from configschema import ConfigError, Converter, build

from .base import PipelineInputError

__all__ = ["OptionsError", "PipelineOptions", "parse_options"]

T = TypeVar("T")


class PipelineOptions(Protocol):
    """A pipeline's options class: ``parse`` reads its ``pipelines.<name>`` mapping or raises :class:`OptionsError`."""

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | None) -> Any:
        ...


class OptionsError(ConfigError, PipelineInputError):
    """A pipeline option is wrong; the message names its key path (``pipelines.<name>.<key>``).

    A :class:`~configschema.ConfigError` at start-up, a
    :class:`~pipelines.base.PipelineInputError` (not retried) inside a job.
    """


def parse_options(cls: type[T], raw: Mapping[str, Any] | None, pipeline: str,
                  converters: Mapping[Any, Converter] | None = None) -> T:
    """``raw`` (the ``pipelines.<pipeline>`` mapping, None: defaults) as a validated ``cls``."""
    return build(cls, raw, f"pipelines.{pipeline}", error=OptionsError, converters=converters)
