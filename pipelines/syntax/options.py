"""Options of the SYNTAX pipeline (config section ``pipelines: {syntax: {...}}``) and their rules."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from pipelines.options import OptionsError, parse_options

__all__ = ["SyntaxOptions", "OptionsError"]


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

    def __post_init__(self) -> None:
        object.__setattr__(self, "folds", tuple(dict.fromkeys(self.folds)))  # each fold once, in order
        object.__setattr__(self, "modalities", tuple(m.upper() for m in self.modalities))

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | None) -> "SyntaxOptions":
        """The ``pipelines.syntax`` mapping, validated (:func:`pipelines.options.parse_options`)."""
        return parse_options(cls, raw, "syntax")

    from_mapping = parse

    def validate(self, path: str) -> None:
        for key, name in (("model_prefix", self.model_prefix), ("artery_model", self.artery_model)):
            if not name:
                raise OptionsError(f"{path}.{key}: expected a non-empty string, got {name!r}")
        if not self.folds or any(k < 0 for k in self.folds):
            raise OptionsError(f"{path}.folds: expected a non-empty list of fold numbers, got {list(self.folds)}")
        if not self.modalities or not all(self.modalities):
            raise OptionsError(f"{path}.modalities: expected a list of modalities, got {list(self.modalities)}")
        for key, n in (("max_views", self.max_views), ("min_frames", self.min_frames),
                       ("series_number_sr", self.series_number_sr),
                       ("series_number_summary", self.series_number_summary)):
            if n < 1:
                raise OptionsError(f"{path}.{key}: expected a positive integer, got {n}")
        for key, v in (("left_max", self.left_max), ("right_min", self.right_min)):
            if v is not None and not 0.0 <= v <= 1.0:
                raise OptionsError(f"{path}.{key}: must lie in 0..1, got {v}")
        if self.left_max is not None and self.right_min is not None and self.left_max >= self.right_min:
            raise OptionsError(f"{path}: left_max ({self.left_max}) must be below right_min ({self.right_min})")
        if self.threshold < 0:
            raise OptionsError(f"{path}.threshold: must be >= 0, got {self.threshold}")
