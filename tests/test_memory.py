"""The recover memory planner: wave splitting, budgets, a run kept under a small budget (measured
with autograd's saved-tensor hooks), the out-of-memory message, and resume under less memory;
the evaluation batch planned from the same budget."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from cvdd import memory
from cvdd.config import RecoverConfig, from_preset
from cvdd.layout import MEMORY_PLAN, read_events
from cvdd.models import create_model
from cvdd.recover import plan as recover_plan
from cvdd.recover import step as recover_step
from cvdd.recover import waves as recover_waves
from cvdd.recover.committee import make_groups
from cvdd.recover.loop import recover_images
from cvdd.rundir import RunDir
from cvdd.utils import CvddError, StopRequested

torch.set_num_threads(1)
TINY = ("test_tiny_cnn", "test_tiny_resnet")


def test_split_waves_keeps_sizes_apart_and_order():
    assert recover_waves.split_waves([2, 2, 1, 2, 2, 1], 2) == [[0, 1], [3, 4], [2, 5]]
    assert recover_waves.split_waves([3, 3, 3], 0) == [[0, 1, 2]]
    per, waves, peak = recover_plan.plan_waves([10, 10, 10, 10], [1] * 4, budget=25)
    assert per == 2 and waves == [[0, 1], [2, 3]] and peak == 20
    per, waves, _ = recover_plan.plan_waves([10] * 4, [1] * 4, budget=5)  # one group never fits: 1
    assert per == 1 and len(waves) == 4
    assert recover_plan.plan_waves([10] * 4, [1] * 4, budget=5, forced=3)[0] == 3


def test_environment_budget_wins_over_the_config(monkeypatch):
    cpu = torch.device("cpu")
    budget, held, source = memory.memory_budget(cpu, 0.5)
    assert budget == int(0.5 * memory.GIB * memory.HEADROOM) and "recover.memory_gb" in source
    monkeypatch.setenv("CVDD_MEMORY_GB", "0.25")
    budget, _, source = memory.memory_budget(cpu, 0.5)
    assert budget == int(0.25 * memory.GIB * memory.HEADROOM) and "CVDD_MEMORY_GB" in source
    monkeypatch.delenv("CVDD_MEMORY_GB")
    assert memory.memory_budget(cpu, 0)[2] == "available RAM"


def test_workers_sharing_a_device_each_plan_from_their_share(monkeypatch):
    """Two workers allowed on one GPU (CVDD_MAX_WORKERS=2) must not each plan to fill its free
    memory; on the CPU likewise with the available RAM."""
    gib = memory.GIB
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda d=None: 1 * gib)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda d=None: 2 * gib)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d=None: (9 * gib, 80 * gib))
    monkeypatch.setattr(memory, "_available_ram", lambda: 20 * gib)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert memory.memory_budget(cuda, 0) == (
        int(10 * gib * memory.HEADROOM),
        gib,
        "free device memory",
    )
    monkeypatch.setenv("CVDD_MAX_WORKERS", "2,cpu=4")
    budget, held, source = memory.memory_budget(cuda, 0)
    assert budget == int(5 * gib * memory.HEADROOM) and held == gib and "2 workers" in source
    assert memory.memory_budget(cuda, 3)[0] == int(2 * gib * memory.HEADROOM)  # 3 GiB - held
    assert memory.memory_budget(cpu, 0)[0] == int(5 * gib * memory.HEADROOM)
    monkeypatch.setenv("CVDD_MAX_WORKERS", "0")  # no limit: no share to plan from
    assert memory.memory_budget(cpu, 0)[0] == int(20 * gib * memory.HEADROOM)


def _setup(**over):
    torch.manual_seed(0)
    models = {}
    for name in TINY:
        m = create_model(name, 4, 1)
        m.train()
        for _ in range(3):
            m(torch.rand(16, 1, 16, 16) * 2 - 1)
        models[name] = m.eval().requires_grad_(False)
    groups = make_groups(4, 6, 4)  # 6 groups of 4 images
    cfg = dataclasses.replace(
        RecoverConfig(),
        iterations=3,
        lr=0.1,
        jitter=2,
        snapshot_every=0,
        checkpoint_every=0,
        **over,
    )
    images = torch.randint(0, 256, (24, 1, 16, 16), dtype=torch.uint8)
    kw = dict(committee=[list(TINY)] * 6, weights=[[0.5, 0.5]] * 6, models=models, cfg=cfg)
    return images, groups, kw


class _SavedPerStep:
    """Bytes autograd keeps for backward during each step (distinct storages)."""

    def __init__(self):
        self.now, self.per_step, self.plans = {}, [], []

    def pack(self, t):
        s = t.untyped_storage()
        self.now[s.data_ptr()] = s.nbytes()
        return t

    def should_stop(self):  # called at the start of every step
        self.now = {}
        return False

    def progress(self, step, total, metrics):  # after the step's backward
        self.per_step.append(sum(self.now.values()))

    def trace(self, r):
        pass

    def snapshot(self, *a):
        pass

    def checkpoint(self, s):
        pass


def _measured_run(images, groups, kw):
    rec = _SavedPerStep()
    with torch.autograd.graph.saved_tensors_hooks(rec.pack, lambda t: t):
        out = recover_images(
            images,
            groups,
            **kw,
            mean=(0.5,),
            std=(0.25,),
            gen=torch.Generator().manual_seed(1),
            hooks=rec,
            on_plan=rec.plans.append,
        )
    return out, rec


def test_planner_keeps_a_run_under_a_small_memory_budget():
    images, groups, kw = _setup()
    big, rec_big = _measured_run(images, groups, kw)
    plan = rec_big.plans[0]
    assert plan.waves == 1 and plan.groups_per_wave == 6  # gigabytes of RAM: one wave
    group_cost = 4 * (plan.state_bytes_per_image + sum(plan.bytes_per_image.values()))
    gb = 2.5 * group_cost / memory.HEADROOM / memory.GIB  # room for two groups, not three
    kw["cfg"] = dataclasses.replace(kw["cfg"], memory_gb=gb)
    small, rec = _measured_run(images, groups, kw)
    plan = rec.plans[0]
    assert plan.groups_per_wave == 2 and plan.waves == 3 and plan.fits
    assert plan.budget_source.startswith("recover.memory_gb=")
    assert max(rec.per_step) <= plan.budget_bytes  # measured, not only planned
    assert max(rec_big.per_step) > plan.budget_bytes  # one wave would not have fitted
    # the probe's per-image bytes predict the real steps' saved bytes (within 25 %)
    kept = 8 * sum(plan.bytes_per_image.values())
    assert 0.75 * kept <= max(rec.per_step) <= 1.25 * kept
    assert torch.equal(big, small)  # and the images do not depend on it


def test_out_of_memory_names_the_memory_budget(monkeypatch):
    images, groups, kw = _setup()

    def boom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(recover_step, "augment_wave", boom)
    with pytest.raises(CvddError, match="recover.memory_gb") as e:
        recover_images(
            images,
            groups,
            **kw,
            mean=(0.5,),
            std=(0.25,),
            gen=torch.Generator(),
            hooks=_SavedPerStep(),
        )
    assert "CVDD_MEMORY_GB=" in str(e.value) and "resume" in str(e.value)


def _tiny_run(tmp_path, monkeypatch, stop_at=None, resume_gb=None):
    """The tiny preset in-process; optionally stopped at a recover step, then resumed under
    CVDD_MEMORY_GB=resume_gb."""
    from cvdd import context, pipeline, rundir

    cfg = from_preset("tiny", ["recover.checkpoint_every=100", "validate.epochs=1"])
    rd = RunDir.create(tmp_path, cfg.to_dict())
    if stop_at is not None:
        orig = rundir.RunDir.progress

        def progress(self, stage, step, total, metrics=None, force=False, label=""):
            orig(self, stage, step, total, metrics, force, label)
            self._stop_now = self._stop_now or (stage == "recover" and step == stop_at)

        monkeypatch.setattr(rundir.RunDir, "_stop_now", False, raising=False)
        monkeypatch.setattr(rundir.RunDir, "progress", progress)
        monkeypatch.setattr(context.Context, "should_stop", lambda self: self.rd._stop_now)
        with pytest.raises(StopRequested):
            pipeline.run_pipeline(rd.path)
        monkeypatch.undo()
        monkeypatch.setenv("CVDD_THREADS", "1")
        monkeypatch.setenv("CVDD_MEMORY_GB", str(resume_gb))
    pipeline.run_pipeline(rd.path)
    monkeypatch.delenv("CVDD_MEMORY_GB", raising=False)
    return rd.path


def test_resume_under_a_smaller_budget_continues_the_same_run(tmp_path, monkeypatch):
    """tiny preset: 2 groups in one wave; stopped mid-wave, resumed with room for one group."""
    monkeypatch.setenv("CVDD_THREADS", "1")
    a = _tiny_run(tmp_path, monkeypatch)
    plan_a = json.loads((a / MEMORY_PLAN).read_text())
    assert plan_a["waves"] == 1 and plan_a["groups_per_wave"] == 2
    per_group = 10 * (plan_a["state_bytes_per_image"] + sum(plan_a["bytes_per_image"].values()))
    gb = 1.5 * per_group / memory.HEADROOM / memory.GIB
    b = _tiny_run(tmp_path, monkeypatch, stop_at=3, resume_gb=gb)
    plan_b = json.loads((b / MEMORY_PLAN).read_text())
    assert plan_b["groups_per_wave"] == 1 and plan_b["budget_source"].startswith("CVDD_MEMORY_GB")
    with np.load(a / "recover/images.npz") as za, np.load(b / "recover/images.npz") as zb:
        assert np.array_equal(za["images"], zb["images"])
    logs = [e["msg"] for e in read_events(b) if e["kind"] == "log" and e.get("stage") == "recover"]
    assert sum(m.startswith("memory plan:") for m in logs) == 2  # one line per attempt


def test_eval_batch_follows_the_budget_and_is_clamped(monkeypatch):
    monkeypatch.delenv("CVDD_MEMORY_GB", raising=False)
    cpu, shape = torch.device("cpu"), (1, 16, 16)
    model = create_model("test_tiny_cnn", 4, 1).eval()

    def plan(gb, **kw):
        return memory.plan_eval_batch(model, shape, device=cpu, memory_gb=gb, **kw)

    base = plan(0)
    assert base["batch_size"] == memory.EVAL_BATCH_RAM  # CPU, no budget set: the fixed batch
    assert base["budget_source"] == "available RAM"
    bpi = base["bytes_per_image"]
    assert plan(64)["batch_size"] == memory.EVAL_BATCH_MAX  # a set budget may go above it
    gb = 100 * bpi / memory.HEADROOM / memory.GIB  # room for 100 images
    assert 99 <= plan(gb)["batch_size"] <= 100
    assert 9 <= plan(gb / 10)["batch_size"] <= 10
    assert plan(gb, reserve_bytes=50 * bpi)["batch_size"] <= 50
    assert plan(1e-12)["batch_size"] == 1
    monkeypatch.setenv("CVDD_MEMORY_GB", str(gb / 10))
    assert plan(0)["batch_size"] <= 10


def test_eval_bytes_per_image_on_cpu_from_the_leaf_modules():
    """Conv 1 -> 8 channels then an in-place ReLU at 16 x 16: the conv's input + output is the
    largest call, its output the largest output; the ReLU shares its storage."""
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(inplace=True))
    px = 16 * 16
    got = memory.plan_eval_batch(model, (1, 16, 16), device=torch.device("cpu"), memory_gb=1)
    assert got["bytes_per_image"] == 4 * px * (1 + 8) + 4 * px * 8 + memory.EVAL_INPUT_BYTES * px
    assert "leaf modules" in got["measured_by"]


def test_evaluation_does_not_depend_on_its_batch():
    from cvdd.data.base import ImageSet
    from cvdd.train import evaluate

    torch.manual_seed(0)
    model = create_model("test_tiny_resnet", 4, 1)
    for _ in range(3):  # running statistics other than the initial ones
        model(torch.rand(16, 1, 16, 16) * 2 - 1)
    test = ImageSet(
        torch.randint(0, 4, (60,)), torch.randint(0, 256, (60, 1, 16, 16), dtype=torch.uint8)
    )
    small = evaluate(model, test, (0.5,), (0.25,), torch.device("cpu"), 7)
    assert small == evaluate(model, test, (0.5,), (0.25,), torch.device("cpu"), 500)
    assert 0 < small[0] < 100  # neither all right nor all wrong: the comparison means something
