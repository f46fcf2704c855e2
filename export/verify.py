"""Numerical comparison of ONNX Runtime against torch, and a TensorRT-compatibility scan of the graph.

Pass criterion (as ``numpy.allclose``): ``|ort - torch| <= atol + rtol * |torch|``
for every element of every output, same shapes, no NaN/Inf that torch does not
also have.  Reported figures: ``max_abs = max |ort - torch|`` and
``max_rel = max |ort - torch| / max(|torch|, atol)`` (the floor keeps
near-zero references from producing meaningless ratios).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import onnx

__all__ = ["Comparison", "compare_outputs", "tensorrt_op_report", "TENSORRT_UNSUPPORTED_OPS"]


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Worst-case error over all outputs and input sets compared so far."""

    atol: float
    rtol: float
    max_abs: float
    max_rel: float
    ok: bool
    failures: tuple[str, ...] = ()
    compared: int = 0

    @classmethod
    def empty(cls, atol: float, rtol: float) -> "Comparison":
        return cls(atol=atol, rtol=rtol, max_abs=0.0, max_rel=0.0, ok=True)

    def merge(self, other: "Comparison") -> "Comparison":
        return Comparison(
            atol=self.atol, rtol=self.rtol,
            max_abs=max(self.max_abs, other.max_abs), max_rel=max(self.max_rel, other.max_rel),
            ok=self.ok and other.ok, failures=self.failures + other.failures,
            compared=self.compared + other.compared,
        )

    def summary(self) -> str:
        verdict = "OK" if self.ok else "FAIL (" + "; ".join(self.failures[:3]) + ")"
        return (f"max abs error {self.max_abs:.3e}, max rel error {self.max_rel:.3e} "
                f"(tolerance atol {self.atol:g} + rtol {self.rtol:g}·|ref|) {verdict}")


def compare_outputs(names: Sequence[str], reference: Sequence[np.ndarray], actual: Sequence[np.ndarray],
                    atol: float, rtol: float) -> Comparison:
    """Compare outputs pairwise (reference = torch, actual = ONNX Runtime)."""
    max_abs = max_rel = 0.0
    failures: list[str] = []
    for name, ref, got in zip(names, reference, actual):
        ref = np.asarray(ref, dtype=np.float64)
        got = np.asarray(got, dtype=np.float64)
        if ref.shape != got.shape:
            failures.append(f"{name}: shape {got.shape} != torch {ref.shape}")
            continue
        bad_nan = np.isfinite(ref) & ~np.isfinite(got)
        if bad_nan.any():
            failures.append(f"{name}: {int(bad_nan.sum())} non-finite values where torch is finite")
            continue
        if ref.size == 0:
            continue
        diff = np.abs(got - ref)
        diff[~np.isfinite(ref)] = 0.0
        max_abs = max(max_abs, float(diff.max()))
        max_rel = max(max_rel, float((diff / np.maximum(np.abs(ref), atol)).max()))
        over = diff > atol + rtol * np.abs(ref)
        if over.any():
            idx = np.unravel_index(int(np.argmax(diff - (atol + rtol * np.abs(ref)))), ref.shape)
            failures.append(f"{name}: {int(over.sum())}/{ref.size} elements over tolerance, "
                            f"worst at {tuple(int(i) for i in idx)} "
                            f"(onnx {got[idx]:.6g} vs torch {ref[idx]:.6g})")
    return Comparison(atol=atol, rtol=rtol, max_abs=max_abs, max_rel=max_rel, ok=not failures,
                      failures=tuple(failures), compared=len(names))


#: ONNX ops the TensorRT 10 ONNX parser does not import (sequence/optional/string ops and a few others).
TENSORRT_UNSUPPORTED_OPS = frozenset({
    "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase", "SequenceInsert", "SequenceLength",
    "SplitToSequence", "ConcatFromSequence", "Optional", "OptionalGetElement", "OptionalHasElement",
    "StringNormalizer", "TfIdfVectorizer", "Unique", "ReverseSequence", "RandomNormal", "RandomNormalLike",
    "RandomUniform", "RandomUniformLike", "Bernoulli", "Multinomial", "Col2Im", "STFT", "MelWeightMatrix",
    "DFT", "ImageDecoder", "RegexFullMatch", "StringConcat", "StringSplit",
})


def tensorrt_op_report(model: onnx.ModelProto) -> list[str]:
    """Warnings for ops TensorRT 10 cannot parse and for non-default domains (custom ops)."""
    ops: dict[str, int] = {}
    domains: set[str] = set()

    def walk(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            ops[node.op_type] = ops.get(node.op_type, 0) + 1
            if node.domain not in ("", "ai.onnx"):
                domains.add(f"{node.domain}::{node.op_type}")
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)
                for g in attr.graphs:
                    walk(g)

    walk(model.graph)
    out = []
    bad = sorted(set(ops) & TENSORRT_UNSUPPORTED_OPS)
    if bad:
        out.append(f"ops TensorRT 10 cannot parse: {', '.join(bad)} (the graph would be split between "
                   "TensorRT and CUDA/CPU)")
    if domains:
        out.append(f"custom-domain ops (not TensorRT-parseable): {', '.join(sorted(domains))}")
    return out
