"""cvdd.data: the embedded set, on-disk layouts (written tiny into tmp_path), errors, helpers."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cvdd.data import (
    CIFAR10_CLASSES,
    CIFAR100_CLASSES,
    FASHION_MNIST_CLASSES,
    LAYOUTS,
    DataError,
    denormalize,
    load_dataset,
    normalize,
    to_float,
    to_uint8,
)
from cvdd.data import images as img
from cvdd.data.layouts import EMBEDDED_NPZ, EMBEDDED_TEST_NPZ

# the project's CIFAR-10 JPEG tree sits beside the checkout (shared/data/cifar10); a checkout
# elsewhere names it with CVDD_TEST_CIFAR10 or skips the test that reads it
ROOT = Path(__file__).resolve().parent.parent
SHARED_CIFAR10 = Path(
    os.environ.get("CVDD_TEST_CIFAR10") or ROOT.parent / "shared" / "data" / "cifar10"
)
RNG = np.random.default_rng(0)


def _pixels(n: int, *shape: int) -> np.ndarray:
    return RNG.integers(0, 256, size=(n, *shape), dtype=np.uint8)


def _save_images(folder: Path, arrays: np.ndarray, ext: str = ".png") -> None:
    """Save (n, H, W[, 3]) uint8 arrays as 000.png, 001.png, ... (PNG is lossless)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(folder / f"{i:03d}{ext}")


# ------------------------------------------------------------------------------------------------
# embedded set


def test_builtin_is_balanced_uint8_fashion_mnist():
    ds = load_dataset("builtin")
    assert max(EMBEDDED_NPZ.stat().st_size, EMBEDDED_TEST_NPZ.stat().st_size) <= 5_000_000
    assert (ds.name, ds.layout, ds.source) == ("fashion_mnist_subset", "embedded", "embedded")
    assert ds.class_names == list(FASHION_MNIST_CLASSES) and ds.num_classes == 10
    assert (ds.in_channels, ds.image_size) == (1, 28)
    assert ds.mean == (0.2860,) and ds.std == (0.3530,)
    for split in (ds.train, ds.test):
        batch = split.load(torch.arange(len(split)))
        assert batch.dtype == torch.uint8 and batch.shape == (len(split), 1, 28, 28)
        counts = torch.bincount(split.targets, minlength=10)
        assert (counts == counts[0]).all() and counts[0] >= 100
    assert load_dataset("fashion_mnist_subset").train.targets.equal(ds.train.targets)
    # the whole official test split: students are scored on all 10,000 test images
    assert (len(ds.train), len(ds.test)) == (5000, 10000)


def test_builtin_needs_only_numpy():
    with np.load(EMBEDDED_NPZ, allow_pickle=False) as npz:
        assert npz["train_images"].dtype == np.uint8 and npz["train_images"].shape[1:] == (28, 28)
        assert list(npz["class_names"]) == list(FASHION_MNIST_CLASSES)


def test_imageset_load_order_and_class_indices():
    ds = load_dataset("builtin")
    assert ds.train.load([5, 2, 5]).equal(ds.train.images[[5, 2, 5]])
    assert ds.train.load(torch.tensor([], dtype=torch.long)).shape == (0, 1, 28, 28)
    idx = ds.train.class_indices(3)
    assert (ds.train.targets[idx] == 3).all() and len(idx) == (ds.train.targets == 3).sum()
    with pytest.raises(IndexError):
        ds.train.load([len(ds.train)])


def test_fixed_size_set_resizes_small_in_memory_and_large_lazily():
    small = load_dataset("builtin", image_size=32)
    assert small.image_size == 32 and small.train.images.shape[1:] == (1, 32, 32)
    large = load_dataset("builtin", image_size=96)
    assert large.train.images is None and large.train.load([0, 1]).shape == (2, 1, 96, 96)
    assert load_dataset("builtin", image_size=0).image_size == 28  # 0 = native (config default)


# ------------------------------------------------------------------------------------------------
# ImageFolder


def _write_imagefolder(root: Path, classes, split="val", shape=(8, 8, 3), n=(3, 2)) -> dict:
    pixels = {}
    for c in classes:
        for s, count in (("train", n[0]), (split, n[1])):
            pixels[s, c] = _pixels(count, *shape)
            _save_images(root / s / c, pixels[s, c])
    return pixels


def _chw(a: np.ndarray) -> np.ndarray:
    return a[:, None] if a.ndim == 3 else a.transpose(0, 3, 1, 2)


def test_imagefolder_val_sorted_classes_and_exact_pixels(tmp_path):
    pixels = _write_imagefolder(tmp_path, ["zebra", "apple", "mango"])
    (tmp_path / "train" / "apple" / "notes.txt").write_text("not an image")  # ignored
    ds = load_dataset(str(tmp_path), cache_dir=str(tmp_path / "cache"))
    assert (ds.name, ds.layout, ds.class_names) == (
        "imagefolder",
        "imagefolder",
        ["apple", "mango", "zebra"],
    )
    assert (ds.in_channels, ds.image_size) == (3, 8)
    assert ds.train.targets.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert ds.test.targets.tolist() == [0, 0, 1, 1, 2, 2]
    want = np.concatenate([_chw(pixels["train", c]) for c in ("apple", "mango", "zebra")])
    assert np.array_equal(ds.train.load(torch.arange(9)).numpy(), want)
    # Unknown class names: statistics come from the training images themselves.
    x = want.astype(np.float64) / 255
    assert np.allclose(ds.mean, x.mean(axis=(0, 2, 3)), atol=1e-4)
    assert np.allclose(ds.std, x.std(axis=(0, 2, 3)), atol=1e-4)


def test_imagefolder_test_split_and_classes_txt_order(tmp_path):
    pixels = _write_imagefolder(tmp_path, ["zebra", "apple", "mango"], split="test")
    (tmp_path / "classes.txt").write_text("zebra\napple\nmango\n")
    ds = load_dataset(str(tmp_path))
    assert ds.class_names == ["zebra", "apple", "mango"]
    zebra = ds.test.class_indices(0)
    assert np.array_equal(ds.test.load(zebra).numpy(), _chw(pixels["test", "zebra"]))


def test_imagefolder_grayscale_stays_one_channel(tmp_path):
    pixels = _write_imagefolder(tmp_path, ["a", "b"], shape=(6, 6))
    ds = load_dataset(str(tmp_path))
    assert ds.in_channels == 1 and len(ds.mean) == 1
    assert np.array_equal(ds.test.load([2]).numpy(), _chw(pixels["val", "b"][:1]))


def test_imagefolder_resizes_and_loads_large_images_lazily(tmp_path):
    for split in ("train", "val"):
        for c, color in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
            (tmp_path / split / c).mkdir(parents=True)
            Image.new("RGB", (90, 70), color).save(tmp_path / split / c / "wide.png")
            Image.new("RGB", (80, 80), color).save(tmp_path / split / c / "square.jpg")
    ds = load_dataset(str(tmp_path))  # mixed sizes > 64 px -> 224, decoded per load()
    assert ds.image_size == 224 and ds.train.images is None
    batch = ds.train.load([3, 0])
    assert batch.shape == (2, 3, 224, 224) and batch.dtype == torch.uint8
    # Sorted classes: blue = 0, red = 1; index 3 is red/wide.png, index 0 is blue/square.jpg.
    assert (batch[0, 0] > 250).all() and (batch[0, 2] < 5).all()
    assert (batch[1, 0] < 5).all() and (batch[1, 2] > 250).all()
    small = load_dataset(str(tmp_path), image_size=16)
    assert small.train.images.shape == (4, 3, 16, 16)
    assert (small.train.images[small.train.class_indices(1), 0] > 250).all()  # red


def test_cifar10_class_folders_are_recognised(tmp_path):
    pixels = _write_imagefolder(tmp_path, CIFAR10_CLASSES, split="test", n=(1, 1))
    ds = load_dataset(str(tmp_path))
    assert ds.name == "cifar10" and ds.class_names == list(CIFAR10_CLASSES)
    assert ds.mean == (0.4914, 0.4822, 0.4465) and ds.std == (0.2470, 0.2435, 0.2616)
    assert np.array_equal(ds.train.load([9]).numpy(), _chw(pixels["train", "truck"]))
    assert len(CIFAR100_CLASSES) == 100 == len(set(CIFAR100_CLASSES))


def test_decode_cache_is_reused_and_invalidated(tmp_path, monkeypatch):
    monkeypatch.setattr(img, "CACHE_MIN_FILES", 1)
    root, cache = tmp_path / "data", tmp_path / "cache"
    _write_imagefolder(root, ["a", "b"])
    first = load_dataset(str(root), cache_dir=str(cache))
    assert len(list(cache.glob("*.npy"))) == 1 and not list(cache.glob("*.tmp"))

    def no_decode(*args):
        raise AssertionError("decoded although the cache is valid")

    with monkeypatch.context() as m:
        m.setattr(img, "decode_all", no_decode)
        again = load_dataset(str(root), cache_dir=str(cache))
    assert again.train.images.equal(first.train.images)
    _save_images(root / "train" / "b" / "new", _pixels(1, 8, 8, 3))  # one more file: new key
    assert len(load_dataset(str(root), cache_dir=str(cache)).train) == len(first.train) + 1
    assert len(list(cache.glob("*.npy"))) == 2


# ------------------------------------------------------------------------------------------------
# Tiny-ImageNet


def test_tiny_imagenet_wnids_order_words_and_val_annotations(tmp_path):
    wnids = ["n02000002", "n01000001"]  # deliberately not sorted
    colors = {"n02000002": (250, 10, 10), "n01000001": (10, 10, 250)}
    (tmp_path / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (tmp_path / "words.txt").write_text(
        "n01000001\tgoldfish, Carassius auratus\nn02000002\ttabby, tabby cat\nn09999999\tother\n"
    )
    for w in wnids:
        (tmp_path / "train" / w / "images").mkdir(parents=True)
        (tmp_path / "train" / w / f"{w}_boxes.txt").write_text("")
        for i in range(2):
            Image.new("RGB", (64, 64), colors[w]).save(
                tmp_path / "train" / w / "images" / f"{w}_{i}.JPEG"
            )
    (tmp_path / "val" / "images").mkdir(parents=True)
    lines = []
    for i, w in enumerate(["n01000001", "n02000002", "n01000001"]):
        Image.new("RGB", (64, 64), colors[w]).save(tmp_path / "val" / "images" / f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63")
    (tmp_path / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    ds = load_dataset(str(tmp_path))
    assert (ds.name, ds.layout, ds.image_size, ds.in_channels) == (
        "tiny_imagenet",
        "tiny_imagenet",
        64,
        3,
    )
    assert ds.class_names == ["tabby", "goldfish"] and ds.class_ids == wnids
    assert ds.mean == (0.485, 0.456, 0.406)
    assert ds.train.targets.tolist() == [0, 0, 1, 1] and ds.test.targets.tolist() == [1, 0, 1]
    red = ds.test.load([1]).float().mean(dim=(0, 2, 3))
    assert abs(red[0] - 250) < 4 and abs(red[2] - 10) < 4


# ------------------------------------------------------------------------------------------------
# IDX


def _write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    raw = header + array.tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        raw = gzip.compress(raw)
    path.write_bytes(raw)


def _write_mnist(root: Path, compress: bool) -> dict:
    root.mkdir(parents=True)
    arrays = {}
    for prefix, n in (("train", 5), ("t10k", 3)):
        arrays[prefix] = (_pixels(n, 28, 28), RNG.integers(0, 10, n).astype(np.uint8))
        _write_idx(root / f"{prefix}-images-idx3-ubyte", arrays[prefix][0], compress)
        _write_idx(root / f"{prefix}-labels-idx1-ubyte", arrays[prefix][1], compress)
    return arrays


@pytest.mark.parametrize("compress", [True, False])
def test_idx_folders(tmp_path, compress):
    arrays = _write_mnist(tmp_path / "fashion-mnist", compress)
    ds = load_dataset(str(tmp_path / "fashion-mnist"))
    assert (ds.name, ds.layout, ds.class_names) == (
        "fashion_mnist",
        "idx",
        list(FASHION_MNIST_CLASSES),
    )
    assert (ds.in_channels, ds.image_size, ds.mean) == (1, 28, (0.2860,))
    assert np.array_equal(ds.train.load(torch.arange(5)).numpy()[:, 0], arrays["train"][0])
    assert ds.test.targets.tolist() == arrays["t10k"][1].tolist()
    _write_mnist(tmp_path / "digits", compress)
    ds = load_dataset(str(tmp_path / "digits"))
    assert ds.name == "mnist_idx" and ds.class_names == [str(i) for i in range(10)]


def test_truncated_idx_names_the_file(tmp_path):
    _write_mnist(tmp_path / "m", compress=False)
    f = tmp_path / "m" / "t10k-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte"):
        load_dataset(str(tmp_path / "m"))


# ------------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_unknown_path_lists_every_layout(tmp_path, make):
    path = tmp_path / "nothing-here"
    if make == "empty":
        path.mkdir()
    with pytest.raises(DataError) as err:
        load_dataset(str(path))
    message = str(err.value)
    assert str(path) in message and all(name in message for name in LAYOUTS)


def test_empty_spec_asks_for_a_data_set():
    with pytest.raises(DataError, match="no data set given") as err:
        load_dataset("")
    assert all(name in str(err.value) for name in LAYOUTS)


def test_parent_of_the_extracted_folder_and_path_objects(tmp_path):
    _write_mnist(tmp_path / "archive" / "mnist", compress=True)
    ds = load_dataset(tmp_path / "archive")
    assert (ds.layout, ds.source) == ("idx", str(tmp_path / "archive"))


def test_imagefolder_without_val_or_test(tmp_path):
    _save_images(tmp_path / "train" / "a", _pixels(2, 8, 8, 3))
    _save_images(tmp_path / "train" / "b", _pixels(2, 8, 8, 3))
    with pytest.raises(DataError, match="val/<class>/ or test/<class>/") as err:
        load_dataset(str(tmp_path))
    assert str(tmp_path) in str(err.value)


def test_corrupt_image_names_the_file(tmp_path):
    _write_imagefolder(tmp_path, ["a", "b"])
    bad = tmp_path / "val" / "b" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(DataError, match="broken.jpg"):
        load_dataset(str(tmp_path))


def test_empty_class_folder_and_bad_classes_txt(tmp_path):
    _write_imagefolder(tmp_path, ["a", "b"])
    (tmp_path / "train" / "c").mkdir()
    with pytest.raises(DataError, match=str(tmp_path / "train" / "c")):
        load_dataset(str(tmp_path))
    (tmp_path / "train" / "c").rmdir()
    (tmp_path / "classes.txt").write_text("a\nb\nzzz\n")
    with pytest.raises(DataError, match="classes.txt"):
        load_dataset(str(tmp_path))


# ------------------------------------------------------------------------------------------------
# conversions


def test_float_normalize_round_trip():
    images = torch.randint(0, 256, (4, 3, 5, 5), dtype=torch.uint8)
    x01 = to_float(images)
    assert x01.dtype == torch.float32 and x01.min() >= 0 and x01.max() <= 1
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    x = normalize(x01, mean, std)
    assert torch.allclose(x[:, 1], (x01[:, 1] - 0.4822) / 0.2435)
    assert torch.equal(to_uint8(denormalize(x, mean, std)), images)
    assert normalize(x01[0], mean, std).shape == (3, 5, 5)  # a single (C, H, W) image works too
    with pytest.raises(TypeError):
        to_float(x01)
    with pytest.raises(ValueError, match="channels"):
        normalize(x01, (0.5,) * 2, (0.5,) * 2)


# ------------------------------------------------------------------------------------------------
# the shared CIFAR-10 JPEG ImageFolder (60k files): a cold decode takes 10-20 s on 2 cores,
# so it is `slow` (left out of plain pytest; tests/run.sh and CI run it)


@pytest.mark.slow
@pytest.mark.skipif(
    not SHARED_CIFAR10.is_dir(),
    reason=f"no CIFAR-10 folder at {SHARED_CIFAR10} (set CVDD_TEST_CIFAR10 to one)",
)
def test_shared_cifar10_imagefolder_loads_and_caches(tmp_path, monkeypatch):
    ds = load_dataset(str(SHARED_CIFAR10), cache_dir=str(tmp_path))
    assert (ds.name, ds.num_classes, ds.image_size, ds.in_channels) == ("cifar10", 10, 32, 3)
    assert ds.class_names == list(CIFAR10_CLASSES)
    assert (len(ds.train), len(ds.test)) == (50_000, 10_000)
    assert torch.bincount(ds.test.targets).tolist() == [1000] * 10
    assert len(list(tmp_path.glob("*.npy"))) == 1  # the decode cache was written

    def no_decode(*args, **kwargs):
        raise AssertionError("the second load decoded images instead of reading the cache")

    monkeypatch.setattr(img, "decode_all", no_decode)  # behaviour, not wall time
    again = load_dataset(str(SHARED_CIFAR10), cache_dir=str(tmp_path))
    assert again.train.images.equal(ds.train.images)
    assert again.test.images.equal(ds.test.images)
