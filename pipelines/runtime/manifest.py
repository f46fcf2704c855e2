"""Model manifest: the JSON file beside every ``model.onnx`` that says what the model is.

A manifest names the model and its version, the tensors it takes and returns
(with named dynamic axes), the preprocessing a pipeline must apply, the label
map with its DICOM codes, calibration parameters, provenance (what it was
trained on, when, with which code, held-out metrics), the ONNX opset and the
sha256 of the ONNX file.  It is written by :func:`export.onnx_export.export_onnx`
and validated on load: any problem raises exactly one :class:`ManifestError`
naming the file and the key.

This module depends on the standard library only, so pipelines and the node can
read manifests without torch or onnx installed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from types import EllipsisType
from typing import Any, Mapping, NoReturn, Sequence

__all__ = [
    "FORMAT_VERSION",
    "DTYPES",
    "ManifestError",
    "TensorSpec",
    "CodeSpec",
    "LabelSpec",
    "Provenance",
    "TrtProfile",
    "DomainRange",
    "ModelManifest",
    "sha256_file",
]

#: Manifest format this code writes and reads.
FORMAT_VERSION = 1

#: Tensor element types a manifest may declare (numpy names).
DTYPES = ("float32", "float16", "float64", "int64", "int32", "int8", "uint8", "bool")

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_AXIS_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\.onnx$")


class ManifestError(ValueError):
    """A manifest is missing, unreadable or does not follow the format (message names file and key)."""


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (models can be hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- small helpers


class _Reader:
    """Typed access to one JSON object with errors naming ``<file>: key 'a.b[0]'``."""

    def __init__(self, source: str, data: Any, key: str = "") -> None:
        self.source = source
        self.key = key
        if not isinstance(data, Mapping):
            self.fail(f"expected an object, got {type(data).__name__}")
        self.data: Mapping[str, Any] = data

    def fail(self, message: str, key: str | None = None) -> NoReturn:
        where = key if key is not None else self.key
        raise ManifestError(f"{self.source}: key '{where or '<root>'}': {message}")

    def sub(self, name: str) -> str:
        return f"{self.key}.{name}" if self.key else name

    def get(self, name: str, types: type | tuple[type, ...], default: Any = ..., allow_none: bool = False) -> Any:
        if name not in self.data:
            if default is ...:
                self.fail("missing (required)", self.sub(name))
            return default
        value = self.data[name]
        if value is None and allow_none:
            return None
        bad_bool = isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,))
        if not isinstance(value, types) or bad_bool:
            names = types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types)
            self.fail(f"expected {names}, got {value!r}", self.sub(name))
        return value

    def text(self, name: str, default: str | EllipsisType = ..., pattern: re.Pattern[str] | None = None,
             what: str = "") -> str:
        value: str = self.get(name, str, default)
        if default is not ... and value is default:
            return value
        if not value.strip():
            self.fail("must not be empty", self.sub(name))
        if pattern is not None and not pattern.match(value):
            self.fail(f"{value!r} is not {what or 'allowed'}", self.sub(name))
        return value

    def child(self, name: str, default: Any = ...) -> "_Reader | None":
        value = self.get(name, dict, default, allow_none=True)
        if value is None:
            return None
        return _Reader(self.source, value, self.sub(name))

    def unknown(self, allowed: Sequence[str]) -> None:
        extra = sorted(set(self.data) - set(allowed))
        if extra:
            self.fail(f"unknown key(s) {', '.join(map(repr, extra))} (allowed: {', '.join(allowed)})")


# --------------------------------------------------------------------------- parts


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One model input or output: name, shape (int = fixed, str = named dynamic axis), dtype."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"

    @property
    def dynamic_axes(self) -> dict[int, str]:
        """Axis index -> axis name for every named (dynamic) axis."""
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, r: _Reader) -> "TensorSpec":
        r.unknown(("name", "shape", "dtype"))
        name = r.text("name")
        shape_raw = r.get("shape", list)
        shape: list[int | str] = []
        for i, dim in enumerate(shape_raw):
            key = f"{r.sub('shape')}[{i}]"
            if isinstance(dim, bool) or not isinstance(dim, (int, str)):
                r.fail(f"expected a positive integer or an axis name, got {dim!r}", key)
            if isinstance(dim, int) and dim < 1:
                r.fail(f"fixed dimensions must be >= 1, got {dim}", key)
            if isinstance(dim, str) and not _AXIS_RE.match(dim):
                r.fail(f"axis name {dim!r} must be an identifier (letters, digits, '_')", key)
            shape.append(dim)
        dtype = r.text("dtype", "float32")
        if dtype not in DTYPES:
            r.fail(f"{dtype!r} is not allowed (allowed: {', '.join(DTYPES)})", r.sub("dtype"))
        return cls(name=name, shape=tuple(shape), dtype=dtype)


@dataclasses.dataclass(frozen=True)
class CodeSpec:
    """A coded concept as DICOM writes it: CodeValue, CodingSchemeDesignator, CodeMeaning."""

    value: str
    scheme: str
    meaning: str

    def to_dict(self) -> dict[str, str]:
        return {"value": self.value, "scheme": self.scheme, "meaning": self.meaning}

    @classmethod
    def from_dict(cls, r: _Reader) -> "CodeSpec":
        r.unknown(("value", "scheme", "meaning"))
        return cls(value=r.text("value"), scheme=r.text("scheme"), meaning=r.text("meaning"))

    @classmethod
    def coerce(cls, value: "CodeSpec | Mapping[str, str] | None") -> "CodeSpec | None":
        if value is None or isinstance(value, CodeSpec):
            return value
        return cls(value=str(value["value"]), scheme=str(value["scheme"]), meaning=str(value["meaning"]))


@dataclasses.dataclass(frozen=True)
class LabelSpec:
    """One output label: the integer the model emits, its name, and the DICOM codes it maps to.

    ``code`` is the property type (e.g. SCT 12402003 scar tissue); ``category`` the
    property category (e.g. SCT 49755003 morphologically abnormal structure).
    """

    value: int
    name: str
    code: CodeSpec | None = None
    category: CodeSpec | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "code", CodeSpec.coerce(self.code))
        object.__setattr__(self, "category", CodeSpec.coerce(self.category))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"value": self.value, "name": self.name}
        out["code"] = self.code.to_dict() if self.code else None
        if self.category is not None:
            out["category"] = self.category.to_dict()
        return out

    @classmethod
    def from_dict(cls, r: _Reader) -> "LabelSpec":
        r.unknown(("value", "name", "code", "category"))
        value = r.get("value", int)
        code = r.child("code", None)
        category = r.child("category", None)
        return cls(
            value=value,
            name=r.text("name"),
            code=CodeSpec.from_dict(code) if code else None,
            category=CodeSpec.from_dict(category) if category else None,
        )


@dataclasses.dataclass(frozen=True)
class Provenance:
    """Where the weights come from.

    Say ``trained_on="synthetic phantoms"``, ``synthetic=True`` when that is the truth."""

    trained_on: str
    synthetic: bool
    date: str
    code_version: str
    metrics: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    notes: str = ""
    #: What the model was trained on, machine-readable: e.g. ``{"generator": "training.calcium.phantom",
    #: "generator_version": "2", "layout": "COCA", "cases": 400, "generated": true}``.
    training_data: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def summary(self) -> str:
        """One line for ``models list`` and for ModelInfo.provenance."""
        flag = " (synthetic)" if self.synthetic and "synthetic" not in self.trained_on.lower() else ""
        text = f"{self.trained_on}{flag}"
        text += f", {self.date}, code {self.code_version}"
        if self.metrics:
            shown = []
            for k, v in list(self.metrics.items())[:3]:
                shown.append(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}")
            text += "; " + ", ".join(shown)
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "trained_on": self.trained_on,
            "synthetic": self.synthetic,
            "date": self.date,
            "code_version": self.code_version,
            "metrics": dict(self.metrics),
            "notes": self.notes,
            **({"training_data": dict(self.training_data)} if self.training_data else {}),
        }

    @classmethod
    def from_dict(cls, r: _Reader) -> "Provenance":
        r.unknown(("trained_on", "synthetic", "date", "code_version", "metrics", "notes", "training_data"))
        date = r.text("date")
        if not re.match(r"^\d{4}-\d{2}-\d{2}", date):
            r.fail(f"{date!r} is not an ISO date (YYYY-MM-DD)", r.sub("date"))
        return cls(
            trained_on=r.text("trained_on"),
            synthetic=r.get("synthetic", bool),
            date=date,
            code_version=r.text("code_version"),
            metrics=dict(r.get("metrics", dict, {})),
            notes=r.get("notes", str, ""),
            training_data=dict(r.get("training_data", dict, {})),
        )


@dataclasses.dataclass(frozen=True)
class TrtProfile:
    """TensorRT optimisation profile for one input with dynamic axes: full shapes min <= opt <= max."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def to_dict(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


@dataclasses.dataclass(frozen=True)
class DomainRange:
    """What the model was trained for, for one input property (e.g. ``slice_thickness_mm``).

    Either a numeric interval (``min`` and/or ``max``, inclusive) or a set of allowed values
    (``one_of``).  Pipelines measure the property on a study and call :meth:`violation`; inputs
    outside the range make the result "not assessable" instead of a confident wrong number.
    The same type bounds the model's own output-unusualness scores (``output_domain``).
    ``note``: how the range was chosen (the generator's settings, the phantoms it was calibrated on).
    """

    min: float | None = None
    max: float | None = None
    one_of: tuple[str | int | float, ...] = ()
    unit: str = ""
    note: str = ""

    def violation(self, value: Any) -> str | None:
        """None when ``value`` is inside the range, else a short text saying what was expected."""
        if self.one_of:
            return None if value in self.one_of else f"expected one of {', '.join(map(str, self.one_of))}"
        if self.min is not None and value < self.min:
            return f"below the trained range {self.describe()}"
        if self.max is not None and value > self.max:
            return f"above the trained range {self.describe()}"
        return None

    def describe(self) -> str:
        """The range as a person reads it: ``0.5-3 mm``, ``>= 80 kV``, ``one of CT``."""
        if self.one_of:
            return "one of " + ", ".join(map(str, self.one_of))
        unit = f" {self.unit}" if self.unit else ""
        if self.min is not None and self.max is not None:
            return f"{self.min:g}-{self.max:g}{unit}"
        if self.min is not None:
            return f">= {self.min:g}{unit}"
        return f"<= {self.max:g}{unit}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.one_of:
            out["one_of"] = list(self.one_of)
        if self.min is not None:
            out["min"] = self.min
        if self.max is not None:
            out["max"] = self.max
        if self.unit:
            out["unit"] = self.unit
        if self.note:
            out["note"] = self.note
        return out

    @classmethod
    def from_dict(cls, r: _Reader) -> "DomainRange":
        r.unknown(("min", "max", "one_of", "unit", "note"))
        lo = r.get("min", (int, float), None, allow_none=True)
        hi = r.get("max", (int, float), None, allow_none=True)
        one_of = r.get("one_of", list, [])
        if not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in one_of):
            r.fail(f"expected a list of strings or numbers, got {one_of!r}", r.sub("one_of"))
        if one_of and (lo is not None or hi is not None):
            r.fail("give either one_of or min/max, not both")
        if not one_of and lo is None and hi is None:
            r.fail("give one_of or at least one of min, max")
        if lo is not None and hi is not None and lo > hi:
            r.fail(f"min {lo} is above max {hi}")
        return cls(min=lo, max=hi, one_of=tuple(one_of), unit=r.get("unit", str, ""), note=r.get("note", str, ""))


@dataclasses.dataclass(frozen=True)
class ModelVariant:
    """An alternative file of the same model (e.g. fp16) with its own checksum and measured error."""

    file: str
    sha256: str
    precision: str
    max_abs_error: float | None = None
    max_rel_error: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- manifest


@dataclasses.dataclass(frozen=True)
class ModelManifest:
    """Everything the node needs to know about one exported model (see docs/models.md)."""

    name: str
    version: str
    task: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    preprocessing: Mapping[str, Any]
    labels: tuple[LabelSpec, ...]
    calibration: Mapping[str, Any]
    provenance: Provenance
    opset: int
    sha256: str
    file: str = "model.onnx"
    format_version: int = FORMAT_VERSION
    trt_profile: Mapping[str, TrtProfile] = dataclasses.field(default_factory=dict)
    variants: Mapping[str, ModelVariant] = dataclasses.field(default_factory=dict)
    verification: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    #: Input properties the model was trained for (see :class:`DomainRange`); empty = not declared.
    input_domain: Mapping[str, DomainRange] = dataclasses.field(default_factory=dict)
    #: Accepted ranges of the model's output-unusualness scores (``pipelines.qc``); empty = not declared.
    output_domain: Mapping[str, DomainRange] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        # Accept lists / plain dicts from callers; store tuples and typed parts.
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        labels = tuple(lab if isinstance(lab, LabelSpec) else LabelSpec(**lab) for lab in self.labels)
        object.__setattr__(self, "labels", labels)
        prof = {
            k: v if isinstance(v, TrtProfile) else TrtProfile(tuple(v["min"]), tuple(v["opt"]), tuple(v["max"]))
            for k, v in dict(self.trt_profile).items()
        }
        object.__setattr__(self, "trt_profile", prof)
        variants = {k: v if isinstance(v, ModelVariant) else ModelVariant(**v) for k, v in dict(self.variants).items()}
        object.__setattr__(self, "variants", variants)
        for key, raw in (("input_domain", self.input_domain), ("output_domain", self.output_domain)):
            domain = {k: v if isinstance(v, DomainRange) else DomainRange(**{**v, "one_of": tuple(v.get("one_of", ()))})
                      for k, v in dict(raw).items()}
            object.__setattr__(self, key, domain)
        self.validate(f"manifest of {self.name!r}")

    # ------------------------------------------------------------------ checks

    def validate(self, source: str) -> None:
        """Cross-field checks (per-field types are checked while parsing)."""

        def fail(key: str, message: str) -> None:
            raise ManifestError(f"{source}: key '{key}': {message}")

        if not _NAME_RE.match(self.name):
            fail("name", f"{self.name!r} must be lower-case letters, digits, '.', '_', '-' (max 64)")
        if not str(self.version).strip():
            fail("version", "must not be empty")
        if self.format_version != FORMAT_VERSION:
            fail("format_version", f"{self.format_version} is not supported (this node reads {FORMAT_VERSION})")
        if not _SHA_RE.match(self.sha256):
            fail("sha256", f"{self.sha256!r} is not 64 lower-case hex digits")
        if not _FILE_RE.match(self.file):
            fail("file", f"{self.file!r} must be a plain file name ending in .onnx")
        if not 7 <= self.opset <= 30:
            fail("opset", f"{self.opset} is out of range (7-30)")
        for kind, specs in (("inputs", self.inputs), ("outputs", self.outputs)):
            if not specs:
                fail(kind, "at least one tensor is required")
            seen: set[str] = set()
            for i, spec in enumerate(specs):
                if spec.dtype not in DTYPES:
                    fail(f"{kind}[{i}].dtype", f"{spec.dtype!r} is not allowed (allowed: {', '.join(DTYPES)})")
                if spec.name in seen:
                    fail(f"{kind}[{i}].name", f"duplicate tensor name {spec.name!r}")
                seen.add(spec.name)
        values = [lab.value for lab in self.labels]
        if len(values) != len(set(values)):
            fail("labels", f"duplicate label values in {values}")
        by_name = {s.name: s for s in self.inputs}
        for inp, prof in self.trt_profile.items():
            key = f"trt_profile.{inp}"
            if inp not in by_name:
                fail(key, f"no input called {inp!r} (inputs: {', '.join(by_name)})")
            shape = by_name[inp].shape
            for part, dims in (("min", prof.min), ("opt", prof.opt), ("max", prof.max)):
                if len(dims) != len(shape):
                    fail(f"{key}.{part}", f"has {len(dims)} dimensions, input has {len(shape)}")
                for ax, (d, s) in enumerate(zip(dims, shape)):
                    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
                        fail(f"{key}.{part}[{ax}]", f"expected a positive integer, got {d!r}")
                    if isinstance(s, int) and d != s:
                        fail(f"{key}.{part}[{ax}]", f"{d} differs from the fixed input dimension {s}")
            for ax in range(len(shape)):
                if not prof.min[ax] <= prof.opt[ax] <= prof.max[ax]:
                    fail(key, f"axis {ax}: need min <= opt <= max, got {prof.min[ax]}, {prof.opt[ax]}, {prof.max[ax]}")
        for vname, var in self.variants.items():
            if not _FILE_RE.match(var.file) or var.file == self.file:
                fail(f"variants.{vname}.file", f"{var.file!r} must be a different .onnx file name")
            if not _SHA_RE.match(var.sha256):
                fail(f"variants.{vname}.sha256", f"{var.sha256!r} is not 64 lower-case hex digits")

    # ------------------------------------------------------------------ helpers

    def input(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def label(self, value: int) -> LabelSpec:
        for lab in self.labels:
            if lab.value == value:
                return lab
        raise KeyError(value)

    # ------------------------------------------------------------------ (de)serialisation

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format_version": self.format_version,
            "name": self.name,
            "version": self.version,
            "task": self.task,
            "file": self.file,
            "sha256": self.sha256,
            "opset": self.opset,
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
            "preprocessing": dict(self.preprocessing),
            "labels": [lab.to_dict() for lab in self.labels],
            "calibration": dict(self.calibration),
            "provenance": self.provenance.to_dict(),
        }
        if self.trt_profile:
            out["trt_profile"] = {k: v.to_dict() for k, v in self.trt_profile.items()}
        if self.variants:
            out["variants"] = {k: v.to_dict() for k, v in self.variants.items()}
        if self.verification:
            out["verification"] = dict(self.verification)
        if self.input_domain:
            out["input_domain"] = {k: v.to_dict() for k, v in self.input_domain.items()}
        if self.output_domain:
            out["output_domain"] = {k: v.to_dict() for k, v in self.output_domain.items()}
        return out

    def save(self, path: str | Path) -> Path:
        """Write the manifest as JSON (atomically: temp file then rename)."""
        path = Path(path)
        if path.is_dir():
            path = path / "manifest.json"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n", encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def from_dict(cls, data: Any, source: str = "<manifest>") -> "ModelManifest":
        r = _Reader(source, data)
        r.unknown(
            (
                "format_version", "name", "version", "task", "file", "sha256", "opset", "inputs", "outputs",
                "preprocessing", "labels", "calibration", "provenance", "trt_profile", "variants", "verification",
                "input_domain", "output_domain",
            )
        )
        fmt = r.get("format_version", int)
        if fmt != FORMAT_VERSION:
            r.fail(f"{fmt} is not supported (this node reads {FORMAT_VERSION}); upgrade CardioNode", "format_version")

        def tensors(key: str) -> tuple[TensorSpec, ...]:
            items = r.get(key, list)
            return tuple(TensorSpec.from_dict(_Reader(source, item, f"{key}[{i}]")) for i, item in enumerate(items))

        labels = tuple(
            LabelSpec.from_dict(_Reader(source, item, f"labels[{i}]"))
            for i, item in enumerate(r.get("labels", list, []))
        )
        prov = r.child("provenance")
        assert prov is not None
        trt: dict[str, TrtProfile] = {}
        trt_r = r.child("trt_profile", {})
        if trt_r is not None:
            for inp in trt_r.data:
                pr = trt_r.child(inp)
                assert pr is not None
                pr.unknown(("min", "opt", "max"))
                parts = {}
                for part in ("min", "opt", "max"):
                    dims = pr.get(part, list)
                    if not all(isinstance(d, int) and not isinstance(d, bool) for d in dims):
                        pr.fail(f"expected a list of integers, got {dims!r}", pr.sub(part))
                    parts[part] = tuple(dims)
                trt[inp] = TrtProfile(**parts)
        variants: dict[str, ModelVariant] = {}
        var_r = r.child("variants", {})
        if var_r is not None:
            for vname in var_r.data:
                vr = var_r.child(vname)
                assert vr is not None
                vr.unknown(("file", "sha256", "precision", "max_abs_error", "max_rel_error"))
                variants[vname] = ModelVariant(
                    file=vr.text("file"),
                    sha256=vr.text("sha256"),
                    precision=vr.text("precision"),
                    max_abs_error=vr.get("max_abs_error", (int, float), None, allow_none=True),
                    max_rel_error=vr.get("max_rel_error", (int, float), None, allow_none=True),
                )
        domains: dict[str, dict[str, DomainRange]] = {}
        for key in ("input_domain", "output_domain"):
            domains[key] = {}
            dom_r = r.child(key, {})
            if dom_r is not None:
                for prop in dom_r.data:
                    pr = dom_r.child(prop)
                    assert pr is not None
                    domains[key][prop] = DomainRange.from_dict(pr)
        try:
            return cls(
                name=r.text("name"),
                version=r.text("version"),
                task=r.text("task"),
                file=r.text("file", "model.onnx"),
                sha256=r.text("sha256"),
                opset=r.get("opset", int),
                inputs=tensors("inputs"),
                outputs=tensors("outputs"),
                preprocessing=dict(r.get("preprocessing", dict, {})),
                labels=labels,
                calibration=dict(r.get("calibration", dict, {})),
                provenance=Provenance.from_dict(prov),
                format_version=fmt,
                trt_profile=trt,
                variants=variants,
                verification=dict(r.get("verification", dict, {})),
                input_domain=domains["input_domain"],
                output_domain=domains["output_domain"],
            )
        except ManifestError as exc:
            # __post_init__ names the model; re-raise naming the file instead.
            raise ManifestError(str(exc).replace(f"manifest of {data.get('name')!r}", source, 1)) from None

    @classmethod
    def load(cls, path: str | Path) -> "ModelManifest":
        """Read and validate ``manifest.json`` (or the manifest in directory ``path``)."""
        path = Path(path)
        if path.is_dir():
            path = path / "manifest.json"
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ManifestError(f"{path}: manifest not found") from None
        except OSError as exc:
            raise ManifestError(f"{path}: cannot read manifest: {exc.strerror}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{path}: not valid JSON: {exc}") from None
        return cls.from_dict(data, source=str(path))
