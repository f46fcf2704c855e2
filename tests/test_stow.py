"""STOW-RS ingest over HTTP (uvicorn) into a real Spool: response dataset, status codes, nothing stored from
failures."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from node.config import parse_config
from node.state import Connections
from node.web.metrics import Metrics
from node.web.server import HttpServer, WebContext
from tests.fixtures.studies import write_ct_study

BOUNDARY = "cardionode-test-boundary"
CT = "1.2.840.10008.5.1.4.1.1.2"


def _body(parts: list[tuple[str, bytes]], close: bool = True) -> bytes:
    out = b""
    for ctype, content in parts:
        out += f"--{BOUNDARY}\r\nContent-Type: {ctype}\r\n\r\n".encode() + content + b"\r\n"
    if close:
        out += f"--{BOUNDARY}--\r\n".encode()
    return out


TOKEN = "stow-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HEADERS = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
           "Accept": "application/dicom+json", **AUTH}


class Node:
    def __init__(self, tmp_path: Path, max_upload_mb: int = 2048, **node: object) -> None:
        from node.spool import Spool

        self.config = parse_config({"node": {"storage_dir": str(tmp_path / "var"), "http_host": "127.0.0.1",
                                             "http_port": 0, "max_upload_mb": max_upload_mb, "min_free_mb": 0,
                                             **node},
                                    "api": {"token": TOKEN}})
        self.conns = Connections(self.config.node.storage_dir)
        self.spool = Spool(self.config.node.storage_path, 0)
        self.metrics = Metrics(self.conns.get)
        self.server = HttpServer(self.config, WebContext(self.config, self.conns.get, self.metrics, spool=self.spool))
        self.server.start()
        self.url = self.server.url + "/dicom-web"

    def stored_uids(self, study_uid: str) -> set[str]:
        from node.state import InstanceIndex

        try:
            view = InstanceIndex(self.conns.get()).study_view(study_uid)
        except Exception:
            return set()
        return {ref.sop_instance_uid for ref in view.instances}

    def stop(self) -> None:
        self.server.stop()
        close = getattr(self.spool, "close", None)
        if close:
            close()
        self.conns.close_all()


@pytest.fixture()
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path)
    yield n
    n.stop()


def _uids(paths: list[Path]) -> list[str]:
    return [str(pydicom.dcmread(p).SOPInstanceUID) for p in paths]


def test_dicomweb_client_store_instances(node: Node, tmp_path: Path) -> None:
    paths = write_ct_study(tmp_path / "s", n=3)
    study = str(pydicom.dcmread(paths[0]).StudyInstanceUID)
    client = DICOMwebClient(url=node.url, headers=AUTH)
    response = client.store_instances([pydicom.dcmread(p) for p in paths])
    assert {str(i.ReferencedSOPInstanceUID) for i in response.ReferencedSOPSequence} == set(_uids(paths))
    assert "FailedSOPSequence" not in response
    assert node.stored_uids(study) == set(_uids(paths))
    assert node.metrics.value("cardionode_instances_received_total", {"source": "stow"}) == 3
    assert node.metrics.value("cardionode_received_bytes_total", {"source": "stow"}) > 3 * 512


def test_mixed_parts_202_and_only_good_parts_stored(node: Node, tmp_path: Path) -> None:
    good, other_study = write_ct_study(tmp_path / "a", n=1)[0], write_ct_study(tmp_path / "b", n=1)[0]
    study = str(pydicom.dcmread(good).StudyInstanceUID)
    raw = good.read_bytes()
    body = _body([
        ("application/dicom", raw),
        ("application/dicom", other_study.read_bytes()),            # another study: 0xA900 on /studies/{uid}
        ("application/dicom", b"\x00" * 200 + b"not dicom"),          # garbage
        ("text/plain", b"hello"),                                    # not a DICOM part
        ("application/dicom", raw[:-100]),                            # truncated instance (in its pixel data)
    ])
    r = requests.post(f"{node.url}/studies/{study}", data=body, headers=HEADERS, timeout=10)
    assert r.status_code == 202, r.text
    assert r.headers["content-type"].startswith("application/dicom+json")
    ds = pydicom.Dataset.from_json(r.json())
    assert [str(i.ReferencedSOPInstanceUID) for i in ds.ReferencedSOPSequence] == _uids([good])
    failed = {str(i.ReferencedSOPInstanceUID): int(i.FailureReason) for i in ds.FailedSOPSequence}
    assert failed[_uids([other_study])[0]] == 0xA900
    assert failed[_uids([good])[0]] == 0xC000  # the truncated copy; the good one stays stored
    assert len(ds.OtherFailuresSequence) == 2 and {int(i.FailureReason) for i in ds.OtherFailuresSequence} == {0xC000}
    assert node.stored_uids(study) == set(_uids([good]))
    assert node.stored_uids(str(pydicom.dcmread(other_study).StudyInstanceUID)) == set()


def test_all_failed_is_409(node: Node, tmp_path: Path) -> None:
    r = requests.post(f"{node.url}/studies", data=_body([("application/dicom", b"junk" * 50)]), headers=HEADERS,
                      timeout=10)
    assert r.status_code == 409
    assert int(pydicom.Dataset.from_json(r.json()).OtherFailuresSequence[0].FailureReason) == 0xC000


@pytest.mark.parametrize("strip", [128, 132])  # "DICM" + meta, or the File Meta Information first
def test_part10_without_preamble_is_accepted(node: Node, tmp_path: Path, strip: int) -> None:
    path = write_ct_study(tmp_path / "s", n=1)[0]
    r = requests.post(f"{node.url}/studies", data=_body([("application/dicom", path.read_bytes()[strip:])]),
                      headers=HEADERS, timeout=10)
    assert r.status_code == 200, r.text
    assert node.stored_uids(str(pydicom.dcmread(path).StudyInstanceUID)) == set(_uids([path]))
    stored = next((Path(node.config.node.storage_dir) / "spool").rglob("*.dcm"))
    assert stored.read_bytes() == path.read_bytes()  # preamble + DICM restored, the rest byte-identical


def test_malformed_multipart_400_stores_nothing(node: Node, tmp_path: Path) -> None:
    path = write_ct_study(tmp_path / "s", n=1)[0]
    study = str(pydicom.dcmread(path).StudyInstanceUID)
    truncated = _body([("application/dicom", path.read_bytes())], close=False)
    r = requests.post(f"{node.url}/studies", data=truncated, headers=HEADERS, timeout=10)
    assert r.status_code == 400 and "closing boundary" in r.json()["error"]
    assert node.stored_uids(study) == set()
    wrong_boundary = {**HEADERS, "Content-Type": 'multipart/related; type="application/dicom"; boundary=other'}
    r = requests.post(f"{node.url}/studies", data=_body([("application/dicom", path.read_bytes())]),
                      headers=wrong_boundary, timeout=10)
    assert r.status_code == 400
    assert node.stored_uids(study) == set()


@pytest.mark.parametrize("ctype", [
    "application/dicom",
    'multipart/related; type="application/dicom+json"; boundary=x',
    "multipart/form-data; boundary=x",
])
def test_wrong_media_type_415(node: Node, ctype: str) -> None:
    r = requests.post(f"{node.url}/studies", data=b"--x--", headers={"Content-Type": ctype, **AUTH}, timeout=10)
    assert r.status_code == 415


def test_unacceptable_accept_406(node: Node) -> None:
    r = requests.post(f"{node.url}/studies", data=b"--x--", timeout=10,
                      headers={**HEADERS, "Accept": "application/dicom+xml"})
    assert r.status_code == 406


def test_oversize_body_413_stores_nothing(tmp_path: Path) -> None:
    n = Node(tmp_path, max_upload_mb=1)
    try:
        path = write_ct_study(tmp_path / "s", n=1)[0]
        study = str(pydicom.dcmread(path).StudyInstanceUID)
        body = _body([("application/dicom", path.read_bytes())] + [("application/dicom", b"\0" * (600 * 1024))] * 2)
        r = requests.post(f"{n.url}/studies", data=body, headers=HEADERS, timeout=10)
        assert r.status_code == 413
        # chunked upload (no Content-Length): the limit is enforced while streaming
        r = requests.post(f"{n.url}/studies", data=iter([body[i:i + 65536] for i in range(0, len(body), 65536)]),
                          headers=HEADERS, timeout=10)
        assert r.status_code == 413
        assert n.stored_uids(study) == set()
        assert not list(n.spool.incoming.glob("*"))  # temp bodies removed
    finally:
        n.stop()


def test_sop_instance_uid_of_another_study_is_refused_0111_and_the_original_kept(node: Node, tmp_path: Path) -> None:
    paths = write_ct_study(tmp_path / "s", n=2)
    study = str(pydicom.dcmread(paths[0]).StudyInstanceUID)
    r = requests.post(f"{node.url}/studies", data=_body([("application/dicom", p.read_bytes()) for p in paths]),
                      headers=HEADERS, timeout=10)
    assert r.status_code == 200, r.text
    ds = pydicom.dcmread(paths[0])
    ds.StudyInstanceUID, ds.PatientName = "1.2.3.4.5", "Other^Patient"
    moved = tmp_path / "moved.dcm"
    ds.save_as(moved, enforce_file_format=True)
    r = requests.post(f"{node.url}/studies", data=_body([("application/dicom", moved.read_bytes())]),
                      headers=HEADERS, timeout=10)
    assert r.status_code == 409, r.text
    failed = pydicom.Dataset.from_json(r.json()).FailedSOPSequence[0]
    assert int(failed.FailureReason) == 0x0111 and failed.ReferencedSOPInstanceUID == ds.SOPInstanceUID
    assert node.stored_uids(study) == set(_uids(paths))
    assert node.stored_uids("1.2.3.4.5") == set()


def _sc_and_sr(tmp_path: Path, study: str) -> list[Path]:
    """A Secondary Capture image and a Comprehensive 3D SR of ``study`` (classes DIMSE refuses)."""
    from pydicom.uid import SecondaryCaptureImageStorage, generate_uid

    from tests.fixtures.sr_pipeline import build_sr
    from tests.support.synth import base_dataset
    from pipelines.base import StudyView

    sc = base_dataset(SecondaryCaptureImageStorage, study, generate_uid(), "OT")
    sc.ConversionType = "WSD"
    sc.SamplesPerPixel, sc.PhotometricInterpretation, sc.Rows, sc.Columns = 1, "MONOCHROME2", 8, 8
    sc.BitsAllocated, sc.BitsStored, sc.HighBit, sc.PixelRepresentation = 8, 8, 7, 0
    sc.PixelData = bytes(64)
    sc.save_as(tmp_path / "sc.dcm", enforce_file_format=True)
    ct = write_ct_study(tmp_path / "ct", n=1, study_uid=study)
    sr = build_sr(StudyView.from_files(ct), "not ours")
    sr.save_as(tmp_path / "sr.dcm", enforce_file_format=True)
    return [tmp_path / "sc.dcm", tmp_path / "sr.dcm"]


def test_sop_classes_dimse_refuses_are_refused_0122(node: Node, tmp_path: Path) -> None:
    """STOW-RS stores what C-STORE stores: Secondary Capture and Comprehensive 3D SR get 0x0122."""
    study = "1.2.826.0.1.3680043.8.498.4242"
    files = _sc_and_sr(tmp_path, study)
    r = requests.post(f"{node.url}/studies", data=_body([("application/dicom", p.read_bytes()) for p in files]),
                      headers=HEADERS, timeout=10)
    assert r.status_code == 409, r.text
    failed = pydicom.Dataset.from_json(r.json()).FailedSOPSequence
    assert sorted(int(i.FailureReason) for i in failed) == [0x0122, 0x0122]
    assert node.stored_uids(study) == set()
    assert not [p for p in (Path(node.config.node.storage_dir) / "spool").rglob("*.dcm")]


def test_stalled_body_gets_408_and_the_connection_is_closed(tmp_path: Path) -> None:
    """A client that stops sending its body is answered 408 after node.http_body_timeout_s, its connection
    closed and its buffered body removed; the node keeps serving."""
    import socket
    import time

    n = Node(tmp_path, http_body_timeout_s=1.0)
    try:
        port = int(n.server.url.rsplit(":", 1)[1])
        path = write_ct_study(tmp_path / "s", n=1)[0]
        body = _body([("application/dicom", path.read_bytes())])
        head = (f"POST /dicom-web/studies HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
                + "".join(f"{k}: {v}\r\n" for k, v in HEADERS.items()) + "\r\n").encode()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(head + body[: len(body) // 2])
            t0 = time.monotonic()
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
            waited = time.monotonic() - t0
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert 0.8 <= waited < 6, waited
        assert not list(n.spool.incoming.glob("*"))
        r = requests.post(f"{n.url}/studies", data=body, headers=HEADERS, timeout=10)
        assert r.status_code == 200, r.text
    finally:
        n.stop()
