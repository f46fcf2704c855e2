"""Study-aware completion: the real spool feeds the real tracker (SQLite, APScheduler), no network.

Quiet periods are long (30 s) wherever the point is that a complete study does not wait for them.
"""
from __future__ import annotations

import json
import time

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from pydicom.uid import generate_uid

from node.completion import CompletionTracker
from node.config import parse_config
from node.routing import Router
from node.state import Connections, InstanceIndex
from node.spool import Spool
from tests.fixtures.studies import write_ct_study, write_mr_series

MYOPS = [{"name": "bssfp", "series_description": "(?i)ssfp"}, {"name": "lge", "series_description": "(?i)lge"},
         {"name": "t2", "series_description": "(?i)^t2"}]


class Node:
    """Spool + completion tracker on one storage folder, as the service wires them."""

    def __init__(self, tmp_path, config: dict, start: bool = True) -> None:
        self.config = parse_config(config)
        self.conns = Connections(tmp_path / "var", synchronous="NORMAL")
        self.scheduler = BackgroundScheduler(timezone="UTC")
        index = lambda: InstanceIndex(self.conns.get())  # noqa: E731
        self.tracker = CompletionTracker(
            self.conns.get, Router(self.config), lambda uid: index().study_view(uid), self.scheduler,
            late_arrivals=self.config.node.late_arrivals, load_headers=lambda uid: index().study_headers(uid),
            settle_seconds=self.config.node.settle_seconds)
        self.spool = Spool(tmp_path / "var", 0, on_stored=self.tracker.on_stored)
        if start:
            self.scheduler.start()

    def send(self, files) -> float:
        for f in files:
            self.spool.store_file(f, "MODALITY", "dimse")
        return time.time()

    def row(self, uid: str):
        return self.conns.get().execute("SELECT * FROM pending_studies WHERE study_uid=?", (uid,)).fetchone()

    def jobs(self, uid: str) -> list[tuple[int, str]]:
        return [(r[0], r[1]) for r in self.conns.get().execute(
            "SELECT generation, route_name FROM jobs WHERE study_uid=? ORDER BY id", (uid,))]

    def wait_state(self, uid: str, state: str, timeout: float) -> float:
        t0 = time.time()
        while time.time() - t0 < timeout:
            row = self.row(uid)
            if row is not None and row["state"] == state:
                return time.time()
            time.sleep(0.02)
        raise AssertionError(f"study not {state} within {timeout} s: {dict(self.row(uid) or {})}")

    def close(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        self.spool.close()
        self.conns.close_all()


@pytest.fixture()
def nodes():
    made: list[Node] = []
    yield made
    for n in made:
        n.close()


def _cfg(routes, quiet=30.0, settle=0.2, **node):
    return {"node": {"quiet_seconds": quiet, "settle_seconds": settle, **node}, "routes": routes}


def _myops_study(tmp_path, study, t2_skip=0, with_t2=True):
    files = write_mr_series(tmp_path / "cine", study, "sax bSSFP cine", positions=2, phases=5, series_number=1)
    files += write_mr_series(tmp_path / "lge", study, "LGE PSIR", positions=3, series_number=2,
                             tags={"ImagesInAcquisition": 3})
    if with_t2:
        files += write_mr_series(tmp_path / "t2", study, "T2 STIR", positions=3, series_number=3,
                                 tags={"ImagesInAcquisition": 3}, skip=t2_skip)
    return files


def test_a_study_with_every_required_series_complete_is_processed_after_the_settle_time_not_the_quiet_period(
        tmp_path, nodes):
    node = Node(tmp_path, _cfg([{"name": "myops", "pipeline": "test-sr", "match": {"modality": "MR"},
                                 "requires": MYOPS}]))
    nodes.append(node)
    study = generate_uid()
    last = node.send(_myops_study(tmp_path, study))
    done = node.wait_state(study, "processed", 10)
    assert 0.15 <= done - last < 5  # settle 0.2 s, quiet 30 s
    assert node.jobs(study) == [(1, "myops")]


def test_a_known_incomplete_series_holds_the_study_until_it_is_complete(tmp_path, nodes):
    node = Node(tmp_path, _cfg([{"name": "myops", "pipeline": "test-sr", "match": {"modality": "MR"},
                                 "requires": MYOPS}]))
    nodes.append(node)
    study = generate_uid()
    files = _myops_study(tmp_path, study)
    node.send(files[:-1])  # the T2 series lacks its last image: ImagesInAcquisition says so
    time.sleep(1.0)
    assert node.row(study)["state"] == "waiting" and node.jobs(study) == []
    last = node.send(files[-1:])
    assert node.wait_state(study, "processed", 10) - last < 5


def test_a_route_without_requirements_keeps_the_quiet_period(tmp_path, nodes):
    node = Node(tmp_path, _cfg([{"name": "myops", "pipeline": "test-sr", "match": {"modality": "MR"},
                                 "requires": MYOPS},
                                {"name": "any-mr", "pipeline": "test-sr", "match": {"modality": "MR"}}], quiet=1.5))
    nodes.append(node)
    study = generate_uid()
    last = node.send(_myops_study(tmp_path, study))
    assert node.wait_state(study, "processed", 10) - last >= 1.4
    assert node.jobs(study) == [(1, "myops"), (1, "any-mr")]


@pytest.mark.parametrize("policy", ["proceed", "wait", "give_up"])
def test_incomplete_study_policies(tmp_path, nodes, policy):
    route = {"name": "myops", "pipeline": "test-sr", "match": {"modality": "MR"}, "requires": MYOPS,
             "incomplete": policy, "max_wait_seconds": 2.5}
    node = Node(tmp_path, _cfg([route], quiet=0.8))
    nodes.append(node)
    study = generate_uid()
    files = _myops_study(tmp_path, study, with_t2=False)
    start = time.time()
    last = node.send(files)
    done = node.wait_state(study, "processed", 10)
    row = node.row(study)
    if policy == "proceed":  # the quiet period ends the wait: run on what is there
        assert 0.7 <= done - last < 1.7  # well before max_wait
        assert node.jobs(study) == [(1, "myops")] and row["incomplete"] is None
    elif policy == "wait":  # waited past the quiet period up to max_wait (from the first instance), then ran
        assert done - start >= 2.45 and node.jobs(study) == [(1, "myops")] and row["incomplete"] is None
    else:  # waited as long, then recorded what was missing and ran nothing
        assert done - start >= 2.45 and node.jobs(study) == []
        assert json.loads(row["incomplete"]) == {"myops": ["t2"]} and json.loads(row["routes"]) == []


def test_waiting_for_a_missing_series_ends_at_once_when_it_arrives(tmp_path, nodes):
    route = {"name": "myops", "pipeline": "test-sr", "match": {"modality": "MR"}, "requires": MYOPS,
             "incomplete": "give_up", "max_wait_seconds": 30}
    node = Node(tmp_path, _cfg([route], quiet=0.5))
    nodes.append(node)
    study = generate_uid()
    files = _myops_study(tmp_path, study)
    t2 = [f for f in files if f.parent.name == "t2"]
    node.send([f for f in files if f not in t2])
    time.sleep(1.5)  # quiet period over: waiting for T2 (until max_wait)
    row = node.row(study)
    assert row["state"] == "waiting" and row["due_at"] >= row["first_received_at"] + 29
    last = node.send(t2)
    assert node.wait_state(study, "processed", 10) - last < 5 and node.jobs(study) == [(1, "myops")]


def test_max_wait_caps_a_study_that_never_stops_receiving(tmp_path, nodes):
    route = {"name": "ct", "pipeline": "test-sr", "match": {"modality": "CT"},
             "requires": [{"name": "ct", "modality": "CT"}], "max_wait_seconds": 1.5}
    node = Node(tmp_path, _cfg([route], quiet=1.0))
    nodes.append(node)
    study = generate_uid()
    files = write_ct_study(tmp_path / "ct", 12, study_uid=study)  # no ImagesInAcquisition: unknown
    first = node.send(files[:1])
    for f in files[1:]:
        time.sleep(0.25)
        if node.row(study)["state"] != "waiting":
            break
        node.send([f])
    done = node.wait_state(study, "processed", 5)
    assert 1.4 <= done - first < 2.6  # the quiet period alone would have waited for the last slice + 1 s
    assert node.row(study)["received"] < len(files)


def test_a_late_arrival_is_reprocessed_after_the_quiet_period_as_before(tmp_path, nodes):
    node = Node(tmp_path, _cfg([{"name": "ct", "pipeline": "test-sr", "match": {"modality": "CT"},
                                 "requires": [{"name": "ct", "modality": "CT"}]}], quiet=1.5))
    nodes.append(node)
    study = generate_uid()
    files = write_ct_study(tmp_path / "ct", 4, study_uid=study, tags={"ImagesInAcquisition": 3})
    last = node.send(files[:3])
    assert node.wait_state(study, "processed", 10) - last < 1.2
    late = node.send(files[3:])
    assert node.row(study)["state"] == "waiting"
    time.sleep(1.0)
    assert node.row(study)["state"] == "waiting"  # complete by its headers, but a late arrival waits
    assert node.wait_state(study, "processed", 10) - late >= 1.4
    assert node.jobs(study) == [(1, "ct"), (2, "ct")]


def test_after_a_restart_a_complete_waiting_study_completes_at_once(tmp_path, nodes):
    cfg = _cfg([{"name": "ct", "pipeline": "test-sr", "match": {"modality": "CT"},
                 "requires": [{"name": "ct", "modality": "CT"}]}], quiet=30)
    node = Node(tmp_path, cfg, start=False)  # the scheduler never runs: "killed" before the check
    study = generate_uid()
    node.send(write_ct_study(tmp_path / "ct", 3, study_uid=study, tags={"ImagesInAcquisition": 3}))
    node.close()
    assert Node.__name__  # a new process: new tracker, same database
    again = Node(tmp_path, cfg, start=False)
    nodes.append(again)
    assert again.row(study)["state"] == "waiting"
    restarted = time.time()
    assert again.tracker.rearm() == 1
    again.scheduler.start()
    assert again.wait_state(study, "processed", 10) - restarted < 5
    assert again.jobs(study) == [(1, "ct")]


def test_a_study_given_up_completes_at_once_when_the_missing_series_arrives_later(tmp_path, nodes):
    route = {"name": "myops", "pipeline": "test-sr", "match": {"modality": "MR"}, "requires": MYOPS,
             "incomplete": "give_up", "max_wait_seconds": 1.0}
    node = Node(tmp_path, _cfg([route], quiet=0.5))
    nodes.append(node)
    study = generate_uid()
    files = _myops_study(tmp_path, study)
    t2 = [f for f in files if f.parent.name == "t2"]
    node.send([f for f in files if f not in t2])
    node.wait_state(study, "processed", 10)
    assert node.jobs(study) == [] and json.loads(node.row(study)["incomplete"]) == {"myops": ["t2"]}
    last = node.send(t2)  # a late arrival for a study that never ran: judged by its headers again
    done = node.wait_state(study, "processed", 10)
    assert done - last < 5
    row = node.row(study)
    assert node.jobs(study) == [(2, "myops")] and row["generation"] == 2 and row["incomplete"] is None
