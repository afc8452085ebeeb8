"""Stage 3, recover: committee-voting pixel optimisation (paper §3.6, method.md §5).

Writes recover/committee.json (who votes for which IPC index, with what weight), the memory plan
(how many groups share a wave), a loss trace, image-grid snapshots, checkpoints (finished groups
as uint8 files, the live wave in fp32), and the final images (lossless uint8).

Checkpoint rule: rank 0 writes checkpoints/recover.pt when the stage starts without one (the
config hash and the groups' seed, nothing finished). While it exists, every group file in
checkpoints/recover_groups/ is a finished group of this config: each group has its own random
stream from the run seed, so its final images do not depend on who made them, and each file is
written whole (temp file, then rename) by the process that finished the group, as soon as its
next checkpoint or its share's end comes. A resume therefore keeps the groups recover.pt names
and every other group file too (what the ranks of a crashed torchrun run finished). Deleting
recover.pt redoes the stage: without it, the group files left are deleted when the stage starts.
Under torchrun recover.pt is not rewritten while the ranks run (rank 0 writes it at the start and
after a stop), so a crash loses the live waves, never a finished group.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import torch

from .. import dist, layout
from ..context import Context
from ..grid import images_to_png_grid
from ..recover.committee import (
    describe_plan,
    groups_seed,
    make_groups,
    plan_committee,
    voter_weights,
)
from ..recover.loop import recover_images
from ..recover.plan import MemoryPlan
from ..recover.waves import GRID_SIDE, checkpoint_state, grid_rows
from ..utils import CvddError, StopRequested, atomic_save

STAGE = "recover"
CHECKPOINT_FORMAT = 2  # finished groups in their own files; 1 (older cvdd) kept every pixel
GROUPS_DIR = os.path.dirname(layout.recover_group_path(0))


def _save_checkpoint(ctx: Context, cfg_hash: str, state: dict) -> None:
    """checkpoints/recover.pt: the state with its finished groups named (their images are in
    their own files)."""
    light = {**state, "finished": sorted(state["finished"])}
    ctx.rd.save_checkpoint(STAGE, light, cfg_hash)


class _Hooks:
    """The loop's reports into the run directory. `split` (torchrun) is fixed for the stage:
    then checkpoints only write group files and keep the newest state for the gather."""

    def __init__(self, ctx: Context, cfg_hash: str):
        self.ctx, self.cfg_hash = ctx, cfg_hash
        self.split = dist.is_distributed()
        self.saved: set[int] = set()  # finished groups already in their files
        self.last: dict = {}  # the newest checkpoint state while split
        self.plans = 0  # memory plans reported (the log line goes with the first)
        # open for the whole stage (closed in close()): one line per trace row, flushed each time;
        # under torchrun rank 0 traces its own share of the groups, the other ranks nothing
        trace = ctx.rd.path / layout.TRACE if dist.is_main() else os.devnull
        self.trace_file = open(trace, "a", encoding="utf-8")  # noqa: SIM115

    def should_stop(self) -> bool:
        return self.ctx.should_stop()

    def progress(self, step: int, total: int, metrics: dict) -> None:
        self.ctx.rd.progress(STAGE, step, total, metrics)

    def trace(self, record: dict) -> None:
        self.trace_file.write(json.dumps(record) + "\n")
        self.trace_file.flush()

    def snapshot(self, step: int, images: torch.Tensor) -> None:
        """`images`: the grid's images only (<= 10 classes x 10 IPC, class-major, uint8)."""
        c = self.ctx
        side_c, side_k = min(c.data.num_classes, GRID_SIDE), min(c.cfg.ipc, GRID_SIDE)
        png, meta = images_to_png_grid(images, side_c, side_k)
        c.rd.save_snapshot(STAGE, step, png, **meta)

    def save_groups(self, finished: dict) -> None:
        """Each finished group's images to their own file, once; under torchrun every rank
        writes its own groups (straight to the run dir: a follower's RunDir writes nothing), so
        a crash of any rank keeps what the others finished."""
        for g in sorted(set(finished) - self.saved):
            atomic_save(finished[g].numpy(), self.ctx.rd.path / layout.recover_group_path(g))
            self.saved.add(g)

    def checkpoint(self, state: dict) -> None:
        """The new finished groups to their files; one process: recover.pt names them."""
        self.save_groups(state["finished"])
        if self.split:  # recover.pt: written by rank 0 after the gather (_gather)
            self.last = state
        else:
            _save_checkpoint(self.ctx, self.cfg_hash, state)

    def plan(self, plan: MemoryPlan) -> None:
        self.ctx.rd.write_json(layout.MEMORY_PLAN, plan.to_json())
        if self.plans == 0:  # the final call only adds the measured peak to the file
            self.ctx.rd.log(f"memory plan: {plan.summary}", stage=STAGE)
        self.plans += 1

    def close(self) -> None:
        self.trace_file.close()


def _claim(ctx: Context, cfg_hash: str) -> None:
    """Rank 0, before any rank reads: without recover.pt, delete the group files left (another
    config's, or a redo asked for by deleting recover.pt) and write recover.pt with nothing
    finished, so that the group files the ranks write from now on count on a resume."""
    ck = layout.checkpoint_path(STAGE)
    if (ctx.rd.path / ck).exists():
        return
    shutil.rmtree(ctx.rd.path / GROUPS_DIR, ignore_errors=True)
    # the seed recover_images draws when it starts without a checkpoint: a resume from group
    # files alone gives the groups still to run the streams of an uninterrupted run
    seed = groups_seed(ctx.gen(STAGE, "steps"))
    state = {**checkpoint_state(seed, 0, {}, None), "finished": []}
    ctx.rd.save_checkpoint(STAGE, state, cfg_hash, event=False)  # no progress to announce


def _on_disk(ctx: Context, n_groups: int) -> set[int]:
    """The groups whose final images are in their files (temp files of a cut write excluded)."""
    found = {int(p.stem) for p in (ctx.rd.path / GROUPS_DIR).glob("[0-9]*.npy")}
    return {g for g in found if g < n_groups}


def _load_state(ctx: Context, cfg_hash: str, hooks: _Hooks, n_groups: int) -> dict | None:
    """The checkpoint with its finished groups' images read back (None: start from scratch)."""
    state = ctx.rd.load_checkpoint(STAGE, cfg_hash)
    if state is None:
        return None
    fix = f"delete {layout.checkpoint_path(STAGE)} to redo the recover stage, then resume"
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CvddError(f"the recover checkpoint was written by an older cvdd; {fix}")
    live = set(state["current"]["groups"]) if state.get("current") else set()
    # a group file of a group in the live wave (written just before a crash cut the checkpoint,
    # or by a rank of a later run) is left out: the live wave makes the same images again
    ready = set(state["finished"]) | (_on_disk(ctx, n_groups) - live)
    if not ready and not live:
        return None
    finished = {}
    for g in sorted(ready):
        rel = layout.recover_group_path(g)
        try:
            finished[g] = torch.from_numpy(np.load(ctx.rd.path / rel, allow_pickle=False))
        except (OSError, ValueError) as e:
            raise CvddError(f"{rel} is missing or corrupt ({type(e).__name__}); {fix}") from e
    hooks.saved = set(finished)
    ctx.rd.log(f"resuming: {len(finished)} of {n_groups} groups finished before", stage=STAGE)
    return {**state, "finished": finished}


def _gather(ctx: Context, cfg_hash: str, *, groups, images, final, hooks: _Hooks, stopped: bool):
    """torchrun: every rank's groups to every rank, once each has written its group files; after
    a stop on any rank, rank 0 writes recover.pt naming the finished groups (the live waves are
    lost) for any resume to continue from. `final`: this rank's images (its groups finished)."""
    if stopped:
        share = dict(hooks.last.get("finished", {}))  # the finished groups it last checkpointed
    else:
        share = {g.group: final[g.indices] for g in dist.shard(groups)}
        hooks.save_groups(share)  # the groups finished since its last checkpoint
    parts = dist.all_gather_object((stopped, share, hooks.last.get("seed")))
    finished = {g: im for _, sh, _ in parts for g, im in sh.items()}
    if any(p[0] for p in parts):
        if dist.is_main():  # every rank wrote its own group files before
            seed = next(p[2] for p in parts if p[0])
            _save_checkpoint(ctx, cfg_hash, checkpoint_state(seed, 0, finished, None))
        raise StopRequested
    out = images.clone()  # (N, C, H, W) uint8
    for g in groups:
        out[g.indices] = finished[g.group]
    return out


def run_recover(ctx: Context, cfg_hash: str) -> dict:
    cfg, rc, d = ctx.cfg, ctx.cfg.recover, ctx.data
    images, _ = ctx.load_images(layout.INIT_IMAGES)
    priors = ctx.priors()
    members = list(cfg.squeeze.members)
    gen = ctx.gen(STAGE, "plan")
    plan = plan_committee(
        members, priors, cfg.ipc, rc.num_experts, rc.schedule, rc.fixed_members, gen
    )
    groups = make_groups(d.num_classes, cfg.ipc, rc.classes_per_group)
    committee = [plan[g.ipc_idx] for g in groups]
    # weights are drawn once per IPC index (the random voter too, method.md §5.4)
    w_ipc = [voter_weights([priors[m] for m in ms], rc.voter, rc.temperature, gen) for ms in plan]
    weights = [w_ipc[g.ipc_idx] for g in groups]
    ctx.rd.write_json(layout.COMMITTEE, describe_plan(groups, committee, weights, priors, rc))
    used = members if rc.schedule == "per_iteration" else sorted({m for ms in plan for m in ms})
    models = {m: ctx.load_member(m) for m in used}
    hooks = _Hooks(ctx, cfg_hash)
    mine = {g.group for g in dist.shard(groups)}  # torchrun: group g on rank g % world
    final, stopped = images, False
    try:
        dist.run_on_main(lambda: _claim(ctx, cfg_hash))
        state = _load_state(ctx, cfg_hash, hooks, len(groups))
        if state is None and rc.snapshot_every:
            hooks.snapshot(0, images[grid_rows(groups)])
        if mine:  # a rank left without groups (more ranks than groups) only gathers
            final = recover_images(
                images,
                groups,
                committee=committee,
                weights=weights,
                models=models,
                cfg=rc,
                mean=ctx.mean,
                std=ctx.std,
                gen=ctx.gen(STAGE, "steps"),
                hooks=hooks,
                state=state,
                priors=priors,
                on_plan=hooks.plan,
                only=mine if hooks.split else None,
            )
    except StopRequested:
        if not hooks.split:
            raise
        stopped = True  # the others learn it in the gather, then every rank stops
    finally:
        hooks.close()
    if hooks.split:
        kw = dict(groups=groups, images=images, final=final, hooks=hooks, stopped=stopped)
        final = _gather(ctx, cfg_hash, **kw)
    ctx.save_images(layout.RECOVER_IMAGES, final, cfg.ipc)
    return {"num_images": int(final.shape[0]), "members_used": used}
