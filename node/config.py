"""Node configuration: YAML loaded into frozen dataclasses and validated on load.

Every section is a dataclass; :func:`load_config` walks the YAML tree against
those dataclasses (with :func:`configschema.build`, the loader the pipelines'
options use too) so that a wrong key or value produces exactly one
:class:`ConfigError` naming the key path and what is allowed.  Nothing here is
global: the loaded :class:`NodeConfig` is passed to whatever needs it.

Paths: every key that names a file or folder (fields declared with
:func:`configschema.path_field`, plus ``node.plugins`` entries written as files) is made
absolute once, while loading, by one rule: a relative path is relative to the
working directory of the command that loads the file (``~`` is expanded).
Every component then receives the same absolute path, whatever its own
working directory.  Overrides (``--set key=value``, ``--port``, environment
variables: :func:`apply_overrides`) are applied to the YAML tree before
validation, so a wrong override is reported like a wrong key in the file.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import yaml

from configschema import ConfigError, build, path_field, resolve_path
from pipelines.runtime.settings import ModelsSection

__all__ = [
    "ConfigError",
    "NodeConfig",
    "NodeSection",
    "TLSSection",
    "ModelsSection",
    "JobsSection",
    "DispatchSection",
    "RetentionSection",
    "ConsoleSection",
    "NotificationsSection",
    "WebhookSection",
    "NOTIFY_EVENTS",
    "ApiSection",
    "DimseDestination",
    "DicomwebDestination",
    "AuthSection",
    "DimseSource",
    "DicomwebSource",
    "RouteMatch",
    "SeriesRequirement",
    "Route",
    "LocalExecutorSection",
    "RayExecutorSection",
    "RayEmbeddedSection",
    "RayPipelineResources",
    "load_config",
    "parse_config",
    "apply_overrides",
    "parse_override",
]


_AE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # DICOM AE: 16 chars, no backslash


def _check_ae(value: str, path: str) -> None:
    if not _AE_RE.match(value) or not value.strip():
        raise ConfigError(f"{path}: {value!r} is not a valid AE title (1-16 printable characters, no backslash)")


def _check_port(value: int, path: str) -> None:
    if not 0 <= value <= 65535:
        raise ConfigError(f"{path}: {value} is not a TCP port (0-65535)")


def is_plugin_file(entry: str) -> bool:
    """A ``node.plugins`` entry naming a Python file (``./my_plugin.py``) rather than a module (``my_pkg.plugin``)."""
    return entry.endswith(".py")


@dataclasses.dataclass(frozen=True)
class TLSSection:
    """TLS certificate, key and trusted CAs (DIMSE listener ``node.tls``, HTTP port ``node.http_tls``,
    DIMSE destinations)."""

    certificate: str = path_field(dataclasses.MISSING)
    private_key: str = path_field(dataclasses.MISSING)
    ca_certificates: str | None = path_field()
    require_client_certificate: bool = False


@dataclasses.dataclass(frozen=True)
class NodeSection:
    """The service itself: DIMSE listener, storage, completion, workers."""

    ae_title: str = "CARDIONODE"
    host: str = "0.0.0.0"
    port: int = 11112
    storage_dir: str = path_field("./var")
    quiet_seconds: float = 30.0
    settle_seconds: float = 0.5
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
    group_commit: bool = False
    ingest_processes: int = 1
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
        if self.settle_seconds < 0:
            raise ConfigError(f"{path}.settle_seconds: must be >= 0, got {self.settle_seconds}")
        for key, count in (("max_associations", self.max_associations),
                           ("max_pending_per_host", self.max_pending_per_host), ("max_pending", self.max_pending)):
            if count < 1:
                raise ConfigError(f"{path}.{key}: must be >= 1, got {count}")
        for key, seconds in (("association_timeout_s", self.association_timeout_s),
                             ("pdu_timeout_s", self.pdu_timeout_s), ("idle_timeout_s", self.idle_timeout_s),
                             ("http_body_timeout_s", self.http_body_timeout_s)):
            if not seconds > 0:
                raise ConfigError(f"{path}.{key}: must be > 0 seconds, got {seconds}")
        if self.workers < 1:
            raise ConfigError(f"{path}.workers: must be >= 1, got {self.workers}")
        if self.ingest_processes < 1:
            raise ConfigError(f"{path}.ingest_processes: must be >= 1, got {self.ingest_processes}")
        if self.min_free_mb < 0:
            raise ConfigError(f"{path}.min_free_mb: must be >= 0, got {self.min_free_mb}")
        if self.http_enabled and self.port and self.port == self.http_port:
            raise ConfigError(f"{path}.http_port: {self.http_port} is also node.port; the DIMSE and HTTP listeners "
                              "need different ports (change node.http_port or pass --http-port)")
        for i, caller in enumerate(self.allowed_callers):
            ae, _, _host = caller.partition("@")
            _check_ae(ae, f"{path}.allowed_callers[{i}]")

    @property
    def storage_path(self) -> Path:
        return Path(self.storage_dir)


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
    keep_audit_days: float = 365.0


@dataclasses.dataclass(frozen=True)
class ApiSection:
    """Bearer token of the HTTP port: the status API and /metrics always need it, STOW-RS unless
    ``stow_requires_token`` is switched off; with no token configured they refuse every request."""

    token: str | None = None
    token_file: str | None = path_field()
    stow_requires_token: bool = True


@dataclasses.dataclass(frozen=True)
class ConsoleSection:
    """The operator console on the HTTP port (docs/console.md): sessions last ``session_hours``;
    ``viewer_url`` opens a study in a viewer, ``{study_uid}`` replaced by its Study Instance UID
    (e.g. ``https://ohif.example.org/viewer?StudyInstanceUIDs={study_uid}``)."""

    enabled: bool = True
    session_hours: float = 8.0
    viewer_url: str | None = None

    def validate(self, path: str) -> None:
        if not 0 < self.session_hours <= 24 * 30:
            raise ConfigError(f"{path}.session_hours: {self.session_hours} is not in (0, 720]")
        if self.viewer_url is not None:
            if "{study_uid}" not in self.viewer_url:
                raise ConfigError(f"{path}.viewer_url: needs the placeholder {{study_uid}}")
            if not self.viewer_url.startswith(("http://", "https://", "/")):
                raise ConfigError(f"{path}.viewer_url: must start with http://, https:// or /")


#: What a webhook can be told about (docs/console.md, "Notifications").
NOTIFY_EVENTS = ("job_failed", "delivery_failed", "disk_low", "model_failed")


@dataclasses.dataclass(frozen=True)
class WebhookSection:
    """One webhook: events are POSTed to ``url`` as JSON (``Authorization: Bearer`` when ``token`` is set)."""

    url: str
    events: tuple[str, ...] = NOTIFY_EVENTS
    token: str | None = None
    verify_tls: bool = True

    def validate(self, path: str) -> None:
        if not re.match(r"^https?://", self.url):
            raise ConfigError(f"{path}.url: {self.url!r} must start with http:// or https://")
        unknown = [e for e in self.events if e not in NOTIFY_EVENTS]
        if unknown:
            raise ConfigError(f"{path}.events: unknown event {unknown[0]!r} (known: {', '.join(NOTIFY_EVENTS)})")


@dataclasses.dataclass(frozen=True)
class NotificationsSection:
    """Webhooks told about failures; each message is retried with backoff up to ``max_attempts``."""

    webhooks: Mapping[str, WebhookSection] = dataclasses.field(default_factory=dict)
    max_attempts: int = 8
    backoff_initial_s: float = 5.0
    backoff_max_s: float = 600.0
    timeout_s: float = 10.0
    disk_check_s: float = 60.0

    def validate(self, path: str) -> None:
        if self.max_attempts < 1:
            raise ConfigError(f"{path}.max_attempts: at least 1")
        if self.disk_check_s <= 0 or self.timeout_s <= 0:
            raise ConfigError(f"{path}: disk_check_s and timeout_s must be positive")


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
    #: any DICOM keyword -> the value, or a list of values (any of); exact after stripping blanks
    keywords: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    #: any DICOM keyword -> a Python regex, searched in the value
    regex: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def validate(self, path: str) -> None:
        _check_regex(self.series_description, f"{path}.series_description")
        from pydicom.datadict import dictionary_VR, tag_for_keyword

        for section, names in (("keywords", self.keywords), ("regex", self.regex)):
            for keyword in names:
                tag = tag_for_keyword(keyword)
                if tag is None:
                    raise ConfigError(f"{path}.{section}.{keyword}: not a DICOM keyword (e.g. BodyPartExamined, "
                                      "StudyDescription, Manufacturer, ProtocolName)")
                if dictionary_VR(tag) == "SQ":
                    raise ConfigError(f"{path}.{section}.{keyword}: a sequence; only plain values can be matched")
        for keyword, pattern in self.regex.items():
            _check_regex(pattern, f"{path}.regex.{keyword}")


def _check_regex(value: str | None, path: str) -> None:
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise ConfigError(f"{path}: invalid regex: {exc}") from None


@dataclasses.dataclass(frozen=True)
class SeriesRequirement:
    """One series a route needs (``routes[].requires``): all given criteria hold for the series,
    a list means any of; ``min_series`` such series must be there (and complete)."""

    name: str
    modality: tuple[str, ...] = ()
    sop_class: tuple[str, ...] = ()
    series_description: str | None = None
    scanning_sequence: tuple[str, ...] = ()
    sequence_variant: tuple[str, ...] = ()
    sequence_name: str | None = None
    min_series: int = 1

    def validate(self, path: str) -> None:
        if not re.match(r"^[A-Za-z0-9_.-]+$", self.name):
            raise ConfigError(f"{path}.name: {self.name!r} must be a name of letters, digits, '_', '.', '-'")
        _check_regex(self.series_description, f"{path}.series_description")
        _check_regex(self.sequence_name, f"{path}.sequence_name")
        if self.min_series < 1:
            raise ConfigError(f"{path}.min_series: must be >= 1, got {self.min_series}")
        if not (self.modality or self.sop_class or self.series_description is not None or self.scanning_sequence
                or self.sequence_variant or self.sequence_name is not None):
            raise ConfigError(f"{path}: give at least one of modality, sop_class, series_description, "
                              "scanning_sequence, sequence_variant, sequence_name")


@dataclasses.dataclass(frozen=True)
class Route:
    pipeline: str
    match: RouteMatch = RouteMatch()
    destinations: tuple[str, ...] = ()
    name: str | None = None
    quiet_seconds: float | None = None
    #: jobs of a route with a higher priority are claimed first (e.g. 10 for urgent, 0 routine)
    priority: int = 0
    requires: tuple[SeriesRequirement, ...] = ()
    max_wait_seconds: float | None = None
    incomplete: Literal["proceed", "wait", "give_up"] = "proceed"

    def validate(self, path: str) -> None:
        if self.quiet_seconds is not None and self.quiet_seconds < 0:
            raise ConfigError(f"{path}.quiet_seconds: must be >= 0, got {self.quiet_seconds}")
        names = [r.name for r in self.requires]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ConfigError(f"{path}.requires[{i}].name: {name!r} is given twice")
        if self.max_wait_seconds is not None and not self.max_wait_seconds > 0:
            raise ConfigError(f"{path}.max_wait_seconds: must be > 0, got {self.max_wait_seconds}")
        if self.incomplete != "proceed" and not self.requires:
            raise ConfigError(f"{path}.incomplete: {self.incomplete!r} needs requires (the series the route waits for)")
        if self.incomplete != "proceed" and self.max_wait_seconds is None:
            raise ConfigError(f"{path}.max_wait_seconds: required with incomplete: {self.incomplete} "
                              "(how long the study may wait for the missing series)")


_RAY_ADDRESS_RE = re.compile(r"^(?:ray://)?(?P<host>[A-Za-z0-9_.:\[\]-]+):(?P<port>[0-9]{1,5})$")
#: Ray's own resource names; they are declared with num_cpus / num_gpus / memory_mb, never under ``resources``
_RAY_RESERVED_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")


def _check_ray_amount(value: float, path: str) -> None:
    """Ray's rule for resource amounts: >= 0, and a whole number when above 1."""
    if value < 0:
        raise ConfigError(f"{path}: must be >= 0, got {value}")
    if value > 1 and value != int(value):
        raise ConfigError(f"{path}: Ray takes fractions only below 1 (e.g. 0.5), got {value}")


@dataclasses.dataclass(frozen=True)
class RayPipelineResources:
    """How many Ray actors run one pipeline and what each of them reserves on its Ray node."""

    actors: int = 1
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    memory_mb: int = 0
    resources: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def validate(self, path: str) -> None:
        if self.actors < 1:
            raise ConfigError(f"{path}.actors: must be >= 1, got {self.actors}")
        _check_ray_amount(self.num_cpus, f"{path}.num_cpus")
        _check_ray_amount(self.num_gpus, f"{path}.num_gpus")
        if self.memory_mb < 0:
            raise ConfigError(f"{path}.memory_mb: must be >= 0 (0 = no reservation), got {self.memory_mb}")
        for name, amount in self.resources.items():
            if name in _RAY_RESERVED_RESOURCES:
                raise ConfigError(f"{path}.resources.{name}: Ray's own resource; use num_cpus, num_gpus or memory_mb")
            if amount <= 0:
                raise ConfigError(f"{path}.resources.{name}: must be > 0, got {amount}")
            _check_ray_amount(amount, f"{path}.resources.{name}")


@dataclasses.dataclass(frozen=True)
class RayEmbeddedSection:
    """The local Ray the node starts itself when ``executor.address`` is null (null = Ray detects)."""

    num_cpus: int | None = None
    num_gpus: int | None = None
    object_store_mb: int | None = None
    resources: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def validate(self, path: str) -> None:
        for key, value in (("num_cpus", self.num_cpus), ("num_gpus", self.num_gpus)):
            if value is not None and value < 0:
                raise ConfigError(f"{path}.{key}: must be >= 0, got {value}")
        if self.object_store_mb is not None and self.object_store_mb < 80:
            raise ConfigError(f"{path}.object_store_mb: Ray needs at least 80 MB, got {self.object_store_mb}")
        for name, amount in self.resources.items():
            if name in _RAY_RESERVED_RESOURCES:
                raise ConfigError(f"{path}.resources.{name}: Ray's own resource; use num_cpus or num_gpus")
            _check_ray_amount(amount, f"{path}.resources.{name}")


@dataclasses.dataclass(frozen=True)
class LocalExecutorSection:
    """Pipeline jobs run in ``node.workers`` threads of the node process (the default)."""

    type: Literal["local"]


@dataclasses.dataclass(frozen=True)
class RayExecutorSection:
    """Pipeline jobs run on Ray actors that keep each pipeline's models loaded (see docs/scale.md)."""

    type: Literal["ray"]
    address: str | None = None
    namespace: str = "cardionode"
    max_in_flight: int = 4
    transfer: Literal["object_store", "shared_filesystem"] = "object_store"
    worker_storage_dir: str | None = None
    auth_token_file: str | None = path_field()
    connect_timeout_s: float = 60.0
    reconnect_max_s: float = 30.0
    embedded: RayEmbeddedSection = RayEmbeddedSection()
    pipelines: Mapping[str, RayPipelineResources] = dataclasses.field(default_factory=dict)

    def validate(self, path: str) -> None:
        if self.address is not None and self.address != "auto":
            m = _RAY_ADDRESS_RE.match(self.address)
            if m is None:
                raise ConfigError(f"{path}.address: {self.address!r} is not a Ray address "
                                  "(allowed: auto, ray://host:port, host:port, or null for an embedded Ray)")
            port = int(m.group("port"))
            if not 1 <= port <= 65535:
                raise ConfigError(f"{path}.address: {port} is not a TCP port (1-65535)")
        if self.address is not None and self.embedded != RayEmbeddedSection():
            raise ConfigError(f"{path}.embedded: only used without address (the node then starts its own Ray); "
                              f"the cluster at {self.address!r} declares its resources with `ray start`")
        if not self.namespace.strip():
            raise ConfigError(f"{path}.namespace: must not be empty")
        if self.max_in_flight < 1:
            raise ConfigError(f"{path}.max_in_flight: must be >= 1, got {self.max_in_flight}")
        if self.worker_storage_dir is not None and self.transfer != "shared_filesystem":
            raise ConfigError(f"{path}.worker_storage_dir: only used with transfer: shared_filesystem")
        if self.worker_storage_dir is not None and not self.worker_storage_dir.startswith("/"):
            raise ConfigError(f"{path}.worker_storage_dir: {self.worker_storage_dir!r} must be an absolute path "
                              "(it is a path on the Ray workers, not relative to the node)")
        if self.connect_timeout_s <= 0:
            raise ConfigError(f"{path}.connect_timeout_s: must be > 0, got {self.connect_timeout_s}")
        if self.reconnect_max_s < 1:
            raise ConfigError(f"{path}.reconnect_max_s: must be >= 1, got {self.reconnect_max_s}")

    def resources_for(self, pipeline: str) -> RayPipelineResources:
        """The pipeline's entry under ``pipelines`` (one actor with one CPU when absent)."""
        return self.pipelines.get(pipeline, RayPipelineResources())


@dataclasses.dataclass(frozen=True)
class NodeConfig:
    node: NodeSection = NodeSection()
    models: ModelsSection = ModelsSection()
    jobs: JobsSection = JobsSection()
    dispatch: DispatchSection = DispatchSection()
    retention: RetentionSection = RetentionSection()
    api: ApiSection = ApiSection()
    console: ConsoleSection = ConsoleSection()
    notifications: NotificationsSection = NotificationsSection()
    executor: LocalExecutorSection | RayExecutorSection = LocalExecutorSection(type="local")
    destinations: Mapping[str, DimseDestination | DicomwebDestination] = dataclasses.field(default_factory=dict)
    sources: Mapping[str, DimseSource | DicomwebSource] = dataclasses.field(default_factory=dict)
    routes: tuple[Route, ...] = ()
    pipelines: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    source_path: str | None = dataclasses.field(default=None, metadata={"internal": True})  # the file it came from

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


def parse_config(data: Any, source_path: str | None = None, base_dir: str | Path | None = None) -> NodeConfig:
    """Validate an already-parsed YAML/JSON tree and return the config.

    Relative paths are made absolute against ``base_dir`` (default: the
    current working directory), once, here.
    """
    base = (Path(base_dir) if base_dir is not None else Path.cwd()).absolute()
    config = build(NodeConfig, data, base_dir=base)
    plugins = tuple(resolve_path(p, base) if is_plugin_file(p) else p for p in config.node.plugins)
    return dataclasses.replace(config, source_path=source_path, node=dataclasses.replace(config.node, plugins=plugins))


def load_config(path: str | Path | None, overrides: Sequence[tuple[str, Any]] = (),
                base_dir: str | Path | None = None) -> NodeConfig:
    """Read and validate a YAML config file (None: the built-in defaults), after ``overrides``.

    Relative paths in the file (``storage_dir: ./var``) and in the overrides
    are relative to the working directory (or ``base_dir``), as an operator
    expects from ``./var`` in the shipped file; see the module docstring.
    """
    data: Any = {}
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror} (give the file with --config PATH)") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    if overrides:
        data = apply_overrides(data, overrides)
    return parse_config(data, source_path=str(path) if path is not None else None, base_dir=base_dir)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line: what PyYAML found and where (its own message spans several lines)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + " ".join(str(problem).split())


# --------------------------------------------------------------------------- overrides


def parse_override(text: str) -> tuple[str, Any]:
    """``"node.port=11113"`` -> ``("node.port", 11113)``; the value is read as YAML (numbers, true, [a, b])."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE with a dotted key, e.g. node.quiet_seconds=5")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML: {_yaml_problem(exc)}") from None
    return key, value


def apply_overrides(data: Any, overrides: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    """A copy of the YAML tree with each ``(dotted.key, value)`` set, in order (later ones win).

    Intermediate mappings are created when missing (``destinations.pacs.port``
    needs ``destinations.pacs`` to exist for a useful result, but validation,
    not this function, says so).  Routes are a list: ``routes`` can only be
    replaced as a whole.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"config: expected a mapping at the top level, got {data!r}")
    out: dict[str, Any] = _deep_copy(data)
    for key, value in overrides:
        parts = key.split(".")
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"{'.'.join(parts[:i + 1])}: is not a mapping, cannot set {key}")
            node = child
        node[parts[-1]] = value
    return out


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value
