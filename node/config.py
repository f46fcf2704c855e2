"""Node configuration: YAML loaded into frozen dataclasses and validated on load.

Every section is a dataclass; :func:`load_config` walks the YAML tree against
those dataclasses so that a wrong key or value produces exactly one
:class:`ConfigError` naming the key path and what is allowed.  Nothing here is
global: the loaded :class:`NodeConfig` is passed to whatever needs it.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml

__all__ = [
    "ConfigError",
    "NodeConfig",
    "NodeSection",
    "TLSSection",
    "ModelsSection",
    "JobsSection",
    "DispatchSection",
    "RetentionSection",
    "ApiSection",
    "DimseDestination",
    "DicomwebDestination",
    "AuthSection",
    "DimseSource",
    "DicomwebSource",
    "RouteMatch",
    "Route",
    "load_config",
    "parse_config",
]


class ConfigError(ValueError):
    """A configuration value is missing, unknown or not allowed."""


_AE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # DICOM AE: 16 chars, no backslash


def _check_ae(value: str, path: str) -> None:
    if not _AE_RE.match(value) or not value.strip():
        raise ConfigError(f"{path}: {value!r} is not a valid AE title (1-16 printable characters, no backslash)")


def _check_port(value: int, path: str) -> None:
    if not 0 <= value <= 65535:
        raise ConfigError(f"{path}: {value} is not a TCP port (0-65535)")


@dataclasses.dataclass(frozen=True)
class TLSSection:
    """TLS certificate, key and trusted CAs (DIMSE listener ``node.tls``, HTTP port ``node.http_tls``,
    DIMSE destinations)."""

    certificate: str
    private_key: str
    ca_certificates: str | None = None
    require_client_certificate: bool = False


@dataclasses.dataclass(frozen=True)
class NodeSection:
    """The service itself: DIMSE listener, storage, completion, workers."""

    ae_title: str = "CARDIONODE"
    host: str = "0.0.0.0"
    port: int = 11112
    storage_dir: str = "./var"
    quiet_seconds: float = 30.0
    late_arrivals: Literal["reprocess", "ignore"] = "reprocess"
    max_associations: int = 10
    max_pending_per_host: int = 4
    max_pending: int = 32
    association_timeout_s: float = 10.0
    pdu_timeout_s: float = 30.0
    idle_timeout_s: float = 60.0
    allowed_callers: tuple[str, ...] = ()
    check_called_ae: bool = True
    tls: TLSSection | None = None
    min_free_mb: int = 1024
    max_pdu: int = 0
    workers: int = 1
    http_host: str = "127.0.0.1"  # loopback unless configured otherwise
    http_port: int = 8080
    http_enabled: bool = True
    http_tls: TLSSection | None = None
    max_upload_mb: int = 2048
    http_body_timeout_s: float = 30.0
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    plugins: tuple[str, ...] = ()

    def validate(self, path: str) -> None:
        _check_ae(self.ae_title, f"{path}.ae_title")
        _check_port(self.port, f"{path}.port")
        _check_port(self.http_port, f"{path}.http_port")
        if self.quiet_seconds < 0:
            raise ConfigError(f"{path}.quiet_seconds: must be >= 0, got {self.quiet_seconds}")
        for key in ("max_associations", "max_pending_per_host", "max_pending"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{path}.{key}: must be >= 1, got {getattr(self, key)}")
        for key in ("association_timeout_s", "pdu_timeout_s", "idle_timeout_s", "http_body_timeout_s"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"{path}.{key}: must be > 0 seconds, got {getattr(self, key)}")
        if self.workers < 1:
            raise ConfigError(f"{path}.workers: must be >= 1, got {self.workers}")
        if self.min_free_mb < 0:
            raise ConfigError(f"{path}.min_free_mb: must be >= 0, got {self.min_free_mb}")
        for i, caller in enumerate(self.allowed_callers):
            ae, _, _host = caller.partition("@")
            _check_ae(ae, f"{path}.allowed_callers[{i}]")

    @property
    def storage_path(self) -> Path:
        return Path(self.storage_dir)


@dataclasses.dataclass(frozen=True)
class ModelsSection:
    """Where models come from and how ONNX Runtime runs them."""

    dir: str | None = None
    providers: tuple[Literal["tensorrt", "cuda", "cpu"], ...] = ("tensorrt", "cuda", "cpu")
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"
    tensorrt_fp16: bool = True
    tensorrt_cache_dir: str | None = None
    warmup: bool = True

    def validate(self, path: str) -> None:
        if not self.providers:
            raise ConfigError(f"{path}.providers: list at least one of tensorrt, cuda, cpu")
        if self.intra_op_threads < 0 or self.inter_op_threads < 0:
            raise ConfigError(f"{path}: thread counts must be >= 0 (0 = ONNX Runtime default)")


@dataclasses.dataclass(frozen=True)
class JobsSection:
    """Pipeline job retries (transient errors only)."""

    max_attempts: int = 3
    backoff_initial_s: float = 5.0
    backoff_max_s: float = 300.0


@dataclasses.dataclass(frozen=True)
class DispatchSection:
    """Result delivery retries; a destination is retried until max_attempts."""

    max_attempts: int = 50
    backoff_initial_s: float = 2.0
    backoff_max_s: float = 300.0
    timeout_s: float = 30.0


@dataclasses.dataclass(frozen=True)
class RetentionSection:
    """What happens to spooled instances once their study is done."""

    delete_spool_after_success: bool = False
    keep_days: float = 7.0
    keep_unmatched_days: float = 7.0
    keep_results_days: float = 30.0


@dataclasses.dataclass(frozen=True)
class ApiSection:
    """Bearer token of the HTTP port: the status API and /metrics always need it, STOW-RS unless
    ``stow_requires_token`` is switched off; with no token configured they refuse every request."""

    token: str | None = None
    token_file: str | None = None
    stow_requires_token: bool = True


@dataclasses.dataclass(frozen=True)
class AuthSection:
    type: Literal["none", "basic", "bearer"] = "none"
    username: str | None = None
    password: str | None = None
    token: str | None = None

    def validate(self, path: str) -> None:
        if self.type == "basic" and (self.username is None or self.password is None):
            raise ConfigError(f"{path}: basic auth needs username and password")
        if self.type == "bearer" and not self.token:
            raise ConfigError(f"{path}: bearer auth needs token")


@dataclasses.dataclass(frozen=True)
class _DimsePeer:
    """A remote DIMSE application entity (destination or retrieve source)."""

    type: Literal["dimse"]
    ae_title: str
    host: str
    port: int

    def validate(self, path: str) -> None:
        _check_ae(self.ae_title, f"{path}.ae_title")
        _check_port(self.port, f"{path}.port")


@dataclasses.dataclass(frozen=True)
class DimseDestination(_DimsePeer):
    tls: TLSSection | None = None


@dataclasses.dataclass(frozen=True)
class DimseSource(_DimsePeer):
    retrieve: Literal["get", "move"] = "get"


@dataclasses.dataclass(frozen=True)
class DicomwebDestination:
    """A DICOMweb service (results are STOWed to it; as a source it is queried and retrieved)."""

    type: Literal["dicomweb"]
    url: str
    auth: AuthSection = AuthSection()
    verify_tls: bool = True

    def validate(self, path: str) -> None:
        if not re.match(r"^https?://", self.url):
            raise ConfigError(f"{path}.url: {self.url!r} must start with http:// or https://")


@dataclasses.dataclass(frozen=True)
class DicomwebSource(DicomwebDestination):
    pass


@dataclasses.dataclass(frozen=True)
class RouteMatch:
    """All given criteria must hold for one instance of the study; a list means any of."""

    modality: tuple[str, ...] = ()
    sop_class: tuple[str, ...] = ()
    series_description: str | None = None
    calling_ae: tuple[str, ...] = ()

    def validate(self, path: str) -> None:
        if self.series_description is not None:
            try:
                re.compile(self.series_description)
            except re.error as exc:
                raise ConfigError(f"{path}.series_description: invalid regex: {exc}") from None


@dataclasses.dataclass(frozen=True)
class Route:
    pipeline: str
    match: RouteMatch = RouteMatch()
    destinations: tuple[str, ...] = ()
    name: str | None = None
    quiet_seconds: float | None = None


@dataclasses.dataclass(frozen=True)
class NodeConfig:
    node: NodeSection = NodeSection()
    models: ModelsSection = ModelsSection()
    jobs: JobsSection = JobsSection()
    dispatch: DispatchSection = DispatchSection()
    retention: RetentionSection = RetentionSection()
    api: ApiSection = ApiSection()
    destinations: Mapping[str, DimseDestination | DicomwebDestination] = dataclasses.field(default_factory=dict)
    sources: Mapping[str, DimseSource | DicomwebSource] = dataclasses.field(default_factory=dict)
    routes: tuple[Route, ...] = ()
    pipelines: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    source_path: str | None = None

    def validate(self, path: str) -> None:
        for i, route in enumerate(self.routes):
            for dest in route.destinations:
                if dest not in self.destinations:
                    allowed = ", ".join(sorted(self.destinations)) or "none configured"
                    raise ConfigError(
                        f"routes[{i}].destinations: unknown destination {dest!r} (configured: {allowed})"
                    )

    def route_name(self, index: int) -> str:
        route = self.routes[index]
        return route.name or f"route{index}-{route.pipeline}"

    def pipeline_options(self, name: str) -> Mapping[str, Any]:
        """Options for one pipeline from the ``pipelines:`` section (empty when absent)."""
        return self.pipelines.get(name, {})


# --------------------------------------------------------------------------- parsing


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if dataclasses.is_dataclass(tp):
        return "mapping"
    if origin in (tuple, list):
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin in (dict, collections.abc.Mapping):
        return "mapping"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        dataclass_args = [a for a in args if dataclasses.is_dataclass(a)]
        # Tagged union of dataclasses: choose by the 'type' key.
        if len(dataclass_args) > 1 and isinstance(value, Mapping):
            tags = {typing.get_args(typing.get_type_hints(a)["type"])[0]: a for a in dataclass_args}
            tag = value.get("type")
            if tag not in tags:
                raise ConfigError(f"{path}.type: {tag!r} is not allowed (allowed: {', '.join(map(repr, tags))})")
            return _build(tags[tag], value, path)
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{path}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{path}: {value!r} is not allowed (allowed: {', '.join(map(repr, allowed))})")
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if origin in (tuple, list):
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]  # a single value where a list is allowed
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
        (item_tp, *_rest) = typing.get_args(tp)
        return tuple(_convert(item_tp, v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin in (dict, collections.abc.Mapping):
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        key_tp, val_tp = typing.get_args(tp)
        out = {}
        for k, v in value.items():
            if not isinstance(k, str) or not re.match(r"^[A-Za-z0-9_.-]+$", k):
                raise ConfigError(f"{path}: key {k!r} must be a name of letters, digits, '_', '.', '-'")
            out[k] = _convert(val_tp, v, f"{path}.{k}")
        return types.MappingProxyType(out)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {path}")


def _build(cls: type, data: Any, path: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source_path"}
    unknown = [k for k in data if k not in fields]
    if unknown:
        where = f"{path}.{unknown[0]}" if path else str(unknown[0])
        raise ConfigError(f"{where}: unknown key (allowed here: {', '.join(fields)})")
    kwargs = {}
    for name, field in fields.items():
        sub = f"{path}.{name}" if path else name
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], sub)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{sub}: required key is missing")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(path)
    return obj


def parse_config(data: Any, source_path: str | None = None) -> NodeConfig:
    """Validate an already-parsed YAML/JSON tree and return the config."""
    config = _build(NodeConfig, data, "")
    return dataclasses.replace(config, source_path=source_path)


def load_config(path: str | Path) -> NodeConfig:
    """Read and validate a YAML config file.

    Relative ``storage_dir`` and model paths are kept as written; they are
    resolved against the working directory, as an operator would expect from
    ``./var`` in the default file.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(data, source_path=str(path))
