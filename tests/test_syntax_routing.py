"""The bundled artery router on runs of the independent evaluation generator (bench/phantoms/xa), through
the real pipeline: left and right cines of 20 and 90 frames at 1024 x 1024 go to their artery, a
ventriculogram is excluded as neither, and a study without a usable right cine reports the right system
as not assessed (never 0)."""
from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from bench.phantoms import xa
from pipelines.base import PipelineContext, StudyView
from pipelines.runtime import ModelStore, bundled_models_dir
from pipelines.runtime.settings import ModelsSection
from pipelines.syntax.pipeline import SyntaxPipeline

#: The bundled router (syntax-artery 0.5.0-phantom, trained by ``make_bundled --artery-only`` on
#: training.syntax.angio 1.2.0 within a CPU budget, digital subtraction before the projection) routes
#: about two thirds of evaluation-family coronary runs to their artery and the rest mostly "neither"
#: (docs/syntax.md, figures).  Of these runs it routes the 20-frame 1024-px left run (p 0.05), one
#: 512-px left run (0.08) and the ventriculograms; the 90-frame 1024-px left run (0.27), both 1024-px
#: right runs (0.89, 0.86: just under the 0.90 threshold) and the other 512-px left run (0.68) stay
#: "neither".  Strict: the mark goes with the router that passes.
ROUTER_GAP = pytest.mark.xfail(strict=True, reason="bundled syntax-artery 0.5.0-phantom routes a third of "
                               "evaluation-family coronary cines as neither (below the 98 % routing target; "
                               "issue 13 item 2 open; docs/syntax.md)")

#: The SYNTAX fold models (syntax-{left,right}-fold*, 0.2.0-phantom) were trained on 96 x 96 cines of
#: 14-32 frames (training.syntax.phantom) and accept only those (their manifests' input_domain,
#: checked per side after routing), so these 512 / 1024 runs are routed but not scored.  Strict: an
#: unexpected pass fails, so the mark goes with fold models trained and evaluated on such cines.
SCORING_GAP = pytest.mark.xfail(strict=True, reason="the bundled SYNTAX fold models accept only 96 x 96 cines of "
                                "14-32 frames: evaluation-family runs are routed but not scored (issue 13 item 2, "
                                "scoring; docs/syntax.md)")

EVALUATION_RUNS = [("left", 11, 20, 1024), ("left", 12, 90, 1024), ("right", 13, 20, 1024), ("right", 14, 90, 1024),
                   ("ventriculogram", 15, 30, 512)]
NO_RIGHT_RUNS = [("left", 21, 40, 512), ("left", 22, 60, 512), ("ventriculogram", 23, 25, 512)]


def _write(tmp: Path, runs: list[tuple[str, int, int, int]]) -> list[tuple[Path, xa.XaRun]]:
    out = []
    for n, (kind, seed, frames, matrix) in enumerate(runs):
        run = xa.render_run(xa.sample_acquisition(kind, seed, frames=frames, matrix=matrix))
        out.append((xa.write_run(run, tmp / f"{n:02d}.dcm", "routing-test", n + 1), run))
    return out


def _run(tmp: Path, files: list[Path]):
    store = ModelStore([bundled_models_dir()], ModelsSection(providers=("cpu",), warmup=False))
    return SyntaxPipeline().run(StudyView.from_files(files), PipelineContext(options={}, models=store, work_dir=tmp))


def _routes(res, pairs) -> list[tuple[str, str]]:
    probs = res.summary["artery_probabilities"]
    left_max, right_min = 0.10, 0.90
    out = []
    for path, run in pairs:
        p = probs.get(str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID))
        out.append((run.truth, "not routed" if p is None else "left" if p <= left_max else "right" if p >= right_min
                    else "neither"))
    return out


@pytest.fixture(scope="module")
def evaluation_study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("xa-eval")
    pairs = _write(tmp, EVALUATION_RUNS)
    return pairs, _run(tmp, [p for p, _ in pairs])


@pytest.fixture(scope="module")
def no_right_study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("xa-no-right")
    pairs = _write(tmp, NO_RIGHT_RUNS)
    return pairs, _run(tmp, [p for p, _ in pairs])


@ROUTER_GAP
def test_evaluation_family_cines_are_routed_to_their_artery(evaluation_study) -> None:
    pairs, res = evaluation_study
    assert [r.pixels.shape for _, r in pairs][:2] == [(20, 1024, 1024), (90, 1024, 1024)]
    routes = _routes(res, pairs)
    assert all(truth == got for truth, got in routes), (routes, res.summary["artery_probabilities"])
    if res.summary["syntax_total"] is None:  # routed but not scored: the report says why
        assert res.summary["not_assessable"], res.summary


@ROUTER_GAP
def test_study_without_right_cine_is_routed_left_and_neither(no_right_study) -> None:
    pairs, res = no_right_study
    assert _routes(res, pairs) == [("left", "left"), ("left", "left"), ("neither", "neither")]


@SCORING_GAP
def test_evaluation_family_study_is_scored(evaluation_study) -> None:
    _, res = evaluation_study
    assert res.summary["cines"]["left"] == 2 and res.summary["cines"]["right"] == 2
    assert res.summary["syntax_total"] is not None


@SCORING_GAP
def test_study_without_usable_right_cine_says_not_assessed(no_right_study) -> None:
    _, res = no_right_study
    assert res.summary["syntax_right"] is None and res.summary["syntax_total"] is None
    assert res.summary["syntax_left"] is not None
    assert [i["code"] for i in res.summary["not_assessable"]] == ["NO-CINE", "SIDE-MISSING"]
    sc = res.datasets[1]
    assert "Right coronary: not assessed (0 cines)" in sc.ImageComments
