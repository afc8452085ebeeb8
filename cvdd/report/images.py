"""Images for the HTML report: a class-by-IPC grid of an images.npz as one inline PNG (Pillow),
framed by an SVG that writes the class names beside its rows, and single thumbnails.

Everything is a data: URI inside the page; nothing is written to the run folder.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from html import escape

import numpy as np
from PIL import Image

__all__ = ["png_uri", "grid_array", "grids_svg", "thumb_uri"]

MAX_ROWS, MAX_COLS = 20, 10  # classes and IPC indices shown in a grid (a page's worth)
PAD = 2  # white pixels between cells, in image pixels


def _hwc(img: np.ndarray) -> np.ndarray:
    """(C, H, W) uint8 -> (H, W) for one channel, (H, W, 3) for three."""
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[0] in (1, 3):
        a = np.transpose(a, (1, 2, 0))
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    return np.clip(a, 0, 255).astype(np.uint8)


def png_uri(a: np.ndarray) -> str:
    """A uint8 (H, W) or (H, W, 3) array as a data:image/png;base64 URI."""
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def grid_array(z: Mapping[str, np.ndarray], classes: Sequence[int], cols: int) -> np.ndarray | None:
    """Rows = `classes`, columns = IPC indices 0..cols-1 of an images.npz (class-major, with
    `targets` and `ipc_idx`); empty cells stay white. None when the file has no images."""
    images, targets = z.get("images"), z.get("targets")
    if images is None or targets is None or not len(images):
        return None
    ipc_idx = z.get("ipc_idx")
    cell = _hwc(images[0])
    h, w = cell.shape[:2]
    shape = (len(classes) * (h + PAD) - PAD, cols * (w + PAD) - PAD, *cell.shape[2:])
    grid = np.full(shape, 255, np.uint8)
    for r, c in enumerate(classes):
        rows = np.where(np.asarray(targets) == c)[0]
        for k, i in enumerate(rows):
            col = int(ipc_idx[i]) if ipc_idx is not None and len(ipc_idx) == len(targets) else k
            if col < cols:
                y, x = r * (h + PAD), col * (w + PAD)
                grid[y : y + h, x : x + w] = _hwc(images[i])
    return grid


def grids_svg(
    grids: Sequence[tuple[str, np.ndarray]], names: Sequence[str], *, scale: int = 1
) -> str:
    """Grids of equal height side by side, each under its title, the class names beside the
    rows once (left); `names` are the rows' class names. Pixels stay square when scaled."""
    if not grids:
        return ""
    gh = grids[0][1].shape[0] * scale
    label_w, gap, top = 92, 18, 18
    widths = [g.shape[1] * scale for _, g in grids]
    width = label_w + sum(widths) + gap * (len(grids) - 1)
    n = max(len(names), 1)
    row_h = gh / n
    out = [
        f'<svg viewBox="0 0 {width} {gh + top}" '
        f'width="{width}" height="{gh + top}" font-family="Helvetica, Arial, sans-serif">'
    ]
    for r, name in enumerate(names):
        y = top + (r + 0.5) * row_h + 3.5
        out.append(
            f'<text x="{label_w - 6}" y="{y:.1f}" font-size="10" text-anchor="end">'
            f"{escape(str(name))}</text>"
        )
    x = label_w
    for (title, g), w in zip(grids, widths):
        out.append(
            f'<text x="{x + w / 2:.1f}" y="12" font-size="11" font-weight="bold" '
            f'text-anchor="middle">{escape(title)}</text>'
        )
        out.append(
            f'<image x="{x}" y="{top}" width="{w}" height="{gh}" preserveAspectRatio="none" '
            f'style="image-rendering:pixelated" href="{png_uri(g)}"/>'
        )
        x += w + gap
    return "\n".join([*out, "</svg>"])


def thumb_uri(img: np.ndarray, min_side: int = 56) -> str:
    """One (C, H, W) image, enlarged by an integer factor (nearest neighbour), as a PNG URI."""
    a = _hwc(img)
    f = max(1, -(-min_side // max(1, min(a.shape[:2]))))
    return png_uri(a.repeat(f, axis=0).repeat(f, axis=1))
