"""Stage 5, validate: students trained from scratch on the distilled set (method.md §7), the
random-real baseline with the same labelling, optionally the eval-mode (non-BSSL) labelling and
hard-label students (one-hot, no teacher); the teacher's own top-1; then the export of the
distilled set (`cvdd.export`: an ImageFolder, its logits and a self-contained teacher).
"""

from __future__ import annotations

import re
import time
from typing import NamedTuple

import torch

from .. import dist, layout
from ..context import Context
from ..eta import student_weights
from ..export import write_export
from ..memory import is_out_of_memory, out_of_memory_message, plan_eval_batch
from ..teacher import Teacher, make_teacher
from ..train import evaluate_logits, train_student
from ..utils import CvddError, StopRequested, read_json

STAGE = "validate"


class _Slot(NamedTuple):
    """A student's share of the stage's one progress count (all students as one bar): the
    weights of the students before it, its own, and all of them, each student's steps counted
    at its architecture's relative cost (cvdd/eta.py student_weights), so the stage's rate and
    time left hold when a ConvNet-3 follows a ResNet-18."""

    before: int
    weight: int
    total: int

    @staticmethod
    def of_plan(plan: list, j: int) -> _Slot:
        w = student_weights([p[3] for p in plan])
        return _Slot(sum(w[:j]), w[j], sum(w))


def student_plan(ctx: Context) -> list[tuple[str, str, str, str]]:
    """(key, data, labels, model) of every student this run trains; the first is the headline.

    Keys are `<data>_<labels>` (labels: bssl | eval | hard = one-hot, no teacher), with
    `-<model>` appended for the `validate.students` beyond the headline model: those train on
    the distilled set with the run's labels (cross-architecture, paper Table 4) and on the same
    baselines as the headline (random real, hard labels) where those are on.
    """
    v, mode = ctx.cfg.validate, ctx.cfg.relabel.mode
    runs = [("distilled", mode)]
    if v.random_real:
        runs.append(("random_real", mode))
    if v.hard_labels:
        runs += [("distilled", "hard")] + ([("random_real", "hard")] if v.random_real else [])
    plan = [(f"{data}_{labels}", data, labels, v.student) for data, labels in runs]
    if v.compare_eval_labels:
        other = "eval" if mode == "bssl" else "bssl"
        plan.insert(1, (f"distilled_{other}", "distilled", other, v.student))
    for name in dict.fromkeys(v.students):  # in order, once each
        if name != v.student:
            tag = re.sub(r"[^A-Za-z0-9_.]+", "_", name)
            plan += [(f"{data}_{labels}-{tag}", data, labels, name) for data, labels in runs]
    return plan


def teacher_top1(ctx: Context, teacher: Teacher, eval_batch: int) -> dict:
    """The relabel teacher's own top-1 on the run's test split (eval-mode BN, batches of
    `eval_batch`): one member, or the prior-weighted committee; with each member's own figure
    from squeeze/members.json."""
    d, rc = ctx.data, ctx.cfg.relabel
    t0 = time.perf_counter()
    top1, top5 = evaluate_logits(
        teacher.logits, d.num_classes, d.test, ctx.mean, ctx.std, ctx.device, eval_batch
    )
    eval_s = time.perf_counter() - t0
    members = (read_json(ctx.rd.path / layout.MEMBERS) or {}).get("members", [])
    return {
        "teacher": rc.teacher,
        "kind": "committee" if rc.teacher == "committee" else "member",
        "weights": dict(zip(ctx.cfg.squeeze.members, teacher.weights))
        if rc.teacher == "committee"
        else {rc.teacher: 1.0},
        "top1": top1,
        "top5": top5,
        "test_images": len(d.test),
        "eval_seconds": round(eval_s, 2),
        "members_top1": {
            m["name"]: m.get("test_top1") for m in members if isinstance(m, dict) and "name" in m
        },
    }


def _gather_students(ctx: Context, doc: dict, plan: list, stopped: bool) -> None:
    """torchrun: every rank's students (and evaluation batches) into rank 0's students.json, in
    plan order; a stop on any rank stops them all once the finished students are saved."""
    parts = dist.all_gather_object((stopped, doc["students"], doc.get("eval_batch", {})))
    merged = {k: s for _, share, _ in parts for k, s in share.items()}
    for r, (_, share, _) in enumerate(parts):  # rank 0 alone logs: the others' students here
        for key in sorted(set(share) - set(doc["students"])):
            ctx.rd.log(f"{key}: student top-1 {share[key]['top1']:.2f}% (rank {r})", stage=STAGE)
    doc["students"] = {p[0]: merged[p[0]] for p in plan if p[0] in merged}
    doc["eval_batch"] = {m: e for *_, share in parts for m, e in share.items()}
    ctx.rd.write_json(layout.STUDENTS, doc)
    if any(st for st, *_ in parts):
        raise StopRequested


def _eval_batch(ctx: Context, fn, reserve_bytes: int = 0) -> dict:
    """The test-split batch for `fn` under recover's memory budget (`plan_eval_batch`)."""
    d = ctx.data
    return plan_eval_batch(
        fn,
        (d.in_channels, d.image_size, d.image_size),
        device=ctx.device,
        memory_gb=ctx.cfg.recover.memory_gb,
        reserve_bytes=reserve_bytes,
    )


def _log_eval_batch(ctx: Context, who: str, ev: dict) -> None:
    mib, gib = ev["bytes_per_image"] / 2**20, ev["budget_bytes"] / 2**30
    ctx.rd.log(
        f"{who}: evaluation batches of {ev['batch_size']} test images ({mib:.2f} MiB per image, "
        f"budget {gib:.2f} GiB from {ev['budget_source']})",
        stage=STAGE,
    )


def _out_of_memory(key: str, batch_size: int, eval_plan: dict) -> str:
    """The fix for an out-of-memory error while student `key` trains or is evaluated."""
    sized = (
        f"its evaluation uses batches of {eval_plan['batch_size']} test images planned from "
        f"{eval_plan['budget_source']}"
    )
    where = f"validate (student {key})"
    in_use = eval_plan["budget_bytes"]
    return out_of_memory_message(where, in_use_bytes=in_use, sized=sized, batch_size=batch_size)


def _train(ctx: Context, cfg_hash: str, doc: dict, student: tuple, *, slot: _Slot, images) -> None:
    """Train and rate `student` (a `student_plan` row) on `images` ((uint8, targets)),
    evaluating in planned batches; its entry and its evaluation batch go into `doc`."""
    from ..models import create_model

    d, v = ctx.data, ctx.cfg.validate
    key, data, labels, arch = student
    t0 = time.time()
    ck_name = f"{STAGE}-{key}"
    torch.manual_seed(ctx.seed_for(STAGE, key, "init"))
    student = create_model(arch, d.num_classes, d.in_channels, width=v.width).to(ctx.device)
    x, y = images[0].to(ctx.device), images[1].to(ctx.device)
    teacher = None if labels == "hard" else make_teacher(ctx, labels)
    # its gradients and Adam's two moments exist from the first step on, evaluation included
    params = sum(p.numel() * p.element_size() for p in student.parameters())
    ev = doc.setdefault("eval_batch", {})[arch] = _eval_batch(ctx, student.eval(), 3 * params)
    _log_eval_batch(ctx, key, ev)
    try:
        res = train_student(
            student,
            x,
            teacher,
            testset=d.test,
            cfg=v,
            mean=ctx.mean,
            std=ctx.std,
            gen=ctx.gen(STAGE, data),  # per data set: BSSL and eval students see the same batches
            should_stop=ctx.should_stop,
            # one stage-wide count over every student, weighted by its cost (_Slot), so the
            # bar and the ETA do not start over with each student
            progress=lambda s, t, m: ctx.rd.progress(
                STAGE, slot.before * t + slot.weight * s, slot.total * t, m, label=key
            ),
            checkpoint=lambda st: ctx.rd.save_checkpoint(ck_name, st, cfg_hash),
            state=ctx.rd.load_checkpoint(ck_name, cfg_hash),
            labels=y,
            eval_batch=ev["batch_size"],
        )
    except Exception as e:
        if is_out_of_memory(e):
            raise CvddError(_out_of_memory(key, v.batch_size, ev)) from e
        raise
    entry = {"data": data, "labels": labels, "student": arch, **res}
    doc["students"][key] = {**entry, "seconds": round(time.time() - t0, 2)}


def _rate_teacher(ctx: Context, doc: dict) -> None:
    """The teacher's own top-1 into `doc`, evaluated in planned batches."""
    teacher = make_teacher(ctx, "eval")
    ev = doc.setdefault("eval_batch", {})["teacher"] = _eval_batch(ctx, teacher.logits)
    _log_eval_batch(ctx, "teacher", ev)
    doc["teacher"] = teacher_top1(ctx, teacher, ev["batch_size"])
    ctx.rd.write_json(layout.STUDENTS, doc)
    ctx.rd.log(
        f"teacher ({doc['teacher']['teacher']}) top-1 {doc['teacher']['top1']:.2f}%",
        stage=STAGE,
    )


def run_validate(ctx: Context, cfg_hash: str) -> dict:
    """Every student of `student_plan` not finished yet (this rank's share under torchrun), then
    the teacher's own top-1 and the export."""
    sets = {
        "distilled": ctx.load_images(layout.RECOVER_IMAGES),
        "random_real": ctx.load_images(layout.RANDOM_REAL),
    }
    doc = read_json(ctx.rd.path / layout.STUDENTS) or {"students": {}}
    plan = student_plan(ctx)
    todo = [p[0] for p in plan if p[0] not in doc["students"]]
    mine, stopped = set(dist.shard(todo)), False  # torchrun: students round-robin over ranks
    try:
        for j, student in enumerate(plan):
            key, data = student[:2]
            if key in mine:  # else finished before a stop/crash, or another rank's
                slot = _Slot.of_plan(plan, j)
                _train(ctx, cfg_hash, doc, student, slot=slot, images=sets[data])
                ctx.rd.write_json(layout.STUDENTS, doc)
                ctx.rd.log(f"{key}: student top-1 {doc['students'][key]['top1']:.2f}%", stage=STAGE)
    except StopRequested:
        if not dist.is_distributed():
            raise
        stopped = True  # the finished students are gathered first, then every rank stops
    if dist.is_distributed():
        _gather_students(ctx, doc, plan, stopped)
        if not dist.is_main():
            return {}  # rank 0 alone rates the teacher and exports
    if "teacher" not in doc:
        _rate_teacher(ctx, doc)
    write_export(ctx, *sets["distilled"])
    return {k: s["top1"] for k, s in doc["students"].items()}
