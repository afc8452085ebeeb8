"""`load_dataset`: the embedded Fashion-MNIST subset, or a local path whose layout is detected
(cvdd.data_layouts tells the layouts apart, without torch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import layout
from ..data_layouts import BUILTIN_NAMES, descend, detect, layout_problem, menu
from . import images as img
from .archive import choose_format, prepare_archive
from .base import DATASET_STATS, DataError, Dataset, ImageSet, data_error
from .cifar import load_cifar
from .folders import load_imagefolder, load_tiny_imagenet
from .idx import load_idx

EMBEDDED_NPZ = Path(__file__).resolve().parents[2] / "assets" / "fashion_mnist_subset.npz"
# the whole official test split (10,000 images), so students are scored without sampling noise
EMBEDDED_TEST_NPZ = EMBEDDED_NPZ.with_name("fashion_mnist_test.npz")
DEFAULT_CACHE_DIR = Path("~/.cache/cvdd/data")
DEFAULT_DATA_DIR = Path("runs") / layout.DATA_AREA  # the CLI's default runs folder


def load_embedded() -> Dataset:
    """The Fashion-MNIST training subset and full test split in assets/ (needs numpy only; see
    assets/FASHION_MNIST_LICENSE)."""
    arrays = {}
    for path in (EMBEDDED_NPZ, EMBEDDED_TEST_NPZ):
        if not path.is_file():
            raise data_error(
                path,
                "embedded data set is missing",
                "run python assets/make_fashion_mnist_subset.py",
            )
        with np.load(path, allow_pickle=False) as npz:
            arrays.update({k: npz[k] for k in npz.files})
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


def detect_layout(path: str | Path) -> str:
    """The LAYOUTS key that `path` matches; DataError (with the menu) when none does."""
    problem = layout_problem(path)
    if problem is not None:
        raise DataError(problem)
    return detect(Path(path).expanduser())


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
            f"{menu()}\nFix: set data.dataset (CLI: --data PATH)."
        )
    if str(spec) in BUILTIN_NAMES:
        ds = load_embedded()
    else:
        path = descend(Path(spec).expanduser())
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
