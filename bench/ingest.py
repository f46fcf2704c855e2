"""Ingest throughput: dcmtk storescu -> dcmtk storescp (files on disk) vs storescu -> CardioNode.

    python bench/ingest.py [--slices 300] [--size 512] [--rounds 3] [--senders 4] [--processes 2 ...]
                           [--group-commit] [--strategies] [--untuned] [--work DIR]

One synthetic CT series (300 x 512x512 int16 slices: about 158 MB) is sent, in the same run and
alternately, to

* dcmtk ``storescp`` (``+xa +B +uf``, no ``-v``; with several senders ``--fork``: a process per
  association, so it scales with senders): writes each instance to its own file, no fsync;
* CardioNode (``python -m node serve``, the whole node, ``routes: []``, quiet period one hour so no
  processing runs during the measurement): every instance is written to a temporary file, fsynced,
  renamed, its directory fsynced and its index row committed before the success status goes out,
  each association fsyncing on its own, one ingest process (the defaults);
* the same node with ``node.ingest_processes`` set to each of ``--processes`` (default 2): that many
  ingest processes accept on the one port (``processes-N``);
* with ``--group-commit``, the same node with ``node.group_commit: true`` (the fsyncs of concurrent
  associations shared);
* with several senders, the durability work alone (a thread per sender writing its share of the
  files: write, fsync, rename, directory fsync; no DICOM, no network); with ``--strategies`` also
  the other durability strategies: group commit, group commit of the directory fsync only, one
  journal synced per batch.

The CPU seconds every node's processes used during each send are read from ``/proc`` (all its
processes together, and the busiest one: with several ingest processes the work no longer has to
fit on one core).

With ``TCP_NODELAY=1`` in the dcmtk processes' environment (dcmtk's fastest setting; ``--untuned``
adds the same without it): one sender, then ``--senders`` storescu processes at once, each with a
share of the slices.  Prints seconds and MB/s (1 MB = 10^6 bytes) of each send (median of
``--rounds``) and the ratios.  The nodes keep the study between rounds: later rounds are re-sends,
which replace the stored files (same work: temp file, fsync, rename).

With one sender a further target runs in the same rounds: the durability floor (the files' bytes
written, fsynced, renamed to new names and their directory fsynced one after another, no DICOM);
storescp + that floor is the best a receiver that answers each C-STORE only once the instance is
durable can do with one sender.  Targets (issue 18): one sender within 10 % of storescp + floor;
4 senders at >= 0.5 x ``storescp --fork``.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from tests.fixtures.studies import write_ct_study  # noqa: E402
from tests.support.node_proc import NodeProcess  # noqa: E402
from tests.support.peers import StoreSCP, free_port, require_binary  # noqa: E402

NODE_AE = "CARDIONODE"
SCP_AE = "STORESCP"


def _chunks(items: Sequence[Path], n: int) -> list[list[Path]]:
    return [list(items[i::n]) for i in range(n) if items[i::n]]


def send(port: int, called_ae: str, groups: list[list[Path]], env: dict[str, str]) -> float:
    """Seconds until every storescu (one per group, started together) has finished successfully."""
    exe = require_binary("storescu")
    t0 = time.perf_counter()
    procs = [subprocess.Popen([exe, "-aet", "BENCH", "-aec", called_ae, "127.0.0.1", str(port), *map(str, files)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
             for files in groups]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    elapsed = time.perf_counter() - t0
    for p, out in zip(procs, outputs):
        if p.returncode != 0 or "Store Failed" in out:
            raise RuntimeError(f"storescu to {called_ae} failed ({p.returncode}): {out[-2000:]}")
    return elapsed


def durable_writes(files: Sequence[Path], folder: Path) -> float:
    """Seconds to store ``files`` the way the spool must, without any DICOM: write each file's bytes
    to a temporary file, fsync it, rename it into place, fsync the directory (one after another,
    as one association does).  storescp's time + this is the floor for a receiver that answers each
    C-STORE only once the instance is durable."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(folder / "final", ignore_errors=True)  # new names every round, as for a new study
    incoming, final = folder / "incoming", folder / "final"
    incoming.mkdir(exist_ok=True)
    final.mkdir()
    blobs = [(p.name, p.read_bytes()) for p in files]
    t0 = time.perf_counter()
    for name, data in blobs:
        tmp = incoming / name
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final / name)
        fd = os.open(final, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return time.perf_counter() - t0


def concurrent_durable_writes(files: Sequence[Path], folder: Path, threads: int, mode: str) -> float:
    """Seconds for ``threads`` threads (each a share of ``files``, one after another, as one association
    does) to make every file durable before "answering", without DICOM or network: the durability
    strategies alone.

    * ``alone``: each file written to a temporary name, fsynced, renamed, its directory fsynced (today's
      per-instance rule, every thread on its own);
    * ``group``: the same steps with the two fsyncs shared through :class:`node.fsync.GroupSync`;
    * ``group-dir``: each file fsynced by its own thread, the directory fsync shared;
    * ``journal``: each file appended to one journal file, the journal fsynced once per batch of
      concurrent writers (GroupSync on one path); filing the instances into the spool afterwards
      (another write + fsync each, off the sender's path) is not counted.
    """
    import threading

    from node.fsync import GroupSync, fsync_path

    shutil.rmtree(folder, ignore_errors=True)
    incoming, final = folder / "incoming", folder / "final"
    incoming.mkdir(parents=True)
    final.mkdir()
    blobs = [(p.name, p.read_bytes()) for p in files]
    group = GroupSync()
    journal = open(folder / "journal", "ab", buffering=0)
    journal_lock = threading.Lock()

    def store(name: str, data: bytes) -> None:
        if mode == "journal":
            with journal_lock:
                journal.write(data)
            group.sync(folder / "journal")
            return
        tmp = incoming / name
        with open(tmp, "wb") as f:
            f.write(data)
        (group.sync if mode == "group" else fsync_path)(tmp)
        os.replace(tmp, final / name)
        if mode in ("group", "group-dir"):
            group.sync(final, directory=True)
        else:
            fsync_path(final, directory=True)

    def worker(chunk: list[tuple[str, bytes]]) -> None:
        for name, data in chunk:
            store(name, data)

    workers = [threading.Thread(target=worker, args=(blobs[i::threads],)) for i in range(threads)]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - t0
    journal.close()
    return elapsed


def start_node(work: Path, name: str, group_commit: bool = False, processes: int = 1) -> NodeProcess:
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {
        "node": {"ae_title": NODE_AE, "host": "127.0.0.1", "port": free_port(), "storage_dir": str(folder / "var"),
                 "quiet_seconds": 3600, "http_host": "127.0.0.1", "http_port": free_port(), "log_format": "json",
                 "group_commit": group_commit, "ingest_processes": processes},
        "models": {"warmup": False},  # the model warm-up would compete with the first round for the CPUs
        "routes": [],
    }
    path = folder / "node.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return NodeProcess(path).start()


def process_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) so far of ``pid`` and of its children, by process id (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            out[p] = (int(fields[11]) + int(fields[12])) / tick
            for task in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split()]
        except (OSError, ValueError):
            continue
    return out


def measure(label: str, rounds: int, targets: list[tuple[str, Callable[[], float]]]) -> dict[str, float]:
    """Median seconds per target; the order alternates every round so neither always goes first."""
    times: dict[str, list[float]] = {name: [] for name, _ in targets}
    for r in range(rounds):
        for name, run in (targets if r % 2 == 0 else targets[::-1]):
            times[name].append(run())
    out = {name: statistics.median(ts) for name, ts in times.items()}
    print(f"  {label}: " + ", ".join(f"{n} {' '.join(f'{t:.2f}' for t in ts)} s" for n, ts in times.items()),
          flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--senders", type=int, default=4)
    ap.add_argument("--processes", type=int, nargs="*", default=[2],
                    help="also a node with node.ingest_processes set to each of these (default: 2)")
    ap.add_argument("--group-commit", action="store_true", help="also a node with node.group_commit: true")
    ap.add_argument("--strategies", action="store_true",
                    help="with several senders, also the durability strategies alone (threads, no DICOM)")
    ap.add_argument("--untuned", action="store_true", help="also measure without TCP_NODELAY (dcmtk's default)")
    ap.add_argument("--work", type=Path, default=None, help="working folder (default: a temp folder, removed)")
    args = ap.parse_args(argv)

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    work.mkdir(parents=True, exist_ok=True)
    files = write_ct_study(work / "study", args.slices, size=args.size)
    total = sum(p.stat().st_size for p in files)
    mb = total / 1e6
    print(f"study: {len(files)} CT slices {args.size}x{args.size}, {mb:.1f} MB; work dir {work} "
          f"({shutil.disk_usage(work).free / 1e9:.0f} GB free); {platform.node()}, {os.cpu_count()} CPUs", flush=True)

    nodes = {"cardionode": start_node(work, "alone")}
    if args.group_commit:
        nodes["group-commit"] = start_node(work, "group", group_commit=True)
    for n in args.processes:
        nodes[f"processes-{n}"] = start_node(work, f"processes-{n}", processes=n)
    results: list[tuple[str, int, dict[str, float]]] = []
    cpu: dict[tuple[int, int], list[tuple[float, float]]] = {}  # (senders, node port) -> (all, busiest process)
    try:
        for tuned in (True, False) if args.untuned else (True,):
            env = dict(os.environ)
            env.pop("TCP_NODELAY", None)
            if tuned:
                env["TCP_NODELAY"] = "1"
            tag = "TCP_NODELAY=1" if tuned else "no TCP_NODELAY"
            for senders in (1, args.senders):
                # one sender: storescp serving associations one after another; several: storescp --fork
                # (a process per association, as the issue compares)
                fork = senders > 1
                with StoreSCP(work / f"scp-{tag}-{senders}", ae_title=SCP_AE, accept_all=True, bit_preserving=True,
                              verbose=False, env=env, extra_args=["--fork"] if fork else []) as scp:

                    def to_scp(groups: list[list[Path]]) -> float:
                        scp.clear()
                        seconds = send(scp.port, SCP_AE, groups, env)
                        if len(scp.files()) != len(files):
                            raise RuntimeError(f"storescp has {len(scp.files())} of {len(files)} files")
                        return seconds

                    def to_node(node: NodeProcess, groups: list[list[Path]]) -> float:
                        assert node.proc is not None
                        before = process_cpu(node.proc.pid)
                        seconds = send(node.port, NODE_AE, groups, env)
                        after = process_cpu(node.proc.pid)
                        used = [after[p] - before.get(p, 0.0) for p in after]
                        cpu.setdefault((len(groups), node.port), []).append((sum(used), max(used)))
                        stored = sum(1 for _ in (node.storage / "spool").rglob("*.dcm"))
                        if stored != len(files):
                            raise RuntimeError(f"the node spool has {stored} of {len(files)} files")
                        return seconds

                    groups = _chunks(files, senders)
                    label = f"{tag}, {senders} sender{'s' if senders > 1 else ''}"
                    targets = [("storescp", lambda g=groups: to_scp(g))]
                    targets += [(name, lambda g=groups, n=node: to_node(n, g)) for name, node in nodes.items()]
                    if tuned and senders == 1:  # the durability floor, measured under the same load
                        targets.append(("fsync", lambda: durable_writes(files, work / "floor")))
                    if tuned and senders > 1:  # the durability work alone, a thread per sender (+ strategies)
                        modes = ("alone", "group", "group-dir", "journal") if args.strategies else ("alone",)
                        targets += [(f"durable-{mode}", lambda m=mode, n=senders: concurrent_durable_writes(
                            files, work / f"durable-{m}", n, m)) for mode in modes]
                    results.append((label, senders, measure(label, args.rounds, targets)))
    finally:
        rcs = [node.terminate() for node in nodes.values()]
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    if any(rcs):
        print(f"warning: node exit codes {rcs}", file=sys.stderr)

    print("\n| setting | storescp s (MB/s) | " + " | ".join(f"{n} s (MB/s) | ratio" for n in nodes) + " |")
    print("|---|---|" + "---|---|" * len(nodes))
    for label, senders, t in results:
        scp_name = "storescp --fork" if senders > 1 else "storescp"
        print(f"| {label}, vs {scp_name} | {t['storescp']:.2f} ({mb / t['storescp']:.0f}) | " + " | ".join(
            f"{t[n]:.2f} ({mb / t[n]:.0f}) | {t['storescp'] / t[n]:.2f}" for n in nodes) + " |")
    print("\nCPU seconds of each node per send (median over the rounds of every setting with that many "
          "senders; all its processes / the busiest one):")
    for senders in sorted({k[0] for k in cpu}):
        print(f"  {senders} sender(s): " + ", ".join(
            f"{name} {statistics.median(c[0] for c in cpu[(senders, node.port)]):.2f} / "
            f"{statistics.median(c[1] for c in cpu[(senders, node.port)]):.2f}"
            for name, node in nodes.items() if (senders, node.port) in cpu))
    for label, senders, t in results:
        if "fsync" in t:
            floor = t["storescp"] + t["fsync"]
            print(f"\ndurability floor ({label}): write + fsync + rename + directory fsync of the {len(files)} files "
                  f"{t['fsync']:.2f} s ({t['fsync'] / len(files) * 1e3:.1f} ms per instance); storescp + that = "
                  f"{floor:.2f} s: a receiver that fsyncs every instance before answering reaches at most "
                  f"{t['storescp'] / floor:.2f} x storescp with one sender.\n"
                  f"  1 sender / floor (target <= 1.10): " + ", ".join(
                      f"{n} {t[n] / floor:.2f} ({t[n] - floor:+.2f} s)" for n in nodes))
        elif senders > 1:
            print(f"\n{label}, x storescp --fork (target >= 0.5): " + ", ".join(
                f"{n} {t['storescp'] / t[n]:.2f}" for n in nodes))
            print(f"  the durability work alone ({senders} threads, each a sender's share: write, fsync, rename, "
                  f"directory fsync; no DICOM, no network): {t['durable-alone']:.2f} s")
            if "durable-group" in t:
                print(f"  durability alone, {senders} threads, no DICOM: each fsyncs alone {t['durable-alone']:.2f} s, "
                      f"group commit {t['durable-group']:.2f} s, "
                      f"directory fsync shared {t['durable-group-dir']:.2f} s, "
                      f"one journal synced per batch {t['durable-journal']:.2f} s (filing into the spool afterwards "
                      "not counted)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
