"""Real DICOM peers for tests: dcmtk storescu/echoscu/storescp, Orthanc, dciodvfy.

Every helper skips the calling test (``pytest.skip``) with a clear reason
when its binary is missing; in CI they are installed, so nothing is skipped
there.  Servers start on 127.0.0.1 on a free port, retry with another port
when the bind fails, check readiness (C-ECHO / REST), keep their logs in their
temp dir, print the log tail when start-up fails, and are stopped by PID.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import pydicom
import pydicom.errors
import pytest
import requests

__all__ = [
    "free_port",
    "require_binary",
    "storescu",
    "echoscu",
    "echo",
    "StoreSCP",
    "Orthanc",
    "dciodvfy_errors",
    "wait_for",
    "PeerStartError",
]

ORTHANC_BIN = "/usr/sbin/Orthanc"
ORTHANC_DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
DCIODVFY_BIN = "/usr/bin/dciodvfy"


class PeerStartError(RuntimeError):
    """A peer process did not become ready (its log tail is in the message)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def require_binary(name: str) -> str:
    """Absolute path of ``name`` (a command or a path); skips the test when it is not installed."""
    path = name if os.path.isabs(name) else shutil.which(name)
    if not path or not os.access(path, os.X_OK):
        pytest.skip(f"{name} is not installed (needs the Debian packages dcmtk / orthanc / dicom3tools)")
    return path


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.1) -> bool:
    """Poll ``predicate`` until it is truthy or ``timeout`` seconds passed; returns the last outcome."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def _paths(files_or_dir: str | Path | Iterable[str | Path]) -> list[str]:
    if isinstance(files_or_dir, (str, Path)):
        return [str(files_or_dir)]
    return [str(p) for p in files_or_dir]


#: storescu option that proposes a file's (compressed) transfer syntax; uncompressed ones need none.
_STORESCU_TS_OPTION = {
    "1.2.840.10008.1.2.4.50": "-xy",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51": "-xx",  # JPEG Extended (12 bit)
    "1.2.840.10008.1.2.4.70": "-xs",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80": "-xt",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81": "-xu",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90": "-xv",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91": "-xw",  # JPEG 2000
    "1.2.840.10008.1.2.5": "-xr",  # RLE Lossless
    "1.2.840.10008.1.2.1.99": "-xd",  # Deflated Explicit VR Little Endian
}
_UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}


def _expand(paths: list[str]) -> list[str]:
    out: list[str] = []
    for p in paths:
        out.extend(sorted(str(f) for f in Path(p).rglob("*") if f.is_file()) if Path(p).is_dir() else [p])
    return out


def _transfer_syntax(path: str) -> str:
    """The file's Transfer Syntax UID ("" when it is no Part 10 file: storescu reports it)."""
    from pydicom.filereader import _read_file_meta_info, read_preamble

    try:
        with open(path, "rb") as fp:
            read_preamble(fp, False)
            return str(_read_file_meta_info(fp).get("TransferSyntaxUID", ""))
    except Exception:
        return ""


def _store_failed(output: str) -> bool:
    """storescu -v output names a failed store (-nh: it went on and will exit 0)."""
    responses = re.findall(r"Received Store Response \(([^)]*)\)", output)
    return "Store Failed" in output or any(not r.startswith(("Success", "Warning")) for r in responses)


def storescu(
    port: int,
    files_or_dir: str | Path | Iterable[str | Path],
    *,
    host: str = "127.0.0.1",
    calling_ae: str = "STORESCU",
    called_ae: str = "CARDIONODE",
    env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = 300.0,
) -> subprocess.CompletedProcess:
    """Send files (directories: every file below them) with dcmtk storescu, each in its own transfer syntax.

    storescu proposes uncompressed syntaxes only unless told otherwise, and
    then decompresses on the fly or fails; so the files are grouped by
    transfer syntax and each group is sent by one storescu run proposing that
    syntax (``-xy``, ``-xt``, ``-xr`` ...; ``-R``: only the SOP classes
    needed).  ``-nh`` keeps sending after a failed store; as storescu then
    exits 0, ``returncode`` is set to 1 when the ``-v`` output shows a failed
    or refused store: 0 means every file was stored.  stdout/stderr are those of all runs, in order.
    """
    exe = require_binary("storescu")
    groups: dict[str, list[str]] = {}
    for f in _expand(_paths(files_or_dir)):
        ts = _transfer_syntax(f)
        groups.setdefault(_STORESCU_TS_OPTION.get(ts, "") if ts not in _UNCOMPRESSED else "", []).append(f)
    run_env = dict(os.environ, **env) if env is not None else None
    rc, out, err, args = 0, "", "", [exe]
    for option, files in groups.items():
        args = [exe, "-R", "-nh", "-aet", calling_ae, "-aec", called_ae, "-to", "10", "-ta", "30", "-ts", "60"]
        args += [option] if option else []
        args += [] if {"-v", "-d"} & set(extra_args) else ["-v"]  # -v: one line per store response
        args += [*extra_args, host, str(port), *files]
        r = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=run_env)
        out, err = out + (r.stdout or ""), err + (r.stderr or "")
        rc = rc or r.returncode or int(_store_failed((r.stdout or "") + (r.stderr or "")))
    return subprocess.CompletedProcess(args, rc, out, err)


def echoscu(
    port: int,
    *,
    host: str = "127.0.0.1",
    calling_ae: str = "ECHOSCU",
    called_ae: str = "CARDIONODE",
    timeout: float = 10.0,
    extra_args: Sequence[str] = (),
) -> subprocess.CompletedProcess:
    """One C-ECHO with dcmtk echoscu; ``returncode == 0`` means the peer answered Success."""
    exe = require_binary("echoscu")
    t = str(max(1, int(timeout)))
    args = [exe, "-aet", calling_ae, "-aec", called_ae, "-to", t, "-ta", t, "-td", t, *extra_args, host, str(port)]
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout + 5)
    except subprocess.TimeoutExpired as exc:
        return subprocess.CompletedProcess(args, 124, exc.stdout or "", f"echoscu timed out: {exc}")


def echo(port: int, ae_title: str = "CARDIONODE", calling: str = "TESTSCU", timeout: float = 5.0) -> bool:
    """True when a C-ECHO to 127.0.0.1:``port`` (called AE ``ae_title``) succeeds."""
    return echoscu(port, calling_ae=calling, called_ae=ae_title, timeout=timeout).returncode == 0


def _kill(proc: subprocess.Popen | None, grace: float = 10.0) -> None:
    """SIGTERM by PID, then SIGKILL when it does not exit within ``grace`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    except ProcessLookupError:
        pass


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


class _Peer:
    """Start/stop plumbing shared by the server peers: spawn with a log file, wait until ready,
    retry on another free port when the process exits at once (port taken meanwhile)."""

    proc: subprocess.Popen | None = None
    log_path: Path
    name = "peer"

    def _spawn(self, args: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(list(args), stdout=self._log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, **env) if env else None)

    def _ready(self) -> bool:
        raise NotImplementedError

    def _wait_ready(self, timeout: float) -> bool:
        """True when ready; False when the process exited (e.g. the port was taken)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return False
            if self._ready():
                return True
            time.sleep(0.1)
        raise PeerStartError(f"{self.name} did not become ready in {timeout:.0f} s; log:\n{_tail(self.log_path)}")

    def _start(self, launch: Callable[[bool], None], timeout: float, attempts: int) -> None:
        """``launch(first)`` picks ports (a new one unless ``first`` and fixed) and spawns the process."""
        for i in range(attempts):
            launch(i == 0)
            try:
                if self._wait_ready(timeout):
                    return
            except PeerStartError:
                self.stop()
                raise
            self.stop()  # exited: most likely the port was taken meanwhile; try another
        raise PeerStartError(f"{self.name} did not start after {attempts} attempts; log:\n{_tail(self.log_path)}")

    def stop(self) -> None:
        _kill(self.proc)
        self.proc = None
        log = getattr(self, "_log", None)
        if log is not None:
            log.close()
            self._log = None

    def log_text(self) -> str:
        return _tail(self.log_path, 100_000)

    def __exit__(self, *exc: object) -> None:
        self.stop()
        tmp = getattr(self, "_tmp", None)
        if tmp is not None:
            tmp.cleanup()


class StoreSCP(_Peer):
    """dcmtk ``storescp``: each received instance in its own file (``+uf``: named by SOP instance,
    so a duplicate delivery shows up as a second file) in ``out_dir``.

    ``port`` None picks a free one (another on retry); a given port is kept, so a test can start a
    destination later on the port the node was configured with.  ``accept_all`` (``+xa``) accepts
    every transfer syntax (plain storescp: uncompressed only); ``bit_preserving`` (``+B``) writes
    datasets exactly as received; ``verbose`` (``-v``) logs every store; ``env`` e.g.
    ``{"TCP_NODELAY": "1"}`` for benchmarks.
    """

    name = "storescp"

    def __init__(self, out_dir: str | Path | None = None, ae_title: str = "PACS", port: int | None = None, *,
                 accept_all: bool = False, bit_preserving: bool = False, verbose: bool = True,
                 extra_args: Sequence[str] = (), env: Mapping[str, str] | None = None) -> None:
        self._tmp = None if out_dir is not None else tempfile.TemporaryDirectory(prefix="storescp-")
        self.out_dir = Path(out_dir) if out_dir is not None else Path(self._tmp.name) / "received"
        self.ae_title = ae_title
        self.port = port or free_port()
        self._fixed_port = port is not None
        self.options = (["+xa"] if accept_all else []) + (["+B"] if bit_preserving else []) + (
            ["-v"] if verbose else []) + list(extra_args)
        self.env = dict(env) if env else None
        self.log_path = self.out_dir.parent / f"{self.out_dir.name}.storescp.log"  # beside, not in, out_dir

    def _ready(self) -> bool:
        return echo(self.port, self.ae_title, timeout=2)

    def _launch(self, first: bool) -> None:
        if not first:  # a fixed port gets one attempt only
            self.port = free_port()
        exe = require_binary("storescp")
        self._spawn([exe, "-aet", self.ae_title, "+uf", "-od", str(self.out_dir), *self.options, str(self.port)],
                    self.env)

    def start(self, timeout: float = 20.0, attempts: int = 5) -> "StoreSCP":
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._start(self._launch, timeout, 1 if self._fixed_port else attempts)
        return self

    def files(self) -> list[Path]:
        """Received files (sorted by name)."""
        return sorted(p for p in self.out_dir.iterdir() if p.is_file())

    def received(self, settle_s: float = 10.0) -> list[pydicom.Dataset]:
        """Headers (no pixel data) of the received files, sorted by file name.

        storescp writes each file in place, so a poll can meet one that is still being written: a
        file that does not parse yet and was modified within ``settle_s`` is left out of this
        answer (the next poll sees it whole); an older one that does not parse is an error.
        """
        out = []
        for p in self.files():
            try:
                out.append(pydicom.dcmread(p, stop_before_pixels=True))
            except (pydicom.errors.InvalidDicomError, EOFError, OSError, ValueError):
                try:
                    young = time.time() - p.stat().st_mtime < settle_s
                except FileNotFoundError:
                    continue
                if not young:
                    raise
        return out

    def clear(self) -> None:
        for p in self.files():
            p.unlink()

    def __enter__(self) -> "StoreSCP":
        return self.start()


class Orthanc(_Peer):
    """Orthanc with the DICOMweb plugin on 127.0.0.1, free DICOM and HTTP ports, storage in ``work_dir``.

    ``users`` turns on HTTP basic authentication (the first user is the one the helpers log in as);
    ``modalities`` maps a name to ``[AET, host, port]`` (Orthanc's ``DicomModalities``: C-MOVE
    destinations); C-GET and C-MOVE are allowed to any caller; the called AE is not checked unless
    ``extra_config`` sets ``DicomCheckCalledAet``.
    """

    name = "Orthanc"

    def __init__(self, work_dir: str | Path | None = None, *, aet: str = "ORTHANC",
                 users: Mapping[str, str] | None = None, modalities: Mapping[str, Sequence[Any]] | None = None,
                 extra_config: Mapping[str, Any] | None = None) -> None:
        self._tmp = None if work_dir is not None else tempfile.TemporaryDirectory(prefix="orthanc-")
        self.work_dir = Path(work_dir) if work_dir is not None else Path(self._tmp.name)
        self.aet = aet
        self.users = dict(users or {})
        self.modalities = {k: list(v) for k, v in (modalities or {}).items()}
        self.extra_config = dict(extra_config or {})
        self.dicom_port = 0
        self.http_port = 0
        self.log_path = self.work_dir / "orthanc.log"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.http_url}/dicom-web"

    def _auth(self) -> tuple[str, str] | None:
        return next(iter(self.users.items())) if self.users else None

    def _config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "Name": "cardionode-test",
            "StorageDirectory": str(self.work_dir / "storage"),
            "IndexDirectory": str(self.work_dir / "storage"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "HttpBindAddress": "127.0.0.1",
            "DicomBindAddress": "127.0.0.1",
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": bool(self.users),
            "RegisteredUsers": self.users,
            "Plugins": [ORTHANC_DICOMWEB_PLUGIN],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "DicomModalities": self.modalities,
            "DicomAlwaysAllowGet": True,
            "DicomAlwaysAllowMove": True,
            "DicomCheckCalledAet": False,
            "StableAge": 1,
            "ConcurrentJobs": 2,
            "SaveJobs": False,
        }
        cfg.update(self.extra_config)
        return cfg

    def _ready(self) -> bool:
        try:
            return requests.get(f"{self.http_url}/system", auth=self._auth(), timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def _launch(self, _first: bool) -> None:
        self.dicom_port, self.http_port = free_port(), free_port()
        path = self.work_dir / "orthanc.json"
        path.write_text(json.dumps(self._config(), indent=2))
        self._spawn([require_binary(ORTHANC_BIN), str(path)])

    def start(self, timeout: float = 60.0, attempts: int = 5) -> "Orthanc":
        require_binary(ORTHANC_BIN)
        if not os.path.exists(ORTHANC_DICOMWEB_PLUGIN):
            pytest.skip(f"Orthanc DICOMweb plugin missing: {ORTHANC_DICOMWEB_PLUGIN} (Debian orthanc-dicomweb)")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._start(self._launch, timeout, attempts)
        return self

    def get(self, path: str) -> Any:
        r = requests.get(f"{self.http_url}{path}", auth=self._auth(), timeout=30)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body: Any) -> Any:
        """POST JSON (or raw bytes); returns the JSON answer (None when empty)."""
        data = body if isinstance(body, bytes) else json.dumps(body)
        r = requests.post(f"{self.http_url}{path}", data=data, auth=self._auth(), timeout=30)
        r.raise_for_status()
        return r.json() if r.content else None

    def upload(self, path: str | Path) -> None:
        """Store one Part 10 file through the REST API."""
        self.post("/instances", Path(path).read_bytes())

    def instances(self) -> list[dict[str, Any]]:
        """Every stored instance (Orthanc's /instances/{id} JSON, with MainDicomTags)."""
        return [self.get(f"/instances/{i}") for i in self.get("/instances")]

    def sop_instance_uids(self) -> list[str]:
        """SOP Instance UIDs of the stored instances."""
        return [str(i["MainDicomTags"]["SOPInstanceUID"]) for i in self.instances()]

    def instance_file(self, orthanc_id: str) -> bytes:
        """The stored Part 10 bytes of one instance."""
        r = requests.get(f"{self.http_url}/instances/{orthanc_id}/file", auth=self._auth(), timeout=30)
        r.raise_for_status()
        return r.content

    def stored_events(self) -> int:
        """NewInstance events in Orthanc's change log (one per distinct SOP instance stored)."""
        changes = self.get("/changes?limit=10000")
        return sum(1 for c in changes["Changes"] if c["ChangeType"] == "NewInstance")

    def __enter__(self) -> "Orthanc":
        return self.start()


def dciodvfy_errors(path: str | Path, timeout: float = 120.0) -> list[str]:
    """dicom3tools' ``dciodvfy`` on one file: its "Error" lines (empty = valid).

    The one dciodvfy helper of the suite; warnings are not errors (dciodvfy warns about many
    optional attributes).
    """
    exe = require_binary(DCIODVFY_BIN)
    r = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=timeout)
    return [line for line in ((r.stdout or "") + (r.stderr or "")).splitlines() if line.lstrip().startswith("Error")]
