"""The marker file a generator writes into every dataset folder it creates, and how readers find it.

A folder of synthetic phantoms in a published layout (COCA, CardioSyntax v2, MyoPS380) looks like real
data to the readers.  The generators therefore write ``CARDIONODE_GENERATED.json`` at its root; the
readers look for it (in the folder and its parents), training records ``generated: true`` in the run's
training data, and the export refuses to call such a model ``synthetic: false``.
"""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, Mapping

__all__ = ["MARKER", "write_marker", "find_marker", "data_source"]

MARKER = "CARDIONODE_GENERATED.json"


def write_marker(root: str | Path, *, generator: str, layout: str, cases: Any = None,
                 details: Mapping[str, Any] | None = None) -> Path:
    """Write (or replace) the marker at ``root``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    info = {"generated": True, "generator": generator, "layout": layout, "cases": cases,
            "created": dt.datetime.now().isoformat(timespec="seconds"),
            "note": "synthetic phantoms written by CardioNode's generators; not patient data",
            **dict(details or {})}
    path = root / MARKER
    path.write_text(json.dumps(info, indent=1, default=str) + "\n")
    return path


def find_marker(path: str | Path, levels: int = 2) -> tuple[Path, dict[str, Any]] | None:
    """(marker path, content) in ``path`` or up to ``levels`` parents, else None.  An unreadable marker
    still counts as generated (its presence is the signal)."""
    p = Path(path).resolve()
    for folder in [p, *list(p.parents)[:levels]]:
        m = folder / MARKER
        if m.is_file():
            try:
                data = json.loads(m.read_text())
            except (OSError, ValueError):
                data = {"generated": True, "note": "unreadable marker"}
            return m, data if isinstance(data, dict) else {"generated": True}
    return None


def data_source(path: str | Path, layout: str, cases: Mapping[str, int] | int, *,
                content_generated: str | None = None, **extra: Any) -> dict[str, Any]:
    """One ``training_data`` source record: where, which layout, how many cases, whether generated.

    ``content_generated``: a reason found in the data itself (e.g. a phantom manufacturer in the DICOM
    headers) that makes the source generated even without a marker."""
    found = find_marker(path)
    rec: dict[str, Any] = {"path": str(Path(path).resolve()), "layout": layout, "cases": cases,
                           "generated": bool(found or content_generated)}
    if found:
        rec["marker"] = str(found[0])
        rec["generator"] = found[1].get("generator")
    elif content_generated:
        rec["generated_because"] = content_generated
    rec.update(extra)
    return rec
