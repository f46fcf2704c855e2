"""Which onnxruntime the node runs on, as a user checks it: ``cardionode models list`` names the installed
build, its execution providers and the provider of each model; two onnxruntime distributions installed side
by side (``onnxruntime`` + ``onnxruntime-gpu``, which overwrite each other's ``onnxruntime/`` files) are
refused by ``models list`` and ``serve`` with one line saying how to keep one.

No GPU here: the second distribution is its installed metadata (a ``*.dist-info`` with METADATA and a
RECORD listing ``onnxruntime/__init__.py``, what pip leaves in site-packages), on PYTHONPATH; that is
exactly what the check reads.  The GPU path itself is checked as README "GPU install" says."""
from __future__ import annotations

import importlib.metadata
import os
import subprocess
from pathlib import Path

import pytest

from pipelines.runtime import bundled_models_dir
from tests.support.peers import free_port
from tests.test_quickstart import SHIPPED, console_env, require_console

pytestmark = pytest.mark.integration


def _run(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([require_console(), *args], cwd=cwd, env=env or console_env(), capture_output=True,
                          text=True, timeout=180)


def test_models_list_names_the_build_and_the_provider_of_each_model(tmp_path: Path) -> None:
    r = _run(tmp_path, "models", "list", "--config", str(SHIPPED))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    version = importlib.metadata.version("onnxruntime")
    assert lines[0].startswith(f"onnxruntime {version}: providers in this build: ") and "cpu" in lines[0], lines[0]
    assert "models run on cpu" in lines[0] and "tensorrt, cuda not in this build" in lines[0]
    rows = {line.split()[0]: line.split() for line in lines[2:] if line and not line.startswith(" ")}
    bundled = bundled_models_dir()
    assert bundled is not None
    names = {p.name for p in bundled.iterdir() if (p / "manifest.json").is_file()}
    assert set(rows) == names and len(names) >= 13
    assert {row[2] for row in rows.values()} == {"cpu"} and {row[3] for row in rows.values()} == {"ok"}


def _fake_second_distribution(site: Path, name: str = "onnxruntime_gpu", version: str = "1.22.0") -> None:
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: {version}\n")
    (info / "RECORD").write_text(f"onnxruntime/__init__.py,,\n{info.name}/METADATA,,\n{info.name}/RECORD,,\n")


def test_two_onnxruntime_distributions_side_by_side_are_refused(tmp_path: Path) -> None:
    site = tmp_path / "site"
    _fake_second_distribution(site)
    env = console_env()
    env["PYTHONPATH"] = env["PYTHONPATH"] + os.pathsep + str(site)
    cpu = f"onnxruntime {importlib.metadata.version('onnxruntime')}"

    r = _run(tmp_path, "models", "list", "--config", str(SHIPPED), "--no-load", env=env)
    assert r.returncode == 1
    errors = r.stderr.strip().splitlines()
    assert len(errors) == 1
    assert errors[0].startswith(f"error: {cpu} and onnxruntime-gpu 1.22.0 are installed side by side")
    assert "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu" in errors[0]

    r = _run(tmp_path, "serve", "--config", str(SHIPPED), "--port", str(free_port()), "--http-port", str(free_port()),
             env=env)
    out = (r.stdout + r.stderr).strip().splitlines()
    assert r.returncode == 1 and len(out) == 1, out
    assert out[0].startswith(f"error: {cpu} and onnxruntime-gpu 1.22.0 are installed side by side"), out[0]
    assert not (tmp_path / "var").exists() or not any((tmp_path / "var").iterdir())
