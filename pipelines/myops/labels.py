"""Model classes of the myops family and how they combine into the reported tissues.

The network predicts mutually exclusive classes per pixel.  The reported tissues follow the
MyoPS convention that scar lies inside the edema region, which lies inside the myocardium:

- myocardium   = normal myocardium + edema + scar
- edema region = edema + scar        (called "edema" in the SEG/SR, as in MyoPS "scar + edema")
- scar         = scar

Blood pools (LV, RV) are predicted when the training labels carry them; they are not reported.
"""
from __future__ import annotations

import numpy as np

__all__ = ["BACKGROUND", "MYOCARDIUM", "EDEMA", "SCAR", "LV_POOL", "RV_POOL", "CLASS_NAMES", "tissue_masks"]

BACKGROUND = 0
MYOCARDIUM = 1  # normal (remote) myocardium
EDEMA = 2  # edema without scar
SCAR = 3
LV_POOL = 4
RV_POOL = 5

CLASS_NAMES = {
    BACKGROUND: "background",
    MYOCARDIUM: "normal myocardium",
    EDEMA: "edema",
    SCAR: "scar",
    LV_POOL: "left ventricular blood pool",
    RV_POOL: "right ventricular blood pool",
}


def tissue_masks(classes: np.ndarray) -> dict[str, np.ndarray]:
    """Nested boolean masks ``myocardium``, ``edema`` (edema region incl. scar) and ``scar``."""
    classes = np.asarray(classes)
    return {
        "myocardium": np.isin(classes, (MYOCARDIUM, EDEMA, SCAR)),
        "edema": np.isin(classes, (EDEMA, SCAR)),
        "scar": classes == SCAR,
    }
