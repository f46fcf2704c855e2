"""Reading "not assessable" back from pipeline outputs (SR, summary image, SEG) for the QC tests."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pydicom

from tests.support.peers import dciodvfy_errors
from tests.support.sr_content import walk


def reasons(sr: pydicom.Dataset) -> dict[str, str]:
    """{issue code: full reason} of every "Reason not assessable" item in the SR (the coded meaning is
    cut at 64 characters; the full sentence then follows as a comment)."""
    out: dict[str, str] = {}
    last = None
    for item in walk(sr.ContentSequence):
        name = str(item.ConceptNameCodeSequence[0].CodeValue) if "ConceptNameCodeSequence" in item else ""
        if item.get("ValueType") == "CODE" and name == "NA-REASON":
            last = str(item.ConceptCodeSequence[0].CodeValue)
            out[last] = str(item.ConceptCodeSequence[0].CodeMeaning)
        elif (item.get("ValueType") == "TEXT" and last is not None and out[last]
              and str(item.TextValue).startswith(out[last])):
            out[last] = str(item.TextValue)
    return out


def numbers(sr: pydicom.Dataset) -> list[str]:
    """Meanings of every numeric measurement in the SR's findings (the Image Library's descriptors of
    the source images -- rows, columns, spacing -- are not findings and are left out)."""
    tops = [i for i in sr.ContentSequence if str(i.ConceptNameCodeSequence[0].CodeValue) != "111028"]
    return [str(i.ConceptNameCodeSequence[0].CodeMeaning) for i in walk(tops)
            if i.get("ValueType") == "NUM" and i.get("MeasuredValueSequence")]


def by_modality(datasets: Sequence[pydicom.Dataset]) -> dict[str, pydicom.Dataset]:
    return {str(d.Modality): d for d in datasets}


def save_checked(ds: pydicom.Dataset, path: Path) -> pydicom.Dataset:
    """Write, check with dciodvfy (when installed), read back."""
    ds.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == [], path.name
    return pydicom.dcmread(path)
