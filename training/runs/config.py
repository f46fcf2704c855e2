"""Training options from the command line and/or a YAML config file, saved with the run.

``--config run.yaml`` sets the defaults of the family's parser (keys = option names with ``_`` or
``-``); options given on the command line win.  The resolved options are written to the run folder as
``config.yaml`` and can be passed back unchanged (``--config runs/x/config.yaml --out runs/y``).
Unknown keys are refused with the list of known ones.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import enum
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

from .errors import RunError

__all__ = ["add_run_arguments", "parse_with_config", "explicit_options", "to_yaml_dict", "write_config",
           "read_config", "RUN_CONTROL", "ConfigError"]

#: options that steer a run but are not part of its configuration (never saved, never compared on resume)
RUN_CONTROL = ("config", "resume", "overwrite", "no_progress", "func", "help")


class ConfigError(RunError):
    """A config file is unreadable or names an option the command does not have."""


def add_run_arguments(p: argparse.ArgumentParser, *, device_default: str = "cpu") -> None:
    """The options every training command shares (see docs/training.md)."""
    g = p.add_argument_group("run")
    g.add_argument("--config", type=Path, default=None, help="YAML file of options (a run's config.yaml works); "
                                                            "command-line options win")
    g.add_argument("--resume", action="store_true", help="continue the run in the output folder from last.pt "
                                                        "(model, optimizer, scheduler, RNG states)")
    g.add_argument("--overwrite", action="store_true", help="replace a run already in the output folder")
    g.add_argument("--device", default=device_default, help="cpu, cuda or cuda:N (default %(default)s)")
    g.add_argument("--precision", default="32", choices=("32", "32-true", "16-mixed", "bf16-mixed"),
                   help="32 (default); 16-mixed (CUDA, with a gradient scaler); bf16-mixed (CUDA only)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar (it is off anyway when stderr "
                                                              "is not a terminal)")


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if a.dest not in ("help",) and a.dest != argparse.SUPPRESS}


def _convert(action: argparse.Action, value: Any, source: str) -> Any:
    """A YAML value -> what argparse would have produced for that option."""
    if value is None:
        return None
    conv: Callable[[Any], Any] | None = action.type if callable(action.type) else None

    def one(v: Any) -> Any:
        if conv is not None and isinstance(v, str):
            try:
                return conv(v)
            except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
                raise ConfigError(f"{source}: key {action.dest!r}: {exc}") from None
        if conv is Path and v is not None:
            return Path(str(v))
        if conv in (int, float) and isinstance(v, (int, float)) and not isinstance(v, bool):
            return conv(v)
        return v

    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: key {action.dest!r}: expected true or false, got {value!r}")
        return value
    if action.nargs not in (None, "?") and isinstance(value, (list, tuple)):
        out = [one(v) for v in value]
        return tuple(out) if isinstance(action.default, tuple) else out
    if action.choices is not None and value not in action.choices and str(value) in [str(c) for c in action.choices]:
        value = str(value)
    return one(value)


def read_config(path: Path, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The options of a YAML config file, converted to the parser's types; unknown keys refused."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the config: {exc}") from None
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: expected a mapping of option: value")
    actions = _actions(parser)
    out: dict[str, Any] = {}
    for key, value in raw.items():
        dest = str(key).replace("-", "_")
        if dest in RUN_CONTROL:
            continue
        if dest not in actions:
            known = ", ".join(sorted(d for d in actions if d not in RUN_CONTROL))
            raise ConfigError(f"{path}: unknown option {key!r} (known: {known})")
        out[dest] = _convert(actions[dest], value, str(path))
    return out


def explicit_options(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """Dests of the options actually given in ``argv`` (not defaults)."""
    p = copy.deepcopy(parser)
    for a in p._actions:
        a.default = argparse.SUPPRESS
        a.required = False
    ns, _ = p.parse_known_args(list(argv))
    return set(vars(ns))


def parse_with_config(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
                      required: Sequence[str] = ()) -> argparse.Namespace:
    """Parse ``argv`` with the defaults taken from ``--config FILE`` when given; ``required`` dests must
    come from one of the two (checked after merging, so a config file can supply them)."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", type=Path, default=None)
    known, _ = pre.parse_known_args(argv)
    if known.config is not None:
        parser.set_defaults(**read_config(known.config, parser))
    ns = parser.parse_args(argv)
    missing = [d for d in required if getattr(ns, d, None) in (None, "")]
    if missing:
        parser.error(", ".join(f"--{d.replace('_', '-')}" for d in missing) + " is required (on the command line "
                     "or in --config)")
    return ns


def to_yaml_dict(values: Mapping[str, Any]) -> dict[str, Any]:
    """Plain YAML-safe values (paths as strings, tuples as lists) without the run-control options."""
    def plain(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, enum.Enum):
            return v.value
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return plain(dataclasses.asdict(v))
        if isinstance(v, Mapping):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        return str(v)

    return {k: plain(v) for k, v in values.items() if k not in RUN_CONTROL and not callable(v)}


def write_config(path: Path, values: Mapping[str, Any], header: str) -> Path:
    text = "".join(f"# {line}\n" for line in header.splitlines())
    text += yaml.safe_dump(to_yaml_dict(values), sort_keys=True, default_flow_style=False)
    Path(path).write_text(text)
    return Path(path)
