"""Options of the SYNTAX pipeline (config section ``pipelines: {syntax: {...}}``), validated here."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from pipelines.base import PipelineInputError

__all__ = ["SyntaxOptions", "OptionsError"]

PREFIX = "pipelines.syntax"


class OptionsError(PipelineInputError):
    """A syntax option is invalid; the message names the key."""


@dataclasses.dataclass(frozen=True)
class SyntaxOptions:
    """``model_prefix``-{left,right}-fold{k} for k in ``folds`` and ``artery_model`` must be installed.

    ``left_max`` / ``right_min`` (None: from the artery model's manifest, 0.10 / 0.90) route a cine by
    the classifier's probability of "right"; cines in between are excluded as "other".
    ``calibrate``: apply each fold's a*(L+R)+b (manifest ``calibration``) before averaging the folds.
    ``threshold``: the high-SYNTAX finding is total > threshold.
    ``allow_mixed_versions``: fold models of different versions (e.g. one re-exported fold beside the
    bundled ones) are refused unless this is true; then the SR lists each fold with its version.
    """

    model_prefix: str = "syntax"
    artery_model: str = "syntax-artery"
    folds: tuple[int, ...] = (0, 1, 2, 3, 4)
    left_max: float | None = None
    right_min: float | None = None
    calibrate: bool = True
    threshold: float = 22.0
    max_views: int = 16
    min_frames: int = 2
    modalities: tuple[str, ...] = ("XA",)
    summary_image: bool = True
    allow_mixed_versions: bool = False
    series_number_sr: int = 9201
    series_number_summary: int = 9202

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None) -> "SyntaxOptions":
        raw = dict(raw or {})
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - fields)
        if unknown:
            raise OptionsError(f"{PREFIX}.{unknown[0]}: unknown option (allowed: {', '.join(sorted(fields))})")
        kw: dict[str, Any] = {}
        for key, value in raw.items():
            path = f"{PREFIX}.{key}"
            if key in ("model_prefix", "artery_model"):
                if not isinstance(value, str) or not value:
                    raise OptionsError(f"{path}: expected a non-empty string, got {value!r}")
                kw[key] = value
            elif key in ("calibrate", "summary_image", "allow_mixed_versions"):
                if not isinstance(value, bool):
                    raise OptionsError(f"{path}: expected true or false, got {value!r}")
                kw[key] = value
            elif key == "folds":
                if not isinstance(value, (list, tuple)) or not value or not all(
                        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
                    raise OptionsError(f"{path}: expected a non-empty list of fold numbers, got {value!r}")
                kw[key] = tuple(dict.fromkeys(value))
            elif key == "modalities":
                if isinstance(value, str):
                    value = [value]
                if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) and v for v in value):
                    raise OptionsError(f"{path}: expected a list of modalities, got {value!r}")
                kw[key] = tuple(v.upper() for v in value)
            elif key in ("max_views", "min_frames", "series_number_sr", "series_number_summary"):
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise OptionsError(f"{path}: expected a positive integer, got {value!r}")
                kw[key] = value
            else:  # left_max, right_min, threshold
                if value is None and key != "threshold":
                    kw[key] = None
                    continue
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise OptionsError(f"{path}: expected a number, got {value!r}")
                kw[key] = float(value)
        opts = cls(**kw)
        for key in ("left_max", "right_min"):
            v = getattr(opts, key)
            if v is not None and not 0.0 <= v <= 1.0:
                raise OptionsError(f"{PREFIX}.{key}: must lie in 0..1, got {v}")
        if opts.left_max is not None and opts.right_min is not None and opts.left_max >= opts.right_min:
            raise OptionsError(f"{PREFIX}: left_max ({opts.left_max}) must be below right_min ({opts.right_min})")
        if opts.threshold < 0:
            raise OptionsError(f"{PREFIX}.threshold: must be >= 0, got {opts.threshold}")
        return opts
