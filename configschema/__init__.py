"""Mapping trees (parsed YAML or JSON) into frozen dataclasses, validated, with the key path in every error.

One loader for the node's configuration (:mod:`node.config`) and for each
pipeline's options (``pipelines/<name>/options.py``), so that both accept the
same spellings and fail the same way: one exception naming the key path
(``pipelines.calcium.threshold_hu: expected a number, got 'high'``) and what is
allowed.  It lives outside ``node/`` and ``pipelines/`` because both use it and
``pipelines/`` must not import ``node/``.

:func:`build` walks the tree against the dataclass's type hints: ``str``,
``int``, ``float``, ``bool``, ``Literal[...]``, ``tuple[X, ...]``,
``Mapping[str, X]``, ``X | None``, nested dataclasses, tagged unions of
dataclasses (chosen by their ``type`` key) and types given a converter.
Unknown keys are refused.  After a dataclass is built its ``validate(path)``
method, when it has one, checks what types cannot say (ranges, combinations)
and raises the same error.  Fields declared with :func:`path_field` are made
absolute against ``base_dir``; fields with ``metadata={"internal": True}`` are
not configuration keys (set by the program, never read from the tree).
"""
from __future__ import annotations

import collections.abc
import dataclasses
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, TypeVar

__all__ = ["ConfigError", "Converter", "build", "path_field", "resolve_path", "type_name"]

T = TypeVar("T")
#: ``converter(value, path)`` builds a value of a type the loader does not know; raises ValueError naming ``path``.
Converter = Callable[[Any, str], Any]


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key path and what is allowed."""


def path_field(default: Any = None) -> Any:
    """A field holding a file or folder path: made absolute at load, against ``base_dir``."""
    return dataclasses.field(default=default, metadata={"path": True})


def resolve_path(value: str, base_dir: Path) -> str:
    """``value`` as an absolute, normalised path; relative ones are taken from ``base_dir``."""
    return os.path.normpath(os.path.join(base_dir, os.path.expanduser(value)))


@dataclasses.dataclass(frozen=True)
class _Context:
    base: Path
    error: type[ConfigError]
    converters: Mapping[Any, Converter]


def build(cls: type[T], data: Any, path: str = "", *, base_dir: str | Path | None = None,
          error: type[ConfigError] = ConfigError, converters: Mapping[Any, Converter] | None = None) -> T:
    """``data`` as a ``cls`` instance, validated; raises ``error`` (a :class:`ConfigError`) naming the key path.

    ``path`` is where ``data`` sits in the whole configuration (``"pipelines.calcium"``);
    ``base_dir`` (default: the working directory) anchors relative paths.
    """
    base = (Path(base_dir) if base_dir is not None else Path.cwd()).absolute()
    return typing.cast(T, _build(cls, data, path, _Context(base, error, converters or {})))


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if dataclasses.is_dataclass(tp):
        return "mapping"
    if origin in (tuple, list):
        return f"list of {type_name(typing.get_args(tp)[0])}"
    if origin in (dict, collections.abc.Mapping):
        return "mapping"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, path: str, ctx: _Context) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    converter = ctx.converters.get(tp)
    if converter is not None:
        try:
            return converter(value, path)
        except ValueError as exc:  # the converter's message names the path
            raise ctx.error(str(exc)) from None
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        dataclass_args = [a for a in args if dataclasses.is_dataclass(a)]
        # Tagged union of dataclasses: choose by the 'type' key.
        if len(dataclass_args) > 1 and isinstance(value, Mapping):
            tags = {typing.get_args(typing.get_type_hints(a)["type"])[0]: a for a in dataclass_args}
            tag = value.get("type")
            if tag not in tags:
                raise ctx.error(f"{path}.type: {tag!r} is not allowed (allowed: {', '.join(map(repr, tags))})")
            return _build(tags[tag], value, path, ctx)
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, path, ctx)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ctx.error(errors[0] if len(errors) == 1 else f"{path}: expected {type_name(tp)}, got {value!r}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ctx.error(f"{path}: {value!r} is not allowed (allowed: {', '.join(map(repr, allowed))})")
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path, ctx)
    if origin in (tuple, list):
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]  # a single value where a list is allowed
        if not isinstance(value, (list, tuple)):
            raise ctx.error(f"{path}: expected {type_name(tp)}, got {value!r}")
        (item_tp, *_rest) = typing.get_args(tp)
        return tuple(_convert(item_tp, v, f"{path}[{i}]", ctx) for i, v in enumerate(value))
    if origin in (dict, collections.abc.Mapping):
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise ctx.error(f"{path}: expected a mapping, got {value!r}")
        key_tp, val_tp = typing.get_args(tp)
        out = {}
        for k, v in value.items():
            if not isinstance(k, str) or not re.match(r"^[A-Za-z0-9_.-]+$", k):
                raise ctx.error(f"{path}: key {k!r} must be a name of letters, digits, '_', '.', '-'")
            out[k] = _convert(val_tp, v, f"{path}.{k}", ctx)
        return types.MappingProxyType(out)
    if tp is bool:
        if not isinstance(value, bool):
            raise ctx.error(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ctx.error(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ctx.error(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ctx.error(f"{path}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {path}")


def _build(cls: Any, data: Any, path: str, ctx: _Context) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ctx.error(f"{path or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    unknown = [k for k in data if k not in fields]
    if unknown:
        where = f"{path}.{unknown[0]}" if path else str(unknown[0])
        raise ctx.error(f"{where}: unknown key (allowed here: {', '.join(fields)})")
    kwargs = {}
    for name, field in fields.items():
        sub = f"{path}.{name}" if path else name
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], sub, ctx)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ctx.error(f"{sub}: required key is missing")
    for name, field in fields.items():  # the one place where configured paths become absolute
        value = kwargs.get(name, field.default)
        if field.metadata.get("path") and isinstance(value, str):
            kwargs[name] = resolve_path(value, ctx.base)
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(path)
    return obj
