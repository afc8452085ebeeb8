"""`section.key=value` overrides and dict -> dataclass building, with typed values.

Generic over the config dataclasses (cvdd.config uses it; it imports nothing from cvdd but the
error type), so a preset, a form and the command line all go through the same typing rules.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import fields
from typing import Any, get_args, get_origin, get_type_hints

from .utils import CvddError

__all__ = ["apply_override", "build_dataclass", "coerce", "merge"]


def build_dataclass(cls: type, d: dict, prefix: str = "") -> Any:
    """A (nested) frozen dataclass from a dict; unknown keys and untypable values raise."""
    if not isinstance(d, dict):
        raise CvddError(
            f"config section {prefix or 'root'} must be a mapping", field=prefix[:-1] or None
        )
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        bad = sorted(prefix + str(k) for k in unknown)
        raise CvddError(
            f"unknown config key(s) {bad}; valid keys: {sorted(prefix + n for n in names)}",
            field=bad[0],
        )
    kw = {}
    for name, value in d.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kw[name] = build_dataclass(tp, value, f"{prefix}{name}.")
        else:
            kw[name] = coerce(value, tp, prefix + name)
    return cls(**kw)


def coerce(value: Any, tp: Any, key: str) -> Any:
    """A value (often a string from the command line or a form) as the field's type."""
    origin = get_origin(tp)
    try:
        if origin is tuple:
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            inner = get_args(tp)[0]
            return tuple(coerce(v, inner, key) for v in value)
        if tp is dict or origin is dict:
            if isinstance(value, str):
                value = json.loads(value) if value.strip() else {}
            if not isinstance(value, dict):
                raise TypeError
            return dict(value)
        if tp is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            return bool(value)
        if tp is int:  # a whole number only: 10.5, 1e3 or true are refused, never cut
            if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if tp is float:
            return float(value)
        if tp is str:
            return str(value)
    except (TypeError, ValueError):
        pass
    raise CvddError(
        f"config key {key}: cannot read {value!r} as {getattr(tp, '__name__', tp)}", field=key
    )


def apply_override(d: dict, item: str) -> None:
    """Set `section.key=value` in a config dict; the value is typed later by coerce()."""
    if "=" not in item:
        raise CvddError(
            f"override {item!r} must look like section.key=value, e.g. recover.iterations=200"
        )
    key, value = item.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    node = d
    for p in parts[:-1]:
        if p not in node or not isinstance(node[p], dict):
            raise CvddError(
                f"unknown config section {p!r} in {item!r}; sections: "
                f"{[k for k, v in d.items() if isinstance(v, dict)]}",
                field=key,
            )
        node = node[p]
    if parts[-1] not in node:
        raise CvddError(f"unknown config key {key!r}; valid keys here: {sorted(node)}", field=key)
    node[parts[-1]] = value.strip()  # typed later by _coerce


def merge(d: dict, o: dict) -> None:
    """Deep-merge `o` into `d`; mappings that are values themselves (weights, priors) replace."""
    for k, v in o.items():
        if (
            isinstance(v, dict)
            and isinstance(d.get(k), dict)
            and k not in ("weights", "values", "widths")
        ):
            merge(d[k], v)
        else:
            d[k] = v
