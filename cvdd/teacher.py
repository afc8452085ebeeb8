"""The relabel teacher: Batch-Specific Soft Labeling (BSSL, paper §3.7 / method.md §6).

A teacher is one committee member or a prior-weighted committee. With BSSL its BN layers use
the statistics of the batch it labels; its stored running statistics are never changed
(`bn_batch_stats_frozen`). The student stage labels its own augmented batches online with it
(method.md §7.1's alternative to the FKD store); `soft_labels` labels the un-augmented images.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from .bn import bn_batch_stats_frozen
from .data import normalize, to_float

if TYPE_CHECKING:  # only for the annotation: the context pulls in the run dir and models
    from .context import Context

__all__ = ["Teacher", "batches", "make_teacher", "soft_labels"]


class Teacher:
    """One model, or a prior-weighted committee (weighted sum of logits, method.md §6.3)."""

    def __init__(self, models: list[nn.Module], weights: list[float], mode: str = "bssl"):
        self.models, self.weights, self.mode = models, weights, mode

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        out = 0.0
        for model, w in zip(self.models, self.weights):
            if self.mode == "bssl":
                with bn_batch_stats_frozen(model):
                    z = model(x)
            else:
                model.eval()
                z = model(x)
            out = out + w * z.float()
        return out


def make_teacher(ctx: Context, mode: str) -> Teacher:
    """relabel.teacher = one member (paper Algorithm 1), or 'committee': logits weighted by
    softmax(alpha / committee_temperature) over all members (official code after June 2025)."""
    rc = ctx.cfg.relabel
    if rc.teacher != "committee":
        return Teacher([ctx.load_member(rc.teacher)], [1.0], mode)
    members = list(ctx.cfg.squeeze.members)
    priors = ctx.priors()
    w = torch.softmax(torch.tensor([priors[m] for m in members]) / rc.committee_temperature, 0)
    return Teacher([ctx.load_member(m) for m in members], w.tolist(), mode)


def batches(n: int, batch_size: int, perm: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Index batches; a final batch of one is folded into the previous one (BN needs >= 2)."""
    idx = perm if perm is not None else torch.arange(n)
    out = list(idx.split(batch_size))
    if len(out) > 1 and len(out[-1]) == 1:
        out[-2] = torch.cat([out[-2], out.pop()])
    return out


@torch.no_grad()
def soft_labels(
    teacher: Teacher, images: torch.Tensor, mean, std, batch_size: int, gen: torch.Generator
) -> torch.Tensor:
    """Probabilities for un-augmented images, batched in one seeded order (for export/analysis).

    With BSSL a label depends on its batch, so the order comes from `gen`: two teachers given
    equally seeded generators label the same batches.
    """
    n = images.shape[0]
    probs = torch.empty(n, 0)
    out = None
    for idx in batches(n, batch_size, torch.randperm(n, generator=gen)):
        p = torch.softmax(teacher.logits(normalize(to_float(images[idx]), mean, std)), 1).cpu()
        if out is None:
            out = torch.empty(n, p.shape[1])
        out[idx] = p
    return out if out is not None else probs
