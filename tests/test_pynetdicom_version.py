"""The DIMSE listener replaces parts of pynetdicom 3.0 (node/ingest/transport.py): another release stops
start-up with one line that says what to install, instead of failing deep inside an association."""
from __future__ import annotations

import pynetdicom
import pytest

from node import startup
from node.ingest.transport import PYNETDICOM_SERIES, PynetdicomVersionError, check_pynetdicom


def test_the_installed_pynetdicom_is_the_supported_series() -> None:
    assert pynetdicom.__version__.startswith(PYNETDICOM_SERIES + ".")
    check_pynetdicom()
    startup.check_dimse_library()


@pytest.mark.parametrize("version", ["3.1.0", "2.1.1", "4.0.0.dev0"])
def test_another_pynetdicom_is_refused_with_what_to_do(version: str) -> None:
    with pytest.raises(PynetdicomVersionError) as err:
        check_pynetdicom(version)
    message = str(err.value)
    assert "\n" not in message
    assert f"pynetdicom {version} is installed" in message
    assert "pip install 'pynetdicom>=3.0,<3.1'" in message and "node/ingest/transport.py" in message


def test_a_patch_release_of_the_series_is_accepted() -> None:
    check_pynetdicom("3.0.9")
