"""Device memory: the budget a stage may fill, what one more image costs a model, the batch size
of test-split evaluation, and the one out-of-memory check and message.

The budget is the device's free memory (or `recover.memory_gb`, or CVDD_MEMORY_GB, which wins so
a resumed run can be given less) minus headroom; where CVDD_MAX_WORKERS lets several workers share
the device, each plans from its share of the free memory. Recover sizes its waves from it
(cvdd/recover/plan.py), validate its evaluation batches (`plan_eval_batch`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import torch
import torch.nn as nn

from .queue import device_key, max_workers

__all__ = [
    "GIB",
    "HEADROOM",
    "ENV_BUDGET",
    "memory_budget",
    "measure_bytes_per_image",
    "plan_eval_batch",
    "is_out_of_memory",
    "out_of_memory_message",
]

GIB = 2**30
HEADROOM = 0.8  # share of the budget a plan may fill: allocator fragmentation, cuDNN workspaces
ENV_BUDGET = "CVDD_MEMORY_GB"  # overrides recover.memory_gb, e.g. to resume under a smaller one
EVAL_BATCH_MAX = 1000  # larger evaluation batches gain little speed for their memory
EVAL_BATCH_RAM = 500  # CPU without a set budget: the batch evaluation has always used
EVAL_INPUT_BYTES = 1 + 4 + 4  # per pixel value: a test batch's uint8, float and normalised copies


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
    shared = max_workers(device_key(str(device)))
    if shared > 1:  # the other workers allowed on this device plan from the same free memory
        free //= shared
        limit = min(limit, free)
        source += f" (free memory shared by the {shared} workers CVDD_MAX_WORKERS allows here)"
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
    # CUDA: sizes where the cost per image is linear; at 8 vs 16 images the allocator's block
    # rounding and cuDNN's workspace choices outweighed the images (seen on an H200)
    n1, n2 = (32, 64) if cuda else (2, 4)

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

    if cuda:  # warm-up: cuDNN picks algorithms and workspaces on the first call of a size
        once(n1)
        once(n2)
        how = "CUDA peak allocation, " + ("forward + backward" if train else "no-grad forward")
    else:
        how = "tensors saved for backward" if train else "leaf modules' input + output, no grad"
    return max((once(n2) - once(n1)) // (n2 - n1), 1), f"{how}, {n1} vs {n2} images"


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


def out_of_memory_message(
    where: str, *, in_use_bytes: int = 0, sized: str = "", batch_size: int | None = None
) -> str:
    """The fix for running out of memory in `where`: resume under half of `in_use_bytes` (the
    estimate or budget in force; 2 GiB when unknown), which shrinks recover's waves and the
    evaluation batches and changes no result. `sized` says what that memory was sized for. The
    student's training batch is the method's (BSSL labels each batch with the teacher's BN
    statistics of that very batch), so the message says it only changes in a new run."""
    gb = max(round(in_use_bytes / GIB / 2, 2), 0.01) if in_use_bytes > 0 else 2
    batch = "validate.batch_size" + (f"={batch_size}" if batch_size is not None else "")
    return (
        f"out of memory in {where}{f' ({sized})' if sized else ''}: give it less memory, resume "
        f"with {ENV_BUDGET}={gb} python -m cvdd resume <run dir> (the images do not depend on "
        f"the wave size, nor the scores on the evaluation batch), or start a run with --set "
        f"recover.memory_gb={gb}. {batch} is part of the method (BSSL labels each batch with the "
        "teacher's BN statistics of that very batch), so lowering it changes the results: do "
        "that only in a new run, or lower validate.width or use --set device=cpu"
    )
