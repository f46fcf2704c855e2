"""Why each configured route matched a study or not, in words an operator reads on the study page."""
from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

from ..config import NodeConfig, RouteMatch

__all__ = ["explain_routes"]


def _series_reason(match: RouteMatch, series: Mapping[str, Any]) -> str | None:
    """None when this series satisfies ``match``, else the first criterion it fails."""
    modality = (series.get("modality") or "").strip()
    if match.modality and modality.upper() not in {m.strip().upper() for m in match.modality}:
        return f"modality {modality or '(none)'} not in {', '.join(match.modality)}"
    sop_classes = [s for s in (series.get("sop_classes") or "").split(",") if s]
    if match.sop_class and not set(sop_classes) & {s.strip() for s in match.sop_class}:
        return f"SOP class {', '.join(sop_classes) or '(none)'} not in {', '.join(match.sop_class)}"
    aes = [a for a in (series.get("calling_aes") or "").split(",") if a]
    if match.calling_ae and not set(aes) & {a.strip() for a in match.calling_ae}:
        return f"calling AE {', '.join(aes) or '(none)'} not in {', '.join(match.calling_ae)}"
    if match.series_description is not None:
        description = series.get("description") or ""
        if not re.search(match.series_description, description):
            return f"series description {description!r} does not match /{match.series_description}/"
    return None


def explain_routes(config: NodeConfig, series: Sequence[Mapping[str, Any]],
                   matched: Sequence[str]) -> list[dict[str, Any]]:
    """One row per configured route: name, pipeline, destinations, ``matched`` (what completion
    recorded, when it did) and ``why`` (the series that matched, or each series' failed criterion)."""
    out = []
    for i, route in enumerate(config.routes):
        name = config.route_name(i)
        reasons = [(s, _series_reason(route.match, s)) for s in series]
        hits = [s for s, why in reasons if why is None]
        if hits:
            why = "series " + ", ".join(f"{s.get('modality') or '?'} {s.get('description') or ''}".strip()
                                        for s in hits) + " match every criterion"
        elif reasons:
            why = "; ".join(sorted({why for _s, why in reasons if why}))
        else:
            why = "no instances left in the spool to compare with"
        out.append({"name": name, "pipeline": route.pipeline, "destinations": list(route.destinations),
                    "matched": name in matched, "would_match_now": bool(hits), "why": why})
    return out
