"""DIMSE ingest against real dcmtk peers: what is sent is what is spooled, refusals follow the standard,
and the listener keeps serving after bad input."""
from __future__ import annotations

import dataclasses
import io
import logging
import os
import re
import socket
import struct
import time
from pathlib import Path
from typing import Iterator

import pydicom
import pytest
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.uid import SecondaryCaptureImageStorage, generate_uid
from pynetdicom import AE
from pynetdicom.dimse_primitives import C_STORE

from node.state import connect
from node.config import NodeSection
from node.state import InstanceIndex
from node.state import OwnResults
from node.ingest.dimse import DimseServer
from node.spool import Spool
from tests.fixtures.studies import write_ct_study
from tests.support import synth
from tests.support.peers import echoscu, storescu, wait_for
from tests.support.rawdicom import RawAssociation, c_store_command

pytestmark = [pytest.mark.integration]

CT = "1.2.840.10008.5.1.4.1.1.2"


def split_part10(path: Path) -> tuple[pydicom.Dataset, bytes]:
    """(File Meta, the encoded dataset bytes after it) of a Part 10 file."""
    with open(path, "rb") as fp:
        read_preamble(fp, False)
        meta = _read_file_meta_info(fp)
        return meta, fp.read()


class Node:
    """Spool + DimseServer in this process, on a free port."""

    def __init__(self, tmp: Path, **node_fields) -> None:
        fields = {"host": "127.0.0.1", "port": 0, "storage_dir": str(tmp / "var"), "min_free_mb": 0, **node_fields}
        self.node = dataclasses.replace(NodeSection(), **fields)
        self.own_results = OwnResults(self.node.storage_path)
        self.spool = Spool(self.node.storage_path, self.node.min_free_mb, own_results=self.own_results)
        self.stored: list = []
        self.spool.add_listener(self.stored.append)
        self.server = DimseServer(self.node, self.spool).start()
        self.port = self.server.port
        self.conn = connect(self.node.storage_path)
        self.index = InstanceIndex(self.conn)

    def stop(self) -> None:
        self.server.stop()
        self.spool.close()
        self.own_results.close()
        self.conn.close()


@pytest.fixture()
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path)
    yield n
    n.stop()


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict[str, list[Path]]:
    """One study: 300-slice 512x512 CT, an XA cine, the XA as JPEG Baseline, a CT slice as JPEG-LS and RLE."""
    root = tmp_path_factory.mktemp("study")
    study_uid = generate_uid()
    ct = write_ct_study(root / "ct", 300, study_uid=study_uid, size=512)
    xa = synth.xa_cine(root / "xa" / "cine.dcm", frames=30, size=256, study_uid=study_uid)
    small = write_ct_study(root / "ct_small", 2, study_uid=study_uid, size=128)
    compressed = [
        synth.compress(xa_src, root / "xa_jpeg" / "cine_jpeg.dcm", "jpeg-baseline")
        for xa_src in [synth.xa_cine(root / "xa_src" / "cine.dcm", frames=10, size=128, study_uid=study_uid)]
    ]
    compressed.append(synth.compress(small[0], root / "jls" / "ct_jls.dcm", "jpeg-ls"))
    compressed.append(synth.compress(small[1], root / "rle" / "ct_rle.dcm", "rle"))
    return {"ct": ct, "xa": [xa], "compressed": compressed, "study_uid": [study_uid]}


def assert_spooled_as_sent(node: Node, sent: list[Path]) -> None:
    for path in sent:
        meta, data = split_part10(path)
        row = node.index.get(str(meta.MediaStorageSOPInstanceUID))
        assert row is not None, f"{path.name} not indexed"
        stored = node.index.absolute(row["path"])
        smeta, sdata = split_part10(stored)
        assert smeta.TransferSyntaxUID == meta.TransferSyntaxUID == row["transfer_syntax_uid"]
        assert smeta.MediaStorageSOPInstanceUID == meta.MediaStorageSOPInstanceUID
        assert sdata == data, f"{path.name}: spooled dataset bytes differ from what was sent"
        assert row["size"] == stored.stat().st_size


def test_study_is_spooled_byte_identical_and_indexed(node: Node, study) -> None:
    assert echoscu(node.port).returncode == 0
    files = study["ct"] + study["xa"] + study["compressed"]
    r = storescu(node.port, [p.parent for p in (study["ct"][0], *study["xa"], *study["compressed"])],
                 calling_ae="MODALITY", env={"TCP_NODELAY": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(node.stored) == len(files)
    assert_spooled_as_sent(node, files)
    tss = {split_part10(p)[0].TransferSyntaxUID for p in study["compressed"]}
    assert tss == {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.5"}

    view = node.index.study_view(study["study_uid"][0])
    assert len(view.instances) == len(files)
    ct_series = [s for s in view.series if len(s) == 300][0]
    assert [ref.instance_number for ref in ct_series] == list(range(1, 301))
    assert view.calling_ae_titles == ("MODALITY",)
    assert node.index.counts()["instances"] == len(files)
    # parsed equality as well: the stored XA decodes to the same pixels
    assert pydicom.dcmread(ct_series.instances[0].path).PixelData == pydicom.dcmread(
        [p for p in study["ct"] if pydicom.dcmread(p, stop_before_pixels=True).InstanceNumber == 1][0]).PixelData

    # re-sending is idempotent: same paths, same rows, flagged as replaced
    before = node.index.counts()
    node.stored.clear()
    r = storescu(node.port, study["ct"][:5] + study["xa"], calling_ae="MODALITY")
    assert r.returncode == 0, r.stderr[-2000:]
    assert node.index.counts() == before
    assert [s.replaced for s in node.stored] == [True] * 6
    assert_spooled_as_sent(node, study["ct"][:5] + study["xa"])
    # the replaced copies (kept under a second name so that rename() does not free them while the
    # sender waits) are removed after the responses
    def leftovers() -> list[Path]:
        return [p for p in node.spool.root.rglob("*") if p.is_file() and p.suffix != ".dcm"]
    assert wait_for(lambda: not leftovers(), timeout=10), leftovers()
    assert all(s.path.stat().st_nlink == 1 for s in node.stored)


def _rejection(r) -> str:
    return (r.stdout or "") + (r.stderr or "")


def test_calling_and_called_ae_checks(tmp_path: Path, study) -> None:
    n = Node(tmp_path, allowed_callers=("MODALITY", "PACS@127.0.0.1", "REMOTE@192.0.2.1"))
    try:
        assert echoscu(n.port, calling_ae="MODALITY").returncode == 0
        assert echoscu(n.port, calling_ae="PACS").returncode == 0
        r = echoscu(n.port, calling_ae="INTRUDER")
        assert r.returncode != 0 and "Calling AE Title Not Recognized" in _rejection(r)
        r = echoscu(n.port, calling_ae="REMOTE")  # allowed only from another host
        assert r.returncode != 0 and "Calling AE Title Not Recognized" in _rejection(r)
        r = storescu(n.port, study["ct"][:2], calling_ae="INTRUDER")
        assert r.returncode != 0
        r = echoscu(n.port, calling_ae="MODALITY", called_ae="SOMEONE")
        assert r.returncode != 0 and "Called AE Title Not Recognized" in _rejection(r)
        assert n.index.counts()["instances"] == 0
        assert storescu(n.port, study["ct"][:2], calling_ae="PACS").returncode == 0
        assert n.index.counts()["instances"] == 2
    finally:
        n.stop()


def _sc_file(tmp: Path, sop_class: str = SecondaryCaptureImageStorage, name: str = "sc.dcm") -> Path:
    """An 8 x 8 image of ``sop_class`` (Secondary Capture unless told) in a new study."""
    ds = synth.base_dataset(sop_class, generate_uid(), generate_uid(), "OT")
    ds.ConversionType = "WSD"
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.Rows, ds.Columns = 1, "MONOCHROME2", 8, 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = bytes(64)
    path = tmp / name
    ds.save_as(path, enforce_file_format=True)
    return path


def _raw_c_store(port: int, sop_class: str, sop_uid: str, dataset: bytes, context_class: str = CT) -> int:
    """Send one C-STORE whose dataset bytes are given as-is, on the context of ``context_class``."""
    ae = AE(ae_title="RAWSCU")
    ae.add_requested_context(context_class, "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", port, ae_title="CARDIONODE")
    assert assoc.is_established
    try:
        req = C_STORE()
        req.MessageID = 1
        req.AffectedSOPClassUID = sop_class
        req.AffectedSOPInstanceUID = sop_uid
        req.Priority = 2
        req.DataSet = io.BytesIO(dataset)
        cx_id = assoc.accepted_contexts[0].context_id
        # Hold the association's reactor as send_c_store() does, or it may take the response first
        # ("Received unexpected C-STORE service message") and get_msg() waits for nothing.
        assoc._reactor_checkpoint.clear()
        try:
            assoc.dimse.send_msg(req, cx_id)
            _cx, rsp = assoc.dimse.get_msg(block=True)
        finally:
            assoc._reactor_checkpoint.set()
        assert rsp is not None, "no C-STORE response"
        return int(rsp.Status)
    finally:
        assoc.release()


def test_refusals_are_standard_and_the_node_keeps_serving(node: Node, study, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="cardionode.ingest")
    # unsupported SOP class (ultrasound): storescu finds no accepted presentation context, nothing is stored
    r = storescu(node.port, [_sc_file(tmp_path, "1.2.840.10008.5.1.4.1.1.6.1", "us.dcm")])
    assert r.returncode != 0
    assert "no acceptable presentation context" in _rejection(r).lower()
    # a Secondary Capture (a result class, negotiated for the node's own results) that is not ours: 0x0122
    sc = _sc_file(tmp_path)
    assert _raw_c_store(node.port, SecondaryCaptureImageStorage, str(pydicom.dcmread(sc).SOPInstanceUID),
                        split_part10(sc)[1], context_class=SecondaryCaptureImageStorage) == 0x0122
    # ... and a C-STORE naming it anyway on a CT context gets 0x0122
    _meta, ct_bytes = split_part10(study["ct"][0])
    assert _raw_c_store(node.port, SecondaryCaptureImageStorage, generate_uid(), ct_bytes) == 0x0122

    meta, _ = split_part10(study["ct"][1])
    sop_uid = str(meta.MediaStorageSOPInstanceUID)
    _m, data = split_part10(study["ct"][1])
    # truncated in the pixel data -> 0xC210, one log line naming the instance
    assert _raw_c_store(node.port, CT, sop_uid, data[:-1000]) == 0xC210
    # dataset of another instance than the request names -> 0xA900
    assert _raw_c_store(node.port, CT, generate_uid(), data) == 0xA900
    # garbage
    status = _raw_c_store(node.port, CT, generate_uid(), os.urandom(3000))
    assert status in (0xC210, 0xA900), hex(status)
    refusals = [r for r in caplog.records if r.getMessage() == "C-STORE refused"]
    assert len(refusals) == 5  # the foreign SC, the SC named on a CT context, truncated, mismatch, garbage
    assert sop_uid in [getattr(r, "sop_instance", None) for r in refusals]
    assert all(b"\x00" * 100 not in r.getMessage().encode() for r in refusals)

    # random bytes on the port, and a half A-ASSOCIATE-RQ, then hang up
    for payload in (os.urandom(5000), b"\x01\x00" + struct.pack(">I", 10_000_000) + b"\x00\x01"):
        with socket.create_connection(("127.0.0.1", node.port), timeout=5) as s:
            s.sendall(payload)
    assert node.index.counts()["instances"] == 0
    assert not any(p.is_file() for p in node.spool.root.rglob("*"))

    # still serving
    assert echoscu(node.port).returncode == 0
    assert storescu(node.port, study["ct"][:3]).returncode == 0
    assert_spooled_as_sent(node, study["ct"][:3])

    # a junk connection still waiting for its A-ASSOCIATE-RQ does not hold up a graceful stop
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as s:
        s.sendall(b"\x01\x00\x00\x00")
        t0 = time.monotonic()
        node.server.stop(graceful=True)
    assert time.monotonic() - t0 < 5


def test_out_of_space_refuses_with_a700_and_writes_nothing(tmp_path: Path, study) -> None:
    n = Node(tmp_path, min_free_mb=10**9)
    try:
        r = storescu(n.port, study["ct"][:1], extra_args=["-v"])
        assert r.returncode != 0
        assert "OutOfResources" in _rejection(r) or "0xa700" in _rejection(r).lower(), _rejection(r)[-1500:]
        assert n.index.counts()["instances"] == 0
        assert not any(p.is_file() for p in n.spool.root.rglob("*"))
        assert echoscu(n.port).returncode == 0
    finally:
        n.stop()


def test_header_walk_reads_identifying_attributes_and_refuses_broken_file_meta(tmp_path: Path) -> None:
    """The spool reads UIDs, description (in the dataset's character set) and numbers in its one structural
    walk; a wrong File Meta group length, a non-DICOM VR or a cut inside the File Meta is 0xC210, nothing stored."""
    from node.spool import InvalidInstanceError

    spool = Spool(tmp_path / "var", 0)
    try:
        [src] = write_ct_study(tmp_path / "ct", 1, size=32)
        ds = pydicom.dcmread(src)
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SeriesDescription = "Herz fünf"
        ds.SeriesNumber = 3
        ds.InstanceNumber = 7
        latin = tmp_path / "latin.dcm"
        ds.save_as(latin, enforce_file_format=True)
        inst = spool.store_file(latin, "TEST", "test")
        assert (inst.series_description, inst.series_number, inst.instance_number, inst.modality) == \
            ("Herz fünf", 3, 7, "CT")
        assert inst.sop_instance_uid == ds.SOPInstanceUID and inst.size == latin.stat().st_size

        data = src.read_bytes()
        (group_length,) = struct.unpack_from("<I", data, 140)
        start = 144 + group_length
        wrong_length = bytearray(data)
        struct.pack_into("<I", wrong_length, 140, group_length + 2)
        bad_vr = bytearray(data)
        bad_vr[start + 4:start + 6] = b"Q9"
        for name, payload in (("length", bytes(wrong_length)), ("vr", bytes(bad_vr)), ("cut", data[:140])):
            path = tmp_path / f"{name}.dcm"
            path.write_bytes(payload)
            with pytest.raises(InvalidInstanceError) as info:
                spool.store_file(path, "TEST", "test")
            assert info.value.status == 0xC210
        stored = [p for p in spool.root.rglob("*") if p.is_file()]
        assert stored == [inst.path]
    finally:
        spool.close()


@pytest.fixture()
def text_log():
    """The node's text log setup on a buffer for one test; the previous logging and pydicom
    settings are restored afterwards."""
    from pydicom import config as pydicom_config

    from node.logging_setup import setup_logging

    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogger("pynetdicom").level,
             pydicom_config.settings.reading_validation_mode)
    buf = io.StringIO()
    setup_logging("text", "INFO", stream=buf)
    try:
        yield buf
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
        logging.getLogger("pynetdicom").setLevel(saved[2])
        pydicom_config.settings.reading_validation_mode = saved[3]
        logging.captureWarnings(False)


_RECORD_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")


def test_network_values_cannot_forge_log_lines_and_invalid_uids_log_once(tmp_path: Path, text_log) -> None:
    """A UID with a newline from an unauthenticated caller is escaped in the text log (no forged line),
    an invalid UID gives one refusal line (not pydicom's warning per element access), and an empty
    dataset is 0xC210 as documented."""
    n = Node(tmp_path)
    try:
        forged = "1.2.3\n2026-01-01 00:00:00,000 INFO cardionode.ingest: forged"
        [src] = write_ct_study(tmp_path / "ct", 1, size=32)
        ds = pydicom.dcmread(src)
        ds.SOPInstanceUID = forged
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        _meta, data = split_part10_bytes(buf.getvalue())
        assert _raw_c_store(n.port, CT, forged, data) == 0xC210
        with RawAssociation(n.port) as raw:  # an empty dataset: one last-fragment PDV without bytes
            assert raw.associate(CT) == 0x02
            assert raw.c_store(CT, generate_uid(), b"") == 0xC210
            raw.release()
        assert echoscu(n.port).returncode == 0
    finally:
        n.stop()
    lines = text_log.getvalue().splitlines()
    assert lines and all(_RECORD_START.match(line) or line.startswith("    | ") for line in lines), lines
    assert not any("forged" in line and not _RECORD_START.match(line) for line in lines)
    refusals = [line for line in lines if "C-STORE refused" in line]
    assert len(refusals) == 2, lines
    assert "\\n2026-01-01" in refusals[0]  # the newline is written as \n inside the one record
    assert not [line for line in lines if "Invalid value for VR" in line or "Non-conformant" in line], lines


def split_part10_bytes(raw: bytes) -> tuple[pydicom.Dataset, bytes]:
    """(File Meta, dataset bytes) of Part 10 bytes."""
    fp = io.BytesIO(raw)
    read_preamble(fp, False)
    meta = _read_file_meta_info(fp)
    return meta, fp.read()


def test_sop_instance_uid_reused_under_another_study_is_refused_and_the_original_kept(node: Node, tmp_path: Path,
                                                                                    caplog) -> None:
    caplog.set_level(logging.WARNING, logger="cardionode.ingest")
    files = write_ct_study(tmp_path / "ct", 3, size=32)
    assert storescu(node.port, files).returncode == 0
    study = str(pydicom.dcmread(files[0]).StudyInstanceUID)
    stored = node.index.absolute(node.index.get(str(pydicom.dcmread(files[0]).SOPInstanceUID))["path"])
    original = stored.read_bytes()

    ds = pydicom.dcmread(files[0])
    ds.StudyInstanceUID, ds.PatientName = generate_uid(), "Other^Patient"
    other = tmp_path / "other.dcm"
    ds.save_as(other, enforce_file_format=True)
    r = storescu(node.port, [other])
    assert r.returncode != 0 and "Status: 0x111" in _rejection(r), _rejection(r)[-800:]  # dcmtk: "Unknown Status"
    assert len(node.index.study_view(study).instances) == 3
    assert stored.read_bytes() == original
    assert node.index.counts()["studies"] == 1
    refusal = [rec for rec in caplog.records if rec.getMessage() == "C-STORE refused"]
    assert [getattr(rec, "status", "") for rec in refusal] == ["0x0111"]
    assert study in refusal[0].reason
    # the same instance re-sent to its own study is still an idempotent replace
    assert storescu(node.port, files[:1]).returncode == 0


def test_own_result_sent_back_by_c_store_is_acknowledged_not_stored(node: Node, tmp_path: Path, caplog) -> None:
    """An instance the node produced (recorded in ``results``: by SOP Instance UID or by series) that comes
    back by C-STORE gets Success, is not stored, does not reach completion, and is logged."""
    caplog.set_level(logging.WARNING, logger="cardionode.ingest")
    files = write_ct_study(tmp_path / "ct", 3, size=32)
    by_uid = pydicom.dcmread(files[0])
    other = write_ct_study(tmp_path / "other", 1, size=32)
    with node.conn:
        node.conn.execute("INSERT INTO jobs (id, study_uid, route_name, pipeline, state, next_attempt_at, created_at)"
                          " VALUES (1, '1.2.3', 'r', 'p', 'done', 0, 0)")
        node.conn.execute("INSERT INTO results (sop_instance_uid, job_id, sop_class_uid, path, created_at,"
                          " series_instance_uid) VALUES (?, 1, ?, 'x', 0, ?)",
                          (by_uid.SOPInstanceUID, CT, "1.2.3.999"))
        node.conn.execute("INSERT INTO results (sop_instance_uid, job_id, sop_class_uid, path, created_at,"
                          " series_instance_uid) VALUES ('1.2.3.998', 1, ?, 'y', 0, ?)",
                          (CT, pydicom.dcmread(other[0]).SeriesInstanceUID))
    assert storescu(node.port, [files[0], other[0], files[2]]).returncode == 0  # all three answered Success
    assert [s.sop_instance_uid for s in node.stored] == [pydicom.dcmread(files[2]).SOPInstanceUID]
    assert node.index.counts()["instances"] == 1
    returned = [r for r in caplog.records if r.getMessage().startswith("own result sent back")]
    assert sorted(getattr(r, "sop_instance") for r in returned) == sorted(
        [by_uid.SOPInstanceUID, pydicom.dcmread(other[0]).SOPInstanceUID])


def test_own_sr_seg_and_sc_sent_back_get_success_and_are_not_stored(node: Node, tmp_path: Path, caplog) -> None:
    """A PACS that forwards whole studies sends the node's own SR, SEG and summary image back: their
    SOP classes are negotiated for that alone, so the association goes through, each gets Success,
    nothing is stored or left in the spool's .incoming, and each is logged; a foreign SR gets 0x0122."""
    caplog.set_level(logging.WARNING, logger="cardionode.ingest")
    own = {cls: _sc_file(tmp_path, cls, f"{n}.dcm") for n, cls in enumerate(
        ("1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.66.4", SecondaryCaptureImageStorage))}
    foreign = _sc_file(tmp_path, "1.2.840.10008.5.1.4.1.1.88.34", "foreign-sr.dcm")
    with node.conn:
        node.conn.execute("INSERT INTO jobs (id, study_uid, route_name, pipeline, state, next_attempt_at, created_at)"
                          " VALUES (1, '1.2.3', 'r', 'p', 'done', 0, 0)")
        for n, (cls, path) in enumerate(own.items()):
            ds = pydicom.dcmread(path)
            # the SR by its SOP Instance UID, the SEG and the summary image by their series
            node.conn.execute("INSERT INTO results (sop_instance_uid, job_id, sop_class_uid, path, created_at,"
                              " series_instance_uid) VALUES (?, 1, ?, 'x', 0, ?)",
                              (ds.SOPInstanceUID if n == 0 else f"1.2.3.{n}", cls,
                               "1.2.3.99" if n == 0 else ds.SeriesInstanceUID))
    r = storescu(node.port, list(own.values()), extra_args=["-R"])
    assert r.returncode == 0 and "Store Failed" not in r.stdout + r.stderr, r.stdout + r.stderr
    returned = [getattr(x, "sop_instance") for x in caplog.records if x.getMessage().startswith("own result sent back")]
    assert sorted(returned) == sorted(str(pydicom.dcmread(p).SOPInstanceUID) for p in own.values())
    sr = pydicom.dcmread(foreign)
    assert _raw_c_store(node.port, sr.SOPClassUID, str(sr.SOPInstanceUID), split_part10(foreign)[1],
                        context_class=sr.SOPClassUID) == 0x0122
    assert node.stored == [] and node.index.counts()["instances"] == 0
    assert list(node.spool.incoming.iterdir()) == []
    # and the node still stores what it takes in
    assert storescu(node.port, write_ct_study(tmp_path / "ct", 1, size=16)).returncode == 0
    assert node.index.counts()["instances"] == 1


def test_own_results_match_by_instance_or_series_never_by_an_empty_series(node: Node) -> None:
    """OwnResults.contains: a result's SOP Instance UID or series matches; an instance whose series is
    unknown ("") is judged by its SOP Instance UID alone, even next to a result row without a series."""
    with node.conn:
        node.conn.execute("INSERT INTO jobs (id, study_uid, route_name, pipeline, state, next_attempt_at, created_at)"
                          " VALUES (1, '1.2.3', 'r', 'p', 'done', 0, 0)")
        node.conn.executemany("INSERT INTO results (sop_instance_uid, job_id, sop_class_uid, path, created_at,"
                              " series_instance_uid) VALUES (?, 1, ?, 'x', 0, ?)",
                              [("1.2.3.1", CT, "1.2.3.10"), ("1.2.3.2", CT, "")])
    assert node.own_results.contains("1.2.3.1", "")
    assert node.own_results.contains("9.9", "1.2.3.10")
    assert not node.own_results.contains("9.9", "")
    assert not node.own_results.contains("9.9", "9.9.9")


def test_group_sync_shares_fsyncs_between_threads_and_fails_the_whole_batch(tmp_path: Path) -> None:
    """node.fsync.GroupSync: concurrent callers need fewer flushes than calls; an fsync that fails
    fails its caller (never reported as durable)."""
    import threading

    from node.fsync import GroupSync

    group = GroupSync()
    files = []
    for i in range(64):
        p = tmp_path / f"f{i}"
        p.write_bytes(os.urandom(64 * 1024))
        files.append(p)
    errors: list[BaseException] = []

    def worker(chunk: list[Path]) -> None:
        try:
            for p in chunk:
                group.sync(p)
                group.sync(tmp_path, directory=True)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(files[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert group.requests == 128 and group.flushes < group.requests
    with pytest.raises(FileNotFoundError):
        group.sync(tmp_path / "gone")
    group.sync(files[0])  # the next batch is not affected


@pytest.mark.parametrize("status", [0x0000, 0xA700, 0xC210, 0x0111, 0xB000])
@pytest.mark.parametrize("sop_class", ["1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4.1"])
def test_c_store_rsp_command_set_is_pynetdicoms_encoding(status: int, sop_class: str) -> None:
    """The listener encodes a plain C-STORE-RSP itself (node.ingest.transport.store_rsp_command_set):
    byte for byte what pynetdicom's own encoding gives, for odd and even UID lengths; a response with
    an Error Comment, and a request, are left to pynetdicom."""
    from pynetdicom.dimse_messages import C_STORE_RSP
    from pynetdicom.dsutils import encode

    from node.ingest.transport import store_rsp_command_set

    for sop_instance in ("1.2.3.4", "1.2.826.0.1.3680043.8.498.10225957900123640307577356353037057335"):
        rsp = C_STORE()
        rsp.MessageIDBeingRespondedTo = 65535
        rsp.AffectedSOPClassUID = sop_class
        rsp.AffectedSOPInstanceUID = sop_instance
        rsp.Status = status
        message = C_STORE_RSP()
        message.primitive_to_message(rsp)
        assert store_rsp_command_set(rsp) == encode(message.command_set, True, True)
        rsp.ErrorComment = "refused"
        assert store_rsp_command_set(rsp) is None
    req = C_STORE()
    req.MessageID = 1
    req.AffectedSOPClassUID = sop_class
    req.AffectedSOPInstanceUID = "1.2.3"
    assert store_rsp_command_set(req) is None


@pytest.mark.parametrize("transfer_syntax", ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
def test_streamed_file_meta_is_pydicoms_encoding_of_pynetdicoms_meta(transfer_syntax: str) -> None:
    """The listener writes the File Meta ahead of a streamed dataset itself
    (node.ingest.transport.encode_file_meta): byte for byte what pydicom writes for pynetdicom's
    ``create_file_meta``, for odd and even UID lengths."""
    from pydicom.filewriter import write_file_meta_info
    from pynetdicom.dsutils import create_file_meta

    from node.ingest.transport import StreamedFileMeta, encode_file_meta

    for sop_instance in ("1.2.3.4", "1.2.826.0.1.3680043.8.498.10225957900123640307577356353037057335"):
        for sop_class in (CT, SecondaryCaptureImageStorage):
            expected = io.BytesIO()
            write_file_meta_info(expected, create_file_meta(sop_class_uid=sop_class, sop_instance_uid=sop_instance,
                                                            transfer_syntax=transfer_syntax))
            assert encode_file_meta(StreamedFileMeta(sop_class, sop_instance, transfer_syntax)) == expected.getvalue()


def _pdata_pdu(pdvs: list[tuple[int, bytes]], context_id: int = 1) -> bytes:
    """One P-DATA-TF PDU holding several PDVs of (control byte, payload)."""
    items = b"".join(struct.pack(">IBB", len(payload) + 2, context_id, control) + payload for control, payload in pdvs)
    return struct.pack(">BBI", 0x04, 0, len(items)) + items


def test_dataset_fragments_are_written_straight_to_the_spool_and_stored_byte_identical(
        node: Node, tmp_path: Path, monkeypatch) -> None:
    """Data fragments that are not the last skip pynetdicom's PDU decoding and state machine
    (GuardedDUL._stream_fragments): several PDVs per PDU, fragments of any size, the last fragment
    and the command through pynetdicom; the stored file is byte-identical.  A PDV whose length runs
    past its PDU aborts the association, stores nothing, leaves no partial file, and the node keeps
    serving."""
    from node.ingest.transport import GuardedDUL

    taken: list[bool] = []
    original = GuardedDUL._stream_fragments

    def counting(self, body):
        result = original(self, body)
        taken.append(result)
        return result

    monkeypatch.setattr(GuardedDUL, "_stream_fragments", counting)
    src = write_ct_study(tmp_path / "ct", 1, size=256)[0]
    meta, dataset = split_part10(src)
    sop_class, sop_uid = str(meta.MediaStorageSOPClassUID), str(meta.MediaStorageSOPInstanceUID)
    pieces = [dataset[i:i + 7001] for i in range(0, len(dataset), 7001)]
    assert len(pieces) > 6
    with RawAssociation(node.port) as raw:
        assert raw.associate(CT) == 0x02
        raw.send(_pdata_pdu([(0x03, c_store_command(sop_class, sop_uid))]))
        raw.send(_pdata_pdu([(0x00, pieces[0]), (0x00, pieces[1]), (0x00, pieces[2])]))  # three PDVs in one PDU
        for piece in pieces[3:-1]:
            raw.send(_pdata_pdu([(0x00, piece)]))
        raw.send(_pdata_pdu([(0x02, pieces[-1])]))
        assert raw.read_status() == 0x0000
        raw.release()
    assert_spooled_as_sent(node, [src])
    # the command PDU and the last fragment's go to pynetdicom, every PDU in between is written directly
    assert taken == [False] + [True] * (len(pieces) - 3) + [False]

    # a PDV whose length runs past the PDU, in the middle of a dataset: pynetdicom's path aborts
    other = write_ct_study(tmp_path / "ct2", 1, size=256)[0]
    meta2, dataset2 = split_part10(other)
    with RawAssociation(node.port) as raw:
        assert raw.associate(CT) == 0x02
        raw.send(_pdata_pdu([(0x03, c_store_command(sop_class, str(meta2.MediaStorageSOPInstanceUID)))]))
        raw.send(_pdata_pdu([(0x00, dataset2[:5000])]))
        broken = bytearray(_pdata_pdu([(0x00, dataset2[5000:9000])]))
        broken[6:10] = struct.pack(">I", 9000)  # item length beyond the PDU's end
        raw.send(bytes(broken))
        assert raw.closed_by_peer(timeout=10)
    assert node.index.get(str(meta2.MediaStorageSOPInstanceUID)) is None
    assert wait_for(lambda: not list(node.spool.incoming.iterdir()), timeout=10), list(node.spool.incoming.iterdir())
    r = storescu(node.port, [other], calling_ae="MODALITY")
    assert r.returncode == 0, r.stderr[-2000:]
    assert_spooled_as_sent(node, [other])


@pytest.mark.parametrize("busy, slept", [(0, None), (1, 0.025), (2, 0.05), (9, 0.1)])
def test_a_busy_ingest_process_lets_the_others_accept_first(tmp_path: Path, monkeypatch, busy: int,
                                                            slept: float | None) -> None:
    """On a listening socket shared by ingest processes, a process waits ACCEPT_DEFER_S per
    association it serves (at most ACCEPT_DEFER_MAX_S) before accept(); an idle one does not wait;
    a connection another process took meanwhile raises EAGAIN, which socketserver ignores.  With
    its own socket the listener never waits."""
    from node.ingest import transport
    from node.ingest.dimse import build_storage_ae

    monkeypatch.setattr(transport, "ACCEPT_DEFER_S", 0.025)
    monkeypatch.setattr(transport, "ACCEPT_DEFER_MAX_S", 0.1)
    waits: list[float] = []
    monkeypatch.setattr(transport.time, "sleep", waits.append)
    node = dataclasses.replace(NodeSection(), host="127.0.0.1", port=0, storage_dir=str(tmp_path / "var"))
    spool = Spool(node.storage_path, 0)
    ae = build_storage_ae(node, spool)
    shared = socket.create_server(("127.0.0.1", 0))
    servers = [transport.GuardedServer(ae, ("127.0.0.1", 0), "CARDIONODE", [], guard=ae._guard, limits=ae._limits,
                                       listen_socket=listen) for listen in (shared, None)]
    try:
        for server, expected in zip(servers, ([] if slept is None else [pytest.approx(slept)], [])):
            monkeypatch.setattr(server, "busy", lambda: busy)
            waits.clear()
            client = socket.create_connection(server.socket.getsockname())
            conn, _ = server.get_request()
            conn.close()
            client.close()
            assert waits == expected
        with pytest.raises(BlockingIOError):  # nothing pending any more: another process took it
            servers[0].get_request()
    finally:
        for server in servers:
            server.server_close()
        spool.close()
