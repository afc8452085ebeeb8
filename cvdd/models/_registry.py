"""Model registry, the shared model contract, and loading of local weight files."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "Classifier",
    "create_model",
    "list_models",
    "register_model",
    "scale_width",
]

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_TIMM_PREFIX = "timm:"


class Classifier(nn.Module):
    """Contract every registered model meets.

    Subclasses set `num_classes`, `in_channels`, `num_features` and implement
    `forward_features(x) -> (N, num_features)` (already pooled). The default head is `self.linear`,
    the attribute name the pytorch-cifar style definitions use.
    """

    num_classes: int
    in_channels: int
    num_features: int

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        return self.linear(feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def scale_width(channels: int, width: float) -> int:
    """Scale a channel count by `width`, rounded to a multiple of 4 (at least 4).

    Multiples of 4 keep ShuffleNet's channel split and groups valid; width 1.0 is the identity
    for every channel count in spec §8.1.
    """
    return max(4, int(round(channels * width / 4)) * 4)


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a model builder under its function name; a duplicate name raises ValueError."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = fn
    return fn


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted registered names, optionally filtered by an fnmatch pattern (timm names excluded)."""
    names = sorted(_MODELS)
    return names if pattern is None else [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def create_model(
    name: str,
    num_classes: int,
    in_channels: int = 3,
    width: float = 1.0,
    weights: str | Path | None = None,
    **kwargs,
) -> nn.Module:
    """Build a model from its registered name (or `timm:<name>`), optionally loading local weights.

    Args:
        name: a name from `list_models()`, or `timm:<timm model name>`.
        num_classes: size of the classifier head.
        in_channels: 1 for grayscale, 3 for RGB.
        width: channel multiplier (small-resolution and test models only).
        weights: path to a local state_dict file (or a dict holding one under 'state_dict'/'model').
        **kwargs: passed to the builder.
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width!r}")
    if name.startswith(_TIMM_PREFIX):
        # Imported here: pretrained.py imports this module, and timm is optional.
        from .pretrained import create_timm_model

        builder: Callable[..., nn.Module] = create_timm_model
        kwargs = {"timm_name": name[len(_TIMM_PREFIX) :], **kwargs}
    elif name in _MODELS:
        builder = _MODELS[name]
    else:
        raise ValueError(f"unknown model {name!r}; choose from {list_models()}")
    model = builder(num_classes=num_classes, in_channels=in_channels, width=width, **kwargs)
    if weights is not None:
        desc = f"{name} ({num_classes} classes, {in_channels} channels, width {width})"
        _load_weights(model, Path(weights), desc)
    return model


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state_dict from `path`; every failure becomes a ValueError naming the file."""
    if not path.is_file():
        raise ValueError(f"weights file {path} not found; check the path")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises many types (pickle, zip, index, OS errors)
        if "Weights only load failed" in str(e):
            # A readable file that pickles Python objects (e.g. argparse args) beside the tensors.
            raise ValueError(
                f"weights file {path} holds Python objects that safe loading refuses; "
                "re-save just model.state_dict() from a copy you trust"
            ) from e
        raise ValueError(
            f"could not read weights file {path} ({type(e).__name__}: {str(e)[:200]}); "
            "delete it and re-create it"
        ) from e
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"weights file {path} does not hold a state_dict")
    # Checkpoints saved from DataParallel/DDP prefix every key with 'module.'.
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def _describe_mismatch(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> str:
    """Short text listing missing/unexpected keys and shape clashes; empty when they agree."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [
        f"{k} {tuple(got[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in got and got[k].shape != v.shape
    ]
    parts = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected)):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            parts.append(f"{label} {items[:3]}{more}")
    if shapes:
        more = f" (+{len(shapes) - 3} more)" if len(shapes) > 3 else ""
        parts.append(f"shape (file vs model) {shapes[:3]}{more}")
    return "; ".join(parts)


def _load_weights(model: nn.Module, path: Path, desc: str) -> None:
    """Load a local weights file into `model`, raising ValueError on any mismatch."""
    state = _read_state_dict(path)
    # Wrappers of torchvision/timm nets map foreign key layouts (and ImageNet heads) onto theirs.
    adapt = getattr(model, "adapt_state_dict", None)
    if adapt is not None:
        state = adapt(state)
    expected = model.state_dict()
    # Older files (e.g. early torchvision ImageNet weights) lack BN's num_batches_tracked counter,
    # which is bookkeeping only; take the model's own value instead of rejecting the file.
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = value
    problem = _describe_mismatch(expected, state)
    if problem:
        raise ValueError(
            f"checkpoint {path} does not match model {desc}: {problem}; "
            "delete it or create the model with the settings it was trained with"
        )
    model.load_state_dict(state)
