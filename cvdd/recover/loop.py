"""The recover loop (paper §3.6, method.md §5): waves of groups, each wave's steps, the reports.

Groups (committee.py) of equal size are optimised together in *waves*: one forward pass per
voting member for the whole wave, BN statistics measured per group, losses summed, so each group
gets exactly the gradient it would get alone. The memory planner (plan.py) sizes the waves. Each
group draws from its own random stream and owns its rows of Adam's elementwise state, so the
images depend neither on a stop and resume nor, up to float rounding, on the wave size (a
convolution may sum in another order at another batch size; over hundreds of Adam steps that
grows: the quick preset's images are equal after 2 steps, 1 value in 10^4 differs by one level
after 10, a quarter of them by up to 31 after 40). Each step is `recover_step` (step.py), or its
CUDA-graph replay (graph.py) under `recover.cuda_graph`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn as nn

from ..bn import BNStatsCollector
from ..config import RecoverConfig
from ..data import denormalize, to_uint8
from ..layout import MEMORY_PLAN
from ..memory import is_out_of_memory, out_of_memory_message
from ..utils import CvddError, StopRequested
from .committee import Group, Vote, groups_seed, wave_votes
from .graph import graph_mode, open_graph
from .plan import MemoryPlan, plan_memory, probe_losses
from .step import Members, fast_path, member_format, read_parts, recover_step
from .waves import (
    Wave,
    checkpoint_state,
    grid_rows,
    open_wave,
    pixel_bounds,
    schedule_waves,
    snapshot_images,
)

__all__ = ["Hooks", "recover_images"]

AUTO_TRACE_EVERY = {"cpu": 1, "cuda": 20}  # reading the loss syncs a GPU; on a CPU it is free


class Hooks(Protocol):
    """What the loop reports to (the recover stage's files, or the prior stage's progress)."""

    def should_stop(self) -> bool: ...
    def progress(self, step: int, total: int, metrics: dict) -> None: ...
    def trace(self, record: dict) -> None: ...
    def snapshot(self, step: int, images: torch.Tensor) -> None: ...
    def checkpoint(self, state: dict) -> None: ...


def _check_finite(bad: torch.Tensor, step: int, cfg: RecoverConfig) -> None:
    if bool(bad):  # one device read, only where the loop reads anyway
        raise CvddError(
            f"recover loss became nan or inf by step {step}; lower recover.lr (now {cfg.lr}) "
            f"or recover.bn_loss_weight (now {cfg.bn_loss_weight}), then resume or start a "
            "new run"
        )


@dataclass
class _Run:
    """What every step of one recover call shares."""

    members: Members
    cfg: RecoverConfig
    hooks: Hooks
    mean: tuple
    std: tuple
    seed: int  # the groups' streams derive from it
    out: torch.Tensor  # (N, C, H, W) uint8: final images of finished groups, the rest initial
    finished: dict[int, torch.Tensor]  # group -> its final uint8 images
    shown: list[int]  # rows a snapshot shows
    bounds: tuple[torch.Tensor, torch.Tensor]  # valid pixels, normalised, per channel
    trace_every: int
    graph: str  # recover.cuda_graph: "" (off), "captured" or "eager: <why>" (graph.py)
    done: int = 0  # wave-steps done (the progress step)
    total: int = 0
    metrics: dict = field(default_factory=dict)  # the last values read from the device

    def finish(self, w: Wave) -> None:
        """A finished wave's final uint8 images into `out` and `finished` (checkpoints keep)."""
        final = to_uint8(denormalize(w.x.detach(), self.mean, self.std)).cpu()
        b = len(w.groups[0].classes)
        for i, g in enumerate(w.groups):
            self.finished[g.group] = self.out[g.indices] = final[i * b : (i + 1) * b]


def _optimise_wave(r: _Run, w: Wave, votes: list[Vote]) -> None:
    """The step loop of one wave (recover_step, or its graph's replay); then the reports."""
    cfg, n_g = r.cfg, len(w.groups)
    graph = open_graph(r.graph, w, lambda xa: r.members.loss(xa, votes, n_g, cfg), cfg, r.bounds)
    bad = torch.zeros((), dtype=torch.bool, device=w.x.device) if graph is None else graph.bad
    step_kw = dict(members=r.members, cfg=cfg, bounds=r.bounds, bad=bad)
    for step in range(w.step, cfg.iterations):
        if r.hooks.should_stop():
            _check_finite(bad, r.done, cfg)
            r.hooks.checkpoint(checkpoint_state(r.seed, r.done, r.finished, w.state(step)))
            raise StopRequested
        lr = 0.5 * (1 + math.cos(math.pi * step / cfg.iterations)) * cfg.lr  # no warm-up
        parts = recover_step(w, votes, lr=lr, **step_kw) if graph is None else graph.step(lr)
        r.done += 1
        if r.done % r.trace_every == 0 or step + 1 == cfg.iterations:
            rec = read_parts(parts, n_g)  # the loop's only device read
            _check_finite(bad, r.done, cfg)
            r.hooks.trace({"step": r.done, "lr": lr, **rec})
            r.metrics = {"loss": rec["loss"], "ce": rec["ce"], "bn": rec["bn"], "lr": lr}
        r.hooks.progress(r.done, r.total, r.metrics)  # every step: the heartbeat
        if cfg.snapshot_every and (r.done % cfg.snapshot_every == 0 or r.done == r.total):
            r.hooks.snapshot(r.done, snapshot_images(r.out, r.shown, w, r.mean, r.std))
        if cfg.checkpoint_every and r.done % cfg.checkpoint_every == 0 and r.done < r.total:
            _check_finite(bad, r.done, cfg)
            r.hooks.checkpoint(checkpoint_state(r.seed, r.done, r.finished, w.state(step + 1)))
    _check_finite(bad, r.done, cfg)


def _start(images, groups, *, models, cfg, hooks, mean, std, gen, state, priors) -> _Run:
    """The run's shared state, from scratch or from a checkpoint `state`."""
    device = next(next(iter(models.values())).parameters()).device
    graph = graph_mode(cfg, device)  # before the BN hooks go on: the flag on a CPU fails here
    st = state or {}
    amp, cl = fast_path(cfg, device)
    collectors = {m: BNStatsCollector(model) for m, model in models.items()}
    r = _Run(
        members=Members(models, collectors, priors or {}, amp=amp, channels_last=cl),
        cfg=cfg,
        hooks=hooks,
        mean=mean,
        std=std,
        seed=st["seed"] if st else groups_seed(gen),
        out=images.detach().cpu().clone(),
        finished=dict(st.get("finished", {})),
        shown=grid_rows(groups),
        bounds=pixel_bounds(mean, std, device),
        trace_every=cfg.trace_every or AUTO_TRACE_EVERY.get(device.type, 20),
        graph=graph,
        done=st.get("done", 0),
    )
    for g, final in r.finished.items():
        r.out[groups[g].indices] = final
    return r


def _plan(r: _Run, groups: list[Group], *, committee, cur: dict | None) -> tuple:
    """(memory plan, the waves still to run) for `groups`; sets the progress total."""
    m = r.members
    probes = probe_losses(
        m.models,
        m.collectors,
        cfg=r.cfg,
        classes=len(groups[0].classes),
        amp=m.amp,
        channels_last=m.channels_last,
    )
    sizes, shape = [len(g.classes) for g in groups], tuple(r.out.shape[1:])
    device = r.bounds[0].device
    plan = plan_memory(
        sizes, committee, probes, cfg=r.cfg, image_shape=shape, device=device, amp=m.amp
    )
    plan.graph = r.graph
    waves = schedule_waves(groups, set(r.finished), cur, plan.groups_per_wave)
    live = set(cur["groups"]) if cur else set()
    r.total = r.done + sum(
        r.cfg.iterations - (cur["step"] if w[0].group in live else 0) for w in waves
    )
    return plan, waves


def _run_waves(r: _Run, waves: list[list[Group]], *, committee, weights, cur) -> None:
    """Optimise the waves in turn; a finished wave is checkpointed at once, so its groups
    survive a crash (and, under torchrun, reach their files without a gather)."""
    device = r.bounds[0].device
    for wave_groups in waves:  # each wave: its own Adam, from its checkpoint or scratch
        w = open_wave(
            wave_groups, r.out, cur, r.seed, cfg=r.cfg, mean=r.mean, std=r.std, device=device
        )
        voters = [committee[g.group] for g in w.groups]
        names = list(r.members.models)
        votes = wave_votes(voters, [weights[g.group] for g in w.groups], w.targets, names)
        _optimise_wave(r, w, votes)
        r.finish(w)
        if r.cfg.checkpoint_every and r.done < r.total:
            r.hooks.checkpoint(checkpoint_state(r.seed, r.done, r.finished, None))


def _out_of_memory(plan: MemoryPlan | None) -> str:
    if plan is None:
        return out_of_memory_message("recover, while planning its waves")
    sized = f"{plan.groups_per_wave} group(s) per wave, plan in {MEMORY_PLAN}: {plan.summary}"
    return out_of_memory_message("recover", in_use_bytes=plan.estimated_peak_bytes, sized=sized)


def recover_images(
    images: torch.Tensor,
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
    on_plan: Callable[[MemoryPlan], None] | None = None,
    only: set[int] | None = None,
) -> torch.Tensor:
    """Optimise the class-major uint8 `images` (N, C, H, W); returns the final uint8 images.

    committee[g] / weights[g] are group g's voters and weights; with schedule=per_iteration each
    group redraws them every step from its own stream (Eq. 4-5 read literally). `gen` seeds the
    groups' streams. `state` (a checkpoint) resumes with the result of an uninterrupted run, also
    under another memory budget. `on_plan` gets the memory plan before the first step and again
    at the end (with the measured peak on CUDA). `only`: the groups this process optimises.
    """
    kw = dict(models=models, cfg=cfg, hooks=hooks, mean=mean, std=std, gen=gen, priors=priors)
    r = _start(images, groups, state=state, **kw)
    cur = (state or {}).get("current")
    device, plan = r.bounds[0].device, None
    try:
        with member_format(models, r.members.channels_last):
            mine = groups if only is None else [g for g in groups if g.group in only]
            plan, waves = _plan(r, mine, committee=committee, cur=cur)
            if on_plan is not None:
                on_plan(plan)
            if r.graph:  # once per call; trace readers skip a row without a step
                hooks.trace({"graph": r.graph})
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            _run_waves(r, waves, committee=committee, weights=weights, cur=cur)
            if device.type == "cuda":
                plan.measured_peak_bytes = torch.cuda.max_memory_allocated(device)
            if on_plan is not None:
                on_plan(plan)
    except Exception as e:
        if is_out_of_memory(e):
            raise CvddError(_out_of_memory(plan)) from e
        raise
    finally:
        for col in r.members.collectors.values():
            col.remove()
    return r.out
