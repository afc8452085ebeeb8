"""Analysis data for the explorer: BN discrepancy (paper Fig. 5), intra-class diversity (Fig. 4),
and soft labels with vs without BSSL. Pure tensor code, plus `write_analysis`, which the relabel
stage calls to write the four JSON files (docs/rundir.md describes their content).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from . import layout
from .bn import BNStatsCollector, bn_layers, bn_matching_loss
from .utils import read_json

if TYPE_CHECKING:  # only for the annotation: the context pulls in the run dir and models
    from .context import Context

__all__ = [
    "bn_discrepancy",
    "class_similarity",
    "group_bn_gaps",
    "soft_label_stats",
    "write_analysis",
]

# The analysis is the last two of the relabel stage's four progress steps, and its seeds are
# named after that stage (changing the name would change every run's BN batches).
_STAGE = "relabel"
# Groups measured per member in bn_groups.json: each costs 2 forward passes per member, so an
# ImageNet-1K run at IPC 50 (500 groups of 100 images at 224 px) would spend minutes here; an
# evenly spaced subset of 64 still covers every IPC index of the paper's presets at IPC <= 50.
_MAX_GROUPS = 64


@torch.no_grad()
def bn_discrepancy(
    model: nn.Module, sources: dict[str, torch.Tensor], batch_size: int, gen: torch.Generator
) -> dict:
    """Per BN layer: batch mean/var of each source vs the layer's running stats.

    sources: name -> normalised inputs (N, C, H, W). Batches are random (seeded) slices of each
    source; per-channel stats and the L2 gaps ||mu_b - mu_run||, ||var_b - var_run|| are averaged
    over batches (method.md §10). The model is in eval mode, so nothing it stores changes.
    """
    model.eval()
    col = BNStatsCollector(model)
    layers = [
        {
            "index": i,
            "name": name,
            "channels": bn.num_features,
            "running_mean": bn.running_mean.float().cpu().tolist(),
            "running_var": bn.running_var.float().cpu().tolist(),
            "sources": {},
        }
        for i, (name, bn) in enumerate(col.layers)
    ]
    num_batches = {}
    try:
        for src, x in sources.items():
            perm = torch.randperm(x.shape[0], generator=gen)
            chunks = [c for c in perm.split(batch_size) if len(c) >= 2]
            num_batches[src] = len(chunks)
            acc = [dict(mean=0.0, var=0.0, mean_gap=0.0, var_gap=0.0) for _ in layers]
            for idx in chunks:
                col.reset(1)
                model(x[idx.to(x.device)])
                for a, (_, bn), m, v in zip(acc, col.layers, col.means, col.vars):
                    m, v = m[0].cpu(), v[0].cpu()
                    a["mean"] = a["mean"] + m / len(chunks)
                    a["var"] = a["var"] + v / len(chunks)
                    a["mean_gap"] += float((m - bn.running_mean.float().cpu()).norm()) / len(chunks)
                    a["var_gap"] += float((v - bn.running_var.float().cpu()).norm()) / len(chunks)
            for layer, a in zip(layers, acc):
                layer["sources"][src] = {
                    "mean": a["mean"].tolist(),
                    "var": a["var"].tolist(),
                    "mean_gap": a["mean_gap"],
                    "var_gap": a["var_gap"],
                }
    finally:
        col.remove()
    return {"batch_size": batch_size, "num_batches": num_batches, "layers": layers}


@torch.no_grad()
def group_bn_gaps(
    model: nn.Module, x: torch.Tensor, groups: list[list[int]], first_bn_multiplier: float
) -> dict:
    """Recover's BN term on each group of images alone, and its per-layer parts.

    x: normalised inputs (N, C, H, W); groups: rows of x, one recover group each. For every
    group: `loss` = sum_l m_l (||mean_l - run_mean_l|| + ||var_l - run_var_l||) as in
    `bn_matching_loss` (method.md §5.3), and per BN layer the two L2 gaps without m_l.
    """
    model.eval()
    col = BNStatsCollector(model)
    out = {"loss": [], "mean_gap": [], "var_gap": []}
    try:
        for rows in groups:
            col.reset(1)
            model(x[torch.tensor(rows, device=x.device)])
            out["loss"].append(float(bn_matching_loss(col, first_bn_multiplier)[0]))
            gaps = [
                (
                    float(torch.linalg.vector_norm(m[0] - bn.running_mean.float())),
                    float(torch.linalg.vector_norm(v[0] - bn.running_var.float())),
                )
                for (_, bn), m, v in zip(col.layers, col.means, col.vars)
            ]
            out["mean_gap"].append([g[0] for g in gaps])
            out["var_gap"].append([g[1] for g in gaps])
    finally:
        col.remove()
    return out


def _layer_means(per_group: dict, pick: list[bool]) -> dict:
    """Per layer, the mean over the picked groups of one source's gaps."""
    n = sum(pick)
    return {
        k: [sum(col) / n for col in zip(*(g for g, p in zip(per_group[k], pick) if p))] if n else []
        for k in ("mean_gap", "var_gap")
    }


def _analysed_groups(committee: dict, ipc: int) -> list[dict]:
    """The recover groups bn_groups.json measures (at most _MAX_GROUPS, evenly spaced)."""
    groups = [g for g in committee.get("groups") or [] if g.get("classes")]
    if len(groups) > _MAX_GROUPS:
        step = (len(groups) - 1) / (_MAX_GROUPS - 1)
        groups = [groups[round(i * step)] for i in range(_MAX_GROUPS)]
    return [
        {
            "group": g["group"],
            "ipc_idx": g["ipc_idx"],
            "classes": g["classes"],
            "rows": [c * ipc + g["ipc_idx"] for c in g["classes"]],
            "voters": list(g.get("members") or []),
        }
        for g in groups
    ]


def bn_by_group(ctx: Context, sources: dict[str, torch.Tensor], reference: str) -> dict | None:
    """The content of bn_groups.json: every recover group's BN loss and per-layer gaps, before
    (init) and after (synthetic) recover, on each member that voted for it and on the members
    that did not. None when recover/committee.json is unreadable."""
    committee = read_json(ctx.rd.path / layout.COMMITTEE)
    if not isinstance(committee, dict):
        return None
    rc = ctx.cfg.recover
    groups = _analysed_groups(committee, ctx.cfg.ipc)
    voters = {m for g in groups for m in g["voters"]}
    names = [m for m in ctx.cfg.squeeze.members if m in voters or m == reference]
    members = {}
    for name in names:
        model = ctx.load_member(name)
        layers = [
            {"index": i, "name": n, "channels": bn.num_features}
            for i, (n, bn) in enumerate(bn_layers(model))
        ]
        rows = [g["rows"] for g in groups]
        meas = {
            src: group_bn_gaps(model, sources[src], rows, rc.first_bn_multiplier)
            for src in ("init", "synthetic")
        }
        voted = [name in g["voters"] for g in groups]
        split = {"voted": voted, "not_voted": [not v for v in voted]}
        members[name] = {
            "reference": name == reference,
            "layers": layers,
            "voted": voted,
            "loss": {src: m["loss"] for src, m in meas.items()},
            "layer_gaps": {
                k: {"groups": sum(pick), **{src: _layer_means(m, pick) for src, m in meas.items()}}
                for k, pick in split.items()
            },
        }
    return {
        "images": "un-augmented; init = init/images.npz (before recover), synthetic = after",
        "loss": "sum over BN layers of m_l (||batch mean - running mean|| + ||batch var - "
        "running var||), m_0 = first_bn_multiplier, m_l = 1 otherwise: recover's BN term",
        "first_bn_multiplier": rc.first_bn_multiplier,
        "schedule": committee.get("schedule"),
        # per_iteration redraws voters every step: a group's `voters` are only its plan
        "voters_exact": rc.schedule != "per_iteration",
        "groups_total": len(committee.get("groups") or []),
        "groups": [{k: v for k, v in g.items() if k != "rows"} for g in groups],
        "reference": reference,
        "members": members,
    }


@torch.no_grad()
def class_similarity(
    model: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    num_classes: int,
    keep_matrices: int = 10,
) -> dict:
    """Mean pairwise cosine similarity of penultimate features within each class (lower = more
    diverse), plus the similarity matrices of the first `keep_matrices` classes."""
    model.eval()
    feats = torch.cat([model.forward_features(xb) for xb in x.split(256)]).float().cpu()
    feats = torch.nn.functional.normalize(feats, dim=1)
    per_class, matrices = [], []
    for c in range(num_classes):
        f = feats[targets.cpu() == c]
        sim = f @ f.T
        k = f.shape[0]
        off = (sim.sum() - sim.diagonal().sum()) / max(k * (k - 1), 1)  # mean over pairs
        per_class.append(float(off) if k > 1 else None)
        if c < keep_matrices:
            matrices.append(sim.tolist())
    vals = [v for v in per_class if v is not None]
    return {
        "per_class": per_class,
        "mean": sum(vals) / len(vals) if vals else None,
        "matrices": matrices,
    }


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * p.clamp_min(1e-12).log()).sum(1)


def soft_label_stats(
    p_bssl: torch.Tensor, p_eval: torch.Tensor, targets: torch.Tensor, class_names: list[str]
) -> dict:
    """Entropy, agreement, KL(bssl || eval) per image and per class, and label accuracy."""
    ent_b, ent_e = _entropy(p_bssl), _entropy(p_eval)
    kl = (p_bssl * (p_bssl.clamp_min(1e-12).log() - p_eval.clamp_min(1e-12).log())).sum(1)
    agree = p_bssl.argmax(1) == p_eval.argmax(1)
    acc_b, acc_e = p_bssl.argmax(1) == targets, p_eval.argmax(1) == targets
    per_class = []
    for c, name in enumerate(class_names):
        m = targets == c
        if not m.any():
            continue
        per_class.append(
            {
                "class": c,
                "name": name,
                "agreement": float(agree[m].float().mean()),
                "kl": float(kl[m].mean()),
                "entropy_bssl": float(ent_b[m].mean()),
                "entropy_eval": float(ent_e[m].mean()),
                "acc_bssl": float(acc_b[m].float().mean()),
                "acc_eval": float(acc_e[m].float().mean()),
            }
        )
    return {
        "agreement": float(agree.float().mean()),
        "kl_mean": float(kl.mean()),
        "entropy_bssl": ent_b.tolist(),
        "entropy_eval": ent_e.tolist(),
        "kl": kl.tolist(),
        "label_acc_bssl": float(acc_b.float().mean()),
        "label_acc_eval": float(acc_e.float().mean()),
        "per_class": per_class,
    }


def write_analysis(
    ctx: Context,
    probs: dict[str, torch.Tensor],
    *,
    targets: torch.Tensor,
    images: torch.Tensor,
    init_images: torch.Tensor,
    real_images: torch.Tensor,
) -> dict:
    """Write the soft-label, BN-discrepancy and diversity files; return relabel's metrics.

    probs: "bssl" / "eval" -> (N, num_classes) labels of `images` (uint8, on the device);
    init_images and real_images are the init stage's start and its random-real baseline.
    """
    cfg, d, dev = ctx.cfg, ctx.data, ctx.device
    stats = _write_soft_label_stats(ctx, probs, targets)
    # a committee teacher is analysed through its first member: the figures need one model's
    # BN layers and features
    name = cfg.relabel.teacher if cfg.relabel.teacher != "committee" else cfg.squeeze.members[0]
    model = ctx.load_member(name)
    # Fig. 5: BN statistics of synthetic (before / after recover) and real batches
    sources = {
        "init": ctx.normalize(init_images.to(dev)),
        "synthetic": ctx.normalize(images),
        "real": ctx.normalize(real_images.to(dev)),
    }
    bn = bn_discrepancy(model, sources, min(100, images.shape[0]), ctx.gen(_STAGE, "bn"))
    ctx.rd.write_json(layout.BN_STATS, {"model": name, **bn})
    # the mixture above hides what recover did: each group was optimised against its voters only
    groups = bn_by_group(ctx, sources, name)
    if groups is not None:
        ctx.rd.write_json(layout.BN_GROUPS, groups)
    ctx.rd.progress(_STAGE, 3, 4, label="BN statistics")
    # Fig. 4: mean pairwise cosine similarity of penultimate features within each class
    sims = {
        src: class_similarity(model, x, targets.to(dev), d.num_classes)
        for src, x in sources.items()
    }
    sims["random_real"] = sims.pop("real")  # the diversity file names the baseline in full
    div = {"model": name, "feature": "penultimate", "class_names": d.class_names, "sources": sims}
    ctx.rd.write_json(layout.DIVERSITY, div)
    ctx.rd.progress(_STAGE, 4, 4, label="diversity")

    def mean_gap(src: str) -> float:  # summed over BN layers, as the stage_end metric reports it
        return sum(layer["sources"][src]["mean_gap"] for layer in bn["layers"])

    return {
        "label_agreement": stats["agreement"],
        "label_kl": stats["kl_mean"],
        "cos_sim_synthetic": sims["synthetic"]["mean"],
        "cos_sim_random_real": sims["random_real"]["mean"],
        "bn_mean_gap_synthetic": mean_gap("synthetic"),
        "bn_mean_gap_real": mean_gap("real"),
        **_group_metrics(groups),
    }


def _write_soft_label_stats(ctx: Context, probs: dict, targets: torch.Tensor) -> dict:
    rc = ctx.cfg.relabel
    stats = soft_label_stats(probs["bssl"], probs["eval"], targets, ctx.data.class_names)
    meta = {"teacher": rc.teacher, "mode_used": rc.mode, "batch_size": rc.batch_size}
    ctx.rd.write_json(layout.SOFT_LABEL_STATS, {**meta, **stats})
    return stats


def _group_metrics(doc: dict | None) -> dict:
    """Mean BN loss over (member, group) pairs, voted and not voted, before / after recover."""
    out = {}
    for split, want in (("voted", True), ("not_voted", False)):
        for src in ("init", "synthetic"):
            vals = [
                loss
                for m in (doc or {}).get("members", {}).values()
                for loss, v in zip(m["loss"][src], m["voted"])
                if v == want
            ]
            if vals:
                out[f"bn_loss_{split}_{src}"] = sum(vals) / len(vals)
    return out
