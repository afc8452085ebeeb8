"""The HTML of the report: escaping, number cells, tables, sections and the page with its
print style (A4, 12 mm margins, sections kept whole, black and white friendly). No script, no
link, no font or image from anywhere but the page itself."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

__all__ = ["esc", "count", "num", "table", "section", "missing_note", "what", "page", "CSS"]

CSS = """
@page { size: A4; margin: 12mm }
* { box-sizing: border-box }
body { font-family: Helvetica, Arial, sans-serif; font-size: 10.5pt; line-height: 1.4;
  color: #000; background: #fff; max-width: 186mm; margin: 0 auto; padding: 8px;
  -webkit-print-color-adjust: exact; print-color-adjust: exact }
h1 { font-size: 17pt; margin: 0 0 2px } h2 { font-size: 13pt; margin: 0 0 4px;
  border-bottom: 1.5px solid #000; padding-bottom: 2px }
h3 { font-size: 11pt; margin: 8px 0 3px }
p { margin: 3px 0 6px } .sub { color: #333; margin-top: 0 }
section { break-inside: avoid; page-break-inside: avoid; margin: 0 0 14px }
section.long { break-inside: auto; page-break-inside: auto }
figure { margin: 4px 0 8px; break-inside: avoid } figcaption { font-size: 9pt; color: #222 }
svg, img { max-width: 100%; height: auto; display: block }
table { border-collapse: collapse; margin: 4px 0 8px; font-size: 9pt; break-inside: avoid }
th, td { border: 0.6px solid #777; padding: 2px 6px; text-align: left; vertical-align: top }
th { background: #e8e8e8 } td.n { text-align: right; font-variant-numeric: tabular-nums;
  white-space: nowrap }
.missing { border: 1px dashed #000; padding: 4px 8px; font-style: italic }
.what { font-size: 9pt; color: #222; margin: 2px 0 6px; padding-left: 8px;
  border-left: 2px solid #999 }
.thumb { width: 42px; image-rendering: pixelated; display: inline-block }
dl.kv { display: grid; grid-template-columns: max-content 1fr; gap: 1px 12px; margin: 4px 0 }
dl.kv dt { font-weight: bold } dl.kv dd { margin: 0 }
@media print { body { max-width: none; padding: 0 } }
"""


def esc(x: object) -> str:
    return escape(str(x))


def count(v: object) -> str:
    """A count with thousands separators (10,000), '?' where there is none."""
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else "?"


def num(v: object, fmt: str = "{:.1f}", unit: str = "") -> str:
    """A number as text with its unit, '—' where there is none."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return "—"
    return fmt.format(v) + unit


def table(
    head: Sequence[str], rows: Sequence[Sequence[object]], *, numeric: set[int] = frozenset()
) -> str:
    """A table; cells are escaped text, columns in `numeric` right-aligned."""
    th = "".join(f"<th>{esc(h)}</th>" for h in head)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{esc(c)}</td>' if i in numeric else f"<td>{esc(c)}</td>"
            for i, c in enumerate(r)
        )
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def section(sid: str, title: str, body: str, *, long: bool = False) -> str:
    cls = ' class="long"' if long else ""
    return f'<section id="{esc(sid)}"{cls}>\n<h2>{esc(title)}</h2>\n{body}\n</section>'


def missing_note(what: str, rel: str, stage: str) -> str:
    return (
        f'<p class="missing">Not in this run: {esc(what)} ({esc(rel)} is written by the '
        f"{esc(stage)} stage, which has not finished).</p>"
    )


def what(text: str) -> str:
    """A one-line note under a figure or table: what its numbers measure."""
    return f'<p class="what">{esc(text)}</p>'


def page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n"
        "</body>\n</html>\n"
    )
