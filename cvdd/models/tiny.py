"""Tiny test models (2-3 BN layers, a few channels) for fast tests and the `tiny` preset.

Two different architectures, so committee code paths that mix members are exercised.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import register_model
from .base import Classifier, scale_width

__all__ = ["TinyCNN", "TinyResNet", "test_tiny_cnn", "test_tiny_resnet"]


class TinyCNN(Classifier):
    """conv-BN-ReLU, then a stride-2 conv-BN-ReLU with twice the channels."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__()
        self.num_classes, self.in_channels = num_classes, in_channels
        c = scale_width(8, width)
        self.conv1 = nn.Conv2d(in_channels, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * c)
        self.num_features = 2 * c
        self.linear = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)


class TinyResNet(Classifier):
    """Stride-2 stem conv-BN-ReLU followed by one identity residual block (3 BN layers)."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__()
        self.num_classes, self.in_channels = num_classes, in_channels
        c = scale_width(12, width)
        self.conv1 = nn.Conv2d(in_channels, c, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(c)
        self.num_features = c
        self.linear = nn.Linear(c, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        stem = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(stem)))
        out = F.relu(self.bn3(self.conv3(out)) + stem)
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)


@register_model
def test_tiny_cnn(num_classes: int, in_channels: int = 3, width: float = 1.0) -> TinyCNN:
    """Two conv-BN layers, 8 and 16 channels at width 1.0."""
    return TinyCNN(num_classes, in_channels, width)


@register_model
def test_tiny_resnet(num_classes: int, in_channels: int = 3, width: float = 1.0) -> TinyResNet:
    """Three conv-BN layers with a residual connection, 12 channels at width 1.0."""
    return TinyResNet(num_classes, in_channels, width)


# Their names start with test_ (house naming for test models); stop pytest from collecting them.
test_tiny_cnn.__test__ = False
test_tiny_resnet.__test__ = False
