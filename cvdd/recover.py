"""Recover (paper §3.6, method.md §5): optimise pixels so each group's BN statistics and predictions
match a prior-weighted committee.

Groups (cvdd/committee.py) of equal size are optimised together in *waves*: one forward pass per
voting member for the whole wave, BN statistics measured per group, losses summed, so each group
gets exactly the gradient it would get alone. The memory planner (cvdd/memory.py) sizes the
waves. Each group draws from its own random stream and owns its rows of Adam's elementwise state,
so the images depend neither on a stop and resume nor, up to float rounding, on the wave size
(a convolution may sum in another order at another batch size; over hundreds of Adam steps that
grows: the quick preset's images are equal after 2 steps, 1 value in 10^4 differs by one level
after 10, a quarter of them by up to 31 after 40). The loop is short and visible:
`wave_loss` returns the loss and its parts (device tensors, read only when the trace is written),
then backward, Adam step, clamp.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F

from .augment import shared_crop_flip_roll
from .bn import BNStatsCollector, bn_matching_loss
from .committee import (
    Group,
    Vote,
    describe_plan,
    draw_voters,
    groups_seed,
    make_groups,
    plan_committee,
    voter_weights,
    wave_votes,
)
from .config import RecoverConfig
from .data import denormalize, to_uint8
from .graph_step import descend, graph_mode, open_graph
from .memory import (
    MemoryPlan,
    fast_path,
    is_out_of_memory,
    member_format,
    out_of_memory_message,
    plan_memory,
)
from .utils import CvddError, StopRequested
from .waves import (
    Wave,
    checkpoint_state,
    grid_rows,
    open_wave,
    pixel_bounds,
    schedule_waves,
    snapshot_images,
)

__all__ = [
    "Group",
    "Hooks",
    "make_groups",
    "plan_committee",
    "voter_weights",
    "describe_plan",
    "groups_seed",
    "augment_wave",
    "wave_loss",
    "read_parts",
    "fast_path",
    "member_format",
    "probe_losses",
    "recover_images",
]

AUTO_TRACE_EVERY = {"cpu": 1, "cuda": 20}  # reading the loss syncs a GPU; on a CPU it is free


class Hooks(Protocol):
    def should_stop(self) -> bool: ...
    def progress(self, step: int, total: int, metrics: dict) -> None: ...
    def trace(self, record: dict) -> None: ...
    def snapshot(self, step: int, images: torch.Tensor) -> None: ...
    def checkpoint(self, state: dict) -> None: ...


# ---------------------------------------------------------------------------------------------
# one step: augmentation and the committee loss of a wave


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
        col.reset(v.count)
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


# ---------------------------------------------------------------------------------------------
# memory plan


def probe_losses(
    models: dict[str, nn.Module],
    collectors: dict,
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


# ---------------------------------------------------------------------------------------------
# the loop


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

    models: dict[str, nn.Module]
    collectors: dict[str, BNStatsCollector]
    cfg: RecoverConfig
    hooks: Hooks
    mean: tuple
    std: tuple
    priors: dict[str, float]
    seed: int  # the groups' streams derive from it
    out: torch.Tensor  # (N, C, H, W) uint8: final images of finished groups, the rest initial
    finished: dict[int, torch.Tensor]  # group -> its final uint8 images
    shown: list[int]  # rows a snapshot shows
    amp: bool
    channels_last: bool
    bounds: tuple[torch.Tensor, torch.Tensor]  # valid pixels, normalised, per channel
    trace_every: int
    graph: str  # recover.cuda_graph: "" (off), "captured" or "eager: <why>" (cvdd/graph_step.py)
    done: int = 0  # wave-steps done (the progress step)
    total: int = 0
    metrics: dict = field(default_factory=dict)  # the last values read from the device

    def loss(self, xa: torch.Tensor, votes: list[Vote], groups: int) -> tuple:
        """wave_loss with this run's members, collectors and fast path."""
        kw = dict(models=self.models, collectors=self.collectors, cfg=self.cfg, amp=self.amp)
        return wave_loss(xa, votes, groups, channels_last=self.channels_last, **kw)

    def finish(self, w: Wave) -> None:
        """A finished wave's final uint8 images into `out` and `finished` (checkpoints keep)."""
        final = to_uint8(denormalize(w.x.detach(), self.mean, self.std)).cpu()
        b = len(w.groups[0].classes)
        for i, g in enumerate(w.groups):
            self.finished[g.group] = self.out[g.indices] = final[i * b : (i + 1) * b]


def _eager_step(r: _Run, w: Wave, votes: list[Vote], lr: float, bad: torch.Tensor) -> dict:
    """One step as method.md §5.3 writes it; returns the loss parts (device tensors)."""
    cfg, names = r.cfg, list(r.models)
    for pg in w.opt.param_groups:
        pg["lr"] = lr
    if cfg.schedule == "per_iteration":  # a new N-subset per group and step, own stream
        drawn = [draw_voters(names, r.priors, cfg, g) for g in w.gens]
        votes = wave_votes([d[0] for d in drawn], [d[1] for d in drawn], w.targets, names)
    loss, parts = r.loss(augment_wave(w.x, w.gens, cfg), votes, len(w.groups))
    descend(w, loss, parts, r.bounds, bad)
    return parts


def _optimise_wave(r: _Run, w: Wave, votes: list[Vote]) -> None:
    """The step loop of one wave: committee loss, backward, Adam, clamp; then the reports."""
    cfg, n_g = r.cfg, len(w.groups)
    graph = open_graph(r.graph, w, lambda xa: r.loss(xa, votes, n_g), cfg, r.bounds)
    bad = torch.zeros((), dtype=torch.bool, device=w.x.device) if graph is None else graph.bad
    for step in range(w.step, cfg.iterations):
        if r.hooks.should_stop():
            _check_finite(bad, r.done, cfg)
            r.hooks.checkpoint(checkpoint_state(r.seed, r.done, r.finished, w.state(step)))
            raise StopRequested
        lr = 0.5 * (1 + math.cos(math.pi * step / cfg.iterations)) * cfg.lr  # no warm-up
        parts = graph.step(lr) if graph is not None else _eager_step(r, w, votes, lr, bad)
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
    r = _Run(
        models=models,
        collectors={m: BNStatsCollector(model) for m, model in models.items()},
        cfg=cfg,
        hooks=hooks,
        mean=mean,
        std=std,
        priors=priors or {},
        seed=st["seed"] if st else groups_seed(gen),
        out=images.detach().cpu().clone(),
        finished=dict(st.get("finished", {})),
        shown=grid_rows(groups),
        amp=amp,
        channels_last=cl,
        bounds=pixel_bounds(mean, std, device),
        trace_every=cfg.trace_every or AUTO_TRACE_EVERY.get(device.type, 20),
        graph=graph,
        done=st.get("done", 0),
    )
    for g, final in r.finished.items():
        r.out[groups[g].indices] = final
    return r


def _plan(r: _Run, groups: list[Group], committee, cur: dict | None, device, only) -> tuple:
    """(memory plan, the waves still to run); sets the progress total."""
    groups = groups if only is None else [g for g in groups if g.group in only]
    probes = probe_losses(
        r.models, r.collectors, r.cfg, len(groups[0].classes), r.amp, r.channels_last
    )
    sizes, shape = [len(g.classes) for g in groups], tuple(r.out.shape[1:])
    plan = plan_memory(
        sizes, committee, probes, cfg=r.cfg, image_shape=shape, device=device, amp=r.amp
    )
    waves = schedule_waves(groups, set(r.finished), cur, plan.groups_per_wave)
    live = set(cur["groups"]) if cur else set()
    r.total = r.done + sum(
        r.cfg.iterations - (cur["step"] if w[0].group in live else 0) for w in waves
    )
    return plan, waves


def _run_waves(r: _Run, groups, committee, weights, cur, only, on_plan, box: list) -> None:
    """Plan the waves, then optimise them in turn; a finished wave is checkpointed at once, so
    its groups survive a crash (and, under torchrun, reach their files without a gather)."""
    device = r.bounds[0].device
    plan, waves = _plan(r, groups, committee, cur, device, only)
    box.append(plan)
    plan.graph = r.graph
    if on_plan is not None:
        on_plan(plan)
    if r.graph:  # once per call; trace readers skip a row without a step
        r.hooks.trace({"graph": r.graph})
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for wave_groups in waves:  # each wave: its own Adam, from its checkpoint or scratch
        w = open_wave(
            wave_groups, r.out, cur, r.seed, cfg=r.cfg, mean=r.mean, std=r.std, device=device
        )
        voters = [committee[g.group] for g in w.groups]
        votes = wave_votes(voters, [weights[g.group] for g in w.groups], w.targets, list(r.models))
        _optimise_wave(r, w, votes)
        r.finish(w)
        if r.cfg.checkpoint_every and r.done < r.total:
            r.hooks.checkpoint(checkpoint_state(r.seed, r.done, r.finished, None))
    if device.type == "cuda":
        plan.measured_peak_bytes = torch.cuda.max_memory_allocated(device)
    if on_plan is not None:
        on_plan(plan)


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
    r = _start(
        images,
        groups,
        models=models,
        cfg=cfg,
        hooks=hooks,
        mean=mean,
        std=std,
        gen=gen,
        state=state,
        priors=priors,
    )
    box: list[MemoryPlan] = []  # the plan, once made: the out-of-memory message quotes it
    try:
        with member_format(models, r.channels_last):
            _run_waves(
                r, groups, committee, weights, (state or {}).get("current"), only, on_plan, box
            )
    except Exception as e:
        if is_out_of_memory(e):
            raise CvddError(out_of_memory_message(box[0] if box else None)) from e
        raise
    finally:
        for col in r.collectors.values():
            col.remove()
    return r.out
