"""Student training and evaluation (post-eval, method.md §7), torchvision-references style:
`train_one_epoch` and `evaluate` are the two halves, `train_student` the loop over epochs.

The student learns from scratch on the distilled images with KL to the teacher's soft labels,
computed online: the frozen teacher labels exactly the augmented, cut-mixed batch the student
sees (method.md §7.1).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from .augment import cutmix, rrc_flip
from .config import ValidateConfig
from .data import normalize, to_float
from .teacher import Teacher, batches
from .utils import CvddError, StopRequested

__all__ = ["train_one_epoch", "evaluate", "evaluate_logits", "train_student"]


def _optimizer(student: nn.Module, cfg: ValidateConfig) -> torch.optim.Optimizer:
    """AdamW with weight decay on conv/linear weights only (method.md §7.2)."""
    decay = [p for n, p in student.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in student.named_parameters() if p.ndim <= 1]  # BN affine + biases
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
    )


def _cosine_lr(cfg: ValidateConfig, epoch: int) -> float:
    """Per-epoch cosine; eta > 1 stretches it so the lr never reaches 0 (method.md §7.2)."""
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * epoch / (cfg.epochs * cfg.eta)))


def _resume_state(student, opt, gen, epoch: int, curve: list) -> dict:
    """Everything a resume needs, taken at the start of `epoch`."""
    return dict(
        model=student.state_dict(),
        opt=opt.state_dict(),
        gen=gen.get_state(),
        epoch=epoch,
        curve=curve,
    )


def _hard_targets(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, cfg: ValidateConfig, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One-hot targets of a batch, cut-mixed with it: the label rides along as an extra channel
    through `cutmix` (same random draws as the soft-label path), so each target is the area
    share of every class in its image (the usual CutMix label)."""
    if not cfg.cutmix:
        return x, F.one_hot(y, num_classes).float()
    lab = y.to(x.dtype)[:, None, None, None].expand(-1, 1, *x.shape[2:])
    mixed = cutmix(torch.cat([x, lab], 1), gen)
    cls = mixed[:, -1].round().long().flatten(1)  # (n, h*w) class of every pixel
    target = F.one_hot(cls, num_classes).float().mean(1)
    return mixed[:, :-1], target


def train_one_epoch(
    student: nn.Module,
    teacher: Teacher | None,
    images: torch.Tensor,
    opt: torch.optim.Optimizer,
    *,
    cfg: ValidateConfig,
    epoch: int,
    mean,
    std,
    gen: torch.Generator,
    progress: Callable[[int, int, dict], None],
    labels: torch.Tensor | None = None,
) -> float:
    """One pass over `images` (uint8, on the student's device) in a `gen`-seeded order, at the
    lr already set in `opt`; returns the last batch's loss.

    RandomResizedCrop + flip (+ CutMix), then KL(batchmean) at T = cfg.temperature; with
    `teacher` None, cross-entropy to the one-hot `labels` instead (hard-label students).
    """
    device = images.device
    n = images.shape[0]
    t = cfg.temperature
    lr = opt.param_groups[0]["lr"]
    student.train()
    order = batches(n, cfg.batch_size, torch.randperm(n, generator=gen))
    total = cfg.epochs * len(order)  # the batch count depends on n only, not on the order
    loss_v = float("nan")
    for i, idx in enumerate(order):
        x = rrc_flip(normalize(to_float(images[idx.to(device)]), mean, std), gen)
        if teacher is None:  # hard labels: plain cross-entropy to the (cut-mixed) one-hot labels
            x, target = _hard_targets(x, labels[idx.to(device)], student.num_classes, cfg, gen)
            loss = -(target * F.log_softmax(student(x), dim=1)).sum(1).mean()
        else:
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
        progress(epoch * len(order) + i + 1, total, {"loss": loss_v, "lr": lr})
    return loss_v


@torch.no_grad()
def evaluate(
    model: nn.Module, testset, mean, std, device, batch_size: int = 500
) -> tuple[float, float]:
    """Top-1 / top-5 (%) on a real split (an ImageSet with .targets and .load)."""
    model.eval()
    return evaluate_logits(model, model.num_classes, testset, mean, std, device, batch_size)


@torch.no_grad()
def evaluate_logits(
    fn: Callable[[torch.Tensor], torch.Tensor],
    num_classes: int,
    testset,
    mean,
    std,
    device,
    batch_size: int = 500,
) -> tuple[float, float]:
    """`evaluate` for any logits function (e.g. a committee teacher's `logits`)."""
    n = len(testset)
    c1 = c5 = 0
    for idx in torch.arange(n).split(batch_size):
        x = normalize(to_float(testset.load(idx).to(device)), mean, std)
        y = testset.targets[idx].to(device)
        top = fn(x).topk(min(5, num_classes), dim=1).indices
        c1 += int((top[:, 0] == y).sum())
        c5 += int((top == y[:, None]).any(1).sum())
    return 100.0 * c1 / n, 100.0 * c5 / n


def _restore(student: nn.Module, opt, gen: torch.Generator, state: dict | None) -> tuple:
    """(first epoch, evaluation curve) after loading a `_resume_state` checkpoint, if any."""
    if state is None:
        return 0, []
    student.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    gen.set_state(state["gen"])
    return state["epoch"], [list(c) for c in state["curve"]]


# Evaluations before the last one (the curve the Live page draws) score a fixed, evenly strided
# subset of at most this many test images; the last one scores the whole split. With the
# embedded set's 10,000 test images, scoring every curve point on all of them made evaluation
# 3/4 of a quick run's validate stage (measured: 421 s of 567 s on one thread).
CURVE_IMAGES = 1000


class _Strided:
    """Every k-th image of a test split, k chosen so that at most `limit` remain."""

    def __init__(self, testset, limit: int):
        self.base = testset
        self.idx = torch.arange(0, len(testset), max(1, -(-len(testset) // limit)))
        self.targets = testset.targets[self.idx]

    def __len__(self) -> int:
        return len(self.idx)

    def load(self, idx: torch.Tensor) -> torch.Tensor:
        return self.base.load(self.idx[idx])


def _evaluates_after(cfg: ValidateConfig, epoch: int) -> bool:
    """Whether the student is evaluated (and checkpointed) at the end of `epoch`."""
    return (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs


def train_student(
    student: nn.Module,
    images: torch.Tensor,
    teacher: Teacher | None,
    *,
    testset,
    cfg: ValidateConfig,
    mean,
    std,
    gen: torch.Generator,
    should_stop: Callable[[], bool],
    progress: Callable[[int, int, dict], None],
    checkpoint: Callable[[dict], None],
    state: dict | None = None,
    labels: torch.Tensor | None = None,
    eval_batch: int = 500,
) -> dict:
    """Train `student` from scratch on `images` (uint8, on its device) with KL to the teacher,
    or, with `teacher` None, with cross-entropy to the one-hot `labels` (no teacher at all).

    Evaluates every cfg.eval_every epochs (on a strided subset of at most CURVE_IMAGES test
    images) and at the end (on the whole split), in batches of `eval_batch` test images,
    checkpointing after each evaluation and on a stop request; `state` (such a checkpoint)
    resumes with the same result.
    """
    opt = _optimizer(student, cfg)
    epoch0, curve = _restore(student, opt, gen, state)
    steps = len(batches(images.shape[0], cfg.batch_size))
    test = partial(evaluate, student, testset, mean, std, images.device, eval_batch)
    curve_test = partial(
        evaluate, student, _Strided(testset, CURVE_IMAGES), mean, std, images.device, eval_batch
    )
    one_epoch = partial(
        train_one_epoch, student, teacher, images, opt, cfg=cfg, mean=mean, std=std, gen=gen
    )
    loss_v, eval_s = float("nan"), 0.0  # seconds spent evaluating, this attempt
    for epoch in range(epoch0, cfg.epochs):
        if should_stop():
            checkpoint(_resume_state(student, opt, gen, epoch, curve))
            raise StopRequested
        for pg in opt.param_groups:
            pg["lr"] = _cosine_lr(cfg, epoch)
        loss_v = one_epoch(epoch=epoch, progress=progress, labels=labels)
        if _evaluates_after(cfg, epoch):
            t0 = time.perf_counter()
            curve.append([epoch + 1, *(test() if epoch + 1 == cfg.epochs else curve_test())])
            eval_s += time.perf_counter() - t0
            metrics = {"loss": loss_v, "top1": curve[-1][1]}
            progress((epoch + 1) * steps, cfg.epochs * steps, metrics)
            checkpoint(_resume_state(student, opt, gen, epoch + 1, curve))
    if not curve or curve[-1][0] != cfg.epochs:  # resumed after the last evaluation
        t0 = time.perf_counter()
        curve.append([cfg.epochs, *test()])
        eval_s += time.perf_counter() - t0
    _, top1, top5 = curve[-1]
    return {
        "top1": top1,
        "top5": top5,
        "curve": [c[:2] for c in curve],
        "final_loss": loss_v,
        "eval_seconds": round(eval_s, 2),
    }
