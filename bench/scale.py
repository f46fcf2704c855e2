"""Scale benchmark: studies per minute with the local and the Ray executor, 1 and 2 workers, and Ray's overhead.

    python bench/scale.py [--studies 16] [--rounds 1] [--pipeline syntax]

Writes ``--studies`` SYNTAX angiography phantom studies (training.syntax.phantom, seeds 97000+, multi-frame
XA DICOM; phantom data) and pushes them through the node's own job path -- JobQueue + JobRunner + an executor
-- in four set-ups measured in the same run:

* ``local x1`` / ``local x2``: the pipeline in 1 / 2 job threads of this process (``node.workers``);
* ``ray x1`` / ``ray x2``: 1 / 2 Ray actors (``num_cpus: 1`` each) on an embedded Ray started by the
  executor (``executor.address: null``, ``embedded.num_cpus: 2``), ``max_in_flight`` = actors.

ONNX Runtime gets one intra-op thread per worker everywhere (Ray's actors get their ``num_cpus``), so a
"worker" is one core's worth of work.  Each set-up first runs one job per worker (models loaded, actors
started: not timed), then times all studies from enqueue to the last commit (result files written,
fsynced and committed by the node, exactly as in service).  Per job it records the pipeline's own
``run()`` time, and for Ray the study's transfer into the object store and the whole round trip seen by
the node; ``overhead = round trip - run()`` is what Ray adds per job (transfer, scheduling, result bytes
back, actor call).  Prints studies/minute and CPU seconds per study (this process and every process
below it -- the Ray driver, an embedded Ray's daemons and actors -- over the timed batch), each with its
ratio to ``local x1`` (the reference measured in the same run), and the per-job figures.

On a shared machine studies/minute depends on the CPU share each set-up gets: with Linux autogroup
scheduling Ray's daemons and actors run in sessions of their own and get shares of their own, so under
foreign load Ray can look faster than the local executor; CPU seconds per study does not have that
bias.  The load average is printed before and after.
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.config import JobsSection, parse_config  # noqa: E402

from node.executors import make_executor  # noqa: E402
from node.jobs import JobQueue, JobRunner  # noqa: E402
from node.state import Connections  # noqa: E402
from pipelines.base import StudyView  # noqa: E402
from pipelines.registry import default_registry  # noqa: E402
from pipelines.runtime import ModelStore  # noqa: E402
from synth.dicom import new_study, write_xa_cine  # noqa: E402
from training.syntax.phantom import make_study  # noqa: E402

SEED0 = 97_000


class _JobLog(logging.Handler):
    """Collects the extras of the runner's "job done" records (timings per job)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[dict[str, Any]] = []
        self.records_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "job done":
            with self.records_lock:
                self.records.append({k: v for k, v in record.__dict__.items() if k.startswith("t_")})


def tree_cpu_s(root: int) -> float:
    """User + system CPU seconds of ``root`` and every live process below it (the node, its Ray driver,
    and an embedded Ray's daemons and actors), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stats[int(entry)] = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
    children: dict[int, list[int]] = {}
    for pid, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += (int(stats[pid][11]) + int(stats[pid][12])) / tick  # utime, stime
        todo.extend(children.get(pid, []))
    return total


def write_studies(root: Path, n: int) -> list[list[Path]]:
    """``n`` phantom XA studies (every third cine JPEG-compressed, as in bench/syntax.py)."""
    studies = []
    for i in range(n):
        st = make_study(SEED0 + i, 96)
        ident = new_study(seed=SEED0 + i)
        studies.append([write_xa_cine(c.frames, root / f"s{i}" / f"{k:02d}.dcm", ident, series_number=k + 1,
                                      seed=SEED0 + i, jpeg=k % 3 == 1) for k, c in enumerate(st.cines)])
    return studies


def run_setup(label: str, config: dict[str, Any], views: dict[str, StudyView], pipeline: str,
              storage: Path, joblog: _JobLog) -> dict[str, Any]:
    """Warm up one job per worker, then time all studies through JobRunner; returns the figures."""
    cfg = parse_config({**config, "node": {**config.get("node", {}), "storage_dir": str(storage)},
                        "routes": [{"pipeline": pipeline}]})
    storage.mkdir(parents=True)
    conns = Connections(storage)
    registry = default_registry()
    models = ModelStore.from_config(cfg.models) if cfg.executor.type == "local" else None
    executor = make_executor(cfg, registry, models)
    queue = JobQueue(conns, JobsSection(max_attempts=1), storage)
    runner = JobRunner(queue, executor, views.__getitem__, cfg.pipeline_options, storage / "work")
    t0 = time.perf_counter()
    executor.start()
    while not executor.available():
        if time.perf_counter() - t0 > 300:
            raise RuntimeError(f"{label}: executor not available: {executor.status().detail}")
        time.sleep(0.1)
    startup = time.perf_counter() - t0
    runner.start()
    uids = list(views)

    def run_batch(batch: list[str], generation: int) -> float:
        conn = conns.get()
        start = time.perf_counter()
        with conn:
            for uid in batch:
                JobQueue.enqueue(conn, uid, generation, "bench", pipeline, [])
        runner.wake()
        while True:
            row = conn.execute("SELECT COUNT(*) AS n, SUM(state='failed') AS f FROM jobs WHERE generation=? AND "
                               "state IN ('done', 'failed')", (generation,)).fetchone()
            if row["n"] == len(batch):
                if row["f"]:
                    err = conn.execute("SELECT error FROM jobs WHERE state='failed' LIMIT 1").fetchone()["error"]
                    raise RuntimeError(f"{label}: {row['f']} job(s) failed: {err}")
                return time.perf_counter() - start
            time.sleep(0.02)

    try:
        run_batch(uids[:executor.slots], 1)  # warm-up: models loaded, actors started
        with joblog.records_lock:
            joblog.records.clear()
        cpu0 = tree_cpu_s(os.getpid())
        wall = run_batch(uids, 2)
        cpu = tree_cpu_s(os.getpid()) - cpu0
        with joblog.records_lock:
            per_job = list(joblog.records)
    finally:
        runner.stop(60)
        executor.stop()
        conns.close_all()
    return {"label": label, "startup_s": startup, "wall_s": wall, "n": len(uids), "cpu_s": cpu,
            "per_min": 60.0 * len(uids) / wall, "jobs": per_job}


def _med(jobs: list[dict[str, Any]], key: str) -> float | None:
    values = [j[key] for j in jobs if key in j]
    return statistics.median(values) if values else None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--studies", type=int, default=16)
    p.add_argument("--pipeline", default="syntax")
    p.add_argument("--skip-ray", action="store_true", help="only the local executor")
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    joblog = _JobLog()
    jobs_logger = logging.getLogger("cardionode.jobs")
    jobs_logger.addHandler(joblog)
    jobs_logger.setLevel(logging.INFO)
    jobs_logger.propagate = False
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    models = {"providers": ["cpu"], "intra_op_threads": 1, "warmup": False}
    setups: list[tuple[str, dict[str, Any]]] = [
        ("local x1", {"node": {"workers": 1}, "models": models}),
        ("local x2", {"node": {"workers": 2}, "models": models}),
    ]
    if not a.skip_ray:
        for n in (1, 2):
            setups.append((f"ray x{n}", {"models": {**models, "intra_op_threads": 0}, "executor": {
                "type": "ray", "max_in_flight": n, "embedded": {"num_cpus": 2, "object_store_mb": 200},
                "pipelines": {a.pipeline: {"actors": n, "num_cpus": 1}}}}))
    with tempfile.TemporaryDirectory(prefix="cardionode-scale-") as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        views = {}
        for files in write_studies(root / "studies", a.studies):
            view = StudyView.from_files(files)
            views[view.study_instance_uid] = view
        nbytes = sum(f.stat().st_size for v in views.values() for f in (r.path for r in v.instances))
        print(f"{len(views)} phantom XA studies ({nbytes / len(views) / 1e6:.2f} MB each on average) written in "
              f"{time.perf_counter() - t:.1f} s; pipeline {a.pipeline}")
        results = [run_setup(label, cfg, views, a.pipeline, root / label.replace(" ", "-"), joblog)
                   for label, cfg in setups]
    ref = results[0]["per_min"]
    ref_cpu = results[0]["cpu_s"] / results[0]["n"]
    print(f"\n{'set-up':<10} {'studies/min':>11} {'vs local x1':>11} {'CPU s/study':>11} {'vs local x1':>11} "
          f"{'start s':>8} {'run() s':>8} {'run() CPU s':>11} {'round trip s':>12} {'transfer s':>10} "
          f"{'overhead s':>10}")
    for r in results:
        jobs = r["jobs"]
        cpu_per = r["cpu_s"] / r["n"]
        fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        print(f"{r['label']:<10} {r['per_min']:>11.1f} {r['per_min'] / ref:>10.2f}x {cpu_per:>11.2f} "
              f"{cpu_per / ref_cpu:>10.2f}x {r['startup_s']:>8.1f} {fmt(_med(jobs, 't_run_s')):>8} "
              f"{fmt(_med(jobs, 't_run_cpu_s')):>11} {fmt(_med(jobs, 't_total_s')):>12} "
              f"{fmt(_med(jobs, 't_transfer_s')):>10} {fmt(_med(jobs, 't_overhead_s')):>10}")
    for r in results:
        if r["label"].startswith("ray"):
            jobs = r["jobs"]
            share = [j["t_overhead_s"] / j["t_total_s"] for j in jobs if j.get("t_total_s")]
            print(f"{r['label']}: Ray overhead per job median {_med(jobs, 't_overhead_s') * 1000:.0f} ms "
                  f"(max {max(j['t_overhead_s'] for j in jobs) * 1000:.0f} ms) = "
                  f"{statistics.median(share) * 100:.0f} % of the round trip; pipeline run() median "
                  f"{_med(jobs, 't_run_s'):.3f} s; study into the object store median "
                  f"{_med(jobs, 't_transfer_s') * 1000:.1f} ms")
    print("(medians over the timed jobs; 'start s' = until the executor took jobs, before warm-up; 'CPU s/study' ="
          " CPU of this process and all below it -- Ray driver, daemons, actors -- over the timed batch / studies)")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
