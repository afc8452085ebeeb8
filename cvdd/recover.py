"""Recover (paper §3.6, method.md §5): optimise pixels so each group's BN statistics and predictions
match a prior-weighted committee.

A *group* is one IPC index x one chunk of `classes_per_group` classes: exactly one image per class,
the unit that the official code optimises as one batch. Here several groups of equal size share
one forward pass per committee member (a "wave"); the BN hook measures statistics per group, the
loss is summed over groups, so each group's gradient is exactly what it would get alone.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F

from .augment import shared_crop_flip_roll
from .bn import BNStatsCollector, bn_matching_loss
from .config import RecoverConfig
from .utils import CvddError, StopRequested

__all__ = ["Group", "make_groups", "plan_committee", "voter_weights", "recover_images", "Hooks"]


@dataclass
class Group:
    group: int
    ipc_idx: int
    classes: list[int]
    indices: list[int]  # rows of the class-major image tensor (i = class * ipc + ipc_idx)


class Hooks(Protocol):
    def should_stop(self) -> bool: ...
    def progress(self, step: int, total: int, metrics: dict) -> None: ...
    def trace(self, record: dict) -> None: ...
    def snapshot(self, step: int, x: torch.Tensor) -> None: ...
    def checkpoint(self, state: dict) -> None: ...


def make_groups(num_classes: int, ipc: int, classes_per_group: int) -> list[Group]:
    out = []
    for k in range(ipc):
        for c0 in range(0, num_classes, classes_per_group):
            classes = list(range(c0, min(c0 + classes_per_group, num_classes)))
            out.append(Group(len(out), k, classes, [c * ipc + k for c in classes]))
    return out


def voter_weights(
    priors: list[float], voter: str, temperature: float, gen: torch.Generator
) -> list[float]:
    """prior: softmax(alpha / T) (Eq. 5); equal: 1/N; random: u / sum(u) (method.md §5.4)."""
    if voter == "prior":
        return torch.softmax(torch.tensor(priors, dtype=torch.float64) / temperature, 0).tolist()
    if voter == "equal":
        return [1.0 / len(priors)] * len(priors)
    u = torch.rand(len(priors), generator=gen, dtype=torch.float64)
    return (u / u.sum()).tolist()


def plan_committee(
    members: list[str],
    priors: dict[str, float],
    ipc: int,
    num_experts: int,
    schedule: str,
    fixed_members: tuple[str, ...],
    gen: torch.Generator,
) -> list[list[str]]:
    """Which N members vote for each IPC index ("switch per IPC", method.md §5.4).

    auto: fixed top-N pair for IPC 1, every N-subset in turn while IPC <= C(M, N), random beyond.
    """
    subsets = [list(s) for s in itertools.combinations(members, num_experts)]
    if schedule == "auto":
        schedule = "fixed" if ipc == 1 else ("enumerate" if ipc <= len(subsets) else "random")
    if schedule == "fixed":
        pick = list(fixed_members) or sorted(members, key=lambda m: -priors[m])[:num_experts]
        return [pick] * ipc
    if schedule == "enumerate":
        return [subsets[k % len(subsets)] for k in range(ipc)]
    # random (and the first draw of per_iteration): a fresh random subset per IPC index
    return [subsets[int(torch.randint(len(subsets), (1,), generator=gen))] for _ in range(ipc)]


def _pixel_bounds(mean, std, device) -> tuple[torch.Tensor, torch.Tensor]:
    m = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=device).view(1, -1, 1, 1)
    return (0 - m) / s, (1 - m) / s


def _waves(groups: list[Group], per_step: int) -> list[list[Group]]:
    """Batches of equal-size groups (the last class chunk may be smaller)."""
    by_size: dict[int, list[Group]] = {}
    for g in groups:
        by_size.setdefault(len(g.classes), []).append(g)
    out = []
    for gs in by_size.values():
        n = per_step or len(gs)
        out += [gs[i : i + n] for i in range(0, len(gs), n)]
    return out


def recover_images(
    x_init: torch.Tensor,
    groups: list[Group],
    *,
    committee: list[list[str]],
    weights: list[list[float]],
    models: dict[str, nn.Module],
    cfg: RecoverConfig,
    mean,
    std,
    gen: torch.Generator,
    hooks: Hooks,
    state: dict | None = None,
    priors: dict[str, float] | None = None,
) -> torch.Tensor:
    """Optimise `x_init` ((N, C, H, W), normalised) in place of a copy; returns the final x.

    committee[g] / weights[g] are the members and vote weights of group g. With
    cfg.schedule == 'per_iteration' they are redrawn every step from `gen` (Eq. 4-5 read
    literally). `state` (from a checkpoint) resumes mid-run; the result equals an
    uninterrupted run because x, Adam's moments, the step and the generator are all restored.
    """
    device = x_init.device
    lo, hi = _pixel_bounds(mean, std, device)
    x_all = x_init.clone()
    waves = _waves(groups, cfg.groups_per_step)
    total = len(waves) * cfg.iterations
    wave0, step0, opt_state = 0, 0, None
    if state is not None:
        x_all = state["x_all"].to(device)
        wave0, step0, opt_state = state["wave"], state["step"], state["opt"]
        gen.set_state(state["gen"])
    collectors = {m: BNStatsCollector(model) for m, model in models.items()}
    member_names = list(models)
    amp = cfg.precision == "bf16" and device.type == "cuda"
    try:
        for w_idx in range(wave0, len(waves)):
            wave = waves[w_idx]
            rows = torch.tensor([i for g in wave for i in g.indices], device=device)
            targets = torch.tensor([c for g in wave for c in g.classes], device=device)
            b = len(wave[0].classes)
            x = x_all[rows].clone().requires_grad_(True)
            opt = torch.optim.Adam([x], lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8)
            start = step0 if w_idx == wave0 else 0
            if opt_state is not None and w_idx == wave0:
                opt.load_state_dict(opt_state)
            for step in range(start, cfg.iterations):
                if hooks.should_stop():
                    x_all[rows] = x.detach()
                    hooks.checkpoint(
                        dict(
                            x_all=x_all.cpu(),
                            wave=w_idx,
                            step=step,
                            opt=opt.state_dict(),
                            gen=gen.get_state(),
                        )
                    )
                    raise StopRequested
                lr = (
                    0.5 * (1 + math.cos(math.pi * step / cfg.iterations)) * cfg.lr
                )  # cosine, no warm-up
                for pg in opt.param_groups:
                    pg["lr"] = lr
                # committee of each group in this wave (redrawn per step for per_iteration)
                if cfg.schedule == "per_iteration":
                    members_g, weights_g = [], []
                    for _ in wave:
                        sub = torch.randperm(len(member_names), generator=gen)[: cfg.num_experts]
                        ms = [member_names[i] for i in sorted(sub.tolist())]
                        members_g.append(ms)
                        weights_g.append(
                            voter_weights(
                                [(priors or {}).get(m, 0.0) for m in ms],
                                cfg.voter,
                                cfg.temperature,
                                gen,
                            )
                        )
                else:
                    members_g = [committee[g.group] for g in wave]
                    weights_g = [weights[g.group] for g in wave]
                # one shared crop/flip/roll per group (method.md §5.3), drawn in group order
                xv = x.view(len(wave), b, *x.shape[1:])
                xa = torch.stack(
                    [
                        shared_crop_flip_roll(xv[i], gen, cfg.jitter) if cfg.augment else xv[i]
                        for i in range(len(wave))
                    ]
                )
                loss = x.new_zeros(())
                parts = {"ce": 0.0, "bn": 0.0}
                per_member = {}
                for m in member_names:
                    sel = [i for i, ms in enumerate(members_g) if m in ms]
                    if not sel:
                        continue
                    w = torch.tensor(
                        [weights_g[i][members_g[i].index(m)] for i in sel], device=device
                    )
                    col = collectors[m]
                    col.reset(len(sel))
                    inp = xa[sel].flatten(0, 1)
                    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                        logits = models[m](inp)
                    ce = (
                        F.cross_entropy(
                            logits.float(),
                            targets.view(len(wave), b)[sel].flatten(),
                            reduction="none",
                        )
                        .view(len(sel), b)
                        .mean(1)
                    )
                    bn = bn_matching_loss(col, cfg.first_bn_multiplier)
                    loss = loss + (w * (ce + cfg.bn_loss_weight * bn)).sum()
                    parts["ce"] += (w * ce).sum().item()
                    parts["bn"] += (w * bn).sum().item()
                    per_member[m] = {
                        "ce": ce.mean().item(),
                        "bn": bn.mean().item(),
                        "weight": w.mean().item(),
                        "groups": len(sel),
                    }
                if not torch.isfinite(loss):
                    raise CvddError(
                        f"recover loss became {loss.item()} at step {step}; lower recover.lr "
                        f"(now {cfg.lr}) or recover.bn_loss_weight (now {cfg.bn_loss_weight}), "
                        "then resume or start a new run"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    x.data = torch.maximum(torch.minimum(x.data, hi), lo)  # valid pixel range
                n_g = len(wave)
                rec = {
                    "step": w_idx * cfg.iterations + step + 1,
                    "lr": lr,
                    "loss": loss.item() / n_g,
                    "ce": parts["ce"] / n_g,
                    "bn": parts["bn"] / n_g,
                    "members": per_member,
                }
                hooks.trace(rec)
                done = w_idx * cfg.iterations + step + 1
                hooks.progress(done, total, {k: rec[k] for k in ("loss", "ce", "bn", "lr")})
                if cfg.snapshot_every and (done % cfg.snapshot_every == 0 or done == total):
                    x_all[rows] = x.detach()
                    hooks.snapshot(done, x_all)
                if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < total:
                    x_all[rows] = x.detach()
                    hooks.checkpoint(
                        dict(
                            x_all=x_all.cpu(),
                            wave=w_idx,
                            step=step + 1,
                            opt=opt.state_dict(),
                            gen=gen.get_state(),
                        )
                    )
            x_all[rows] = x.detach()
            opt_state = None
    finally:
        for col in collectors.values():
            col.remove()
    return x_all


def describe_plan(
    groups: list[Group],
    committee: list[list[str]],
    weights: list[list[float]],
    priors: dict[str, float],
    cfg: RecoverConfig,
) -> dict[str, Any]:
    """The content of recover/committee.json."""
    return {
        "voter": cfg.voter,
        "temperature": cfg.temperature,
        "schedule": cfg.schedule,
        "num_experts": cfg.num_experts,
        "priors": priors,
        "groups": [
            {
                "group": g.group,
                "ipc_idx": g.ipc_idx,
                "classes": g.classes,
                "members": committee[g.group],
                "weights": weights[g.group],
            }
            for g in groups
        ],
    }
