"""Options of the myops pipeline (config section ``pipelines: {myops: {...}}``) and their rules.

Keys (all optional):

- ``model``: model name in the model store (default ``myops-unet``).
- ``series``: ``{lge|t2|bssfp: [regex, ...]}`` patterns searched case-insensitively in
  SeriesDescription / ProtocolName / SequenceName (underscores also read as spaces); replace the
  defaults per sequence.  They are one kind of evidence: :mod:`.series` also reads the standard
  sequence attributes (ScanningSequence, SequenceVariant, TE / TR / TI), so anonymised or unusual
  names still work.
- ``registration``: true/false (default true); ``deformable``: true/false (default false).
- ``series_number_base``: first SeriesNumber of the outputs (default 900: SEG 900, SR 901, summary 902).
- ``summary_image``: true/false, also send a Secondary Capture with the numbers (default true).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping

from pipelines.imaging import SeriesRule
from pipelines.options import OptionsError, parse_options

__all__ = ["DEFAULT_PATTERNS", "DEFAULT_RULES", "MyopsOptions", "OptionsError", "rules_from"]

#: Default keyword patterns; word boundaries keep e.g. "DE" from matching inside "mode".
DEFAULT_PATTERNS: dict[str, tuple[str, ...]] = {
    "lge": (r"\bLGE\b", r"PSIR", r"\bDE\b", r"\bMDE\b", r"delayed", r"late.?gad", r"late.?enh", r"viability",
            r"\bIR.?TFE\b"),
    "t2": (r"\bT2", r"STIR", r"\bTSE\b", r"\bFSE\b", r"black.?blood", r"\bDB\b", r"\bBB\b"),
    "bssfp": (r"cine", r"SSFP", r"TrueFISP", r"\btrufi\b", r"FIESTA", r"balanced", r"\bs?B.?TFE\b"),
}


def rules_from(patterns: Mapping[str, tuple[str, ...]]) -> dict[str, SeriesRule]:
    return {name: SeriesRule(include=tuple(p), modalities=("MR",)) for name, p in patterns.items()}


DEFAULT_RULES = rules_from(DEFAULT_PATTERNS)

@dataclasses.dataclass(frozen=True)
class MyopsOptions:
    model: str = "myops-unet"
    #: sequence -> patterns, replacing that sequence's defaults (config key ``series``)
    series: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    registration: bool = True
    deformable: bool = False
    series_number_base: int = 900
    summary_image: bool = True

    @property
    def patterns(self) -> dict[str, tuple[str, ...]]:
        """The series patterns in use: the defaults with ``series`` applied."""
        return {**DEFAULT_PATTERNS, **self.series}

    @property
    def rules(self) -> dict[str, SeriesRule]:
        return rules_from(self.patterns)

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | None) -> "MyopsOptions":
        """The ``pipelines.myops`` mapping, validated (:func:`pipelines.options.parse_options`)."""
        return parse_options(cls, raw, "myops")

    def validate(self, path: str) -> None:
        if not self.model.strip():
            raise OptionsError(f"{path}.model: expected a model name, got {self.model!r}")
        if not 1 <= self.series_number_base <= 99990:
            raise OptionsError(f"{path}.series_number_base: expected an integer 1..99990, "
                               f"got {self.series_number_base}")
        for name, patterns in self.series.items():
            if name not in DEFAULT_PATTERNS:
                raise OptionsError(f"{path}.series.{name}: unknown sequence (allowed: {', '.join(DEFAULT_PATTERNS)})")
            if not patterns or not all(patterns):
                raise OptionsError(f"{path}.series.{name}: expected a non-empty list of patterns")
            for p in patterns:
                try:
                    re.compile(p)
                except re.error as exc:
                    raise OptionsError(f"{path}.series.{name}: bad pattern {p!r}: {exc}") from None
