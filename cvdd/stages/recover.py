"""Stage 3, recover: committee-voting pixel optimisation (paper §3.6, method.md §5).

Writes recover/committee.json (who votes for which IPC index, with what weight), a per-step
trace, image-grid snapshots, checkpoints, and the final images (lossless uint8).
"""

from __future__ import annotations

import json

import torch

from .. import layout
from ..context import Context
from ..grid import images_to_png_grid
from ..recover import describe_plan, make_groups, plan_committee, recover_images, voter_weights

STAGE = "recover"


class _Hooks:
    def __init__(self, ctx: Context, cfg_hash: str):
        self.ctx, self.cfg_hash = ctx, cfg_hash
        self.trace_file = open(ctx.rd.path / layout.TRACE, "a", encoding="utf-8")

    def should_stop(self) -> bool:
        return self.ctx.should_stop()

    def progress(self, step: int, total: int, metrics: dict) -> None:
        self.ctx.rd.progress(STAGE, step, total, metrics)

    def trace(self, record: dict) -> None:
        self.trace_file.write(json.dumps(record) + "\n")
        self.trace_file.flush()

    def snapshot(self, step: int, x: torch.Tensor) -> None:
        c = self.ctx
        png, meta = images_to_png_grid(c.denormalize(x), c.data.num_classes, c.cfg.ipc)
        c.rd.save_snapshot(STAGE, step, png, **meta)

    def checkpoint(self, state: dict) -> None:
        self.ctx.rd.save_checkpoint(STAGE, state, self.cfg_hash)

    def close(self) -> None:
        self.trace_file.close()


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
    ctx.rd.write_json(
        layout.COMMITTEE, describe_plan(groups, committee, weights, priors, rc)
    )
    used = members if rc.schedule == "per_iteration" else sorted({m for ms in plan for m in ms})
    models = {m: ctx.load_member(m) for m in used}
    state = ctx.rd.load_checkpoint(STAGE, cfg_hash)
    x0 = ctx.normalize(images.to(ctx.device))
    hooks = _Hooks(ctx, cfg_hash)
    try:
        if state is None and rc.snapshot_every:
            hooks.snapshot(0, x0)
        x = recover_images(
            x0,
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
        )
    finally:
        hooks.close()
    final = ctx.denormalize(x)
    ctx.save_images(layout.RECOVER_IMAGES, final, cfg.ipc)
    return {"num_images": int(final.shape[0]), "members_used": used}
