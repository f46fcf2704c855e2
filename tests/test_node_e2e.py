"""The node end to end as a subprocess: C-STORE a study in, the test SR arrives exactly once at a dcmtk
storescp and at Orthanc; a destination that is down at completion is reached when it comes up; bad
input does not stop the node from answering C-ECHO and storing a good study."""
from __future__ import annotations

import json
import socket
import time

import pydicom
import pytest

from tests.support.node_proc import NodeProcess, node_config
from tests.support.peers import Orthanc, StoreSCP, echo, free_port, storescu, wait_for
from tests.fixtures.studies import write_ct_study

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_sr_arrives_exactly_once_at_storescp_and_orthanc(tmp_path):
    files = write_ct_study(tmp_path / "study", 3)
    first = pydicom.dcmread(files[0])
    study_uid, patient = first.StudyInstanceUID, (str(first.PatientName), str(first.PatientID))
    with (StoreSCP(tmp_path / "scp") as scp,
          Orthanc(tmp_path / "orthanc", extra_config={"DicomCheckCalledAet": True}) as orthanc):
        cfg = node_config(tmp_path, {
            "scp": {"type": "dimse", "ae_title": "PACS", "host": "127.0.0.1", "port": scp.port},
            "orthanc": {"type": "dimse", "ae_title": orthanc.aet, "host": "127.0.0.1", "port": orthanc.dicom_port},
        })
        node = NodeProcess(cfg).start()
        try:
            r = storescu(node.port, files)
            assert r.returncode == 0, r.stderr
            assert wait_for(lambda: len(scp.received(modality="SR")) >= 1 and len(orthanc.instances()) >= 1, 30)
            time.sleep(3)  # anything duplicated would arrive by now
            srs = scp.received(modality="SR")
            assert len(srs) == 1 and srs[0].StudyInstanceUID == study_uid
            in_orthanc = orthanc.instances()
            assert [i["MainDicomTags"]["SOPInstanceUID"] for i in in_orthanc] == [srs[0].SOPInstanceUID]
            assert orthanc.stored_events() == 1
            st = node.status()
            assert [(j["state"], j["attempts"]) for j in st["jobs"]] == [("done", 1)]
            assert {d["name"]: (d["sent"], d["queue_depth"]) for d in st["destinations"]} == {
                "scp": (1, 0), "orthanc": (1, 0)}
            assert st["studies"][0]["state"] == "processed"
        finally:
            rc = node.terminate()
        assert rc == 0
        log_text = node.log_path.read_text()
        assert all(p and p not in log_text for p in patient)  # no patient name or id in the log
        records = [json.loads(line) for line in log_text.splitlines() if line.strip()]  # JSON lines only
        assert any(r["msg"] == "job done" and r.get("study") == study_uid for r in records)


def test_destination_down_at_completion_gets_result_when_up_20s_later(tmp_path):
    files = write_ct_study(tmp_path / "study", 2)
    port = free_port()
    cfg = node_config(tmp_path, {"pacs": {"type": "dimse", "ae_title": "PACS", "host": "127.0.0.1", "port": port}},
                      dispatch={"backoff_initial_s": 2.0, "backoff_max_s": 5.0, "timeout_s": 5})
    node = NodeProcess(cfg).start()
    scp = StoreSCP(tmp_path / "scp", port=port)
    try:
        assert storescu(node.port, files).returncode == 0
        assert wait_for(lambda: any(j["state"] == "done" for j in node.status()["jobs"]), 30)
        down_since = time.time()
        assert wait_for(lambda: (node.status()["destinations"][0]["last_error"] or "") != "", 15)
        time.sleep(max(0.0, 20 - (time.time() - down_since)))
        scp.start()
        up_at = time.time()
        assert wait_for(lambda: len(scp.received(modality="SR")) == 1, 30)  # no intervention
        delay = time.time() - up_at
        assert delay <= 6.0  # bounded by dispatch.backoff_max_s (5 s) + one send
        time.sleep(2)
        assert len(scp.received(modality="SR")) == 1
        d = node.status()["destinations"][0]
        assert d["sent"] == 1 and d["queue_depth"] == 0
    finally:
        assert node.terminate() == 0
        scp.stop()


def test_bad_input_does_not_stop_the_node(tmp_path):
    with StoreSCP(tmp_path / "scp") as scp:
        cfg = node_config(tmp_path, {"pacs": {"type": "dimse", "ae_title": "PACS", "host": "127.0.0.1",
                                              "port": scp.port}})
        node = NodeProcess(cfg).start()
        try:
            # garbage bytes instead of an A-ASSOCIATE-RQ, and a connection dropped mid-PDU
            for payload in (b"\x00" * 10 + b"garbage" * 100, b"\x01\x00\x00\x00\xff\xff"):
                with socket.create_connection(("127.0.0.1", node.port), timeout=5) as s:
                    s.sendall(payload)
                    time.sleep(0.2)
            # a file that is not DICOM and a DICOM file without Study Instance UID
            bad_dir = tmp_path / "bad"
            bad_dir.mkdir()
            broken = write_ct_study(tmp_path / "broken", 1)[0]
            ds = pydicom.dcmread(broken)
            del ds.StudyInstanceUID
            ds.save_as(bad_dir / "nostudy.dcm", enforce_file_format=True)
            storescu(node.port, [bad_dir / "nostudy.dcm"])
            assert echo(node.port, "CARDIONODE")
            good = write_ct_study(tmp_path / "good", 2)
            assert storescu(node.port, good).returncode == 0
            assert wait_for(lambda: len(scp.received(modality="SR")) == 1, 30)
            assert scp.received(modality="SR")[0].StudyInstanceUID == pydicom.dcmread(good[0]).StudyInstanceUID
        finally:
            assert node.terminate() == 0
