"""Calcium outputs with 0, 1 and 2 calcium classes through the real pipeline (bundled model) and
builders: a one-segment SEG (highdicom puts SegmentIdentificationSequence in the shared functional
groups) must not fail the job; concepts per class, distinct segment colours, dciodvfy-clean."""
from __future__ import annotations

import itertools

import highdicom as hd
import numpy as np
import pydicom
import pytest

from node.config import ModelsSection
from pipelines.base import PipelineContext, StudyView
from pipelines.calcium.labels import CLASSES
from pipelines.calcium.outputs import score_concept
from pipelines.calcium.pipeline import CalciumPipeline
from pipelines.runtime import ModelStore, bundled_models_dir
from tests.support.peers import dciodvfy_errors
from tests.calcium_fixtures import phantom_ct_study
from tests.support.sr_content import groups, structure_problems, walk

#: smallest pairwise CIELAB Delta E (1976) between two calcium segment colours
MIN_COLOUR_DISTANCE = 30.0


def _lab(rgb):
    v = hd.color.CIELabColor.from_rgb(*rgb).value
    return np.array([v[0] / 65535 * 100, v[1] / 65535 * 255 - 128, v[2] / 65535 * 255 - 128])


def test_segment_colours_are_distinct():
    worst = min(float(np.linalg.norm(_lab(a.rgb) - _lab(b.rgb))) for a, b in itertools.combinations(CLASSES, 2))
    assert worst >= MIN_COLOUR_DISTANCE


def test_coronary_score_concept_only_for_coronary_classes():
    assert {c.key for c in CLASSES if score_concept(c).value == "450360000"} == {"PDA", "LM", "LAD", "LCX", "RCA"}
    assert len({score_concept(c).value for c in CLASSES if not c.coronary}) == 3


@pytest.mark.parametrize("classes", [(), (8,), (6, 8)], ids=["no-calcium", "one-class", "two-classes"])
def test_zero_one_two_classes(tmp_path, classes):
    files, _ = phantom_ct_study(tmp_path / "ct", classes=classes)
    store = ModelStore([bundled_models_dir()], ModelsSection(providers=("cpu",), warmup=False))
    res = CalciumPipeline().run(StudyView.from_files(files), PipelineContext(options={}, models=store,
                                                                             work_dir=tmp_path))
    found = {k for k, v in res.summary["per_class"].items() if v["lesions"]}
    assert found == {c.key for c in CLASSES if c.value in classes}  # the model finds what the phantom has
    by_mod = {d.Modality: d for d in res.datasets}
    assert set(by_mod) == ({"SEG", "SR", "OT"} if classes else {"SR", "OT"})  # no calcium: no SEG
    for name, ds in by_mod.items():
        path = tmp_path / f"{name}.dcm"
        ds.save_as(path, enforce_file_format=True)
        assert dciodvfy_errors(path) == [], name
    sr = pydicom.dcmread(tmp_path / "SR.dcm")
    hd.sr.srread(tmp_path / "SR.dcm")
    assert structure_problems(sr) == []
    g = groups(sr)
    assert {k for k, v in g.items() if v.container == "126010"} == {f"Calcium {k}" for k in found}
    if classes:
        seg = hd.seg.segread(tmp_path / "SEG.dcm")
        assert len(seg.SegmentSequence) == len(classes)
        uids = {str(s.SegmentLabel): str(s.TrackingUID) for s in seg.SegmentSequence}
        for c in CLASSES:
            if c.value in classes:
                region = g[f"Calcium {c.key}"].region
                ref = region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
                assert ref in {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
                assert g[f"Calcium {c.key}"].numbers["LESION-COUNT"] == res.summary["per_class"][c.key]["lesions"]
                assert uids[c.name] in {str(i.UID) for i in walk(sr.ContentSequence) if i.get("ValueType") == "UIDREF"}
    else:
        assert g["Calcium total coronary"].numbers["450360000"] == 0.0
