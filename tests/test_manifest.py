"""Manifest validation: round trip, and one clear error naming file and key for each kind of mistake."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.runtime.manifest import DomainRange, LabelSpec, ManifestError, ModelManifest, Provenance, TensorSpec


def _manifest() -> ModelManifest:
    return ModelManifest(
        name="myops-unet", version="2026.11", task="segmentation",
        inputs=(TensorSpec("image", ("batch", 3, 256, 256), "float32"),),
        outputs=(TensorSpec("logits", ("batch", 4, 256, 256), "float32"),),
        preprocessing={"size": [256, 256], "spacing": [1.0, 1.0]},
        labels=(LabelSpec(0, "background"),
                LabelSpec(1, "scar", {"value": "12402003", "scheme": "SCT", "meaning": "Scar tissue"},
                          {"value": "49755003", "scheme": "SCT", "meaning": "Morphologically abnormal structure"})),
        calibration={}, provenance=Provenance("synthetic phantoms", True, "2026-11-24", "abc", {"dice_scar": 0.5}, "",
                                              {"generator": "training.myops.phantom", "cases": 40, "generated": True}),
        opset=17, sha256="a" * 64,
        trt_profile={"image": {"min": [1, 3, 256, 256], "opt": [4, 3, 256, 256], "max": [16, 3, 256, 256]}},
        input_domain={"pixel_spacing_mm": {"min": 0.8, "max": 2.5, "unit": "mm"},
                      "modality": DomainRange(one_of=("MR",))},
        output_domain={"low_confidence_fraction": {"min": 0.0, "max": 0.3, "note": "2 x the largest on phantoms"}},
    )


def test_round_trip(tmp_path: Path) -> None:
    m = _manifest()
    path = m.save(tmp_path)
    back = ModelManifest.load(path)
    assert back == m
    assert back.labels[1].code.meaning == "Scar tissue"
    assert back.inputs[0].dynamic_axes == {0: "batch"}
    assert back.provenance.training_data["cases"] == 40
    assert back.input_domain["pixel_spacing_mm"] == DomainRange(min=0.8, max=2.5, unit="mm")
    assert back.output_domain["low_confidence_fraction"] == DomainRange(min=0.0, max=0.3,
                                                                        note="2 x the largest on phantoms")


def test_domain_range_violation() -> None:
    spacing = DomainRange(min=0.8, max=2.5, unit="mm")
    assert spacing.violation(1.0) is None and spacing.violation(0.8) is None
    assert spacing.violation(3.0) == "above the trained range 0.8-2.5 mm"
    assert spacing.violation(0.5) == "below the trained range 0.8-2.5 mm"
    assert DomainRange(min=80, unit="kV").violation(70) == "below the trained range >= 80 kV"
    assert DomainRange(one_of=("MR",)).violation("CT") == "expected one of MR"


@pytest.mark.parametrize(
    "mutate,key,text",
    [
        (lambda d: d.update(sha256="xyz"), "sha256", "64 lower-case hex"),
        (lambda d: d.update(colour="red"), "<root>", "unknown key(s) 'colour'"),
        (lambda d: d.pop("version"), "version", "missing (required)"),
        (lambda d: d["inputs"][0].update(shape=["batch", 0, 4]), "inputs[0].shape[1]", ">= 1"),
        (lambda d: d["inputs"][0].update(dtype="complex64"), "inputs[0].dtype", "not allowed"),
        (lambda d: d["labels"][1]["code"].pop("scheme"), "labels[1].code.scheme", "missing"),
        (lambda d: d["provenance"].update(date="yesterday"), "provenance.date", "ISO date"),
        (lambda d: d["provenance"].update(synthetic="yes"), "provenance.synthetic", "expected bool"),
        (lambda d: d["trt_profile"]["image"].update(max=[16, 3, 128, 256]), "trt_profile.image.max[2]",
         "fixed input dimension"),
        (lambda d: d["trt_profile"]["image"].update(min=[8, 3, 256, 256]), "trt_profile.image", "min <= opt <= max"),
        (lambda d: d.update(format_version=2), "format_version", "not supported"),
        (lambda d: d.update(name="Bad Name"), "name", "lower-case"),
        (lambda d: d["input_domain"]["pixel_spacing_mm"].update(min=3.0), "input_domain.pixel_spacing_mm", "above max"),
        (lambda d: d["input_domain"].update(kvp={}), "input_domain.kvp", "give one_of or at least one"),
        (lambda d: d["input_domain"]["modality"].update(min=1), "input_domain.modality", "not both"),
        (lambda d: d.update(labels=[{"value": 1, "name": "a", "code": None}, {"value": 1, "name": "b", "code": None}]),
         "labels", "duplicate"),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, mutate, key: str, text: str) -> None:
    data = _manifest().to_dict()
    mutate(data)
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError) as exc:
        ModelManifest.load(path)
    msg = str(exc.value)
    assert msg.startswith(str(path)), msg
    assert f"key '{key}'" in msg and text in msg, msg


def test_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="manifest not found"):
        ModelManifest.load(tmp_path / "nope.json")
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(ManifestError, match="not valid JSON"):
        ModelManifest.load(tmp_path)


def test_output_domain_is_validated_like_input_domain(tmp_path: Path) -> None:
    data = _manifest().to_dict()
    data["output_domain"]["low_confidence_fraction"]["min"] = 0.5
    with pytest.raises(ManifestError, match=r"output_domain\.low_confidence_fraction.*above max"):
        ModelManifest.from_dict(data, "m.json")
    data["output_domain"]["low_confidence_fraction"] = {"max": 0.3, "comment": "x"}
    with pytest.raises(ManifestError, match="unknown key.*'comment'"):
        ModelManifest.from_dict(data, "m.json")


def test_bundled_manifests_carry_their_ranges() -> None:
    """Every bundled model declares the input ranges it was trained for; the ones whose output the
    pipelines score declare the accepted range of that score, each range saying how it was chosen."""
    from pipelines.runtime import bundled_models_dir

    root = bundled_models_dir()
    for d in sorted(p for p in root.iterdir() if (p / "manifest.json").is_file()):
        m = ModelManifest.load(d)
        assert m.input_domain and all(r.note for r in m.input_domain.values()), d.name
        expected = {"calcium-unet2d": {"low_confidence_fraction"},
                    "myops-unet": {"low_confidence_fraction", "myocardium_ml"},
                    "syntax-artery": set()}.get(d.name, {"fold_spread"})
        assert set(m.output_domain) == expected and all(r.note for r in m.output_domain.values()), d.name
