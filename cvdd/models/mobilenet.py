"""Small-resolution MobileNetV2 (method.md §8.1): stride-1 stem and second stage, no dropout.

Keeps a quirk of the pytorch-cifar definition CV-DD trains: stride-1 blocks whose channel count
changes get a 1×1 conv + BN shortcut (standard MobileNetV2 has no residual there).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import register_model
from .base import Classifier, scale_width

__all__ = ["MobileNetV2", "mobilenetv2"]

# (expansion t, out channels c, repeats n, first stride s); strides of the stem and of the
# 24-channel stage are 1 instead of ImageNet's 2 (method.md §8.1).
_CFG = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class Block(nn.Module):
    """Inverted residual: 1×1 expand, 3×3 depthwise, 1×1 linear projection."""

    def __init__(self, in_planes: int, out_planes: int, expansion: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        planes = expansion * in_planes
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(
            planes, planes, 3, stride=stride, padding=1, groups=planes, bias=False
        )
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride == 1 and in_planes != out_planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, 1, bias=False),
                nn.BatchNorm2d(out_planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        # Residual only when the block keeps the resolution.
        return out + self.shortcut(x) if self.stride == 1 else out


class MobileNetV2(Classifier):
    def __init__(self, num_classes: int, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__()
        self.num_classes, self.in_channels = num_classes, in_channels
        stem = scale_width(32, width)
        self.conv1 = nn.Conv2d(in_channels, stem, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        layers, in_planes = [], stem
        for expansion, out, repeats, stride in _CFG:
            out = scale_width(out, width)
            for s in [stride] + [1] * (repeats - 1):
                layers.append(Block(in_planes, out, expansion, s))
                in_planes = out
        self.layers = nn.Sequential(*layers)
        self.num_features = scale_width(1280, width)
        self.conv2 = nn.Conv2d(in_planes, self.num_features, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(self.num_features)
        self.linear = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(self.layers(out))))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)


@register_model
def mobilenetv2(num_classes: int, in_channels: int = 3, width: float = 1.0) -> MobileNetV2:
    """MobileNetV2 for 28-64 px inputs (total stride 8)."""
    return MobileNetV2(num_classes, in_channels, width)
