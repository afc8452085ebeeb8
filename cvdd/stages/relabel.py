"""Stage 4, relabel: Batch-Specific Soft Labeling (paper §3.7, spec §6), and the analysis data.

The student stage labels its own augmented batches online with the same teacher; this stage
fixes the teacher, labels the un-augmented distilled images both ways (BSSL: BN on the batch's
statistics; eval: BN on the stored running statistics) for export and comparison, and measures
BN discrepancy (Fig. 5) and intra-class diversity (Fig. 4).
"""

from __future__ import annotations

import io

import numpy as np
import torch

from ..analysis import bn_discrepancy, class_similarity, soft_label_stats
from ..context import Context
from ..student import Teacher, soft_labels

STAGE = "relabel"


def make_teacher(ctx: Context, mode: str) -> Teacher:
    """relabel.teacher = one member (paper Algorithm 1), or 'committee': logits weighted by
    softmax(alpha / committee_temperature) over all members (official code after June 2025)."""
    rc = ctx.cfg.relabel
    if rc.teacher != "committee":
        return Teacher([ctx.load_member(rc.teacher)], [1.0], mode)
    members = list(ctx.cfg.squeeze.members)
    priors = ctx.priors()
    w = torch.softmax(torch.tensor([priors[m] for m in members]) / rc.committee_temperature, 0)
    return Teacher([ctx.load_member(m) for m in members], w.tolist(), mode)


def run_relabel(ctx: Context, cfg_hash: str) -> dict:
    cfg, d = ctx.cfg, ctx.data
    images, targets = ctx.load_images("recover/images.npz")
    init_images, _ = ctx.load_images("init/images.npz")
    real_images, _ = ctx.load_images("init/random_real.npz")
    dev = ctx.device
    images = images.to(dev)
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
    buf = io.BytesIO()
    np.savez(
        buf,
        probs_bssl=probs["bssl"].numpy(),
        probs_eval=probs["eval"].numpy(),
        targets=targets.numpy(),
    )
    ctx.rd.write_bytes("relabel/soft_labels.npz", buf.getvalue())
    stats = soft_label_stats(probs["bssl"], probs["eval"], targets, d.class_names)
    teacher_name = (
        cfg.relabel.teacher if cfg.relabel.teacher != "committee" else cfg.squeeze.members[0]
    )
    ctx.rd.write_json(
        "analysis/soft_labels.json",
        {
            "teacher": cfg.relabel.teacher,
            "mode_used": cfg.relabel.mode,
            "batch_size": cfg.relabel.batch_size,
            **stats,
        },
    )
    # Fig. 5: BN statistics of synthetic (before / after recover) and real batches
    model = ctx.load_member(teacher_name)
    sources = {
        "init": ctx.normalize(init_images.to(dev)),
        "synthetic": ctx.normalize(images),
        "real": ctx.normalize(real_images.to(dev)),
    }
    bsz = min(100, images.shape[0])
    bn = bn_discrepancy(model, sources, bsz, ctx.gen(STAGE, "bn"))
    ctx.rd.write_json("analysis/bn_stats.json", {"model": teacher_name, **bn})
    ctx.rd.progress(STAGE, 3, 4, label="BN statistics")
    # Fig. 4: mean pairwise cosine similarity of penultimate features within each class
    div = {
        "model": teacher_name,
        "feature": "penultimate",
        "class_names": d.class_names,
        "sources": {
            src: class_similarity(model, x, targets.to(dev), d.num_classes)
            for src, x in sources.items()
            if src != "real"
        },
    }
    div["sources"]["random_real"] = class_similarity(
        model, sources["real"], targets.to(dev), d.num_classes
    )
    ctx.rd.write_json("analysis/diversity.json", div)
    ctx.rd.progress(STAGE, 4, 4, label="diversity")
    syn, real = div["sources"]["synthetic"]["mean"], div["sources"]["random_real"]["mean"]
    return {
        "label_agreement": stats["agreement"],
        "label_kl": stats["kl_mean"],
        "cos_sim_synthetic": syn,
        "cos_sim_random_real": real,
        "bn_mean_gap_synthetic": sum(l["sources"]["synthetic"]["mean_gap"] for l in bn["layers"]),
        "bn_mean_gap_real": sum(l["sources"]["real"]["mean_gap"] for l in bn["layers"]),
    }
