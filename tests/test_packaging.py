"""The base install (node + pipelines) must work without the ``train`` extra.

A hospital installs ``pip install .``: no torch, torchvision, onnx, nibabel or
pynrrd.  These tests import every node and pipeline module, and run the CLI,
in a subprocess where importing any of those packages fails, so that an
accidental ``import torch`` in the serving path is caught here and not in a
hospital.  They also check that the bundled models ship as package data.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN_ONLY = ("torch", "torchvision", "onnx", "onnxslim", "nibabel", "nrrd", "sklearn", "matplotlib", "tqdm")

_BLOCKER = textwrap.dedent(
    f"""
    import importlib.abc, sys
    BLOCKED = {TRAIN_ONLY!r}
    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{{name}} is in the train extra and must not be needed to serve")
            return None
    sys.meta_path.insert(0, _Block())
    """
)


def _serving_modules() -> list[str]:
    mods = []
    for package in ("node", "pipelines", "synth"):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if parts[-1] == "__main__":
                continue
            mods.append(".".join(parts))
    return mods


def _run_blocked(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _BLOCKER + textwrap.dedent(code)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_every_serving_module_imports_without_the_train_extra() -> None:
    mods = _serving_modules()
    assert "node.service" in mods and "pipelines.calcium.pipeline" in mods
    proc = _run_blocked(
        f"""
        import importlib
        failed = []
        for name in {mods!r}:
            try:
                importlib.import_module(name)
            except Exception as exc:
                failed.append(f"{{name}}: {{type(exc).__name__}}: {{exc}}")
        print("\\n".join(failed))
        raise SystemExit(1 if failed else 0)
        """
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_builtin_pipelines_and_bundled_models_load_without_the_train_extra() -> None:
    proc = _run_blocked(
        """
        import json
        from pipelines.registry import default_registry
        from pipelines.runtime.settings import ModelsSection
        from pipelines.runtime.store import ModelStore
        registry = default_registry()
        for name in ("syntax", "calcium", "myops"):
            registry.create(name)  # the pipeline class imports and instantiates
        store = ModelStore.from_config(ModelsSection(providers=("cpu",), warmup=False))
        loaded = sorted(store.acquire(n).manifest.name for n in store.names())
        print(json.dumps(loaded))
        """
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    shipped = sorted(p.parent.name for p in (ROOT / "pipelines" / "models").glob("*/manifest.json"))
    assert loaded == shipped and shipped, (loaded, shipped)


def test_cli_help_runs_without_the_train_extra() -> None:
    proc = _run_blocked(
        """
        import sys
        from node.cli import main
        sys.argv = ["cardionode", "--help"]
        main()
        """
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "serve" in proc.stdout and "sample" in proc.stdout


def test_sample_studies_are_written_without_the_train_extra(tmp_path: Path) -> None:
    """The README's first study (`cardionode sample xa`), and the CT and MR ones, must work on the base install."""
    proc = _run_blocked(
        f"""
        import sys
        from node.cli import main
        for kind in ("xa", "ct", "mr"):
            if main(["sample", kind, "--out", {str(tmp_path)!r} + "/" + kind]) != 0:
                sys.exit(f"cardionode sample {{kind}} failed")
        """
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(list((tmp_path / "xa").glob("*.dcm"))) >= 2
    assert len(list((tmp_path / "ct").glob("*.dcm"))) >= 2
    assert list((tmp_path / "mr").rglob("*.dcm"))


def test_wheel_ships_bundled_models_and_no_tests(tmp_path: Path) -> None:
    """A non-editable install must carry every bundled model (ONNX + manifest) as package data."""
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                           "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("cardionode-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = [p.relative_to(ROOT).as_posix() for p in (ROOT / "pipelines" / "models").glob("*/*")
               if p.suffix in (".onnx", ".json")]
    assert shipped, "no bundled models in the source tree"
    missing = [p for p in shipped if p not in names]
    assert not missing, f"bundled model files missing from the wheel: {missing}"
    assert not any(n.startswith("tests/") for n in names)
    assert "node/cli.py" in names and "pipelines/runtime/store.py" in names
    assert "configschema/__init__.py" in names and "synth/dicom.py" in names
    templates = [p.relative_to(ROOT).as_posix() for p in (ROOT / "node" / "console" / "templates").glob("*.html")]
    assert templates and not [t for t in templates if t not in names], "console templates missing from the wheel"


def test_training_commands_say_which_extra_is_missing() -> None:
    """Without the train extra, ``cardionode datasets ...`` explains itself instead of 'invalid choice'."""
    proc = _run_blocked(
        """
        import sys
        from node.cli import main
        raise SystemExit(main(["datasets", "coca-stats", "/nonexistent"]))
        """
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "needs the train extra" in proc.stderr and "cardionode[train]" in proc.stderr
