"""Series identification of the myops pipeline on evaluation-family studies of every vendor convention."""
from __future__ import annotations

from pathlib import Path

import pytest

from bench.phantoms.cmr import VENDORS, EvalSpec, make_study, write_study
from pipelines.base import PipelineInputError, StudyView
from pipelines.myops.options import DEFAULT_PATTERNS
from pipelines.myops.series import identify_series


def _folder(series) -> str:
    return Path(series.instances[0].path).parent.name


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    out = {}
    for i, vendor in enumerate(VENDORS):
        root = tmp_path_factory.mktemp(vendor)
        study = make_study(100 + i, EvalSpec(vendor=vendor, matrix=128, slices=6, scar_burden=10.0))
        out[vendor] = write_study(study, root, extras=True)
    return out


@pytest.mark.parametrize("vendor", list(VENDORS))
def test_each_vendor_naming_and_tags_pick_the_short_axis_stacks(studies, vendor):
    chosen = identify_series(StudyView.from_files(studies[vendor]), DEFAULT_PATTERNS)
    # the localiser (bright-blood, 3 planes) and the single-slice 4-chamber cine are never chosen
    assert {seq: _folder(s) for seq, s in chosen.items()} == {"bssfp": "bssfp", "lge": "lge", "t2": "t2"}


def test_anonymised_names_are_resolved_by_sequence_attributes_alone(studies):
    files = studies["anonymised"]
    study = StudyView.from_files(files)
    descriptions = sorted(s.series_description for s in study.series)
    assert all(d.startswith("Series ") or "locali" in d for d in descriptions)
    chosen = identify_series(study, DEFAULT_PATTERNS)
    assert _folder(chosen["lge"]) == "lge" and _folder(chosen["t2"]) == "t2"


def test_a_missing_sequence_is_named_with_what_the_study_holds(studies):
    files = [p for p in studies["siemens"] if Path(p).parent.name != "t2"]
    with pytest.raises(PipelineInputError) as exc:
        identify_series(StudyView.from_files(files), DEFAULT_PATTERNS)
    msg = str(exc.value)
    assert msg.startswith("missing series: t2 (") and "de_tfl_psir_sax_MAG" in msg and "TI 300 ms" in msg
