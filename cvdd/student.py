"""Relabel teachers (BSSL, paper §3.7 / spec §6) and student training (post-eval, spec §7).

Soft labels are computed on the fly: for every student batch the frozen teacher labels exactly
the augmented, cut-mixed images the student sees (spec §7.1's online alternative to the FKD
store). BSSL: the teacher's BN layers use that batch's statistics; its stored running statistics
are never changed (`bn_batch_stats_frozen`).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .augment import cutmix, rrc_flip
from .bn import bn_batch_stats_frozen
from .config import ValidateConfig
from .data import normalize, to_float
from .utils import CvddError, StopRequested

__all__ = ["Teacher", "batches", "train_student", "evaluate", "soft_labels"]


class Teacher:
    """One model, or a prior-weighted committee (weighted sum of logits, spec §6.3)."""

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


def batches(n: int, batch_size: int, perm: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Index batches; a final batch of one is folded into the previous one (BN needs >= 2)."""
    idx = perm if perm is not None else torch.arange(n)
    out = list(idx.split(batch_size))
    if len(out) > 1 and len(out[-1]) == 1:
        out[-2] = torch.cat([out[-2], out.pop()])
    return out



@torch.no_grad()
def evaluate(
    model: nn.Module, testset, mean, std, device, batch_size: int = 500
) -> tuple[float, float]:
    """Top-1 / top-5 (%) on a real split (an ImageSet with .targets and .load)."""
    model.eval()
    n = len(testset)
    c1 = c5 = 0
    for idx in torch.arange(n).split(batch_size):
        x = normalize(to_float(testset.load(idx).to(device)), mean, std)
        y = testset.targets[idx].to(device)
        top = model(x).topk(min(5, model.num_classes), dim=1).indices
        c1 += int((top[:, 0] == y).sum())
        c5 += int((top == y[:, None]).any(1).sum())
    return 100.0 * c1 / n, 100.0 * c5 / n


@torch.no_grad()
def soft_labels(
    teacher: Teacher, images: torch.Tensor, mean, std, batch_size: int, gen: torch.Generator
) -> torch.Tensor:
    """Probabilities for un-augmented images, batched in one seeded order (for export/analysis)."""
    n = images.shape[0]
    probs = torch.empty(n, 0)
    out = None
    for idx in batches(n, batch_size, torch.randperm(n, generator=gen)):
        p = torch.softmax(teacher.logits(normalize(to_float(images[idx]), mean, std)), 1).cpu()
        if out is None:
            out = torch.empty(n, p.shape[1])
        out[idx] = p
    return out if out is not None else probs


def train_student(
    student: nn.Module,
    images: torch.Tensor,
    teacher: Teacher,
    testset,
    cfg: ValidateConfig,
    mean,
    std,
    gen: torch.Generator,
    should_stop: Callable[[], bool],
    progress: Callable[[int, int, dict], None],
    checkpoint: Callable[[dict], None],
    state: dict | None = None,
) -> dict:
    """Train `student` from scratch on `images` (uint8, on its device) with KL to the teacher.

    KL(batchmean) at T = cfg.temperature, AdamW with weight decay on conv/linear weights only,
    per-epoch smoothed cosine lr (eta), RandomResizedCrop + flip + CutMix (spec §7.2).
    """
    device = images.device
    decay = [p for n, p in student.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in student.named_parameters() if p.ndim <= 1]  # BN affine + biases
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
    )
    n = images.shape[0]
    steps_per_epoch = len(batches(n, cfg.batch_size))
    total = cfg.epochs * steps_per_epoch
    epoch0, curve = 0, []
    if state is not None:
        student.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        epoch0, curve = state["epoch"], [list(c) for c in state["curve"]]
    t = cfg.temperature
    loss_v = float("nan")
    for epoch in range(epoch0, cfg.epochs):
        if should_stop():
            checkpoint(
                dict(
                    model=student.state_dict(),
                    opt=opt.state_dict(),
                    gen=gen.get_state(),
                    epoch=epoch,
                    curve=curve,
                )
            )
            raise StopRequested
        lr = cfg.lr * 0.5 * (1 + math.cos(math.pi * epoch / (cfg.epochs * cfg.eta)))
        for pg in opt.param_groups:
            pg["lr"] = lr
        student.train()
        for i, idx in enumerate(batches(n, cfg.batch_size, torch.randperm(n, generator=gen))):
            x = rrc_flip(normalize(to_float(images[idx.to(device)]), mean, std), gen)
            if cfg.cutmix:
                x = cutmix(x, gen)
            target = F.softmax(teacher.logits(x) / t, dim=1)
            loss = F.kl_div(F.log_softmax(student(x) / t, dim=1), target, reduction="batchmean")
            if not torch.isfinite(loss):
                raise CvddError(
                    f"student loss became {loss.item()} in epoch {epoch}; lower "
                    f"validate.lr (now {cfg.lr}) and start a new run"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_v = loss.item()
            progress(epoch * steps_per_epoch + i + 1, total, {"loss": loss_v, "lr": lr})
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            top1, top5 = evaluate(student, testset, mean, std, device)
            curve.append([epoch + 1, top1, top5])
            progress((epoch + 1) * steps_per_epoch, total, {"loss": loss_v, "top1": top1})
            checkpoint(
                dict(
                    model=student.state_dict(),
                    opt=opt.state_dict(),
                    gen=gen.get_state(),
                    epoch=epoch + 1,
                    curve=curve,
                )
            )
    if not curve or curve[-1][0] != cfg.epochs:  # resumed after the last evaluation
        top1, top5 = evaluate(student, testset, mean, std, device)
        curve.append([cfg.epochs, top1, top5])
    _, top1, top5 = curve[-1]
    return {"top1": top1, "top5": top5, "curve": [c[:2] for c in curve], "final_loss": loss_v}
