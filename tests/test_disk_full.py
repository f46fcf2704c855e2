"""A full disk for real: a small tmpfs holds the storage folder (spool, database) and $TMPDIR, as the README
advises.  ENOSPC anywhere in the receive path answers 0xA700 (STOW-RS: FailureReason 0xA700), the node keeps
serving, and no partial temporary file stays behind, also not after a kill -9 and restart."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pydicom
import pytest
import requests

from tests.fixtures.studies import write_ct_study
from tests.support.node_proc import ROOT
from tests.support.peers import echoscu, free_port, storescu, wait_for
from tests.support.rawdicom import RawAssociation, c_store_command, pdata
from tests.test_ingest import CT, split_part10

pytestmark = [pytest.mark.integration]


@pytest.fixture()
def small_fs() -> Iterator[Path]:
    """A 6 MiB tmpfs mounted on a fresh folder (needs root / CAP_SYS_ADMIN)."""
    mount = Path(tempfile.mkdtemp(prefix="cardionode-full-"))
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m,mode=0700", "tmpfs", str(mount)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        mount.rmdir()
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
        shutil.rmtree(mount, ignore_errors=True)


def _fill(fs: Path, leave: int) -> Path:
    """A filler file leaving about ``leave`` bytes free on ``fs``."""
    filler = fs / "filler"
    free = shutil.disk_usage(fs).free
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


def _temp_files(fs: Path) -> list[Path]:
    return [p for p in fs.rglob("*") if p.is_file() and p.name != "filler" and p.suffix not in (".dcm", ".sqlite3")
            and not p.name.startswith("cardionode.sqlite3")]


class IngestProcess:
    """``python -m tests.support.run_ingest`` (spool + DIMSE listener) with $TMPDIR on the small filesystem."""

    def __init__(self, fs: Path) -> None:
        self.fs = fs
        self.port = free_port()
        (fs / "tmp").mkdir(exist_ok=True)
        self.proc: subprocess.Popen | None = None

    def start(self) -> "IngestProcess":
        env = dict(os.environ, PYTHONPATH=str(ROOT), TMPDIR=str(self.fs / "tmp"))
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.support.run_ingest", "--storage",
                                      str(self.fs / "var"), "--port", str(self.port)], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("READY"), line
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def test_c_store_on_a_full_disk_gets_a700_keeps_serving_and_leaves_nothing(small_fs: Path, tmp_path: Path) -> None:
    files = write_ct_study(tmp_path / "ct", 3, size=512)  # 525 kB each
    node = IngestProcess(small_fs).start()
    try:
        filler = _fill(small_fs, 300_000)
        r = storescu(node.port, files, extra_args=["-v"])
        out = r.stdout + r.stderr
        assert out.count("Received Store Response") == 3, out[-2000:]  # one association, three answers
        assert out.count("OutOfResources") == 3 and "Peer aborted" not in out, out[-2000:]
        assert _temp_files(small_fs) == []
        assert not list((small_fs / "var" / "spool").rglob("*.dcm"))
        assert echoscu(node.port).returncode == 0
        filler.unlink()
        r = storescu(node.port, files)
        assert r.returncode == 0, r.stdout[-2000:]
        stored = {p.stem: p for p in (small_fs / "var" / "spool").rglob("*.dcm")}
        assert sorted(stored) == sorted(f.stem for f in files)
        assert all(split_part10(stored[f.stem])[1] == split_part10(f)[1] for f in files)

        # kill -9 while a dataset is half received: its partial file is removed at the next start
        raw = RawAssociation(node.port)
        assert raw.associate(CT) == 0x02
        raw.send(pdata(1, 0x03, c_store_command(CT, pydicom.dcmread(files[0]).SOPInstanceUID)))
        raw.send(pdata(1, 0x00, split_part10(files[0])[1][:100_000]))
        incoming = small_fs / "var" / "spool" / ".incoming"
        assert wait_for(lambda: [p for p in incoming.iterdir() if p.stat().st_size > 50_000], 10)
        node.kill9()
        raw.close()
        assert _temp_files(small_fs), "the kill left no partial file: nothing was tested"
        node.start()
        assert _temp_files(small_fs) == []
        assert echoscu(node.port).returncode == 0
    finally:
        node.stop()


def test_stow_on_a_full_disk_gets_failure_reason_a700_and_leaves_nothing(small_fs: Path, tmp_path: Path) -> None:
    from tests.test_stow import HEADERS, Node, _body

    files = write_ct_study(tmp_path / "ct", 1, size=512)
    body = _body([("application/dicom", files[0].read_bytes())])
    node = Node(small_fs / "node")
    try:
        filler = _fill(small_fs, int(len(body) * 1.5))  # room for the buffered body, not for the instance too
        r = requests.post(f"{node.url}/studies", data=body, headers=HEADERS, timeout=30)
        assert r.status_code == 409, r.text
        assert int(pydicom.Dataset.from_json(r.json()).FailedSOPSequence[0].FailureReason) == 0xA700
        assert _temp_files(small_fs) == []
        filler.unlink()
        r = requests.post(f"{node.url}/studies", data=body, headers=HEADERS, timeout=30)
        assert r.status_code == 200, r.text
        assert len(list((small_fs / "node" / "var" / "spool").rglob("*.dcm"))) == 1
        time.sleep(0.2)
        assert _temp_files(small_fs) == []
    finally:
        node.stop()
