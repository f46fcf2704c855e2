"""The node's HTTP port: STOW-RS, status API, /healthz and /metrics, served by uvicorn in a thread.

Entry points for the service:

* :class:`WebContext` -- what the endpoints need (config, spool, DB connections,
  metrics, model store, optional retry/wake/readiness callables);
* :func:`build_app(ctx)` -- the Starlette application;
* :class:`HttpServer(config, ctx)` -- ``start()`` / ``stop()``; ``port`` is the bound port
  (useful with ``node.http_port: 0`` in tests).

Authentication: ``Authorization: Bearer <api token>`` for /api/*, /metrics and (unless
``api.stow_requires_token: false``) STOW-RS; /healthz never.  The operator console
(``/console``, :mod:`node.console`, ``console.enabled``) has its own accounts and login sessions;
it does not open the JSON API to session cookies, nor the console to API tokens.
"""
from __future__ import annotations

import asyncio
import logging
import sqlite3
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..config import NodeConfig, TLSSection
from ..state import ping
from .auth import TokenAuth
from .context import WebContext
from .metrics import CONTENT_TYPE_LATEST
from .status_api import status_routes
from .stow import StowHandler

__all__ = ["WebContext", "build_app", "HttpServer"]

log = logging.getLogger("cardionode.web")


def _default_readiness(ctx: WebContext) -> dict[str, bool]:
    checks: dict[str, bool] = {}
    try:
        ping(ctx.get_conn())
        checks["database"] = True
    except sqlite3.Error:
        checks["database"] = False
    if ctx.spool is not None:
        try:
            checks["spool_space"] = bool(ctx.spool.has_space())
        except OSError:
            checks["spool_space"] = False
    return checks


def build_app(ctx: WebContext) -> Starlette:
    """The ASGI application of the node's HTTP port."""
    auth = TokenAuth(ctx.config.api)
    if not auth.configured:
        closed = "the status API, /metrics and STOW-RS" if auth.stow_requires_token else "the status API and /metrics"
        # INFO, not a warning: closed is the shipped default (README, "Production" sets the token)
        log.info(f"no API token configured (api.token_file or api.token): {closed} refuse every request")
    node = ctx.config.node
    stow = StowHandler(
        spool=ctx.spool,
        max_upload_bytes=node.max_upload_mb * 1024 * 1024,
        # bodies are buffered in the spool's temporary folder: same filesystem, emptied at start
        tmp_dir=ctx.spool.incoming if ctx.spool is not None else Path(node.storage_dir) / "tmp" / "stow",
        metrics=ctx.metrics,
        body_timeout_s=node.http_body_timeout_s,
    )

    async def stow_endpoint(request: Request) -> Response:
        if auth.stow_requires_token:
            denied = auth.deny(request)
            if denied is not None:
                ctx.metrics.stow_request(401)
                return denied
        return await stow(request)

    async def healthz(request: Request) -> Response:
        """Liveness: the process serves HTTP. Body also carries readiness."""
        checks = await run_in_threadpool(ctx.readiness or (lambda: _default_readiness(ctx)))
        return JSONResponse({"status": "ok", "ready": all(checks.values()), "checks": checks,
                             "uptime_s": round(time.time() - ctx.started_at, 1)})

    async def readyz(request: Request) -> Response:
        """Readiness: 200 only when every check passes, else 503 naming the failing ones."""
        checks = await run_in_threadpool(ctx.readiness or (lambda: _default_readiness(ctx)))
        ready = all(checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    async def metrics(request: Request) -> Response:
        denied = auth.deny(request)
        if denied is not None:
            return denied
        body = await run_in_threadpool(ctx.metrics.render)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    routes = [
        Route("/dicom-web/studies", stow_endpoint, methods=["POST"]),
        Route("/dicom-web/studies/{study_uid}", stow_endpoint, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/healthz/ready", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        *status_routes(ctx, auth.deny),
    ]
    if ctx.config.console.enabled:
        from ..console import console_app_routes

        routes += console_app_routes(ctx)
    return Starlette(routes=routes)


def _ssl_options(tls: TLSSection | None) -> dict[str, Any]:
    """uvicorn's TLS keyword arguments for ``node.http_tls`` (HTTPS; client certificates optional)."""
    if tls is None:
        return {}
    options: dict[str, Any] = {"ssl_certfile": tls.certificate, "ssl_keyfile": tls.private_key}
    if tls.ca_certificates:
        options["ssl_ca_certs"] = tls.ca_certificates
    options["ssl_cert_reqs"] = ssl.CERT_REQUIRED if tls.require_client_certificate else (
        ssl.CERT_OPTIONAL if tls.ca_certificates else ssl.CERT_NONE)
    return options


class HttpServer:
    """uvicorn serving :func:`build_app` on node.http_host:node.http_port in a background thread."""

    def __init__(self, config: NodeConfig, ctx: WebContext) -> None:
        self.config = config
        self.ctx = ctx
        self.app = build_app(ctx)
        uv_config = uvicorn.Config(
            self.app,
            host=config.node.http_host,
            port=config.node.http_port,
            log_config=None,  # the node's logging setup applies
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=10,
            **_ssl_options(config.node.http_tls),
        )
        self._server = uvicorn.Server(uv_config)
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None  # why the server thread ended, when it did

    def start(self, timeout: float = 10.0) -> None:
        """Start serving; returns once the socket is bound (raises if it could not be)."""
        self._thread = threading.Thread(target=self._run, name="http-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if self.error is not None or not self._thread.is_alive():
                raise RuntimeError(
                    f"HTTP server could not start on {self.config.node.http_host}:{self.config.node.http_port}:"
                    f" {self.error!r}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError("HTTP server did not start in time")
            time.sleep(0.02)
        log.info("HTTP port listening", extra={"host": self.config.node.http_host, "port": self.port})

    def _run(self) -> None:
        try:
            asyncio.run(self._server.serve())
        except BaseException as exc:  # SystemExit from uvicorn on bind errors
            self.error = exc

    @property
    def port(self) -> int:
        """The bound TCP port (differs from the config when it is 0)."""
        for server in getattr(self._server, "servers", []):
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return self.config.node.http_port

    @property
    def url(self) -> str:
        host = self.config.node.http_host
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return f"http://{host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)

