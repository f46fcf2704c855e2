"""The spool's header walker (node/dicom_header.py) against pydicom on every DICOM file at hand: pydicom's
own test files and the instances the tests generate (CT in implicit, explicit and deflated little endian, XA cine,
dcmtk-compressed, deflated).  Where pydicom reads a file the walker gives the same identifying values, or
refuses the file for a reason the spool stands by (truncated, malformed File Meta); where pydicom cannot
read a file the walker refuses it too."""
from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_files
from pydicom.uid import DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian

from node.dicom_header import MalformedDatasetError, read_header
from tests.fixtures.studies import write_ct_study
from tests.support.synth import compress, xa_cine

#: pydicom test files pydicom reads but the spool refuses, and why (the words the refusal must hold).
REFUSED = {
    "MR_truncated.dcm": "truncated",            # pixel data shorter than its length: pydicom reads it silently
    "rtplan_truncated.dcm": "truncated",
    "SC_rgb_jpeg.dcm": "invalid VR",            # implicit VR elements in an explicit VR transfer syntax
    "meta_missing_tsyntax.dcm": "Transfer Syntax",
    "no_meta_group_length.dcm": "group length",
}


def _pydicom_files() -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the test files it would download: not used
        return sorted({f for f in get_testdata_files("*") if os.path.isfile(f)})


def _as_pydicom_reads(path: str | Path) -> dict[str, Any]:
    """The identifying values as pydicom gives them (the reference)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, stop_before_pixels=True)

    def text(keyword: str) -> str:
        return str(ds.get(keyword, "") or "")

    def number(keyword: str) -> int | None:
        value = ds.get(keyword)
        try:
            return int(value) if value not in (None, "") else None
        except (TypeError, ValueError):
            return None

    meta = ds.file_meta
    return {
        "transfer_syntax": str(meta.get("TransferSyntaxUID", "")),
        "meta_sop_class": str(meta.get("MediaStorageSOPClassUID", "")),
        "meta_sop_instance": str(meta.get("MediaStorageSOPInstanceUID", "")),
        "sop_class": text("SOPClassUID"), "sop_instance": text("SOPInstanceUID"), "study": text("StudyInstanceUID"),
        "series": text("SeriesInstanceUID"), "modality": text("Modality"),
        "series_description": text("SeriesDescription"),
        "series_number": number("SeriesNumber"), "instance_number": number("InstanceNumber"),
        "size": os.path.getsize(path),
    }


def _identifying(header: Any) -> dict[str, Any]:
    """The header's values but ``facts`` (completeness values, compared in the completion tests)."""
    values = dict(vars(header))
    values.pop("facts", None)
    return values


@pytest.mark.parametrize("path", _pydicom_files(), ids=os.path.basename)
def test_walker_agrees_with_pydicom_on_its_test_files(path: str) -> None:
    name = os.path.basename(path)
    try:
        expected = _as_pydicom_reads(path)
    except Exception:
        expected = None
    if expected is None:
        with pytest.raises(MalformedDatasetError):
            read_header(Path(path))
        return
    if name in REFUSED:
        with pytest.raises(MalformedDatasetError, match=REFUSED[name]):
            read_header(Path(path))
        return
    assert _identifying(read_header(Path(path))) == expected


def test_the_pydicom_files_are_there() -> None:
    files = {os.path.basename(f) for f in _pydicom_files()}
    assert len(files) >= 50 and set(REFUSED) <= files


def _reencoded(path: Path, transfer_syntax: str) -> Path:
    """``path`` rewritten in place in ``transfer_syntax`` (an uncompressed one)."""
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.save_as(path, enforce_file_format=True)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == transfer_syntax
    return path


def _generated(tmp: Path) -> list[Path]:
    files = write_ct_study(tmp / "ct", n=2)
    for ts in (ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian):  # big endian: pydicom's MR_small_bigendian
        files += [_reencoded(path, ts) for path in write_ct_study(tmp / ts, n=1, size=32)]
    files.append(xa_cine(tmp / "xa.dcm", frames=3, size=32))
    for kind in ("jpeg-lossless", "rle"):
        if shutil.which("dcmcjpeg") and shutil.which("dcmcrle"):
            files.append(compress(files[0], tmp / f"{kind}.dcm", kind))
    return files


def test_walker_agrees_with_pydicom_on_the_generated_instances(tmp_path: Path) -> None:
    files = _generated(tmp_path)
    assert len(files) >= 6
    for path in files:
        assert _identifying(read_header(path)) == _as_pydicom_reads(path), path.name


def test_a_truncated_generated_instance_is_refused(tmp_path: Path) -> None:
    path = write_ct_study(tmp_path, n=1)[0]
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(MalformedDatasetError, match="truncated"):
        read_header(path)
