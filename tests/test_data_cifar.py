"""Data loaders for the CIFAR python release (folder and .tar.gz), on files the tests write."""

from __future__ import annotations

import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from cvdd.data import DataError, load_dataset

RNG = np.random.default_rng(1)


def _pixels(n: int, *shape: int) -> np.ndarray:
    return RNG.integers(0, 256, size=(n, *shape), dtype=np.uint8)


def _write_cifar10(root: Path, names=(b"cat", b"dog", b"ship")) -> dict:
    root.mkdir(parents=True)
    batches = {}
    for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data, labels = _pixels(4, 3072), [int(x) for x in RNG.integers(0, len(names), 4)]
        batches[f] = (data, labels)
        raw = pickle.dumps({b"batch_label": b"x", b"data": data, b"labels": labels}, protocol=2)
        # The official release was pickled under numpy 1, whose arrays name numpy.core.
        (root / f).write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": list(names)}))
    return batches


def _check_cifar(ds, batches: dict, train_files: list[str], test_file: str) -> None:
    data = np.concatenate([batches[f][0] for f in train_files]).reshape(-1, 3, 32, 32)
    labels = [label for f in train_files for label in batches[f][1]]
    assert ds.train.load(torch.arange(len(ds.train))).numpy().tobytes() == data.tobytes()
    assert ds.train.targets.tolist() == labels
    assert ds.test.targets.tolist() == list(batches[test_file][1])
    assert (ds.in_channels, ds.image_size) == (3, 32)


def test_cifar10_folder_and_tar(tmp_path):
    batches = _write_cifar10(tmp_path / "cifar-10-batches-py")
    train_files = [f"data_batch_{i}" for i in range(1, 6)]
    ds = load_dataset(str(tmp_path / "cifar-10-batches-py"))
    assert (ds.name, ds.layout, ds.class_names) == (
        "cifar10",
        "cifar10_python",
        ["cat", "dog", "ship"],
    )
    assert ds.mean == (0.4914, 0.4822, 0.4465)
    _check_cifar(ds, batches, train_files, "test_batch")
    # The parent of the extracted folder works too.
    assert load_dataset(str(tmp_path)).layout == "cifar10_python"
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    ds = load_dataset(str(archive))
    assert (ds.name, ds.layout, ds.source) == ("cifar10", "cifar_tar", str(archive))
    _check_cifar(ds, batches, train_files, "test_batch")


def test_cifar100_uses_fine_labels(tmp_path):
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    batches = {}
    for f, n in (("train", 6), ("test", 3)):
        data, fine = _pixels(n, 3072), RNG.integers(0, 3, n).tolist()
        batches[f] = (data, fine)
        (root / f).write_bytes(
            pickle.dumps({b"data": data, b"fine_labels": fine, b"coarse_labels": [0] * n})
        )
    (root / "meta").write_bytes(
        pickle.dumps(
            {b"fine_label_names": [b"apple", b"bee", b"cup"], b"coarse_label_names": [b"all"]}
        )
    )
    ds = load_dataset(str(root))
    assert (ds.name, ds.layout, ds.class_names) == (
        "cifar100",
        "cifar100_python",
        ["apple", "bee", "cup"],
    )
    assert ds.std == (0.2675, 0.2565, 0.2761)
    _check_cifar(ds, batches, ["train"], "test")


def test_truncated_cifar_pickle_names_the_file(tmp_path):
    root = tmp_path / "c10"
    _write_cifar10(root)
    raw = (root / "data_batch_3").read_bytes()
    (root / "data_batch_3").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="data_batch_3"):
        load_dataset(str(root))


def test_cifar_pickle_cannot_run_code(tmp_path):
    root = tmp_path / "c10"
    _write_cifar10(root)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (root / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(DataError, match="test_batch"):
        load_dataset(str(root))
    assert not marker.exists()
