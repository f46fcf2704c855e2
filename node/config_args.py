"""The configuration flags every ``cardionode`` command that reads the config shares, and how they apply.

Order, later ones winning: the file (``--config``, else ``$CARDIONODE_CONFIG``, else the built-in
defaults), the environment (``CARDIONODE_PORT``, ``CARDIONODE_HTTP_PORT``), ``--set KEY=VALUE``,
``--port`` / ``--http-port``.  A module of its own so that every command module (``node.cli``,
``node.retrieve``, ``node.models_command``) can use it without importing the command line itself.
"""
from __future__ import annotations

import argparse
import os

from .config import ConfigError, NodeConfig, load_config, parse_override

__all__ = ["ENV_CONFIG", "ENV_OVERRIDES", "add_config_arguments", "config_from_args"]

#: Environment variables that override one config key each (after the file, before the flags).
ENV_OVERRIDES: dict[str, str] = {"CARDIONODE_PORT": "node.port", "CARDIONODE_HTTP_PORT": "node.http_port"}
ENV_CONFIG = "CARDIONODE_CONFIG"


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config``, ``--set``, ``--port``, ``--http-port`` for a subcommand that reads the config."""
    # SUPPRESS: keep a --config given to the top-level parser instead of overwriting it with None.
    parser.add_argument("--config", default=argparse.SUPPRESS,
                        help=f"node config file (YAML); default ${ENV_CONFIG}, else built-in defaults")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, e.g. --set node.quiet_seconds=5 or "
                             "--set destinations.pacs.port=4243 (repeatable; the value is read as YAML)")
    parser.add_argument("--port", type=int, default=None,
                        help="DIMSE port, overrides node.port (and $CARDIONODE_PORT)")
    parser.add_argument("--http-port", type=int, default=None,
                        help="HTTP port, overrides node.http_port (and $CARDIONODE_HTTP_PORT)")


def config_from_args(args: argparse.Namespace, environ: dict[str, str] | None = None) -> NodeConfig:
    """The config a command runs with: file (or defaults), then env overrides, then the flags."""
    env = os.environ if environ is None else environ
    path = getattr(args, "config", None) or env.get(ENV_CONFIG) or None
    overrides: list[tuple[str, object]] = []
    for var, key in ENV_OVERRIDES.items():
        raw = env.get(var, "").strip()
        if raw:
            if not raw.isdigit():
                raise ConfigError(f"{var}: {raw!r} is not a port number (it overrides {key})")
            overrides.append((key, int(raw)))
    overrides += [parse_override(text) for text in getattr(args, "overrides", None) or []]
    if getattr(args, "port", None) is not None:
        overrides.append(("node.port", args.port))
    if getattr(args, "http_port", None) is not None:
        overrides.append(("node.http_port", args.http_port))
    return load_config(path, overrides)
