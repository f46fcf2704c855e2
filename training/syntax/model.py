"""CardioSyntax models in torch: R3D-18 backbone, multi-view heads, artery classifier.

Module names follow the published checkpoints so that they load with ``strict=True``:

- backbone stage (``SyntaxBackbone``): ``model.stem.*``, ``model.layer{1..4}.*``, ``model.fc.*``
  (torchvision r3d_18 names under the prefix ``model.``; fc = Linear(512, num_classes)).
- full model (``SyntaxMultiView``): ``model.*`` without ``model.fc.*`` (fc is Identity -> 512-d feature
  per cine) plus the head: ``lstm.*`` (lstm_mean / lstm_last: LSTM(512, 128, proj_size=2)),
  ``gru.*`` + ``fc.*`` (gru_*: GRU(512, 128), Dropout 0.2, Linear(128, 2)), ``fc.*`` (mean: Linear(512, 2)),
  ``encoder.*`` + ``fc.*`` (bert_*: TransformerEncoderLayer(512, 4 heads, ff 128) + Linear(512, 2)),
  ``cls_token`` (bert_cls, bert_cls2).  Only the lstm_mean names are confirmed by the published files;
  the others are our naming (documented in docs/syntax.md).
- artery classifier (``ArteryClassifier``): r3d_18 with fc = Linear(512, 1), names ``model.*``.

``widths`` gives a reduced R3D-18 (same topology, narrower layers) for the bundled phantom models;
the default (64, 128, 256, 512) is exactly torchvision's r3d_18 (a test compares the state_dict keys
and shapes).  Nothing is downloaded: torchvision is never asked for pretrained weights.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torchvision.models.video.resnet import BasicBlock, Conv3DSimple

__all__ = ["VARIANTS", "R3D", "SyntaxBackbone", "SyntaxMultiView", "ArteryClassifier", "FULL_WIDTHS"]

FULL_WIDTHS = (64, 128, 256, 512)
VARIANTS = ("mean_out", "mean", "lstm_mean", "lstm_last", "gru_mean", "gru_last", "bert_mean", "bert_cls", "bert_cls2")


class R3D(nn.Module):
    """torchvision's VideoResNet(BasicBlock, Conv3DSimple, [2, 2, 2, 2]) with configurable widths."""

    def __init__(self, num_classes: int = 2, widths: Sequence[int] = FULL_WIDTHS) -> None:
        super().__init__()
        w = tuple(int(v) for v in widths)
        if len(w) != 4 or min(w) < 1:
            raise ValueError(f"widths must be 4 positive integers, got {widths!r}")
        self.widths = w
        self.stem = nn.Sequential(
            nn.Conv3d(3, w[0], kernel_size=(3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
            nn.BatchNorm3d(w[0]), nn.ReLU(inplace=True))
        self.inplanes = w[0]
        self.layer1 = self._make_layer(w[0], 1)
        self.layer2 = self._make_layer(w[1], 2)
        self.layer3 = self._make_layer(w[2], 2)
        self.layer4 = self._make_layer(w[3], 2)
        self.avgpool = nn.AdaptiveAvgPool3d((1, 1, 1))
        self.fc: nn.Module = nn.Linear(w[3], num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            ds_stride = Conv3DSimple.get_downsample_stride(stride)
            downsample = nn.Sequential(nn.Conv3d(self.inplanes, planes, kernel_size=1, stride=ds_stride, bias=False),
                                       nn.BatchNorm3d(planes))
        layers = [BasicBlock(self.inplanes, planes, Conv3DSimple, stride, downsample)]
        self.inplanes = planes
        layers.append(BasicBlock(self.inplanes, planes, Conv3DSimple))
        return nn.Sequential(*layers)

    @property
    def feature_dim(self) -> int:
        return self.widths[3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


class SyntaxBackbone(nn.Module):
    """Stage 1: one cine (B, 3, T, H, W) -> (B, num_classes): [classification logit, log(1 + artery score)]."""

    def __init__(self, num_classes: int = 2, widths: Sequence[int] = FULL_WIDTHS) -> None:
        super().__init__()
        self.model = R3D(num_classes, widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class SyntaxMultiView(nn.Module):
    """Stage 2: all cines of one artery (B, V, 3, T, H, W) -> (B, num_classes)."""

    def __init__(self, variant: str = "lstm_mean", num_classes: int = 2, widths: Sequence[int] = FULL_WIDTHS,
                 hidden: int = 128, heads: int = 4, ff: int = 128) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r} (known: {', '.join(VARIANTS)})")
        self.variant = variant
        self.model = R3D(num_classes, widths)
        d = self.model.feature_dim
        if variant != "mean_out":
            self.model.fc = nn.Identity()
        if variant == "mean":
            self.fc = nn.Linear(d, num_classes)
        elif variant.startswith("lstm"):
            self.lstm = nn.LSTM(d, hidden, num_layers=1, batch_first=True, proj_size=num_classes)
        elif variant.startswith("gru"):
            self.gru = nn.GRU(d, hidden, num_layers=1, batch_first=True)
            self.dropout = nn.Dropout(0.2)
            self.fc = nn.Linear(hidden, num_classes)
        elif variant.startswith("bert"):
            layers = 2 if variant == "bert_cls2" else 1
            if layers == 1:
                self.encoder = nn.TransformerEncoderLayer(d, heads, ff, dropout=0.1, batch_first=True)
            else:
                self.encoder = nn.TransformerEncoder(
                    nn.TransformerEncoderLayer(d, heads, ff, dropout=0.1, batch_first=True), layers,
                    enable_nested_tensor=False)
            if variant != "bert_mean":
                self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
            self.fc = nn.Linear(d, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        b, v = x.shape[:2]
        return self.model(x.flatten(0, 1)).reshape(b, v, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def head(self, f: torch.Tensor) -> torch.Tensor:
        """(B, V, feature) -> (B, num_classes)."""
        var = self.variant
        if var == "mean_out":
            return f.mean(1)
        if var == "mean":
            return self.fc(f.mean(1))
        if var.startswith("lstm"):
            out, _ = self.lstm(f)
            return out.mean(1) if var == "lstm_mean" else out[:, -1]
        if var.startswith("gru"):
            out, _ = self.gru(f)
            out = out.mean(1) if var == "gru_mean" else out[:, -1]
            return self.fc(self.dropout(out))
        if var == "bert_mean":
            return self.fc(self.encoder(f).mean(1))
        tok = self.cls_token.expand(f.shape[0], -1, -1)
        return self.fc(self.encoder(torch.cat([tok, f], dim=1))[:, 0])

    def load_backbone(self, backbone_state: dict[str, torch.Tensor]) -> None:
        """Copy a stage-1 backbone state_dict (``model.*`` names) into this model, fc left out
        unless this is ``mean_out`` (which keeps the backbone's fc)."""
        keep = {k: v for k, v in backbone_state.items() if self.variant == "mean_out" or not k.startswith("model.fc.")}
        missing, unexpected = self.load_state_dict(keep, strict=False)
        bad = [k for k in missing if k.startswith("model.")]
        if bad or unexpected:
            raise KeyError(f"backbone state does not fit: missing {bad[:5]}, unexpected {list(unexpected)[:5]}")


class ArteryClassifier(nn.Module):
    """One cine (B, 3, T, H, W) -> (B, 1) logit; sigmoid <= 0.10 left, >= 0.90 right, else other."""

    def __init__(self, widths: Sequence[int] = FULL_WIDTHS) -> None:
        super().__init__()
        self.model = R3D(1, widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
