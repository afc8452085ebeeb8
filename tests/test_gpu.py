"""GPU checks (marker `gpu`, skipped without CUDA; benchmarks/gpu_check.sh runs them): the tiny
and quick presets on CUDA, bf16 against fp32, the memory plan against the measured peak,
resume on CUDA against an uninterrupted run, and the CUDA-graph step (recover.cuda_graph)
against the eager one, under resume and in bf16."""

import dataclasses
import io
import json
import math

import numpy as np
import pytest
import torch

from cvdd.bn import BNStatsCollector
from cvdd.config import RecoverConfig, from_preset
from cvdd.layout import MEMORY_PLAN, RECOVER_IMAGES, RESULT
from cvdd.memory import GIB, HEADROOM
from cvdd.models import create_model
from cvdd.recover.committee import group_generator, make_groups, wave_votes
from cvdd.recover.loop import recover_images
from cvdd.recover.step import augment_wave, member_format, wave_loss
from cvdd.rundir import RunDir
from cvdd.utils import StopRequested

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
CUDA = torch.device("cuda")
PAIR = ("resnet18", "mobilenetv2")
MEAN, STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)


def _pipeline(tmp_path, preset: str, overrides: list[str]) -> dict:
    from cvdd import pipeline

    cfg = from_preset(preset, ["device=cuda", *overrides])
    rd = RunDir.create(tmp_path, cfg.to_dict())
    pipeline.run_pipeline(rd.path)
    plan = json.loads((rd.path / MEMORY_PLAN).read_text())
    assert plan["device"].startswith("cuda") and plan["measured_peak_bytes"] > 0
    return json.loads((rd.path / RESULT).read_text())


def test_tiny_preset_on_cuda(tmp_path):
    res = _pipeline(tmp_path, "tiny", [])
    assert res["device"].startswith("cuda") and res["student_top1"] is not None


def test_quick_preset_on_cuda(tmp_path):
    """Every stage of the quick preset on CUDA (fewer student epochs: this checks, not times)."""
    res = _pipeline(tmp_path, "quick", ["validate.epochs=5", "validate.compare_eval_labels=false"])
    assert res["student_top1"] is not None and res["device"].startswith("cuda")


def _members(num_classes: int = 100) -> dict:
    """Two CIFAR-100 members with random weights and running statistics of real-like inputs."""
    torch.manual_seed(0)
    out = {}
    for name in PAIR:
        m = create_model(name, num_classes, 3).to(CUDA).train()
        with torch.no_grad():
            for _ in range(5):
                m(torch.randn(128, 3, 32, 32, device=CUDA))
        out[name] = m.eval().requires_grad_(False)
    return out


def test_bf16_step_matches_fp32_within_tolerance():
    """bf16 autocast + channels_last against fp32 on one wave of 2 groups x 100 images.

    Stated tolerance: loss within 2 % (relative); pixel gradients with cosine similarity >= 0.98
    and a norm within 10 %. BN statistics are fp32 in both (cvdd/bn.py).
    """
    models = _members()
    groups = make_groups(100, 2, 100)
    targets = torch.tensor([g.classes for g in groups], device=CUDA)
    votes = wave_votes([list(PAIR)] * 2, [[0.6, 0.4]] * 2, targets, list(models))
    x0 = torch.randn(200, 3, 32, 32, device=CUDA)
    out = {}
    for precision in ("fp32", "bf16"):
        cfg = dataclasses.replace(RecoverConfig(), precision=precision)
        amp = precision == "bf16"
        with member_format(models, amp):
            cols = {m: BNStatsCollector(model) for m, model in models.items()}
            x = x0.clone().requires_grad_(True)
            gens = [group_generator(3, g.group) for g in groups]
            loss, _ = wave_loss(
                augment_wave(x, gens, cfg),
                votes,
                2,
                models=models,
                collectors=cols,
                cfg=cfg,
                amp=amp,
                channels_last=amp,
            )
            loss.backward()
            for c in cols.values():
                c.remove()
        out[precision] = (loss.item(), x.grad.flatten().float())
    (l32, g32), (l16, g16) = out["fp32"], out["bf16"]
    assert abs(l16 - l32) <= 0.02 * abs(l32)
    assert torch.nn.functional.cosine_similarity(g16, g32, dim=0) >= 0.98
    assert abs(g16.norm() / g32.norm() - 1) <= 0.10


class _Hooks:
    def __init__(self, stop_at=None):
        self.done, self.stop_at, self.states = 0, stop_at, []

    def should_stop(self):
        return self.stop_at is not None and self.done == self.stop_at

    def progress(self, step, total, metrics):
        self.done = step

    def trace(self, r):
        pass

    def snapshot(self, *a):
        pass

    def checkpoint(self, s):
        buf = io.BytesIO()
        torch.save(s, buf)
        self.states.append(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))


def _recover(models, cfg, hooks=None, state=None, plans=None):
    groups = make_groups(100, 4, 100)  # IPC 4 of CIFAR-100: 4 groups of 100 images
    gen = torch.Generator().manual_seed(5)
    images = torch.randint(0, 256, (400, 3, 32, 32), generator=gen, dtype=torch.uint8)
    return recover_images(
        images,
        groups,
        committee=[list(PAIR)] * 4,
        weights=[[0.6, 0.4]] * 4,
        models=models,
        cfg=cfg,
        mean=MEAN,
        std=STD,
        gen=torch.Generator().manual_seed(1),
        hooks=hooks or _Hooks(),
        state=state,
        on_plan=(plans.append if plans is not None else None),
    )


def test_plan_estimate_against_measured_peak():
    """The planner's estimate brackets torch.cuda.max_memory_allocated, with and without a
    small budget (which must give several waves and stay under it)."""
    models = _members()
    base = dataclasses.replace(RecoverConfig(), iterations=3, snapshot_every=0, checkpoint_every=0)
    plans = []
    _recover(models, base, plans=plans)
    one = plans[-1]
    assert one.waves == 1 and 0.6 <= one.measured_peak_bytes / one.estimated_peak_bytes <= 1.25
    group = 100 * (one.state_bytes_per_image + sum(one.bytes_per_image.values()))
    gb = (one.held_bytes + 2.5 * group / HEADROOM) / GIB  # room for two groups of the four
    plans = []
    _recover(models, dataclasses.replace(base, memory_gb=gb), plans=plans)
    two = plans[-1]
    assert two.groups_per_wave == 2 and two.waves == 2
    assert two.measured_peak_bytes <= two.held_bytes + two.budget_bytes


def _uninterrupted_and_resumed(models, cfg) -> tuple[torch.Tensor, dict, dict[int, torch.Tensor]]:
    """An uninterrupted run's images (2 groups per wave); the yardsticks measured here: the same
    run again, and an uninterrupted run with 1 group per wave; and a run stopped at step 17 and
    resumed with 2 and with 1 group per wave. Deterministic cuDNN throughout."""
    torch.backends.cudnn.deterministic, saved = True, torch.backends.cudnn.deterministic
    try:
        full = _recover(models, cfg)
        again = _recover(models, cfg)
        one = _recover(models, dataclasses.replace(cfg, groups_per_wave=1))
        hooks = _Hooks(stop_at=17)
        with pytest.raises(StopRequested):
            _recover(models, cfg, hooks)
        outs = {
            n: _recover(models, dataclasses.replace(cfg, groups_per_wave=n), state=hooks.states[-1])
            for n in (2, 1)
        }
    finally:
        torch.backends.cudnn.deterministic = saved
    return full, {"again": _spread(again, full), "one": _spread(one, full)}, outs


def _spread(a: torch.Tensor, b: torch.Tensor) -> tuple[float, int]:
    """(share of pixel values that differ, the largest difference in levels) of two uint8 sets."""
    d = (a.int() - b.int()).abs()
    return float((d > 0).float().mean()), int(d.max())


def _within(out: torch.Tensor, ref: torch.Tensor, *yardsticks: tuple, what: str) -> None:
    """`out` is no farther from `ref` than twice the widest yardstick (two runs the engine
    cannot make bit-equal, measured in the same test on the same GPU), plus 0.1 % of the
    values and 1 level: the tolerance comes from the device, not from a CPU."""
    share, top = _spread(out, ref)
    y_share, y_top = max(y[0] for y in yardsticks), max(y[1] for y in yardsticks)
    ok = share <= 2 * y_share + 0.001 and top <= max(y_top, 1) + 1
    assert ok, f"{what}: {share:.4%} of values differ, up to {top} levels; yardsticks {yardsticks}"


def _check_resumes(full, spread: dict, outs: dict, augment: bool) -> None:
    """Resume at the same wave size: the same kernels on the same shapes, so pixel for pixel
    without augmentation (two uninterrupted runs are equal too: checked); with it, resizing's
    backward adds in a nondeterministic order on CUDA, so as close as two uninterrupted runs.
    At another wave size the batches have another shape, cuDNN picks other kernels, and their
    rounding grows over the steps: as close as an uninterrupted run at that wave size is (not
    pixel for pixel on CUDA; docs/method.md §5.2)."""
    if not augment:
        assert spread["again"] == (0.0, 0), spread
        assert torch.equal(outs[2], full)
    else:
        _within(outs[2], full, spread["again"], what="resumed, same wave size")
    _within(outs[1], full, spread["one"], spread["again"], what="resumed, 1 group per wave")


@pytest.mark.parametrize("augment", [False, True])
def test_resume_on_cuda_equals_uninterrupted(augment):
    """Stop mid-wave, resume from the checkpoint (also with one group per wave): see
    _check_resumes for what holds exactly and what within a yardstick measured here."""
    models = _members()
    cfg = dataclasses.replace(
        RecoverConfig(),
        iterations=12,
        augment=augment,
        checkpoint_every=5,
        snapshot_every=0,
        groups_per_wave=2,
    )
    _check_resumes(*_uninterrupted_and_resumed(models, cfg), augment)


def test_recover_images_file_is_uint8_on_cuda(tmp_path):
    from cvdd import pipeline

    cfg = from_preset("tiny", ["device=cuda", "recover.precision=bf16"])
    rd = RunDir.create(tmp_path, cfg.to_dict())
    pipeline.run_pipeline(rd.path)
    with np.load(rd.path / RECOVER_IMAGES) as z:
        assert z["images"].dtype == np.uint8
    assert json.loads((rd.path / MEMORY_PLAN).read_text())["precision"] == "bf16"


# ---------------------------------------------------------------------------------------------
# recover.cuda_graph: the step captured once per wave and replayed (cvdd/recover/graph.py)


class _Traced(_Hooks):
    """Keeps the trace rows and, of the checkpoints, the pixels after the steps in `keep`."""

    def __init__(self, keep=()):
        super().__init__()
        self.rows, self.keep, self.x = [], set(keep), {}

    def trace(self, r):
        self.rows.append(r)

    def checkpoint(self, s):
        if s["done"] in self.keep:
            self.x[s["done"]] = s["current"]["x"]


def _graph_cfg(**over):
    """Traced every step; one wave of the 4 groups unless `over` says otherwise."""
    base = dict(iterations=20, trace_every=1, snapshot_every=0, checkpoint_every=0)
    base["groups_per_wave"] = 4
    return dataclasses.replace(RecoverConfig(), **{**base, **over})


def _losses(hooks) -> list[float]:
    return [r["loss"] for r in hooks.rows if "step" in r]


def _close_images(a: torch.Tensor, b: torch.Tensor) -> None:
    """uint8 images that differ as float rounding grown over the steps makes them differ (the
    wave-size note, method.md §5.2): <= 5 % of values, <= 0.1 % by more than 2 levels, a mean
    difference <= 0.1 level. Measured on a CPU for the fp32 pair below (1 group, 20 steps,
    without / with augmentation): 1.8 / 1.5 %, 0.005 / 0.02 %, 0.018 / 0.016 level."""
    diff = (a.int() - b.int()).abs().float()
    assert (diff > 0).float().mean() <= 0.05 and (diff > 2).float().mean() <= 0.001
    assert diff.mean() <= 0.1


@pytest.mark.parametrize("augment", [False, True])
def test_graph_step_matches_the_eager_step(augment):
    """20 steps of one wave of 4 groups x 100 images, eager and captured, deterministic cuDNN.

    One step equals the eager one to float rounding: without augmentation only the learning
    rate's rounding differs (a float32 tensor in the graph, a double in the eager step), pixels
    within 1e-5 after 3 steps (equal on a CPU); with it, the first step moves no more pixels by
    over 1e-3 than a second eager run does (twice that, plus 0.1 %): the resize's backward is
    nondeterministic on CUDA, and a gradient near 0 may change sign, Adam's step with it.
    Over 20 steps Adam grows these differences as it grows any rounding: the losses stay
    within 1e-5 and 1e-4 (relative; 1e-7 and 5e-7 on a CPU), the images as _close_images says.
    """
    models = _members()
    first = 3 if not augment else 1
    torch.backends.cudnn.deterministic, saved = True, torch.backends.cudnn.deterministic
    try:
        runs = {}
        for name, flag in (("eager", False), ("eager again", False), ("graph", True)):
            hooks = _Traced(keep={first})
            cfg = _graph_cfg(augment=augment, cuda_graph=flag, checkpoint_every=1)
            runs[name] = _recover(models, cfg, hooks), hooks
    finally:
        torch.backends.cudnn.deterministic = saved
    (out_e, eager), (out_g, graph) = runs["eager"], runs["graph"]
    assert graph.rows[0] == {"graph": "captured"} and len(_losses(graph)) == 20
    early = (graph.x[first] - eager.x[first]).abs()
    if not augment:
        assert early.max() <= 1e-5
    else:
        # the yardstick: two eager runs, whose resize backward adds in a nondeterministic
        # order on CUDA (on an H200, 1.15 % of the graph's pixels moved > 1e-3 in step 1)
        noise = (runs["eager again"][1].x[first] - eager.x[first]).abs()
        share, y_share = (early > 1e-3).float().mean(), (noise > 1e-3).float().mean()
        assert share <= 2 * y_share + 0.001, (float(share), float(y_share))
    assert _losses(graph) == pytest.approx(_losses(eager), rel=1e-5 if not augment else 1e-4)
    _close_images(out_g, out_e)


@pytest.mark.parametrize("augment", [False, True])
def test_graph_resume_equals_uninterrupted(augment):
    """Under the flag: stop mid-wave, resume (with two and with one group per wave, each wave
    captured anew) against uninterrupted flagged runs, as _check_resumes says (the gathers'
    backward adds in a nondeterministic order on CUDA, as interpolate's does in the eager
    step)."""
    models = _members()
    cfg = _graph_cfg(
        iterations=12, augment=augment, checkpoint_every=5, groups_per_wave=2, cuda_graph=True
    )
    _check_resumes(*_uninterrupted_and_resumed(models, cfg), augment)


def test_graph_step_in_bf16_is_finite_and_near_the_eager_one():
    """bf16 autocast + channels_last inside the capture: finite losses, each within 2 % of the
    eager bf16 step's (the same kernels on inputs that differ by rounding)."""
    models = _members()
    runs = {}
    for flag in (False, True):
        hooks = _Traced()
        _recover(models, _graph_cfg(iterations=10, precision="bf16", cuda_graph=flag), hooks)
        runs[flag] = hooks
    eager, graph = _losses(runs[False]), _losses(runs[True])
    assert runs[True].rows[0] == {"graph": "captured"} and len(graph) == 10
    assert all(math.isfinite(v) for v in graph)
    assert graph == pytest.approx(eager, rel=0.02)
