"""Profile: where one recover step's time goes (torch.profiler over a few steps).

The CIFAR-100 committee of benchmarks/recover_speed.py (five members with random weights, N = 2
experts, groups of 100 classes) at one batch: a few warm-up steps, then `--steps` profiled
steps of the engine's eager step (cvdd/recover/step.py), and on CUDA the same steps captured as
one CUDA graph (cvdd/recover/graph.py) timed beside it. Prints, and with --out writes as
Markdown:
  - ms per image per iteration, eager and (CUDA) graph;
  - the time by kind of work (convolution and matmul, BN statistics and other reductions,
    element-wise, optimizer, copies, other), as a share of the profiled device time;
  - the top kernels (CUDA) or top operators (CPU) by self time.

    python benchmarks/recover_profile.py --device cuda --batch 1000 --steps 5 --out prof.md
    python benchmarks/recover_profile.py --device cpu --batch 20 --steps 2

It prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # cvdd, and recover_speed beside this file

import recover_speed as rs  # noqa: E402  (the committee, groups and steps it times)

from cvdd.recover.step import fast_path, member_format  # noqa: E402
from cvdd.utils import use_cuda_device  # noqa: E402

# kind of work <- a kernel's or operator's name (first match wins; names are lower-cased)
KINDS = (
    ("convolution / matmul", r"conv|cudnn|gemm|cutlass|sm\d\d_|xmma|mm\b|addmm|matmul|winograd"),
    ("BN statistics / reductions", r"var_mean|welford|reduce|sum|mean|norm"),
    ("optimizer (Adam)", r"adam|foreach|_fused"),
    ("copies / layout", r"copy|cat|contiguous|transpose|permute|memcpy|memset|fill"),
    (
        "element-wise",
        r"elementwise|vectorized|unrolled|mul|add|div|sub|relu|threshold|clamp|pow|sqrt|exp",
    ),
)


def _args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=1000, help="images per step")
    p.add_argument("--precision", default="", help="fp32 | bf16 (default: bf16 on CUDA)")
    p.add_argument("--steps", type=int, default=5, help="profiled steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--top", type=int, default=15, help="kernels / operators listed")
    p.add_argument("--out", default="", help="also write the Markdown here")
    return p.parse_args(argv)


def kind_of(name: str) -> str:
    low = name.lower()
    return next((k for k, pat in KINDS if re.search(pat, low)), "other")


def _self_time(ev, cuda: bool) -> float:
    """An averaged event's self time in microseconds, on the device (CUDA) or the CPU."""
    if cuda:
        return float(getattr(ev, "self_device_time_total", None) or ev.self_cuda_time_total)
    return float(ev.self_cpu_time_total)


def _rows(prof, cuda: bool) -> list[tuple[str, int, float]]:
    """(name, calls, self µs) of the kernels (CUDA) or operators (CPU), largest first."""
    out = []
    for ev in prof.key_averages():
        on_device = getattr(ev, "device_type", None) == torch.autograd.DeviceType.CUDA
        if cuda and not on_device:
            continue  # CPU-side ops and runtime calls: their kernels are counted instead
        if not cuda and (not ev.key.startswith("aten::") or on_device):
            continue
        t = _self_time(ev, cuda)
        if t > 0:
            out.append((ev.key, int(ev.count), t))
    return sorted(out, key=lambda r: -r[2])


def report(
    rows, *, steps: int, n: int, eager_ms: float, graph_ms: float | None, head: str, top: int = 15
) -> str:
    """The Markdown: timings, time by kind, top entries."""
    total = sum(t for _, _, t in rows) or 1.0
    kinds: dict[str, float] = {}
    for name, _, t in rows:
        kind = kind_of(name)
        kinds[kind] = kinds.get(kind, 0.0) + t
    lines = [head, ""]
    lines.append(f"- eager step: {eager_ms:.3f} ms per image per iteration ({n} images)")
    if graph_ms is not None:
        lines.append(f"- CUDA graph step: {graph_ms:.3f} ms per image per iteration")
    per_step = total / 1e3 / steps
    lines.append(f"- profiled self time: {per_step:.2f} ms per step over {steps} steps")
    lines += ["", "| kind of work | share | ms per step |", "|---|---|---|"]
    for k, t in sorted(kinds.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {k} | {100 * t / total:.1f} % | {t / 1e3 / steps:.2f} |")
    lines += ["", "| kernel / operator | kind | calls per step | ms per step | share |"]
    lines.append("|---|---|---|---|---|")
    for name, calls, t in rows[:top]:
        short = name if len(name) <= 90 else name[:87] + "..."
        short = short.replace("|", "/")
        lines.append(
            f"| `{short}` | {kind_of(name)} | {calls / steps:g} | {t / 1e3 / steps:.3f} "
            f"| {100 * t / total:.1f} % |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> str:
    args = _args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda but CUDA is not available; use --device cpu")
    cuda = device.type == "cuda"
    if cuda:
        use_cuda_device(args.device)
    threads = int(os.environ.get("CVDD_THREADS", 0)) or torch.get_num_threads()
    torch.set_num_threads(threads)
    precision = args.precision or ("bf16" if cuda else "fp32")
    cfg, models, groups, voters, images = rs.build_case("cifar100", args.batch, precision, device)
    _, cl = fast_path(cfg, device)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with member_format(models, cl):
        step, close, plan, n = rs._engine(models, groups, voters, images, cfg, device)
        try:
            # timed first without the profiler (it adds its own overhead), then profiled
            eager_ms = 1e3 * rs._timed(step, args.steps, args.warmup, device) / n
            with profile(activities=acts) as prof:
                for _ in range(args.steps):
                    step()
                rs._sync(device)
        finally:
            close()
        graph_ms = None
        if cuda:
            gstep, gclose, _, gn = rs._engine(models, groups, voters, images, cfg, device, True)
            try:
                graph_ms = 1e3 * rs._timed(gstep, args.steps, args.warmup, device) / gn
            finally:
                gclose()
    where = torch.cuda.get_device_name(device) if cuda else f"cpu, {threads} thread(s)"
    head = (
        f"### recover step profile: CIFAR-100 committee, batch {n} ({plan.waves} wave(s)), "
        f"{precision}, {where}, torch {torch.__version__}"
    )
    text = report(
        _rows(prof, cuda),
        steps=args.steps,
        n=n,
        eager_ms=eager_ms,
        graph_ms=graph_ms,
        head=head,
        top=args.top,
    )
    print(text, end="")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text, encoding="utf-8")
    return text


if __name__ == "__main__":
    main()
