"""torch -> ONNX export with verification, writing the model directory the node loads.

:func:`export_onnx` exports one module with the TorchScript-based exporter
(``dynamo=False``, opset 17; the dynamo exporter needs onnxscript, which the
node does not ship), runs ``onnx.checker``, optionally simplifies the graph,
checks ONNX Runtime (CPU) against torch on the example and extra inputs, and
fails above ``atol + rtol*|torch|`` anywhere.  An optional fp16 variant is
verified the same way with its own tolerances.  Only when every check passes
are ``model.onnx`` (+ ``model.fp16.onnx``) and ``manifest.json`` moved into
``<out_dir>/<name>/``, replacing a previous version in one rename, so a node
that reloads meanwhile sees either the old or the new model, never a mix.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import io
import contextlib
import copy
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort
import torch

from pipelines.runtime.manifest import (
    LabelSpec,
    ModelManifest,
    ModelVariant,
    Provenance,
    TensorSpec,
    TrtProfile,
    sha256_file,
)

from .attention import replace_mha
from .rnn import unproject_lstms
from .verify import Comparison, compare_outputs, tensorrt_op_report

__all__ = ["ExportError", "ExportVerificationError", "ExportReport", "export_onnx", "model_dir_for"]

DEFAULT_OPSET = 17


class ExportError(RuntimeError):
    """The model could not be exported or checked (message says why and what to change)."""


class ExportVerificationError(ExportError):
    """ONNX Runtime disagrees with torch above the stated tolerance."""

    def __init__(self, message: str, comparison: Comparison) -> None:
        super().__init__(message)
        self.comparison = comparison


@dataclasses.dataclass
class ExportReport:
    """What an export produced and how well it matched torch."""

    name: str
    version: str
    directory: Path
    onnx_path: Path
    manifest_path: Path
    manifest: ModelManifest
    comparison: Comparison
    fp16_comparison: Comparison | None = None
    simplified: bool = False
    lstm_rewrites: int = 0
    seconds: float = 0.0
    warnings: list[str] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        text = (f"{self.name} {self.version}: {self.onnx_path} ({self.onnx_path.stat().st_size / 1e6:.1f} MB), "
                f"fp32 {self.comparison.summary()}")
        if self.fp16_comparison is not None:
            text += f"; fp16 {self.fp16_comparison.summary()}"
        return text + f"; {self.seconds:.1f} s"


def model_dir_for(out_dir: str | Path, name: str) -> Path:
    """``<out_dir>/<name>``; ``out_dir`` itself when it already is that directory."""
    out_dir = Path(out_dir)
    return out_dir if out_dir.name == name else out_dir / name


def _np(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def _flatten_outputs(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        flat: list[torch.Tensor] = []
        for o in out:
            flat.extend(_flatten_outputs(o))
        return flat
    if isinstance(out, Mapping):
        return _flatten_outputs(list(out.values()))
    raise ExportError(f"model output of type {type(out).__name__} is not a tensor, tuple or dict of tensors")


def _tensor_specs(names: Sequence[str], tensors: Sequence[torch.Tensor],
                  dynamic_axes: Mapping[str, Any]) -> tuple[TensorSpec, ...]:
    specs = []
    for name, t in zip(names, tensors):
        axes = dynamic_axes.get(name, {})
        if isinstance(axes, (list, tuple)):
            axes = {int(a): f"{name}_dim{a}" for a in axes}
        shape = tuple(str(axes[i]) if i in axes else int(d) for i, d in enumerate(t.shape))
        dtype = str(t.dtype).replace("torch.", "")
        specs.append(TensorSpec(name=name, shape=shape, dtype=dtype))
    return tuple(specs)


def _default_trt_profile(specs: Sequence[TensorSpec],
                         input_sets: Sequence[Sequence[torch.Tensor]]) -> dict[str, TrtProfile]:
    """min 1 / opt = example / max = largest seen, for each dynamic axis (fixed axes as they are)."""
    prof: dict[str, TrtProfile] = {}
    for i, spec in enumerate(specs):
        if not spec.dynamic_axes:
            continue
        ex = tuple(int(d) for d in input_sets[0][i].shape)
        mx = tuple(max(int(s[i].shape[a]) for s in input_sets) for a in range(len(ex)))
        mn = tuple(1 if isinstance(d, str) else d for d in spec.shape)
        prof[spec.name] = TrtProfile(min=mn, opt=ex, max=mx)
    return prof


def _ort_run(path: Path, names: Sequence[str], inputs: Sequence[torch.Tensor], *,
             level: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = level
    sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    return sess.run(None, {n: _np(t) for n, t in zip(names, inputs)})


def _simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        import onnxslim  # type: ignore[import-not-found]

        return onnxslim.slim(model)
    except ImportError:
        pass
    try:
        import onnxsim  # type: ignore[import-not-found]

        simplified, ok = onnxsim.simplify(model)
        if not ok:
            raise ExportError("onnxsim could not validate the simplified model; export without --simplify")
        return simplified
    except ImportError:
        raise ExportError("--simplify needs onnxslim or onnxsim: pip install onnxslim") from None


def _to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    # The converter shipped inside onnxruntime (onnxconverter-common 1.16 writes graphs ORT 1.32 rejects).
    from onnxruntime.transformers import float16

    # Inputs/outputs stay float32 so pipelines feed the same arrays to either variant.
    converted = float16.convert_float_to_float16(model, keep_io_types=True)
    _toposort(converted.graph)  # the converter appends input casts at the end of the node list
    return converted


def _toposort(graph: onnx.GraphProto) -> None:
    """Reorder ``graph.node`` so every node comes after the producers of its inputs (stable otherwise)."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        rest = []
        for node in pending:
            if all(i in available for i in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ExportError("fp16 conversion produced a graph with a cycle or a missing input")
        pending = rest
    copies = [onnx.NodeProto() for _ in ordered]
    for dst, src in zip(copies, ordered):
        dst.CopyFrom(src)
    del graph.node[:]
    graph.node.extend(copies)


def export_onnx(
    model: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    out_dir: str | Path,
    *,
    name: str,
    version: str,
    task: str,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Any] | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    labels: Sequence[LabelSpec | Mapping[str, Any]] = (),
    calibration: Mapping[str, Any] | None = None,
    provenance: Provenance,
    opset: int = DEFAULT_OPSET,
    fp16: bool = False,
    simplify: bool = False,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    fp16_atol: float = 1e-2,
    fp16_rtol: float = 1e-2,
    check_inputs: Sequence[tuple[torch.Tensor, ...]] | None = None,
    trt_profile: Mapping[str, Mapping[str, Sequence[int]]] | None = None,
    verbose: bool = True,
) -> ExportReport:
    """Export, check and install one model as ``<out_dir>/<name>/{model.onnx,manifest.json}``.

    ``check_inputs`` are extra input tuples (e.g. other batch sizes / view
    counts) that ONNX Runtime must also match torch on; they also widen the
    default TensorRT profile.  ``trt_profile`` ({input: {min, opt, max}})
    overrides the default (min 1 / opt example / max largest seen).
    Raises :class:`ExportVerificationError` when ORT differs from torch by
    more than ``atol + rtol * |torch|`` on any element.
    """
    t0 = time.perf_counter()
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    example_inputs = tuple(example_inputs)
    if len(input_names) != len(example_inputs):
        raise ExportError(f"{name}: {len(input_names)} input names for {len(example_inputs)} example inputs")
    dynamic_axes = dict(dynamic_axes or {})
    unknown = set(dynamic_axes) - set(input_names) - set(output_names)
    if unknown:
        raise ExportError(f"{name}: dynamic_axes names unknown tensors {sorted(unknown)}")
    input_sets = [example_inputs] + [tuple(c) if not isinstance(c, torch.Tensor) else (c,)
                                     for c in (check_inputs or [])]

    model = model.eval()
    with torch.no_grad():
        references = [[t.detach().clone() for t in _flatten_outputs(model(*inp))] for inp in input_sets]
    if len(references[0]) != len(output_names):
        raise ExportError(f"{name}: model returns {len(references[0])} tensors but {len(output_names)} output names "
                          f"were given ({list(output_names)})")

    export_model, rewrites = unproject_lstms(model)  # deep copy: the caller's module is never modified
    if export_model is model:
        export_model = copy.deepcopy(model)
    export_model, mha_rewrites = replace_mha(export_model)
    notes: list[str] = []
    if rewrites:
        notes.append(f"{rewrites} LSTM(s) with proj_size rewritten as LSTM + Linear (exact; see export/rnn.py)")
    if mha_rewrites:
        notes.append(f"{mha_rewrites} MultiheadAttention module(s) replaced by ExportableMHA (export/attention.py)")

    out_dir = Path(out_dir)
    final_dir = model_dir_for(out_dir, name)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}.export-", dir=final_dir.parent))
    os.chmod(work, 0o755)  # mkdtemp makes 0700; the node may run as another user
    try:
        onnx_path = work / "model.onnx"
        with warnings.catch_warnings(), torch.no_grad(), _no_mha_fastpath():
            warnings.simplefilter("ignore")
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    torch.onnx.export(
                        export_model.eval(), example_inputs, str(onnx_path),
                        input_names=list(input_names), output_names=list(output_names),
                        dynamic_axes={k: v for k, v in dynamic_axes.items()} or None,
                        opset_version=opset, do_constant_folding=True, dynamo=False,
                    )
            except Exception as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ExportError(f"{name}: torch.onnx.export failed: {first}") from exc
        proto = onnx.load(str(onnx_path))
        try:
            onnx.checker.check_model(proto, full_check=True)
        except onnx.checker.ValidationError as exc:
            raise ExportError(f"{name}: onnx.checker rejected the export: {exc}") from exc
        if simplify:
            proto = _simplify(proto)
            onnx.checker.check_model(proto, full_check=True)
            onnx.save(proto, str(onnx_path))
        trt_warn = tensorrt_op_report(proto)
        notes.extend(trt_warn)

        # fp32: ORT vs torch on every input set
        comparison = Comparison.empty(atol, rtol)
        for inp, ref in zip(input_sets, references):
            got = _ort_run(onnx_path, input_names, inp)
            comparison = comparison.merge(compare_outputs(output_names, [_np(r) for r in ref], got, atol, rtol))
        if verbose:
            print(f"[export] {name} {version}: ONNX Runtime vs torch on {len(input_sets)} input set(s): "
                  f"{comparison.summary()}")
        if not comparison.ok:
            raise ExportVerificationError(f"{name}: ONNX Runtime differs from torch above tolerance: "
                                          f"{comparison.summary()}", comparison)

        variants: dict[str, ModelVariant] = {}
        fp16_cmp = None
        if fp16:
            fp16_path = work / "model.fp16.onnx"
            onnx.save(_to_fp16(proto), str(fp16_path))
            onnx.checker.check_model(str(fp16_path), full_check=True)
            fp16_cmp = Comparison.empty(fp16_atol, fp16_rtol)
            for inp, ref in zip(input_sets, references):
                # ORT 1.32's level-'all' (layout) optimiser crashes on fp16 Conv graphs on x86 CPU:
                # verify at 'extended'.
                got = _ort_run(fp16_path, input_names, inp, level=ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
                fp16_cmp = fp16_cmp.merge(compare_outputs(output_names, [_np(r) for r in ref], got,
                                                          fp16_atol, fp16_rtol))
            if verbose:
                print(f"[export] {name} {version} fp16: ONNX Runtime vs torch fp32: {fp16_cmp.summary()}")
            if not fp16_cmp.ok:
                raise ExportVerificationError(f"{name}: fp16 model differs from torch above tolerance: "
                                              f"{fp16_cmp.summary()}", fp16_cmp)
            variants["fp16"] = ModelVariant(file="model.fp16.onnx", sha256=sha256_file(fp16_path), precision="float16",
                                            max_abs_error=fp16_cmp.max_abs, max_rel_error=fp16_cmp.max_rel)

        in_specs = _tensor_specs(input_names, example_inputs, dynamic_axes)
        out_specs = _tensor_specs(output_names, references[0], dynamic_axes)
        if trt_profile:
            profile = {k: TrtProfile(tuple(v["min"]), tuple(v["opt"]), tuple(v["max"])) for k, v in trt_profile.items()}
        else:
            profile = _default_trt_profile(in_specs, input_sets)
        manifest = ModelManifest(
            name=name,
            version=str(version),
            task=task,
            inputs=in_specs,
            outputs=out_specs,
            preprocessing=dict(preprocessing or {}),
            labels=tuple(lab if isinstance(lab, LabelSpec) else LabelSpec(**lab) for lab in labels),
            calibration=dict(calibration or {}),
            provenance=provenance,
            opset=opset,
            sha256=sha256_file(onnx_path),
            trt_profile=profile,
            variants=variants,
            verification={
                "atol": atol,
                "rtol": rtol,
                "max_abs_error": comparison.max_abs,
                "max_rel_error": comparison.max_rel,
                "input_sets": len(input_sets),
                "exporter": "torch.onnx TorchScript (dynamo=False)",
                "torch": torch.__version__,
                "onnx": onnx.__version__,
                "onnxruntime": ort.__version__,
                "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "simplified": bool(simplify),
                "notes": notes,
            },
        )
        manifest.save(work / "manifest.json")
        _install(work, final_dir)
        work = final_dir
    finally:
        if work != final_dir and work.exists():
            shutil.rmtree(work, ignore_errors=True)

    report = ExportReport(
        name=name, version=str(version), directory=final_dir, onnx_path=final_dir / "model.onnx",
        manifest_path=final_dir / "manifest.json", manifest=manifest, comparison=comparison,
        fp16_comparison=fp16_cmp, simplified=simplify, lstm_rewrites=rewrites,
        seconds=time.perf_counter() - t0, warnings=trt_warn,
    )
    if verbose:
        for w in trt_warn:
            print(f"[export] {name}: warning: {w}")
        print(f"[export] wrote {report.summary()}")
    return report


@contextlib.contextmanager
def _no_mha_fastpath():
    """Disable the fused TransformerEncoderLayer/MultiheadAttention inference path while tracing.

    In eval mode torch calls ``aten::_transformer_encoder_layer_fwd``, which has
    no ONNX symbolic; the unfused path exports as MatMul/Softmax/LayerNormalization.
    """
    mha = getattr(torch.backends, "mha", None)
    if mha is None or not hasattr(mha, "set_fastpath_enabled"):
        yield
        return
    before = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(before)


def _install(work: Path, final_dir: Path) -> None:
    """Replace ``final_dir`` by ``work`` with renames (the old directory disappears only after the new one is ready)."""
    if final_dir.exists():
        old = final_dir.with_name(f".{final_dir.name}.old-{os.getpid()}-{time.time_ns()}")
        final_dir.rename(old)
        work.rename(final_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        work.rename(final_dir)
