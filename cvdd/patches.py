"""Initialisation from real patches, RDED-style (method.md §4; paper §3.4 "Real Image
Initialization").

Per class: take `candidates` random real images, cut `num_crops` square RandomResizedCrops of each,
score every crop with an observer model (CE to the true class, lower = more confident), keep each
image's best crop, rank images by it, and stitch the top `ipc * factor**2` patches into `ipc`
images (factor x factor mosaics, row-major; factor 1 = one patch per image).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .augment import rrc_params
from .data import normalize, to_float
from .utils import CvddError

__all__ = ["check_ipc", "select_patches", "rded_images", "random_real"]


def _needs(cfg) -> list[tuple[int, str]]:
    """(real training images per class, the config key that asks for them) of a RunConfig:
    init's (RDED stitches factor**2 patches into each image) and, when it computes the priors,
    the prior stage's own SRe2L++ runs."""
    f2 = cfg.init.factor**2
    out = [(cfg.ipc * (f2 if cfg.init.method == "rded" else 1), "ipc")]
    if cfg.prior.source == "compute":
        out.append((cfg.prior.ipc * f2, "prior.ipc"))
    return out


def check_ipc(cfg, trainset, class_names: list[str]) -> None:
    """Every class must have the training images the run's IPC needs (`_needs`); the error
    names the smallest class and the config key to lower."""
    counts = torch.bincount(trainset.targets, minlength=len(class_names))
    for need, key in _needs(cfg):
        short = [(class_names[c], int(n)) for c, n in enumerate(counts) if n < need]
        if short:
            name, n = min(short, key=lambda t: t[1])
            what = "IPC" if key == "ipc" else key
            raise CvddError(
                f"class {name!r} has only {n} training images but {what} needs {need} "
                f"per class; lower ipc (--set {key}={max(1, n)}) or use more data",
                field=key,
            )


@torch.no_grad()
def select_patches(
    trainset,
    class_idx: int,
    observer: nn.Module,
    *,
    ipc: int,
    factor: int,
    candidates: int,
    num_crops: int,
    mean,
    std,
    gen: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    """The `ipc` initial images of one class, uint8 (ipc, C, H, W)."""
    pool = trainset.class_indices(class_idx)
    need = ipc * factor * factor
    k = min(len(pool), max(candidates, need))
    pick = pool[torch.randperm(len(pool), generator=gen)[:k]]
    imgs = to_float(trainset.load(pick))  # (k, C, H, W) in [0, 1]
    _, c, h, w = imgs.shape
    cell = h // factor
    crops = torch.empty(k, num_crops, c, cell, cell)
    for i in range(k):
        for j in range(num_crops):
            top, left, ch, cw = rrc_params(gen, h, w, ratio=(1.0, 1.0))  # square crops (RDED)
            crops[i, j] = F.interpolate(
                imgs[i : i + 1, :, top : top + ch, left : left + cw],
                size=(cell, cell),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )[0]
    x = normalize(crops.flatten(0, 1), mean, std)
    if factor > 1:  # the observer sees each patch centred on a zero (= mean) canvas
        pad_l = (w - cell) // 2
        pad_t = (h - cell) // 2
        x = F.pad(x, (pad_l, w - cell - pad_l, pad_t, h - cell - pad_t))
    observer.eval()
    y = torch.full((x.shape[0],), class_idx, dtype=torch.long)
    ce = torch.cat(
        [
            F.cross_entropy(observer(xb.to(device)), yb.to(device), reduction="none").cpu()
            for xb, yb in zip(x.split(256), y.split(256))
        ]
    ).view(k, num_crops)
    best_ce, best_j = ce.min(1)
    order = best_ce.argsort()[:need]  # most confident images first
    patches = crops[order, best_j[order]]  # (need, C, cell, cell)
    out = torch.zeros(ipc, c, h, w)
    bounds = [0] + [(h * (r + 1)) // factor for r in range(factor)]  # first cells absorb no extra
    for cell_id in range(factor * factor):
        r, q = divmod(cell_id, factor)
        y0, y1, x0, x1 = bounds[r], bounds[r + 1], bounds[q], bounds[q + 1]
        for i in range(ipc):
            p = patches[cell_id * ipc + i : cell_id * ipc + i + 1]
            out[i, :, y0:y1, x0:x1] = F.interpolate(p, size=(y1 - y0, x1 - x0), mode="nearest")[0]
    return (out * 255).round().clamp(0, 255).to(torch.uint8)


def rded_images(
    trainset,
    num_classes: int,
    observer: nn.Module,
    *,
    ipc: int,
    cfg,
    mean,
    std,
    gen,
    device,
    on_class=None,
) -> torch.Tensor:
    """The `ipc` initial images of each of the first `num_classes` classes, class-major uint8,
    with `cfg` (an InitConfig); `on_class(c)` after each class (progress)."""
    parts = []
    for c in range(num_classes):
        kw = dict(factor=cfg.factor, candidates=cfg.candidates, num_crops=cfg.num_crops)
        parts.append(
            select_patches(
                trainset, c, observer, ipc=ipc, mean=mean, std=std, gen=gen, device=device, **kw
            )
        )
        if on_class is not None:
            on_class(c)
    return torch.cat(parts)


def random_real(trainset, num_classes: int, ipc: int, gen: torch.Generator) -> torch.Tensor:
    """`ipc` random real training images per class, class-major uint8 (num_classes * ipc, ...)."""
    idx = []
    for c in range(num_classes):
        pool = trainset.class_indices(c)
        idx.append(pool[torch.randperm(len(pool), generator=gen)[:ipc]])
    return trainset.load(torch.cat(idx))
