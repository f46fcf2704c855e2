"""myops pipeline without the node: options, series selection errors, mapping predictions back to the LGE
grid, the export family (torch -> ONNX -> model store), and the bundled phantom model on a held-out
phantom study (Dice per tissue, scar burden vs the phantom truth)."""
from __future__ import annotations

import argparse

import numpy as np
import pydicom
import pytest

from pipelines.base import PipelineContext, PipelineInputError, StudyView
from pipelines.myops import labels as cls
from pipelines.myops.inference import probabilities_to_anchor
from pipelines.myops.options import MyopsOptions, OptionsError
from pipelines.myops.pipeline import MyopsPipeline
from pipelines.myops.preprocess import build_grid_stack, label_on_grid
from pipelines.runtime import ModelStore, bundled_models_dir
from pipelines.runtime.settings import ModelsSection
from tests.support.peers import dciodvfy_errors
from tests.support.sr_content import groups as sr_groups
from tests.support.sr_content import structure_problems
from training.myops.metrics import dice
from training.myops.phantom import ground_truth_figures, make_phantom, write_dicom_study

CPU = ModelsSection(providers=("cpu",), intra_op_threads=1)

#: |predicted - phantom truth| scar burden, percentage points of myocardial volume, for one held-out
#: phantom study through the whole pipeline.  bench/myops.py over 12 held-out phantom studies (seeds
#: 9000-9011): mean 0.86 pp, max 2.16 pp.  The truth counts every LGE slice; the pipeline analyses only
#: the slices matched across the three sequences (7-8 of 9-11), which is most of the error.
SCAR_BURDEN_TOLERANCE_PP = 3.0
#: |predicted - truth| / truth myocardial volume, truth on the analysed (matched) LGE slices.  0.1.0 on 12
#: studies: -3.0 .. +0.7 %; 0.2.0 (trained on the varied generator 2.1, 600 steps): +6.9 % on seed 7003
#: (72.0 vs 67.3 mL), +12.4 % on the e2e seed 7001 (71.6 vs 63.7 mL) -- it draws the myocardium thicker
#: on the fixed-acquisition 1.0 phantoms.  A regression, stated in docs/myops.md.
MYO_VOLUME_REL_TOL = 0.15
#: Dice floors on the analysed (matched) LGE slices; bench minimum over 12 studies: myocardium 0.974,
#: scar + edema 0.762, scar 0.852 (phantom figures).
DICE_FLOOR = {"myocardium": 0.93, "edema": 0.70, "scar": 0.80}


def test_options_validation_names_the_key():
    assert MyopsOptions.parse({}).model == "myops-unet"
    o = MyopsOptions.parse({"series": {"lge": ["MDE"]}, "registration": False})
    assert o.patterns["lge"] == ("MDE",) and o.patterns["t2"] and not o.registration
    for raw, key in (({"modle": "x"}, "modle"), ({"registration": "yes"}, "registration"),
                     ({"series": {"flair": ["x"]}}, "series.flair"), ({"series": {"lge": ["("]}}, "series.lge"),
                     ({"series_number_base": 0}, "series_number_base")):
        with pytest.raises(OptionsError, match=key):
            MyopsOptions.parse(raw)


def test_mapping_back_to_lge_grid_recovers_the_label():
    """Ground truth -> 224 grid -> 128 ROI one-hot -> LGE pixel grid again: Dice per tissue > 0.9."""
    case = make_phantom(11, with_scar=True)
    stack = build_grid_stack(case.volumes)
    lab = label_on_grid(case.label, stack)
    y0, x0 = 48, 48
    roi = lab[:, y0:y0 + 128, x0:x0 + 128]
    probs = np.eye(6, dtype=np.float32)[roi].transpose(0, 3, 1, 2)
    back = probabilities_to_anchor(probs, stack, (y0, x0), case.label)
    matched = stack.anchor_slices
    truth = case.label.array[matched]
    for name in ("myocardium", "edema", "scar"):
        d = dice(cls.tissue_masks(back[matched])[name], cls.tissue_masks(truth)[name])
        assert d > 0.9, (name, d)
    unmatched = np.setdiff1d(np.arange(case.label.shape[0]), matched)
    assert not back[unmatched].any()


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A tiny U-Net checkpoint exported through the myops export family."""
    from export.onnx_export import export_onnx
    from pipelines.myops.preprocess import PreprocessConfig
    from training.myops.export import build_export
    from training.myops.labels import MYOPS2020
    from training.myops.model import UNet2D
    from training.myops.checkpoint import save_checkpoint
    from training.myops.train import TrainConfig

    out = tmp_path_factory.mktemp("models")
    model = UNet2D(num_classes=6, base=4, depth=2).eval()
    ckpt = save_checkpoint(out / "ckpt.pt", model, labels=MYOPS2020, preprocess=PreprocessConfig(),
                           train_cfg=TrainConfig(steps=1),
                           split={"mode": "every5th", "seed": 0, "train": [], "test": []},
                           history=[], metrics={"dice_scar": 0.5}, trained_on="synthetic phantoms (test)",
                           synthetic=True)
    specs = build_export(ckpt, argparse.Namespace(version="0.0.1-test", options={}))
    assert len(specs) == 1
    export_onnx(specs[0].module, specs[0].example_inputs, out, version="0.0.1-test", verbose=False,
                **specs[0].export_kwargs())
    return out


def test_export_family_writes_a_loadable_static_model(tiny_model_dir):
    handle = ModelStore([tiny_model_dir], CPU).acquire("myops-unet")
    m = handle.manifest
    assert list(m.inputs[0].shape) == ["N", 3, 128, 128] and m.opset == 17
    assert m.provenance.synthetic and "phantom" in m.provenance.trained_on
    assert {lab.name: lab.code.value for lab in m.labels if lab.code} == {
        "normal myocardium": "74281007", "edema": "79654002", "scar": "12402003"}
    out = handle.run({"image": np.zeros((2, 3, 128, 128), np.float32)})["logits"]
    assert out.shape == (2, 6, 128, 128)


def test_missing_lge_is_a_clear_input_error(tmp_path, tiny_model_dir):
    files = write_dicom_study(make_phantom(12), tmp_path, seed=12, sequences=("bssfp", "t2"))
    ctx = PipelineContext(options={}, models=ModelStore([tiny_model_dir], CPU), work_dir=tmp_path)
    with pytest.raises(PipelineInputError, match=r"missing series: lge .*SAX T2 STIR"):
        MyopsPipeline().run(StudyView.from_files(files), ctx)
    with pytest.raises(PipelineInputError, match="pipelines.myops.registration"):
        MyopsPipeline().run(StudyView.from_files(files), PipelineContext(options={"registration": 1},
                                                                        models=ctx.models, work_dir=tmp_path))


def test_bundled_model_on_a_held_out_phantom_study(tmp_path):
    """The committed phantom model through the whole pipeline (first-pass prior, registration, ROI,
    mapping back to LGE, SEG/SR/summary) on a phantom seed it never saw."""
    models = bundled_models_dir()
    assert models is not None and (models / "myops-unet" / "model.onnx").is_file(), \
        "bundled myops-unet missing: python -m training.myops.make_bundled --out pipelines/models"
    case = make_phantom(7003, with_scar=True)
    files = write_dicom_study(case, tmp_path / "study", seed=7003)
    store = ModelStore([models], CPU)
    pipe = MyopsPipeline()
    res = pipe.run(StudyView.from_files(files), PipelineContext(options={}, models=store, work_dir=tmp_path))
    truth = ground_truth_figures(case.label)
    assert abs(res.summary["scar_burden_pct"] - truth["scar_burden_pct"]) <= SCAR_BURDEN_TOLERANCE_PP, \
        (res.summary, truth)
    assert [ds.SOPClassUID for ds in res.datasets] == [
        "1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.7"]  # SEG, SR, SC
    assert res.summary["segments"] == ["Edema", "Myocardium", "Scar"]  # none empty
    # every tissue is drawn on its key LGE slice (TID 1410 under Imaging Measurements), dciodvfy-clean
    sr = res.datasets[1]
    assert structure_problems(sr) == []
    assert {k: g.container for k, g in sr_groups(sr).items()} == {
        "myocardium": "126010", "scar": "126010", "edema": "126010"}
    lge_uids = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files if "/lge/" in str(f)}
    for g in sr_groups(sr).values():
        assert g.region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID in lge_uids
    for i, ds in enumerate(res.datasets):
        ds.save_as(tmp_path / f"out{i}.dcm", enforce_file_format=True)
        assert dciodvfy_errors(tmp_path / f"out{i}.dcm") == []
    # Dice per tissue on the analysed LGE slices (the same path the pipeline took)
    from pipelines.imaging import load_volume, match_series

    series = match_series(StudyView.from_files(files), MyopsOptions().rules, modalities=("MR",))
    vols = {k: load_volume(v) for k, v in series.items()}
    handle = store.acquire("myops-unet")
    classes, stack, _ = pipe.segment(vols, handle, pipe._config(handle.manifest, MyopsOptions()))
    z = stack.anchor_slices
    pred, ref = cls.tissue_masks(classes[z]), cls.tissue_masks(case.label.array[z])
    analysed_myo_ml = float(ref["myocardium"].sum()) * case.label.voxel_volume_mm3 / 1000.0
    assert abs(res.summary["myocardium_ml"] - analysed_myo_ml) <= MYO_VOLUME_REL_TOL * analysed_myo_ml, \
        (res.summary["myocardium_ml"], analysed_myo_ml)
    for name, floor in DICE_FLOOR.items():
        assert dice(pred[name], ref[name]) >= floor, (name, dice(pred[name], ref[name]))


def test_channel_order_and_anchor_come_from_the_model_manifest():
    """The network's input channels are the sequences in the order the manifest records
    (``preprocessing.channels``): a model trained as LGE, T2w, bSSFP is fed in that order, not in the
    pipeline's default order.  Unknown sequences, a list that does not fit the input shape and an anchor
    other than LGE (results are drawn on the LGE images) are refused with the key named."""
    import dataclasses

    from pipelines.runtime.manifest import ModelManifest, TensorSpec

    bundled = ModelManifest.load(bundled_models_dir() / "myops-unet" / "manifest.json")
    opts = MyopsOptions.parse({})

    def with_pre(channels, anchor="lge", n_in=None):
        spec = bundled.inputs[0]
        shape = list(spec.shape)
        shape[1] = len(channels) if n_in is None else n_in
        return dataclasses.replace(bundled, preprocessing={**bundled.preprocessing, "channels": list(channels),
                                                           "anchor": anchor},
                                   inputs=(TensorSpec(spec.name, tuple(shape), spec.dtype),), trt_profile={})

    assert MyopsPipeline._config(bundled, opts).channels == tuple(bundled.preprocessing["channels"])
    cfg = MyopsPipeline._config(with_pre(("lge", "t2", "bssfp")), opts)
    assert cfg.channels == ("lge", "t2", "bssfp") and cfg.anchor == "lge"
    with pytest.raises(PipelineInputError, match=r"preprocessing.channels \['lge', 't1'"):
        MyopsPipeline._config(with_pre(("lge", "t1", "bssfp")), opts)
    with pytest.raises(PipelineInputError, match="LGE included"):
        MyopsPipeline._config(with_pre(("t2", "bssfp")), opts)
    with pytest.raises(PipelineInputError, match="preprocessing.anchor 't2'"):
        MyopsPipeline._config(with_pre(("bssfp", "lge", "t2"), anchor="t2"), opts)
    with pytest.raises(PipelineInputError, match=r"expected \(N, 3, R, R\)"):
        MyopsPipeline._config(with_pre(("bssfp", "lge", "t2"), n_in=2), opts)
