"""CardioNode results opened in a real viewer, as a radiologist would: OHIF 3.13.2 (prebuilt dist) on
Orthanc + DICOMweb, in headless Chromium (Debian) driven by puppeteer-core.

For each pipeline a phantom study runs through the pipeline (bundled models, real builders); the
sources and every output (SEG, SR, summary SC) go to Orthanc with storescu; the browser opens the
study and checks: no error in the console or on screen, the SEG's segments listed by name, the SR's
measurements listed with their values, the summary image displayed.  Screenshots are kept (the test
prints the folder; ``$CARDIONODE_ARTEFACTS`` chooses it).
"""
from __future__ import annotations

import os
from pathlib import Path

import pydicom
import pytest

from pipelines.base import PipelineContext, StudyView
from pipelines.runtime import ModelStore, bundled_models_dir
from pipelines.runtime.settings import ModelsSection
from tests.support.viewer import ViewerStack, missing_parts

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _run(pipeline, files, tmp: Path):
    store = ModelStore([bundled_models_dir()], ModelsSection(providers=("cpu",), warmup=False))
    return pipeline.run(StudyView.from_files(files), PipelineContext(options={}, models=store, work_dir=tmp))


def build_studies(root: Path) -> dict[str, dict]:
    """{pipeline: {"files": source + output paths, "study": uid, "result": PipelineResult}}."""
    from pipelines.calcium.pipeline import CalciumPipeline
    from pipelines.myops.pipeline import MyopsPipeline
    from pipelines.syntax.pipeline import SyntaxPipeline
    from tests.support.calcium import phantom_ct_study
    from tests.support.myops import phantom_study
    from tests.test_syntax_pipeline import xa_study

    out: dict[str, dict] = {}
    made = {
        "calcium": (CalciumPipeline(), phantom_ct_study(root / "calcium" / "src")[0]),
        "myops": (MyopsPipeline(), phantom_study(root / "myops" / "src", seed=7003)[0]),
        "syntax": (SyntaxPipeline(), xa_study(root / "syntax" / "src", seed=4714)[0]),
    }
    for name, (pipeline, files) in made.items():
        res = _run(pipeline, files, root / name)
        results = []
        for i, ds in enumerate(res.datasets):
            path = root / name / "out" / f"{i}-{ds.Modality}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(path, enforce_file_format=True)
            results.append(path)
        study = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        out[name] = {"files": list(files) + results, "study": study, "result": res, "outputs": results}
    return out


def _located_labels(sr: pydicom.Dataset) -> list[list[str]]:
    """Per drawn group (under Imaging Measurements) the lines OHIF shows: '<concept>: <value .2f> <unit>'."""
    from tests.support.sr_content import groups

    out = []
    for item in sr.ContentSequence:
        if str(item.ConceptNameCodeSequence[0].CodeValue) != "126010":
            continue
        for g in item.ContentSequence:
            if g.get("ValueType") != "CONTAINER":
                continue
            lines = []
            for it in g.ContentSequence:
                if it.get("ValueType") == "NUM":
                    mv = it.MeasuredValueSequence[0]
                    lines.append(f"{it.ConceptNameCodeSequence[0].CodeMeaning}: {float(mv.NumericValue):.2f} "
                                 f"{mv.MeasurementUnitsCodeSequence[0].CodeValue}")
            out.append(lines)
    assert groups(sr)  # the SR parses
    return out


def _text_lines(sr: pydicom.Dataset) -> list[str]:
    """The lines OHIF's text view of an SR without drawable measurements shows for each number."""
    from tests.support.sr_content import DERIVED, containers, walk

    derived = containers(sr).get(DERIVED)
    return [f"{it.ConceptNameCodeSequence[0].CodeMeaning}: {it.MeasuredValueSequence[0].NumericValue} "
            f"{it.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue}"
            for it in walk(derived.ContentSequence if derived else [])
            if it.get("ValueType") == "NUM" and it.get("MeasuredValueSequence")]


def _plan(studies: dict[str, dict]) -> dict:
    plan = []
    for name, s in studies.items():
        by_mod = {pydicom.dcmread(p, stop_before_pixels=True).Modality: pydicom.dcmread(p) for p in s["outputs"]}
        sr = by_mod["SR"]
        labels = _located_labels(sr)
        entry = {"name": name, "study": s["study"], "summary": str(by_mod["OT"].SeriesDescription),
                 "sr": {"label": str(sr.SeriesDescription), "count": len(labels),
                        "expect_first": labels[0][0].split(":")[0] if labels else str(sr.SeriesDescription)},
                 "expected_sr": labels, "expected_text": [] if labels else _text_lines(sr)}
        if "SEG" in by_mod:
            seg = by_mod["SEG"]
            entry["seg"] = {"label": str(seg.SeriesDescription),
                            "segments": [str(x.SegmentLabel) for x in seg.SegmentSequence]}
        plan.append(entry)
    return {"studies": plan}


def test_results_in_ohif(tmp_path):
    missing = missing_parts()
    if missing:
        if os.environ.get("CI"):
            pytest.fail("browser test needs: " + "; ".join(missing))
        pytest.skip("browser test needs: " + "; ".join(missing))
    artefacts = Path(os.environ.get("CARDIONODE_ARTEFACTS") or tmp_path / "artefacts") / "viewer"
    print(f"\nviewer screenshots: {artefacts}")
    studies = build_studies(tmp_path / "studies")
    plan = _plan(studies)
    with ViewerStack(tmp_path / "stack") as stack:
        for s in studies.values():
            stack.send(s["files"])
        report = stack.drive(plan, artefacts)
    problems = []
    for entry in plan["studies"]:
        r = report["studies"][entry["name"]]
        for key in ("console_errors", "page_errors", "screen_errors"):
            if r[key]:
                problems.append(f"{entry['name']}: {key} {r[key][:5]}")
        if "seg" in entry and sorted(r["segments"]) != sorted(entry["seg"]["segments"]):
            problems.append(f"{entry['name']}: segments listed {r['segments']}, SEG has {entry['seg']['segments']}")
        for line in entry["expected_text"]:
            if line not in r.get("sr_text", ""):
                problems.append(f"{entry['name']}: SR text view lacks '{line}'")
        drawn = "\n".join("\n".join(step) for step in r["sr"])
        for lines in entry["expected_sr"]:
            for line in lines:
                if line not in drawn:
                    problems.append(f"{entry['name']}: SR measurement '{line}' not drawn (drawn: {drawn[:300]!r})")
    print(f"viewer seconds: { {k: v['seconds'] for k, v in report['studies'].items()} }")
    assert not problems, "\n".join(problems) + f"\nscreenshots: {artefacts}"
