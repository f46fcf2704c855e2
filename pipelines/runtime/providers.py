"""ONNX Runtime execution providers and session options from the node config.

The config lists providers in order of preference (``tensorrt``, ``cuda``,
``cpu``).  A provider that this onnxruntime build does not have is skipped
(:func:`describe_build` says so once, at start-up, for all models); CPU is
always appended last so that a session can always be created.  TensorRT gets fp16, an engine cache
directory per model version and an explicit optimisation profile built from the manifest's ``trt_profile``
(min/opt/max shapes for inputs with dynamic axes), so engines are built once
and reused across restarts.
"""
from __future__ import annotations

import importlib.metadata
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import onnxruntime as ort

from .manifest import ModelManifest

__all__ = [
    "PROVIDER_NAMES",
    "available_providers",
    "onnxruntime_distributions",
    "onnxruntime_conflict",
    "planned_providers",
    "describe_build",
    "provider_chain",
    "session_options",
    "short_provider_name",
    "trt_profile_strings",
]

log = logging.getLogger("cardionode.models")

#: Config name -> ONNX Runtime provider name.
PROVIDER_NAMES: dict[str, str] = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
_SHORT = {v: k for k, v in PROVIDER_NAMES.items()} | {"AzureExecutionProvider": "azure",
                                                       "OpenVINOExecutionProvider": "openvino",
                                                       "DmlExecutionProvider": "directml",
                                                       "ROCMExecutionProvider": "rocm",
                                                       "CoreMLExecutionProvider": "coreml"}

_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def available_providers() -> list[str]:
    """Providers compiled into the installed onnxruntime (CPU only for the ``onnxruntime`` wheel)."""
    return list(ort.get_available_providers())


def onnxruntime_distributions() -> list[str]:
    """Installed distributions that provide the ``onnxruntime`` package, e.g. ``["onnxruntime-gpu 1.22.0"]``.

    ``onnxruntime``, ``onnxruntime-gpu`` (and -directml, -openvino, nightlies)
    all install the same ``onnxruntime/`` folder; two of them side by side
    overwrite each other's files.  A distribution counts when its file list
    (RECORD) has ``onnxruntime/__init__.py``.
    """
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        # typeshed declares PackageMetadata.get() from Python 3.12 on; the object is an email.message.Message
        name = (dist.metadata.get("Name") or "").strip()  # type: ignore[attr-defined]
        if not name or name.lower() in found:
            continue
        files = dist.files or []
        if any(str(f).replace("\\", "/") == "onnxruntime/__init__.py" for f in files):
            found[name.lower()] = f"{name} {dist.version}"
    return sorted(found.values())


def onnxruntime_conflict() -> str | None:
    """A one-line error when more than one onnxruntime distribution is installed, else None."""
    dists = onnxruntime_distributions()
    if len(dists) < 2:
        return None
    names = [d.split()[0] for d in dists]
    gpu = next((n for n in names if n.lower() != "onnxruntime"), "onnxruntime-gpu")
    return (f"{' and '.join(dists)} are installed side by side; they overwrite each other's files, so which "
            f"execution providers load is undefined. Keep one: pip uninstall -y {' '.join(names)} && pip install "
            f"{gpu} (GPU) or pip install onnxruntime (CPU only); see the README's GPU install")


def planned_providers(preferred: Sequence[str], available: Sequence[str] | None = None) -> list[str]:
    """Short names of the configured providers this build has, in order, CPU always last."""
    have = set(available_providers() if available is None else available)
    out = [p for p in preferred if PROVIDER_NAMES[p] in have]
    return out if "cpu" in out else out + ["cpu"]


def describe_build(preferred: Sequence[str], available: Sequence[str] | None = None) -> str:
    """One line: the onnxruntime build, the providers it has, and what the models will run on."""
    have = list(available_providers() if available is None else available)
    dists = onnxruntime_distributions()
    build = ", ".join(dists) if dists else f"onnxruntime {ort.__version__}"
    plan = planned_providers(preferred, have)
    missing = [p for p in preferred if PROVIDER_NAMES[p] not in have]
    text = (f"{build}: providers in this build: {', '.join(short_provider_name(p) for p in have)}; "
            f"models.providers {', '.join(preferred)}: models run on {plan[0]}")
    if len(plan) > 1:
        text += f" (falling back to {' > '.join(plan[1:])})"
    if missing:
        text += f"; {', '.join(missing)} not in this build (GPU: see the README's GPU install)"
    return text


def short_provider_name(provider: str) -> str:
    """``CUDAExecutionProvider`` -> ``cuda`` (unknown names are returned unchanged)."""
    return _SHORT.get(provider, provider)


def trt_profile_strings(manifest: ModelManifest) -> dict[str, str]:
    """TensorRT EP profile options, e.g. ``{"trt_profile_min_shapes": "video:1x1x3x32x256x256", ...}``."""
    if not manifest.trt_profile:
        return {}
    out: dict[str, list[str]] = {"min": [], "opt": [], "max": []}
    for name, prof in manifest.trt_profile.items():
        for part, shape in (("min", prof.min), ("opt", prof.opt), ("max", prof.max)):
            dims = "x".join(str(d) for d in shape)
            out[part].append(f"{name}:{dims}")
    return {f"trt_profile_{part}_shapes": ",".join(items) for part, items in out.items()}


def provider_chain(
    preferred: Sequence[str],
    manifest: ModelManifest,
    *,
    tensorrt_fp16: bool = True,
    tensorrt_cache_dir: str | Path | None = None,
    available: Sequence[str] | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """(provider, options) pairs to try, most preferred first; unavailable ones skipped, CPU always last."""
    have = set(available_providers() if available is None else available)
    chain: list[tuple[str, dict[str, Any]]] = []
    for short in preferred:
        name = PROVIDER_NAMES[short]
        if name not in have:  # said once for all models at start-up (describe_build)
            log.debug("model %r: execution provider %s not in this onnxruntime build; skipped", manifest.name, name)
            continue
        if short == "tensorrt":
            opts: dict[str, Any] = {"device_id": 0, "trt_fp16_enable": bool(tensorrt_fp16),
                                    "trt_max_workspace_size": 4 << 30}
            if tensorrt_cache_dir:
                cache = Path(tensorrt_cache_dir) / f"{manifest.name}-{manifest.version}-{manifest.sha256[:12]}"
                cache.mkdir(parents=True, exist_ok=True)
                opts.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache),
                            trt_timing_cache_enable=True, trt_timing_cache_path=str(cache))
            opts.update(trt_profile_strings(manifest))
            chain.append((name, opts))
        elif short == "cuda":
            chain.append((name, {"device_id": 0, "cudnn_conv_algo_search": "HEURISTIC",
                                 "arena_extend_strategy": "kSameAsRequested"}))
        else:
            chain.append((name, {}))
    if not any(n == PROVIDER_NAMES["cpu"] for n, _ in chain):
        chain.append((PROVIDER_NAMES["cpu"], {}))
    return chain


def session_options(intra_op_threads: int = 0, inter_op_threads: int = 0,
                    graph_optimization: str = "all") -> ort.SessionOptions:
    """Session options from the ``models`` config section (0 threads = ONNX Runtime default)."""
    so = ort.SessionOptions()
    so.graph_optimization_level = _OPT_LEVELS[graph_optimization]
    if intra_op_threads:
        so.intra_op_num_threads = intra_op_threads
    if inter_op_threads:
        so.inter_op_num_threads = inter_op_threads
        if inter_op_threads > 1:
            so.execution_mode = ort.ExecutionMode.ORT_PARALLEL
    so.log_severity_level = 3  # errors only: ORT warnings are noise in the node log
    return so


def describe_chain(chain: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    return " > ".join(short_provider_name(n) for n, _ in chain)
