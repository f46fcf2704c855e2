"""Options of the myops pipeline (config section ``pipelines: {myops: {...}}``), validated here.

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
from typing import Any, Mapping

from pipelines.imaging import SeriesRule

__all__ = ["DEFAULT_PATTERNS", "DEFAULT_RULES", "MyopsOptions", "OptionsError", "rules_from"]

#: Default keyword patterns; word boundaries keep e.g. "DE" from matching inside "mode".
DEFAULT_PATTERNS: dict[str, tuple[str, ...]] = {
    "lge": (r"\bLGE\b", r"PSIR", r"\bDE\b", r"\bMDE\b", r"delayed", r"late.?gad", r"late.?enh", r"viability",
            r"\bIR.?TFE\b"),
    "t2": (r"\bT2", r"STIR", r"\bTSE\b", r"\bFSE\b", r"black.?blood", r"\bDB\b", r"\bBB\b"),
    "bssfp": (r"cine", r"SSFP", r"TrueFISP", r"\btrufi\b", r"FIESTA", r"balanced", r"\bs?B.?TFE\b"),
}


class OptionsError(ValueError):
    """A myops option is wrong; the message names the key."""


def rules_from(patterns: Mapping[str, tuple[str, ...]]) -> dict[str, SeriesRule]:
    return {name: SeriesRule(include=tuple(p), modalities=("MR",)) for name, p in patterns.items()}


DEFAULT_RULES = rules_from(DEFAULT_PATTERNS)

_KEYS = ("model", "series", "registration", "deformable", "series_number_base", "summary_image")


@dataclasses.dataclass(frozen=True)
class MyopsOptions:
    model: str = "myops-unet"
    patterns: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=lambda: dict(DEFAULT_PATTERNS))
    registration: bool = True
    deformable: bool = False
    series_number_base: int = 900
    summary_image: bool = True

    @property
    def rules(self) -> dict[str, SeriesRule]:
        return rules_from(self.patterns)

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | None) -> "MyopsOptions":
        raw = dict(raw or {})
        unknown = sorted(set(raw) - set(_KEYS))
        if unknown:
            raise OptionsError(f"pipelines.myops: unknown key(s) {unknown} (allowed: {', '.join(_KEYS)})")
        out: dict[str, Any] = {}
        if "model" in raw:
            if not isinstance(raw["model"], str) or not raw["model"].strip():
                raise OptionsError(f"pipelines.myops.model: expected a model name, got {raw['model']!r}")
            out["model"] = raw["model"]
        for key in ("registration", "deformable", "summary_image"):
            if key in raw:
                if not isinstance(raw[key], bool):
                    raise OptionsError(f"pipelines.myops.{key}: expected true or false, got {raw[key]!r}")
                out[key] = raw[key]
        if "series_number_base" in raw:
            v = raw["series_number_base"]
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 99990:
                raise OptionsError(f"pipelines.myops.series_number_base: expected an integer 1..99990, got {v!r}")
            out["series_number_base"] = v
        if "series" in raw:
            series = raw["series"]
            if not isinstance(series, Mapping):
                raise OptionsError("pipelines.myops.series: expected a mapping {lge|t2|bssfp: [patterns]}")
            patterns = dict(DEFAULT_PATTERNS)
            for name, value in series.items():
                if name not in DEFAULT_PATTERNS:
                    raise OptionsError(f"pipelines.myops.series.{name}: unknown sequence (allowed: lge, t2, bssfp)")
                if isinstance(value, str):
                    value = [value]
                if not isinstance(value, (list, tuple)) or not value or not all(isinstance(p, str) and p for p in value):
                    raise OptionsError(f"pipelines.myops.series.{name}: expected a non-empty list of patterns")
                import re

                for p in value:
                    try:
                        re.compile(p)
                    except re.error as exc:
                        raise OptionsError(f"pipelines.myops.series.{name}: bad pattern {p!r}: {exc}") from exc
                patterns[name] = tuple(value)
            out["patterns"] = patterns
        return cls(**out)


