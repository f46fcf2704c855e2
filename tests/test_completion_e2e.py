"""Study-aware completion end to end: dcmtk storescu -> the node (python -m node serve) -> test SR
pipeline -> dcmtk storescp, with a 60 s quiet period that only a study its headers call complete
can beat; and kill -9 before the completion check."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from pydicom.uid import generate_uid

from tests.fixtures.studies import write_ct_study, write_mr_series
from tests.support import synth
from tests.support.node_proc import NodeProcess, node_config
from tests.support.peers import StoreSCP, storescu, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUIET = 60.0
MYOPS = [{"name": "bssfp", "series_description": "(?i)ssfp"}, {"name": "lge", "series_description": "(?i)lge"},
         {"name": "t2", "series_description": "(?i)^t2"}]


def _config(tmp_path: Path, scp: StoreSCP, settle: float = 0.5) -> Path:
    path = node_config(tmp_path, {"pacs": {"type": "dimse", "ae_title": "PACS", "host": "127.0.0.1",
                                           "port": scp.port}}, quiet=QUIET, settle_seconds=settle)
    cfg = yaml.safe_load(path.read_text())
    cfg["routes"] = [
        {"name": "ct", "pipeline": "test-sr", "match": {"modality": "CT"}, "destinations": ["pacs"],
         "requires": [{"name": "ct", "modality": "CT"}]},
        {"name": "myops", "pipeline": "test-sr", "match": {"modality": "MR"}, "destinations": ["pacs"],
         "requires": MYOPS, "incomplete": "give_up", "max_wait_seconds": 10},
        {"name": "xa", "pipeline": "test-sr", "match": {"modality": "XA"}, "destinations": ["pacs"],
         "requires": [{"name": "runs", "modality": "XA", "min_series": 2}]},
    ]
    path.write_text(yaml.safe_dump(cfg))
    return path


def _srs_for(scp: StoreSCP, study: str) -> int:
    return sum(1 for ds in scp.received() if ds.Modality == "SR" and ds.StudyInstanceUID == study)


def _myops(out: Path, study: str, with_t2: bool = True) -> tuple[list[Path], list[Path]]:
    files = write_mr_series(out / "cine", study, "sax bSSFP cine", positions=2, phases=6, series_number=1)
    files += write_mr_series(out / "lge", study, "LGE PSIR", positions=4, series_number=2,
                             tags={"ImagesInAcquisition": 4})
    t2 = write_mr_series(out / "t2", study, "T2 STIR", positions=3, series_number=3,
                         tags={"ImagesInAcquisition": 3}) if with_t2 else []
    return files, t2


def test_studies_complete_by_their_headers_within_seconds_and_an_incomplete_one_is_given_up(tmp_path):
    ct_study, xa_study, mr_study, lacking = (generate_uid() for _ in range(4))
    ct = write_ct_study(tmp_path / "ct", 3, study_uid=ct_study, tags={"ImagesInAcquisition": 3})
    xa = [synth.xa_cine(tmp_path / "xa" / f"run{i}.dcm", frames=8, size=32, study_uid=xa_study) for i in range(2)]
    mr, t2 = _myops(tmp_path / "mr", mr_study)
    mr_lacking, _ = _myops(tmp_path / "lacking", lacking, with_t2=False)
    with StoreSCP(tmp_path / "scp") as scp:
        node = NodeProcess(_config(tmp_path, scp)).start()
        try:
            # the MR study without T2 starts its max wait (10 s) now; its clock starts with an instance
            # that arrives after this moment (not after storescu returns, which is later)
            lacking_sent = time.time()
            assert storescu(node.port, mr_lacking).returncode == 0
            for files, study in ((ct, ct_study), (xa, xa_study)):
                assert storescu(node.port, files).returncode == 0
                sent = time.time()
                assert wait_for(lambda: _srs_for(scp, study) == 1, 20, 0.05), f"no SR for {study}"
                assert time.time() - sent < 20 < QUIET
            # an MR study without its T2 waits ...
            assert storescu(node.port, mr).returncode == 0
            time.sleep(2)
            assert _srs_for(scp, mr_study) == 0
            # ... and completes as soon as the T2 series is there
            assert storescu(node.port, t2).returncode == 0
            sent = time.time()
            assert wait_for(lambda: _srs_for(scp, mr_study) == 1, 20, 0.05)
            assert time.time() - sent < 20
            # the one that never gets its T2 is given up at its max wait and recorded, nothing run
            def given_up():
                return next((s for s in node.status()["studies"] if s["study_uid"] == lacking
                             and s["state"] == "incomplete"), None)
            assert wait_for(given_up, 30, 0.5)
            assert time.time() - lacking_sent >= 10
            assert given_up()["incomplete"] == {"myops": ["t2"]}
            time.sleep(1)
            assert _srs_for(scp, lacking) == 0
            assert [_srs_for(scp, s) for s in (ct_study, xa_study, mr_study)] == [1, 1, 1]
            assert {j["study_uid"] for j in node.status()["jobs"]} == {ct_study, xa_study, mr_study}
        finally:
            node.stop_quietly()


def test_kill9_before_the_completion_check_completes_the_study_once_after_the_restart(tmp_path):
    study = generate_uid()
    files = write_ct_study(tmp_path / "ct", 5, study_uid=study, tags={"ImagesInAcquisition": 5})
    with StoreSCP(tmp_path / "scp") as scp:
        # a long settle time: the kill lands after every instance is acknowledged, before the check
        node = NodeProcess(_config(tmp_path, scp, settle=5.0)).start()
        try:
            assert storescu(node.port, files).returncode == 0
            node.kill9()
            assert _srs_for(scp, study) == 0
            node.start()
            restarted = time.time()
            assert wait_for(lambda: _srs_for(scp, study) == 1, 30, 0.1)
            assert time.time() - restarted < 30 < QUIET  # the restart does not wait out a fresh quiet period
            time.sleep(6)  # > settle: a second decision would have run by now
            assert _srs_for(scp, study) == 1
            jobs = node.status()["jobs"]
            assert [(j["study_uid"], j["state"]) for j in jobs] == [(study, "done")]
        finally:
            node.stop_quietly()


def _decisions(node: NodeProcess, study: str) -> list[tuple[int, str]]:
    """(generation, reason) of each 'study complete; jobs queued' line the node logged for ``study``."""
    out = []
    for line in node.log_path.read_text().splitlines():
        if '"study complete; jobs queued"' in line:
            rec = json.loads(line)
            if rec.get("study") == study:
                out.append((rec["generation"], rec["reason"]))
    return out


def test_an_enhanced_ct_at_once_an_unknown_series_after_the_quiet_period_a_late_arrival_and_the_wait_policy(
        tmp_path):
    import numpy as np

    from synth.dicom import new_study, write_enhanced_ct

    quiet = 4.0
    enhanced_study = new_study(seed=1801)
    enhanced = [write_enhanced_ct(np.zeros((6, 16, 16), dtype=np.int16), (3.0, 1.0, 1.0),
                                  tmp_path / "enhanced" / "ct.dcm", enhanced_study)]
    plain_study, mr_study = generate_uid(), generate_uid()
    plain = write_ct_study(tmp_path / "plain", 4, study_uid=plain_study)  # no ImagesInAcquisition: unknown
    mr, _t2 = _myops(tmp_path / "mr", mr_study, with_t2=False)
    with StoreSCP(tmp_path / "scp") as scp:
        path = node_config(tmp_path, {"pacs": {"type": "dimse", "ae_title": "PACS", "host": "127.0.0.1",
                                               "port": scp.port}}, quiet=quiet, settle_seconds=0.5)
        cfg = yaml.safe_load(path.read_text())
        cfg["routes"] = [
            {"name": "ct", "pipeline": "test-sr", "match": {"modality": "CT"}, "destinations": ["pacs"],
             "requires": [{"name": "ct", "modality": "CT"}]},
            {"name": "myops", "pipeline": "test-sr", "match": {"modality": "MR"}, "destinations": ["pacs"],
             "requires": MYOPS, "incomplete": "wait", "max_wait_seconds": 10},
        ]
        path.write_text(yaml.safe_dump(cfg))
        node = NodeProcess(path).start()
        try:
            mr_sent = time.time()
            assert storescu(node.port, mr).returncode == 0
            assert storescu(node.port, enhanced).returncode == 0
            assert storescu(node.port, plain[:3]).returncode == 0
            uid = enhanced_study.study_instance_uid
            assert wait_for(lambda: _srs_for(scp, uid) == 1 and _srs_for(scp, plain_study) == 1, 40, 0.1)
            assert _decisions(node, uid) == [(1, "series complete")]  # one multi-frame object: complete
            assert _decisions(node, plain_study) == [(1, "quiet period")]  # unknown: the quiet period decides
            # a late arrival is processed again after a quiet period, as before
            assert storescu(node.port, plain[3:]).returncode == 0
            assert wait_for(lambda: _srs_for(scp, plain_study) == 2, 40, 0.1)
            assert _decisions(node, plain_study) == [(1, "quiet period"), (2, "quiet period")]
            # the MR study without T2 waited past its quiet period until max_wait, then ran on what was there
            assert wait_for(lambda: _srs_for(scp, mr_study) == 1, 40, 0.1)
            assert _decisions(node, mr_study) == [(1, "series missing")]
            study = next(s for s in node.status()["studies"] if s["study_uid"] == mr_study)
            assert study["processed_at"] - study["first_received_at"] >= 9.9
            assert study["processed_at"] - mr_sent >= 9.9 and study["incomplete"] is None
        finally:
            node.stop_quietly()
