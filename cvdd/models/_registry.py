"""Model registry: names -> builders, and name prefixes (e.g. `timm:`) -> factories.

Families register themselves when `cvdd.models` imports them; this module imports none of them,
so the import graph has one direction (families -> registry -> base).
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Callable
from pathlib import Path

from torch import nn

from .base import load_weights

__all__ = [
    "create_model",
    "is_known_model",
    "list_models",
    "register_model",
    "register_prefix",
]

_MODELS: dict[str, Callable[..., nn.Module]] = {}
# prefix -> factory(rest_of_name, num_classes=, in_channels=, width=, **kw): whole families of
# names that cannot be listed one by one (every timm model), filled in by the family's module
_PREFIXES: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a model builder under its function name; a duplicate name raises ValueError."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = fn
    return fn


def register_prefix(prefix: str, factory: Callable[..., nn.Module]) -> None:
    """Route every `<prefix><rest>` name to `factory(rest, num_classes=..., ...)`."""
    if prefix in _PREFIXES:
        raise ValueError(f"model prefix {prefix!r} is already registered")
    _PREFIXES[prefix] = factory


def _split_prefix(name: str) -> tuple[str, str] | None:
    for prefix in _PREFIXES:
        if name.startswith(prefix) and len(name) > len(prefix):
            return prefix, name[len(prefix) :]
    return None


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted registered names, optionally filtered by an fnmatch pattern (prefixed names such as
    `timm:<name>` are not listed)."""
    names = sorted(_MODELS)
    return names if pattern is None else [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def is_known_model(name: str) -> bool:
    """True for a registered name, or `<prefix><name>` for a registered prefix (e.g. `timm:`).

    A prefixed name is only checked for its form: whether the library behind the prefix knows
    the rest is answered by `create_model`, which needs that library installed.
    """
    return name in _MODELS or _split_prefix(name) is not None


def create_model(
    name: str,
    num_classes: int,
    in_channels: int = 3,
    width: float = 1.0,
    weights: str | Path | None = None,
    **kwargs,
) -> nn.Module:
    """Build a model from its registered name (or a prefixed name), optionally loading weights.

    Args:
        name: a name from `list_models()`, or `<prefix><name>` for a registered prefix
            (`timm:<timm model name>`).
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
    split = _split_prefix(name)
    if name in _MODELS:
        builder = _MODELS[name]
    elif split is not None:
        prefix, rest = split
        builder = functools.partial(_PREFIXES[prefix], rest)
    else:
        prefixes = "".join(f" or {p}<name>" for p in sorted(_PREFIXES))
        raise ValueError(f"unknown model {name!r}; choose from {list_models()}{prefixes}")
    model = builder(num_classes=num_classes, in_channels=in_channels, width=width, **kwargs)
    if weights is not None:
        desc = f"{name} ({num_classes} classes, {in_channels} channels, width {width})"
        load_weights(model, Path(weights), desc)
    return model
