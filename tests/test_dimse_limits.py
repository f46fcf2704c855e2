"""No lock-out by silent or half-sent DIMSE connections: every phase of an association has a deadline,
a timed-out connection is closed and its slot freed, connections still negotiating are bounded per
address, and an address no allow-list entry can match is closed when it is accepted.

Attackers connect from other loopback addresses (127.0.0.2, 127.0.0.3: any 127.x.y.z reaches the
listener on Linux) so that the per-address limits never touch the legitimate modality on 127.0.0.1.
"""
from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from tests.fixtures.studies import write_ct_study
from tests.support.peers import echoscu, storescu, wait_for
from tests.support.rawdicom import RawAssociation, associate_rq, c_store_command, pdata, pdu_header
from tests.test_ingest import CT, Node

pytestmark = [pytest.mark.integration]

LIMITS = {"max_associations": 4, "max_pending_per_host": 4, "association_timeout_s": 3.0, "pdu_timeout_s": 3.0,
          "idle_timeout_s": 4.0}


def _half_associate_rq(port: int, source: str) -> RawAssociation:
    raw = RawAssociation(port, source=source)
    rq = associate_rq("ATTACKER", "CARDIONODE", [CT])
    raw.send(rq[: len(rq) // 2])
    return raw


def _half_pdata(port: int, source: str) -> RawAssociation:
    """An established association that sends a C-STORE command and half of a P-DATA PDU, then nothing."""
    raw = RawAssociation(port, source=source)
    assert raw.associate(CT) == 0x02
    raw.send(pdata(1, 0x03, c_store_command(CT, generate_uid())))
    raw.send(pdu_header(0x04, 16006) + struct.pack(">IBB", 16002, 1, 0x00) + b"\0" * 100)
    return raw


def test_half_sent_connections_do_not_lock_out_a_storing_modality(tmp_path: Path) -> None:
    node = Node(tmp_path, **LIMITS)
    held: list[RawAssociation] = []
    try:
        files = write_ct_study(tmp_path / "ct", 2)
        t0 = time.monotonic()
        held += [_half_pdata(node.port, "127.0.0.3") for _ in range(3)]  # 3 of the 4 association slots
        half_rq = []
        for _ in range(10):  # 4 admitted (max_pending_per_host), 6 closed at accept
            try:
                half_rq.append(_half_associate_rq(node.port, "127.0.0.2"))
            except OSError:  # reset while connecting/sending: refused at once, as intended
                pass
        held += half_rq
        time.sleep(0.3)  # refusals at accept have arrived by now; the admitted ones wait for their deadline
        refused_at_accept = [r for r in half_rq if r.closed_by_peer(0.01)]
        assert len(half_rq) - len(refused_at_accept) == 4
        # the modality keeps storing while they hold on
        for _ in range(3):
            r = storescu(node.port, files, calling_ae="MODALITY")
            assert r.returncode == 0, r.stdout[-1500:] + r.stderr[-1500:]
        assert echoscu(node.port, calling_ae="MODALITY").returncode == 0
        # every half-open socket is closed after its timeout (not before), and its slot is freed
        admitted = [r for r in half_rq if r not in refused_at_accept]
        assert all(r.closed_by_peer(LIMITS["association_timeout_s"] + 3) for r in admitted)
        assert all(r.closed_by_peer(LIMITS["pdu_timeout_s"] + 3) for r in held[:3])
        closed_after = time.monotonic() - t0
        assert closed_after >= min(LIMITS["association_timeout_s"], LIMITS["pdu_timeout_s"]) - 0.2
        assert wait_for(lambda: node.server.connection_counts() == {"negotiating": 0, "associations": 0}, 5), \
            node.server.connection_counts()
        # all four slots are free again: four associations at once
        four = [RawAssociation(node.port) for _ in range(4)]
        try:
            assert [a.associate(CT, calling="MODALITY") for a in four] == [0x02] * 4
        finally:
            for a in four:
                a.release()
    finally:
        for r in held:
            r.close()
        node.stop()


def test_established_association_idle_past_idle_timeout_is_aborted_and_closed(tmp_path: Path) -> None:
    node = Node(tmp_path, **LIMITS)
    try:
        with RawAssociation(node.port) as raw:
            assert raw.associate(CT) == 0x02
            t0 = time.monotonic()
            assert not raw.closed_by_peer(LIMITS["idle_timeout_s"] - 1)
            pdu_type, _body = raw.read_pdu()  # the A-ABORT
            assert pdu_type == 0x07
            assert raw.closed_by_peer(3)
            assert time.monotonic() - t0 < LIMITS["idle_timeout_s"] + 3
        assert wait_for(lambda: node.server.connection_counts()["associations"] == 0, 5)
    finally:
        node.stop()


def test_allow_list_by_host_closes_other_addresses_at_accept(tmp_path: Path) -> None:
    node = Node(tmp_path, allowed_callers=("MODALITY@127.0.0.1",), **LIMITS)
    try:
        with RawAssociation(node.port, source="127.0.0.2") as stranger:
            t0 = time.monotonic()
            assert stranger.closed_by_peer(3.0)  # closed before it sent a byte, long before any deadline
            assert time.monotonic() - t0 < 3.0
        files = write_ct_study(tmp_path / "ct", 1)
        assert storescu(node.port, files, calling_ae="MODALITY").returncode == 0
        assert node.server.connection_counts()["negotiating"] == 0
    finally:
        node.stop()


def test_oversized_or_garbage_pdus_close_the_connection_at_once(tmp_path: Path) -> None:
    node = Node(tmp_path, max_pdu=16384, **LIMITS)
    try:
        with RawAssociation(node.port, source="127.0.0.2") as raw:  # A-ASSOCIATE-RQ announcing 100 MB
            raw.send(pdu_header(0x01, 100_000_000) + b"\0" * 64)
            assert raw.closed_by_peer(2.0)  # at once, not after association_timeout_s (3)
        with RawAssociation(node.port, source="127.0.0.2") as raw:  # not a PDU type
            raw.send(b"GET / HTTP/1.1\r\n\r\n")
            assert raw.closed_by_peer(2.0)
        with RawAssociation(node.port) as raw:  # P-DATA larger than the maximum we advertised
            assert raw.associate(CT) == 0x02
            raw.send(pdu_header(0x04, 10_000_000) + b"\0" * 64)
            assert raw.closed_by_peer(2.0)
        assert echoscu(node.port).returncode == 0
    finally:
        node.stop()
