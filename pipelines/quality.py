"""Why a result, or a part of it, could not be assessed: one small typed record for every pipeline.

A pipeline that finds it cannot assess something (no usable cine of the right coronary system, a
series too thick to score, a sequence missing) does not report a number for it.  It creates a
:class:`QualityIssue` and passes it to the output builders (:mod:`pipelines.outputs`), which render
"not assessable: <reason>" in every output the same way:

- SR: a coded qualitative evaluation (Assessability = Not assessable), the issue code and the
  reason text -- in the measurement group named by ``scope``, or in the report's "Qualitative
  Evaluations" container for the whole result;
- summary image: a "NOT ASSESSABLE" line with the reason (and the title marked for the whole result);
- SEG: the series description, content description and algorithm parameters.

``scope`` is :data:`RESULT` (nothing of the result can be assessed) or the name of one part: the
``tracking_id`` of an SR measurement group, which is also the name the summary image and the SEG
show for it.  The builders refuse a scope that names no part they were given.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Iterable, Sequence

__all__ = ["RESULT", "QualityIssue", "issues_for", "whole_result_issues", "check_scopes"]

#: ``scope`` of an issue that makes the whole result not assessable.
RESULT = "result"

_CODE = re.compile(r"^[A-Z0-9][A-Z0-9-]{0,15}$")


@dataclasses.dataclass(frozen=True)
class QualityIssue:
    """One reason why something could not be assessed.

    ``code``: short, stable, machine-readable (1-16 characters of A-Z, 0-9 and '-'; written as a
    code value of the CardioNode private coding scheme), e.g. ``"NO-CINE"``.
    ``message``: the reason for a person, one sentence, e.g. "no cine of the right coronary system
    could be analysed".
    ``scope``: :data:`RESULT` or the name of the part that is not assessable (see the module doc).
    """

    code: str
    message: str
    scope: str = RESULT

    def __post_init__(self) -> None:
        if not _CODE.match(self.code):
            raise ValueError(f"quality issue code {self.code!r}: 1-16 characters of A-Z, 0-9 and '-', "
                             f"starting with a letter or digit")
        if not self.message.strip():
            raise ValueError(f"quality issue {self.code}: empty message")
        if not self.scope.strip():
            raise ValueError(f"quality issue {self.code}: empty scope")

    @property
    def is_whole_result(self) -> bool:
        return self.scope == RESULT

    def describe(self) -> str:
        """``"not assessable: <message>"`` (whole result) or ``"<scope> not assessable: <message>"``."""
        head = "not assessable" if self.is_whole_result else f"{self.scope} not assessable"
        return f"{head}: {self.message}"

    def as_dict(self) -> dict[str, str]:
        """For job summaries and logs."""
        return {"code": self.code, "message": self.message, "scope": self.scope}


def issues_for(issues: Iterable[QualityIssue], scope: str) -> list[QualityIssue]:
    """The issues that concern ``scope`` (not including whole-result issues)."""
    return [i for i in issues if i.scope == scope]


def whole_result_issues(issues: Iterable[QualityIssue]) -> list[QualityIssue]:
    return [i for i in issues if i.is_whole_result]


def check_scopes(issues: Sequence[QualityIssue], parts: Iterable[str], where: str) -> None:
    """Raise ValueError for an issue whose scope is neither RESULT nor one of ``parts``."""
    known = set(parts)
    unknown = [i for i in issues if not i.is_whole_result and i.scope not in known]
    if unknown:
        raise ValueError(f"{where}: quality issue scope(s) {sorted({i.scope for i in unknown})} name no part; "
                         f"known: {sorted(known)} or {RESULT!r}")
