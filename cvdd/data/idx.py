"""MNIST-style IDX folders (MNIST, Fashion-MNIST, KMNIST, ...), plain or gzip-compressed."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from ..data_layouts import IDX_STEMS, find_idx
from .base import DATASET_STATS, FASHION_MNIST_CLASSES, Dataset, ImageSet, data_error

# Stems of the four files; the original site uses hyphens, some mirrors a dot before "idx".
_FIX = "download the four IDX files (train/t10k images and labels) into one folder"


def read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes as a numpy array of its declared shape."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:  # gzip raises on truncated / non-gzip input
        raise data_error(path, f"cannot be read ({exc!r})", _FIX) from None
    # Header: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions,
    # then one big-endian int32 per dimension.
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise data_error(path, "is not an unsigned-byte IDX file (bad magic number)", _FIX)
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=min(4 + 4 * ndim, len(raw)))
    if len(raw) < 4 + 4 * ndim or data.size != int(np.prod(shape)):
        raise data_error(
            path, f"header says {shape} but the file holds {data.size} values (truncated?)", _FIX
        )
    return data.reshape(shape)


def _read_split(path: Path, split: str) -> ImageSet:
    files = {}
    for part in ("images", "labels"):
        stem = IDX_STEMS[f"{split}_{part}"]
        found = find_idx(path, stem)
        if found is None:
            raise data_error(path, f"missing {stem}[.gz]", _FIX)
        files[part] = found
    images, labels = read_idx(files["images"]), read_idx(files["labels"])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise data_error(
            files["images"],
            f"images {images.shape} do not match labels {labels.shape} in {files['labels'].name}",
            _FIX,
        )
    # (N, H, W) -> (N, 1, H, W); copy because frombuffer arrays are read-only.
    return ImageSet(
        torch.from_numpy(labels.astype(np.int64)), images=torch.from_numpy(images[:, None].copy())
    )


def load_idx(path: Path, source: str) -> Dataset:
    """Load an IDX folder; the folder name decides Fashion-MNIST vs digit class names."""
    train, test = _read_split(path, "train"), _read_split(path, "test")
    height, width = train.images.shape[-2:]
    if height != width:
        raise data_error(path, f"images are {height}x{width}; cvdd needs square images", _FIX)
    num_classes = int(max(train.targets.max(), test.targets.max())) + 1
    # The folder (or its parent, e.g. zalando's data/fashion/raw) says which MNIST this is.
    if any("fashion" in part.lower() for part in path.resolve().parts[-2:]):
        name, class_names = "fashion_mnist", list(FASHION_MNIST_CLASSES)
    else:
        name, class_names = "mnist_idx", [str(i) for i in range(max(num_classes, 10))]
    mean, std = DATASET_STATS[name]
    return Dataset(
        name=name,
        layout="idx",
        source=source,
        class_names=class_names,
        in_channels=1,
        image_size=int(height),
        mean=mean,
        std=std,
        train=train,
        test=test,
    )
