"""Small-resolution DenseNet-121 (method.md §8.1): 3×3 stride-1 stem without BN or pooling."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import register_model
from .base import Classifier, scale_width

__all__ = ["DenseNet", "densenet121"]


class Bottleneck(nn.Module):
    """BN-ReLU-1×1 (4g) - BN-ReLU-3×3 (g); the g new maps are prepended to the input."""

    def __init__(self, in_planes: int, growth: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, 4 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([out, x], 1)


class Transition(nn.Module):
    """BN-ReLU-1×1 conv (compression) then 2×2 average pooling."""

    def __init__(self, in_planes: int, out_planes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_planes)
        self.conv = nn.Conv2d(in_planes, out_planes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNet(Classifier):
    def __init__(
        self,
        num_blocks: tuple[int, int, int, int],
        num_classes: int,
        in_channels: int = 3,
        width: float = 1.0,
        growth: int = 32,
        reduction: float = 0.5,
    ) -> None:
        super().__init__()
        self.num_classes, self.in_channels = num_classes, in_channels
        growth = scale_width(growth, width)  # width scales the growth rate, hence every stage
        planes = 2 * growth
        self.conv1 = nn.Conv2d(in_channels, planes, 3, padding=1, bias=False)
        for i, n in enumerate(num_blocks, start=1):
            dense = nn.Sequential(*[Bottleneck(planes + j * growth, growth) for j in range(n)])
            setattr(self, f"dense{i}", dense)
            planes += n * growth
            if i < len(num_blocks):  # a transition after every dense block but the last
                out_planes = int(math.floor(planes * reduction))
                setattr(self, f"trans{i}", Transition(planes, out_planes))
                planes = out_planes
        self.bn = nn.BatchNorm2d(planes)
        self.num_features = planes
        self.linear = nn.Linear(planes, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.trans1(self.dense1(out))
        out = self.trans2(self.dense2(out))
        out = self.trans3(self.dense3(out))
        out = F.relu(self.bn(self.dense4(out)))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)


@register_model
def densenet121(num_classes: int, in_channels: int = 3, width: float = 1.0) -> DenseNet:
    """DenseNet-121: blocks [6, 12, 24, 16], growth 32 × width, compression 0.5."""
    return DenseNet((6, 12, 24, 16), num_classes, in_channels, width)
