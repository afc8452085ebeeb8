"""Batch augmentations on (N, C, H, W) tensors, all drawn from an explicit torch.Generator.

- `pad_crop_flip`: per-image padded random crop + flip (squeeze up to 64 px, method.md §2).
- `train_crop_flip`: squeeze's choice between it and `rrc_flip` (`squeeze.augment`, §2).
- `shared_crop_flip_roll`: ONE RandomResizedCrop + flip + roll for a whole group (recover, §5.3).
- `rrc_flip`: per-image RandomResizedCrop + flip, batched with grid_sample (student, §7.2).
- `cutmix`: one box and one permutation per batch, lambda ~ Beta(1, 1) (relabel/student, §6.1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "pad_crop_flip",
    "shared_crop_flip_roll",
    "rrc_flip",
    "cutmix",
    "rrc_params",
    "resolve_train_augment",
    "train_crop_flip",
]


def _rand(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=gen)


def pad_crop_flip(x: torch.Tensor, gen: torch.Generator, pad: int) -> torch.Tensor:
    """RandomCrop(size, padding=pad) + RandomHorizontalFlip, independently per image."""
    n, _, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    oy = (_rand(gen, n) * (2 * pad + 1)).long().to(x.device)
    ox = (_rand(gen, n) * (2 * pad + 1)).long().to(x.device)
    flip = (_rand(gen, n) < 0.5).to(x.device)
    rows = oy[:, None] + torch.arange(h, device=x.device)[None]  # (N, H)
    cols = torch.arange(w, device=x.device)[None].expand(n, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols) + ox[:, None]  # flip = reversed columns
    idx_n = torch.arange(n, device=x.device)[:, None, None]
    out = xp[idx_n, :, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def rrc_params(
    gen: torch.Generator, h: int, w: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)
) -> tuple[int, int, int, int]:
    """(top, left, height, width) like torchvision's RandomResizedCrop.get_params, seeded."""
    area = h * w
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        u = _rand(gen, 4).tolist()
        target = area * (scale[0] + u[0] * (scale[1] - scale[0]))
        ar = math.exp(log_r[0] + u[1] * (log_r[1] - log_r[0]))
        cw = int(round(math.sqrt(target * ar)))
        ch = int(round(math.sqrt(target / ar)))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(u[2] * (h - ch + 1))
            left = int(u[3] * (w - cw + 1))
            return top, left, ch, cw
    s = min(h, w)  # fallback: central square crop
    return (h - s) // 2, (w - s) // 2, s, s


def shared_crop_flip_roll(x: torch.Tensor, gen: torch.Generator, jitter: int) -> torch.Tensor:
    """One crop, one flip and one circular shift for the whole tensor (a group), differentiable."""
    _, _, h, w = x.shape
    top, left, ch, cw = rrc_params(gen, h, w)
    out = x[:, :, top : top + ch, left : left + cw]
    if (ch, cw) != (h, w):
        out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
    if _rand(gen, 1).item() < 0.5:
        out = out.flip(3)
    if jitter > 0:
        dy, dx = (_rand(gen, 2) * (jitter + 1)).long().tolist()  # UniformInt[0, jitter]
        out = torch.roll(out, shifts=(dy, dx), dims=(2, 3))
    return out


def rrc_flip(
    x: torch.Tensor, gen: torch.Generator, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)
) -> torch.Tensor:
    """Per-image RandomResizedCrop (output = input size) + flip, in one grid_sample call."""
    n, _, h, w = x.shape
    u = _rand(gen, n, 5)
    area = scale[0] + u[:, 0] * (scale[1] - scale[0])  # fraction of the image area
    log_r = torch.log(torch.tensor(ratio))
    ar = torch.exp(log_r[0] + u[:, 1] * (log_r[1] - log_r[0]))
    cw = torch.sqrt(area * ar).clamp(max=1.0)  # crop width / image width
    ch = torch.sqrt(area / ar).clamp(max=1.0)
    cx = (u[:, 2] * (1 - cw) + cw / 2) * 2 - 1  # crop centre in [-1, 1]
    cy = (u[:, 3] * (1 - ch) + ch / 2) * 2 - 1
    sx = torch.where(u[:, 4] < 0.5, -cw, cw)  # negative x scale = horizontal flip
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = sx, cx
    theta[:, 1, 1], theta[:, 1, 2] = ch, cy
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def resolve_train_augment(mode: str, image_size: int) -> str:
    """`squeeze.augment` with "auto" resolved: RandomResizedCrop above 64 px (ImageNette,
    ImageNet-1K, as torchvision's reference recipes), padded crop at 32-64 px (CIFAR scripts)."""
    if mode != "auto":
        return mode
    return "rrc" if image_size > 64 else "pad_crop"


def train_crop_flip(x: torch.Tensor, gen: torch.Generator, mode: str) -> torch.Tensor:
    """Squeeze's per-image training crop + flip: "rrc" (scale 8-100 %) or "pad_crop" (1/8 side)."""
    if mode == "rrc":
        return rrc_flip(x, gen)
    return pad_crop_flip(x, gen, max(1, x.shape[-1] // 8))  # 4 px at 32 px


def cutmix(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Paste one box from a permuted batch into every image (new tensor; the input is untouched)."""
    n, _, h, w = x.shape
    lam = _rand(gen, 1).item()  # Beta(1, 1) == Uniform(0, 1)
    perm = torch.randperm(n, generator=gen).to(x.device)
    cut = math.sqrt(1.0 - lam)
    bh, bw = int(h * cut), int(w * cut)
    cy, cx = (_rand(gen, 2) * torch.tensor([h, w])).long().tolist()
    y1, y2 = max(cy - bh // 2, 0), min(cy + bh // 2, h)
    x1, x2 = max(cx - bw // 2, 0), min(cx + bw // 2, w)
    out = x.clone()
    out[:, :, y1:y2, x1:x2] = x[perm, :, y1:y2, x1:x2]
    return out
