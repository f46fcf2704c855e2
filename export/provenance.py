"""Manifest provenance from what a run recorded and the ``--option`` values of ``cardionode export``.

Shared by every family so that the same options mean the same thing everywhere:

- ``synthetic=true|false``: whether the model is trained on synthetic data.  A checkpoint whose run
  recorded generated training data (a phantom folder with its marker, phantom seeds) is always
  ``synthetic: true``; asking for ``false`` is refused, so the phantom disclaimer cannot disappear.
- ``trained_on=TEXT``, ``notes=TEXT``, ``date=YYYY-MM-DD``, ``code_version=TEXT``.
- ``metrics_file=FILE``: JSON with the held-out metrics (an evaluation report; its ``metrics`` object
  if it has one); otherwise the metrics the run recorded.
The run's record (training data, configuration, code version, how the metrics were computed) goes into
``provenance.training_data``.
"""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, Mapping

from pipelines.runtime.manifest import Provenance

__all__ = ["ProvenanceError", "build_provenance", "parse_bool", "KNOWN_OPTIONS", "DROPPED_METRIC_KEYS"]

KNOWN_OPTIONS = ("synthetic", "trained_on", "notes", "date", "code_version", "metrics_file")
#: bulky per-case keys of evaluation reports that do not belong in a manifest
DROPPED_METRIC_KEYS = ("per_case", "prediction", "prediction_calibrated", "truth", "plots", "lesion_counts")


class ProvenanceError(ValueError):
    """An export option would make the manifest say something the run does not support."""


def parse_bool(text: str | None, key: str) -> bool | None:
    if text is None:
        return None
    t = str(text).strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise ProvenanceError(f"--option {key}={text!r}: expected true or false")


def _metrics_from_file(path: str) -> dict[str, Any]:
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise ProvenanceError(f"--option metrics_file={path}: cannot read JSON ({exc})") from None
    if isinstance(data, Mapping) and isinstance(data.get("metrics"), Mapping):
        data = data["metrics"]
    if not isinstance(data, Mapping):
        raise ProvenanceError(f"--option metrics_file={path}: expected a JSON object of metrics")
    out = {str(k): v for k, v in data.items() if k not in DROPPED_METRIC_KEYS and k != "method"}
    if "method" in data:  # last: the one-line summaries show the first figures, not the explanation
        out["method"] = data["method"]
    return out


def _describe(training_data: Mapping[str, Any]) -> str:
    parts = []
    for s in training_data.get("sources", []):
        cases = s.get("cases")
        n = sum(cases.values()) if isinstance(cases, Mapping) else cases
        parts.append(f"{s.get('layout', 'data')} {Path(str(s.get('path', ''))).name or s.get('path')}"
                     f"{' (generated)' if s.get('generated') else ''}{f', {n} cases' if n is not None else ''}")
    return "; ".join(parts)


def build_provenance(record: Mapping[str, Any] | None, options: Mapping[str, Any], *, default_trained_on: str,
                     default_notes: str = "") -> Provenance:
    """The manifest provenance of one exported model (see the module docstring)."""
    record = dict(record or {})
    data = dict(record.get("training_data") or {})
    generated = bool(data.get("generated"))
    wanted = parse_bool(options.get("synthetic"), "synthetic")
    if generated and wanted is False:
        where = ", ".join(str(s.get("marker") or s.get("generated_because") or s.get("path"))
                          for s in data.get("sources", []) if s.get("generated")) or "phantom data"
        raise ProvenanceError("--option synthetic=false refused: this checkpoint was trained on generated data "
                              f"({where}); its outputs must keep the phantom disclaimer")
    synthetic = generated or bool(wanted)
    trained_on = str(options.get("trained_on") or _describe(data) or default_trained_on)
    if synthetic and not any(w in trained_on.lower() for w in ("synthetic", "phantom")):
        trained_on = f"synthetic phantoms: {trained_on}"
    if options.get("metrics_file"):
        metrics = _metrics_from_file(str(options["metrics_file"]))
    else:
        metrics = {k: v for k, v in dict(record.get("metrics") or {}).items() if k not in DROPPED_METRIC_KEYS}
    method = record.get("metrics_method")
    if method and "method" not in metrics:
        metrics["method"] = method
    if record.get("config") is not None:
        data["training_config"] = record["config"]
    if record.get("run"):
        data["run"] = Path(str(record["run"])).name  # the run folder's name: a shipped manifest holds no machine path
    if record.get("code_version"):
        data["code_version"] = record["code_version"]
    data, metrics = _plain(data), _plain(metrics)
    return Provenance(
        trained_on=trained_on, synthetic=synthetic,
        date=str(options.get("date") or dt.date.today().isoformat()),
        code_version=str(options.get("code_version") or record.get("code_version") or _code_version()),
        metrics=metrics, notes=str(options.get("notes") or default_notes), training_data=data)


def _plain(obj: Any) -> Any:
    """JSON-safe copy (paths and other objects as strings; NaN as null) for the manifest."""
    import math

    def fix(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, Mapping):
            return {str(k): fix(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [fix(x) for x in v]
        return v

    return fix(json.loads(json.dumps(obj, default=str)))


def _code_version() -> str:
    from training.runs.run import code_version

    return code_version()
