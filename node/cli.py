"""The ``cardionode`` command: serve, status, process, plus subcommands mounted from other areas.

- ``cardionode serve --config conf/node.yaml [--port N] [--http-port N] [--set KEY=VALUE ...]``:
  run the node until SIGTERM/SIGINT.
- ``cardionode status --config ... [--json]``: studies, jobs, destinations, models.
- ``cardionode process --config ... --study-dir DIR --pipeline NAME [--out DIR]``: run one
  pipeline over DICOM files without the network (pipeline development, tests).
- ``cardionode sample xa|ct|mr [--out DIR]``: a synthetic phantom study to send to the node.
- ``cardionode user add|passwd|role|list|remove``: accounts of the operator console (docs/console.md).
- ``cardionode models list|reload``; with the train extra also ``export``, ``datasets ...`` and the
  training commands each ``training.<area>.cli.register`` adds.

Every command that reads the config takes the same overrides (:func:`add_config_arguments`), applied
in this order, later ones winning: the file, the environment (``CARDIONODE_PORT``,
``CARDIONODE_HTTP_PORT``), ``--set KEY=VALUE``, ``--port`` / ``--http-port``.  ``CARDIONODE_CONFIG``
names the file when ``--config`` is not given.  Failures print one line (``config error: ...`` exit 2,
``error: ...`` exit 1); ``--debug`` adds the traceback and DEBUG logging.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import sys
import traceback
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from .config import ConfigError
from .config_args import ENV_CONFIG, ENV_OVERRIDES, add_config_arguments, config_from_args
from .files import use_private_umask
from .startup import StartupError

__all__ = ["main", "build_parser", "add_config_arguments", "config_from_args", "ENV_CONFIG", "ENV_OVERRIDES"]


def cmd_serve(args: argparse.Namespace) -> int:
    from .logging_setup import setup_logging
    from .service import NodeService

    use_private_umask()  # spool, results, database: the node's user only (node/files.py)
    config = config_from_args(args)
    setup_logging(config.node.log_format, "DEBUG" if getattr(args, "debug", False) else config.node.log_level)
    return NodeService(config).run_forever()


def _fmt_time(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def cmd_status(args: argparse.Namespace) -> int:
    from . import state, status

    use_private_umask()  # opening the database may create its -wal/-shm files
    config = config_from_args(args)
    db_path = config.node.storage_path / state.DB_FILENAME
    if not db_path.exists():
        print(f"error: no node database at {db_path}: has the node run with this config? (a relative "
              "node.storage_dir is relative to the working directory: run status from the folder the node "
              "runs in, or --set node.storage_dir=PATH)", file=sys.stderr)
        return 2
    try:
        conn = state.connect(config.node.storage_path)
    except state.SchemaTooNew as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    model_store = None
    if not args.no_models:
        from pipelines.runtime import ModelStore

        model_store = ModelStore.from_config(config.models)
    data = status.summary(conn, config, model_store, limit=args.limit)
    conn.close()
    if args.json:
        print(json.dumps(data, indent=2, default=str))
        return 0
    c = data["counts"]
    print(f"node {config.node.ae_title} port {config.node.port} http {config.node.http_port} "
          f"storage {config.node.storage_dir}")
    print("studies: " + (", ".join(f"{k} {v}" for k, v in sorted(c["studies"].items())) or "none"))
    print("jobs:    " + (", ".join(f"{k} {v}" for k, v in sorted(c["jobs"].items())) or "none"))
    ex = data["executor"]
    where = f" at {ex['address']}" if ex.get("address") else ""
    since = f" since {_fmt_time(ex['since'])}" if ex.get("since") else ""
    waiting = f"; {ex['queued_jobs']} job(s) waiting" if not ex["available"] and ex["queued_jobs"] else ""
    print(f"executor: {ex['type']}{where}: {ex['state']}{since}: {ex['detail']}{waiting}")
    for g in ex.get("groups", []):
        hosts = ", ".join(f"{w.get('host') or '?'} pid {w.get('pid') or '?'}"
                          for w in g.get("workers", []) if w.get("ready"))
        print(f"  {g['pipeline']}: {g['ready']}/{g['configured']} workers ready" + (f" ({hosts})" if hosts else ""))
    print("\nDESTINATION          TYPE     QUEUE  SENT   FAILED LAST SUCCESS         LAST ERROR")
    for d in data["destinations"]:
        err = (d["last_error"] or "-")[:70]
        print(f"{d['name']:<20} {d['type']:<8} {d['queue_depth']:<6} {d['sent']:<6} {d['failed']:<6} "
              f"{_fmt_time(d['last_success_at']):<20} {err}")
    print("\nRECENT JOBS")
    for j in data["jobs"]:
        err = (j["error"] or "").splitlines()[0][:60] if j["error"] else ""
        if not err and j.get("not_assessable"):
            whole = [i for i in j["not_assessable"] if i.get("scope") == "result"]
            err = ("not assessable: " if whole else "partly not assessable: ") + \
                "; ".join(i.get("message", "") for i in (whole or j["not_assessable"]))[:90]
        print(f"  #{j['id']:<5} {j['state']:<8} {j['pipeline']:<10} try {j['attempts']} "
              f"{_fmt_time(j['finished_at'] or j['started_at'] or j['created_at'])} {j['study_uid']} {err}")
    print("\nRECENT STUDIES")
    for s in data["studies"]:
        print(f"  {s['state']:<10} gen {s['generation']} last {_fmt_time(s['last_received_at'])} "
              f"{s['study_uid']} {','.join(s['routes'])}")
        if s["error"]:
            print(f"             {s['error'][:110]}")
        for route, missing in (s.get("incomplete") or {}).items():
            print(f"             {route}: gave up waiting for {', '.join(missing)}")
    models = data["models"]
    print("\nMODELS")
    if args.no_models:
        print("  (not scanned: --no-models)")
    elif models is None:
        print("  (model runtime not available: is onnxruntime installed?)")
    elif not models:
        print("  none installed")
    else:
        for m in models:
            print(f"  {m.get('name')} {m.get('version', '')} {m.get('status', '')}")
    return 0


def cmd_process(args: argparse.Namespace) -> int:
    from pipelines.base import PipelineContext, StudyView
    from pipelines.registry import default_registry

    from .jobs import write_result_files
    from .logging_setup import setup_logging

    use_private_umask()  # results and retrieved instances carry patient data
    if getattr(args, "study", None) or getattr(args, "source", None):
        from .retrieve import process_study_main

        if not (args.study and args.source):
            print("error: --study and --from go together", file=sys.stderr)
            return 2
        return process_study_main(args)
    if not args.study_dir or not args.pipeline:
        print("error: process needs --study-dir DIR --pipeline NAME (or --study UID --from SOURCE)", file=sys.stderr)
        return 2
    config = config_from_args(args)
    setup_logging(config.node.log_format, config.node.log_level)
    files = sorted(p for p in Path(args.study_dir).rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        print(f"error: no files under {args.study_dir}", file=sys.stderr)
        return 2
    registry = default_registry(config.node.plugins)
    pipeline = registry.create(args.pipeline)
    from pipelines.runtime import ModelStore

    models = ModelStore.from_config(config.models)
    study = StudyView.from_files(files)
    out_dir = Path(args.out)
    with tempfile.TemporaryDirectory(prefix="cardionode-process-") as work:
        started = time.monotonic()
        result = pipeline.run(study, PipelineContext(config.pipeline_options(args.pipeline), models, Path(work)))
        seconds = time.monotonic() - started
    written = write_result_files(result, out_dir)
    print(json.dumps({
        "study_uid": study.study_instance_uid,
        "pipeline": result.pipeline_name,
        "pipeline_version": result.pipeline_version,
        "models": [{"name": m.name, "version": m.version, "provider": m.provider} for m in result.models],
        "seconds": round(seconds, 3),
        "results": [{"sop_instance_uid": u, "sop_class_uid": c, "path": str(p)} for u, c, p in written],
        "summary": result.summary,
    }, indent=2, default=str))
    return 0


def _mount_optional(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], training: bool = True) -> None:
    # imported when the parser is built: the node service, retrieval and phantom modules are not needed
    # to print one line for a bad flag
    from training.datasets import samples  # phantom sample studies: numpy/scipy/pydicom only, part of the base install

    from . import models_command, retrieve

    retrieve.register(subparsers)
    models_command.register(subparsers)
    samples.register(subparsers)
    from .console import cli as console_cli  # console accounts (jinja2, argon2-cffi: base install)

    console_cli.register(subparsers)
    if not training:
        return
    missing: list[str] = []
    for module_name in _TRAIN_EXTRA_CLIS:  # need torch & co. (train extra); the node runs without them
        if importlib.util.find_spec(module_name) is None:
            continue
        try:
            importlib.import_module(module_name).register(subparsers)
        except ImportError as exc:
            missing.append(f"{module_name}: {exc}")
    if missing:
        for command in ("export", "datasets"):
            if command not in subparsers.choices:
                p = subparsers.add_parser(command,
                                          help=f"{command} (needs the train extra: pip install 'cardionode[train]')")
                p.add_argument("rest", nargs=argparse.REMAINDER)
                p.set_defaults(func=_needs_train_extra(command, missing))


_TRAIN_EXTRA_CLIS = ("export.cli", "training.datasets.cli", "training.calcium.cli", "training.myops.cli",
                     "training.syntax.cli")
#: Commands of the node itself: they never need the training commands (importing them imports torch:
#: seconds of start-up for every `serve` or `status` where the train extra is installed).
NODE_COMMANDS = frozenset({"serve", "status", "process", "pull", "models", "sample", "user"})


def _command_name(argv: Sequence[str]) -> str | None:
    """The subcommand in ``argv`` (the first word that is not an option or the top-level --config value)."""
    words = iter(argv)
    for word in words:
        if word == "--config":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def _needs_train_extra(command: str, reasons: list[str]) -> Any:
    def run(_args: argparse.Namespace) -> int:
        print(f"error: 'cardionode {command}' needs the train extra (pip install 'cardionode[train]'); "
              f"not importable here: {'; '.join(reasons)}", file=sys.stderr)
        return 2
    return run


def build_parser(training: bool = True) -> argparse.ArgumentParser:
    """The full parser; ``training=False`` leaves out the train-extra commands (export, datasets, ...)."""
    parser = argparse.ArgumentParser(prog="cardionode", description="CardioNode: clinical AI node for cardiac imaging")
    parser.add_argument("--config", default=None, help="node config file (YAML); default: built-in defaults")
    parser.add_argument("--debug", action="store_true", help="full traceback on errors, DEBUG logging")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the node (DIMSE, HTTP, jobs, dispatch) until SIGTERM")
    add_config_arguments(serve)
    serve.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="full traceback on errors, DEBUG logging")
    serve.set_defaults(func=cmd_serve)

    st = sub.add_parser("status", help="studies, jobs, destinations (queue, last error) and models")
    add_config_arguments(st)
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.add_argument("--limit", type=int, default=20, help="recent studies/jobs to list (default 20)")
    st.add_argument("--no-models", action="store_true", help="do not scan the model directories")
    st.set_defaults(func=cmd_status)

    pr = sub.add_parser("process", help="run one pipeline over DICOM files, no network; results to --out "
                                        "(or pull a study with --study UID --from SOURCE and queue it)")
    add_config_arguments(pr)
    pr.add_argument("--study-dir", default=None, help="folder with the study's DICOM files (searched recursively)")
    pr.add_argument("--pipeline", default=None, help="pipeline name (e.g. calcium, syntax, myops)")
    pr.add_argument("--out", default="./results", help="where result files are written (default ./results)")
    from .retrieve import add_arguments as add_pull_arguments  # here: retrieve imports this module

    add_pull_arguments(pr)
    pr.set_defaults(func=cmd_process)

    _mount_optional(sub, training)
    return parser


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; every failure is one line on stderr (with ``--debug`` also the traceback)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(training=_command_name(argv) not in NODE_COMMANDS)
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from pipelines.base import PipelineError
        from pipelines.registry import UnknownPipelineError

        if debug:
            traceback.print_exc()
        if isinstance(exc, ConfigError):
            print(f"config error: {_one_line(exc)}", file=sys.stderr)
            return 2
        if isinstance(exc, (StartupError, PipelineError, UnknownPipelineError)):
            print(f"error: {_one_line(exc)}", file=sys.stderr)
            return 1
        logging.getLogger("cardionode").debug("command failed", exc_info=True)
        hint = "" if debug else " (run with --debug for the traceback)"
        print(f"error: {type(exc).__name__}: {_one_line(exc)}{hint}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
