"""Provenance that cannot lie: generated training data stays "synthetic" through export whatever the
options say, export options are honoured by every family, metrics say how they were computed (MyoPS
empty-vs-empty is undefined, not 1), and the SYNTAX pipeline refuses or reports mixed-version ensembles."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from export.cli import main as export_main
from pipelines.base import PipelineContext, PipelineInputError, StudyView
from pipelines.runtime import ModelStore, bundled_models_dir
from pipelines.runtime.settings import ModelsSection
from pipelines.syntax.pipeline import SyntaxPipeline
from tests.test_syntax_pipeline import sr_texts, xa_study
from training.datasets.phantoms import write_coca_folder


@pytest.fixture(scope="module")
def calcium_run(tmp_path_factory) -> Path:
    """A 4-step calcium run on a generated COCA folder passed with --coca (used to export synthetic: false)."""
    from training.calcium.train import main

    root = tmp_path_factory.mktemp("prov")
    write_coca_folder(root / "coca", {"1": "train", "2": "train", "3": "test"})
    out = root / "run"
    assert main(["--coca", str(root / "coca"), "--out", str(out), "--steps", "4", "--batch", "2", "--crop", "32",
                 "--val-fraction", "0.5"]) == 0
    return out


def _manifest(models: Path, name: str) -> dict:
    return json.loads((models / name / "manifest.json").read_text())


def test_calcium_export_of_generated_data_is_synthetic(calcium_run, tmp_path, capsys) -> None:
    assert export_main(["export", "calcium", "--checkpoint", str(calcium_run), "--out", str(tmp_path / "m"),
                        "--version", "0.0.1"]) == 0
    prov = _manifest(tmp_path / "m", "calcium-unet2d")["provenance"]
    assert prov["synthetic"] is True and "synthetic" in prov["trained_on"]
    data = prov["training_data"]
    assert data["generated"] is True and data["sources"][0]["layout"] == "COCA_Segmentations"
    assert data["sources"][0]["marker"].endswith("CARDIONODE_GENERATED.json")
    assert data["cases"] == {"train": 1, "validation": 1} and data["training_config"]["steps"] == 4
    assert data["run"] == "run"  # the run folder's name, not where it lay on the training machine
    assert "val_loss" in prov["metrics"] and "validation crops" in prov["metrics"]["method"]
    # the disclaimer cannot be switched off
    assert export_main(["export", "calcium", "--checkpoint", str(calcium_run / "best.pt"), "--out", str(tmp_path / "n"),
                        "--version", "0.0.1", "--option", "synthetic=false"]) == 2
    err = capsys.readouterr().err
    assert "synthetic=false refused" in err and "Traceback" not in err and not (tmp_path / "n").exists()


def test_calcium_export_honours_trained_on_and_metrics_file(calcium_run, tmp_path) -> None:
    (tmp_path / "eval.json").write_text(json.dumps({"dice": {"Right Coronary": 0.5}, "cases": 3,
                                                    "per_case": [{"case": "x"}], "method": "as evaluate says"}))
    assert export_main(["export", "calcium", "--checkpoint", str(calcium_run), "--out", str(tmp_path / "m"),
                        "--version", "1",
                        "--option", "trained_on=COCA test folder", "--option", f"metrics_file={tmp_path / 'eval.json'}",
                        "--option", "notes=hello"]) == 0
    prov = _manifest(tmp_path / "m", "calcium-unet2d")["provenance"]
    assert prov["trained_on"] == "synthetic phantoms: COCA test folder" and prov["notes"] == "hello"
    assert prov["metrics"] == {"dice": {"Right Coronary": 0.5}, "cases": 3, "method": "as evaluate says"}


def test_myops_empty_vs_empty_is_undefined_not_one() -> None:
    """Before: a held-out case without scar, predicted without scar, reported dice_scar = 1."""
    from training.myops.metrics import evaluate_cases
    from training.myops.prepare import PreparedCase

    label = np.zeros((2, 16, 16), np.uint8)
    label[:, 4:12, 4:12] = 1  # myocardium only, no scar, no edema
    case = PreparedCase("case0005", np.zeros((2, 3, 16, 16), np.float32), label)

    class Myocardium(torch.nn.Module):  # predicts the reference myocardium, never scar
        def forward(self, x):
            out = torch.zeros(x.shape[0], 6, 16, 16)
            out[:, 0] = 1.0
            out[:, 1, 4:12, 4:12] = 2.0
            return out

    m = evaluate_cases(Myocardium(), [case])
    assert m["dice_scar"] is None and m["mean_case_dice_scar"] is None and m["cases_with_scar"] == 0
    assert m["dice_myocardium"] == 1.0 and m["cases_with_myocardium"] == 1


@pytest.fixture(scope="module")
def mixed_models(tmp_path_factory) -> Path:
    """The bundled SYNTAX models with fold 0 (both sides) re-exported as another version."""
    models = tmp_path_factory.mktemp("mixed")
    for d in bundled_models_dir().iterdir():
        if d.name.startswith("syntax-"):
            shutil.copytree(d, models / d.name)
    for side in ("left", "right"):
        path = models / f"syntax-{side}-fold0" / "manifest.json"
        man = json.loads(path.read_text())
        man["version"] = "0.3.0-hosp"
        path.write_text(json.dumps(man))
    return models


def test_syntax_mixed_version_ensemble_refused_or_reported(mixed_models, tmp_path) -> None:
    """Before: the SR named the first fold's version for all five and averaged silently."""
    files, _ = xa_study(tmp_path / "xa")
    store = ModelStore([mixed_models], ModelsSection(providers=("cpu",), warmup=False))
    study = StudyView.from_files(files)
    with pytest.raises(PipelineInputError, match=r"mixed-version SYNTAX ensemble .*0\.3\.0-hosp.*allow_mixed_versions"):
        SyntaxPipeline().run(study, PipelineContext(options={}, models=store, work_dir=tmp_path))
    res = SyntaxPipeline().run(study, PipelineContext(options={"allow_mixed_versions": True}, models=store,
                                                      work_dir=tmp_path))
    sr = res.datasets[0]
    text = " ".join(sr_texts(sr))
    assert "syntax-left-fold0 0.3.0-hosp" in text and "syntax-left-fold1 0.2.0-phantom" in text
    assert "mixed-version ensemble" in text
    assert "syntax-left-fold1,2,3,4" in text  # the four equal folds grouped, fold 0 on its own
    assert {(m.name, m.version) for m in res.models} >= {("syntax-left-fold0", "0.3.0-hosp"),
                                                         ("syntax-right-fold4", "0.2.0-phantom")}


def test_syntax_export_missing_fold_is_one_line(tmp_path, capsys) -> None:
    (tmp_path / "w" / "full_model_weights").mkdir(parents=True)
    (tmp_path / "w" / "scaling_coeffs.json").write_text(json.dumps({"fold0": {"a": 1, "b": 0}}))
    assert export_main(["export", "syntax", "--checkpoint", str(tmp_path / "w"), "--out", str(tmp_path / "m"),
                        "--version", "1", "--option", "folds=0"]) == 2
    err = capsys.readouterr().err
    assert "LeftBinSyntax_R3D_fold00_lstm_mean_post_best.pt: checkpoint not found" in err and "Traceback" not in err


def test_syntax_scaling_file_as_given_or_under_the_dataset_root(tmp_path, monkeypatch) -> None:
    from training.syntax.checkpoints import CheckpointError
    from training.syntax.evaluate import read_scaling_file

    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "scaling_coeffs.json").write_text(json.dumps({"fold0": {"a": 2, "b": 1}}))
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "release"
    root.mkdir()
    assert read_scaling_file(Path("logs/scaling_coeffs.json"), root) == {0: {"a": 2.0, "b": 1.0}}
    (root / "cal.json").write_text(json.dumps({"fold1": {"a": 1, "b": 0}}))
    assert read_scaling_file(Path("cal.json"), root) == {1: {"a": 1.0, "b": 0.0}}
    with pytest.raises(CheckpointError, match="not found"):
        read_scaling_file(Path("missing.json"), root)


def test_console_commands_exist() -> None:
    """node/cli.py mounts `cardionode myops ...` (it referred to a module that did not exist) and the datasets tools."""
    from node.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert {"myops", "syntax", "calcium", "datasets", "export"} <= set(sub.choices)
    datasets = next(a for a in sub.choices["datasets"]._actions if a.dest == "datasets_command")
    assert {"make-phantoms", "nnunet-export", "coca-to-yolo", "coca-stats"} <= set(datasets.choices)


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def test_bundled_manifests_hold_no_path_of_the_machine_that_trained_them() -> None:
    models = bundled_models_dir()
    assert models is not None
    manifests = sorted(models.glob("*/manifest.json"))
    assert manifests
    for path in manifests:
        absolute = [s for s in _strings(json.loads(path.read_text())) if s.startswith(("/", "~")) or ":\\" in s]
        assert absolute == [], f"{path.parent.name}: {absolute}"
