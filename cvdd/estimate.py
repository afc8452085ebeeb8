"""How long a run will take on this machine, before it starts.

Each model the run trains or runs is timed here, once, on a small batch at the run's image size
and channel count (a forward and backward pass per image, after one warm-up); the stages'
image passes (members x epochs x images in squeeze, steps x images x experts in recover,
students x epochs x images in validate, ...) times those costs give each stage's seconds. A
forward pass alone counts a third of a training pass. This measures the machine as it is now
(other jobs included); the Live page's ETA takes over once the run has rates of its own.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from .config import RunConfig
from .train import CURVE_IMAGES

FORWARD_SHARE = 1 / 3  # a forward pass's share of a forward + backward pass
OVERHEAD = 1.3  # augmentation, data movement, evaluation bookkeeping, checkpoints (measured)


def _seconds_per_image(name: str, width: float, shape: tuple, num_classes: int, device) -> float:
    """One training pass (forward + backward) of `name` per image on `device`, measured."""
    from .models import create_model

    c, size = shape[0], shape[1]
    batch = 32 if size <= 64 or device.type == "cuda" else 8
    model = create_model(name, num_classes, c, width=width).to(device).train()
    x = torch.randn(batch, c, size, size, device=device)
    y = torch.randint(0, num_classes, (batch,), device=device)
    best = math.inf
    for _ in range(3):  # the first pass warms up allocators and kernels
        t0 = time.perf_counter()
        F.cross_entropy(model(x), y).backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return best / batch


def _costs(cfg: RunConfig, shape: tuple, num_classes: int, device) -> dict[str, float]:
    names = {m: cfg.squeeze.width_of(m) for m in cfg.squeeze.members}
    students = dict.fromkeys([cfg.validate.student, *cfg.validate.students], cfg.validate.width)
    out = {}
    for name, width in {**names, **{f"student:{k}": v for k, v in students.items()}}.items():
        arch = name.removeprefix("student:")
        out[name] = _seconds_per_image(arch, width, shape, num_classes, device)
    return out


def _students(cfg: RunConfig) -> int:
    """How many students validate trains (validate.student_plan, counted from the config)."""
    v = cfg.validate
    runs = 1 + v.random_real + (v.hard_labels * (1 + v.random_real))
    extra = len({s for s in v.students if s != v.student})
    return runs + v.compare_eval_labels + extra * runs


def stage_seconds(cfg: RunConfig, *, num_classes: int, train: int, test: int, cost: dict) -> dict:
    """Seconds per stage from per-image costs (`cost[name]`, `cost["student:<name>"]`)."""
    members, fwd = list(cfg.squeeze.members), FORWARD_SHARE
    mean_member = sum(cost[m] for m in members) / len(members)
    student = cost[f"student:{cfg.validate.student}"]
    teacher = sum(cost[m] for m in members) if cfg.relabel.teacher == "committee" else mean_member
    s, p, r, v = cfg.squeeze, cfg.prior, cfg.recover, cfg.validate
    out = {"squeeze": 0.0, "prior": 0.0}
    if s.source == "train":
        n = min(train, s.max_train_images or train)
        out["squeeze"] = sum(s.epochs * n * cost[m] + test * cost[m] * fwd for m in members)
    if p.source == "compute" and s.source == "train" and len(members) > 1:
        k = min(num_classes, p.max_classes or num_classes) * p.ipc
        out["prior"] = sum(
            p.recover_iterations * k * cost[m] + p.validate_epochs * k * (student + cost[m] * fwd)
            for m in members
        )
    images = num_classes * cfg.ipc
    out["init"] = cfg.init.candidates * num_classes * cfg.init.num_crops * mean_member * fwd
    out["recover"] = r.iterations * images * max(1, min(r.num_experts, len(members))) * mean_member
    out["relabel"] = 4 * images * teacher * fwd
    # the curve's evaluations score a strided subset, the last one the whole split (train.py)
    evals = max(1, v.epochs // max(v.eval_every, 1))
    scored = test + (evals - 1) * min(test, CURVE_IMAGES)
    per_student = v.epochs * images * (student + teacher * fwd) + scored * student * fwd
    out["validate"] = _students(cfg) * per_student + test * teacher * fwd
    return {k: round(val * OVERHEAD, 1) for k, val in out.items()}


def estimate_run(
    cfg: RunConfig,
    *,
    num_classes: int,
    train: int,
    test: int,
    shape: tuple,
    cached: list[str] | tuple = (),
) -> dict:
    """{"total_s", "stages": {stage: s}, "basis", "cached"} for `cfg` on a data set of this
    shape ((channels, size)) on the run's device of this machine, measured now; the stages in
    `cached` (squeeze, prior: found whole in the committee cache) count as no time."""
    from .utils import resolve_device, set_threads

    threads = set_threads(cfg.threads)
    device = torch.device(resolve_device(cfg.device))
    cost = _costs(cfg, shape, num_classes, device)
    stages = stage_seconds(cfg, num_classes=num_classes, train=train, test=test, cost=cost)
    stages.update(dict.fromkeys(cached, 0.0))
    where = str(device) if device.type == "cuda" else f"{threads} CPU thread(s)"
    found = (
        f"; the committee's {' and '.join(cached)} found in the cache: no time"
        if cached
        else "; a committee already in the cache skips squeeze"
    )
    return {
        "total_s": round(sum(stages.values()), 1),
        "stages": stages,
        "device": str(device),
        "basis": (
            f"each model timed now on {where} at {shape[1]} px, {shape[0]} channel(s), "
            f"so other jobs running now count{found}"
        ),
        "cached": list(cached),
    }
