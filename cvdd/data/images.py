"""Image files and uint8 tensors: decode + resize, the .npy decode cache, lazy per-batch loading,
tensor resizing, and per-channel statistics."""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .base import ImageSet, data_error

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
SMALL_MAX = 64  # px; images up to this size are decoded once and kept in one tensor
LARGE_DEFAULT = 224  # px; default size when the files are bigger than SMALL_MAX or mixed
CACHE_MIN_FILES = 1000  # smaller trees decode in well under a second: not worth a cache file
CACHE_VERSION = 1  # bump when decoding changes, so that stale caches are never read
PROBE_FILES = 256  # headers read (spread over the list) to pick the default size and mode
STATS_SAMPLE = 5000  # images used to estimate mean/std of an unknown in-memory data set
STATS_SAMPLE_LAZY = 500  # ... of a lazily loaded one (each is a full-size JPEG decode)
_GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})
_FIX_IMAGE = "replace or delete the file"


def list_images(folder: Path) -> list[str]:
    """Image files under `folder` (recursively), sorted, skipping hidden files and non-images.

    Plain strings, not Paths: building 10^5 Path objects costs more than the cached load.
    """
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [
            os.path.join(root, f)
            for f in sorted(files)
            if f[0] != "." and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS
        ]
    return found


def _spread(n: int, k: int) -> np.ndarray:
    """Up to k indices spread evenly over range(n): a deterministic, class-covering sample."""
    return np.unique(np.linspace(0, n - 1, num=min(n, k)).round().astype(np.int64))


def probe(files: Sequence[str], image_size: int | None) -> tuple[int, str]:
    """(image size, PIL mode "L" or "RGB") from the headers of a sample of `files`.

    Default size: the native size when every probed image is one square size <= SMALL_MAX,
    else LARGE_DEFAULT. Mode: "L" only when every probed image is grayscale.
    """
    sizes, modes = set(), set()
    for i in _spread(len(files), PROBE_FILES):
        try:
            with Image.open(files[i]) as im:  # reads the header only
                sizes.add(im.size)
                modes.add(im.mode)
        except (OSError, ValueError, SyntaxError) as exc:
            raise data_error(files[i], f"cannot be read as an image ({exc})", _FIX_IMAGE) from None
    if not image_size:
        (w, h), same = next(iter(sizes)), len(sizes) == 1
        image_size = w if same and w == h and w <= SMALL_MAX else LARGE_DEFAULT
    return int(image_size), "L" if modes <= _GRAY_MODES else "RGB"


def _resize_crop(im: Image.Image, size: int) -> Image.Image:
    """Shorter side to `size`, then the central size x size square (torchvision's eval recipe)."""
    w, h = im.size
    if (w, h) == (size, size):
        return im
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    im = im.resize((new_w, new_h), Image.BILINEAR)
    left, top = round((new_w - size) / 2.0), round((new_h - size) / 2.0)
    return im.crop((left, top, left + size, top + size))


def _decode(path: str | Path, size: int, mode: str) -> tuple[np.ndarray, str]:
    try:
        with Image.open(path) as im:
            file_mode = im.mode
            # JPEG can decode at 1/2, 1/4, 1/8 scale: much faster for big photos, and the
            # result stays >= size on both sides, so the resize below still only shrinks.
            im.draft(None, (size, size))
            arr = np.asarray(_resize_crop(im.convert(mode), size))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise data_error(path, f"cannot be decoded as an image ({exc})", _FIX_IMAGE) from None
    return (arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)), file_mode


def decode(path: str | Path, size: int, mode: str) -> np.ndarray:
    """One image file -> uint8 (C, size, size) in `mode` ("L" or "RGB")."""
    return _decode(path, size, mode)[0]


def decode_all(files: Sequence[str], size: int) -> np.ndarray:
    """Every file -> uint8 (N, C, size, size); C = 1 only when every file is grayscale."""
    out = np.empty((len(files), 3, size, size), dtype=np.uint8)
    all_gray = True
    for i, path in enumerate(files):
        out[i], file_mode = _decode(path, size, "RGB")
        all_gray = all_gray and file_mode in _GRAY_MODES
    # Gray files were expanded to three equal channels; keep one.
    return np.ascontiguousarray(out[:, :1]) if all_gray and len(files) else out


def _cache_key(root: Path, files: Sequence[str], size: int) -> str:
    # Path + file list (count, names, classes) + newest mtime + size: adding, moving, editing or
    # renaming a file, or asking another size, gives a new key; the old file is never read.
    digest = hashlib.sha1(f"v{CACHE_VERSION}|{root.resolve()}|{len(files)}|{size}".encode())
    digest.update(os.fsencode("\0".join(map(str, files))))
    digest.update(str(max(os.stat(path).st_mtime_ns for path in files)).encode())
    return digest.hexdigest()[:20]


def decode_cached(root: Path, files: Sequence[str], size: int, cache_dir: Path) -> np.ndarray:
    """`decode_all`, through an .npy cache under `cache_dir` for trees of CACHE_MIN_FILES+."""
    if len(files) < CACHE_MIN_FILES:
        return decode_all(files, size)
    cache_file = cache_dir / f"{root.resolve().name}-{size}px-{_cache_key(root, files, size)}.npy"
    if cache_file.is_file():
        try:
            arr = np.load(cache_file)
            if arr.dtype == np.uint8 and (len(arr), *arr.shape[2:]) == (len(files), size, size):
                return arr
        except (OSError, ValueError) as exc:
            warnings.warn(f"ignoring unreadable cache {cache_file}: {exc}", stacklevel=3)
    arr = decode_all(files, size)
    tmp = cache_file.with_name(f"{cache_file.name}.{os.getpid()}.tmp")
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.save(f, arr)
        os.replace(tmp, cache_file)  # atomic: a reader sees no file or the whole file
    except OSError as exc:  # a read-only cache dir costs speed, not correctness
        warnings.warn(f"could not write decode cache {cache_file}: {exc}", stacklevel=3)
        tmp.unlink(missing_ok=True)
    return arr


class FileLoader:
    """`ImageSet` loader that decodes files on demand (a class, so that it pickles)."""

    def __init__(self, files: Sequence[str], size: int, mode: str) -> None:
        self.files, self.size, self.mode = list(files), size, mode

    def __call__(self, index: torch.Tensor) -> torch.Tensor:
        channels = 1 if self.mode == "L" else 3
        if len(index) == 0:
            return torch.empty((0, channels, self.size, self.size), dtype=torch.uint8)
        return torch.from_numpy(
            np.stack([decode(self.files[i], self.size, self.mode) for i in index.tolist()])
        )


def resize_tensor(images: torch.Tensor, size: int, chunk: int = 1024) -> torch.Tensor:
    """uint8 (N, C, h, w) -> uint8 (N, C, size, size): shorter side to size, center crop."""
    n, c, h, w = images.shape
    if (h, w) == (size, size):
        return images
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    top, left = round((new_h - size) / 2.0), round((new_w - size) / 2.0)
    out = torch.empty((n, c, size, size), dtype=torch.uint8)
    for start in range(0, n, chunk):  # bounded float memory
        x = images[start : start + chunk].float()
        x = F.interpolate(
            x, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False
        )
        out[start : start + chunk] = (
            x[..., top : top + size, left : left + size].round().clamp(0, 255)
        )
    return out


class _ResizeLoader:
    def __init__(self, images: torch.Tensor, size: int) -> None:
        self.images, self.size = images, size

    def __call__(self, index: torch.Tensor) -> torch.Tensor:
        return resize_tensor(self.images[index], self.size)


def resized(split: ImageSet, size: int) -> ImageSet:
    """An in-memory split at another size: resized once if small, else per `load()` call."""
    if size <= SMALL_MAX:
        return ImageSet(split.targets, images=resize_tensor(split.images, size))
    return ImageSet(split.targets, loader=_ResizeLoader(split.images, size))


def channel_stats(split: ImageSet, limit: int, seed: int = 0) -> tuple[tuple[float, ...], ...]:
    """Per-channel (mean, std) of [0, 1] pixels over a seeded sample of <= `limit` images."""
    g = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(split), generator=g)[:limit].sort().values
    total = total_sq = None
    count = 0
    for start in range(0, len(index), 256):
        x = split.load(index[start : start + 256]).to(torch.float64).div_(255.0)
        s, sq = x.sum(dim=(0, 2, 3)), x.square().sum(dim=(0, 2, 3))
        total, total_sq = (s, sq) if total is None else (total + s, total_sq + sq)
        count += x.numel() // x.shape[1]
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0).sqrt()
    return tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist())
