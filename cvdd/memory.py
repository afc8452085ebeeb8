"""Memory planning for recover: how many image groups one wave may push through the committee.

Within a wave every voting member keeps its autograd graph for all of the wave's images until
the one backward pass, so the memory a wave needs grows with its image count. The planner
measures what one image costs each member with a probe pass at the run's resolution and
precision, takes the device's free memory (or `recover.memory_gb`) minus headroom, and picks
the groups per wave. The random draws never depend on the wave size (each group has its own
random stream), so a run may resume under another budget: the same images up to float rounding
(cvdd/recover.py). Also here: the bf16 / channels_last fast
path (what a step's tensors cost and how they are laid out), the out-of-memory message, and the
batch size of test-split evaluation, from the same budget.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn

from . import layout
from .config import RecoverConfig

__all__ = [
    "GIB",
    "HEADROOM",
    "MemoryPlan",
    "memory_budget",
    "measure_bytes_per_image",
    "split_waves",
    "plan_waves",
    "plan_memory",
    "plan_eval_batch",
    "fast_path",
    "member_format",
    "is_out_of_memory",
    "out_of_memory_message",
]

GIB = 2**30
HEADROOM = 0.8  # share of the budget a plan may fill: allocator fragmentation, cuDNN workspaces
ENV_BUDGET = "CVDD_MEMORY_GB"  # overrides recover.memory_gb, e.g. to resume under a smaller one
# fp32 tensors a wave holds per image besides the members' graphs: x, its gradient, Adam's two
# moments, the augmented copy and one member's input copy
STATE_COPIES = 6
EVAL_BATCH_MAX = 1000  # larger evaluation batches gain little speed for their memory
EVAL_BATCH_RAM = 500  # CPU without a set budget: the batch evaluation has always used
EVAL_INPUT_BYTES = 1 + 4 + 4  # per pixel value: a test batch's uint8, float and normalised copies


@dataclass
class MemoryPlan:
    """The content of recover/memory_plan.json (docs/rundir.md): every size in bytes."""

    device: str
    precision: str
    image_shape: list[int]  # (C, H, W) of one image
    groups: int  # image groups of the stage (IPC indices x class chunks)
    images_per_group: int  # the largest group
    groups_per_wave: int
    waves: int
    forced: bool  # groups_per_wave came from recover.groups_per_step, not from the budget
    bytes_per_image: dict[str, int]  # kept for backward, per image and committee member
    state_bytes_per_image: int  # pixels, gradient, Adam moments and copies of one image
    measured_by: str  # how bytes_per_image was found
    budget_bytes: int  # what a wave may fill: HEADROOM x the memory below, minus what is held
    budget_source: str
    estimated_peak_bytes: int  # the largest wave's need, plus what was held when planning
    fits: bool  # estimated_peak_bytes <= budget_bytes + held
    held_bytes: int = 0  # on the device before recover started (models)
    measured_peak_bytes: int | None = None  # CUDA: torch.cuda.max_memory_allocated at the end
    graph: str = ""  # recover.cuda_graph: "" (off), "captured" or "eager: <why>"
    summary: str = field(default="")

    def to_json(self) -> dict:
        return {**asdict(self), "notes": FIELD_NOTES}

    def describe(self) -> str:
        """One line for the log (and the `summary` field)."""
        per = ", ".join(f"{m} {_size(b)}" for m, b in self.bytes_per_image.items())
        how = "forced by recover.groups_per_step" if self.forced else "planned"
        return (
            f"{self.waves} wave(s) of up to {self.groups_per_wave} group(s) "
            f"({self.groups_per_wave * self.images_per_group} images, {how}); kept for backward "
            f"per image: {per}; estimated peak {_size(self.estimated_peak_bytes)} "
            f"of a {_size(self.budget_bytes)} budget ({self.budget_source})"
        )


FIELD_NOTES = {
    "sizes": "all *_bytes in bytes; summary rounds them",
    "groups": "image groups of recover: IPC indices x chunks of recover.classes_per_group",
    "groups_per_wave": "groups optimised together, one forward pass per member per step",
    "forced": "true when recover.groups_per_step set groups_per_wave instead of the budget",
    "bytes_per_image": "what one image adds to the memory a committee member keeps for backward",
    "state_bytes_per_image": "pixels, gradient, Adam moments and input copies of one image",
    "budget_bytes": "headroom x min(free memory, recover.memory_gb or CVDD_MEMORY_GB) - held",
    "held_bytes": "already on the device before the first step (the committee's weights)",
    "estimated_peak_bytes": "held + the largest wave's groups x their images x their bytes",
    "measured_peak_bytes": "CUDA only: torch.cuda.max_memory_allocated over the stage",
    "fits": "false when even one group needs more than the budget (it runs, one per wave)",
    "graph": "recover.cuda_graph: captured, or eager and why; empty when the flag is off",
}


def _size(n: int) -> str:
    """Bytes in the unit that reads best: 812 KiB, 3.4 MiB, 12.0 GiB."""
    for unit, scale in (("GiB", GIB), ("MiB", 2**20)):
        if n >= scale:
            return f"{n / scale:.{1 if n >= 10 * scale else 2}f} {unit}"
    return f"{n / 1024:.0f} KiB"


def _available_ram() -> int:
    """MemAvailable of /proc/meminfo (Linux), else physical pages free."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def memory_budget(device: torch.device, memory_gb: float) -> tuple[int, int, str]:
    """(bytes a wave may fill, bytes already held on the device, where the number came from).

    `memory_gb` (or the CVDD_MEMORY_GB environment variable, which wins so a resumed run can be
    given less) caps the memory; the device's free memory caps it too. HEADROOM applies to both.
    """
    env = os.environ.get(ENV_BUDGET, "").strip()
    if env:
        memory_gb, source = float(env), f"{ENV_BUDGET}={env}"
    else:
        source = f"recover.memory_gb={memory_gb:g}" if memory_gb > 0 else ""
    if device.type == "cuda":
        held = torch.cuda.memory_allocated(device)
        free, _ = torch.cuda.mem_get_info(device)
        # the caching allocator's reserved-but-unused blocks are free for this process
        free += torch.cuda.memory_reserved(device) - held
        limit = free if memory_gb <= 0 else min(free, int(memory_gb * GIB) - held)
        source = source or "free device memory"
    else:
        held = 0
        free = _available_ram()
        limit = free if memory_gb <= 0 else min(free, int(memory_gb * GIB))
        source = source or "available RAM"
    if memory_gb > 0 and limit == free:
        source += " (capped by free memory)"
    return int(max(limit, 0) * HEADROOM), held, source


def _saved_bytes(run: Callable[[], None]) -> int:
    """Bytes of the distinct storages autograd saves for backward while `run()` runs."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return sum(storages.values())


def _cuda_peak(run: Callable[[], None], device: torch.device) -> int:
    """Peak bytes allocated on the device above what was held before `run()`."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    run()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def _leaf_activation_peak(run: Callable[[], None]) -> int:
    """Estimated peak bytes of live activations in `run()`, a no-grad forward: conservatively
    the largest input + output of a leaf module, plus the largest leaf output once more for a
    tensor kept alongside (a residual branch's input, a dense block's earlier features)."""
    worst = {"call": 0, "out": 0}

    def distinct(ts) -> dict[int, int]:  # an in-place op's input and output share one storage
        st = [t.untyped_storage() for t in ts if isinstance(t, torch.Tensor)]
        return {x.data_ptr(): x.nbytes() for x in st}

    def hook(module: nn.Module, args, out) -> None:
        if next(module.children(), None) is None:  # containers only repeat their leaves' tensors
            outs = distinct(out if isinstance(out, tuple) else (out,))
            worst["call"] = max(worst["call"], sum({**distinct(args), **outs}.values()))
            worst["out"] = max(worst["out"], sum(outs.values()))

    handle = nn.modules.module.register_module_forward_hook(hook)
    try:
        run()
    finally:
        handle.remove()
    return worst["call"] + worst["out"]


def measure_bytes_per_image(
    loss_of: Callable[[torch.Tensor], torch.Tensor],
    make_input: Callable[[int], torch.Tensor],
    device: torch.device,
    *,
    train: bool = True,
) -> tuple[int, str]:
    """Bytes one more image costs a member: the difference of two probe passes.

    `loss_of(x)` runs one member's recover loss on `x = make_input(n)` (n images of one group,
    at the run's resolution and precision). On CUDA the probe measures the peak allocation of
    forward + backward; elsewhere it sums the tensors autograd saves for backward (the backward
    pass's own temporaries are left to HEADROOM). Two sizes cancel fixed costs (weights, the
    BN statistics). `train` False: a no-grad forward of a logits function (CPU: leaf modules).
    """
    cuda = device.type == "cuda"
    n1, n2 = (8, 16) if cuda else (2, 4)

    def once(n: int) -> int:
        def run() -> None:
            with torch.set_grad_enabled(train):
                x = make_input(n).requires_grad_(train)
                loss = loss_of(x)
                if cuda and train:
                    loss.backward()  # CPU: the saved tensors are the measure, no backward needed

        if cuda:
            return _cuda_peak(run, device)
        return _saved_bytes(run) if train else _leaf_activation_peak(run)

    if cuda:
        once(n1)  # warm-up: cuDNN picks algorithms and workspaces on the first call
        how = "CUDA peak allocation, " + ("forward + backward" if train else "no-grad forward")
    else:
        how = "tensors saved for backward" if train else "leaf modules' input + output, no grad"
    return max((once(n2) - once(n1)) // (n2 - n1), 1), f"{how}, {n1} vs {n2} images"


def split_waves(sizes: list[int], per_wave: int) -> list[list[int]]:
    """Indices of groups in waves of up to `per_wave` groups of equal size, in order of first
    appearance of each size (the last class chunk of each IPC index may be smaller)."""
    by_size: dict[int, list[int]] = {}
    for i, s in enumerate(sizes):
        by_size.setdefault(s, []).append(i)
    out = []
    for idx in by_size.values():
        n = per_wave if per_wave > 0 else len(idx)
        out += [idx[i : i + n] for i in range(0, len(idx), n)]
    return out


def plan_waves(
    costs: list[int],
    sizes: list[int],
    *,
    budget: int,
    forced: int = 0,
) -> tuple[int, list[list[int]], int]:
    """(groups per wave, the waves as lists of group indices, the largest wave's bytes).

    `costs[i]` is group i's bytes (its images x the bytes of its voters and state); the plan
    takes as many groups per wave as the dearest group allows under `budget`, at least one;
    `forced` > 0 sets the count instead.
    """
    per = forced if forced > 0 else max(1, budget // max(max(costs), 1))
    per = min(per, len(costs))
    waves = split_waves(sizes, per)
    peak = max(sum(costs[i] for i in w) for w in waves)
    return per, waves, peak


def plan_memory(
    sizes: list[int],
    voters: list[list[str]],
    probes: dict[str, Callable[[torch.Tensor], torch.Tensor]],
    *,
    cfg: RecoverConfig,
    image_shape: tuple[int, int, int],
    device: torch.device,
    amp: bool = False,
) -> MemoryPlan:
    """Probe what one image costs each member, then size the waves.

    `sizes[g]` / `voters[g]` are group g's image count and members; `probes[m](x)` is member m's
    recover loss on x. With schedule=per_iteration any N members may vote for a group, so each
    group is charged for the N dearest.
    """
    bpi, how = {}, ""
    for m, loss_of in probes.items():
        bpi[m], how = measure_bytes_per_image(
            loss_of, lambda n: torch.randn(n, *image_shape, device=device), device
        )
    dearest = sum(sorted(bpi.values(), reverse=True)[: cfg.num_experts])
    state_bpi = STATE_COPIES * 4 * math.prod(image_shape)
    costs = [
        n * (state_bpi + (dearest if cfg.schedule == "per_iteration" else sum(bpi[m] for m in v)))
        for n, v in zip(sizes, voters)
    ]
    budget, held, source = memory_budget(device, cfg.memory_gb)
    per, waves, peak = plan_waves(costs, sizes, budget=budget, forced=cfg.groups_per_step)
    plan = MemoryPlan(
        device=str(device),
        precision="bf16" if amp else "fp32",
        image_shape=list(image_shape),
        groups=len(sizes),
        images_per_group=max(sizes),
        groups_per_wave=per,
        waves=len(waves),
        forced=cfg.groups_per_step > 0,
        bytes_per_image=bpi,
        state_bytes_per_image=state_bpi,
        measured_by=how,
        budget_bytes=budget,
        budget_source=source,
        estimated_peak_bytes=held + peak,
        fits=peak <= budget,
        held_bytes=held,
    )
    plan.summary = plan.describe()
    return plan


def plan_eval_batch(
    fn: Callable[[torch.Tensor], torch.Tensor],
    image_shape: tuple[int, ...],
    *,
    device: torch.device,
    memory_gb: float,
    reserve_bytes: int = 0,
) -> dict:
    """How to batch the test split for `fn` (an eval-mode model or a teacher's logits): the
    `eval_batch` record of validate/students.json. The budget is recover's, less `reserve_bytes`
    held by the time `fn` evaluates (a student's gradients and Adam moments); a probe on zeros
    measures one image's no-grad activations, plus the batch's input copies. At most
    EVAL_BATCH_MAX images; EVAL_BATCH_RAM on CPU without a set budget (results and speed there
    stay the fixed batch's). Only evaluation is planned: with eval-mode BN its batch changes no
    logit beyond float rounding, while the student's batch is part of BSSL's labels.
    """
    budget, _, source = memory_budget(device, memory_gb)
    budget = max(budget - reserve_bytes, 0)
    act, how = measure_bytes_per_image(
        fn, lambda n: torch.zeros(n, *image_shape, device=device), device, train=False
    )
    bpi = act + EVAL_INPUT_BYTES * math.prod(image_shape)
    set_budget = memory_gb > 0 or bool(os.environ.get(ENV_BUDGET, "").strip())
    cap = EVAL_BATCH_MAX if set_budget or device.type == "cuda" else EVAL_BATCH_RAM
    return {
        "batch_size": max(1, min(cap, budget // bpi)),
        "bytes_per_image": bpi,
        "budget_bytes": budget,
        "budget_source": source,
        "measured_by": how,
    }


def is_out_of_memory(e: BaseException) -> bool:
    """CUDA's OutOfMemoryError, Python's MemoryError, or the CPU allocator's RuntimeError."""
    text = str(e).lower()
    return isinstance(e, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(e, RuntimeError) and ("out of memory" in text or "can't allocate" in text)
    )


def out_of_memory_message(plan: MemoryPlan | None) -> str:
    """The fix for an out-of-memory error in recover: the budget that applies, and a smaller one
    (half the estimated peak) to resume with."""
    if plan is None:
        return "out of memory while planning recover; set a smaller recover.memory_gb"
    suggest = max(round(plan.estimated_peak_bytes / GIB / 2, 2), 0.01)
    return (
        f"out of memory in recover with {plan.groups_per_wave} group(s) per wave (plan in "
        f"{layout.MEMORY_PLAN}: {plan.summary}); give recover less memory: resume with "
        f"{ENV_BUDGET}={suggest} python -m cvdd resume <run dir> (the images do not depend on "
        f"the wave size), or start a run with --set recover.memory_gb={suggest}"
    )


def fast_path(cfg: RecoverConfig, device: torch.device) -> tuple[bool, bool]:
    """(bf16 autocast, channels_last): both with precision=bf16 on CUDA (tensor cores like NHWC)."""
    on = cfg.precision == "bf16" and device.type == "cuda"
    return on, on


@contextlib.contextmanager
def member_format(models: dict[str, nn.Module], channels_last: bool) -> Iterator[None]:
    """Members in channels_last for the stage, restored afterwards (later stages share them)."""
    if channels_last:
        for m in models.values():
            m.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        if channels_last:
            for m in models.values():
                m.to(memory_format=torch.contiguous_format)
