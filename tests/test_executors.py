"""Executor pieces that need no cluster: the local executor, the study/result payloads a remote worker gets
and returns, the worker body run in-process, releasing a job without an attempt, and that the node does
not import Ray (the local executor never; the ray executor only in its driver child process)."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap

import pydicom
import pytest

from node.config import JobsSection, ModelsSection

from node.executors import JobRequest, LocalExecutor
from node.executors.payload import PathMapError, ResultPayload, StudyBundle
from node.executors.worker import PipelineWorker
from node.jobs import JobQueue
from node.state import Connections
from pipelines.base import StudyView
from pipelines.registry import PipelineRegistry
from tests.fixtures import sr_pipeline
from tests.fixtures.studies import write_ct_study
from tests.support.node_proc import ROOT

PLUGINS = ("tests.fixtures.sr_pipeline",)


@pytest.fixture()
def study(tmp_path) -> StudyView:
    return StudyView.from_files(write_ct_study(tmp_path / "spool" / "study", 3))


def test_local_executor_runs_the_pipeline_in_this_process(tmp_path, study):
    registry = PipelineRegistry(builtins={})
    sr_pipeline.register(registry)
    ex = LocalExecutor(registry, None, slots=2)
    assert (ex.kind, ex.slots, ex.available(), ex.status().state) == ("local", 2, True, "ready")
    out = ex.run(JobRequest(1, 1, "test-sr", study, {"record_process": True}, tmp_path / "work"))
    assert out.result.summary["pid"] == os.getpid() == out.worker["pid"]
    assert out.timings["run_s"] > 0


def test_study_bundle_with_bytes_rebuilds_the_same_study_elsewhere(tmp_path, study):
    bundle = StudyBundle.with_bytes(study)
    assert bundle.nbytes == sum(r.path.stat().st_size for r in study.instances)
    view = bundle.materialise(tmp_path / "worker")
    assert [s.series_instance_uid for s in view.series] == [s.series_instance_uid for s in study.series]
    for mine, theirs in zip(study.instances, view.instances):
        assert theirs.path.parent == tmp_path / "worker"
        assert theirs.path.read_bytes() == mine.path.read_bytes()
        assert (theirs.sop_instance_uid, theirs.instance_number) == (mine.sop_instance_uid, mine.instance_number)


def test_study_bundle_by_path_maps_the_storage_dir_and_refuses_files_outside_it(tmp_path, study):
    bundle = StudyBundle.with_paths(study, tmp_path / "spool", tmp_path / "mnt" / "cardionode")
    assert bundle.blobs is None and bundle.nbytes == 0
    view = bundle.materialise(tmp_path / "unused")
    assert [r.path for r in view.instances] == [
        tmp_path / "mnt" / "cardionode" / r.path.relative_to(tmp_path / "spool") for r in study.instances]
    assert not (tmp_path / "unused").exists()
    with pytest.raises(PathMapError, match="is not under the node's storage dir"):
        StudyBundle.with_paths(study, tmp_path / "elsewhere", tmp_path / "mnt")


def test_pipeline_worker_returns_result_bytes_and_error_kinds(tmp_path, study):
    worker = PipelineWorker("test-sr", PLUGINS, ModelsSection(providers=("cpu",)))
    info = worker.info()
    assert info["pipeline_version"] == sr_pipeline.VERSION and "CPUExecutionProvider" in info["providers"]
    bundle = StudyBundle.with_bytes(study)
    done = worker.run("1.1", bundle, {"copies": 2})
    assert done.kind == "done" and done.payload is not None and len(done.payload.datasets) == 2
    result = done.payload.to_result()
    assert [ds.Modality for ds in result.datasets] == ["SR", "SR"]
    assert result.datasets[0].StudyInstanceUID == study.study_instance_uid
    assert result.pipeline_version == sr_pipeline.VERSION and result.summary == {"instances": 3}
    assert worker.run("2.1", bundle, {"input_error": "no CT"}).kind == "input"
    transient = worker.run("3.1", bundle, {"transient_failures": 1, "counter_file": str(tmp_path / "c")})
    assert (transient.kind, transient.message) == ("transient", "simulated transient failure 1/1")
    crash = worker.run("4.1", bundle, {"copies": "many"})
    assert crash.kind == "error" and "ValueError" in crash.message and "Traceback" in crash.message


def test_result_payload_round_trip_keeps_the_datasets(study):
    worker = PipelineWorker("test-sr", PLUGINS, ModelsSection(providers=("cpu",)))
    payload = worker.run("1.1", StudyBundle.with_bytes(study), {}).payload
    assert payload is not None
    again = ResultPayload.from_result(payload.to_result())
    assert [pydicom.dcmread(io.BytesIO(b)).SOPInstanceUID for b in again.datasets] == \
        [pydicom.dcmread(io.BytesIO(b)).SOPInstanceUID for b in payload.datasets]


def test_release_returns_a_claimed_job_without_counting_the_attempt(tmp_path):
    conns = Connections(tmp_path)
    try:
        queue = JobQueue(conns, JobsSection(), tmp_path)
        with conns.get() as conn:
            job_id = JobQueue.enqueue(conn, "1.2.3", 1, "r", "test-sr", ["a"])
        job = queue.claim()
        assert job is not None and job.attempts == 1
        queue.release(job, "waiting for the executor: Ray unreachable")
        row = conns.get().execute("SELECT state, attempts, error FROM jobs WHERE id=?", (job_id,)).fetchone()
        assert tuple(row) == ("queued", 0, "waiting for the executor: Ray unreachable")
        assert queue.claim().attempts == 1
    finally:
        conns.close_all()


def test_the_node_never_imports_ray(tmp_path):
    """Local executor: not even the executors package pulls Ray in; ray executor: only its child process does."""
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from node.config import parse_config
        from node.executors import make_executor
        from node.service import NodeService
        from pipelines.registry import default_registry
        base = {{"node": {{"storage_dir": {str(tmp_path)!r}, "plugins": ["tests.fixtures.sr_pipeline"]}},
                 "routes": [{{"pipeline": "test-sr"}}]}}
        reg = default_registry(["tests.fixtures.sr_pipeline"])
        NodeService(parse_config(base))
        local = make_executor(parse_config(base), reg, None)
        remote = make_executor(parse_config({{**base, "executor": {{"type": "ray", "address": "auto"}}}}), reg, None)
        assert (local.kind, remote.kind, remote.available()) == ("local", "ray", False)
        print("ray" in sys.modules)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"
