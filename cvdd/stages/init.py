"""Stage 2, init: the starting images, RDED-style real patches (method.md §4), plus the random-real
baseline images (same number per class) that the analysis and validate stages compare against.
"""

from __future__ import annotations

import torch

from .. import layout
from ..context import Context
from ..patches import random_real, rded_images

STAGE = "init"


def run_init(ctx: Context, cfg_hash: str) -> dict:
    cfg, d = ctx.cfg, ctx.data
    ic = cfg.init
    gen = ctx.gen(STAGE)
    if ic.method == "rded":  # the pipeline checked that every class has the images it needs
        observer = ctx.load_member(ic.observer or cfg.squeeze.members[0])
        images = rded_images(
            d.train,
            d.num_classes,
            observer,
            ipc=cfg.ipc,
            cfg=ic,
            mean=ctx.mean,
            std=ctx.std,
            gen=gen,
            device=ctx.device,
            on_class=lambda c: ctx.rd.progress(STAGE, c + 1, d.num_classes, label=d.class_names[c]),
        )
    elif ic.method == "real":
        images = random_real(d.train, d.num_classes, cfg.ipc, gen)
    else:  # SRe2L's Gaussian start, in normalised space
        x = torch.randn(
            d.num_classes * cfg.ipc, d.in_channels, d.image_size, d.image_size, generator=gen
        )
        images = ctx.denormalize(x)
    ctx.save_images(layout.INIT_IMAGES, images, cfg.ipc)
    # the baseline draws from its own generator, so it does not depend on init.method
    ctx.save_images(
        layout.RANDOM_REAL,
        random_real(d.train, d.num_classes, cfg.ipc, ctx.gen("random_real")),
        cfg.ipc,
    )
    return {"num_images": int(images.shape[0])}
