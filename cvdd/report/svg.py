"""Small inline SVG charts for the HTML report: grouped bars (with 95 % error bars, seeds as
dots, the value written on each bar) and lines or dots over a category axis.

Written by hand, no plotting library and nothing external: the figures print crisply, keep the
file small, and stay readable in black and white (fills differ in lightness, one is hatched;
lines differ in marker and dash).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import NamedTuple

__all__ = ["Series", "bar_chart", "line_chart", "nice_ticks"]

# fill, stroke per series: dark, light, hatched white, mid grey (distinct in greyscale too)
FILLS = ("#23527c", "#f0b45b", "hatch", "#a0a0a0", "#ffffff")
MARKERS = ("circle", "square", "triangle", "diamond")
DASHES = ("", "6 3", "2 2", "8 2 2 2")
FONT = 'font-family="Helvetica, Arial, sans-serif"'


@dataclass
class Series:
    """One series: a value per category (None = no bar), optional 95 % interval bounds and
    individual points (e.g. one per seed) per category."""

    name: str
    values: Sequence[float | None]
    lo: Sequence[float | None] | None = None
    hi: Sequence[float | None] | None = None
    dots: Sequence[Sequence[float]] | None = None
    extra: dict = field(default_factory=dict)


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About n round tick values covering [lo, hi] (steps of 1, 2, 2.5 or 5 times 10^k)."""
    span = hi - lo if hi > lo else abs(hi) or 1.0
    raw = span / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * 0.999)
    start = math.floor(lo / step + 1e-9) * step
    ticks, t = [], start
    while t <= hi + step * 0.999:
        ticks.append(round(t, 10))
        t += step
    return ticks


def _fmt_tick(t: float) -> str:
    return f"{t:.0f}" if abs(t) >= 10 or t == int(t) else f"{t:.3g}"


def _finite(vals) -> list[float]:
    return [float(v) for v in vals if isinstance(v, (int, float)) and math.isfinite(v)]


def _all_values(series: Sequence[Series]) -> list[float]:
    out: list[float] = []
    for s in series:
        out += _finite(s.values) + _finite(s.lo or []) + _finite(s.hi or [])
        out += [v for d in (s.dots or []) for v in _finite(d)]
    return out


def _frame(uid: str, width: int, height: int, title: str) -> list[str]:
    return [
        f'<svg viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}" {FONT}>',
        f'<defs><pattern id="{uid}-h" width="5" height="5" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="5" height="5" fill="#fff"/>'
        '<line x1="0" y1="0" x2="0" y2="5" stroke="#000" stroke-width="1.6"/></pattern></defs>',
        f'<text x="{width / 2}" y="14" font-size="12" font-weight="bold" '
        f'text-anchor="middle">{escape(title)}</text>',
    ]


def _fill(uid: str, i: int) -> str:
    f = FILLS[i % len(FILLS)]
    return f"url(#{uid}-h)" if f == "hatch" else f


def _legend(uid: str, names: Sequence[str], width: int, *, kind: str) -> tuple[list[str], int]:
    """Swatches (bars) or marker-and-dash samples (lines) under the title, in as many centred
    rows as the width needs; returns the elements and the number of rows."""
    widths = [26 + 6.0 * len(n) for n in names]
    rows: list[list[int]] = [[]]
    for i, w in enumerate(widths):
        if rows[-1] and sum(widths[j] for j in rows[-1]) + w > width - 8:
            rows.append([])
        rows[-1].append(i)
    out = []
    for r, row in enumerate(rows):
        x, y = max(4.0, (width - sum(widths[i] for i in row)) / 2), 32 + 15 * r
        for i in row:
            if kind == "bar":
                out.append(
                    f'<rect x="{x:.1f}" y="{y - 8}" width="14" height="10" '
                    f'fill="{_fill(uid, i)}" stroke="#000" stroke-width="0.8"/>'
                )
            else:
                out.append(_line_sample(i, x, y - 3))
            out.append(
                f'<text x="{x + 18:.1f}" y="{y + 1}" font-size="10.5">{escape(names[i])}</text>'
            )
            x += widths[i]
    return out, len(rows)


def _axis(
    ticks: list[float], *, x0: float, x1: float, y_of, y_label: str, top: float, bottom: float
) -> list[str]:
    out = []
    for t in ticks:
        y = y_of(t)
        out.append(
            f'<line x1="{x0}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}" stroke="#ccc" '
            'stroke-width="0.6"/>'
        )
        out.append(
            f'<text x="{x0 - 4}" y="{y + 3.5:.1f}" font-size="10" text-anchor="end">'
            f"{_fmt_tick(t)}</text>"
        )
    out.append(f'<line x1="{x0}" y1="{top}" x2="{x0}" y2="{bottom}" stroke="#000"/>')
    out.append(f'<line x1="{x0}" y1="{bottom}" x2="{x1}" y2="{bottom}" stroke="#000"/>')
    mid = (top + bottom) / 2
    out.append(
        f'<text x="11" y="{mid:.1f}" font-size="10.5" text-anchor="middle" '
        f'transform="rotate(-90 11 {mid:.1f})">{escape(y_label)}</text>'
    )
    return out


def _category_labels(labels: Sequence[str], xs: Sequence[float], y: float) -> list[str]:
    """Category names under the axis, on two lines when they hold a space."""
    out = []
    for lab, x in zip(labels, xs):
        words = str(lab).split(" ")
        lines = (
            [str(lab)] if len(words) == 1 or len(labels) <= 4 else [words[0], " ".join(words[1:])]
        )
        spans = "".join(
            f'<tspan x="{x:.1f}" dy="{0 if k == 0 else 11}">{escape(t)}</tspan>'
            for k, t in enumerate(lines)
        )
        out.append(f'<text x="{x:.1f}" y="{y}" font-size="10" text-anchor="middle">{spans}</text>')
    return out


def _range(vals: list[float], y_min: float | None, y_max: float | None) -> tuple[float, float]:
    lo = min(vals, default=0.0) if y_min is None else y_min
    hi = max(vals, default=1.0) if y_max is None else y_max
    if hi <= lo:
        hi = lo + (abs(lo) * 0.1 or 1.0)
    return lo, hi


class _Plot(NamedTuple):
    """A chart's plotting area: the x span, the baseline's y in pixels, the axis's lowest value,
    value -> y, and the SVG so far (frame, legend, axis)."""

    x0: float
    x1: float
    bottom: float
    lo: float
    y_of: Callable[[float], float]
    out: list[str]


def _plot(uid: str, series: Sequence[Series], lo: float, hi: float, **kw) -> _Plot:
    """Frame, legend (its rows grow the height) and y axis for `series` over [lo, hi], widened
    to whole ticks; kw: width, height, title, y_label, kind (bar | line)."""
    ticks = nice_ticks(lo, hi)
    lo, hi = min(lo, ticks[0]), max(hi, ticks[-1])
    width = kw["width"]
    legend, n_rows = _legend(uid, [s.name for s in series], width, kind=kw["kind"])
    height = kw["height"] + 15 * (n_rows - 1)
    x0, x1, top, bottom = 48.0, width - 8.0, 29.0 + 15 * n_rows, height - 34.0

    def y_of(v: float) -> float:
        return bottom - (v - lo) / (hi - lo) * (bottom - top)

    out = _frame(uid, width, height, kw["title"]) + legend
    out += _axis(ticks, x0=x0, x1=x1, y_of=y_of, y_label=kw["y_label"], top=top, bottom=bottom)
    return _Plot(x0, x1, bottom, lo, y_of, out)


def bar_chart(
    uid: str,
    groups: Sequence[str],
    series: Sequence[Series],
    *,
    title: str,
    y_label: str,
    y_min: float | None = 0.0,
    y_max: float | None = None,
    value_fmt: str = "{:.1f}",
    width: int = 680,
    height: int = 260,
) -> str:
    """Grouped bars: a group per category, a bar per series; error bars where lo/hi are given,
    dots where `dots` are, each bar's value written above it."""
    vals = _all_values(series)
    lo, hi = _range(vals, y_min, y_max if y_max is not None else max(vals, default=1) * 1.08)
    kw = dict(width=width, height=height, title=title, y_label=y_label, kind="bar")
    x0, x1, bottom, lo, y_of, out = _plot(uid, series, lo, hi, **kw)
    gw = (x1 - x0) / max(len(groups), 1)
    bw = gw * 0.78 / max(len(series), 1)
    for gi in range(len(groups)):
        for si, s in enumerate(series):
            x = x0 + gi * gw + gw * 0.11 + si * bw
            out += _bar(
                uid, si, s, gi, x=x, bw=bw, y_of=y_of, base=y_of(max(lo, 0.0)), fmt=value_fmt
            )
    centres = [x0 + (i + 0.5) * gw for i in range(len(groups))]
    out += _category_labels(groups, centres, bottom + 13)
    return "\n".join([*out, "</svg>"])


def _bar(
    uid: str, si: int, s: Series, gi: int, *, x: float, bw: float, y_of, base: float, fmt: str
):
    v = s.values[gi] if gi < len(s.values) else None
    if not isinstance(v, (int, float)) or not math.isfinite(v):
        return []
    y = y_of(v)
    out = [
        f'<rect x="{x:.1f}" y="{min(y, base):.1f}" width="{bw * 0.92:.1f}" '
        f'height="{abs(base - y):.1f}" fill="{_fill(uid, si)}" stroke="#000" stroke-width="0.7"/>'
    ]
    cx, label_y = x + bw * 0.46, y - 3
    lo = s.lo[gi] if s.lo and gi < len(s.lo) else None
    hi = s.hi[gi] if s.hi and gi < len(s.hi) else None
    if isinstance(lo, (int, float)) and isinstance(hi, (int, float)):
        ylo, yhi, cap = y_of(lo), y_of(hi), min(5.0, bw * 0.3)
        out.append(
            f'<path d="M{cx:.1f} {ylo:.1f}V{yhi:.1f}M{cx - cap:.1f} {ylo:.1f}H{cx + cap:.1f}'
            f'M{cx - cap:.1f} {yhi:.1f}H{cx + cap:.1f}" stroke="#000" stroke-width="1.2" '
            'fill="none"/>'
        )
        label_y = min(label_y, yhi - 3)
    for d in (s.dots[gi] if s.dots and gi < len(s.dots) else []) or []:
        out.append(
            f'<circle cx="{cx:.1f}" cy="{y_of(d):.1f}" r="2.2" fill="#fff" stroke="#000" '
            'stroke-width="0.8"/>'
        )
    out.append(
        f'<text x="{cx:.1f}" y="{label_y:.1f}" font-size="9.5" text-anchor="middle">'
        f"{escape(fmt.format(v))}</text>"
    )
    return out


def _marker(i: int, x: float, y: float) -> str:
    shape = MARKERS[i % len(MARKERS)]
    fill = "#000" if i % 2 == 0 else "#fff"
    common = f'fill="{fill}" stroke="#000" stroke-width="0.9"'
    if shape == "circle":
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" {common}/>'
    if shape == "square":
        return f'<rect x="{x - 2.8:.1f}" y="{y - 2.8:.1f}" width="5.6" height="5.6" {common}/>'
    if shape == "triangle":
        d = f"M{x:.1f} {y - 3.6:.1f}L{x + 3.4:.1f} {y + 2.4:.1f}H{x - 3.4:.1f}Z"
    else:  # diamond
        d = (
            f"M{x:.1f} {y - 3.8:.1f}L{x + 3.4:.1f} {y:.1f}"
            f"L{x:.1f} {y + 3.8:.1f}L{x - 3.4:.1f} {y:.1f}Z"
        )
    return f'<path d="{d}" {common}/>'


def _line_sample(i: int, x: float, y: float) -> str:
    dash = DASHES[i % len(DASHES)]
    da = f' stroke-dasharray="{dash}"' if dash else ""
    return (
        f'<line x1="{x:.1f}" y1="{y:.1f}" x2="{x + 14:.1f}" y2="{y:.1f}" stroke="#000" '
        f'stroke-width="1.2"{da}/>' + _marker(i, x + 7, y)
    )


def line_chart(
    uid: str,
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    title: str,
    y_label: str,
    connect: bool = True,
    y_min: float | None = 0.0,
    y_max: float | None = None,
    width: int = 680,
    height: int = 240,
) -> str:
    """A value per category and series, drawn as markers (joined by a line when `connect`)."""
    lo, hi = _range(_all_values(series), y_min, y_max)
    kw = dict(width=width, height=height, title=title, y_label=y_label, kind="line")
    x0, x1, bottom, _, y_of, out = _plot(uid, series, lo, hi, **kw)
    step = (x1 - x0) / max(len(labels), 1)
    xs = [x0 + (i + 0.5) * step for i in range(len(labels))]
    for si, s in enumerate(series):
        pts = [
            (xs[i], y_of(v))
            for i, v in enumerate(s.values[: len(xs)])
            if isinstance(v, (int, float)) and math.isfinite(v)
        ]
        if connect and len(pts) > 1:
            dash = DASHES[si % len(DASHES)]
            da = f' stroke-dasharray="{dash}"' if dash else ""
            d = "M" + "L".join(f"{x:.1f} {y:.1f}" for x, y in pts)
            out.append(f'<path d="{d}" fill="none" stroke="#000" stroke-width="1.2"{da}/>')
        out += [_marker(si, x, y) for x, y in pts]
    out += _category_labels(labels, xs, bottom + 13)
    return "\n".join([*out, "</svg>"])
