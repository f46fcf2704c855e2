"""ruff over the whole tree (120-character lines included) and strict mypy over node/, configschema, pipelines/ and
synth/ (pyproject.toml holds both configurations).
Both come with the test extra (setup.cfg); without them the test skips and says how to install them."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    if importlib.util.find_spec(tool) is None:
        pytest.skip(f"{tool} is not installed: pip install -e '.[test]'")
    return subprocess.run([sys.executable, "-m", tool, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_ruff_finds_nothing() -> None:
    r = _run("ruff", "check", "--no-cache", ".")
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_node_the_config_loader_and_the_pipelines_are_strictly_typed() -> None:
    # the listed paths are reported; modules they import from elsewhere (training/) are read, not reported
    r = _run("mypy", "--no-incremental", "--cache-dir", "/dev/null", "--follow-imports=silent",
             "node",
             "configschema", "pipelines", "synth")
    assert r.returncode == 0, r.stdout + r.stderr
