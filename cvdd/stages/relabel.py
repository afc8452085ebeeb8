"""Stage 4, relabel: Batch-Specific Soft Labeling (paper §3.7, method.md §6), and the analysis data.

The student stage labels its own augmented batches online with the same teacher; this stage
fixes the teacher, labels the un-augmented distilled images both ways (BSSL: BN on the batch's
statistics; eval: BN on the stored running statistics) for export and comparison, then hands
them to `cvdd.analysis`, which measures BN discrepancy (Fig. 5) and intra-class diversity (Fig. 4).
"""

from __future__ import annotations

from .. import layout
from ..analysis import write_analysis
from ..context import Context
from ..teacher import make_teacher, soft_labels

STAGE = "relabel"


def run_relabel(ctx: Context, cfg_hash: str) -> dict:
    cfg = ctx.cfg
    images, targets = ctx.load_images(layout.RECOVER_IMAGES)
    init_images, _ = ctx.load_images(layout.INIT_IMAGES)
    real_images, _ = ctx.load_images(layout.RANDOM_REAL)
    images = images.to(ctx.device)
    probs = {}
    for mode in ("bssl", "eval"):  # same seeded batches for both, so they label the same batches
        probs[mode] = soft_labels(
            make_teacher(ctx, mode),
            images,
            ctx.mean,
            ctx.std,
            cfg.relabel.batch_size,
            ctx.gen(STAGE, "batches"),
        )
        ctx.rd.progress(STAGE, 1 if mode == "bssl" else 2, 4, label=f"labels ({mode})")
    arrays = dict(
        probs_bssl=probs["bssl"].numpy(), probs_eval=probs["eval"].numpy(), targets=targets.numpy()
    )
    ctx.rd.save(layout.SOFT_LABELS, arrays)
    return write_analysis(
        ctx, probs, targets=targets, images=images, init_images=init_images, real_images=real_images
    )
