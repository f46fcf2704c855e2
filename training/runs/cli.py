"""Shared command-line behaviour of the training and dataset commands: one-line errors."""
from __future__ import annotations

import functools
import sys
from typing import Any, Callable

__all__ = ["one_line_errors", "user_errors"]


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that describe bad input or a refused request (printed as one line, exit 2);
    anything else is a bug and keeps its traceback."""
    from export.provenance import ProvenanceError

    from .errors import RunError

    types: list[type[BaseException]] = [RunError, ProvenanceError, FileNotFoundError, FileExistsError,
                                        NotADirectoryError, PermissionError]
    for mod, name in (("training.calcium.coca", "CocaError"), ("training.myops.dataset", "DatasetError"),
                      ("training.myops.labels", "LabelValueError"), ("training.syntax.data", "DatasetError"),
                      ("training.syntax.checkpoints", "CheckpointError"), ("training.datasets.errors", "DataError"),
                      ("training.runs.config", "ConfigError")):
        try:
            module = __import__(mod, fromlist=[name])
            types.append(getattr(module, name))
        except (ImportError, AttributeError):
            continue
    return tuple(types)


def one_line_errors(fn: Callable[..., int]) -> Callable[..., int]:
    """Wrap a command's ``main``/``run``: known errors -> ``error: <message>`` on stderr, exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> int:
        try:
            return int(fn(*args, **kwargs) or 0)
        except user_errors() as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapper
