"""Small-resolution ShuffleNetV2, net_size 0.5 (method.md §8.1): 24-ch stride-1 stem, no maxpool."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import register_model
from .base import Classifier, scale_width

__all__ = ["ShuffleNetV2", "shufflenetv2"]

# net_size 0.5, the only size CV-DD builds: stage channels, final 1×1 conv, blocks per stage.
_STAGE_CHANNELS = (48, 96, 192)
_LAST_CHANNELS = 1024
_NUM_BLOCKS = (3, 7, 3)


def _channel_shuffle(x: torch.Tensor, groups: int = 2) -> torch.Tensor:
    """Interleave channels across the two branches so information mixes between them."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def _dwconv(channels: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, stride=stride, padding=1, groups=channels, bias=False)


class BasicBlock(nn.Module):
    """Split channels in half, transform one half, concatenate, shuffle."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.conv1 = nn.Conv2d(half, half, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = _dwconv(half, 1)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = nn.Conv2d(half, half, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=1)
        out = F.relu(self.bn1(self.conv1(x2)))
        out = self.bn2(self.conv2(out))
        out = F.relu(self.bn3(self.conv3(out)))
        return _channel_shuffle(torch.cat([x1, out], 1))


class DownBlock(nn.Module):
    """Stride-2 block: both branches see the full input and each yields half the outputs."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = out_channels // 2
        # left branch: depthwise 3×3 stride 2, then 1×1
        self.conv1 = _dwconv(in_channels, 2)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        # right branch: 1×1, depthwise 3×3 stride 2, 1×1
        self.conv3 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = _dwconv(mid, 2)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, 1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return _channel_shuffle(torch.cat([left, right], 1))


class ShuffleNetV2(Classifier):
    def __init__(self, num_classes: int, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__()
        self.num_classes, self.in_channels = num_classes, in_channels
        stem = scale_width(24, width)
        self.conv1 = nn.Conv2d(in_channels, stem, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        stages, prev = [], stem
        for channels, blocks in zip(_STAGE_CHANNELS, _NUM_BLOCKS):
            channels = scale_width(channels, width)
            basic = [BasicBlock(channels) for _ in range(blocks)]
            stages.append(nn.Sequential(DownBlock(prev, channels), *basic))
            prev = channels
        self.layer1, self.layer2, self.layer3 = stages
        self.num_features = scale_width(_LAST_CHANNELS, width)
        self.conv2 = nn.Conv2d(prev, self.num_features, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(self.num_features)
        self.linear = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.relu(self.bn2(self.conv2(out)))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)


@register_model
def shufflenetv2(num_classes: int, in_channels: int = 3, width: float = 1.0) -> ShuffleNetV2:
    """ShuffleNetV2 net_size 0.5: stages (48, 96, 192) × width, blocks (3, 7, 3), head 1024."""
    return ShuffleNetV2(num_classes, in_channels, width)
