"""The straightforward recover step: the yardstick for the engine's fast step (tests, benchmarks).

Written the way a first implementation does it (the SRe2L-style scripts): one group at a time,
a forward hook on every BatchNorm2d that computes that layer's loss term the plain way (mean,
permute + contiguous + var), fp32, and every loss part read back to the host as it is made. It
implements method.md §5.3 for one group and must agree with `cvdd.recover.step.wave_loss`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..augment import shared_crop_flip_roll
from ..config import RecoverConfig

__all__ = ["ReferenceCommittee"]


class _BNHook:
    """One BN layer's ||var - running_var||_2 + ||mean - running_mean||_2 on its input."""

    def __init__(self, module: nn.BatchNorm2d):
        self.loss = torch.zeros(())
        self.handle = module.register_forward_hook(self.hook)

    def hook(self, module: nn.BatchNorm2d, inputs: tuple, output: torch.Tensor) -> None:
        x = inputs[0]
        nch = x.shape[1]
        mean = x.mean([0, 2, 3])
        var = x.permute(1, 0, 2, 3).contiguous().view([nch, -1]).var(1, unbiased=False)
        self.loss = torch.norm(module.running_var.data - var, 2) + torch.norm(
            module.running_mean.data - mean, 2
        )


class ReferenceCommittee:
    """Hooks on every BN layer of every member; `group_loss` and `step` on one group."""

    def __init__(self, models: dict[str, nn.Module], cfg: RecoverConfig):
        self.models, self.cfg = models, cfg
        self.hooks = {
            m: [_BNHook(mod) for mod in model.modules() if isinstance(mod, nn.BatchNorm2d)]
            for m, model in models.items()
        }

    def group_loss(
        self, x_aug: torch.Tensor, targets: torch.Tensor, members: list[str], weights: list[float]
    ) -> tuple[torch.Tensor, dict]:
        """sum_i w_i (CE_i + r_bn BN_i) for one group, and each member's parts as floats."""
        loss, parts = 0.0, {}
        for m, w in zip(members, weights):
            ce = F.cross_entropy(self.models[m](x_aug), targets)
            bn = sum(
                (self.cfg.first_bn_multiplier if i == 0 else 1.0) * h.loss
                for i, h in enumerate(self.hooks[m])
            )
            loss = loss + w * (ce + self.cfg.bn_loss_weight * bn)
            parts[m] = {"ce": ce.item(), "bn": bn.item()}
        return loss, parts

    def step(
        self,
        x: torch.Tensor,
        targets: torch.Tensor,
        members: list[str],
        weights: list[float],
        *,
        opt: torch.optim.Optimizer,
        gen: torch.Generator,
        bounds: tuple[torch.Tensor, torch.Tensor],
    ) -> float:
        """One Adam step on one group's pixels `x` (a leaf that `opt` optimises)."""
        x_aug = shared_crop_flip_roll(x, gen, self.cfg.jitter) if self.cfg.augment else x
        loss, _ = self.group_loss(x_aug, targets, members, weights)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            x.data = torch.maximum(torch.minimum(x.data, bounds[1]), bounds[0])
        return loss.item()

    def remove(self) -> None:
        for hs in self.hooks.values():
            for h in hs:
                h.handle.remove()
