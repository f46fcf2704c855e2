"""The layering the imports must keep, read from the source with :mod:`ast` (nothing is imported).

- ``pipelines/`` never imports ``node/``: pipelines run inside the node, in a worker or under Ray, and
  are tested without it; the node depends on the pipeline contract, not the other way round.
- The model store's settings (``ModelsSection``) live with the store in ``pipelines/runtime/settings.py``:
  benchmarks, training and export tools build a store without importing the node for it, and the
  settings module imports nothing heavy, so that loading the node's configuration never loads onnxruntime.
- ``synth/`` (the synthetic DICOM writers tests, benchmarks, training and ``cardionode sample`` share)
  imports neither torch nor ``training/``: it is part of the base install.
- ``training/`` has no import circle: a training command and its evaluation share a third module
  instead of importing each other (imports inside functions count: they are circles all the same).
- ``node/``, ``configschema/``, ``synth/`` and ``export/`` have no import circle either.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def module_name(path: Path) -> str:
    """``training/syntax/train.py`` -> ``training.syntax.train``; a package's ``__init__.py`` -> the package."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of the file, relative imports made absolute.

    ``from a.b import c`` yields ``a.b`` and ``a.b.c`` (``c`` may be a module or a name in ``a.b``)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return found


def import_graph(package: str) -> dict[str, set[str]]:
    """Module -> the modules of the same top-level package it imports (only those that exist as files)."""
    modules = {module_name(p): p for p in sorted((ROOT / package).rglob("*.py"))}
    return {name: {m for m in imported_modules(path) if m in modules and m != name}
            for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_reports_each_circle_once() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_pipelines_never_import_the_node() -> None:
    offenders = {
        module_name(path): sorted(m for m in imported_modules(path) if m == "node" or m.startswith("node."))
        for path in sorted((ROOT / "pipelines").rglob("*.py"))
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_dicom_synthesiser_needs_neither_torch_nor_training() -> None:
    files = sorted((ROOT / "synth").rglob("*.py"))
    assert any(p.name == "dicom.py" for p in files)  # the walk found the files
    forbidden = ("torch", "torchvision", "training")
    offenders = {
        module_name(path): sorted(m for m in imported_modules(path) if m.split(".")[0] in forbidden)
        for path in files
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def names_imported_from(path: Path, module: str) -> set[str]:
    """The names ``path`` takes with ``from <module> import ...``, at any depth of the file."""
    return {alias.name for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == module
            for alias in node.names}


def test_model_settings_are_taken_from_the_model_store_not_the_node() -> None:
    files = [p for package in ("bench", "training", "export", "pipelines")
             for p in sorted((ROOT / package).rglob("*.py"))]
    assert any(p.name == "inference.py" for p in files)  # the walk found the files
    offenders = [str(p.relative_to(ROOT)) for p in files if "ModelsSection" in names_imported_from(p, "node.config")]
    assert offenders == []


def test_loading_the_configuration_does_not_load_onnxruntime() -> None:
    code = ("import sys, node.config, pipelines.runtime.settings; "
            "print(sorted(m for m in ('onnxruntime', 'torch') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_training_has_no_import_circle() -> None:
    graph = import_graph("training")
    assert "training.syntax.train" in graph and "training.myops.evaluate" in graph  # the walk found the files
    assert cycles(graph) == []


@pytest.mark.parametrize("package", ["node", "configschema", "synth", "export"])
def test_package_has_no_import_circle(package: str) -> None:
    # node/web/context.py and node/config_args.py exist so that the endpoints, the console and the CLI
    # import what they share from below instead of from each other
    graph = import_graph(package)
    assert graph, f"no modules found under {package}/"
    assert cycles(graph) == []
