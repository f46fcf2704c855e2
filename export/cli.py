"""``cardionode export FAMILY --checkpoint PATH --out DIR``: export a trained checkpoint to the node's model layout."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["register", "run_export"]


def _parse_option(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--option wants KEY=VALUE, got {text!r}")
    return key, value


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``export`` command to the node's CLI."""
    from .families import FAMILIES

    p = subparsers.add_parser(
        "export", help="export a trained checkpoint to ONNX + manifest (needs torch: pip install cardionode[train])",
        description="Export torch -> ONNX, check with onnx.checker and against ONNX Runtime, write "
                    "<out>/<model-name>/{model.onnx,manifest.json}.",
    )
    p.add_argument("model", metavar="MODEL", help=f"model family: {', '.join(sorted(FAMILIES))}")
    p.add_argument("--checkpoint", required=True, type=Path, help="trained checkpoint (state_dict .pt)")
    p.add_argument("--out", required=True, type=Path, help="models directory (e.g. the node's models.dir)")
    p.add_argument("--version", default=None, help="model version written to the manifest")
    p.add_argument("--fp16", action="store_true", help="also write and verify model.fp16.onnx")
    p.add_argument("--simplify", action="store_true", help="simplify the graph (onnxslim or onnxsim)")
    p.add_argument("--atol", type=float, default=None, help="override the family's absolute tolerance")
    p.add_argument("--rtol", type=float, default=None, help="override the family's relative tolerance")
    p.add_argument("--option", action="append", type=_parse_option, default=[], metavar="KEY=VALUE",
                   help="family-specific option (repeatable)")
    p.set_defaults(func=run_export)
    return p


def run_export(args: argparse.Namespace) -> int:
    """Resolve the family, build its specs, export each; exit status 1 on any failure."""
    from .families import UnknownFamilyError, resolve_family
    from .onnx_export import ExportError, export_onnx

    args.options = dict(args.option)
    if not args.checkpoint.exists():
        print(f"error: checkpoint {args.checkpoint} does not exist", file=sys.stderr)
        return 2
    try:
        build = resolve_family(args.model)
        specs = build(args.checkpoint, args)
    except UnknownFamilyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except _user_errors() as exc:  # a missing fold file, a refused provenance option, ...: one line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failed = 0
    for spec in specs:
        version = args.version or spec.version
        if not version:
            print(f"error: {spec.name}: no version (pass --version)", file=sys.stderr)
            return 2
        kwargs = spec.export_kwargs()
        if args.atol is not None:
            kwargs["atol"] = args.atol
        if args.rtol is not None:
            kwargs["rtol"] = args.rtol
        try:
            report = export_onnx(spec.module, spec.example_inputs, args.out, version=version, fp16=args.fp16,
                                 simplify=args.simplify, **kwargs)
            print(f"ok: {report.summary()}")
        except ExportError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def _user_errors() -> tuple[type[BaseException], ...]:
    from training.runs.cli import user_errors

    return user_errors()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cardionode")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
