"""224-px models from torchvision and timm, wrapped to the registry's model contract.

Nothing here downloads: networks are built with random weights, and ImageNet weights come in
through `create_model(..., weights=path)` with a file the user downloaded. Such files use the
library's own key names; `adapt_state_dict` maps them onto the wrapper (prefix `net.`), keeps the
new head when the file's head has 1000 classes, and adapts a 3-channel stem to `in_channels`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import register_model, register_prefix
from .base import Classifier

__all__ = [
    "TV_IMAGENET_FILES",
    "TimmNet",
    "TorchvisionNet",
    "create_timm_model",
    "find_imagenet_weights",
    "imagenet_weight_candidates",
    "imagenet_weight_files",
    "rename_legacy_densenet_keys",
]

_IMAGENET_CLASSES = 1000

# torchvision's published ImageNet-1K files (the file names of its weight URLs, torchvision
# 0.29), first choice first: IMAGENET1K_V1, the weights the paper's era used (method.md §8.2),
# then V2 where one exists. Looked up in a local folder only, never downloaded.
TV_IMAGENET_FILES: dict[str, tuple[str, ...]] = {
    "tv_resnet18": ("resnet18-f37072fd.pth",),
    "tv_resnet50": ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth"),
    "tv_resnet101": ("resnet101-63fe2227.pth", "resnet101-cd907fc2.pth"),
    "tv_densenet121": ("densenet121-a639ec97.pth",),
    "tv_mobilenet_v2": ("mobilenet_v2-b0353104.pth", "mobilenet_v2-7ebf99e0.pth"),
    "tv_shufflenet_v2_x1_0": ("shufflenetv2_x1-5666bf0f80.pth",),
}


def imagenet_weight_candidates(name: str, folder: str | Path) -> list[Path]:
    """Every path where `name`'s published file may lie in a torch hub folder, in search order:
    `<folder>/checkpoints/<file>` (torch hub's cache layout), then `<folder>/<file>`."""
    folder = Path(folder).expanduser()
    files = TV_IMAGENET_FILES.get(name, ())
    return [d / f for f in files for d in (folder / "checkpoints", folder)]


def find_imagenet_weights(name: str, folder: str | Path) -> Path | None:
    """The first existing candidate file for `name`, or None."""
    return next((p for p in imagenet_weight_candidates(name, folder) if p.is_file()), None)


def imagenet_weight_files(
    members: list[str], folder: str | Path, num_classes: int = _IMAGENET_CLASSES
) -> dict[str, Path]:
    """member -> its published file in `folder`; ValueError listing every path looked at."""
    if not str(folder):
        raise ValueError(
            "torchvision's ImageNet weights need --set squeeze.weights_dir=DIR, a folder with "
            "their files (torch hub's cache, e.g. ~/.cache/torch/hub); cvdd never downloads them"
        )
    if num_classes != _IMAGENET_CLASSES:
        raise ValueError(
            f"torchvision's ImageNet weights have {_IMAGENET_CLASSES} classes, the data set "
            f"{num_classes}"
        )
    found = {m: find_imagenet_weights(m, folder) for m in members}
    missing = [m for m, path in found.items() if path is None]
    if not missing:
        return found
    lines = [
        f"{m}: " + (", ".join(map(str, imagenet_weight_candidates(m, folder))) or "none published")
        for m in missing
    ]
    raise ValueError(
        f"torchvision ImageNet weights missing in {Path(folder).expanduser()} for "
        f"{len(missing)} member(s); looked for: " + "; ".join(lines) + ". Copy torchvision's "
        f"files there (names as listed; torchvision ones: {', '.join(TV_IMAGENET_FILES)})"
    )


# Early torchvision DenseNet files name BN/conv parameters "norm.1.weight" where the modules
# now are "norm1"; torchvision renames them when it loads its own files, and so does this.
_LEGACY_DENSE_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12])\.(\w+)$")


def rename_legacy_densenet_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`...denselayerK.norm.1.weight` -> `...denselayerK.norm1.weight`; other keys unchanged."""
    return {_LEGACY_DENSE_KEY.sub(r"\1\2.\3", k): v for k, v in state.items()}


def _resnet_trunk(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    x = net.layer4(net.layer3(net.layer2(net.layer1(x))))
    return torch.flatten(net.avgpool(x), 1)


def _densenet_trunk(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # torchvision's DenseNet.forward applies the final ReLU outside `features`.
    return torch.flatten(F.adaptive_avg_pool2d(F.relu(net.features(x)), 1), 1)


def _mobilenet_trunk(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.flatten(F.adaptive_avg_pool2d(net.features(x), 1), 1)


def _shufflenet_trunk(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = net.stage4(net.stage3(net.stage2(net.maxpool(net.conv1(x)))))
    return net.conv5(x).mean([2, 3])


# arch -> (trunk, module called as the head, its Linear, the first conv); paths are inside `net`.
_TV_ARCHS: dict[str, tuple[Callable, str, str, str]] = {
    "resnet18": (_resnet_trunk, "fc", "fc", "conv1"),
    "resnet50": (_resnet_trunk, "fc", "fc", "conv1"),
    "resnet101": (_resnet_trunk, "fc", "fc", "conv1"),
    "densenet121": (_densenet_trunk, "classifier", "classifier", "features.conv0"),
    "mobilenet_v2": (_mobilenet_trunk, "classifier", "classifier.1", "features.0.0"),
    "shufflenet_v2_x1_0": (_shufflenet_trunk, "fc", "fc", "conv1.0"),
}


def _adapt_input_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Turn RGB stem filters into `in_channels` filters with a similar response to gray input."""
    if in_channels == 1:
        return weight.sum(1, keepdim=True)
    reps = math.ceil(in_channels / weight.shape[1])
    return weight.repeat(1, reps, 1, 1)[:, :in_channels] * (weight.shape[1] / in_channels)


def _check_width(width: float, name: str) -> None:
    if width != 1.0:
        raise ValueError(f"{name} has a fixed width; pass width=1.0 (got {width})")


class _WrappedNet(Classifier):
    """Holds a library network as `self.net`; subclasses set the paths used by the loader."""

    net: nn.Module
    _linear_path: str
    _stem_path: str | None

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map a state_dict (the wrapper's or the library's own layout) onto this wrapper."""
        if not any(k.startswith("net.") for k in state):
            state = {f"net.{k}": v for k, v in state.items()}
        state, own = dict(state), self.state_dict()
        weight, bias = f"net.{self._linear_path}.weight", f"net.{self._linear_path}.bias"
        file_w, own_w = state.get(weight), own.get(weight)
        if (
            file_w is not None
            and own_w is not None
            and file_w.shape != own_w.shape
            and file_w.shape[0] == _IMAGENET_CLASSES
            and file_w.shape[1:] == own_w.shape[1:]
        ):
            # ImageNet backbone for a new task: keep the freshly initialised head.
            state[weight] = own_w
            if bias in state and bias in own:
                state[bias] = own[bias]
        stem = f"net.{self._stem_path}.weight" if self._stem_path else None
        if stem and stem in state and stem in own:
            file_w, own_w = state[stem], own[stem]
            if file_w.shape[1] == 3 and own_w.shape[1] != 3 and file_w.shape[2:] == own_w.shape[2:]:
                state[stem] = _adapt_input_conv(file_w, own_w.shape[1])
        return state


class TorchvisionNet(_WrappedNet):
    """A torchvision classifier with the registry's forward_features / forward_head split."""

    def __init__(self, arch: str, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.num_classes, self.in_channels = num_classes, in_channels
        self._trunk, self._head_path, self._linear_path, self._stem_path = _TV_ARCHS[arch]
        # Imported here: torchvision adds ~1.5 s to `import cvdd.models` and most runs never use it.
        import torchvision

        # weights=None: random init, never a download; torchvision builds the num_classes head.
        self.net = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
        if in_channels != 3:
            old = self.net.get_submodule(self._stem_path)
            new = nn.Conv2d(
                in_channels,
                old.out_channels,
                old.kernel_size,
                stride=old.stride,
                padding=old.padding,
                bias=old.bias is not None,
            )
            parent, _, leaf = self._stem_path.rpartition(".")
            setattr(self.net.get_submodule(parent) if parent else self.net, leaf, new)
        self.num_features = self.net.get_submodule(self._linear_path).in_features

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return super().adapt_state_dict(rename_legacy_densenet_keys(state))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._trunk(self.net, x)

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        return self.net.get_submodule(self._head_path)(feats)


class TimmNet(_WrappedNet):
    """A timm model (`create_model('timm:<name>', ...)`), built without pretrained weights."""

    def __init__(self, net: nn.Module, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.num_classes, self.in_channels = num_classes, in_channels
        self.net = net
        cfg = getattr(net, "pretrained_cfg", None) or {}
        classifier, first_conv = cfg.get("classifier"), cfg.get("first_conv")
        self._linear_path = classifier if isinstance(classifier, str) else "head"
        self._stem_path = first_conv if isinstance(first_conv, str) else None
        # Some timm models add layers between pooling and the classifier (head_hidden_size).
        self.num_features = getattr(net, "head_hidden_size", None) or net.num_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_head(self.net.forward_features(x), pre_logits=True)

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        return self.net.get_classifier()(feats)


def create_timm_model(
    timm_name: str, num_classes: int, in_channels: int = 3, width: float = 1.0, **kwargs
) -> TimmNet:
    """Build `timm.create_model(timm_name, pretrained=False, ...)`, wrapped; kwargs go to timm."""
    _check_width(width, f"timm:{timm_name}")
    try:
        import timm
    except ImportError as e:
        raise ValueError("timm models need the timm package: pip install timm") from e
    if not timm.is_model(timm_name):
        raise ValueError(f"unknown timm model {timm_name!r}; see timm.list_models('pattern*')")
    net = timm.create_model(
        timm_name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kwargs
    )
    return TimmNet(net, num_classes, in_channels)


# `create_model("timm:<name>", ...)` builds any timm model; timm is imported only then (optional)
register_prefix("timm:", create_timm_model)


@register_model
def tv_resnet18(num_classes: int, in_channels: int = 3, width: float = 1.0) -> TorchvisionNet:
    """torchvision ResNet-18 (224 px)."""
    _check_width(width, "tv_resnet18")
    return TorchvisionNet("resnet18", num_classes, in_channels)


@register_model
def tv_resnet50(num_classes: int, in_channels: int = 3, width: float = 1.0) -> TorchvisionNet:
    """torchvision ResNet-50 (224 px)."""
    _check_width(width, "tv_resnet50")
    return TorchvisionNet("resnet50", num_classes, in_channels)


@register_model
def tv_resnet101(num_classes: int, in_channels: int = 3, width: float = 1.0) -> TorchvisionNet:
    """torchvision ResNet-101 (224 px); a student architecture for 224-px data sets."""
    _check_width(width, "tv_resnet101")
    return TorchvisionNet("resnet101", num_classes, in_channels)


@register_model
def tv_densenet121(num_classes: int, in_channels: int = 3, width: float = 1.0) -> TorchvisionNet:
    """torchvision DenseNet-121 (224 px)."""
    _check_width(width, "tv_densenet121")
    return TorchvisionNet("densenet121", num_classes, in_channels)


@register_model
def tv_mobilenet_v2(num_classes: int, in_channels: int = 3, width: float = 1.0) -> TorchvisionNet:
    """torchvision MobileNetV2 (224 px); keeps torchvision's dropout before the classifier."""
    _check_width(width, "tv_mobilenet_v2")
    return TorchvisionNet("mobilenet_v2", num_classes, in_channels)


@register_model
def tv_shufflenet_v2_x1_0(
    num_classes: int, in_channels: int = 3, width: float = 1.0
) -> TorchvisionNet:
    """torchvision ShuffleNetV2 x1.0 (224 px)."""
    _check_width(width, "tv_shufflenet_v2_x1_0")
    return TorchvisionNet("shufflenet_v2_x1_0", num_classes, in_channels)
