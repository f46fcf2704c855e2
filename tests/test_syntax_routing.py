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


#: Two gaps: the bundled router (syntax-artery 0.2.0-phantom, trained on training.syntax.phantom only)
#: routed none of the five runs of the first test correctly (left -> other, right -> other / left,
#: ventriculogram -> left), and the bundled models' accepted input ranges (96 x 96, 14-32 frames)
#: make these cines "not assessable" before routing.  A router trained by ``make_bundled
#: --artery-only`` that passes, with input ranges that cover what it was evaluated on, must replace
#: it; strict: an unexpected pass fails, so the mark is removed with that model.
ROUTER_GAP = pytest.mark.xfail(strict=True, reason="bundled syntax-artery 0.2.0-phantom does not generalise to "
                               "bench/phantoms/xa runs and its input ranges exclude them (issue 13 item 2 open; "
                               "docs/syntax.md)")


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
        p = probs[str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)]
        out.append((run.truth, "left" if p <= left_max else "right" if p >= right_min else "neither"))
    return out


@ROUTER_GAP
def test_evaluation_family_cines_are_routed_to_their_artery(tmp_path) -> None:
    pairs = _write(tmp_path, [("left", 11, 20, 1024), ("left", 12, 90, 1024), ("right", 13, 20, 1024),
                              ("right", 14, 90, 1024), ("ventriculogram", 15, 30, 512)])
    assert [r.pixels.shape for _, r in pairs][:2] == [(20, 1024, 1024), (90, 1024, 1024)]
    res = _run(tmp_path, [p for p, _ in pairs])
    routes = _routes(res, pairs)
    assert all(truth == got for truth, got in routes), (routes, res.summary["artery_probabilities"])
    assert res.summary["cines"]["left"] == 2 and res.summary["cines"]["right"] == 2
    assert res.summary["syntax_total"] is not None


@ROUTER_GAP
def test_study_without_usable_right_cine_says_not_assessed(tmp_path) -> None:
    pairs = _write(tmp_path, [("left", 21, 40, 512), ("left", 22, 60, 512), ("ventriculogram", 23, 25, 512)])
    res = _run(tmp_path, [p for p, _ in pairs])
    assert _routes(res, pairs) == [("left", "left"), ("left", "left"), ("neither", "neither")]
    assert res.summary["syntax_right"] is None and res.summary["syntax_total"] is None
    assert res.summary["syntax_left"] is not None
    assert [i["code"] for i in res.summary["not_assessable"]] == ["NO-CINE", "SIDE-MISSING"]
    sc = res.datasets[1]
    assert "Right coronary: not assessed (0 cines)" in sc.ImageComments
