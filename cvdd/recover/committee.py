"""Committee voting for recover (paper §3.5-3.6, method.md §5.2 and §5.4): image groups, which
members vote for each group, their weights, and each group's own random stream.

A *group* is one IPC index x one chunk of `classes_per_group` classes: exactly one image per
class, the unit the official code optimises as one batch.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from typing import Any

import torch

from ..config import RecoverConfig

__all__ = [
    "Group",
    "Vote",
    "make_groups",
    "voter_weights",
    "plan_committee",
    "describe_plan",
    "groups_seed",
    "group_generator",
    "draw_voters",
    "wave_votes",
]


@dataclass
class Group:
    group: int
    ipc_idx: int
    classes: list[int]
    indices: list[int]  # rows of the class-major image tensor (i = class * ipc + ipc_idx)


@dataclass
class Vote:
    """One member's share of a wave: the groups it votes for, its weights and their targets."""

    member: str
    count: int  # groups it votes for
    index: torch.Tensor | None  # (count,) positions in the wave, None = every group
    weights: torch.Tensor  # (count,) fp32, w_i of Eq. 5 for each of those groups
    targets: torch.Tensor  # (count * B,) class of every image it sees
    mean_weight: float  # for the trace, known on the host (no device read)


def make_groups(num_classes: int, ipc: int, classes_per_group: int) -> list[Group]:
    out = []
    for k in range(ipc):
        for c0 in range(0, num_classes, classes_per_group):
            classes = list(range(c0, min(c0 + classes_per_group, num_classes)))
            out.append(Group(len(out), k, classes, [c * ipc + k for c in classes]))
    return out


def groups_seed(gen: torch.Generator) -> int:
    """The seed every group's own random stream derives from (with the group's index)."""
    return int(torch.randint(2**62, (1,), generator=gen))


def group_generator(seed: int, group: int) -> torch.Generator:
    """Group `group`'s own stream (augmentation, per-iteration draws): the same draws whatever
    wave the group lands in and however many processes share the work."""
    h = hashlib.sha256(f"{seed}/{group}".encode()).hexdigest()
    return torch.Generator().manual_seed(int(h[:15], 16))


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


def draw_voters(
    members: list[str], priors: dict[str, float], cfg: RecoverConfig, gen: torch.Generator
) -> tuple[list[str], list[float]]:
    """schedule=per_iteration: a new N-subset and its weights for one group and step (Eq. 4-5
    read literally), drawn from that group's own stream."""
    sub = torch.randperm(len(members), generator=gen)[: cfg.num_experts]
    voters = [members[i] for i in sorted(sub.tolist())]
    w = voter_weights([priors.get(m, 0.0) for m in voters], cfg.voter, cfg.temperature, gen)
    return voters, w


def wave_votes(
    voters: list[list[str]],
    weights: list[list[float]],
    targets: torch.Tensor,
    order: list[str],
) -> list[Vote]:
    """Per member (in `order`), the groups of a wave it votes for. `voters[i]` / `weights[i]`
    belong to group i; `targets` is the wave's (G, B) class tensor on the device."""
    out = []
    for m in order:
        sel = [i for i, ms in enumerate(voters) if m in ms]
        if not sel:
            continue
        w = [weights[i][voters[i].index(m)] for i in sel]
        every = len(sel) == len(voters)  # no gather copy of the input when it sees the whole wave
        index = None if every else _to_device(torch.tensor(sel), targets.device)
        out.append(
            Vote(
                member=m,
                count=len(sel),
                index=index,
                weights=_to_device(torch.tensor(w, dtype=torch.float32), targets.device),
                targets=(targets if every else targets.index_select(0, index)).flatten(),
                mean_weight=sum(w) / len(w),
            )
        )
    return out


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small host tensor to the device without waiting for the GPU's queue (per_iteration
    builds votes every step): pinned memory lets the copy run asynchronously."""
    if device.type != "cuda":
        return t
    return t.pin_memory().to(device, non_blocking=True)


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
