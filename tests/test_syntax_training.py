"""SYNTAX training stack on tiny phantoms: one epoch per stage (backbone, head, artery classifier),
calibration, the importer of published-layout checkpoints, ONNX export and ONNX-vs-torch agreement."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from training.syntax import checkpoints as ck
from training.syntax.data import fold_path, read_format1, read_format2, rnn_fold_path
from training.syntax.model import SyntaxBackbone, SyntaxMultiView
from training.syntax.phantom import make_study
from training.syntax.phantom_dataset import write_release
from training.syntax.train import (TrainArgs, fit_calibration, score_interval_weights, train_backbone, train_classifier,
                                   train_head, update_scaling)

WIDTHS = (2, 4, 4, 8)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, TrainArgs]:
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("syntax-release")
    train = [make_study(200 + i, size=32, n_left=1, n_right=1, n_other=int(i == 0)) for i in range(4)]
    write_release(root, train, folds=2, jpeg_every=2)
    logdir = tmp_path_factory.mktemp("syntax-weights")
    base = TrainArgs(dataset_root=root, fold=0, batch_size=4, frames_per_clip=4, video_size=(32, 32), max_epochs=1,
                     logdir=logdir, use_weighted_sampler=True, seed=0, widths=WIDTHS, hidden=4, progress=False)
    for side in ("left", "right"):
        path, hist = train_backbone(TrainArgs(**{**base.__dict__, "artery": side}))
        assert path.name == f"{side.capitalize()}BinSyntax_R3D_full_fold00.pt" and len(hist) == 1
        assert np.isfinite(hist[0]["train_loss"]) and np.isfinite(hist[0]["eval_loss"])
        path, hist = train_head(TrainArgs(**{**base.__dict__, "artery": side, "variant": "lstm_mean"}))
        assert path.name == f"{side.capitalize()}BinSyntax_R3D_fold00_lstm_mean_post_best.pt"
        assert np.isfinite(hist[0]["train_loss"])
    path, hist = train_classifier(TrainArgs(**{**base.__dict__, "use_weighted_sampler": False}))
    assert path.parent.name == "artery_weights" and np.isfinite(hist[0]["train_loss"])
    update_scaling(logdir / "scaling_coeffs.json", 0, fit_calibration([1.0, 2.0, 3.0], [2.0, 4.0, 6.0]))
    return root, logdir, base


def test_one_epoch_per_stage_writes_published_layout(trained) -> None:
    root, logdir, _ = trained
    state = torch.load(logdir / "full_model_weights/LeftBinSyntax_R3D_fold00_lstm_mean_post_best.pt", weights_only=True)
    assert not any(k.startswith("model.fc.") for k in state)  # fc = Identity in the multi-view model
    assert {"lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.bias_ih_l0", "lstm.bias_hh_l0",
            "lstm.weight_hr_l0"} <= set(state)
    assert tuple(state["lstm.weight_hr_l0"].shape) == (2, 4)
    bb = torch.load(logdir / "backbone_weights/RightBinSyntax_R3D_full_fold00.pt", weights_only=True)
    assert tuple(bb["model.fc.weight"].shape) == (2, WIDTHS[3])
    assert json.loads((logdir / "scaling_coeffs.json").read_text()) == {
        "fold0": {"a": pytest.approx(2.0), "b": pytest.approx(0.0, abs=1e-9)}}
    assert len(read_format1(fold_path(root, 0, "train"), root)) > 0
    assert len(read_format2(rnn_fold_path(root, 0, "eval"), root)) == 2


def test_weighted_sampler_balances_score_intervals() -> None:
    w = score_interval_weights([0, 0, 0, 3, 30, 40])
    assert w[:3].sum() == pytest.approx(1.0) and w[3] == pytest.approx(1.0) and w[4] == pytest.approx(1.0)
    assert w[4] == w[3] and w[0] == pytest.approx(1 / 3)


def test_importer_reads_published_names_and_rejects_wrong_ones(trained, tmp_path) -> None:
    _, logdir, _ = trained
    path = ck.full_model_path(logdir, "left", 0, "lstm_mean")
    state = ck.load_state(path)
    model = ck.build_full_model(state, "lstm_mean", str(path))
    assert model.model.widths == WIDTHS and model.lstm.hidden_size == 4 and model.lstm.proj_size == 2
    # a Lightning-style {"state_dict": ...} wrapper loads too
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": state, "epoch": 3}, wrapped)
    assert ck.load_state(wrapped).keys() == state.keys()
    bb = ck.build_backbone(ck.load_state(ck.backbone_path(logdir, "right", 0)))
    assert isinstance(bb, SyntaxBackbone)
    assert ck.read_scaling(logdir) == {0: {"a": pytest.approx(2.0), "b": pytest.approx(0.0, abs=1e-9)}}
    # full-size published naming: r3d_18 keys under 'model.' + lstm (512 -> 128, proj 2), no model.fc.*
    full = SyntaxMultiView("lstm_mean").state_dict()
    assert len(full) == 125 and not any(k.startswith("model.fc.") for k in full)
    assert tuple(full["lstm.weight_ih_l0"].shape) == (512, 512) and tuple(full["lstm.weight_hr_l0"].shape) == (2, 128)
    bad = dict(state)
    bad["model.extra.weight"] = torch.zeros(1)
    with pytest.raises(ck.CheckpointError, match="does not fit"):
        ck.build_full_model(bad, "lstm_mean", "bad.pt")
    renamed = {k.removeprefix("model."): v for k, v in state.items()}
    with pytest.raises(ck.CheckpointError, match="model.stem.0.weight"):
        ck.build_full_model(renamed, "lstm_mean", "renamed.pt")
    with pytest.raises(ck.CheckpointError, match="not found"):
        ck.load_state(tmp_path / "missing.pt")
    (tmp_path / "scaling_coeffs.json").write_text(json.dumps({"fold0": {"a": 1}}))
    with pytest.raises(ck.CheckpointError, match="fold0"):
        ck.read_scaling(tmp_path)


def test_export_onnx_matches_torch(trained, tmp_path) -> None:
    from export.onnx_export import export_onnx
    from training.syntax.export import build_artery_export, build_export

    _, logdir, base = trained
    ns = argparse.Namespace(version="0.0.1-test", fp16=False, simplify=False,
                            options={"folds": "0", "frames": "4", "size": "32x32", "synthetic": "true",
                                     "trained_on": "4 tiny phantom studies"})
    specs = build_export(logdir, ns)
    assert [s.name for s in specs] == ["syntax-left-fold0", "syntax-right-fold0"]
    artery_args = argparse.Namespace(version="0.0.1-test", fp16=False, simplify=False,
                                     options={"frames": "4", "size": "32x32", "synthetic": "true"})
    specs += build_artery_export(logdir, artery_args)
    out = tmp_path / "models"
    for spec in specs:
        report = export_onnx(spec.module, spec.example_inputs, out, version="0.0.1-test", **spec.export_kwargs())
        assert report.comparison.ok and report.comparison.compared >= 1
    manifest = json.loads((out / "syntax-left-fold0" / "manifest.json").read_text())
    assert manifest["calibration"]["a"] == pytest.approx(2.0)
    assert manifest["provenance"]["synthetic"] is True and manifest["preprocessing"]["widths"] == list(WIDTHS)
    # independent check: ONNX Runtime vs torch on a 3-view input the export did not see
    model = ck.build_full_model(ck.load_state(ck.full_model_path(logdir, "left", 0, "lstm_mean")), "lstm_mean")
    x = torch.randn(1, 3, 3, 4, 32, 32, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ref = model(x).numpy()
    sess = ort.InferenceSession(str(out / "syntax-left-fold0" / "model.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"video": x.numpy()})[0]
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-3)
    art = ort.InferenceSession(str(out / "syntax-artery" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert art.run(None, {"video": x[0, :1].numpy()})[0].shape == (1, 1)


def test_router_data_are_the_same_whatever_the_number_of_worker_processes() -> None:
    """make_router_data plans every clip (kind, seed, offset, size) from its first seed, so that rendering
    in worker processes (make_bundled --threads) changes the speed, never the training data."""
    from pipelines.syntax.preprocess import CineConfig
    from training.syntax.router import make_router_data

    cfg = CineConfig(frames=2, height=32, width=32, clip="minip", intensity="percentile", samples=4,
                     filter="tophat", tophat_px=3)
    one = make_router_data(5, 123_000, cfg, workers=1)
    two = make_router_data(5, 123_000, cfg, workers=2)
    assert one.x.shape[0] == 5 and np.array_equal(one.x, two.x)
    assert np.array_equal(one.y, two.y) and list(one.kinds) == list(two.kinds)
    other = make_router_data(5, 124_000, cfg, workers=1)
    assert not np.array_equal(one.x, other.x)
