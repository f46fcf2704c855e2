"""pipelines.qc.domain.check and pipelines.qc.scores without a model: reasons name value and range,
required sets, values not recorded, manifests bounding what a pipeline does not measure."""
from __future__ import annotations

import numpy as np
import pytest

from pipelines.qc import CHECKS, DomainCheckError, check
from pipelines.qc.scores import ConfidenceTally, ensemble_spread
from pipelines.runtime.manifest import DomainRange

DOMAIN = {"pixel_spacing_mm": DomainRange(min=1.2, max=1.6, unit="mm"), "kvp": DomainRange(min=120, max=120, unit="kV"),
          "sequences": DomainRange(one_of=("bssfp", "lge", "t2")), "modality": DomainRange(one_of=("CT",))}


def test_inside_every_range_gives_notes_only():
    out = check({"pixel_spacing_mm": [1.4], "kvp": 120.0, "sequences": ["lge", "t2", "bssfp"], "modality": "CT"},
                DOMAIN, model="m 1", kind="input")
    assert out.ok and "pixel spacing 1.4 mm: within 1.2-1.6 mm" in out.notes


def test_each_value_outside_is_one_issue_naming_value_and_range():
    out = check({"pixel_spacing_mm": [0.7, 0.7], "kvp": None, "sequences": ["lge"], "modality": "MR"},
                DOMAIN, model="m 1", kind="input")
    by = {i.code: i.message for i in out.issues}
    assert by["IN-SPACING"] == "pixel spacing 0.7 mm, 0.7 mm is outside the range the model m 1 accepts (1.2-1.6 mm)"
    assert by["IN-SEQUENCE"].endswith("needs bssfp, lge, t2 (bssfp, t2 missing)")
    assert by["IN-MODALITY"] == "modality MR is not what the model m 1 accepts (CT)"
    assert "IN-KVP" not in by and "tube voltage: not recorded, not checked (accepted 120-120 kV)" in out.notes
    assert all(i.is_whole_result for i in out.issues)


def test_a_range_the_pipeline_does_not_measure_is_an_error():
    with pytest.raises(DomainCheckError, match="bounds 'kvp', which this pipeline does not measure"):
        check({"pixel_spacing_mm": 1.4}, {"kvp": DOMAIN["kvp"]}, model="m", kind="input")
    with pytest.raises(DomainCheckError, match="bounds 'heart_rate'"):
        check({}, {"heart_rate": DomainRange(max=70)}, model="m", kind="input")
    with pytest.raises(DomainCheckError, match="output_domain bounds 'kvp'"):
        check({"kvp": 120}, {"kvp": DOMAIN["kvp"]}, model="m", kind="output")


def test_codes_are_stable_and_unique():
    codes = [c.code for c in CHECKS.values()]
    assert len(codes) == len(set(codes))
    assert {"IN-MODALITY", "IN-CONTRAST", "IN-SPACING", "IN-THICKNESS", "IN-KVP", "IN-COVERAGE", "IN-FOV",
            "IN-FRAMES", "IN-MATRIX", "IN-SEQUENCE", "OUT-LOWCONF", "OUT-DISAGREE", "OUT-VOLUME"} <= set(codes)


def test_scores():
    t = ConfidenceTally()
    probs = np.zeros((1, 3, 20, 20), np.float32)
    probs[0, 0] = 1.0
    probs[0, :, :10, :] = 0.0
    probs[0, 1, :10, :] = 0.9  # 200 confident foreground pixels
    probs[0, 2, :10, :] = 0.1
    probs[0, 1, :2, :] = 0.45  # 40 of them unsure
    probs[0, 2, :2, :] = 0.3
    probs[0, 0, :2, :] = 0.25
    t.add(probs)
    assert (t.foreground, t.low, t.fraction) == (200, 40, 0.2)
    small = ConfidenceTally()
    small.add(probs[:, :, :1, :5])  # 5 painted, all unsure: judged over 100 pixels
    assert small.fraction == pytest.approx(0.05) and ConfidenceTally().fraction == 0.0
    assert ensemble_spread([1.0, 3.0]) == 1.0 and ensemble_spread([5.0]) == 0.0
