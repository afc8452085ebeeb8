"""Stage 3, recover: committee-voting pixel optimisation (paper §3.6, method.md §5).

Writes recover/committee.json (who votes for which IPC index, with what weight), the memory plan
(how many groups share a wave), a loss trace, image-grid snapshots, checkpoints (finished groups
as uint8 files, the live wave in fp32), and the final images (lossless uint8).
"""

from __future__ import annotations

import io
import json
import os

import numpy as np
import torch

from .. import dist, layout
from ..context import Context
from ..grid import images_to_png_grid
from ..memory import MemoryPlan
from ..recover import describe_plan, make_groups, plan_committee, recover_images, voter_weights
from ..utils import CvddError, StopRequested
from ..waves import GRID_SIDE, checkpoint_state, grid_rows

STAGE = "recover"
CHECKPOINT_FORMAT = 2  # finished groups in their own files; 1 (older cvdd) kept every pixel


class _Hooks:
    def __init__(self, ctx: Context, cfg_hash: str):
        self.ctx, self.cfg_hash = ctx, cfg_hash
        self.saved: set[int] = set()  # finished groups already in their files
        self.logged = False
        self.split = dist.is_distributed()  # torchrun: checkpoints are kept for the gather
        self.last: dict = {}  # the newest checkpoint state while split
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

    def checkpoint(self, state: dict) -> None:
        """Each finished group's images go to their own file once; recover.pt names them."""
        if self.split:  # one rank's share: written by rank 0 after the gather (_gather)
            self.last = state
            return
        finished = state["finished"]
        for g in sorted(set(finished) - self.saved):
            buf = io.BytesIO()
            np.save(buf, finished[g].numpy())
            self.ctx.rd.write_bytes(layout.recover_group_path(g), buf.getvalue())
            self.saved.add(g)
        light = {**state, "finished": sorted(finished)}
        self.ctx.rd.save_checkpoint(STAGE, light, self.cfg_hash)

    def plan(self, plan: MemoryPlan) -> None:
        self.ctx.rd.write_json(layout.MEMORY_PLAN, plan.to_json())
        if not self.logged:  # the final call only adds the measured peak to the file
            self.ctx.rd.log(f"memory plan: {plan.summary}", stage=STAGE)
            self.logged = True

    def close(self) -> None:
        self.trace_file.close()


def _load_state(ctx: Context, cfg_hash: str, hooks: _Hooks) -> dict | None:
    """The checkpoint with its finished groups' images read back (None: start from scratch)."""
    state = ctx.rd.load_checkpoint(STAGE, cfg_hash)
    if state is None:
        return None
    fix = f"delete {layout.checkpoint_path(STAGE)} to redo the recover stage, then resume"
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CvddError(f"the recover checkpoint was written by an older cvdd; {fix}")
    finished = {}
    for g in state["finished"]:
        rel = layout.recover_group_path(g)
        try:
            finished[g] = torch.from_numpy(np.load(ctx.rd.path / rel, allow_pickle=False))
        except (OSError, ValueError) as e:
            raise CvddError(f"{rel} is missing or corrupt ({type(e).__name__}); {fix}") from e
    hooks.saved = set(finished)
    return {**state, "finished": finished}


def _gather(ctx: Context, groups, images, final, mine, hooks: _Hooks, stopped: bool):
    """torchrun: every rank's groups to rank 0, which writes them; after a stop on any rank, as
    a checkpoint of finished groups (the live waves are lost) that any resume continues from."""
    if stopped:
        share = dict(hooks.last.get("finished", {}))  # the finished groups it last checkpointed
    else:
        share = {g.group: final[g.indices] for g in groups if g.group in mine}
    parts = dist.all_gather_object((stopped, share, hooks.last.get("seed")))
    finished = {g: im for _, sh, _ in parts for g, im in sh.items()}
    if any(p[0] for p in parts):
        if dist.is_main():
            seed = next(p[2] for p in parts if p[0])
            hooks.split = False  # rank 0 writes the group files and recover.pt as one process
            hooks.checkpoint(checkpoint_state(seed, 0, finished, None))
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
        state = _load_state(ctx, cfg_hash, hooks)
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
        final = _gather(ctx, groups, images, final, mine, hooks, stopped)
    ctx.save_images(layout.RECOVER_IMAGES, final, cfg.ipc)
    return {"num_images": int(final.shape[0]), "members_used": used}
