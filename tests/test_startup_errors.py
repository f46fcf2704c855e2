"""Start-up failures of the installed ``cardionode serve`` with the shipped conf/node.yaml: each exits
non-zero with exactly one line naming the cause and the key or flag to change, no traceback (unless
``--debug``), never SIGABRT.  The port case starts a real first node and a second one on its ports,
as a user who runs the start command twice does."""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Callable, Sequence

import pytest
import requests

from pipelines.runtime import bundled_models_dir
from tests.support.peers import echo, free_port, require_binary, wait_for
from tests.test_quickstart import SHIPPED, console_env, require_console

pytestmark = pytest.mark.integration

_PR_CAPBSET_DROP, _CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 24, 1, 2
_NO_CAPS = 97


def _without_dac_override() -> Callable[[], None] | None:
    """For root: drop the capabilities that ignore file modes, so a 0555 folder is read-only to the child."""
    if os.geteuid() != 0:
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def drop() -> None:
        for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
            if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                os._exit(_NO_CAPS)
    return drop


def serve(cwd: Path, *args: str, preexec: Callable[[], None] | None = None, timeout: float = 90,
          ports: tuple[int, int] | None = None) -> subprocess.CompletedProcess:
    """``cardionode serve --config conf/node.yaml`` (shipped) with free ports unless given, plus ``args``."""
    port, http_port = ports or (free_port(), free_port())
    cmd = [require_console(), "serve", "--config", str(SHIPPED), "--port", str(port), "--http-port", str(http_port),
           *args]
    cwd.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(cmd, cwd=cwd, env=console_env(), capture_output=True, text=True, timeout=timeout,
                       preexec_fn=preexec)
    if r.returncode == _NO_CAPS and preexec is not None:
        pytest.skip("cannot drop CAP_DAC_OVERRIDE here: a root process ignores file modes")
    return r


def one_line(r: subprocess.CompletedProcess, rc: int, *fragments: str) -> str:
    """The run failed with ``rc`` and printed exactly one line holding every fragment."""
    out = (r.stdout + r.stderr).strip()
    assert r.returncode == rc, f"rc {r.returncode} (-6 = SIGABRT):\n{out[-3000:]}"
    assert "Traceback" not in out and "terminate called" not in out, out[-3000:]
    lines = out.splitlines()
    assert len(lines) == 1, out[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_second_node_on_the_same_ports_exits_with_one_line_and_the_first_keeps_serving(tmp_path: Path) -> None:
    console = require_console()
    port, http_port = free_port(), free_port()
    first = subprocess.Popen([console, "serve", "--config", str(SHIPPED), "--port", str(port),
                              "--http-port", str(http_port)], cwd=tmp_path, env=console_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: first.poll() is not None or echo(port, "CARDIONODE", timeout=2), 60, 0.3)
        assert first.poll() is None
        # the model warm-up of the first node may still run: the second one must not even start one
        dimse = serve(tmp_path / "second", ports=(port, free_port()))
        one_line(dimse, 1, f"node.port: port {port}", "already in use", "--port")
        http = serve(tmp_path / "third", ports=(free_port(), http_port))
        one_line(http, 1, f"node.http_port: port {http_port}", "already in use", "--http-port")
        debug = subprocess.run([console, "--debug", "serve", "--config", str(SHIPPED), "--port", str(port)],
                               cwd=tmp_path / "second", env=console_env(), capture_output=True, text=True, timeout=90)
        assert debug.returncode == 1 and "Traceback" in debug.stderr and "already in use" in debug.stderr
        assert echo(port, "CARDIONODE") and requests.get(f"http://127.0.0.1:{http_port}/healthz", timeout=5).ok
        assert (tmp_path / "var" / "cardionode.pid").read_text().strip() == str(first.pid)
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(60) == 0


def test_storage_dir_that_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    r = serve(tmp_path, "--set", "node.storage_dir=a-file/var")
    one_line(r, 1, f"node.storage_dir: cannot create {tmp_path / 'a-file' / 'var'}", "node.storage_dir")


def test_storage_dir_that_is_not_writable(tmp_path: Path) -> None:
    storage = tmp_path / "var"
    storage.mkdir()
    storage.chmod(0o555)
    try:
        r = serve(tmp_path, preexec=_without_dac_override())
    finally:
        storage.chmod(0o755)
    one_line(r, 1, f"node.storage_dir: {storage} is not writable", "permission denied", "node.storage_dir")
    assert not any(storage.iterdir())


@pytest.fixture(scope="module")
def cert_and_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("pki")
    subprocess.run([require_binary("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=cardionode", "-keyout", str(d / "node.key"), "-out", str(d / "node.pem")],
                   check=True, capture_output=True, timeout=60)
    return d / "node.pem", d / "node.key"


def _tls(cert: str, key: str) -> Sequence[str]:
    return ("--set", f"node.tls.certificate={cert}", "--set", f"node.tls.private_key={key}")


def test_missing_tls_certificate(tmp_path: Path, cert_and_key: tuple[Path, Path]) -> None:
    r = serve(tmp_path, *_tls("pki/missing.pem", str(cert_and_key[1])))
    one_line(r, 1, f"node.tls.certificate: {tmp_path / 'pki' / 'missing.pem'} does not exist")


def test_unreadable_tls_key(tmp_path: Path, cert_and_key: tuple[Path, Path]) -> None:
    key = tmp_path / "node.key"
    shutil.copy(cert_and_key[1], key)
    key.chmod(0o000)
    r = serve(tmp_path, *_tls(str(cert_and_key[0]), "node.key"), preexec=_without_dac_override())
    one_line(r, 1, f"node.tls.private_key: cannot read {key}", "permission denied")


def test_tls_certificate_that_is_not_pem(tmp_path: Path, cert_and_key: tuple[Path, Path]) -> None:
    (tmp_path / "node.pem").write_text("not a certificate\n")
    r = serve(tmp_path, *_tls("node.pem", str(cert_and_key[1])))
    one_line(r, 1, "node.tls: certificate", "cannot be loaded", "node.tls.certificate")


def test_models_dir_that_does_not_exist(tmp_path: Path) -> None:
    r = serve(tmp_path, "--set", "models.dir=site-models")
    one_line(r, 1, f"models.dir: {tmp_path / 'site-models'} is not a folder")


def test_corrupt_model_is_found_before_any_study(tmp_path: Path) -> None:
    bundled = bundled_models_dir()
    assert bundled is not None
    site = tmp_path / "site-models" / "syntax-artery"
    shutil.copytree(bundled / "syntax-artery", site)
    onnx = site / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[: onnx.stat().st_size // 2])  # a copy cut short
    r = serve(tmp_path, "--set", "models.dir=site-models")
    one_line(r, 1, "no usable model 'syntax-artery'", "sha256 mismatch", "cardionode models reload")


def test_invalid_config_key_and_invalid_yaml(tmp_path: Path) -> None:
    one_line(serve(tmp_path, "--set", "node.prot=1"), 2, "config error: node.prot: unknown key")
    bad = tmp_path / "bad.yaml"
    bad.write_text(SHIPPED.read_text().replace("  port: 11112", "  port: [11112"))
    r = subprocess.run([require_console(), "serve", "--config", str(bad)], cwd=tmp_path, env=console_env(),
                       capture_output=True, text=True, timeout=60)
    one_line(r, 2, f"config error: {bad}: not valid YAML: line")


def test_ray_executor_token_file_that_does_not_exist(tmp_path: Path) -> None:
    r = serve(tmp_path, "--set", "executor.type=ray", "--set", "executor.auth_token_file=ray-token")
    one_line(r, 1, f"executor.auth_token_file: {tmp_path / 'ray-token'} does not exist")
