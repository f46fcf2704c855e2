"""DICOMweb STOW-RS sender against a real Orthanc with the orthanc-dicomweb plugin (loopback)."""
from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from node.config import AuthSection, DicomwebDestination
from node.dispatch.base import SenderError
from node.dispatch.dicomweb import DicomwebSender
from tests.fixtures.studies import write_ct_study
from tests.support.peers import Orthanc, free_port

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
    assert uids <= set(orthanc.sop_instance_uids())


def test_wrong_password_is_a_batch_error(orthanc: Orthanc, tmp_path: Path) -> None:
    paths = write_ct_study(tmp_path / "s", n=1)
    sender = DicomwebSender("pacs", _dest(orthanc.dicomweb_url, AuthSection("basic", "cardio", "wrong")), "CN", 10)
    with pytest.raises(SenderError, match="HTTP 401"):
        sender.send(paths)


def test_unreachable_and_wrong_path_are_batch_errors(orthanc: Orthanc, tmp_path: Path) -> None:
    paths = write_ct_study(tmp_path / "s", n=1)
    with pytest.raises(SenderError, match="cannot reach"):
        DicomwebSender("down", _dest(f"http://127.0.0.1:{free_port()}/dicom-web"), "CN", 5).send(paths)
    auth = AuthSection("basic", "cardio", "s3cret")
    with pytest.raises(SenderError, match="HTTP 404"):
        DicomwebSender("typo", _dest(orthanc.http_url + "/no-such-root", auth), "CN", 5).send(paths)


def test_dispatch_queue_delivers_once_and_retries_when_down(orthanc: Orthanc, tmp_path: Path) -> None:
    """The dicomweb type goes through the same persistent queue: sent once; a down peer is retried."""
    from node.state import connect
    from node.config import DispatchSection
    from node.dispatch.base import build_sender
    from node.dispatch.queue import DestinationWorker

    from node.state import add_deliveries

    conn = connect(tmp_path)
    paths = write_ct_study(tmp_path / "s", n=2)
    files = [(str(pydicom.dcmread(p).SOPInstanceUID), p) for p in paths]
    settings = DispatchSection(max_attempts=3, backoff_initial_s=0.0, backoff_max_s=0.0, timeout_s=5)
    auth = AuthSection("basic", "cardio", "s3cret")
    down = DestinationWorker("down", build_sender("down", _dest(f"http://127.0.0.1:{free_port()}/x", auth), "CN", 5),
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
    assert {uid for uid, _ in files} <= set(orthanc.sop_instance_uids())
