"""DICOMweb STOW-RS sender against a real Orthanc with the orthanc-dicomweb plugin (loopback)."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests

from node.config import AuthSection, DicomwebDestination
from node.dispatch.base import SenderError
from node.dispatch.dicomweb import DicomwebSender
from tests.fixtures.studies import write_ct_study

DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Orthanc:
    """An Orthanc on 127.0.0.1 with DICOMweb, optional HTTP basic users and DICOM modalities."""

    def __init__(self, work: Path, users: dict[str, str] | None = None,
                 modalities: dict[str, list[Any]] | None = None, aet: str = "ORTHANC") -> None:
        self.work = work
        self.http_port = _free_port()
        self.dicom_port = _free_port()
        self.aet = aet
        self.users = users
        self.modalities = modalities or {}
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.http_url}/dicom-web"

    def _auth(self) -> tuple[str, str] | None:
        return next(iter(self.users.items())) if self.users else None

    def get(self, path: str) -> Any:
        r = requests.get(self.http_url + path, auth=self._auth(), timeout=10)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body: Any) -> Any:
        r = requests.post(self.http_url + path, data=json.dumps(body) if not isinstance(body, bytes) else body,
                          auth=self._auth(), timeout=30)
        r.raise_for_status()
        return r.json() if r.content else None

    def instances(self) -> list[str]:
        """SOP Instance UIDs stored in Orthanc (via its REST API)."""
        out = []
        for oid in self.get("/instances"):
            out.append(self.get(f"/instances/{oid}/simplified-tags")["SOPInstanceUID"])
        return out

    def upload(self, path: Path) -> None:
        self.post("/instances", path.read_bytes())

    def __enter__(self) -> "Orthanc":
        if shutil.which("Orthanc") is None or not Path(DICOMWEB_PLUGIN).exists():
            pytest.fail("Orthanc and orthanc-dicomweb (Debian packages) are required")
        self.work.mkdir(parents=True, exist_ok=True)
        cfg = {
            "Name": "cardionode-test", "StorageDirectory": str(self.work / "db"),
            "IndexDirectory": str(self.work / "db"), "HttpPort": self.http_port, "DicomPort": self.dicom_port,
            "DicomAet": self.aet, "RemoteAccessAllowed": False, "HttpBindAddress": "127.0.0.1",
            "DicomBindAddress": "127.0.0.1" , "AuthenticationEnabled": bool(self.users),
            "RegisteredUsers": self.users or {}, "Plugins": [DICOMWEB_PLUGIN],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}, "DicomModalities": self.modalities,
            "DicomAlwaysAllowGet": True, "DicomAlwaysAllowMove": True, "DicomCheckCalledAet": False,
            "StableAge": 1, "ConcurrentJobs": 2, "SaveJobs": False,
        }
        cfg_path = self.work / "orthanc.json"
        cfg_path.write_text(json.dumps(cfg))
        self._log = open(self.work / "orthanc.log", "wb")
        self._proc = subprocess.Popen(["Orthanc", str(cfg_path)], stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited: {(self.work / 'orthanc.log').read_text()[-2000:]}")
            try:
                if requests.get(self.http_url + "/system", auth=self._auth(), timeout=1).ok:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise RuntimeError("Orthanc did not start")

    def __exit__(self, *exc: Any) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._log.close()


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory):
    with Orthanc(tmp_path_factory.mktemp("orthanc"), users={"cardio": "s3cret"}) as server:
        yield server


def _dest(url: str, auth: AuthSection = AuthSection()) -> DicomwebDestination:
    return DicomwebDestination(type="dicomweb", url=url, auth=auth)


def test_stow_to_orthanc_with_basic_auth(orthanc: Orthanc, tmp_path: Path) -> None:
    paths = write_ct_study(tmp_path / "s", n=3)
    sender = DicomwebSender("pacs", _dest(orthanc.dicomweb_url, AuthSection("basic", "cardio", "s3cret")), "CN", 10)
    outcomes = sender.send(paths)
    assert [o.ok for o in outcomes] == [True, True, True]
    assert [o.path for o in outcomes] == paths
    uids = {str(pydicom.dcmread(p).SOPInstanceUID) for p in paths}
    assert uids <= set(orthanc.instances())


def test_wrong_password_is_a_batch_error(orthanc: Orthanc, tmp_path: Path) -> None:
    paths = write_ct_study(tmp_path / "s", n=1)
    sender = DicomwebSender("pacs", _dest(orthanc.dicomweb_url, AuthSection("basic", "cardio", "wrong")), "CN", 10)
    with pytest.raises(SenderError, match="HTTP 401"):
        sender.send(paths)


def test_unreachable_and_wrong_path_are_batch_errors(orthanc: Orthanc, tmp_path: Path) -> None:
    paths = write_ct_study(tmp_path / "s", n=1)
    with pytest.raises(SenderError, match="cannot reach"):
        DicomwebSender("down", _dest(f"http://127.0.0.1:{_free_port()}/dicom-web"), "CN", 5).send(paths)
    auth = AuthSection("basic", "cardio", "s3cret")
    with pytest.raises(SenderError, match="HTTP 404"):
        DicomwebSender("typo", _dest(orthanc.http_url + "/no-such-root", auth), "CN", 5).send(paths)


def test_dispatch_queue_delivers_once_and_retries_when_down(orthanc: Orthanc, tmp_path: Path) -> None:
    """The dicomweb type goes through the same persistent queue: sent once; a down peer is retried."""
    from node import db
    from node.config import DispatchSection
    from node.dispatch.base import build_sender
    from node.dispatch.queue import DISPATCH_SCHEMA, DestinationWorker, add_deliveries

    conn = db.connect(tmp_path)
    db.ensure_schema(conn, DISPATCH_SCHEMA)
    paths = write_ct_study(tmp_path / "s", n=2)
    files = [(str(pydicom.dcmread(p).SOPInstanceUID), p) for p in paths]
    settings = DispatchSection(max_attempts=3, backoff_initial_s=0.0, backoff_max_s=0.0, timeout_s=5)
    auth = AuthSection("basic", "cardio", "s3cret")
    down = DestinationWorker("down", build_sender("down", _dest(f"http://127.0.0.1:{_free_port()}/x", auth), "CN", 5),
                             lambda: conn, settings)
    up = DestinationWorker("up", build_sender("up", _dest(orthanc.dicomweb_url, auth), "CN", 5),
                           lambda: conn, settings)
    with conn:
        add_deliveries(conn, None, files, ["down", "up"])
    assert up.run_once() is True
    assert up.run_once() is False  # nothing left: never sent twice
    for _ in range(3):
        down.run_once()
    rows = {(r["destination"], r["state"], r["attempts"])
            for r in conn.execute("SELECT destination, state, attempts FROM deliveries")}
    assert rows == {("up", "sent", 1), ("down", "failed", 3)}
    last = conn.execute("SELECT last_error FROM destination_state WHERE name='down'").fetchone()["last_error"]
    assert "cannot reach" in last
    assert {uid for uid, _ in files} <= set(orthanc.instances())
