"""Waves: the groups recover optimises together, their live state, snapshots and checkpoints.

A wave holds equal-size groups (committee.py), their normalised fp32 pixels, one Adam over
them and every group's own random stream. Adam's state is elementwise, so a checkpointed wave can
be split into smaller waves on resume (a smaller memory budget) with the same result.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import RecoverConfig
from ..data import denormalize, normalize, to_float, to_uint8
from .committee import Group, group_generator

__all__ = [
    "GRID_SIDE",
    "Wave",
    "open_wave",
    "split_waves",
    "schedule_waves",
    "pixel_bounds",
    "grid_rows",
    "snapshot_images",
    "checkpoint_state",
]

GRID_SIDE = 10  # snapshots show at most 10 classes x 10 IPC indices (cvdd/grid.py's grid)


@dataclass
class Wave:
    """The groups optimised together, their pixels (normalised, fp32), Adam and streams."""

    groups: list[Group]
    rows: list[int]
    targets: torch.Tensor  # (G, B) long, on the device
    x: torch.Tensor  # (G * B, C, H, W) fp32, requires grad
    opt: torch.optim.Adam
    gens: list[torch.Generator]
    step: int  # the first step still to run

    def state(self, step: int) -> dict:
        """Resume record: group ids, step, pixels, Adam moments and streams (exact on resume)."""
        st = self.opt.state.get(self.x, {})
        # copies: on a CPU run .cpu() would hand out the live tensors
        moments = {k: st[k].to("cpu", copy=True) for k in ("exp_avg", "exp_avg_sq") if k in st}
        return dict(
            groups=[g.group for g in self.groups],
            step=step,
            x=self.x.detach().to("cpu", copy=True),
            gens=[g.get_state() for g in self.gens],
            **moments,
        )


def open_wave(
    groups: list[Group],
    images: torch.Tensor,
    cur: dict | None,
    seed: int,
    *,
    cfg: RecoverConfig,
    mean,
    std,
    device: torch.device,
) -> Wave:
    """A wave from the initial images, or from the checkpointed wave `cur` that holds its groups
    (possibly a larger wave: Adam's state is elementwise, so rows can be picked out)."""
    rows = [i for g in groups for i in g.indices]
    targets = torch.tensor([g.classes for g in groups], device=device)
    resumed = cur is not None and groups[0].group in cur["groups"]
    if resumed:
        b = len(groups[0].classes)
        pos = [cur["groups"].index(g.group) for g in groups]
        pick = torch.tensor([p * b + j for p in pos for j in range(b)])
        x = cur["x"][pick].to(device)
        gens = [torch.Generator().set_state(cur["gens"][p]) for p in pos]
    else:
        x = normalize(to_float(images[rows].to(device)), mean, std)
        gens = [group_generator(seed, g.group) for g in groups]
    x.requires_grad_(True)
    fused = True if device.type == "cuda" else None
    opt = torch.optim.Adam([x], lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8, fused=fused)
    step = cur["step"] if resumed else 0
    if resumed and "exp_avg" in cur:
        sd = opt.state_dict()
        sd["state"] = {
            0: dict(
                step=torch.tensor(float(step)),
                exp_avg=cur["exp_avg"][pick].to(device),
                exp_avg_sq=cur["exp_avg_sq"][pick].to(device),
            )
        }
        opt.load_state_dict(sd)
    return Wave(groups, rows, targets, x, opt, gens, step)


def split_waves(sizes: list[int], per_wave: int) -> list[list[int]]:
    """Indices of groups in waves of up to `per_wave` groups of equal size, in order of first
    appearance of each size (the last class chunk of each IPC index may be smaller)."""
    by_size: dict[int, list[int]] = {}
    for i, s in enumerate(sizes):
        by_size.setdefault(s, []).append(i)
    out = []
    for idx in by_size.values():
        n = per_wave if per_wave > 0 else len(idx)
        out += [idx[i : i + n] for i in range(0, len(idx), n)]
    return out


def schedule_waves(groups: list[Group], finished: set[int], cur: dict | None, per: int):
    """The waves still to run: the checkpointed wave's groups first (split by `per` if the
    budget shrank), then the untouched groups, in the order a fresh run takes them."""
    live = set(cur["groups"]) if cur else set()
    head = [g for g in groups if g.group in live]
    rest = [g for g in groups if g.group not in live and g.group not in finished]
    out = []
    for part in (head, rest):
        out += [[part[i] for i in w] for w in split_waves([len(g.classes) for g in part], per)]
    return out


def pixel_bounds(mean, std, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalised values of pixels 0 and 1, per channel: the clamp after each step."""
    m = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=device).view(1, -1, 1, 1)
    return (0 - m) / s, (1 - m) / s


def grid_rows(groups: list[Group]) -> list[int]:
    """Class-major rows of the images a snapshot shows (first 10 classes x first 10 IPC)."""
    ipc = 1 + max(g.ipc_idx for g in groups)
    classes = 1 + max(c for g in groups for c in g.classes)
    side_c, side_k = min(classes, GRID_SIDE), min(ipc, GRID_SIDE)
    return [c * ipc + k for c in range(side_c) for k in range(side_k)]


def snapshot_images(out: torch.Tensor, shown: list[int], wave: Wave, mean, std) -> torch.Tensor:
    """The shown images as uint8: the wave's from its live pixels, the others from `out`."""
    images = out[shown].clone()
    pos = {r: i for i, r in enumerate(wave.rows)}
    live = [(k, pos[r]) for k, r in enumerate(shown) if r in pos]
    if live:
        ks, ps = map(list, zip(*live))
        images[ks] = to_uint8(denormalize(wave.x.detach()[ps], mean, std)).cpu()
    return images


def checkpoint_state(seed: int, done: int, finished: dict, current: dict) -> dict:
    """A checkpoint: finished groups as their final uint8 images, the live wave in fp32; `step`
    counts the wave-steps done (the progress step)."""
    return dict(format=2, seed=seed, step=done, done=done, finished=dict(finished), current=current)
