"""Benchmark: the recover step, straightforward vs the engine's, in ms per image per iteration.

The paper's committees with random weights (N = 2 experts, groups of 100 classes, pairs in the
`enumerate` order): CIFAR-100 (32 px, 100 classes), Tiny-ImageNet (64 px, 200 classes) and
ImageNet-1K (224 px, torchvision architectures, 1000 classes). Per case it times the
straightforward step (cvdd/recover/reference.py: one group at a time, BN hooks per module,
fp32, loss read back per member) and the engine's step (cvdd/recover/step.py: the whole wave in
one forward pass per member, per-group BN statistics, no host read) in the same process, and
prints both and their ratio. On CUDA it also times the engine's step captured as one CUDA graph
(recover.cuda_graph, cvdd/recover/graph.py; the first wave's, per image) and prints it with the
engine step's time over it ("vs eng"). It prints figures and asserts nothing.

    python benchmarks/recover_speed.py --device cpu --iters 2
    python benchmarks/recover_speed.py --device cuda --iters 20 --warmup 5

On CPU the batches are capped (--cpu-cap, in 32-px image equivalents) so a run takes minutes
and little memory; capped cases say so. Target on one H100 / H200: <= 0.05 ms per image per
iteration for the CIFAR-100 committee, and >= 50x the straightforward step at batch 100.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cvdd.bn import BNStatsCollector
from cvdd.config import RecoverConfig
from cvdd.models import create_model
from cvdd.recover.committee import make_groups, wave_votes
from cvdd.recover.graph import GraphStep
from cvdd.recover.plan import plan_memory, probe_losses
from cvdd.recover.reference import ReferenceCommittee
from cvdd.recover.step import augment_wave, fast_path, member_format, wave_loss
from cvdd.recover.waves import open_wave

SMALL = ("resnet18", "resnet50", "shufflenetv2", "mobilenetv2", "densenet121")
TV = ("tv_resnet18", "tv_resnet50", "tv_shufflenet_v2_x1_0", "tv_mobilenet_v2", "tv_densenet121")
SETS = {  # name -> (members, classes, pixels, jitter): the presets' values (method.md §5.1)
    "cifar100": (SMALL, 100, 32, 4),
    "tiny": (SMALL, 200, 64, 4),
    "imagenet1k": (TV, 1000, 224, 32),
}
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TARGET_MS, TARGET_RATIO = 0.05, 50.0  # CIFAR-100 committee, H100 / H200


def _args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--iters", type=int, default=10, help="timed iterations per case")
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations first")
    p.add_argument("--batches", default="100,1000", help="images per step, comma-separated")
    p.add_argument("--sets", default="cifar100,tiny,imagenet1k")
    p.add_argument("--precision", default="", help="fp32,bf16 (default: both on CUDA, fp32)")
    p.add_argument(
        "--cpu-cap",
        type=int,
        default=100,
        help="CPU: most images per case, counted at 32 px "
        "(a 64-px image counts 4, a 224-px one 49); 0 = no cap",
    )
    return p.parse_args(argv)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _committee(names, classes, device) -> dict:
    torch.manual_seed(0)
    return {m: create_model(m, classes, 3).to(device).eval().requires_grad_(False) for m in names}


def _timed(fn, iters: int, warmup: int, device: torch.device) -> float:
    """Seconds per call of fn() after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / max(iters, 1)


def _reference(models, groups, voters, images, cfg, device):
    """The straightforward step for every group in turn; returns the callable to time."""
    ref = ReferenceCommittee(models, cfg)
    m = torch.tensor(MEAN, device=device).view(1, -1, 1, 1)
    s = torch.tensor(STD, device=device).view(1, -1, 1, 1)
    bounds = ((0 - m) / s, (1 - m) / s)
    state = []
    for g in groups:
        x = ((images[g.indices].to(device).float() / 255 - m) / s).requires_grad_(True)
        opt = torch.optim.Adam([x], lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
        state.append((x, torch.tensor(g.classes, device=device), opt, torch.Generator()))

    def step() -> None:
        for g, (x, t, opt, gen) in zip(groups, state):
            ref.step(x, t, voters[g.group], [0.5, 0.5], opt=opt, gen=gen, bounds=bounds)

    return step, ref.remove


def _waves(models, groups, voters, images, cfg, device, cols):
    """The planned waves (one, unless memory says otherwise) with their votes, and the plan."""
    amp, cl = fast_path(cfg, device)
    probes = probe_losses(
        models, cols, cfg=cfg, classes=len(groups[0].classes), amp=amp, channels_last=cl
    )
    plan = plan_memory(
        [len(g.classes) for g in groups],
        [voters[g.group] for g in groups],
        probes,
        cfg=cfg,
        image_shape=tuple(images.shape[1:]),
        device=device,
        amp=amp,
    )
    per = plan.groups_per_wave
    waves = []
    for i in range(0, len(groups), per):
        w = open_wave(
            groups[i : i + per], images, None, 0, cfg=cfg, mean=MEAN, std=STD, device=device
        )
        votes = wave_votes(
            [voters[g.group] for g in w.groups],
            [[0.5, 0.5]] * len(w.groups),
            w.targets,
            list(models),
        )
        waves.append((w, votes))
    return waves, plan


def _bounds(device):
    lo = ((0 - torch.tensor(MEAN)) / torch.tensor(STD)).view(1, -1, 1, 1).to(device)
    hi = ((1 - torch.tensor(MEAN)) / torch.tensor(STD)).view(1, -1, 1, 1).to(device)
    return lo, hi


def _engine(models, groups, voters, images, cfg, device, graph=False):
    """The engine's step on the planned waves, what it closes, the plan and the images a step
    optimises. With `graph`: the first wave's step captured once and replayed (as the loop
    does it, one wave's graph at a time: all of them at once would hold every wave's
    activations)."""
    amp, cl = fast_path(cfg, device)
    cols = {m: BNStatsCollector(model) for m, model in models.items()}
    waves, plan = _waves(models, groups, voters, images, cfg, device, cols)
    lo, hi = _bounds(device)

    def loss(xa, votes, n):
        kw = dict(models=models, collectors=cols, cfg=cfg, amp=amp, channels_last=cl)
        return wave_loss(xa, votes, n, **kw)

    def eager() -> None:  # the body of recover_images' loop, without its reads and hooks
        for w, votes in waves:
            total, _ = loss(augment_wave(w.x, w.gens, cfg), votes, len(w.groups))
            w.opt.zero_grad(set_to_none=True)
            total.backward()
            w.opt.step()
            with torch.no_grad():
                w.x.clamp_(lo, hi)

    def close() -> None:
        for c in cols.values():
            c.remove()

    if not graph:
        return eager, close, plan, sum(len(w.x) for w, _ in waves)
    w, votes = waves[0]
    n = len(w.groups)
    captured = GraphStep(w, lambda xa: loss(xa, votes, n), cfg, (lo, hi))  # warm-up, capture
    return (lambda: captured.step(cfg.lr)), close, plan, len(w.x)


def _engine_ms(models, groups, voters, images, cfg, device, args, graph=False):
    """ms per image per iteration of the engine's step, and the plan; what it built is freed
    on return, before the next case builds its own."""
    step, close, plan, n = _engine(models, groups, voters, images, cfg, device, graph)
    try:
        return 1e3 * _timed(step, args.iters, args.warmup, device) / n, plan
    finally:
        close()


def _effective_batch(name: str, batch: int, args, device: torch.device) -> int:
    """The batch a case runs with: on CPU at most --cpu-cap 32-px image equivalents (>= 2)."""
    if device.type != "cpu" or not args.cpu_cap:
        return batch
    px = SETS[name][2]
    return min(batch, max(args.cpu_cap * 32 * 32 // (px * px), 2))


def build_case(name: str, batch: int, precision: str, device: torch.device):
    """One case of set `name`: its recover settings, committee (random weights), groups of up to
    100 classes (one per "IPC index"), each group's expert pair, and random uint8 images
    (class-major, `batch` rounded down to whole groups)."""
    names, classes, px, jitter = SETS[name]
    per_group = min(batch, 100)
    n_groups = max(batch // per_group, 1)
    cfg = dataclasses.replace(
        RecoverConfig(), jitter=jitter, classes_per_group=per_group, precision=precision
    )
    models = _committee(names, classes, device)
    pairs = [list(p) for p in itertools.combinations(names, 2)]
    groups = make_groups(per_group, n_groups, per_group)
    voters = [pairs[g.ipc_idx % len(pairs)] for g in groups]
    images = torch.randint(0, 256, (per_group * n_groups, 3, px, px), dtype=torch.uint8)
    images = images.view(per_group, n_groups, 3, px, px).flatten(0, 1)  # class-major
    return cfg, models, groups, voters, images


def _case(name, batch, precision, args, device) -> str:
    px = SETS[name][2]
    asked, batch = batch, _effective_batch(name, batch, args, device)
    cfg, models, groups, voters, images = build_case(name, batch, precision, device)
    per_group, n = cfg.classes_per_group, len(images)
    ref_ms = float("nan")
    if precision == "fp32":  # the straightforward step is fp32 only
        step, close = _reference(models, groups, voters, images, cfg, device)
        ref_ms = 1e3 * _timed(step, args.iters, args.warmup, device) / n
        close()
    amp, cl = fast_path(cfg, device)
    with member_format(models, cl):
        eng_ms, plan = _engine_ms(models, groups, voters, images, cfg, device, args)
        graph_txt = ""
        if device.type == "cuda":  # the capture needs CUDA
            graph_ms = _engine_ms(models, groups, voters, images, cfg, device, args, True)[0]
            graph_txt = f"{graph_ms:8.3f}  {eng_ms / graph_ms:6.1f}x  "
    known = ref_ms == ref_ms  # not NaN
    ref_txt = f"{ref_ms:15.3f}" if known else f"{'-':>15s}"
    ratio = f"{ref_ms / eng_ms:6.1f}x" if known else f"{'-':>7s}"
    note = f"  (asked {asked}: --cpu-cap)" if asked != n else ""
    return (
        f"{name:10s} {px:4d} {n:6d}  {precision:4s}  {ref_txt}  {eng_ms:8.3f}  {ratio}  "
        f"{graph_txt}{plan.waves} x {plan.groups_per_wave} x {per_group}{note}"
    )


def main(argv=None) -> None:
    args = _args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda but CUDA is not available; use --device cpu")
    threads = int(os.environ.get("CVDD_THREADS", 0)) or torch.get_num_threads()
    torch.set_num_threads(threads)
    precisions = args.precision or ("fp32,bf16" if device.type == "cuda" else "fp32")
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{threads} thread(s)"
    print(f"# recover step, ms per image per iteration; {device.type}, {where}")
    print(f"# torch {torch.__version__}; {args.iters} iterations timed after {args.warmup} warm-up")
    graph_head = "   graph  vs eng  " if device.type == "cuda" else ""
    print(
        "# set         px  batch  prec  straightforward    engine    ratio  "
        f"{graph_head}waves x groups x images"
    )
    if device.type != "cuda":
        print("# graph step (recover.cuda_graph): n/a on cpu")
    seen = set()
    for name in args.sets.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            for precision in precisions.split(","):
                eff = _effective_batch(name, batch, args, device)
                if (name, eff, precision) in seen:
                    print(
                        f"{name:10s} {SETS[name][2]:4d} {batch:6d}  {precision:4s}  skipped: over "
                        f"--cpu-cap {args.cpu_cap} on CPU (ran as batch {eff} above)"
                    )
                    continue
                seen.add((name, eff, precision))
                print(_case(name, batch, precision, args, device), flush=True)
    if device.type == "cuda":
        print(
            f"# target (CIFAR-100 committee): <= {TARGET_MS} ms/img/it, >= {TARGET_RATIO:.0f}x "
            "the straightforward step at batch 100"
        )


if __name__ == "__main__":
    main()
