"""Dispatch to real dcmtk storescp peers: exactly once, one destination down never blocks the other,
retries with backoff reach a destination that comes up later, and state survives a restart."""
from __future__ import annotations

import time

import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes as sr_codes
from pydicom.uid import JPEG2000Lossless

from node.config import DimseDestination, DispatchSection
from node.dispatch.base import SenderError, build_sender
from node.dispatch.queue import Dispatcher
from node.state import add_deliveries
from node.jobs import write_result_files
from node.state import Connections
from pipelines.base import PipelineContext, PipelineResult, StudyView
from pipelines.outputs.algorithm import AlgorithmIdentity
from pipelines.outputs.seg import SegmentSpec, build_segmentation, jpeg2000_encoder_available
from tests.support.peers import StoreSCP, free_port
from tests.fixtures.sr_pipeline import SrTestPipeline
from tests.fixtures.studies import write_ct_study

pytestmark = pytest.mark.integration


@pytest.fixture()
def conns(tmp_path):
    c = Connections(tmp_path)
    yield c
    c.close_all()


def _results(tmp_path, n=2):
    view = StudyView.from_files(write_ct_study(tmp_path / "study", 1))
    datasets = [SrTestPipeline().run(view, PipelineContext({}, None, tmp_path)).datasets[0] for _ in range(n)]
    return write_result_files(PipelineResult(datasets, "test-sr", "0"), tmp_path / "results" / "1")


def _dest(port, ae="PACS"):
    return DimseDestination(type="dimse", ae_title=ae, host="127.0.0.1", port=port)


def _wait(pred, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def _states(conns, dest):
    return [r["state"] for r in conns.get().execute(
        "SELECT state FROM deliveries WHERE destination=? ORDER BY id", (dest,))]


def test_down_destination_does_not_block_the_other_and_is_reached_when_it_comes_up(tmp_path, conns):
    files = _results(tmp_path, 2)
    up = StoreSCP(tmp_path / "up").start()
    down_port = free_port()
    late = StoreSCP(tmp_path / "late", port=down_port)
    settings = DispatchSection(max_attempts=50, backoff_initial_s=0.3, backoff_max_s=1.0, timeout_s=5)
    conn = conns.get()
    with conn:
        add_deliveries(conn, 1, [(uid, p) for uid, _c, p in files], ["up", "late"])
        assert add_deliveries(conn, 1, [(uid, p) for uid, _c, p in files], ["up", "late"]) == 0
    dispatcher = Dispatcher(conns.get, {"up": _dest(up.port), "late": _dest(down_port)}, settings, "CARDIONODE")
    dispatcher.start()
    try:
        assert _wait(lambda: _states(conns, "up") == ["sent", "sent"], 10)
        assert _states(conns, "late") == ["pending", "pending"]
        row = conn.execute("SELECT attempts, last_error FROM deliveries WHERE destination='late'").fetchone()
        assert row["attempts"] >= 1 and "cannot associate" in row["last_error"]
        late.start()  # the destination comes up; retries reach it without intervention
        assert _wait(lambda: _states(conns, "late") == ["sent", "sent"], 10)
    finally:
        assert dispatcher.stop(10)
        up.stop()
        late.stop()
    for scp in (up, late):
        got = sorted(str(ds.SOPInstanceUID) for ds in scp.received())
        assert got == sorted(uid for uid, _c, _p in files)  # each instance exactly once


def test_backoff_times_survive_restart_and_sent_rows_are_not_resent(tmp_path, conns):
    files = _results(tmp_path, 1)
    settings = DispatchSection(max_attempts=3, backoff_initial_s=60, backoff_max_s=60, timeout_s=3)
    port = free_port()
    conn = conns.get()
    with conn:
        add_deliveries(conn, 1, [(uid, p) for uid, _c, p in files], ["x"])
    first = Dispatcher(conns.get, {"x": _dest(port)}, settings, "CARDIONODE")
    first.start()
    assert _wait(lambda: conn.execute("SELECT attempts FROM deliveries").fetchone()[0] == 1, 10)
    assert first.stop(10)
    due = conn.execute("SELECT next_attempt_at FROM deliveries").fetchone()[0]
    assert due > time.time() + 50  # persisted backoff
    with StoreSCP(tmp_path / "scp", port=port) as scp:
        second = Dispatcher(conns.get, {"x": _dest(port)}, settings, "CARDIONODE")
        second.start()
        time.sleep(1.0)
        assert second.stop(10)
        assert scp.received() == [] and _states(conns, "x") == ["pending"]  # restart honours the retry time
        with conn:
            conn.execute("UPDATE deliveries SET next_attempt_at=0")
        third = Dispatcher(conns.get, {"x": _dest(port)}, settings, "CARDIONODE")
        third.start()
        assert _wait(lambda: _states(conns, "x") == ["sent"], 10)
        assert third.stop(10)
        fourth = Dispatcher(conns.get, {"x": _dest(port)}, settings, "CARDIONODE")
        fourth.start()
        time.sleep(0.5)
        assert fourth.stop(10)
        assert len(scp.received()) == 1


def test_unreachable_destination_ends_in_failed_after_max_attempts_with_error(tmp_path, conns):
    files = _results(tmp_path, 1)
    settings = DispatchSection(max_attempts=2, backoff_initial_s=0.1, backoff_max_s=0.1, timeout_s=3)
    port = free_port()
    with pytest.raises(SenderError):
        build_sender("gone", _dest(port), "CARDIONODE", 3).send([files[0][2]])
    conn = conns.get()
    with conn:
        add_deliveries(conn, 1, [(files[0][0], files[0][2])], ["gone"])
    d = Dispatcher(conns.get, {"gone": _dest(port)}, settings, "CARDIONODE")
    d.start()
    assert _wait(lambda: _states(conns, "gone") == ["failed"], 10)
    assert d.stop(5)
    row = conn.execute("SELECT attempts, last_error FROM deliveries").fetchone()
    assert row["attempts"] == 2 and str(port) in row["last_error"]
    st = conn.execute("SELECT last_error, last_success_at FROM destination_state WHERE name='gone'").fetchone()
    assert st["last_error"] and st["last_success_at"] is None


def _jpeg2000_seg(tmp_path):
    """A 1-bit BINARY SEG over a 64x64 CT slice pair, JPEG 2000 lossless (as the pipelines write it)."""
    sources = []
    for p in write_ct_study(tmp_path / "ct", 2):
        ds = pydicom.dcmread(p)
        ds.Rows = ds.Columns = 64
        ds.PixelData = np.zeros((64, 64), np.int16).tobytes()
        sources.append(ds)
    masks = np.zeros((2, 64, 64), np.uint8)
    masks[0, 10:30, 12:40] = 1
    masks[1, 40:60, 5:20] = 1
    spec = SegmentSpec("lesion", sr_codes.SCT.MorphologicallyAbnormalStructure, sr_codes.SCT.Lesion)
    built = build_segmentation(sources, masks, [spec], algorithm=AlgorithmIdentity("test", "1"),
                               series_number=99, series_description="test seg")
    assert built.dataset is not None
    assert built.dataset.file_meta.TransferSyntaxUID == JPEG2000Lossless
    path = tmp_path / "seg.dcm"
    built.dataset.save_as(path, enforce_file_format=True)
    return path, masks


def test_peer_refusing_jpeg2000_gets_the_seg_uncompressed_with_the_same_masks(tmp_path):
    if not jpeg2000_encoder_available():
        pytest.fail("pylibjpeg-openjpeg is a base dependency: the JPEG 2000 encoder must be available")
    path, masks = _jpeg2000_seg(tmp_path)
    plain = StoreSCP(tmp_path / "plain").start()  # plain storescp: uncompressed transfer syntaxes only
    try:
        sender = build_sender("plain", _dest(plain.port), "CARDIONODE", timeout_s=10)
        outcomes = sender.send([path])
        assert [o.ok for o in outcomes] == [True], outcomes
        received = list((tmp_path / "plain").iterdir())
        assert len(received) == 1
        got = pydicom.dcmread(received[0])
        assert not got.file_meta.TransferSyntaxUID.is_compressed
        assert got.SOPInstanceUID == pydicom.dcmread(path).SOPInstanceUID
        sent = pydicom.dcmread(path)
        assert np.array_equal(got.pixel_array, sent.pixel_array)  # lossless: same frames, same order
        assert sorted(got.pixel_array.sum(axis=(1, 2)).tolist()) == sorted(masks.sum(axis=(1, 2)).tolist())
        assert got.PerFrameFunctionalGroupsSequence == sent.PerFrameFunctionalGroupsSequence
    finally:
        plain.stop()


class _StatusSCP:
    """A pynetdicom storage SCP on a free port answering C-STOREs with ``statuses`` in turn
    (``contexts``: the SOP classes it accepts)."""

    def __init__(self, contexts: list[str], statuses: list[int]) -> None:
        from pynetdicom import AE, evt

        self.statuses = list(statuses)
        self.received = 0
        self.ae = AE(ae_title="PACS")
        for uid in contexts:
            self.ae.add_supported_context(uid, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
        self.server = self.ae.start_server(("127.0.0.1", 0), block=False,
                                           evt_handlers=[(evt.EVT_C_STORE, self._store)])
        self.port = self.server.server_address[1]

    def _store(self, event) -> int:
        self.received += 1
        return self.statuses.pop(0) if self.statuses else 0x0000

    def stop(self) -> None:
        self.ae.shutdown()


def _deliveries(conns, dest):
    return [(r["state"], r["attempts"], r["last_error"]) for r in conns.get().execute(
        "SELECT state, attempts, last_error FROM deliveries WHERE destination=? ORDER BY id", (dest,))]


def test_statuses_that_can_never_succeed_fail_at_once_with_the_reason(tmp_path, conns):
    """0x0122, 0xA9xx and a peer that accepts no presentation context fail the delivery at the first
    attempt; a 0xC001 processing failure and 0xA700 stay pending for a retry."""
    files = _results(tmp_path, 4)
    sr_class = files[0][1]
    scp = _StatusSCP([sr_class], [0x0122, 0xA900, 0xC001, 0xA700])
    ct_only = _StatusSCP(["1.2.840.10008.5.1.4.1.1.2"], [])
    settings = DispatchSection(max_attempts=50, backoff_initial_s=30, backoff_max_s=60, timeout_s=5)
    conn = conns.get()
    with conn:
        add_deliveries(conn, 1, [(uid, p) for uid, _c, p in files], ["pacs"])
        add_deliveries(conn, 1, [(uid, p) for uid, _c, p in files[:1]], ["ctonly"])
    dispatcher = Dispatcher(conns.get, {"pacs": _dest(scp.port), "ctonly": _dest(ct_only.port)}, settings,
                            "CARDIONODE")
    dispatcher.start()
    try:
        assert _wait(lambda: all(a == 1 for _s, a, _e in _deliveries(conns, "pacs") + _deliveries(conns, "ctonly")),
                     15)
        pacs = _deliveries(conns, "pacs")
        assert [s for s, _a, _e in pacs] == ["failed", "failed", "pending", "pending"], pacs
        assert "0x0122 (SOP class not supported): permanent" in pacs[0][2]
        assert "0xA900 (data set does not match SOP class): permanent" in pacs[1][2]
        assert pacs[2][2] == "C-STORE status 0xC001" and pacs[3][2] == "C-STORE status 0xA700"
        [(state, attempts, error)] = _deliveries(conns, "ctonly")
        assert (state, attempts) == ("failed", 1)
        assert "accepted no presentation context for Comprehensive 3D SR Storage" in error, error
        assert ct_only.received == 0
    finally:
        assert dispatcher.stop(10)
        scp.stop()
        ct_only.stop()
