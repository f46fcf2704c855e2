"""Result latency: from the last C-STORE response to the results at a storescp destination, per pipeline,
with quiet-period completion and with study-aware completion (routes[].requires), in the same run.

    python bench/latency.py [--quiet 30] [--settle 0.5] [--pipelines syntax,calcium,myops] [--work DIR]

Each phantom study (``cardionode sample xa|ct|mr``: synthetic, not patient data) is sent with dcmtk
``storescu`` to the whole node (``python -m node serve``, bundled models on the CPU provider,
results to a dcmtk ``storescp``), once to a node whose routes have no ``requires`` (the study waits
for the quiet period, ``node.quiet_seconds``, default the product's 30 s) and once to a node whose
routes declare the series their pipeline needs (the study completes ``node.settle_seconds`` after
its last instance when its headers say it is complete).

Latency = the newest result file's modification time at storescp (its last byte written) minus the
moment storescu exited (its last C-STORE response came just before; storescu then only releases
the association).  The pipeline's own run time is the ``seconds`` of the node's ``job done`` log
line of the same job (the executor's run of the pipeline, without writing and sending results).
Target: study-aware latency <= pipeline run time + 2 s.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from training.datasets.samples import write_sample  # noqa: E402
from tests.support.node_proc import NodeProcess  # noqa: E402
from tests.support.peers import StoreSCP, free_port, storescu  # noqa: E402

KIND = {"syntax": "xa", "calcium": "ct", "myops": "mr"}
MODALITY = {"syntax": "XA", "calcium": "CT", "myops": "MR"}
MYOPS_SERIES = [{"name": "bssfp", "series_description": "(?i)ssfp|truefisp|cine"},
                {"name": "lge", "series_description": "(?i)lge|psir"},
                {"name": "t2", "series_description": "(?i)t2"}]


def requirements(pipeline: str, files: list[Path]) -> list[dict[str, Any]]:
    """What a site would declare for the pipeline's protocol (the XA sample: one series per run)."""
    if pipeline == "syntax":
        return [{"name": "runs", "modality": "XA", "min_series": len(files)}]
    if pipeline == "calcium":
        return [{"name": "ct", "modality": "CT"}]
    return MYOPS_SERIES


def start_node(work: Path, scp_port: int, pipelines: list[str], studies: dict[str, list[Path]], aware: bool,
               quiet: float, settle: float) -> NodeProcess:
    routes = []
    for p in pipelines:
        route: dict[str, Any] = {"name": p, "pipeline": p, "match": {"modality": MODALITY[p]},
                                 "destinations": ["pacs"]}
        if aware:
            route["requires"] = requirements(p, studies[p])
        routes.append(route)
    cfg = {
        "node": {"ae_title": "CARDIONODE", "host": "127.0.0.1", "port": free_port(),
                 "storage_dir": str(work / "var"), "quiet_seconds": quiet, "settle_seconds": settle,
                 "min_free_mb": 0, "http_host": "127.0.0.1", "http_port": free_port(), "log_format": "json"},
        "models": {"providers": ["cpu"]},
        "destinations": {"pacs": {"type": "dimse", "ae_title": "PACS", "host": "127.0.0.1", "port": scp_port}},
        "routes": routes,
    }
    work.mkdir(parents=True, exist_ok=True)
    path = work / "node.yaml"
    path.write_text(yaml.safe_dump(cfg))
    node = NodeProcess(path).start(timeout=180)
    deadline = time.time() + 300  # the models are loaded (warm-up) before the first study is sent
    while "models ready" not in node.log_path.read_text() and time.time() < deadline:
        time.sleep(0.5)
    return node


def _job(node: NodeProcess, study: str) -> dict[str, Any] | None:
    for line in node.log_path.read_text().splitlines():
        if '"job done"' in line:
            rec = json.loads(line)
            if rec.get("study") == study:
                return rec
    return None


def _delivered(node: NodeProcess, study: str) -> int | None:
    """Number of deliveries of the study's jobs when every job is done and every delivery sent, else None."""
    conn = sqlite3.connect(f"file:{node.storage / 'cardionode.sqlite3'}?mode=ro", uri=True, timeout=30)
    try:
        jobs = conn.execute("SELECT state FROM jobs WHERE study_uid=?", (study,)).fetchall()
        if not jobs or any(j[0] != "done" for j in jobs):
            return None
        states = [r[0] for r in conn.execute(
            "SELECT d.state FROM deliveries d JOIN jobs j ON d.job_id=j.id WHERE j.study_uid=?", (study,))]
        return len(states) if states and all(s == "sent" for s in states) else None
    except sqlite3.OperationalError:  # tables not there yet
        return None
    finally:
        conn.close()


def measure(node: NodeProcess, scp: StoreSCP, files: list[Path], study: str, timeout: float) -> dict[str, float]:
    scp.clear()
    env = dict(os.environ, TCP_NODELAY="1")
    r = storescu(node.port, files, env=env)
    sent = time.time()
    if r.returncode != 0:
        raise RuntimeError(f"storescu failed: {r.stdout[-2000:]}{r.stderr[-2000:]}")
    deadline = sent + timeout
    while (n := _delivered(node, study)) is None or len(scp.files()) < n:
        if time.time() > deadline:
            raise RuntimeError(f"no results for {study} within {timeout} s; see {node.log_path}")
        time.sleep(0.02)
    arrived = max(p.stat().st_mtime for p in scp.files())
    job = _job(node, study)
    return {"latency": arrived - sent, "pipeline": float(job["seconds"]) if job else float("nan"),
            "results": float(n)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quiet", type=float, default=30.0, help="node.quiet_seconds of both nodes (product default 30)")
    ap.add_argument("--settle", type=float, default=0.5, help="node.settle_seconds (product default 0.5)")
    ap.add_argument("--pipelines", default="syntax,calcium,myops")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--work", type=Path, default=None, help="working folder (default: a temp folder, removed)")
    args = ap.parse_args(argv)
    pipelines = [p.strip() for p in args.pipelines.split(",") if p.strip()]
    for p in pipelines:
        if p not in KIND:
            ap.error(f"unknown pipeline {p!r} (one of {', '.join(KIND)})")

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-latency-"))
    studies = {p: sorted(write_sample(KIND[p], work / "studies" / p, seed=args.seed)) for p in pipelines}
    uids = {}
    import pydicom

    for p, files in studies.items():
        uids[p] = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        print(f"{p}: {len(files)} files, {sum(f.stat().st_size for f in files) / 1e6:.1f} MB "
              f"(phantom sample {KIND[p]}, seed {args.seed})", flush=True)
    rows: list[tuple[str, str, dict[str, float]]] = []
    try:
        with StoreSCP(work / "scp", ae_title="PACS", verbose=False) as scp:
            for aware in (False, True):
                mode = "study-aware" if aware else f"quiet period {args.quiet:g} s"
                node = start_node(work / ("aware" if aware else "quiet"), scp.port, pipelines, studies, aware,
                                  args.quiet, args.settle)
                try:
                    for p in pipelines:
                        m = measure(node, scp, studies[p], uids[p], timeout=args.quiet + 600)
                        rows.append((p, mode, m))
                        print(f"  {p:8} {mode:20} latency {m['latency']:6.2f} s, pipeline {m['pipeline']:6.2f} s, "
                              f"{int(m['results'])} results", flush=True)
                finally:
                    node.terminate()
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)

    print("\n| pipeline | completion | latency s | pipeline run s | latency - run s | target (aware: <= run + 2 s) |")
    print("|---|---|---|---|---|---|")
    for p, mode, m in rows:
        over = m["latency"] - m["pipeline"]
        target = ("met" if over <= 2.0 else "missed") if mode == "study-aware" else ""
        print(f"| {p} | {mode} | {m['latency']:.2f} | {m['pipeline']:.2f} | {over:+.2f} | {target} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
