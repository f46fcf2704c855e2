"""Building blocks shared by the training models (kept here so that the segmentation nets of the
calcium and myops areas stay the same architecture family and export the same ops)."""
from __future__ import annotations

from torch import nn

__all__ = ["conv_block"]


def conv_block(cin: int, cout: int) -> nn.Sequential:
    """Two 3x3 convolutions, each followed by BatchNorm (folded at export) and ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )
