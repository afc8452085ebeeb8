"""One recover step of a wave (method.md §5.3), the function to read first: `recover_step`.

In order: augment each group, run every voting member forward with its BN-statistic hooks, sum
the weighted loss, backward to the pixels, Adam, clamp to valid pixels. `wave_loss` is the
committee's forward and loss, shared with the memory probe (plan.py) and the CUDA-graph step
(graph.py, which replays the same parts from static tensors).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..augment import shared_crop_flip_roll
from ..bn import BNStatsCollector, bn_matching_loss
from ..config import RecoverConfig
from .committee import Vote, draw_voters, wave_votes
from .waves import Wave

__all__ = [
    "Members",
    "augment_wave",
    "wave_loss",
    "read_parts",
    "recover_step",
    "fast_path",
    "member_format",
]


@dataclass
class Members:
    """The committee as a step runs it: the models, their BN-statistic hooks, the priors
    (schedule=per_iteration draws weights from them) and the fast path (bf16, channels_last)."""

    models: dict[str, nn.Module]
    collectors: dict[str, BNStatsCollector]
    priors: dict[str, float]
    amp: bool = False
    channels_last: bool = False

    def loss(self, xa: torch.Tensor, votes: list[Vote], groups: int, cfg: RecoverConfig):
        """`wave_loss` with these members."""
        kw = dict(models=self.models, collectors=self.collectors, cfg=cfg, amp=self.amp)
        return wave_loss(xa, votes, groups, channels_last=self.channels_last, **kw)


def augment_wave(x: torch.Tensor, gens: list[torch.Generator], cfg: RecoverConfig) -> torch.Tensor:
    """One shared crop, flip and roll per group (method.md §5.3), each from its group's stream."""
    if not cfg.augment:
        return x
    xv = x.view(len(gens), -1, *x.shape[1:])
    return torch.cat([shared_crop_flip_roll(xv[i], g, cfg.jitter) for i, g in enumerate(gens)])


def wave_loss(
    xa: torch.Tensor,
    votes: list[Vote],
    groups: int,
    *,
    models: dict[str, nn.Module],
    collectors: dict[str, BNStatsCollector],
    cfg: RecoverConfig,
    amp: bool = False,
    channels_last: bool = False,
) -> tuple[torch.Tensor, dict]:
    """Committee loss of a wave: sum over groups and voters of w_i (CE_i + r_bn BN_i) (§5.3).

    `xa` holds `groups` equal-size groups, already augmented. Returns the loss and its parts,
    all tensors on the device: per-member mean CE / BN over the groups it votes for, and the
    weighted sums `ce`, `bn` (nothing is read back to the host here).
    """
    b = xa.shape[0] // groups
    loss = xa.new_zeros((), dtype=torch.float32)
    ce_sum, bn_sum, members = loss, loss, {}
    for v in votes:
        inp = xa  # (G * B, C, H, W); the member's groups only when it does not vote for all
        if v.index is not None:
            inp = xa.view(groups, b, *xa.shape[1:]).index_select(0, v.index).flatten(0, 1)
        if channels_last:
            inp = inp.contiguous(memory_format=torch.channels_last)
        col = collectors[v.member]
        col.reset(v.count)  # the hooks measure each group's BN statistics in this forward
        # no cast cache: frozen members have nothing to cache, and a graph capture must not
        with torch.autocast(xa.device.type, torch.bfloat16, enabled=amp, cache_enabled=False):
            logits = models[v.member](inp)
        ce = F.cross_entropy(logits.float(), v.targets, reduction="none").view(v.count, b).mean(1)
        bn = bn_matching_loss(col, cfg.first_bn_multiplier)  # (count,) fp32
        w_ce, w_bn = (v.weights * ce).sum(), (v.weights * bn).sum()
        loss = loss + w_ce + cfg.bn_loss_weight * w_bn
        ce_sum, bn_sum = ce_sum + w_ce, bn_sum + w_bn
        members[v.member] = dict(ce=ce.mean(), bn=bn.mean(), weight=v.mean_weight, groups=v.count)
    return loss, dict(loss=loss.detach(), ce=ce_sum.detach(), bn=bn_sum.detach(), members=members)


def recover_step(
    w: Wave,
    votes: list[Vote],
    *,
    lr: float,
    members: Members,
    cfg: RecoverConfig,
    bounds: tuple[torch.Tensor, torch.Tensor],
    bad: torch.Tensor,
) -> dict:
    """One step of wave `w` at learning rate `lr`, as method.md §5.3 writes it. Returns the loss
    parts (device tensors); a non-finite loss sets `bad` on the device, read where the loop
    reads anyway. `votes`: who votes for which group of the wave, with what weight."""
    for pg in w.opt.param_groups:
        pg["lr"] = lr
    if cfg.schedule == "per_iteration":  # each group draws new voters from its own stream
        names = list(members.models)
        drawn = [draw_voters(names, members.priors, cfg, g) for g in w.gens]
        votes = wave_votes([d[0] for d in drawn], [d[1] for d in drawn], w.targets, names)

    # 1. augmentation: one crop, flip and roll per group, drawn from the group's stream
    xa = augment_wave(w.x, w.gens, cfg)  # (G * B, C, H, W)

    # 2. + 3. each voter's forward pass over its groups, BN statistics per group from the
    # hooks, and the loss: sum over groups and voters of w_i (CE_i + r_bn BN_i)
    loss, parts = members.loss(xa, votes, len(w.groups), cfg)

    # 4. backward through every voter to the pixels
    w.opt.zero_grad(set_to_none=True)
    loss.backward()

    # 5. Adam on the pixels: each group owns its rows of the elementwise state
    w.opt.step()

    # 6. clamp to valid [0, 1] pixels (normalised bounds), and note a non-finite loss
    with torch.no_grad():
        w.x.clamp_(*bounds)
        bad |= ~torch.isfinite(parts["loss"])
    return parts


def read_parts(parts: dict, groups: int) -> dict:
    """The loss parts as host floats, per group (one device read for all of them)."""
    tensors = [parts["loss"], parts["ce"], parts["bn"]]
    for p in parts["members"].values():
        tensors += [p["ce"].detach(), p["bn"].detach()]
    vals = torch.stack([t.float() for t in tensors]).tolist()
    rec = dict(loss=vals[0] / groups, ce=vals[1] / groups, bn=vals[2] / groups, members={})
    for i, (m, p) in enumerate(parts["members"].items()):
        rec["members"][m] = dict(
            ce=vals[3 + 2 * i], bn=vals[4 + 2 * i], weight=p["weight"], groups=p["groups"]
        )
    return rec


def fast_path(cfg: RecoverConfig, device: torch.device) -> tuple[bool, bool]:
    """(bf16 autocast, channels_last): both with precision=bf16 on CUDA (tensor cores like NHWC)."""
    on = cfg.precision == "bf16" and device.type == "cuda"
    return on, on


@contextlib.contextmanager
def member_format(models: dict[str, nn.Module], channels_last: bool) -> Iterator[None]:
    """Members in channels_last for the stage, restored afterwards (later stages share them)."""
    if channels_last:
        for m in models.values():
            m.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        if channels_last:
            for m in models.values():
                m.to(memory_format=torch.contiguous_format)
