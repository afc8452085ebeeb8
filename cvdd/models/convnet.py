"""The 3-block ConvNet that the dataset-distillation field uses as its standard student
(DD-Ranking's default): three times conv 3x3 (128 channels) -> instance norm -> ReLU -> 2x2
average pool, then one linear layer on the flattened map.

It has no BatchNorm, so recover's BN matching and BSSL have nothing to read in it: it can be a
student (`validate.student`, `validate.students`) but never a committee member, which
`cvdd.config.STUDENT_ONLY` enforces before a run starts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import register_model
from .base import Classifier, scale_width

__all__ = ["ConvNet3", "convnet3"]

_GRID = 4  # side of the map the head reads: 32 px / 2**3, the usual CIFAR setting


class ConvNet3(Classifier):
    """Three conv-instance norm-ReLU-avg-pool blocks and a linear head.

    The last pool is adaptive to a 4x4 map, so the head has 128 * 16 inputs at any resolution:
    at 32 px this is exactly the 2x2 pool of the usual definition; at 28 px (Fashion-MNIST) it
    keeps the 7th row and column that a 2x2 pool would drop.
    """

    def __init__(self, num_classes: int, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__()
        self.num_classes, self.in_channels = num_classes, in_channels
        c = scale_width(128, width)
        blocks, prev = [], in_channels
        for _ in range(3):
            blocks += [
                nn.Conv2d(prev, c, 3, padding=1),
                # instance norm with a learned scale and shift per channel (GroupNorm with one
                # channel per group is that, and keeps the affine parameters in the state dict)
                nn.GroupNorm(c, c, affine=True),
                nn.ReLU(inplace=True),
            ]
            prev = c
        self.blocks = nn.ModuleList(blocks)
        self.num_features = c * _GRID * _GRID
        self.linear = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for i in range(3):
            conv, norm, act = self.blocks[3 * i : 3 * i + 3]
            out = act(norm(conv(out)))
            out = F.avg_pool2d(out, 2) if i < 2 else F.adaptive_avg_pool2d(out, _GRID)
        return torch.flatten(out, 1)


@register_model
def convnet3(num_classes: int, in_channels: int = 3, width: float = 1.0) -> ConvNet3:
    """3-block ConvNet student, 128 channels at width 1.0; no BatchNorm (students only)."""
    return ConvNet3(num_classes, in_channels, width)
