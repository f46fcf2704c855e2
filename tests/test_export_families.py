"""Export a tiny stand-in of every model family the pipelines use; ORT must match torch; load by manifest.

The stand-ins use the same layer types as the real models (Conv3d video
backbone with BatchNorm + an LSTM(proj_size) / GRU / TransformerEncoderLayer
head over views; 2D and 3D U-Nets with skip connections and upsampling; a
3-channel 2D U-Net for MyoPS) at toy sizes so the whole file runs in seconds.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from export.onnx_export import ExportVerificationError, export_onnx
from export.verify import compare_outputs
from pipelines.runtime import ModelManifest, ModelStore, Provenance
from pipelines.runtime.settings import ModelsSection

PROV = Provenance(trained_on="synthetic phantoms", synthetic=True, date="2026-11-24", code_version="test",
                  metrics={"note": "untrained stand-in"}, notes="test model")


# --------------------------------------------------------------------------- stand-ins


class TinyVideoBackbone(nn.Module):
    """R3D-18-like: Conv3d stem + BN + ReLU, a residual Conv3d block, global pool -> feature per clip."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv3d(3, width, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
                                  nn.BatchNorm3d(width), nn.ReLU(inplace=True))
        self.block = nn.Sequential(nn.Conv3d(width, width, 3, padding=1, bias=False), nn.BatchNorm3d(width),
                                   nn.ReLU(inplace=True), nn.Conv3d(width, width, 3, padding=1, bias=False),
                                   nn.BatchNorm3d(width))
        self.pool = nn.AdaptiveAvgPool3d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.block(x))
        return self.pool(x).flatten(1)


class MultiViewSyntax(nn.Module):
    """(batch, views, 3, T, H, W) -> 2 outputs per study: backbone per view, head over views, mean."""

    def __init__(self, head: str, width: int = 8) -> None:
        super().__init__()
        self.backbone = TinyVideoBackbone(width)
        self.head_kind = head
        if head == "lstm":
            self.lstm = nn.LSTM(width, 16, proj_size=2, batch_first=True)
        elif head == "gru":
            self.gru = nn.GRU(width, 16, batch_first=True)
            self.drop = nn.Dropout(0.2)
            self.fc = nn.Linear(16, 2)
        elif head == "transformer":
            self.enc = nn.TransformerEncoderLayer(d_model=width, nhead=4, dim_feedforward=16, batch_first=True)
            self.fc = nn.Linear(width, 2)
        else:
            raise ValueError(head)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        b, v = video.shape[0], video.shape[1]
        feats = self.backbone(video.flatten(0, 1)).reshape(b, v, -1)
        if self.head_kind == "lstm":
            out, _ = self.lstm(feats)
        elif self.head_kind == "gru":
            out, _ = self.gru(feats)
            out = self.fc(self.drop(out))
        else:
            out = self.fc(self.enc(feats))
        return out.mean(dim=1)


class TinyUNet(nn.Module):
    """Two-level U-Net (2D or 3D): conv blocks, max-pool down, transposed-conv or interpolate up, skip concat."""

    def __init__(self, in_ch: int, n_classes: int, dims: int = 2, width: int = 8, up: str = "transpose") -> None:
        super().__init__()
        Conv = nn.Conv2d if dims == 2 else nn.Conv3d
        Norm = nn.BatchNorm2d if dims == 2 else nn.InstanceNorm3d
        Pool = nn.MaxPool2d if dims == 2 else nn.MaxPool3d
        UpT = nn.ConvTranspose2d if dims == 2 else nn.ConvTranspose3d

        def block(i: int, o: int) -> nn.Sequential:
            return nn.Sequential(Conv(i, o, 3, padding=1), Norm(o), nn.ReLU(inplace=True),
                                 Conv(o, o, 3, padding=1), Norm(o), nn.ReLU(inplace=True))

        self.enc1, self.enc2 = block(in_ch, width), block(width, 2 * width)
        self.pool = Pool(2)
        self.bottom = block(2 * width, 4 * width)
        self.up_kind = up
        if up == "transpose":
            self.up2, self.up1 = UpT(4 * width, 2 * width, 2, stride=2), UpT(2 * width, width, 2, stride=2)
        else:
            self.up2, self.up1 = Conv(4 * width, 2 * width, 1), Conv(2 * width, width, 1)
        self.dec2, self.dec1 = block(4 * width, 2 * width), block(2 * width, width)
        self.head = Conv(width, n_classes, 1)
        self.mode = "bilinear" if dims == 2 else "trilinear"

    def _up(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.up_kind == "transpose":
            return layer(x)
        return layer(nn.functional.interpolate(x, scale_factor=2, mode=self.mode, align_corners=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        b = self.bottom(self.pool(e2))
        d2 = self.dec2(torch.cat([self._up(self.up2, b), e2], 1))
        d1 = self.dec1(torch.cat([self._up(self.up1, d2), e1], 1))
        return self.head(d1)


def _randomise_bn(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial BatchNorm statistics so an export that drops them would be caught."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def syntax_model(head: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return _randomise_bn(MultiViewSyntax(head), seed)


def unet_model(in_ch: int, n_classes: int, dims: int, up: str = "transpose", seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return _randomise_bn(TinyUNet(in_ch, n_classes, dims, up=up), seed)


SYNTAX_KW = dict(
    task="syntax-artery-regression", input_names=["video"], output_names=["output"],
    dynamic_axes={"video": {0: "batch", 1: "views"}, "output": {0: "batch"}},
    preprocessing={"frames": 4, "size": [16, 16], "channels": 3, "scale": 1 / 255,
                   "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    calibration={"fold0": {"a": 1.0, "b": 0.0}},
)
SYNTAX_TRT = {"video": {"min": [1, 1, 3, 4, 16, 16], "opt": [1, 2, 3, 4, 16, 16], "max": [2, 6, 3, 4, 16, 16]}}

SEG_LABELS = [
    {"value": 0, "name": "background", "code": None},
    {"value": 1, "name": "scar", "code": {"value": "12402003", "scheme": "SCT", "meaning": "Scar tissue"},
     "category": {"value": "49755003", "scheme": "SCT", "meaning": "Morphologically abnormal structure"}},
    {"value": 2, "name": "edema", "code": {"value": "79654002", "scheme": "SCT", "meaning": "Edema"},
     "category": {"value": "49755003", "scheme": "SCT", "meaning": "Morphologically abnormal structure"}},
]


def export_syntax(head: str, out: Path, name: str, version: str = "1", seed: int = 0, **extra):
    model = syntax_model(head, seed)
    g = torch.Generator().manual_seed(100 + seed)
    x = torch.randn(1, 2, 3, 4, 16, 16, generator=g)
    checks = [(torch.randn(2, 3, 3, 4, 16, 16, generator=g),), (torch.randn(1, 5, 3, 4, 16, 16, generator=g),)]
    return model, export_onnx(model, (x,), out, name=name, version=version, provenance=PROV, check_inputs=checks,
                              trt_profile=SYNTAX_TRT, verbose=False, **SYNTAX_KW, **extra)


# --------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.mark.parametrize("head", ["lstm", "gru", "transformer"])
def test_syntax_multiview_heads_export_and_match(models_dir: Path, head: str, capsys: pytest.CaptureFixture) -> None:
    model, report = export_syntax(head, models_dir, f"syntax-{head}")
    assert report.comparison.ok and report.comparison.compared == 3
    assert report.comparison.max_abs < 1e-4
    if head == "lstm":
        assert report.lstm_rewrites == 1  # proj_size LSTM rewritten for ONNX
    man = ModelManifest.load(models_dir / f"syntax-{head}" / "manifest.json")
    assert man.inputs[0].shape == ("batch", "views", 3, 4, 16, 16)
    assert man.outputs[0].shape == ("batch", 2)
    assert man.trt_profile["video"].max == (2, 6, 3, 4, 16, 16)
    assert man.provenance.synthetic and man.provenance.trained_on == "synthetic phantoms"

    # Load through the runtime by manifest and compare with torch on a view count not seen at export.
    store = ModelStore([models_dir], ModelsSection(providers=("cpu",)))
    handle = store.acquire(f"syntax-{head}")
    x = torch.randn(2, 4, 3, 4, 16, 16)
    got = handle.run({"video": x.numpy()})["output"]
    with torch.no_grad():
        ref = model(x).numpy()
    cmp = compare_outputs(["output"], [ref], [got], 1e-4, 1e-3)
    assert cmp.ok, cmp.summary()
    assert handle.info.version == "1" and handle.info.provider == "cpu"


@pytest.mark.parametrize(
    "name,in_ch,n_cls,dims,up,shape",
    [
        ("calcium-unet2d", 1, 3, 2, "transpose", (2, 1, 32, 32)),
        ("calcium-unet3d", 1, 2, 3, "interpolate", (1, 1, 8, 16, 16)),
        ("myops-unet", 3, 3, 2, "interpolate", (2, 3, 32, 32)),
    ],
)
def test_unet_families_export_and_match(models_dir: Path, name: str, in_ch: int, n_cls: int, dims: int, up: str,
                                        shape: tuple[int, ...]) -> None:
    model = unet_model(in_ch, n_cls, dims, up)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(*shape, generator=g)
    check = torch.randn(3, *shape[1:], generator=g)
    report = export_onnx(
        model, (x,), models_dir, name=name, version="2026.11", task="segmentation",
        input_names=["image"], output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        preprocessing={"size": list(shape[2:]), "window": [-200, 1200] if name.startswith("calcium") else None,
                       "channels": in_ch},
        labels=SEG_LABELS[:n_cls], calibration={}, provenance=PROV, check_inputs=[(check,)], verbose=False,
    )
    assert report.comparison.ok, report.comparison.summary()
    man = ModelManifest.load(report.manifest_path)
    assert man.labels[1].code is not None and man.labels[1].code.value == "12402003"
    assert man.trt_profile["image"].max[0] == 3

    store = ModelStore([models_dir], ModelsSection(providers=("cpu",)))
    handle = store.acquire(name)
    batch = torch.randn(5, *shape[1:])
    out = handle.run_batched({"image": batch.numpy()})["logits"]  # chunks of the profile max (3): 3 + 2
    with torch.no_grad():
        ref = model(batch).numpy()
    assert out.shape == ref.shape
    assert compare_outputs(["logits"], [ref], [out], 1e-4, 1e-3).ok


def test_fp16_variant_written_and_checked(tmp_path: Path) -> None:
    _, report = export_syntax("gru", tmp_path, "syntax-fp16", fp16=True)
    man = report.manifest
    assert "fp16" in man.variants and (report.directory / "model.fp16.onnx").is_file()
    assert report.fp16_comparison is not None and report.fp16_comparison.ok
    assert man.variants["fp16"].max_abs_error == report.fp16_comparison.max_abs
    # fp32 remains the file the runtime loads by default
    assert ModelStore([tmp_path], ModelsSection(providers=("cpu",))).acquire("syntax-fp16").path.name == "model.onnx"


def test_simplified_export_still_matches(tmp_path: Path) -> None:
    pytest.importorskip("onnxslim")
    model = unet_model(1, 2, 2)
    report = export_onnx(model, (torch.randn(1, 1, 16, 16),), tmp_path, name="simple", version="1", task="seg",
                         input_names=["image"], output_names=["logits"], provenance=PROV, simplify=True,
                         verbose=False)
    assert report.simplified and report.comparison.ok


class _Broken(nn.Module):
    """Uses a different code path when traced, so the exported graph is wrong: the check must catch it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return x * 1.01
        return x


def test_export_fails_above_tolerance_and_prints_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ExportVerificationError) as exc:
        export_onnx(_Broken(), (torch.ones(1, 4),), tmp_path, name="broken", version="1", task="t",
                    input_names=["x"], output_names=["y"], provenance=PROV, atol=1e-4, rtol=1e-3)
    assert "max abs error 1.000e-02" in str(exc.value)
    assert "max abs error" in capsys.readouterr().out
    assert not (tmp_path / "broken").exists()  # nothing installed
    assert not any(p.name.startswith(".broken") for p in tmp_path.iterdir())  # temp dir cleaned up


def test_manifest_json_is_plain_and_complete(models_dir: Path) -> None:
    data = json.loads((models_dir / "syntax-lstm" / "manifest.json").read_text())
    for key in ("name", "version", "task", "inputs", "outputs", "preprocessing", "labels", "calibration",
                "provenance", "opset", "sha256", "file", "format_version", "trt_profile", "verification"):
        assert key in data
    assert data["opset"] == 17
    assert data["verification"]["max_abs_error"] <= data["verification"]["atol"]
