"""Small 2D U-Net for myocardial pathology segmentation (three sequences in, classes out).

Input (N, 3, 128, 128) float32 in [0, 255] (bSSFP, LGE, T2w); the [0, 255] -> [-1, 1] scaling is the
first operation of the network, so the exported ONNX model takes the preprocessing output as is.
Output: logits (N, K, 128, 128).  Static spatial size, batch dynamic; opset 17 friendly (conv,
instance-free BatchNorm folded at export, max-pool, transposed conv, concat).
"""
from __future__ import annotations

import torch
from torch import nn

from training.layers import conv_block as _block

__all__ = ["UNet2D"]


class UNet2D(nn.Module):
    def __init__(self, in_channels: int = 3, num_classes: int = 6, base: int = 16, depth: int = 4) -> None:
        super().__init__()
        self.config = {"in_channels": in_channels, "num_classes": num_classes, "base": base, "depth": depth}
        widths = [base * 2 ** i for i in range(depth)]
        self.down = nn.ModuleList()
        c = in_channels
        for w in widths:
            self.down.append(_block(c, w))
            c = w
        self.pool = nn.MaxPool2d(2)
        self.bottom = _block(widths[-1], widths[-1] * 2)
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        c = widths[-1] * 2
        for w in reversed(widths):
            self.up.append(nn.ConvTranspose2d(c, w, 2, stride=2))
            self.dec.append(_block(2 * w, w))
            c = w
        self.head = nn.Conv2d(c, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * (2.0 / 255.0) - 1.0
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(x)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips)):
            x = dec(torch.cat([up(x), skip], dim=1))
        return self.head(x)
