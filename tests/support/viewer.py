"""OHIF + Orthanc + headless Chromium for the browser test, in a private network namespace.

Orthanc 1.10 listens on every interface, so it runs in a network namespace of its own that has
only loopback (a unique name per run); the one-origin server (tests/browser/serve.py), storescu
and Chromium (driven by tests/browser/drive.mjs through puppeteer-core) run in the same namespace.
Every process is started here and stopped by PID; the namespace is deleted at the end.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

from tests.support.peers import _STORESCU_TS_OPTION, ORTHANC_BIN, ORTHANC_DICOMWEB_PLUGIN, _transfer_syntax

BROWSER_DIR = Path(__file__).resolve().parents[1] / "browser"
CHROMIUM_BIN = "/usr/bin/chromium"


def ohif_dist() -> Path:
    """The unpacked OHIF dist (tests/browser/.ohif/<version>, made by `npm run fetch-ohif`)."""
    version = json.loads((BROWSER_DIR / "package.json").read_text())["ohif"]["package"].rsplit("@", 1)[1]
    return BROWSER_DIR / ".ohif" / version


def missing_parts() -> list[str]:
    """What the browser test needs and this machine lacks (with how to get it)."""
    need = []
    for exe, pkg in ((ORTHANC_BIN, "orthanc"), (ORTHANC_DICOMWEB_PLUGIN, "orthanc-dicomweb"),
                     (CHROMIUM_BIN, "chromium"), (shutil.which("node") or "/usr/bin/node", "nodejs"),
                     (shutil.which("storescu") or "/usr/bin/storescu", "dcmtk"),
                     (shutil.which("ip") or "/usr/sbin/ip", "iproute2")):
        if not os.path.exists(exe):
            need.append(f"{exe} (apt-get install {pkg})")
    if not (BROWSER_DIR / "node_modules" / "puppeteer-core").is_dir():
        need.append("puppeteer-core (cd tests/browser && npm ci)")
    if not (ohif_dist() / "index.html").is_file():
        need.append("OHIF dist (cd tests/browser && npm run fetch-ohif)")
    return need


class ViewerStack:
    """Network namespace + Orthanc (DICOMweb) + one-origin server; ``send`` and ``drive`` run in it."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.ns = f"cnv-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.procs: list[subprocess.Popen] = []
        self.orthanc_http, self.orthanc_dicom, self.port = 8042, 4242, 8080  # inside the namespace only

    def _exec(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv]

    def _spawn(self, argv: Sequence[str], log: Path) -> subprocess.Popen:
        f = log.open("wb")
        p = subprocess.Popen(self._exec(argv), stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        f.close()
        self.procs.append(p)
        return p

    def _ready(self, url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            probe = f"import urllib.request; urllib.request.urlopen({url!r}, timeout=2)"
            r = subprocess.run(self._exec(["python3", "-c", probe]), capture_output=True)
            if r.returncode == 0:
                return
            if any(p.poll() is not None for p in self.procs):
                break
            time.sleep(0.3)
        raise RuntimeError(f"{url} not ready; logs in {self.work_dir}")

    def start(self) -> "ViewerStack":
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        subprocess.run(self._exec(["ip", "link", "set", "lo", "up"]), check=True)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        cfg = {
            "Name": "cardionode-viewer-test", "StorageDirectory": str(self.work_dir / "orthanc"),
            "IndexDirectory": str(self.work_dir / "orthanc"), "HttpPort": self.orthanc_http,
            "DicomPort": self.orthanc_dicom, "DicomAet": "ORTHANC", "RemoteAccessAllowed": True,
            "AuthenticationEnabled": False, "Plugins": [ORTHANC_DICOMWEB_PLUGIN],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "WadoRoot": "/wado"},
            "DicomCheckCalledAet": False, "StableAge": 1, "SaveJobs": False,
        }
        (self.work_dir / "orthanc.json").write_text(json.dumps(cfg))
        self._spawn([ORTHANC_BIN, str(self.work_dir / "orthanc.json")], self.work_dir / "orthanc.log")
        self._spawn(["python3", str(BROWSER_DIR / "serve.py"), "--dist", str(ohif_dist()), "--config",
                     str(BROWSER_DIR / "app-config.js"), "--port", str(self.port), "--orthanc-port",
                     str(self.orthanc_http)], self.work_dir / "serve.log")
        self._ready(f"http://127.0.0.1:{self.orthanc_http}/system", 60)
        self._ready(f"http://127.0.0.1:{self.port}/dicom-web/studies", 30)
        return self

    def send(self, files: Sequence[Path]) -> None:
        """dcmtk storescu to Orthanc, one run per transfer syntax proposing it (-R: only the SOP classes
        needed; the JPEG 2000 SEG needs -xv)."""
        by_ts: dict[str, list[str]] = {}
        for f in files:
            by_ts.setdefault(_transfer_syntax(str(f)), []).append(str(f))
        for ts, group in sorted(by_ts.items()):
            opt = [_STORESCU_TS_OPTION[ts]] if ts in _STORESCU_TS_OPTION else []
            r = subprocess.run(self._exec(["storescu", "-R", *opt, "-aec", "ORTHANC", "127.0.0.1",
                                           str(self.orthanc_dicom), *group]), capture_output=True, text=True,
                               timeout=300)
            if r.returncode != 0 or "Store Failed" in r.stderr:
                raise RuntimeError(f"storescu failed: {r.stderr[-2000:]}")

    def drive(self, plan: dict[str, Any], artefacts: Path, timeout: float = 400) -> dict[str, Any]:
        """Run tests/browser/drive.mjs on ``plan``; returns its JSON report."""
        artefacts.mkdir(parents=True, exist_ok=True)
        plan = {**plan, "base": f"http://127.0.0.1:{self.port}", "chromium": CHROMIUM_BIN, "out": str(artefacts)}
        (artefacts / "plan.json").write_text(json.dumps(plan, indent=1))
        log = artefacts / "drive.log"
        with log.open("wb") as f:  # own session: on a time-out node and the Chromium it started go together
            p = subprocess.Popen(self._exec(["node", str(BROWSER_DIR / "drive.mjs"), str(artefacts / "plan.json")]),
                                 stdout=f, stderr=subprocess.STDOUT, cwd=BROWSER_DIR, start_new_session=True)
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)
            raise RuntimeError(f"drive.mjs ran over {timeout} s; log {log}") from None
        if rc != 0 or not (artefacts / "report.json").is_file():
            raise RuntimeError(f"drive.mjs exited {rc}: {log.read_text(errors='replace')[-3000:]}")
        return json.loads((artefacts / "report.json").read_text())

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)
        # anything still running in our namespace was started by this stack (e.g. a Chromium that
        # outlived a killed driver: puppeteer detaches it into its own process group)
        left = subprocess.run(["ip", "netns", "pids", self.ns], capture_output=True, text=True).stdout.split()
        for pid in left:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "del", self.ns], check=False)

    def __enter__(self) -> "ViewerStack":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

