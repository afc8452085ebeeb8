"""Snapshot grids and image arrays: crop a class row, make small images visible."""

from __future__ import annotations

import math

import numpy as np


def grid_cell_origin(size: int, n: int, cell: int, pad: int) -> int:
    """Offset of the first cell along one axis, whether or not the grid has an outer border."""
    inner = n * cell + max(n - 1, 0) * pad
    return max(0, (size - inner) // 2)


def crop_grid_row(grid: np.ndarray, r: int, n_rows: int, cell: int, pad: int) -> np.ndarray:
    """Row `r` (one class) of a snapshot grid (H, W[, C]) as an image strip."""
    if not 0 <= r < n_rows:
        raise IndexError(f"row {r} outside 0..{n_rows - 1}")
    y = grid_cell_origin(grid.shape[0], n_rows, cell, pad) + r * (cell + pad)
    return grid[y : y + cell]


def crop_grid_cell(
    grid: np.ndarray, r: int, c: int, n_rows: int, n_cols: int, cell: int, pad: int
) -> np.ndarray:
    row = crop_grid_row(grid, r, n_rows, cell, pad)
    if not 0 <= c < n_cols:
        raise IndexError(f"column {c} outside 0..{n_cols - 1}")
    x = grid_cell_origin(grid.shape[1], n_cols, cell, pad) + c * (cell + pad)
    return row[:, x : x + cell]


def to_display(img: np.ndarray, min_side: int = 96) -> np.ndarray:
    """One uint8 image (C, H, W) or (H, W[, C]) -> (H, W) or (H, W, 3), upscaled by an integer
    factor (nearest neighbour) so that small images are visible."""
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.transpose(a, (1, 2, 0))
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    f = max(1, math.ceil(min_side / max(1, min(a.shape[:2]))))
    if f > 1:
        a = a.repeat(f, axis=0).repeat(f, axis=1)
    return a


def image_index(targets: np.ndarray, ipc_idx: np.ndarray | None, cls: int, k: int) -> int | None:
    """Row of (class, IPC index) in an images.npz / soft_labels.npz (class-major order)."""
    t = np.asarray(targets)
    if ipc_idx is not None and len(ipc_idx) == len(t):
        hit = np.where((t == cls) & (np.asarray(ipc_idx) == k))[0]
    else:
        hit = np.where(t == cls)[0]
        hit = hit[k : k + 1]
    return int(hit[0]) if len(hit) else None


def class_indices(targets: np.ndarray, cls: int) -> list[int]:
    return [int(i) for i in np.where(np.asarray(targets) == cls)[0]]
