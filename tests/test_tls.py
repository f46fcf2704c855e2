"""DICOM over TLS: the node's listener with ``node.tls`` (client certificates required) against dcmtk
``echoscu``/``storescu +tls`` and against the node's own DIMSE sender with a TLS destination; a peer
without TLS or without a client certificate gets no association and the listener keeps serving."""
from __future__ import annotations

import http.client
import ssl
import subprocess
from pathlib import Path

import pytest

from node.config import DimseDestination, TLSSection
from node.dispatch import build_sender
from tests.fixtures.studies import write_ct_study
from tests.support.node_proc import NodeProcess, node_config
from tests.support.peers import echo, free_port, require_binary, wait_for
from tests.support.rawdicom import RawAssociation
from tests.test_ingest import Node, split_part10

pytestmark = [pytest.mark.integration]


def _openssl(*args: str) -> None:
    subprocess.run([require_binary("openssl"), *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA (PEM)."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=CardioNode test CA",
             "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
                      ("client", "extendedKeyUsage=clientAuth\n")):
        (d / f"{name}.ext").write_text(ext)
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=cardionode-{name}",
                 "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"))
        _openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"),
                 "-CAcreateserial", "-days", "2", "-extfile", str(d / f"{name}.ext"), "-out", str(d / f"{name}.pem"))
    return {p.stem + p.suffix.replace(".", "_"): p for p in d.iterdir()}


@pytest.fixture()
def tls_node(tmp_path: Path, pki: dict[str, Path]):
    tls = TLSSection(certificate=str(pki["server_pem"]), private_key=str(pki["server_key"]),
                     ca_certificates=str(pki["ca_pem"]), require_client_certificate=True)
    node = Node(tmp_path, tls=tls, association_timeout_s=3.0)
    yield node
    node.stop()


def _dcmtk(tool: str, port: int, pki: dict[str, Path], *files: Path,
           client_cert: bool = True) -> subprocess.CompletedProcess:
    tls = ["+tls", str(pki["client_key"]), str(pki["client_pem"])] if client_cert else ["+tla"]
    cmd = [require_binary(tool), *tls, "+cf", str(pki["ca_pem"]), "-aec", "CARDIONODE", "127.0.0.1", str(port),
           *map(str, files)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_dcmtk_over_tls_echoes_and_stores_byte_identical(tls_node, pki, tmp_path: Path) -> None:
    files = write_ct_study(tmp_path / "ct", 3)
    assert _dcmtk("echoscu", tls_node.port, pki).returncode == 0
    res = _dcmtk("storescu", tls_node.port, pki, *files)
    assert res.returncode == 0, res.stderr
    assert len(tls_node.stored) == 3
    for f in files:
        stored = next(s for s in tls_node.stored if s.sop_instance_uid == f.stem)
        assert split_part10(stored.path)[1] == split_part10(f)[1]


def test_peers_without_tls_or_client_certificate_get_no_association(tls_node, pki, tmp_path: Path) -> None:
    assert not echo(tls_node.port, "CARDIONODE", timeout=3)  # plain TCP to a TLS port
    assert _dcmtk("echoscu", tls_node.port, pki, client_cert=False).returncode != 0  # TLS without a client cert
    assert tls_node.stored == []
    assert _dcmtk("echoscu", tls_node.port, pki).returncode == 0  # still serving


def test_silent_tls_client_does_not_stop_other_tls_clients(tls_node, pki) -> None:
    """The TLS handshake runs in the connection's own thread with the association deadline: a client that
    opens TCP and never sends its ClientHello used to block pynetdicom's accept loop (every later client
    hung); now the others are served and the silent one is closed after node.association_timeout_s."""
    with RawAssociation(tls_node.port, source="127.0.0.2") as silent:
        assert _dcmtk("echoscu", tls_node.port, pki).returncode == 0
        assert silent.closed_by_peer(tls_node.node.association_timeout_s + 5)


def test_dimse_sender_delivers_to_a_tls_destination(tls_node, pki, tmp_path: Path) -> None:
    files = write_ct_study(tmp_path / "ct", 2)
    client = TLSSection(certificate=str(pki["client_pem"]), private_key=str(pki["client_key"]),
                        ca_certificates=str(pki["ca_pem"]))
    dest = DimseDestination(type="dimse", ae_title="CARDIONODE", host="127.0.0.1", port=tls_node.port, tls=client)
    outcomes = build_sender("tls-pacs", dest, "CARDIONODE", timeout_s=10).send(files)
    assert [o.ok for o in outcomes] == [True, True], outcomes
    assert sorted(s.sop_instance_uid for s in tls_node.stored) == sorted(f.stem for f in files)
    # a destination whose CA does not know the node's certificate is an error, not a silent success
    wrong_ca = TLSSection(certificate=str(pki["client_pem"]), private_key=str(pki["client_key"]),
                          ca_certificates=str(pki["client_pem"]))
    bad = DimseDestination(type="dimse", ae_title="CARDIONODE", host="127.0.0.1", port=tls_node.port, tls=wrong_ca)
    with pytest.raises(Exception, match="tls-pacs"):
        build_sender("tls-pacs", bad, "CARDIONODE", timeout_s=10).send(files[:1])


def _https_get(port: int, path: str, ca: Path, cert: tuple[Path, Path] | None) -> int:
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def test_http_port_serves_https_with_client_certificates(pki, tmp_path: Path) -> None:
    http_port = free_port()
    tls = {"certificate": str(pki["server_pem"]), "private_key": str(pki["server_key"]),
           "ca_certificates": str(pki["ca_pem"]), "require_client_certificate": True}
    node = NodeProcess(node_config(tmp_path, {}, http_port=http_port, http_tls=tls)).start()
    client = (pki["client_pem"], pki["client_key"])
    try:
        def up() -> bool:
            try:
                return _https_get(http_port, "/healthz", pki["ca_pem"], client) == 200
            except OSError:
                return False

        assert wait_for(up, 30, interval=0.2), node.log_path.read_text()[-2000:]
        assert _https_get(http_port, "/api/jobs", pki["ca_pem"], client) == 401  # TLS does not replace the token
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):  # no client certificate
            _https_get(http_port, "/healthz", pki["ca_pem"], None)
        plain = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)  # plain HTTP to the HTTPS port
        with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
            plain.request("GET", "/healthz")
            plain.getresponse()
        assert up()  # still serving
    finally:
        node.terminate()
