"""A real Ray cluster for tests: a head (``ray start --head``) and worker nodes as separate process groups.

Each Ray node is one ``ray start --block`` process started in its own session;
everything it spawns (GCS, raylet, object store, agents, and the worker
processes, which Ray puts in process groups of their own) descends from it, so
a Ray node's processes are that process and its descendants (read from /proc).
Killing a "machine" is SIGKILL to all of them at once, and every stop is by PID,
never ``ray stop`` (which would end every Ray process of the user on this
machine, other test runs' included).  Every port is a free one and the temp dir is
unique, so parallel runs do not collide.  Sized for a 2-core box: the head has
no CPUs for tasks, workers one CPU and an 80 MB object store each, no
dashboard, no usage stats.  The head detects a dead node after about 1.5 s
(``RAY_health_check_*``; Ray's defaults take about 15-20 s).  Ray rewrites
127.0.0.1 to the machine's own address (``services.resolve_ip_for_localhost``),
so its processes listen on that address; clients connect through 127.0.0.1.

Skips the calling test when Ray is not installed (the ``ray`` extra).
"""
from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import socket
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Mapping, Sequence

import pytest

from .node_proc import ROOT

__all__ = ["RayCluster", "RayNode", "descendants", "require_ray", "spare_port"]

HEALTH_CHECK_ENV = {
    "RAY_raylet_start_wait_time_s": "150",  # a loaded 2-core box can take longer than Ray's 30 s to register a node
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}


def require_ray() -> str:
    """The ``ray`` command next to this Python; skips the test when the ``ray`` extra is not installed."""
    exe = Path(sys.executable).with_name("ray")
    if not exe.exists():
        pytest.skip("Ray is not installed (pip install '.[ray]')")
    return str(exe)


def spare_port() -> int:
    """A port below Linux's ephemeral range (32768-60999) that is free now.

    The fixed ports given to Ray must not be the random ephemeral ports that
    other Ray processes bind meanwhile (a raylet aborts on "bind: Address
    already in use"), so they come from 20000-32767, chosen at random.
    """
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(20000, 32768)
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-32767")


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state, ppid, pgrp, ...); None when gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def descendants(root: int) -> list[int]:
    """``root`` and every live (not zombie) process below it, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None and fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(entry))
    alive = _stat(root)
    found, todo = ([root] if alive is not None and alive[0] != "Z" else []), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class RayNode:
    """One ``ray start --block`` process group with its log."""

    def __init__(self, name: str, args: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(args, env=dict(env), stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True, cwd=ROOT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_started(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "Ray runtime started" in self.log():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"Ray node {self.name} did not start:\n{self.log()[-3000:]}")

    def owns(self, pid: int) -> bool:
        """True when ``pid`` runs in this Ray node (descends from its ``ray start``)."""
        return pid in self.pids()

    def pids(self) -> list[int]:
        return descendants(self.proc.pid)

    def _signal_all(self, sig: int) -> None:
        for pid in self.pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def kill9(self) -> None:
        """The machine is gone: SIGKILL to every process of this Ray node at once."""
        self._signal_all(signal.SIGKILL)
        self.proc.wait(30)
        deadline = time.monotonic() + 10
        while self.pids() and time.monotonic() < deadline:  # reparented stragglers, if any
            self._signal_all(signal.SIGKILL)
            time.sleep(0.1)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM every process of the node, SIGKILL what is left after ``grace`` s; nothing of it runs afterwards."""
        left = self.pids()
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            for pid in left:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                left = [p for p in left if (st := _stat(p)) is not None and st[0] != "Z"]
                if not left:
                    break
                time.sleep(0.2)
            if not left:
                break
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()


class RayCluster:
    """Head plus worker nodes on this machine; ``address`` for the GCS, ``client_address`` for Ray Client,
    ``token_file`` for ``executor.auth_token_file``."""

    def __init__(self, log_dir: Path, gcs_port: int | None = None) -> None:
        self.exe = require_ray()
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # short: Ray's unix socket paths live below it (limit 107 characters)
        self.temp_dir = Path(tempfile.mkdtemp(prefix="cnray-"))
        self.gcs_port = gcs_port or spare_port()
        self.client_port = spare_port()
        self.head: RayNode | None = None
        self.workers: list[RayNode] = []
        # token authentication with this cluster's own token (never the user's ~/.ray/auth_token)
        self.token_file = self.temp_dir / "auth_token"
        self.token_file.write_text(secrets.token_hex(32))
        self.env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(ROOT), RAY_AUTH_MODE="token",
                        RAY_AUTH_TOKEN_PATH=str(self.token_file), **HEALTH_CHECK_ENV)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def client_address(self) -> str:
        return f"ray://127.0.0.1:{self.client_port}"

    def _common(self) -> list[str]:
        """Options of every node: Ray picks random free ports itself except where its default is fixed."""
        return ["--block", "--disable-usage-stats", "--object-store-memory", str(80 * 1024 * 1024),
                "--dashboard-agent-listen-port", str(spare_port()),  # default 52365
                "--min-worker-port", "0", "--max-worker-port", "0"]  # default 10002-19999

    def start_head(self) -> "RayCluster":
        args = [self.exe, "start", "--head", "--port", str(self.gcs_port), "--num-cpus", "0",
                "--include-dashboard", "false", "--dashboard-port", str(spare_port()),
                "--ray-client-server-port", str(self.client_port), "--temp-dir", str(self.temp_dir),
                *self._common()]
        self.head = RayNode("head", args, dict(self.env, CARDIONODE_TEST_NODE_TAG="head"),
                            self.log_dir / "ray-head.log")
        self.head.wait_started()
        return self

    def add_workers(self, names: Sequence[str], resources: Mapping[str, float], num_cpus: int = 1) -> list[RayNode]:
        """Worker nodes with ``resources`` each; their processes see ``CARDIONODE_TEST_NODE_TAG=<name>``.

        One after the other: nodes on one machine share the head's session
        directory, and two raylets starting at once pick the same object-store
        socket name (the second aborts with "bind: Address already in use").
        """
        nodes = []
        for name in names:
            args = [self.exe, "start", "--address", self.address, "--num-cpus", str(num_cpus),
                    "--resources", json.dumps(dict(resources)), *self._common()]
            node = RayNode(name, args, dict(self.env, CARDIONODE_TEST_NODE_TAG=name), self.log_dir / f"ray-{name}.log")
            self.workers.append(node)
            node.wait_started()
            nodes.append(node)
        return nodes

    def node_of(self, pid: int) -> RayNode | None:
        return next((n for n in [*self.workers, self.head] if n is not None and n.owns(pid)), None)

    def stop(self) -> None:
        for node in [*self.workers, self.head]:
            if node is not None:
                node.stop()
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> "RayCluster":
        return self.start_head()

    def __exit__(self, *exc: object) -> None:
        self.stop()
