"""Pull a study from a real Orthanc into a real Spool by WADO-RS, C-GET and C-MOVE (no node running)."""
from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from node.config import parse_config
from node.state import Connections
from node.retrieve import RetrieveError, retrieve_study
from tests.fixtures.studies import write_ct_study
from tests.support.peers import Orthanc, free_port


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("pacs")
    port = free_port()
    with Orthanc(work / "orthanc", modalities={"cardionode": ["CARDIONODE", "127.0.0.1", port]}) as orthanc:
        paths = write_ct_study(work / "study", n=2)
        for p in paths:
            orthanc.upload(p)
        yield orthanc, port, str(pydicom.dcmread(paths[0]).StudyInstanceUID), {
            str(pydicom.dcmread(p).SOPInstanceUID) for p in paths}


@pytest.mark.parametrize("source,chunked", [("web", False), ("get", False), ("move", False), ("get", True),
                                            ("move", True)])
def test_retrieve_into_spool(pacs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str,
                             chunked: bool) -> None:
    """``chunked``: pynetdicom streams received datasets to temp files, as it does process-wide once a
    DimseServer has started in the same process (the node, or an earlier test)."""
    from pynetdicom import _config

    from node.state import InstanceIndex
    from node.spool import Spool

    monkeypatch.setattr(_config, "STORE_RECV_CHUNKED_DATASET", chunked)
    orthanc, port, study, uids = pacs
    config = parse_config({
        "node": {"ae_title": "CARDIONODE", "host": "127.0.0.1", "port": port, "storage_dir": str(tmp_path / "var"),
                 "min_free_mb": 0},
        "sources": {
            "web": {"type": "dicomweb", "url": orthanc.dicomweb_url},
            "get": {"type": "dimse", "ae_title": orthanc.aet, "host": "127.0.0.1", "port": orthanc.dicom_port},
            "move": {"type": "dimse", "ae_title": orthanc.aet, "host": "127.0.0.1", "port": orthanc.dicom_port,
                     "retrieve": "move"},
        },
    })
    conns = Connections(config.node.storage_dir)
    spool = Spool(config.node.storage_path, 0)
    result = retrieve_study(config, source, study, spool, timeout_s=10)
    assert (result.stored, result.failed) == (2, 0)
    view = InstanceIndex(conns.get()).study_view(study)
    assert {ref.sop_instance_uid for ref in view.instances} == uids
    with pytest.raises(RetrieveError):
        retrieve_study(config, source, "1.2.3.999999", spool, timeout_s=10)
    with pytest.raises(RetrieveError, match="unknown source"):
        retrieve_study(config, "nope", study, spool)
    conns.close_all()
