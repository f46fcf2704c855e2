"""One origin for OHIF: the prebuilt viewer (static files, index.html for its routes) and a proxy
of /dicom-web and /wado to Orthanc that keeps the browser's Host header.

    python serve.py --dist DIR --config app-config.js --port P --orthanc-port Q

Runs until terminated; prints "serving on <port>" once listening.
"""
from __future__ import annotations

import argparse
import http.client
import mimetypes
import shutil
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PROXIED = ("/dicom-web", "/wado")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade"}
mimetypes.add_type("application/wasm", ".wasm")
mimetypes.add_type("text/javascript", ".js")
mimetypes.add_type("text/javascript", ".mjs")


class Handler(BaseHTTPRequestHandler):
    dist: Path
    config: Path
    orthanc_port: int
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args) -> None:  # quiet: the test reads the browser's console instead
        pass

    def _common_headers(self) -> None:
        # cross-origin isolation lets the viewer use SharedArrayBuffer; everything is same-origin
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")

    def _proxy(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        conn = http.client.HTTPConnection("127.0.0.1", self.orthanc_port, timeout=120)
        try:
            conn.request(self.command, self.path, body=body, headers=headers)  # Host header passed as sent
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self._common_headers()
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _static(self) -> None:
        path = self.path.split("?", 1)[0].split("#", 1)[0]
        if path == "/app-config.js":
            file = self.config
        else:
            file = (self.dist / path.lstrip("/")).resolve()
            if not str(file).startswith(str(self.dist.resolve())) or not file.is_file():
                file = self.dist / "index.html"  # the viewer's own routes (/viewer, /segmentation, ...)
        ctype = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(file.stat().st_size))
        self.send_header("Cache-Control", "no-store")
        self._common_headers()
        self.end_headers()
        if self.command != "HEAD":
            with file.open("rb") as f:
                shutil.copyfileobj(f, self.wfile)

    def _handle(self) -> None:
        if self.path.startswith(PROXIED):
            self._proxy()
        elif self.command in ("GET", "HEAD"):
            self._static()
        else:
            self.send_error(405)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _handle


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dist", type=Path, required=True)
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--orthanc-port", type=int, required=True)
    a = p.parse_args()
    Handler.dist, Handler.config, Handler.orthanc_port = a.dist, a.config, a.orthanc_port
    server = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    server.daemon_threads = True
    print(f"serving on {a.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
