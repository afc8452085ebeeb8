"""Folders of image files: ImageFolder trees (train/ + val/ or test/) and Tiny-ImageNet."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..data_layouts import class_dirs
from . import images as img
from .base import (
    CIFAR10_CLASSES,
    CIFAR100_CLASSES,
    DATASET_STATS,
    IMAGENETTE_WNIDS,
    Dataset,
    ImageSet,
    data_error,
)

_WNID = re.compile(r"n\d{8}")
_FIX_TREE = "arrange the files as <root>/train/<class>/*.jpg and <root>/val/<class>/*.jpg"


def _read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _class_order(path: Path, folders: list[str]) -> list[str]:
    """Class ids in label order: classes.txt, else wnids.txt, else the sorted folder names."""
    for list_name in ("classes.txt", "wnids.txt"):
        list_file = path / list_name
        if not list_file.is_file():
            continue
        listed = _read_lines(list_file)
        if len(set(listed)) != len(listed):
            raise data_error(list_file, "lists a class twice", "keep one line per class")
        if set(listed) != set(folders):
            extra, missing = sorted(set(listed) - set(folders)), sorted(set(folders) - set(listed))
            raise data_error(
                list_file,
                f"does not match the folders in train/ (no folder for {extra[:5]}; "
                f"not listed: {missing[:5]})",
                "list exactly the folder names, one per line",
            )
        return listed
    return folders


def _files_by_class(split_dir: Path, class_ids: list[str]) -> tuple[list[str], list[int]]:
    files, targets = [], []
    for class_idx, class_id in enumerate(class_ids):
        class_dir = split_dir / class_id
        if not class_dir.is_dir():  # a class missing from the held-out split is allowed
            continue
        found = img.list_images(class_dir)
        if not found:
            raise data_error(
                class_dir,
                f"class folder holds no images ({', '.join(sorted(img.IMAGE_EXTENSIONS))})",
                "add images or remove the folder",
            )
        files += found
        targets += [class_idx] * len(found)
    return files, targets


def _known_name(class_ids: list[str]) -> str | None:
    """Recognise well-known data sets delivered as ImageFolder trees by their class folders."""
    ids = set(class_ids)
    if ids == set(CIFAR10_CLASSES):
        return "cifar10"
    if ids == set(CIFAR100_CLASSES):
        return "cifar100"
    if ids == set(IMAGENETTE_WNIDS):
        return "imagenette"
    if len(ids) == 1000 and all(_WNID.fullmatch(c) for c in ids):
        return "imagenet"
    return None


def load_imagefolder(path: Path, source: str, image_size: int | None, cache_dir: Path) -> Dataset:
    """`<root>/train/<class>/*` plus `<root>/val/<class>/*` (or test/) as a Dataset."""
    folders = class_dirs(path / "train")
    eval_dir = next((path / s for s in ("val", "test") if class_dirs(path / s)), None)
    if eval_dir is None:
        raise data_error(
            path,
            "ImageFolder tree has train/ but no val/<class>/ or test/<class>/ folders",
            "add a held-out split as val/<class>/... (or test/<class>/...)",
        )
    class_ids = _class_order(path, folders)
    unknown = sorted(set(class_dirs(eval_dir)) - set(class_ids))
    if unknown:
        raise data_error(
            eval_dir / unknown[0],
            "class folder has no counterpart in train/",
            "use the same class folder names in both splits",
        )
    train = _files_by_class(path / "train", class_ids)
    test = _files_by_class(eval_dir, class_ids)
    if not test[0]:
        raise data_error(eval_dir, "held-out split holds no images", _FIX_TREE)
    return _dataset_from_files(
        path, source, layout="imagefolder", name=_known_name(class_ids) or "imagefolder",
        class_names=class_ids, class_ids=class_ids, train=train, test=test,
        image_size=image_size, cache_dir=cache_dir,
    )  # fmt: skip


def _human_names(path: Path, wnids: list[str]) -> list[str]:
    """First synonym per WNID from words.txt ("n01443537\\tgoldfish, Carassius auratus")."""
    words = {}
    if (path / "words.txt").is_file():
        for line in (path / "words.txt").read_text().splitlines():
            wnid, _, text = line.partition("\t")
            words[wnid.strip()] = text.split(",")[0].strip()
    names = [words.get(w) or w for w in wnids]
    # Two WNIDs can share a first synonym; a class name must identify one class.
    return [f"{n} ({w})" if names.count(n) > 1 else n for n, w in zip(names, wnids)]


def load_tiny_imagenet(path: Path, source: str, image_size: int | None, cache_dir: Path) -> Dataset:
    """tiny-imagenet-200: classes in wnids.txt order, labelled val/ as the test split."""
    wnids = _read_lines(path / "wnids.txt")
    missing = [w for w in wnids if not (path / "train" / w).is_dir()]
    if missing:
        raise data_error(
            path / "train" / missing[0],
            "class folder listed in wnids.txt is missing",
            "re-extract tiny-imagenet-200.zip",
        )
    train = _files_by_class(path / "train", wnids)
    label_of = {w: i for i, w in enumerate(wnids)}
    annotations = path / "val" / "val_annotations.txt"
    test_files, test_targets = [], []
    for line_no, line in enumerate(annotations.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1].strip() not in label_of:
            raise data_error(
                f"{annotations}:{line_no}",
                f"expected '<file>\\t<wnid from wnids.txt>\\t...', got {line!r}",
                "re-extract the archive",
            )
        file = path / "val" / "images" / fields[0].strip()
        if not file.is_file():
            raise data_error(
                file, f"named in {annotations.name} but missing", "re-extract the archive"
            )
        test_files.append(str(file))
        test_targets.append(label_of[fields[1].strip()])
    return _dataset_from_files(
        path, source, layout="tiny_imagenet", name="tiny_imagenet",
        class_names=_human_names(path, wnids), class_ids=wnids, train=train,
        test=(test_files, test_targets), image_size=image_size, cache_dir=cache_dir,
    )  # fmt: skip


def _dataset_from_files(
    path: Path,
    source: str,
    *,
    layout: str,
    name: str,
    class_names: list[str],
    class_ids: list[str],
    train: tuple[list[str], list[int]],
    test: tuple[list[str], list[int]],
    image_size: int | None,
    cache_dir: Path,
) -> Dataset:
    """Decode (small) or index (large) the two file lists and attach statistics."""
    files = train[0] + test[0]
    size, mode = img.probe(files, image_size)
    train_targets, test_targets = torch.tensor(train[1]), torch.tensor(test[1])
    if size <= img.SMALL_MAX:
        # One array for both splits, so that both get the same channel count (and one cache).
        arr = torch.from_numpy(img.decode_cached(path, files, size, cache_dir))
        n_train = len(train[0])
        train_set = ImageSet(train_targets, images=arr[:n_train])
        test_set = ImageSet(test_targets, images=arr[n_train:])
        in_channels = arr.shape[1]
    else:
        train_set = ImageSet(train_targets, loader=img.FileLoader(train[0], size, mode))
        test_set = ImageSet(test_targets, loader=img.FileLoader(test[0], size, mode))
        in_channels = 1 if mode == "L" else 3
    # ImageNet-derived trees (WNID folder names) use ImageNet statistics, like the CV-DD scripts.
    stats_name = name if name in DATASET_STATS else None
    if stats_name is None and all(_WNID.fullmatch(c) for c in class_ids):
        stats_name = "imagenet"
    if stats_name and len(DATASET_STATS[stats_name][0]) == in_channels:
        mean, std = DATASET_STATS[stats_name]
    else:
        limit = img.STATS_SAMPLE if train_set.images is not None else img.STATS_SAMPLE_LAZY
        mean, std = img.channel_stats(train_set, limit)
    return Dataset(
        name=name,
        layout=layout,
        source=source,
        class_names=class_names,
        in_channels=int(in_channels),
        image_size=size,
        mean=mean,
        std=std,
        train=train_set,
        test=test_set,
        class_ids=class_ids,
    )
