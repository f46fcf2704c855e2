"""A small 2D U-Net for 2.5D calcium segmentation (3 neighbouring slices in, background + 8 classes out)."""
from __future__ import annotations

import torch
from torch import nn

from training.layers import conv_block as _block

__all__ = ["UNet2D"]


class UNet2D(nn.Module):
    """U-Net with ``depth`` poolings; channels base * 2**level.  Input sides must be divisible by 2**depth."""

    def __init__(self, in_channels: int = 3, n_classes: int = 9, base: int = 12, depth: int = 3) -> None:
        super().__init__()
        self.config = {"in_channels": in_channels, "n_classes": n_classes, "base": base, "depth": depth}
        ch = [base * 2 ** i for i in range(depth + 1)]
        self.down = nn.ModuleList([_block(in_channels, ch[0])] + [_block(ch[i], ch[i + 1]) for i in range(depth)])
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList([nn.ConvTranspose2d(ch[i + 1], ch[i], 2, stride=2) for i in reversed(range(depth))])
        self.dec = nn.ModuleList([_block(2 * ch[i], ch[i]) for i in reversed(range(depth))])
        self.head = nn.Conv2d(ch[0], n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, dec in zip(self.up, self.dec):
            x = dec(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)
