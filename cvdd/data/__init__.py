"""Data sets as uint8 tensors, loaded from local files only (cvdd never downloads data).

`load_dataset("builtin")` returns the Fashion-MNIST subset shipped in assets/; any other spec
is a path whose layout (CIFAR python folders or tar.gz, ImageFolder, Tiny-ImageNet, IDX) is
detected. One module per concern: base (types, statistics, conversions), cifar, idx, folders
(ImageFolder, Tiny-ImageNet), images (decoding, cache, resizing), layouts (`load_dataset`).
"""

from ..data_layouts import LAYOUTS
from .base import (
    CIFAR10_CLASSES,
    CIFAR100_CLASSES,
    DATASET_STATS,
    FASHION_MNIST_CLASSES,
    IMAGENETTE_WNIDS,
    DataError,
    Dataset,
    ImageSet,
    denormalize,
    normalize,
    to_float,
    to_uint8,
)
from .layouts import detect_layout, load_dataset

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR100_CLASSES",
    "DATASET_STATS",
    "FASHION_MNIST_CLASSES",
    "IMAGENETTE_WNIDS",
    "LAYOUTS",
    "DataError",
    "Dataset",
    "ImageSet",
    "denormalize",
    "detect_layout",
    "load_dataset",
    "normalize",
    "to_float",
    "to_uint8",
]
