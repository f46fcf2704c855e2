"""Fixtures several test modules share.  Helpers that tests import (peers, the node as a process,
synthetic DICOM) live in tests/support/ and tests/fixtures/; a fixture one module uses stays in it."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from node.state import Connections
from pipelines.runtime import ModelStore, bundled_models_dir
from pipelines.runtime.settings import ModelsSection


@pytest.fixture()
def conns(tmp_path: Path) -> Iterator[Connections]:
    """The node's database in this test's temporary folder (per-thread connections), closed afterwards."""
    c = Connections(tmp_path)
    yield c
    c.close_all()


@pytest.fixture(scope="session")
def bundled_models() -> ModelStore:
    """The bundled phantom-trained models on the CPU provider, without warm-up: one store for the whole
    run, so each model's session is created once however many tests run it."""
    models_dir = bundled_models_dir()
    assert models_dir is not None, "no bundled models: the pipelines/models folder is missing from this checkout"
    return ModelStore([models_dir], ModelsSection(providers=("cpu",), warmup=False))
