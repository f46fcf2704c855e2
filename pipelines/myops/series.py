"""Which MR series of a study is the short-axis bSSFP, LGE and T2w stack, across vendors' naming.

Names differ by vendor and site (Siemens ``de_tfl_psir_sax``, GE ``MDE SAX``, Philips ``IR_TFE_SA``;
anonymisers blank them), so every candidate series is scored per sequence from two kinds of evidence:

- **text**: the configured patterns (:data:`.options.DEFAULT_PATTERNS`, replaceable per sequence)
  found in SeriesDescription / ProtocolName / SequenceName: +10;
- **sequence attributes** of its first header (standard DICOM, present whatever the naming):
  LGE = gradient echo with an inversion pulse (ScanningSequence IR, or InversionTime, or ScanOptions
  IR) and a short echo time; T2w = spin echo (ScanningSequence SE) or echo time >= 30 ms; bSSFP =
  gradient echo, steady state (SequenceVariant SS), short TR / TE, no inversion: +6 each, minus 6
  for attributes that contradict the sequence (e.g. a long TE for LGE).

Series that cannot be a short-axis stack score nothing: fewer than 3 images, images not parallel
(three-plane localisers), or names of localisers / long-axis views.  The three sequences are then
assigned one-to-one by the highest total score (ties: more images, then the higher SeriesNumber, a
repeat).  A sequence whose best score is not positive is missing: :class:`PipelineInputError` names
it and lists the study's series with the evidence seen.
"""
from __future__ import annotations

import itertools
import re
from typing import Any, Mapping, Sequence

import numpy as np
from pydicom.dataset import Dataset

from pipelines.base import PipelineInputError, SeriesView, StudyView
from pipelines.imaging.select import series_text

__all__ = ["SequenceEvidence", "evidence", "score", "identify_series", "NOT_A_STACK"]

#: names of series that are never the short-axis stack (localisers, long-axis views)
NOT_A_STACK = (r"locali[sz]er", r"\bscout\b", r"survey", r"3.?plane", r"\b[234]\s?-?ch\b", r"\bLAX\b", r"LVOT",
               r"long.?axis", r"\bRVOT\b", r"\bmap\b", r"\bT1.?map", r"\bmolli\b", r"\bshmolli\b")

_TEXT_SCORE = 10.0
_TAG_SCORE = 6.0
_SEQUENCES = ("lge", "t2", "bssfp")


def _multi(value: Any) -> set[str]:
    if value is None or value == "":
        return set()
    if isinstance(value, str):
        return {v.strip().upper() for v in value.split("\\") if v.strip()}
    try:
        return {str(v).strip().upper() for v in value if str(v).strip()}
    except TypeError:
        return {str(value).strip().upper()}


def _float(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) else None


class SequenceEvidence:
    """What the standard sequence attributes of one series say (None: attribute absent)."""

    def __init__(self, header: Dataset) -> None:
        self.scanning = _multi(header.get("ScanningSequence"))
        self.variant = _multi(header.get("SequenceVariant"))
        self.options = _multi(header.get("ScanOptions"))
        self.te = _float(header.get("EchoTime"))
        self.tr = _float(header.get("RepetitionTime"))
        self.ti = _float(header.get("InversionTime"))

    @property
    def inversion(self) -> bool:
        return "IR" in self.scanning or (self.ti is not None and self.ti > 0) or \
            any(o == "IR" or o.startswith("IR_") for o in self.options)

    @property
    def spin_echo(self) -> bool:
        return "SE" in self.scanning

    @property
    def gradient_echo(self) -> bool:
        return "GR" in self.scanning

    def describe(self) -> str:
        parts = []
        if self.scanning:
            parts.append("ScanningSequence " + "\\".join(sorted(self.scanning)))
        if self.variant:
            parts.append("SequenceVariant " + "\\".join(sorted(self.variant)))
        for name, v in (("TE", self.te), ("TR", self.tr), ("TI", self.ti)):
            if v is not None:
                parts.append(f"{name} {v:g} ms")
        return ", ".join(parts) or "no sequence attributes"


def evidence(series: SeriesView) -> SequenceEvidence | None:
    try:
        return SequenceEvidence(series.first_header)
    except Exception:  # unreadable first header: text only
        return None


def _tag_score(seq: str, e: SequenceEvidence | None) -> float:
    if e is None:
        return 0.0
    long_te = e.te is not None and e.te >= 30.0
    short_te = e.te is not None and e.te < 10.0
    if seq == "lge":
        if e.inversion and (e.gradient_echo or short_te) and not long_te and not e.spin_echo:
            return _TAG_SCORE
        return -_TAG_SCORE if (long_te or e.spin_echo) else 0.0
    if seq == "t2":
        if e.spin_echo or long_te:
            return _TAG_SCORE
        return -_TAG_SCORE if (short_te and e.gradient_echo) else 0.0
    # bssfp: steady-state gradient echo without inversion, short TR
    if e.gradient_echo and not e.inversion and not long_te and ("SS" in e.variant or (e.tr is not None and e.tr < 6.0)):
        return _TAG_SCORE
    return -_TAG_SCORE if (e.inversion or e.spin_echo or long_te) else 0.0


def _is_stack(series: SeriesView) -> bool:
    """At least 3 images, all in parallel planes (localisers and single long-axis slices are not)."""
    if len(series) < 3:
        return False
    try:
        orients = {tuple(np.round(np.asarray(h.ImageOrientationPatient, dtype=float), 2)) for h in series.headers()}
    except Exception:  # no geometry: let the loader report it if the series is chosen
        return True
    if len(orients) == 1:
        return True
    normals = [np.cross(np.asarray(o[:3]), np.asarray(o[3:])) for o in orients]
    return all(abs(float(n @ normals[0])) > 0.99 for n in normals)


def _search(patterns: Sequence[str], text: str) -> bool:
    """Any pattern in ``text``, also with underscores read as spaces (``de_tfl_psir`` has the word DE)."""
    spaced = text.replace("_", " ")
    return any(re.search(p, t, re.IGNORECASE) for p in patterns for t in (text, spaced))


def score(series: SeriesView, seq: str, patterns: Sequence[str]) -> float:
    """Evidence that ``series`` is the short-axis stack of ``seq`` (not positive: it is not)."""
    if series.modality.upper() != "MR":
        return 0.0
    text = series_text(series)
    if _search(NOT_A_STACK, text):
        return 0.0
    s = _TEXT_SCORE if _search(patterns, text) else 0.0
    s += _tag_score(seq, evidence(series))
    if s <= 0 or not _is_stack(series):
        return 0.0
    return s


def identify_series(study: StudyView, patterns: Mapping[str, Sequence[str]], *,
                    allow_missing: bool = False) -> dict[str, SeriesView]:
    """One series per sequence (``lge``, ``t2``, ``bssfp``), assigned one-to-one by evidence.

    ``allow_missing``: return what was found when at least one sequence is there (the caller reports
    the missing ones); with none, or without it, a missing sequence raises."""
    candidates = [s for s in study.series if s.modality.upper() == "MR"]
    scores = {seq: {s.series_instance_uid: score(s, seq, patterns[seq]) for s in candidates} for seq in _SEQUENCES}
    best: tuple[tuple[int, float, int, int], tuple[SeriesView | None, ...]] | None = None
    options: list[SeriesView | None] = [None, *candidates]
    for combo in itertools.product(options, repeat=len(_SEQUENCES)):
        picked = [c for c in combo if c is not None]
        if len({c.series_instance_uid for c in picked}) != len(picked):
            continue
        if any(c is not None and scores[seq][c.series_instance_uid] <= 0 for seq, c in zip(_SEQUENCES, combo)):
            continue
        key = (len(picked), sum(scores[seq][c.series_instance_uid] for seq, c in zip(_SEQUENCES, combo) if c),
               sum(len(c) for c in picked), sum(c.series_number or 0 for c in picked))
        if best is None or key > best[0]:
            best = (key, combo)
    chosen = {seq: c for seq, c in zip(_SEQUENCES, best[1]) if c is not None} if best else {}
    missing = [seq for seq in _SEQUENCES if seq not in chosen]
    if missing and not (allow_missing and chosen):
        found = "; ".join(
            f"#{s.series_number if s.series_number is not None else '?'} '{series_text(s)}' ({len(s)} images; "
            f"{ev.describe() if (ev := evidence(s)) else 'unreadable header'})" for s in candidates) or "no MR series"
        wanted = ", ".join(f"{m} (patterns {list(patterns[m])} or its sequence attributes)" for m in missing)
        raise PipelineInputError(f"missing series: {wanted}. Study has: {found}")
    return chosen
