"""Start-up checks: everything the node needs from its machine, checked before it changes anything.

:class:`node.service.NodeService` runs these before it opens the database,
creates an ONNX Runtime session or binds a listener, so that a wrong setting
stops the node with one :class:`StartupError` whose message names the cause
and the config key (or command-line flag) to change, instead of a traceback
from deep inside a component or a half-started process.  Each check returns
nothing or what it built (the model store), and raises on the first problem.
"""
from __future__ import annotations

import errno
import os
import socket
import ssl
from pathlib import Path
from typing import Iterable

from pipelines.runtime import ModelStore
from pipelines.runtime.providers import onnxruntime_conflict

from .config import NodeConfig, TLSSection
from .state import DB_FILENAME, SchemaTooNew, check_version

__all__ = [
    "StartupError",
    "check_storage",
    "check_dimse_library",
    "check_tls",
    "check_token_file",
    "check_ports",
    "check_models",
    "check_executor",
    "MODEL_PIPELINES",
]

#: Built-in pipelines that run bundled (or ``models.dir``) ONNX models.
MODEL_PIPELINES = frozenset({"syntax", "calcium", "myops"})


class StartupError(RuntimeError):
    """The node cannot start; the message is one line naming the cause and the key or flag to change."""


def _reason(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower() if isinstance(exc, OSError) else str(exc)


# --------------------------------------------------------------------------- storage


def check_storage(storage_dir: str | Path) -> None:
    """The storage folder exists (created if missing) and this process can create files in it."""
    folder = Path(storage_dir)
    fix = "choose a writable folder with node.storage_dir (or --set node.storage_dir=PATH)"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise StartupError(f"node.storage_dir: {folder} exists and is not a folder; {fix}") from None
    except OSError as exc:
        raise StartupError(f"node.storage_dir: cannot create {folder}: {_reason(exc)}; {fix}") from None
    probe = folder / f".write-test-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        try:
            os.write(fd, b"x")
        finally:
            os.close(fd)
        probe.unlink()
    except OSError as exc:
        raise StartupError(f"node.storage_dir: {folder} is not writable ({_reason(exc)}); "
                           f"give this user write access to it or {fix}") from None
    database = folder / DB_FILENAME
    if database.exists():
        try:
            with open(database, "r+b"):
                pass
        except OSError as exc:
            raise StartupError(f"node.storage_dir: the node database {database} is not writable ({_reason(exc)}); "
                               f"give this user write access to it or {fix}") from None
        try:
            check_version(folder)
        except SchemaTooNew as exc:
            raise StartupError(f"node.storage_dir: {exc}") from None


# --------------------------------------------------------------------------- TLS and token


def _check_readable(path: str, key: str) -> None:
    try:
        with open(path, "rb") as f:
            f.read(1)
    except FileNotFoundError:
        raise StartupError(f"{key}: {path} does not exist; fix the path in {key}") from None
    except IsADirectoryError:
        raise StartupError(f"{key}: {path} is a folder, not a PEM file; fix the path in {key}") from None
    except OSError as exc:
        raise StartupError(f"{key}: cannot read {path} ({_reason(exc)}); "
                           f"let this user read it or change {key}") from None


def check_tls(tls: TLSSection | None, key: str, server: bool = True) -> None:
    """Every file of one TLS section exists, is readable and loads as PEM (certificate matches key)."""
    if tls is None:
        return
    for attr, path in (("certificate", tls.certificate), ("private_key", tls.private_key),
                       ("ca_certificates", tls.ca_certificates)):
        if path:
            _check_readable(path, f"{key}.{attr}")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    try:
        ctx.load_cert_chain(tls.certificate, tls.private_key)
    except (ssl.SSLError, ValueError) as exc:
        raise StartupError(f"{key}: certificate {tls.certificate} and private key {tls.private_key} cannot be "
                           f"loaded ({getattr(exc, 'reason', None) or exc}); give a PEM certificate and its key "
                           f"in {key}.certificate / {key}.private_key") from None
    if tls.ca_certificates:
        try:
            ctx.load_verify_locations(cafile=tls.ca_certificates)
        except (ssl.SSLError, ValueError) as exc:
            raise StartupError(f"{key}.ca_certificates: {tls.ca_certificates} holds no usable PEM CA certificate "
                               f"({getattr(exc, 'reason', None) or exc}); fix the file or change "
                               f"{key}.ca_certificates") from None


def check_token_file(config: NodeConfig) -> None:
    """``api.token_file``, when set, can be read and is not empty."""
    if not config.api.token_file:
        return
    _check_readable(config.api.token_file, "api.token_file")
    from .web.auth import load_token

    try:
        load_token(config.api)
    except ValueError as exc:
        raise StartupError(f"{exc}; put the token on its first line or change api.token_file") from None


def check_executor(config: NodeConfig) -> None:
    """``executor.type: ray``: Ray is installed (for the driver process) and ``auth_token_file`` is readable.

    Only looks for the package: the node process itself never imports Ray.
    """
    if config.executor.type != "ray":
        return
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise StartupError("executor.type: ray needs Ray, which is not installed: pip install 'cardionode[ray]' "
                           "(or set executor.type: local)")
    if config.executor.auth_token_file:
        _check_readable(config.executor.auth_token_file, "executor.auth_token_file")


# --------------------------------------------------------------------------- ports


def _listeners(config: NodeConfig) -> Iterable[tuple[str, int, str, str]]:
    node = config.node
    yield node.host, node.port, "node.port", "--port"
    if node.http_enabled:
        yield node.http_host, node.http_port, "node.http_port", "--http-port"


def check_ports(config: NodeConfig) -> None:
    """Each listener's address can be bound now (the real bind follows; a port taken in between
    is reported by the listener with the same message)."""
    for host, port, key, flag in _listeners(config):
        if port == 0:
            continue
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the listeners do: TIME_WAIT is fine
            try:
                sock.bind((host, port))
                sock.listen(1)
            except OSError as exc:
                raise port_error(exc, host, port, key, flag) from None


def check_dimse_library() -> None:
    """The installed pynetdicom is the release the DIMSE listener's transport was written for."""
    from .ingest.transport import PynetdicomVersionError, check_pynetdicom

    try:
        check_pynetdicom()
    except PynetdicomVersionError as exc:
        raise StartupError(str(exc)) from None


def port_error(exc: OSError, host: str, port: int, key: str, flag: str) -> StartupError:
    """The one-line error for a listener that cannot bind ``host:port``."""
    host_key = "node.host" if key == "node.port" else "node.http_host"
    if exc.errno == errno.EADDRINUSE:
        return StartupError(f"{key}: port {port} on {host} is already in use (another CardioNode or service "
                            f"listens there); stop it or choose a free port with {key} or {flag}")
    if exc.errno == errno.EACCES:
        return StartupError(f"{key}: not allowed to listen on port {port} (ports below 1024 need root or "
                            f"CAP_NET_BIND_SERVICE); choose a port above 1023 with {key} or {flag}")
    if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT) or isinstance(exc, socket.gaierror):
        return StartupError(f"{host_key}: {host} is not an address of this machine; change {host_key}")
    return StartupError(f"{key}: cannot listen on {host}:{port} ({_reason(exc)}); change {key} or {flag}")


# --------------------------------------------------------------------------- models


def check_models(config: NodeConfig, routed_pipelines: Iterable[str]) -> ModelStore | None:
    """The model store when the routed pipelines need models (None when none does).

    Fails when onnxruntime is installed twice, when ``models.dir`` is
    not a folder, or when a model found is unusable (manifest, missing file,
    sha256): a broken model is found now, not by the first study's job.
    No ONNX Runtime session is created here.
    """
    needed = sorted(set(routed_pipelines) & MODEL_PIPELINES)
    if not needed:
        return None
    conflict = onnxruntime_conflict()
    if conflict:
        raise StartupError(conflict)
    models = config.models
    if models.dir and not Path(models.dir).is_dir():
        raise StartupError(f"models.dir: {models.dir} is not a folder; fix the path, or remove models.dir "
                           "to use the bundled models")
    store = ModelStore.from_config(models)
    problems = store.verify()
    if problems:
        name, message = problems[0]
        others = ", ".join(n for n, _ in problems[1:])
        more = f" ({len(problems) - 1} more unusable: {others})" if len(problems) > 1 else ""
        raise StartupError(f"no usable model {name!r}: {message}{more}")
    if not store.names():
        dirs = ", ".join(str(d) for d in store.model_dirs) or "no models folder (the package has no bundled models)"
        raise StartupError(f"no usable model for {', '.join(needed)}: none found in {dirs}; set models.dir to a folder "
                           "of <name>/manifest.json + model.onnx, or reinstall cardionode (it bundles the models)")
    return store
