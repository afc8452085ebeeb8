"""Stage 1, prior: the prior performance alpha of every committee member (paper §3.6, App. C).

alpha_M = top-1 of a student trained on data distilled by M alone (SRe2L++ with committee {M}:
RDED init observed by M, recover with M only, BSSL labels from the relabel teacher, student from
scratch). `prior.source=table` takes method.md §3 values, `user` takes `prior.values`. Computed
values are cached per data set + member weights + settings; CPU presets use cheaper settings
(fewer classes / steps / epochs), recorded in priors.json. A shipped member (squeeze.source=
shipped) carries the alpha computed when it was made, with the key of its settings: it is used
when the run's key is the same, so the quick preset computes no prior at all.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import torch

from .. import dist, layout
from ..config import PRIOR_TABLE, result_settings
from ..context import Context
from ..patches import rded_images
from ..recover.committee import make_groups
from ..recover.loop import recover_images
from ..teacher import Teacher
from ..train import train_student
from ..utils import CvddError, StopRequested, atomic_write_json, read_json

STAGE = "prior"
# Loaded data set names and registry model names -> the prior table's keys (method.md §3)
_TABLE_DATASETS = {"imagenet": "imagenet1k"}
_TABLE_MEMBERS = {
    "tv_resnet18": "resnet18",
    "tv_resnet50": "resnet50",
    "tv_shufflenet_v2_x1_0": "shufflenetv2",
    "tv_mobilenet_v2": "mobilenetv2",
    "tv_densenet121": "densenet121",
}


def table_priors(dataset: str, members: list[str]) -> dict[str, float]:
    """member -> alpha from the method.md §3 table; CvddError when the table lacks one."""
    table = PRIOR_TABLE.get(_TABLE_DATASETS.get(dataset, dataset)) or {}
    keys = {m: _TABLE_MEMBERS.get(m, m) for m in members}
    if not set(keys.values()) <= set(table):
        raise CvddError(
            f"no prior table for data set {dataset!r} and members {members}; "
            "use --set prior.source=compute (or user with prior.values)"
        )
    return {m: table[k] for m, k in keys.items()}


class _Subset:
    """A view of an ImageSet restricted to the first k classes (cheap prior estimates)."""

    def __init__(self, base, k: int):
        self.base = base
        self.idx = torch.nonzero(base.targets < k).flatten()
        self.targets = base.targets[self.idx]

    def __len__(self) -> int:
        return len(self.idx)

    def load(self, indices):
        return self.base.load(self.idx[torch.as_tensor(indices)])

    def class_indices(self, c: int):
        return torch.nonzero(self.targets == c).flatten()


class _Quiet:
    """Recover hooks for the SRe2L++-alone runs: progress only, no snapshots or trace."""

    def __init__(self, ctx: Context, label: str, offset: int, total: int):
        self.ctx, self.label, self.offset, self.total = ctx, label, offset, total

    def should_stop(self) -> bool:
        return self.ctx.should_stop()  # the member in progress restarts on resume

    def progress(self, step: int, total: int, metrics: dict) -> None:
        self.ctx.rd.progress(STAGE, self.offset + step, self.total, metrics, label=self.label)

    def trace(self, record: dict) -> None:
        pass

    def snapshot(self, step: int, x) -> None:
        pass

    def checkpoint(self, state: dict) -> None:
        pass


def _sub_configs(cfg):
    """Recover / validate settings of an SRe2L++-alone run: only what changes alpha remains."""
    p = cfg.prior
    rcfg = dataclasses.replace(
        cfg.recover,
        iterations=p.recover_iterations,
        num_experts=1,
        schedule="fixed",
        voter="equal",
        temperature=1.0,
        fixed_members=(),
        snapshot_every=0,
        checkpoint_every=0,
    )
    vcfg = dataclasses.replace(
        cfg.validate,
        epochs=p.validate_epochs,
        students=(),  # one student (vcfg.student) gives alpha; the others are validate's
        compare_eval_labels=False,
        random_real=False,
        hard_labels=False,
        eval_every=max(p.validate_epochs, 1),
    )
    return rcfg, vcfg


def _alpha(ctx: Context, name: str, k: int, offset: int, total: int) -> float:
    from ..models import create_model

    cfg, p = ctx.cfg, ctx.cfg.prior
    train = ctx.data.train if k == ctx.data.num_classes else _Subset(ctx.data.train, k)
    test = ctx.data.test if k == ctx.data.num_classes else _Subset(ctx.data.test, k)
    model = ctx.load_member(name)
    gen = ctx.gen(STAGE, name, seed=ctx.cfg.squeeze.seed)
    kw = dict(mean=ctx.mean, std=ctx.std, gen=gen, device=ctx.device)
    images = rded_images(train, k, model, ipc=p.ipc, cfg=cfg.init, **kw)  # as init makes them
    rcfg, vcfg = _sub_configs(cfg)
    groups = make_groups(k, p.ipc, rcfg.classes_per_group)
    images = recover_images(
        images,
        groups,
        committee=[[name]] * len(groups),
        weights=[[1.0]] * len(groups),
        models={name: model},
        cfg=rcfg,
        mean=ctx.mean,
        std=ctx.std,
        gen=gen,
        hooks=_Quiet(ctx, name, offset, total),
    )
    teacher_name = cfg.relabel.teacher if cfg.relabel.teacher in cfg.squeeze.members else name
    teacher = Teacher([ctx.load_member(teacher_name)], [1.0], "bssl")
    torch.manual_seed(ctx.seed_for(STAGE, name, "student", seed=ctx.cfg.squeeze.seed))
    student = create_model(
        vcfg.student, ctx.data.num_classes, ctx.data.in_channels, width=vcfg.width
    ).to(ctx.device)
    res = train_student(
        student,
        images.to(ctx.device),
        teacher,
        testset=test,
        cfg=vcfg,
        mean=ctx.mean,
        std=ctx.std,
        gen=gen,
        should_stop=ctx.should_stop,
        progress=lambda *a: None,
        checkpoint=lambda s: None,
    )
    return res["top1"]


def prior_key(cfg, member_file: str, k: int) -> str:
    """Cache key of one member's alpha: its weights file and every setting that changes alpha."""
    blob = json.dumps(
        [
            member_file,
            k,
            dataclasses.asdict(cfg.prior),
            result_settings(_sub_configs(cfg)[0]),  # memory and logging settings left out
            dataclasses.asdict(_sub_configs(cfg)[1]),
            dataclasses.asdict(cfg.init),
            cfg.relabel.teacher,
            cfg.squeeze.seed,
        ],
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _lookup(ctx: Context, member: str, k: int, partial: dict) -> tuple[str, dict | None]:
    """(cache key, the alpha found or None): computed earlier in this run (`partial`), shipped
    with the member (members.json) for these settings, or in the committee cache."""
    info = next(x for x in ctx.members() if x["name"] == member)
    key = prior_key(ctx.cfg, info["file"], k)
    shipped = info.get("prior")
    if partial.get(member):
        return key, partial[member]
    if isinstance(shipped, dict) and shipped.get("key") == key:
        return key, {"student_top1": shipped["student_top1"], "shipped": True}
    return key, read_json(_cache_file(ctx, member, key))


def _cache_file(ctx: Context, member: str, key: str):
    return ctx.cache_dir / layout.prior_cache_path(ctx.data.name, member, key)


def _split_alphas(ctx: Context, members: list[str], partial: dict, k: int) -> dict:
    """torchrun: the members without an alpha yet, round-robin over the ranks; every rank gets
    them all (rank 0 caches them). A stop on any rank stops all, keeping the finished ones."""
    per, todo, keys = ctx.cfg.prior.recover_iterations, [], {}
    for i, m in enumerate(members):
        keys[m], hit = _lookup(ctx, m, k, partial)
        if hit is None:
            todo.append((i, m))
    share, stopped = {}, False
    try:
        for i, m in dist.shard(todo):
            top1 = _alpha(ctx, m, k, i * per, len(members) * per)
            share[m] = {"student_top1": top1, "rank": dist.rank()}
    except StopRequested:
        stopped = True
    parts = dist.all_gather_object((stopped, share))
    got = {m: hit for _, sh in parts for m, hit in sh.items()}
    if dist.is_main():
        for m, hit in got.items():
            # no rank: a cache
            atomic_write_json(_cache_file(ctx, m, keys[m]), {"student_top1": hit["student_top1"]})
    if any(st for st, _ in parts):
        ctx.rd.write_json(layout.PRIOR_PARTIAL, {**partial, **got})
        raise StopRequested
    return got


def run_prior(ctx: Context, cfg_hash: str) -> dict:
    cfg, p = ctx.cfg, ctx.cfg.prior
    members = list(cfg.squeeze.members)
    if p.source == "user":
        values, note, runs = {m: float(p.values[m]) for m in members}, "set by the user", {}
    elif p.source == "table":
        values, note = table_priors(ctx.data.name, members), "docs/method.md §3 table"
        runs = {}
    else:
        k = min(p.max_classes or ctx.data.num_classes, ctx.data.num_classes)
        partial = read_json(ctx.rd.path / layout.PRIOR_PARTIAL) or {}
        if dist.is_distributed():  # torchrun: the ranks compute the missing alphas first
            partial.update(_split_alphas(ctx, members, partial, k))
        values, runs = {}, {}
        per = p.recover_iterations
        for i, m in enumerate(members):
            if ctx.should_stop():
                raise StopRequested
            key, hit = _lookup(ctx, m, k, partial)
            if hit is None:
                top1 = _alpha(ctx, m, k, i * per, len(members) * per)
                hit = {"student_top1": top1}
                atomic_write_json(_cache_file(ctx, m, key), hit)
            else:
                how = (
                    f"computed on rank {hit['rank']}"  # by another rank, this run (torchrun)
                    if "rank" in hit
                    else "shipped with the member"
                    if hit.get("shipped")
                    else "cached"
                )
                ctx.rd.log(f"{m}: prior {hit['student_top1']:.2f}% ({how})", stage=STAGE)
            hit = {**hit, "key": key}  # recorded, so assets/make_committee.py can ship it
            values[m], runs[m] = hit["student_top1"], hit
            partial[m] = hit
            ctx.rd.write_json(layout.PRIOR_PARTIAL, partial)
            ctx.rd.progress(
                STAGE, (i + 1) * per, len(members) * per, {"alpha": values[m]}, label=m, force=True
            )
        note = (
            f"computed: SRe2L++ alone per member, IPC {p.ipc}, {k} classes, "
            f"{p.recover_iterations} recover steps, {p.validate_epochs} student epochs"
        )
        if any(r.get("shipped") for r in runs.values()):
            note += "; computed once with the shipped committee and stored with it"
    ctx.rd.write_json(
        layout.PRIORS, {"source": p.source, "values": values, "runs": runs, "note": note}
    )
    return {f"alpha_{m}": v for m, v in values.items()}
