"""Small-resolution ResNet-18/50/101 (method.md §8.1): 3×3 stride-1 stem, no maxpool, global
pooling.

Attribute names (conv1, bn1, layer1..4, shortcut, linear) follow the pytorch-cifar layout that
the CV-DD committee checkpoints use, so such state_dicts map key for key.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import register_model
from .base import Classifier, scale_width

__all__ = ["ResNet", "resnet18", "resnet50", "resnet101"]


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    """Identity when shapes agree, else the projection 1×1 conv + BN (method.md §8.1)."""
    if stride == 1 and in_planes == out_planes:
        return nn.Sequential()
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False),
        nn.BatchNorm2d(out_planes),
    )


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = _shortcut(in_planes, out_planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class ResNet(Classifier):
    """Stages 64/128/256/512 (× width) with strides 1/2/2/2."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        num_blocks: tuple[int, int, int, int],
        num_classes: int,
        in_channels: int = 3,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        self.num_classes, self.in_channels = num_classes, in_channels
        stem = scale_width(64, width)
        self.conv1 = nn.Conv2d(in_channels, stem, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.in_planes = stem
        self.layer1 = self._make_layer(block, scale_width(64, width), num_blocks[0], 1)
        self.layer2 = self._make_layer(block, scale_width(128, width), num_blocks[1], 2)
        self.layer3 = self._make_layer(block, scale_width(256, width), num_blocks[2], 2)
        self.layer4 = self._make_layer(block, scale_width(512, width), num_blocks[3], 2)
        self.num_features = self.in_planes
        self.linear = nn.Linear(self.num_features, num_classes)

    def _make_layer(self, block, planes: int, num_blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):  # only the first block of a stage downsamples
            layers.append(block(self.in_planes, planes, s))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        # Adaptive pooling replaces pytorch-cifar's fixed avg_pool2d(4): any input size works.
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)


@register_model
def resnet18(num_classes: int, in_channels: int = 3, width: float = 1.0) -> ResNet:
    """ResNet-18, BasicBlock [2, 2, 2, 2]."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, in_channels, width)


@register_model
def resnet50(num_classes: int, in_channels: int = 3, width: float = 1.0) -> ResNet:
    """ResNet-50, Bottleneck [3, 4, 6, 3]."""
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes, in_channels, width)


@register_model
def resnet101(num_classes: int, in_channels: int = 3, width: float = 1.0) -> ResNet:
    """ResNet-101, Bottleneck [3, 4, 23, 3]."""
    return ResNet(Bottleneck, (3, 4, 23, 3), num_classes, in_channels, width)
