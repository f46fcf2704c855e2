"""Reading CardioNode SR content trees in tests: groups by tracking identifier, and the structural
rules viewers rely on (OHIF 3.13 draws groups under "Imaging Measurements" from their image
region and fails on a group there without one)."""
from __future__ import annotations

import dataclasses
from typing import Iterator

import pydicom

IMAGING_MEASUREMENTS, DERIVED, QUALITATIVE = "126010", "126011", "C0034375"


@dataclasses.dataclass
class Group:
    container: str  # code value of the enclosing container
    numbers: dict[str, float | None] = dataclasses.field(default_factory=dict)  # None: no value (qualifier)
    units: dict[str, str] = dataclasses.field(default_factory=dict)
    qualifiers: dict[str, str] = dataclasses.field(default_factory=dict)
    coded: dict[str, str] = dataclasses.field(default_factory=dict)  # concept -> value code (first)
    coded_meaning: dict[str, str] = dataclasses.field(default_factory=dict)
    texts: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # concept meaning -> values
    region: pydicom.Dataset | None = None  # the SCOORD item


def walk(items) -> Iterator[pydicom.Dataset]:
    for item in items:
        yield item
        if "ContentSequence" in item:
            yield from walk(item.ContentSequence)


def _code(item) -> str:
    return str(item.ConceptNameCodeSequence[0].CodeValue) if "ConceptNameCodeSequence" in item else ""


def containers(sr: pydicom.Dataset) -> dict[str, pydicom.Dataset]:
    """Top-level containers of the report by concept code value."""
    return {_code(i): i for i in sr.ContentSequence if i.get("ValueType") == "CONTAINER"}


def groups(sr: pydicom.Dataset) -> dict[str, Group]:
    """{tracking identifier: Group} over every measurement group of the report."""
    out: dict[str, Group] = {}
    for code, container in containers(sr).items():
        for g in container.get("ContentSequence", []):
            if g.get("ValueType") != "CONTAINER" or _code(g) != "125007":
                continue
            tid = next(str(c.TextValue) for c in g.ContentSequence if _code(c) == "112039")
            grp = out[tid] = Group(container=code)
            for it in walk(g.ContentSequence):
                c = _code(it)
                vt = it.get("ValueType")
                if vt == "NUM":
                    mv = it.get("MeasuredValueSequence") or []
                    grp.numbers[c] = float(mv[0].NumericValue) if mv else None
                    if mv:
                        grp.units[c] = str(mv[0].MeasurementUnitsCodeSequence[0].CodeValue)
                    if "NumericValueQualifierCodeSequence" in it:
                        grp.qualifiers[c] = str(it.NumericValueQualifierCodeSequence[0].CodeValue)
                elif vt == "CODE":
                    grp.coded.setdefault(c, str(it.ConceptCodeSequence[0].CodeValue))
                    grp.coded_meaning.setdefault(c, str(it.ConceptCodeSequence[0].CodeMeaning))
                elif vt == "TEXT":
                    grp.texts.setdefault(str(it.ConceptNameCodeSequence[0].CodeMeaning), []).append(str(it.TextValue))
                elif vt == "SCOORD":
                    grp.region = it
    return out


def structure_problems(sr: pydicom.Dataset) -> list[str]:
    """What would break a viewer or a text renderer: a group under "Imaging Measurements" without
    an image region referencing an image, a CONTINUOUS container, a measurement carrying its own
    algorithm identification, or a group with more than one."""
    problems = []
    for item in walk(sr.ContentSequence):
        if item.get("ValueType") == "CONTAINER" and item.get("ContinuityOfContent") != "SEPARATE":
            problems.append(f"container {_code(item)} is {item.get('ContinuityOfContent')}")
        if item.get("ValueType") == "NUM" and any(_code(c) == "111001" for c in item.get("ContentSequence", [])):
            problems.append(f"NUM {_code(item)} has its own algorithm identification")
    for code, container in containers(sr).items():
        for g in container.get("ContentSequence", []):
            if _code(g) != "125007":
                continue
            names = [c for c in g.ContentSequence if _code(c) == "111001"]
            if len(names) != 1:
                problems.append(f"group has {len(names)} algorithm identifications")
            if code == IMAGING_MEASUREMENTS:
                scoords = [c for c in g.ContentSequence if c.get("ValueType") == "SCOORD"]
                if not scoords or "ReferencedSOPSequence" not in scoords[0].ContentSequence[0]:
                    problems.append("group under Imaging Measurements without an image region")
    return problems
