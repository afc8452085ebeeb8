"""Which data set layout a path holds, told from file names alone (no torch, no decoding).

cvdd.data loads what these functions name; the New-run form and `python -m cvdd run` use
`layout_problem` to refuse a folder that is no data set before a run is queued, with the same
message the loader would give minutes later.
"""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

__all__ = [
    "LAYOUTS",
    "BUILTIN_NAMES",
    "CIFAR_FILES",
    "IDX_STEMS",
    "class_dirs",
    "find_idx",
    "detect_cifar",
    "detect_imagefolder",
    "detect_tiny_imagenet",
    "detect_idx",
    "detect",
    "descend",
    "layout_problem",
]

# Every layout cvdd.data.load_dataset accepts; error messages print this table.
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
CIFAR_FILES = {
    "cifar10": ([f"data_batch_{i}" for i in range(1, 6)], "test_batch", "batches.meta"),
    "cifar100": (["train"], "test", "meta"),
}
IDX_STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def class_dirs(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def find_idx(path: Path, stem: str) -> Path | None:
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        if (path / name).is_file():
            return path / name
    return None


def detect_cifar(path: Path) -> str | None:
    """'cifar10' / 'cifar100' when `path` is an extracted python-version folder, else None."""
    for name, (train_files, test_file, meta_file) in CIFAR_FILES.items():
        if all((path / f).is_file() for f in [*train_files, test_file, meta_file]):
            return name
    return None


def detect_imagefolder(path: Path) -> bool:
    """True when `path` has a train/ folder of class folders (val/ or test/ checked on load)."""
    return bool(class_dirs(path / "train"))


def detect_tiny_imagenet(path: Path) -> bool:
    """True when `path` looks like an extracted tiny-imagenet-200."""
    return (path / "wnids.txt").is_file() and (path / "val" / "val_annotations.txt").is_file()


def detect_idx(path: Path) -> bool:
    """True when `path` is a folder with at least the training images of an IDX release."""
    return path.is_dir() and find_idx(path, IDX_STEMS["train_images"]) is not None


def detect(path: Path) -> str | None:
    """The LAYOUTS key `path` matches, or None."""
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


def descend(path: Path) -> Path:
    # The official archives extract to one folder (cifar-10-batches-py, tiny-imagenet-200, ...);
    # accept its parent too when that folder is all it holds.
    if path.is_dir() and detect(path) is None:
        children = [p for p in path.iterdir() if not p.name.startswith(".")]
        if len(children) == 1 and detect(children[0]) not in (None, "cifar_tar", "imagefolder_zip"):
            return children[0]
    return path


def menu() -> str:
    return "\n".join(f"  {name:16s} {text}" for name, text in LAYOUTS.items())


def layout_problem(path: str | Path) -> str | None:
    """Why `path` (after `descend`) is no data set cvdd can load, with the layouts accepted;
    None when it matches one. Permission errors count as a problem, not a crash."""
    path = Path(path).expanduser()
    try:
        if not path.exists():
            return (
                f"{path}: does not exist.\nExpected 'builtin' or a path in one "
                f"of these layouts:\n{menu()}\nFix: check the path."
            )
        if detect(descend(path)) is not None:
            return None
    except OSError as e:
        return f"{path}: cannot be read ({e.strerror or e}).\nFix: check the path's permissions."
    return (
        f"{path}: matches no known data set layout.\nExpected one of:\n{menu()}\n"
        "Fix: point at the folder that holds train/ (or the batch / IDX files)."
    )
