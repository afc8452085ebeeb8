"""Data types shared by every layout: `ImageSet`, `Dataset`, `DataError`, known statistics, and
the uint8 / [0, 1] / normalized conversions that every stage uses."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR100_CLASSES",
    "DATASET_STATS",
    "FASHION_MNIST_CLASSES",
    "IMAGENETTE_WNIDS",
    "DataError",
    "Dataset",
    "ImageSet",
    "denormalize",
    "normalize",
    "to_float",
    "to_uint8",
]

# Per-channel mean / std of [0, 1] pixels, from the CV-DD scripts (docs/method.md §5.1) and the
# usual torchvision values for the MNIST family.
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
DATASET_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": (CIFAR10_MEAN, CIFAR10_STD),
    "cifar100": (CIFAR100_MEAN, CIFAR100_STD),
    "tiny_imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "imagenette": (IMAGENET_MEAN, IMAGENET_STD),
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "fashion_mnist": (FASHION_MNIST_MEAN, FASHION_MNIST_STD),
    "fashion_mnist_subset": (FASHION_MNIST_MEAN, FASHION_MNIST_STD),
    "mnist_idx": (MNIST_MEAN, MNIST_STD),
}

# Label orders of the official releases (batches.meta / meta / README), used to name data sets
# that arrive as ImageFolder trees. Both CIFAR orders are alphabetical, so sorted folders agree.
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
# A word list keeps the 100 names in 8 lines (a literal would be formatted one name per line).
_CIFAR100_WORDS = """
    apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus
    butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch
    crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo
    keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse
    mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy
    porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper
    snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television
    tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm"""
CIFAR100_CLASSES = tuple(_CIFAR100_WORDS.split())
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
IMAGENETTE_WNIDS = (
    "n01440764",
    "n02102040",
    "n02979186",
    "n03000684",
    "n03028079",
    "n03394916",
    "n03417042",
    "n03425413",
    "n03445777",
    "n03888605",
)


class DataError(ValueError):
    """A data set path that cannot be loaded; the message names the path and the fix."""


def data_error(path: object, problem: str, fix: str) -> DataError:
    """Build a DataError whose message reads `<path>: <problem>. Fix: <fix>`."""
    return DataError(f"{path}: {problem}.\nFix: {fix}")


def _as_index(indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(indices, dtype=torch.long).reshape(-1)


class ImageSet:
    """One split of a data set: labels in memory, images as uint8 (N, C, H, W).

    Small data sets keep every image in `images` (one tensor, decoded once); large ones set
    `images` to None and decode files on each `load()` through `loader`.
    """

    def __init__(
        self,
        targets: torch.Tensor,
        images: torch.Tensor | None = None,
        loader: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if (images is None) == (loader is None):
            raise ValueError("ImageSet needs exactly one of images or loader")
        self.targets = torch.as_tensor(targets, dtype=torch.long)  # (N,)
        self.images = images  # (N, C, H, W) uint8, or None when loaded lazily
        self._loader = loader
        if images is not None and len(images) != len(self.targets):
            raise ValueError(f"{len(images)} images but {len(self.targets)} labels")

    def __len__(self) -> int:
        return len(self.targets)

    def load(self, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """uint8 (n, C, H, W) images at `indices`, in the order given."""
        index = _as_index(indices)
        if len(index) and not (-len(self) <= int(index.min()) and int(index.max()) < len(self)):
            raise IndexError(f"index out of range for a split of {len(self)} images")
        if self.images is not None:
            return self.images[index]
        return self._loader(index % max(len(self), 1))

    def class_indices(self, class_idx: int) -> torch.Tensor:
        """Indices (ascending) of the images whose label is `class_idx`."""
        return torch.nonzero(self.targets == int(class_idx)).flatten()


@dataclass
class Dataset:
    """A loaded data set: both splits plus what a model needs to know about them."""

    name: str  # "fashion_mnist_subset", "cifar10", "cifar100", "tiny_imagenet", "imagefolder", ...
    layout: str  # key of LAYOUTS that matched the path
    source: str  # the path given, or "embedded"
    class_names: list[str]  # label index order; human-readable where the data set offers it
    in_channels: int  # 1 (grayscale) or 3 (RGB)
    image_size: int  # H == W of every image `load()` returns
    mean: tuple[float, ...]  # per channel, for [0, 1] pixels
    std: tuple[float, ...]
    train: ImageSet
    test: ImageSet
    class_ids: list[str] = field(default_factory=list)  # folder names / WNIDs; = class_names
    archive: dict | None = None  # a zipped ImageFolder: its manifest's summary (data/archive.py)

    def __post_init__(self) -> None:
        self.class_ids = list(self.class_ids) or list(self.class_names)
        # A label outside the class list means the class order was read wrongly; fail here
        # rather than as a CUDA assert inside the loss.
        for split_name, split in (("train", self.train), ("test", self.test)):
            if len(split) and not 0 <= int(split.targets.min()) <= int(split.targets.max()) < (
                self.num_classes
            ):
                raise data_error(
                    self.source,
                    f"{split_name} labels fall outside 0..{self.num_classes - 1}",
                    "check that the class list matches the labels",
                )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1] (same shape and device)."""
    if images.dtype != torch.uint8:
        # Refuse floats: dividing [0, 1] images by 255 again is a silent, common bug.
        raise TypeError(f"to_float expects uint8 images, got {images.dtype}")
    return images.float().div_(255.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] float images -> uint8, rounded and clamped (for PNGs and snapshots)."""
    return images.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)


def _channel_view(x: torch.Tensor, values: Sequence[float], what: str) -> torch.Tensor:
    channels = x.shape[-3]
    if len(values) != channels:
        raise ValueError(f"{what} has {len(values)} values but the images have {channels} channels")
    # (C, 1, 1) broadcasts against both (C, H, W) and (N, C, H, W).
    return torch.as_tensor(values, dtype=x.dtype, device=x.device).view(-1, 1, 1)


def normalize(x01: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """[0, 1] images (N, C, H, W) -> normalized model input `(x - mean) / std`."""
    return (x01 - _channel_view(x01, mean, "mean")) / _channel_view(x01, std, "std")


def denormalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Normalized model input -> [0, 1] images (not clamped)."""
    return x * _channel_view(x, std, "std") + _channel_view(x, mean, "mean")
