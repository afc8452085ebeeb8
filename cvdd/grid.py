"""Image grids: class-major uint8 images laid out as one lossless PNG (rows = classes,
columns = IPC index), the form of every snapshot the app shows."""

from __future__ import annotations

import numpy as np
import torch

from .utils import encode

__all__ = ["images_to_png_grid"]


def images_to_png_grid(
    images: torch.Tensor,
    num_classes: int,
    ipc: int,
    max_rows: int = 10,
    max_cols: int = 10,
    pad: int = 2,
) -> tuple[bytes, dict]:
    """Class-major uint8 images -> one PNG grid (rows = classes, cols = IPC index) + its layout.

    Only the first `max_rows` classes and `max_cols` IPC indices are drawn, so a snapshot stays
    small for 1000-class sets; the returned layout names the ones shown.
    """
    from PIL import Image  # only the stages that draw snapshots need Pillow

    rows, cols = list(range(min(num_classes, max_rows))), list(range(min(ipc, max_cols)))
    _, c, h, w = images.shape  # (N, C, H, W) uint8, class-major
    grid = np.full((len(rows) * (h + pad) + pad, len(cols) * (w + pad) + pad, c), 255, np.uint8)
    arr = images.cpu().numpy().transpose(0, 2, 3, 1)
    for r in rows:
        for q in cols:
            y, x = pad + r * (h + pad), pad + q * (w + pad)
            grid[y : y + h, x : x + w] = arr[r * ipc + q]
    img = Image.fromarray(grid[..., 0] if c == 1 else grid, "L" if c == 1 else "RGB")
    return encode(img, "grid.png"), {"rows": rows, "cols": cols, "cell": h, "pad": pad}
