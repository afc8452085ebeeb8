"""Recover's memory plan: how many image groups one wave may push through the committee.

Within a wave every voting member keeps its autograd graph for all of the wave's images until
the one backward pass, so the memory a wave needs grows with its image count. The planner
measures what one image costs each member with a probe pass at the run's resolution and
precision (cvdd/memory.py), takes the budget, and picks the groups per wave. The random draws
never depend on the wave size (each group has its own random stream), so a run may resume under
another budget: the same images up to float rounding (cvdd/recover/loop.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn

from ..config import RecoverConfig
from ..memory import GIB, measure_bytes_per_image, memory_budget
from .committee import Vote
from .step import wave_loss
from .waves import split_waves

__all__ = ["MemoryPlan", "probe_losses", "plan_waves", "plan_memory"]

# fp32 tensors a wave holds per image besides the members' graphs: x, its gradient, Adam's two
# moments, the augmented copy and one member's input copy
STATE_COPIES = 6


@dataclass
class MemoryPlan:
    """The content of recover/memory_plan.json (docs/rundir.md): every size in bytes."""

    device: str
    precision: str
    image_shape: list[int]  # (C, H, W) of one image
    groups: int  # image groups of the stage (IPC indices x class chunks)
    images_per_group: int  # the largest group
    groups_per_wave: int
    waves: int
    forced: bool  # groups_per_wave came from recover.groups_per_wave, not from the budget
    bytes_per_image: dict[str, int]  # kept for backward, per image and committee member
    state_bytes_per_image: int  # pixels, gradient, Adam moments and copies of one image
    measured_by: str  # how bytes_per_image was found
    budget_bytes: int  # what a wave may fill: HEADROOM x the memory below, minus what is held
    budget_source: str
    estimated_peak_bytes: int  # the largest wave's need, plus what was held when planning
    fits: bool  # estimated_peak_bytes <= budget_bytes + held
    held_bytes: int = 0  # on the device before recover started (models)
    measured_peak_bytes: int | None = None  # CUDA: torch.cuda.max_memory_allocated at the end
    graph: str = ""  # recover.cuda_graph: "" (off), "captured" or "eager: <why>"
    summary: str = field(default="")

    def to_json(self) -> dict:
        return {**asdict(self), "notes": FIELD_NOTES}

    def describe(self) -> str:
        """One line for the log (and the `summary` field)."""
        per = ", ".join(f"{m} {_size(b)}" for m, b in self.bytes_per_image.items())
        how = "forced by recover.groups_per_wave" if self.forced else "planned"
        return (
            f"{self.waves} wave(s) of up to {self.groups_per_wave} group(s) "
            f"({self.groups_per_wave * self.images_per_group} images, {how}); kept for backward "
            f"per image: {per}; estimated peak {_size(self.estimated_peak_bytes)} "
            f"of a {_size(self.budget_bytes)} budget ({self.budget_source})"
        )


FIELD_NOTES = {
    "sizes": "all *_bytes in bytes; summary rounds them",
    "groups": "image groups of recover: IPC indices x chunks of recover.classes_per_group",
    "groups_per_wave": "groups optimised together, one forward pass per member per step",
    "forced": "true when recover.groups_per_wave > 0 set the count instead of the budget",
    "bytes_per_image": "what one image adds to the memory a committee member keeps for backward",
    "state_bytes_per_image": "pixels, gradient, Adam moments and input copies of one image",
    "budget_bytes": "headroom x min(free memory, recover.memory_gb or CVDD_MEMORY_GB) - held",
    "held_bytes": "already on the device before the first step (the committee's weights)",
    "estimated_peak_bytes": "held + the largest wave's groups x their images x their bytes",
    "measured_peak_bytes": "CUDA only: torch.cuda.max_memory_allocated over the stage",
    "fits": "false when even one group needs more than the budget (it runs, one per wave)",
    "graph": "recover.cuda_graph: captured, or eager and why; empty when the flag is off",
}


def _size(n: int) -> str:
    """Bytes in the unit that reads best: 812 KiB, 3.4 MiB, 12.0 GiB."""
    for unit, scale in (("GiB", GIB), ("MiB", 2**20)):
        if n >= scale:
            return f"{n / scale:.{1 if n >= 10 * scale else 2}f} {unit}"
    return f"{n / 1024:.0f} KiB"


def probe_losses(
    models: dict[str, nn.Module],
    collectors: dict,
    *,
    cfg: RecoverConfig,
    classes: int,
    amp: bool,
    channels_last: bool,
) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """Per member, the recover loss of one group of any size: what the memory probe runs."""

    def loss_for(m: str) -> Callable[[torch.Tensor], torch.Tensor]:
        def loss_of(x: torch.Tensor) -> torch.Tensor:
            t = torch.arange(len(x), device=x.device) % classes
            vote = Vote(m, 1, None, torch.ones(1, device=x.device), t, 1.0)
            kw = dict(models=models, collectors=collectors, cfg=cfg, amp=amp)
            return wave_loss(x, [vote], 1, channels_last=channels_last, **kw)[0]

        return loss_of

    return {m: loss_for(m) for m in models}


def plan_waves(
    costs: list[int],
    sizes: list[int],
    *,
    budget: int,
    forced: int = 0,
) -> tuple[int, list[list[int]], int]:
    """(groups per wave, the waves as lists of group indices, the largest wave's bytes).

    `costs[i]` is group i's bytes (its images x the bytes of its voters and state); the plan
    takes as many groups per wave as the dearest group allows under `budget`, at least one;
    `forced` > 0 sets the count instead.
    """
    per = forced if forced > 0 else max(1, budget // max(max(costs), 1))
    per = min(per, len(costs))
    waves = split_waves(sizes, per)
    peak = max(sum(costs[i] for i in w) for w in waves)
    return per, waves, peak


def plan_memory(
    sizes: list[int],
    voters: list[list[str]],
    probes: dict[str, Callable[[torch.Tensor], torch.Tensor]],
    *,
    cfg: RecoverConfig,
    image_shape: tuple[int, int, int],
    device: torch.device,
    amp: bool = False,
) -> MemoryPlan:
    """Probe what one image costs each member, then size the waves.

    `sizes[g]` / `voters[g]` are group g's image count and members; `probes[m](x)` is member m's
    recover loss on x. With schedule=per_iteration any N members may vote for a group, so each
    group is charged for the N dearest.
    """
    bpi, how = {}, ""
    for m, loss_of in probes.items():
        bpi[m], how = measure_bytes_per_image(
            loss_of, lambda n: torch.randn(n, *image_shape, device=device), device
        )
    dearest = sum(sorted(bpi.values(), reverse=True)[: cfg.num_experts])
    state_bpi = STATE_COPIES * 4 * math.prod(image_shape)
    costs = [
        n * (state_bpi + (dearest if cfg.schedule == "per_iteration" else sum(bpi[m] for m in v)))
        for n, v in zip(sizes, voters)
    ]
    budget, held, source = memory_budget(device, cfg.memory_gb)
    per, waves, peak = plan_waves(costs, sizes, budget=budget, forced=cfg.groups_per_wave)
    plan = MemoryPlan(
        device=str(device),
        precision="bf16" if amp else "fp32",
        image_shape=list(image_shape),
        groups=len(sizes),
        images_per_group=max(sizes),
        groups_per_wave=per,
        waves=len(waves),
        forced=cfg.groups_per_wave > 0,
        bytes_per_image=bpi,
        state_bytes_per_image=state_bpi,
        measured_by=how,
        budget_bytes=budget,
        budget_source=source,
        estimated_peak_bytes=held + peak,
        fits=peak <= budget,
        held_bytes=held,
    )
    plan.summary = plan.describe()
    return plan
