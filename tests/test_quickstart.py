"""The README's quick start as a new user walks it: the installed ``cardionode`` console script with
conf/node.yaml exactly as shipped (relative ``storage_dir: ./var``), started from a fresh working
directory; only the ports are overridden on the command line (``--port``, ``--http-port`` and, for the
``pacs`` destination, ``--set destinations.pacs.port=``), plus ``--set node.quiet_seconds=2`` to keep the
test short.  The XA study is the README's ``cardionode sample xa``; sent by dcmtk ``storescu``, it must
come back as a SYNTAX SR at a dcmtk ``storescp``."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
import requests

from tests.support.peers import StoreSCP, echo, free_port, storescu, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "conf" / "node.yaml"
#: The console script pip installed next to this interpreter (.venv/bin/cardionode).
CONSOLE = Path(sys.executable).parent / "cardionode"


def console_env() -> dict[str, str]:
    """The environment for the console script: this checkout's code first (an editable install is the same)."""
    extra = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONPATH=str(ROOT) + (os.pathsep + extra if extra else ""))


def require_console() -> str:
    assert CONSOLE.is_file(), f"{CONSOLE} is missing: install the package (pip install -e .) as the README says"
    return str(CONSOLE)


def test_shipped_config_from_a_fresh_working_directory_delivers_the_sr(tmp_path: Path) -> None:
    console = require_console()
    work = tmp_path / "work"  # the user's working directory: ./var of the shipped config lands here
    work.mkdir()
    sample = subprocess.run([console, "sample", "xa"], cwd=work, env=console_env(), capture_output=True, text=True,
                            timeout=120)
    assert sample.returncode == 0, sample.stderr
    study_uid = json.loads(sample.stdout)["study_uid"]
    files = sorted((work / "sample-xa").iterdir())
    assert len(files) >= 2 and all(pydicom.dcmread(f, stop_before_pixels=True).Modality == "XA" for f in files)
    port, http_port = free_port(), free_port()
    with StoreSCP(tmp_path / "pacs", ae_title="PACS") as pacs:
        log_path = tmp_path / "node.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [console, "serve", "--config", str(SHIPPED), "--port", str(port), "--http-port", str(http_port),
                 "--set", f"destinations.pacs.port={pacs.port}", "--set", "node.quiet_seconds=2"],
                cwd=work, env=console_env(), stdout=log, stderr=subprocess.STDOUT)
        try:
            assert wait_for(lambda: proc.poll() is not None or echo(port, "CARDIONODE", timeout=2), 60, 0.3)
            assert proc.poll() is None, log_path.read_text()[-3000:]
            sent = storescu(port, files, calling_ae="MODALITY")
            assert sent.returncode == 0, sent.stdout[-2000:] + sent.stderr[-2000:]
            arrived = wait_for(lambda: "SR" in {d.Modality for d in pacs.received()}, 120, interval=1.0)
            status = subprocess.run([console, "status", "--config", str(SHIPPED), "--json", "--no-models"],
                                    cwd=work, env=console_env(), capture_output=True, text=True, timeout=60)
            assert arrived, f"no SR at the PACS; status: {status.stdout[-3000:]} log: {log_path.read_text()[-3000:]}"
            health = requests.get(f"http://127.0.0.1:{http_port}/healthz", timeout=5)
        finally:
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(60)
    assert rc == 0, log_path.read_text()[-3000:]
    sr = next(d for d in pacs.received() if d.Modality == "SR")
    assert str(sr.StudyInstanceUID) == study_uid
    assert (work / "var" / "cardionode.sqlite3").is_file()  # ./var is relative to the working directory
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert [j["state"] for j in data["jobs"]] == ["done"]
    assert data["node"]["storage_dir"] == str(work / "var")
    assert health.status_code == 200 and health.json()["ready"] is True
    # start-up speaks once about execution providers, not twice per model
    log = log_path.read_text().splitlines()
    assert not [line for line in log if "\x1b[" in line or "color_message" in line]  # plain text log lines
    assert [line for line in log if " WARNING " in line or " ERROR " in line] == []
    providers = [line for line in log if "execution providers: " in line]
    assert len(providers) == 1 and "providers in this build: " in providers[0] and "models run on cpu" in providers[0]
    ready = [line for line in log if "models ready: " in line]
    assert len(ready) == 1 and all(f"{m} on cpu" in ready[0] for m in ("syntax-artery", "calcium-unet2d", "myops-unet"))
