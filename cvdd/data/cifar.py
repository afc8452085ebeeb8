"""CIFAR-10 / CIFAR-100 "python version": the extracted folder or the .tar.gz, read in place."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data_layouts import CIFAR_FILES, detect_cifar
from .base import DATASET_STATS, Dataset, ImageSet, data_error

# File names inside the release, per data set: (train batches, test batch, meta file).
# The key that holds labels / class names in each data set's pickles (CIFAR-100: fine labels).
_LABEL_KEY = {"cifar10": "labels", "cifar100": "fine_labels"}
_NAMES_KEY = {"cifar10": "label_names", "cifar100": "fine_label_names"}
_FIX = "re-extract the official cifar-*-python.tar.gz, or point at the .tar.gz itself"


# The only globals a CIFAR pickle needs: numpy arrays (numpy 1 and 2 module names), and
# _codecs.encode, which protocol-2 pickles written by Python 3 use for bytes.
_PICKLE_ALLOWED = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }
)
# What unpickling truncated or foreign bytes raises, besides UnpicklingError.
_PICKLE_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
    ImportError,
    OverflowError,
)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that only builds numpy arrays: a data path must not be able to run code."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _unpickle(raw: bytes, where: str) -> dict[str, Any]:
    """Decode one CIFAR pickle; keys become str (the release writes bytes keys)."""
    try:
        obj = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except _PICKLE_ERRORS as exc:
        raise data_error(where, f"not a readable CIFAR pickle ({exc!r})", _FIX) from None
    if not isinstance(obj, dict):
        raise data_error(where, "pickle does not hold a dict", _FIX)
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _read_tar_members(path: Path, wanted: set[str]) -> dict[str, bytes]:
    # One sequential pass: random access into a .gz stream would re-decompress from the start.
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                base = Path(member.name).name
                if member.isfile() and base in wanted and base not in found:
                    found[base] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise data_error(path, f"archive cannot be read ({exc!r})", _FIX) from None
    return found


def _batch_arrays(batch: dict[str, Any], label_key: str, where: str) -> tuple[np.ndarray, ...]:
    """(N, 3, 32, 32) uint8 images and (N,) int64 labels from one decoded batch."""
    if "data" not in batch or label_key not in batch:
        raise data_error(where, f"CIFAR batch lacks 'data' or '{label_key}'", _FIX)
    data = np.asarray(batch["data"], dtype=np.uint8)
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise data_error(
            where,
            f"expected (N, 3072) pixels and N labels, got {data.shape} and {labels.shape}",
            _FIX,
        )
    # Rows are stored as 1024 red, then 1024 green, then 1024 blue values, row-major.
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar(path: Path, source: str) -> Dataset:
    """Load CIFAR-10/100 from an extracted python-version folder or its (gzipped) tar."""
    if path.is_dir():
        name = detect_cifar(path)
        layout = f"{name}_python"
        train_files, test_file, meta_file = CIFAR_FILES[name]
        raw = {f: (path / f).read_bytes() for f in [*train_files, test_file, meta_file]}
    else:
        every_file = {f for tr, te, me in CIFAR_FILES.values() for f in (*tr, te, me)}
        raw = _read_tar_members(path, every_file)
        name = next(
            (n for n, (tr, te, me) in CIFAR_FILES.items() if {*tr, te, me} <= raw.keys()), None
        )
        if name is None:
            raise data_error(
                path,
                "archive holds neither CIFAR-10 (data_batch_1..5, test_batch, "
                "batches.meta) nor CIFAR-100 (train, test, meta)",
                _FIX,
            )
        layout = "cifar_tar"
        train_files, test_file, meta_file = CIFAR_FILES[name]
    label_key = _LABEL_KEY[name]
    splits = {}
    for split, files in (("train", train_files), ("test", [test_file])):
        parts = [
            _batch_arrays(_unpickle(raw[f], f"{path}/{f}"), label_key, f"{path}/{f}") for f in files
        ]
        images = torch.from_numpy(np.concatenate([p[0] for p in parts]))
        targets = torch.from_numpy(np.concatenate([p[1] for p in parts]))
        splits[split] = ImageSet(targets, images=images)
    meta = _unpickle(raw[meta_file], f"{path}/{meta_file}")
    names_key = _NAMES_KEY[name]
    if names_key not in meta:
        raise data_error(f"{path}/{meta_file}", f"meta file lacks '{names_key}'", _FIX)
    class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[names_key]]
    mean, std = DATASET_STATS[name]
    return Dataset(
        name=name,
        layout=layout,
        source=source,
        class_names=class_names,
        in_channels=3,
        image_size=32,
        mean=mean,
        std=std,
        train=splits["train"],
        test=splits["test"],
    )
