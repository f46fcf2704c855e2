"""The node's HTTP port: DICOMweb STOW-RS ingest, status API, /healthz and /metrics.

See :mod:`node.web.server` for the entry points (WebContext, build_app, HttpServer).
"""
