"""``cardionode models list|reload``: what models the node has, and make a running node pick up new ones."""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from pipelines.runtime.providers import (
    available_providers,
    describe_build,
    onnxruntime_conflict,
    onnxruntime_distributions,
)
from pipelines.runtime.store import ModelError, ModelStore

from .config import NodeConfig
from .config_args import add_config_arguments, config_from_args
from .service import PID_FILE_NAME  # one definition: the node writes the file, `models reload` reads it

__all__ = ["register", "cmd_list", "cmd_reload", "PID_FILE_NAME", "read_pid"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add ``models list [--json] [--no-load]`` and ``models reload`` to the node's CLI."""
    p = subparsers.add_parser("models", help="list installed models; make the running node reload them")
    sub = p.add_subparsers(dest="models_command", required=True)
    lst = sub.add_parser("list", help="name, version, provenance and provider of every model")
    lst.add_argument("--json", action="store_true", help="machine-readable output")
    lst.add_argument("--no-load", action="store_true",
                     help="do not create sessions (skips the sha256 check and shows provider 'not loaded')")
    lst.set_defaults(func=cmd_list)
    rel = sub.add_parser("reload", help="send SIGHUP to the running node: new jobs use newly installed models")
    rel.set_defaults(func=cmd_reload)
    for sp in (lst, rel):
        add_config_arguments(sp)
    return p


def _config(args: argparse.Namespace) -> NodeConfig:
    return config_from_args(args)


def cmd_list(args: argparse.Namespace) -> int:
    """Print the onnxruntime build and every model found with the provider it runs on; exit status 1
    when any model is unusable or more than one onnxruntime distribution is installed."""
    config = _config(args)
    conflict = onnxruntime_conflict()
    store = ModelStore.from_config(config.models)
    if not args.no_load:
        if config.models.warmup:
            store.warmup()
        else:
            for name in store.names():
                _try(store, name)
    rows = store.describe()
    if args.json:
        print(json.dumps({
            "onnxruntime": {"distributions": onnxruntime_distributions(), "providers": available_providers(),
                            "summary": describe_build(config.models.providers), "conflict": conflict},
            "models": rows,
        }, indent=2))
    else:
        print(describe_build(config.models.providers))
        if not rows:
            dirs = ", ".join(str(d) for d in store.model_dirs) or "none"
            print(f"no models installed (looked in: {dirs})")
        else:
            print(f"{'MODEL':<28} {'VERSION':<12} {'PROVIDER':<11} STATUS")
        for r in rows:
            print(f"{r['name']:<28} {str(r['version']):<12} {r['provider']:<11} {r['status']}")
            if r["provenance"]:
                print(f"    provenance: {r['provenance']}")
            print(f"    source:     {r['source']}")
            if r["error"]:
                print(f"    error:      {r['error']}")
    if conflict:
        print(f"error: {conflict}", file=sys.stderr)
    return 1 if conflict or any(r["status"] != "ok" for r in rows) else 0


def _try(store: ModelStore, name: str) -> None:
    try:
        store.acquire(name)
    except ModelError:
        pass  # recorded by the store; describe() shows it


def read_pid(storage_dir: str | Path) -> int:
    """PID of the running node from ``<storage_dir>/cardionode.pid`` (raises FileNotFoundError / ValueError)."""
    text = (Path(storage_dir) / PID_FILE_NAME).read_text(encoding="ascii").strip()
    return int(text.split()[0])


def cmd_reload(args: argparse.Namespace) -> int:
    """Check the model directories, then SIGHUP the node named by its pid file."""

    config = _config(args)
    store = ModelStore.from_config(config.models)
    rows = store.describe()
    for r in rows:
        if r["status"] != "ok":
            print(f"warning: {r['name']}: {r['error']}", file=sys.stderr)
    pid_file = config.node.storage_path / PID_FILE_NAME
    try:
        pid = read_pid(config.node.storage_path)
    except FileNotFoundError:
        print(f"error: no pid file {pid_file}: is the node running with this config?", file=sys.stderr)
        return 2
    except ValueError:
        print(f"error: {pid_file} does not hold a process id", file=sys.stderr)
        return 2
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        print(f"error: no process {pid} (stale pid file {pid_file}); start the node", file=sys.stderr)
        return 2
    except PermissionError:
        print(f"error: not allowed to signal process {pid}; run as the node's user", file=sys.stderr)
        return 2
    print(f"sent SIGHUP to node process {pid}; models found: "
          + (", ".join(f"{r['name']} {r['version']}" for r in rows if r['status'] == 'ok') or "none"))
    return 0
