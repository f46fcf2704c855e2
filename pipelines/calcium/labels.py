"""The 8 COCA calcium classes: model label values, names, SNOMED CT sites, display colours.

Label values 1..8 follow the order of the COCA_Segmentations README table (background = 0).  The
COCA NRRD files name their segments in the header (``SegmentN_Name``/``SegmentN_LabelValue``);
readers map those names onto these classes by :data:`COCA_NAME_ALIASES` (configurable), never by
position.
"""
from __future__ import annotations

import dataclasses

from pydicom.sr.coding import Code

from pipelines.outputs import codes

__all__ = ["CalciumClass", "CLASSES", "CLASS_BY_VALUE", "COCA_NAME_ALIASES", "class_for_name", "N_CLASSES"]


@dataclasses.dataclass(frozen=True)
class CalciumClass:
    value: int  # model output / label map value
    name: str  # COCA name
    key: str  # short key used in config, SR tracking ids and logs
    site: Code  # SNOMED CT anatomic site
    rgb: tuple[int, int, int]
    coronary: bool  # counts towards the coronary Agatston total (CAC)


#: display colours are far apart in CIELAB (every pair >= 30 Delta E 1976; tests/test_calcium_outputs.py)
CLASSES: tuple[CalciumClass, ...] = (
    CalciumClass(1, "Posterior Descending", "PDA", codes.POSTERIOR_DESCENDING, (255, 127, 14), True),   # orange
    CalciumClass(2, "Left Main Coronary", "LM", codes.LEFT_MAIN_CORONARY_ARTERY, (214, 39, 40), True),   # red
    CalciumClass(3, "Left Anterior Descending", "LAD", codes.LEFT_ANTERIOR_DESCENDING, (255, 235, 0), True),  # yellow
    CalciumClass(4, "Left Circumflex", "LCX", codes.LEFT_CIRCUMFLEX, (44, 200, 44), True),   # green
    CalciumClass(5, "Mitral Valve", "MV", codes.MITRAL_VALVE, (23, 220, 235), False),   # cyan
    CalciumClass(6, "Thoracic Aorta", "AORTA", codes.THORACIC_AORTA, (40, 90, 255), False),   # blue
    CalciumClass(7, "Aortic Valve", "AV", codes.AORTIC_VALVE, (150, 90, 200), False),   # violet
    CalciumClass(8, "Right Coronary", "RCA", codes.RIGHT_CORONARY_ARTERY, (255, 120, 200), True),   # pink
)
N_CLASSES = len(CLASSES)
CLASS_BY_VALUE = {c.value: c for c in CLASSES}

#: lower-cased NRRD segment name (spaces/underscores collapsed) -> class value.
COCA_NAME_ALIASES: dict[str, int] = {
    "posterior descending": 1, "posterior descending artery": 1, "pda": 1,
    "left main": 2, "left main coronary": 2, "left main coronary artery": 2, "lm": 2,
    "left anterior descending": 3, "lad": 3,
    "left circumflex": 4, "lcx": 4, "circumflex": 4,
    "mitral valve": 5, "mv": 5,
    "thoracic aorta": 6, "aorta": 6,
    "aortic valve": 7, "av": 7,
    "right coronary": 8, "right coronary artery": 8, "rca": 8,
}


def _norm(name: str) -> str:
    return " ".join(name.replace("_", " ").replace("-", " ").lower().split())


def class_for_name(name: str, aliases: dict[str, int] | None = None) -> int | None:
    """Class value for a segment name (None when unknown)."""
    table = {_norm(k): v for k, v in (aliases or COCA_NAME_ALIASES).items()}
    return table.get(_norm(name))
