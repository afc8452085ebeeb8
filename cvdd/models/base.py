"""What every model family and the registry share: the `Classifier` contract, `scale_width`,
and loading of local weight files. Imports nothing else from the package, so any module in
`cvdd.models` can import it without an import cycle.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

__all__ = ["Classifier", "load_weights", "scale_width"]


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
    for every channel count of the small-resolution committee models.
    """
    return max(4, int(round(channels * width / 4)) * 4)


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


def load_weights(model: nn.Module, path: Path, desc: str) -> None:
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
