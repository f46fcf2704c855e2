"""Patient data on disk is readable by the node's own user only (0600 files, 0700 folders) whatever the
umask, and the node runs as an unprivileged user (what deploy/cardionode.service does)."""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pydicom
import pytest
import requests
import yaml

from node.state import connect
from node.jobs import write_result_files
from node.spool import Spool
from pipelines.base import PipelineContext, PipelineResult, StudyView
from tests.fixtures.sr_pipeline import SrTestPipeline
from tests.fixtures.studies import write_ct_study
from tests.support.node_proc import ROOT
from tests.support.peers import StoreSCP, echo, free_port, require_binary, storescu, wait_for

TOKEN = "permissions-test-token"


def _loose(root: Path) -> list[str]:
    """Entries under ``root`` (itself included) that group or others may access."""
    out = []
    for p in [root, *root.rglob("*")]:
        mode = p.lstat().st_mode
        if stat.S_IMODE(mode) & 0o077:
            out.append(f"{oct(stat.S_IMODE(mode))} {p.relative_to(root.parent)}")
    return out


def test_library_creates_private_files_under_a_permissive_umask(tmp_path: Path) -> None:
    """Spool, database and result files created by the node's modules are 0600 in 0700 folders even
    when the embedding process has umask 022 (``cardionode serve`` also sets 077 itself)."""
    storage = tmp_path / "var"
    previous = os.umask(0o022)
    try:
        spool = Spool(storage, 0)
        try:
            files = write_ct_study(tmp_path / "in", 2)
            spool.store_file(files[0], "TEST", "test")
            spool.store_stream(pydicom.dcmread(files[1]).file_meta,
                               files[1].read_bytes()[132 + 12 + pydicom.dcmread(files[1]).file_meta
                                                     .FileMetaInformationGroupLength:],
                               calling_ae="TEST", source="test")
            view = StudyView.from_files(files)
            result = SrTestPipeline().run(view, PipelineContext({}, None, tmp_path))
            write_result_files(PipelineResult(result.datasets, "test-sr", "0"), storage / "results" / "1")
            conn = connect(storage)
            conn.execute("CREATE TABLE t (x)")
            conn.close()
        finally:
            spool.close()
    finally:
        os.umask(previous)
    assert len(list(storage.rglob("*.dcm"))) == 3
    assert _loose(storage) == []


def _nobody() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' on this machine")


def test_serve_as_an_unprivileged_user_keeps_everything_private(tmp_path: Path) -> None:
    """``cardionode serve`` (the console script) as user nobody, started with umask 022, like the systemd
    unit runs it: DIMSE and STOW-RS ingest, a job and its delivery work, and every file it wrote (spool,
    results, database, pid file) is 0600 in 0700 folders, owned by that user."""
    setpriv = require_binary("setpriv")
    user = _nobody()
    as_nobody = [setpriv, f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), HOME="/nonexistent")
    probe = subprocess.run([*as_nobody, sys.executable, "-c", "import node.cli, tests.fixtures.sr_pipeline"],
                           env=env, cwd="/", capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        pytest.skip(f"this checkout is not readable by user nobody: {probe.stderr.strip()[-300:]}")
    cardionode = Path(sys.executable).with_name("cardionode")
    assert cardionode.exists(), "the cardionode console script is not installed next to the interpreter"
    base = Path(tempfile.mkdtemp(prefix="cardionode-perm-"))
    try:
        os.chown(base, user.pw_uid, user.pw_gid)
        storage = base / "var"
        with StoreSCP(tmp_path / "scp") as scp:
            port, http_port = free_port(), free_port()
            cfg = {
                "node": {"host": "127.0.0.1", "port": port, "storage_dir": str(storage), "quiet_seconds": 1.0,
                         "min_free_mb": 0, "http_port": http_port, "plugins": ["tests.fixtures.sr_pipeline"]},
                "api": {"token": TOKEN},
                "models": {"providers": ["cpu"], "warmup": False},
                "destinations": {"pacs": {"type": "dimse", "ae_title": "PACS", "host": "127.0.0.1",
                                          "port": scp.port}},
                "routes": [{"pipeline": "test-sr", "match": {"modality": "CT"}, "destinations": ["pacs"]}],
            }
            config = base / "node.yaml"
            config.write_text(yaml.safe_dump(cfg))
            os.chmod(config, 0o644)
            log = open(tmp_path / "node.log", "wb")
            proc = subprocess.Popen([*as_nobody, str(cardionode), "serve", "--config", str(config)], env=env,
                                    cwd=str(base), stdout=log, stderr=subprocess.STDOUT,
                                    preexec_fn=lambda: os.umask(0o022))
            try:
                assert wait_for(lambda: proc.poll() is None and echo(port, timeout=2), 60, 0.3), \
                    (tmp_path / "node.log").read_text()[-3000:]
                files = write_ct_study(tmp_path / "study", 3)
                assert storescu(port, files[:2]).returncode == 0
                body = (b"--b\r\nContent-Type: application/dicom\r\n\r\n" + files[2].read_bytes() + b"\r\n--b--\r\n")
                r = requests.post(f"http://127.0.0.1:{http_port}/dicom-web/studies", data=body, timeout=30, headers={
                    "Content-Type": 'multipart/related; type="application/dicom"; boundary=b',
                    "Authorization": f"Bearer {TOKEN}"})
                assert r.status_code == 200, r.text
                assert wait_for(lambda: len(scp.files()) == 1, 60), (tmp_path / "node.log").read_text()[-3000:]
                assert (storage / "cardionode.pid").exists()
                written = [p for p in storage.rglob("*")]
                assert {p.suffix for p in written if p.is_file()} >= {".dcm", ".sqlite3", ".pid"}
                assert _loose(storage) == []
                assert {p.lstat().st_uid for p in [storage, *written]} == {user.pw_uid}
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    rc = proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    rc = proc.wait()
                log.close()
            assert rc == 0, (tmp_path / "node.log").read_text()[-3000:]
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_systemd_unit_runs_the_console_script_unprivileged_and_hardened(tmp_path: Path) -> None:
    """deploy/cardionode.service: an unprivileged user, umask 0077, the hardening options the README
    promises; ``systemd-analyze verify`` accepts it (with ExecStart pointing at this interpreter's script)."""
    unit = (ROOT / "deploy" / "cardionode.service").read_text()
    settings = {}
    for line in unit.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";")):
            key, _, value = line.partition("=")
            settings[key.strip()] = value.strip()
    assert settings["User"] == "cardionode" and settings["UMask"] == "0077"
    assert settings["ExecStart"].split()[1:] == ["serve", "--config", "/etc/cardionode/node.yaml"]
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                       "PrivateTmp": "yes", "CapabilityBoundingSet": "", "RestrictSUIDSGID": "yes",
                       "ReadWritePaths": "/var/lib/cardionode", "StateDirectoryMode": "0700"}.items():
        assert settings.get(key) == value, key
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (the unit's keys were checked above)")
    local = unit.replace(settings["ExecStart"].split()[0], str(Path(sys.executable).with_name("cardionode")))
    local = local.replace("User=cardionode", "User=root").replace("Group=cardionode", "Group=root")
    path = tmp_path / "cardionode.service"
    path.write_text(local)
    r = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "cardionode.service" not in r.stderr.replace(str(path), ""), r.stderr


def test_opening_another_connection_keeps_the_locks_of_open_ones(tmp_path: Path) -> None:
    """db.connect creates the database file 0600 without ever opening an existing one: closing any
    descriptor of it drops this process's SQLite locks, and another process closing its last connection
    then takes itself for the last user and deletes the WAL and shared-memory files under the connections
    still open here (seen as a node that stopped seeing jobs queued by ``cardionode process``)."""
    writer = ("import sys; from node import state; c = state.connect(sys.argv[1]); "
              "c.execute('INSERT INTO t VALUES (?)', (int(sys.argv[2]),)); c.close()")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    first = connect(tmp_path)
    first.execute("CREATE TABLE t (x)")
    second = connect(tmp_path)  # e.g. a new worker thread's connection
    try:
        subprocess.run([sys.executable, "-c", writer, str(tmp_path), "1"], check=True, env=env, timeout=60)
        assert {p.name for p in tmp_path.iterdir()} >= {"cardionode.sqlite3-wal", "cardionode.sqlite3-shm"}
        assert [r[0] for r in second.execute("SELECT x FROM t")] == [1]
    finally:
        first.close()
        second.close()
