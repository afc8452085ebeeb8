"""BatchNorm statistics: the recover loss (method.md §5.3) and BSSL's frozen train-mode
teacher (§6.2).

The collector hooks every `nn.BatchNorm2d` in `model.modules()` order and measures the input's
per-channel mean and *biased* variance. It works on a batch made of G groups of equal size, each
group with its own statistics, so many groups of images can share one forward pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn as nn
from torch.autograd.function import once_differentiable

__all__ = ["BNStatsCollector", "bn_matching_loss", "bn_batch_stats_frozen", "bn_layers"]


def bn_layers(model: nn.Module) -> list[tuple[str, nn.BatchNorm2d]]:
    """(name, module) of every BatchNorm2d, in module order; index 0 is the 'first BN'."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]


class _CpuGroupStats(torch.autograd.Function):
    """Per-group, per-channel mean and biased variance, (G, C) each, of an fp32 CPU batch of G
    equal groups. On a CPU the generic var_mean reduction and its autograd formula cost about
    as much as the convolution they measure (a scalar Welford pass forward; a recomputed mean
    and several full-size temporaries backward), so the forward runs the vectorised two-pass
    kernel batch normalisation trains with, and the backward writes the closed-form gradient
    2 g_var (x - mean) / n + g_mean / n in one temporary."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
        parts = x.unflatten(0, (groups, -1))  # a view; unequal groups fail here
        stats = [torch.batch_norm_update_stats(p, None, None, 0.0) for p in parts]
        mean = torch.stack([m for m, _ in stats])
        var = torch.stack([v for _, v in stats])
        ctx.save_for_backward(x, mean)
        ctx.groups = groups
        return mean, var

    @staticmethod
    @once_differentiable
    def backward(ctx, g_mean: torch.Tensor, g_var: torch.Tensor) -> tuple:
        return _stats_grad(*ctx.saved_tensors, ctx.groups, g_mean, g_var), None


def _stats_grad(x, mean, groups: int, g_mean: torch.Tensor, g_var: torch.Tensor) -> torch.Tensor:
    """The gradient of per-group (mean, biased var) at `x`, in fp32, returned in x's dtype."""
    n, c = x.shape[:2]
    xg = x.reshape(groups, n // groups, c, -1).float()  # a view (fp32 x), as in the forward
    per = xg.shape[1] * xg.shape[3]  # values behind each group's channel statistic
    shape = (groups, 1, c, 1)
    grad = (xg - mean.view(shape)).mul_((2.0 / per) * g_var.view(shape))
    grad.add_(g_mean.view(shape) / per)
    return grad.reshape(x.shape).to(x.dtype)


class _LowPrecisionGroupStats(_CpuGroupStats):
    """`_CpuGroupStats` for a bf16 (or fp16) batch on any device: fp32 statistics, while
    backward keeps the input as it came (2 bytes a value), not an fp32 copy of it: the copy
    that `x.float()` under autograd saved made bf16 recover keep as much per image as fp32.
    The fp32 copy lives only inside forward (one layer at a time) and backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
        n, c = x.shape[:2]
        with torch.autocast(x.device.type, enabled=False):  # the statistics stay fp32
            xg = x.reshape(groups, n // groups, c, -1).float()  # (G, B, C, H*W), transient
            var, mean = torch.var_mean(xg, dim=(1, 3), unbiased=False)
        ctx.save_for_backward(x, mean)  # backward (the same closed form) returns x's dtype
        ctx.groups = groups
        return mean, var


class BNStatsCollector:
    """Records per-group batch mean / biased variance at every BN input during forward passes.

    Usage: `col = BNStatsCollector(model); col.reset(groups=G); model(x)`, where x holds G
    equal-size groups; then `col.means[l]`, `col.vars[l]` are (G, C_l) tensors (with autograd
    when x requires grad).
    """

    def __init__(self, model: nn.Module):
        self.layers = bn_layers(model)
        if not self.layers:
            raise ValueError(
                f"{type(model).__name__} has no BatchNorm2d layer; BN matching "
                "and BSSL need a model with batch normalisation"
            )
        self.groups = 1
        self.means: list[torch.Tensor] = []
        self.vars: list[torch.Tensor] = []
        self._handles = [m.register_forward_hook(self._hook) for _, m in self.layers]

    def _hook(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        x = inputs[0]
        if x.dtype in (torch.bfloat16, torch.float16):  # fp32 statistics, no fp32 copy saved
            mean, var = _LowPrecisionGroupStats.apply(x, self.groups)
        elif x.device.type == "cpu":
            mean, var = _CpuGroupStats.apply(x.float(), self.groups)
        else:
            # (G, B, C, H*W): a view of the input, NCHW or channels_last alike, so the
            # statistics cost one fused reduction and no copy
            n, c = x.shape[:2]
            x = x.reshape(self.groups, n // self.groups, c, -1)
            var, mean = torch.var_mean(x, dim=(1, 3), unbiased=False)
        self.means.append(mean)
        self.vars.append(var)

    def reset(self, groups: int = 1) -> None:
        self.groups = groups
        self.means, self.vars = [], []

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def bn_matching_loss(col: BNStatsCollector, first_bn_multiplier: float = 10.0) -> torch.Tensor:
    """Per-group BN loss (G,): sum_l m_l (||var_B - var_run||_2 + ||mean_B - mean_run||_2).

    m_0 = first_bn_multiplier for the first BN in module order, 1 otherwise (method.md §5.3).
    Must be called right after one forward pass through the hooked model.
    """
    total = 0.0
    for i, ((_, bn), mean, var) in enumerate(zip(col.layers, col.means, col.vars)):
        m = first_bn_multiplier if i == 0 else 1.0
        d_var = torch.linalg.vector_norm(var - bn.running_var.float(), dim=1)
        d_mean = torch.linalg.vector_norm(mean - bn.running_mean.float(), dim=1)
        total = total + m * (d_var + d_mean)
    return total


@contextlib.contextmanager
def bn_batch_stats_frozen(model: nn.Module) -> Iterator[nn.Module]:
    """BSSL teacher: BN layers normalise with the current batch's statistics (train mode) while
    every stored running statistic is left exactly as it was; dropout and all else stay in eval.
    """
    saved_modes = {m: m.training for m in model.modules()}
    saved = []
    for _, bn in bn_layers(model):
        saved.append(
            (
                bn,
                bn.running_mean.clone(),
                bn.running_var.clone(),
                bn.num_batches_tracked.clone() if bn.num_batches_tracked is not None else None,
            )
        )
    model.eval()
    for bn, *_ in saved:
        bn.train()
    try:
        yield model
    finally:
        with torch.no_grad():
            for bn, mean, var, nbt in saved:
                bn.running_mean.copy_(mean)
                bn.running_var.copy_(var)
                if nbt is not None:
                    bn.num_batches_tracked.copy_(nbt)
        for m, mode in saved_modes.items():
            m.training = mode
