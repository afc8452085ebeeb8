"""`load_dataset`: the embedded Fashion-MNIST subset, or a local path whose layout is detected."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from .. import layout
from . import images as img
from .archive import choose_format, prepare_archive
from .base import DATASET_STATS, DataError, Dataset, ImageSet, data_error
from .cifar import detect_cifar, load_cifar
from .folders import detect_imagefolder, detect_tiny_imagenet, load_imagefolder, load_tiny_imagenet
from .idx import detect_idx, load_idx

# Every layout load_dataset accepts; error messages print this table.
LAYOUTS: dict[str, str] = {
    "embedded": (
        "'builtin' (or 'fashion_mnist_subset'): the Fashion-MNIST subset shipped in assets/"
    ),
    "cifar10_python": "folder with data_batch_1..5, test_batch, batches.meta (CIFAR-10 python)",
    "cifar100_python": "folder with train, test, meta pickles (CIFAR-100 python, fine labels)",
    "cifar_tar": "cifar-10-python.tar.gz / cifar-100-python.tar.gz, read without extracting",
    "tiny_imagenet": "train/<wnid>/images/*.JPEG, val/images/ + val/val_annotations.txt, wnids.txt",
    "imagefolder": "train/<class>/* plus val/<class>/* or test/<class>/*; optional classes.txt",
    "imagefolder_zip": (
        "<name>.zip of <class>/* folders, or of train/<class>/* plus test/ (or val/), "
        "optionally inside one top folder; extracted once into <runs>/_data"
    ),
    "idx": "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-* (MNIST family)",
}
BUILTIN_NAMES = ("builtin", "fashion_mnist_subset")
EMBEDDED_NPZ = Path(__file__).resolve().parents[2] / "assets" / "fashion_mnist_subset.npz"
DEFAULT_CACHE_DIR = Path("~/.cache/cvdd/data")
DEFAULT_DATA_DIR = Path("runs") / layout.DATA_AREA  # the CLI's default runs folder


def _menu() -> str:
    return "\n".join(f"  {name:16s} {text}" for name, text in LAYOUTS.items())


def load_embedded() -> Dataset:
    """The Fashion-MNIST subset in assets/ (needs numpy only; see assets/FASHION_MNIST_LICENSE)."""
    if not EMBEDDED_NPZ.is_file():
        raise data_error(
            EMBEDDED_NPZ,
            "embedded data set is missing",
            "run python assets/make_fashion_mnist_subset.py",
        )
    with np.load(EMBEDDED_NPZ, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    splits = {
        split: ImageSet(
            torch.from_numpy(arrays[f"{split}_labels"].astype(np.int64)),
            images=torch.from_numpy(arrays[f"{split}_images"][:, None].copy()),
        )
        for split in ("train", "test")
    }
    mean, std = DATASET_STATS["fashion_mnist_subset"]
    return Dataset(
        name="fashion_mnist_subset",
        layout="embedded",
        source="embedded",
        class_names=[str(c) for c in arrays["class_names"]],
        in_channels=1,
        image_size=int(arrays["train_images"].shape[-1]),
        mean=mean,
        std=std,
        **splits,
    )


def _detect(path: Path) -> str | None:
    if path.is_file() and zipfile.is_zipfile(path):
        return "imagefolder_zip"
    if path.is_file() and tarfile.is_tarfile(path):
        return "cifar_tar"
    if not path.is_dir():
        return None
    cifar = detect_cifar(path)
    if cifar:
        return f"{cifar}_python"
    if detect_tiny_imagenet(path):  # before imagefolder: its train/ also holds class folders
        return "tiny_imagenet"
    if detect_imagefolder(path):
        return "imagefolder"
    return "idx" if detect_idx(path) else None


def _descend(path: Path) -> Path:
    # The official archives extract to one folder (cifar-10-batches-py, tiny-imagenet-200, ...);
    # accept its parent too when that folder is all it holds.
    if path.is_dir() and _detect(path) is None:
        children = [p for p in path.iterdir() if not p.name.startswith(".")]
        if len(children) == 1 and _detect(children[0]) not in (
            None,
            "cifar_tar",
            "imagefolder_zip",
        ):
            return children[0]
    return path


def detect_layout(path: str | Path) -> str:
    """The LAYOUTS key that `path` matches; DataError (with the menu) when none does."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(
            f"{path}: no such file or folder.\nExpected 'builtin' or a path in one "
            f"of these layouts:\n{_menu()}\nFix: check the path."
        )
    layout = _detect(path)
    if layout is None:
        raise DataError(
            f"{path}: matches no known data set layout.\nExpected one of:\n{_menu()}\n"
            "Fix: point at the folder that holds train/ (or the batch / IDX files)."
        )
    return layout


def load_archive(
    path: Path, source: str, image_size: int | None, data_dir: str | Path | None
) -> Dataset:
    """A zipped ImageFolder: extracted (once) under `data_dir`, then loaded as a tree at the
    one size and channel count `choose_format` states; the manifest goes to `Dataset.archive`.
    """
    folder, doc = prepare_archive(path, Path(data_dir or DEFAULT_DATA_DIR).expanduser())
    size, _, why = choose_format(doc, image_size)
    # the decode cache lives beside the extracted tree, inside the runs folder's data area
    ds = load_imagefolder(folder, source, size, folder / "decoded")
    ds.layout = "imagefolder_zip"
    keep = ("sha256", "archive", "top_folder", "test_split", "skipped", "sizes", "modes")
    ds.archive = {**{k: doc.get(k) for k in keep}, "folder": str(folder), "size_rule": why}
    return ds


def load_dataset(
    spec: str | Path = "builtin",
    image_size: int | None = None,
    cache_dir: str | None = None,
    data_dir: str | Path | None = None,
) -> Dataset:
    """Load a data set without downloading anything.

    Args:
        spec: "builtin" / "fashion_mnist_subset" for the embedded set, or a local path in one
            of the LAYOUTS (folder or CIFAR .tar.gz).
        image_size: output size in px (H == W); None or 0 = the data set's native size (for
            image files: the common size if all are square and <= 64 px, else 224).
        cache_dir: where decoded ImageFolder arrays are cached (default ~/.cache/cvdd/data).
        data_dir: where a zipped ImageFolder is extracted (the runs folder's data area; default
            ./runs/_data).

    Raises:
        DataError: the path is missing, matches no layout, or has missing / corrupt pieces.
    """
    image_size = int(image_size) if image_size else None
    if image_size is not None and image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    cache = Path(cache_dir or DEFAULT_CACHE_DIR).expanduser()
    if not str(spec).strip():  # e.g. a paper preset whose data.dataset was never set
        raise DataError(
            f"no data set given.\nExpected 'builtin' or a path in one of these layouts:\n"
            f"{_menu()}\nFix: set data.dataset (CLI: --data PATH)."
        )
    if str(spec) in BUILTIN_NAMES:
        ds = load_embedded()
    else:
        path = _descend(Path(spec).expanduser())
        layout = detect_layout(path)
        if layout == "imagefolder_zip":
            return load_archive(path, str(spec), image_size, data_dir)
        if layout in ("tiny_imagenet", "imagefolder"):
            load = load_tiny_imagenet if layout == "tiny_imagenet" else load_imagefolder
            return load(path, str(spec), image_size, cache)  # resizes while decoding
        ds = (
            load_cifar(path, str(spec)) if layout.startswith("cifar") else load_idx(path, str(spec))
        )
    if image_size and image_size != ds.image_size:  # fixed-size arrays: resize the tensors
        ds.train, ds.test = img.resized(ds.train, image_size), img.resized(ds.test, image_size)
        ds.image_size = image_size
    return ds
