"""Measured values against a manifest's ``input_domain`` / ``output_domain``: one QualityIssue per value outside.

Every property a manifest may bound is declared once in :data:`CHECKS` with its stable issue code
and the words used in the reason.  A manifest that bounds a property the pipeline does not measure
is a configuration error (:class:`DomainCheckError`, the job fails naming it): a check silently
skipped would look like a check passed.  A property the pipeline measures but cannot read on this
study (a tag missing) is not a violation; it is listed as "not recorded" in the report's notes.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from pipelines.base import PipelineInputError
from pipelines.quality import RESULT, QualityIssue
from pipelines.runtime.manifest import DomainRange

__all__ = ["Check", "CHECKS", "Outcome", "DomainCheckError", "check", "describe_value"]


class DomainCheckError(PipelineInputError):
    """A model's manifest bounds a property this pipeline does not measure (or names it wrongly)."""


@dataclasses.dataclass(frozen=True)
class Check:
    """One property that a manifest may bound: its key, issue code and the words of the reason."""

    key: str
    code: str
    what: str
    kind: str  # "input" | "output"
    #: ``required``: the value is a set of things found and ``one_of`` lists what must all be there
    required: bool = False


CHECKS: dict[str, Check] = {c.key: c for c in (
    Check("modality", "IN-MODALITY", "modality", "input"),
    Check("contrast", "IN-CONTRAST", "contrast agent", "input"),
    Check("pixel_spacing_mm", "IN-SPACING", "pixel spacing", "input"),
    Check("slice_thickness_mm", "IN-THICKNESS", "slice thickness", "input"),
    Check("kvp", "IN-KVP", "tube voltage", "input"),
    Check("z_coverage_mm", "IN-COVERAGE", "scan length (first to last slice centre)", "input"),
    Check("field_of_view_mm", "IN-FOV", "in-plane field of view", "input"),
    Check("frames", "IN-FRAMES", "number of frames", "input"),
    Check("matrix", "IN-MATRIX", "image matrix", "input"),
    Check("sequences", "IN-SEQUENCE", "MR sequences", "input", required=True),
    Check("slices", "IN-SLICES", "number of slices", "input"),
    Check("low_confidence_fraction", "OUT-LOWCONF", "fraction of low-confidence foreground", "output"),
    Check("fold_spread", "OUT-DISAGREE", "disagreement between the ensemble members (standard deviation)",
          "output"),
    Check("myocardium_ml", "OUT-VOLUME", "myocardial volume", "output"),
)}


def describe_value(value: Any, rng: DomainRange) -> str:
    """``0.7 mm``, ``CT``, ``512 x 512`` -- the value as the reason shows it (unit from the range)."""
    if isinstance(value, float):
        text = f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}".rstrip("0").rstrip(".")
    else:
        text = str(value)
    return f"{text} {rng.unit}" if rng.unit and not rng.one_of else text


@dataclasses.dataclass(frozen=True)
class Outcome:
    """The issues found plus, for the report's notes, one line per property checked or not recorded."""

    issues: tuple[QualityIssue, ...]
    notes: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.issues


def _violations(chk: Check, values: Sequence[Any], rng: DomainRange) -> list[Any]:
    if chk.required:
        return [v for v in rng.one_of if v not in values]
    return [v for v in values if rng.violation(v) is not None]


def check(measured: Mapping[str, Any], domain: Mapping[str, DomainRange], *, model: str, kind: str,
          scope: str = RESULT, subject: str = "") -> Outcome:
    """Check ``measured`` (property -> value, a list of values, or None when not recorded) against ``domain``.

    Only properties that ``domain`` bounds are checked; ``measured`` must hold every one of them
    (else :class:`DomainCheckError`).  A list is checked value by value (e.g. the pixel spacing of
    each MR series); for a ``required`` property (MR sequences) the list is what was found and every
    ``one_of`` entry must be in it.  ``subject`` prefixes the reason ("cine 1.2.3: ...").
    """
    issues: list[QualityIssue] = []
    notes: list[str] = []
    for key, rng in domain.items():
        chk = CHECKS.get(key)
        if chk is None or chk.kind != kind:
            raise DomainCheckError(f"model {model}: {kind}_domain bounds {key!r}, which CardioNode does not check "
                                   f"(known {kind} properties: "
                                   f"{', '.join(k for k, c in CHECKS.items() if c.kind == kind)})")
        if key not in measured:
            raise DomainCheckError(f"model {model}: {kind}_domain bounds {key!r}, which this pipeline does not "
                                   f"measure (it measures: {', '.join(sorted(measured)) or 'nothing'})")
        value = measured[key]
        if value is None:
            notes.append(f"{chk.what}: not recorded, not checked (accepted {rng.describe()})")
            continue
        values = list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]
        bad = _violations(chk, values, rng)
        shown = ", ".join(describe_value(v, rng) for v in values) or "none"
        if not bad:
            notes.append(f"{chk.what} {shown}: within {rng.describe()}")
            continue
        head = f"{subject}: " if subject else ""
        if chk.required:
            reason = (f"{head}{chk.what} found: {shown}; the model {model} needs {', '.join(map(str, rng.one_of))} "
                      f"({', '.join(map(str, bad))} missing)")
        elif rng.one_of:
            reason = (f"{head}{chk.what} {', '.join(describe_value(v, rng) for v in bad)} is not what the model "
                      f"{model} accepts ({', '.join(map(str, rng.one_of))})")
        else:
            reason = (f"{head}{chk.what} {', '.join(describe_value(v, rng) for v in bad)} is outside the range "
                      f"the model {model} accepts ({rng.describe()})")
        issues.append(QualityIssue(chk.code, reason, scope=scope))
        notes.append(f"{chk.what} {shown}: OUTSIDE {rng.describe()}")
    return Outcome(tuple(issues), tuple(notes))
