"""Pieces shared by the SR, SEG and summary-image builders."""
from __future__ import annotations

import copy
import functools
from importlib import metadata
from typing import Sequence

import highdicom as hd
from pydicom.dataset import Dataset

__all__ = ["MANUFACTURER", "software_version", "fill_type2", "new_uid", "RESEARCH_DISCLAIMER", "PHANTOM_DISCLAIMER",
           "TYPE2_ATTRIBUTES", "shallow_copy"]

MANUFACTURER = "CardioNode"
#: on every output of every model
RESEARCH_DISCLAIMER = "research use only - not for clinical use"
#: in addition, on every output of a model trained on synthetic phantoms
PHANTOM_DISCLAIMER = "trained on synthetic phantoms - not for clinical use"

#: Type 2 patient/study attributes highdicom copies from the sources and refuses to build without.
TYPE2_ATTRIBUTES = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyID",
    "ReferringPhysicianName",
)


@functools.cache
def software_version() -> str:
    """The installed cardionode package version (``0.0.0+unknown`` from a bare checkout)."""
    try:
        return metadata.version("cardionode")
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"


def fill_type2(sources: Sequence[Dataset]) -> list[Dataset]:
    """``sources`` with the first dataset replaced by a shallow copy whose missing Type 2
    patient/study attributes are set empty.

    highdicom takes patient and study attributes from the first source only, so only that one
    is copied (copying 600 CT headers costs ~0.5 s).  The originals are not modified.
    """
    out = list(sources)
    if not out:
        return out
    first = out[0]
    missing = [a for a in TYPE2_ATTRIBUTES if a not in first or first[a].value is None]
    if missing:
        c = shallow_copy(first)
        for attr in missing:
            setattr(c, attr, "")
        out[0] = c
    return out


def shallow_copy(ds: Dataset) -> Dataset:
    """A new Dataset sharing the element objects of ``ds`` (adding/removing elements on it does
    not touch ``ds``; ``copy.copy`` would share the element dict)."""
    c = Dataset(dict(ds.items()))
    if hasattr(ds, "file_meta"):
        c.file_meta = copy.copy(ds.file_meta)
    for attr in ("filename", "preamble"):
        if getattr(ds, attr, None) is not None:
            setattr(c, attr, getattr(ds, attr))
    return c


def new_uid() -> str:
    return str(hd.UID())


#: room left in a 64-character SeriesDescription after the shortest research-use marker
_MARKER = len(" - NOT FOR CLINICAL USE")


def keep_flag(text: str, flag: str, limit: int = 64) -> str:
    """``text + flag`` cut so that ``flag`` (" - NOT ASSESSABLE") and the research-use marker that
    :meth:`AlgorithmIdentity.describe` appends both survive the 64-character limit: a PACS list shows
    "NOT ASSESSABLE" whole, never "NOT ASSESSABL"."""
    if not flag:
        return text
    room = limit - _MARKER - len(flag)
    if len(text) > room:
        cut = text[:room + 1]
        text = cut.rsplit(" ", 1)[0] if " " in cut else text[:room]
    return text.rstrip(" -") + flag
