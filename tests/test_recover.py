"""Recover: committee voting, the fast step against the straightforward one, wave-size
independence, and stop + resume (also under a smaller memory budget) equal to one run."""

import dataclasses
import io
import math

import pytest
import torch

from cvdd.augment import shared_crop_flip_roll
from cvdd.bn import BNStatsCollector
from cvdd.config import RecoverConfig
from cvdd.models import create_model
from cvdd.recover.committee import (
    group_generator,
    make_groups,
    plan_committee,
    voter_weights,
    wave_votes,
)
from cvdd.recover.loop import recover_images
from cvdd.recover.reference import ReferenceCommittee
from cvdd.recover.step import augment_wave, wave_loss
from cvdd.utils import StopRequested

torch.set_num_threads(1)
MEMBERS = ["resnet18", "resnet50", "shufflenetv2", "mobilenetv2", "densenet121"]
ALPHA = dict(resnet18=63.0, resnet50=65.3, shufflenetv2=68.5, mobilenetv2=67.6, densenet121=67.4)
MEAN, STD = (0.5,), (0.25,)
TINY = ("test_tiny_cnn", "test_tiny_resnet")


def test_prior_voter_is_softmax_over_temperature():
    g = torch.Generator().manual_seed(0)
    w = voter_weights([63.0, 65.3], "prior", 5.0, g)
    e1, e2 = math.exp(63.0 / 5), math.exp(65.3 / 5)
    assert w == pytest.approx([e1 / (e1 + e2), e2 / (e1 + e2)])
    assert voter_weights([1.0, 50.0], "equal", 5.0, g) == [0.5, 0.5]
    r = voter_weights([1.0, 2.0, 3.0], "random", 5.0, g)
    assert sum(r) == pytest.approx(1.0) and len(set(r)) == 3
    # a lower temperature sharpens the vote
    assert (
        voter_weights([60.0, 65.0], "prior", 1.0, g)[1]
        > voter_weights([60.0, 65.0], "prior", 10.0, g)[1]
    )


def test_schedules_follow_spec():
    g = torch.Generator().manual_seed(0)
    assert plan_committee(MEMBERS, ALPHA, 1, 2, "auto", (), g) == [["shufflenetv2", "mobilenetv2"]]
    ten = plan_committee(MEMBERS, ALPHA, 10, 2, "auto", (), g)
    assert len({tuple(p) for p in ten}) == 10  # every pair once (method.md §5.4 setting 5)
    fifty = plan_committee(MEMBERS, ALPHA, 50, 2, "auto", (), g)
    assert len(fifty) == 50 and all(len(set(p)) == 2 for p in fifty)
    fixed = plan_committee(MEMBERS, ALPHA, 3, 2, "fixed", ("resnet18", "densenet121"), g)
    assert fixed == [["resnet18", "densenet121"]] * 3
    assert plan_committee(["resnet18"], ALPHA, 4, 1, "auto", (), g) == [["resnet18"]] * 4


# ---------------------------------------------------------------------------------------------
# a tiny committee and a recorder for the loop's hooks


def _committee(num_classes: int = 4) -> dict:
    torch.manual_seed(0)
    models = {}
    for name in TINY:
        m = create_model(name, num_classes, 1)
        m.train()
        for _ in range(3):  # give the BN layers real running statistics
            m(torch.rand(16, 1, 12, 12) * 2 - 1)
        models[name] = m.eval().requires_grad_(False)
    return models


class _Hooks:
    """Records what the loop reports; `stop_at` asks for a stop once that step is done."""

    def __init__(self, stop_at: int | None = None):
        self.rows, self.snaps, self.states, self.done = [], [], [], 0
        self.stop_at = stop_at

    def should_stop(self):
        return self.stop_at is not None and self.done == self.stop_at

    def progress(self, step, total, metrics):
        self.done = step

    def trace(self, r):
        self.rows.append(r)

    def snapshot(self, step, images):
        self.snaps.append((step, images))

    def checkpoint(self, s):
        buf = io.BytesIO()  # what the stage does: through torch.save and a weights-only load
        torch.save(s, buf)
        self.states.append(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))


def _setup(num_classes=4, ipc=3, per_group=2, **over):
    models = _committee(num_classes)
    groups = make_groups(num_classes, ipc, per_group)
    plan = [list(TINY), [TINY[0]], [TINY[1]]]
    committee = [plan[g.ipc_idx % 3] for g in groups]  # waves mix committees
    weights = [[0.3, 0.7] if len(c) == 2 else [1.0] for c in committee]
    base = dict(iterations=6, lr=0.1, jitter=2, snapshot_every=0, checkpoint_every=0)
    cfg = dataclasses.replace(RecoverConfig(), **{**base, **over})
    images = (
        torch.rand(num_classes * ipc, 1, 12, 12, generator=torch.Generator().manual_seed(3)) * 255
    ).to(torch.uint8)
    return images, groups, dict(committee=committee, weights=weights, models=models, cfg=cfg)


def _run(images, groups, kw, hooks=None, state=None, **over):
    kw = {**kw, "cfg": dataclasses.replace(kw["cfg"], **over)}
    return recover_images(
        images,
        groups,
        **kw,
        mean=MEAN,
        std=STD,
        gen=torch.Generator().manual_seed(1),
        hooks=hooks or _Hooks(),
        state=state,
        priors={TINY[0]: 1.0, TINY[1]: 2.0},
    )


@pytest.mark.parametrize("schedule", ["enumerate", "per_iteration"])
def test_recover_lowers_bn_loss(schedule):
    images, groups, kw = _setup(iterations=60, augment=False, schedule=schedule, trace_every=1)
    hooks = _Hooks()
    out = _run(images, groups, kw, hooks)
    bn = [r["bn"] for r in hooks.rows if r["step"] <= 60]  # the first wave
    assert sum(bn[-5:]) / 5 < 0.7 * sum(bn[:5]) / 5
    assert out.dtype == torch.uint8 and out.shape == images.shape and not torch.equal(out, images)


@pytest.mark.parametrize("over", [{}, {"schedule": "per_iteration", "voter": "random"}])
def test_images_do_not_depend_on_the_wave_size(over):
    """Each group's own stream and Adam rows: 1, 2 or all groups per wave give the same pixels."""
    images, groups, kw = _setup(num_classes=5, **over)  # sizes 2, 2, 1: waves of equal size
    outs = [_run(images, groups, kw, groups_per_wave=n) for n in (1, 2, 0)]
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


@pytest.mark.parametrize("resume_per_wave", [0, 1])
def test_stop_mid_wave_and_resume_equals_uninterrupted(resume_per_wave):
    """Stop inside the second wave; resume with the same waves or with one group per wave."""
    images, groups, kw = _setup(groups_per_wave=3, checkpoint_every=4, snapshot_every=5)
    full = _run(images, groups, kw)
    hooks = _Hooks(stop_at=9)
    with pytest.raises(StopRequested):
        _run(images, groups, kw, hooks)
    state = hooks.states[-1]
    assert state["done"] == 9 and state["current"]["step"] == 3 and len(state["finished"]) == 3
    resumed = _run(images, groups, kw, state=state, groups_per_wave=resume_per_wave or 3)
    assert torch.equal(full, resumed)
    # also from the periodic checkpoint taken before the stop (step 8)
    again = _run(images, groups, kw, state=hooks.states[-2], groups_per_wave=resume_per_wave or 3)
    assert torch.equal(full, again)


def test_trace_every_k_steps_and_snapshots_hold_only_the_grid():
    images, groups, kw = _setup(num_classes=12, ipc=11, per_group=12, iterations=4)
    hooks = _Hooks()
    _run(images, groups, kw, hooks, trace_every=3, snapshot_every=4, groups_per_wave=4)
    steps = [r["step"] for r in hooks.rows]
    assert steps == sorted(steps) and 3 in steps and 4 in steps and 1 not in steps
    assert set(hooks.rows[0]["members"]) <= set(TINY)
    step, grid = hooks.snaps[0]
    assert grid.shape == (10 * 10, 1, 12, 12) and grid.dtype == torch.uint8


# ---------------------------------------------------------------------------------------------
# the fast step against the straightforward one


def test_fast_step_matches_straightforward_step():
    """Loss and pixel gradients of one wave (mixed committees, augmentation) against the
    per-group, per-BN-hook reference (method.md §5.3), fp32 on CPU."""
    images, groups, kw = _setup(ipc=3, per_group=4, jitter=3)
    models, cfg = kw["models"], kw["cfg"]
    wave = groups  # 3 groups of 4 images, committees (both), (cnn), (resnet)
    x0 = torch.randn(12, 1, 12, 12) * 1.5
    targets = torch.tensor([g.classes for g in wave])
    voters = [kw["committee"][g.group] for g in wave]
    weights = [kw["weights"][g.group] for g in wave]

    x = x0.clone().requires_grad_(True)
    cols = {m: BNStatsCollector(model) for m, model in models.items()}
    gens = [group_generator(7, g.group) for g in wave]
    votes = wave_votes(voters, weights, targets, list(models))
    loss, parts = wave_loss(
        augment_wave(x, gens, cfg), votes, 3, models=models, collectors=cols, cfg=cfg
    )
    loss.backward()
    for c in cols.values():
        c.remove()

    ref = ReferenceCommittee(models, cfg)
    ref_loss, ref_grad = 0.0, []
    for i, g in enumerate(wave):
        xi = x0[4 * i : 4 * i + 4].clone().requires_grad_(True)
        x_aug = shared_crop_flip_roll(xi, group_generator(7, g.group), cfg.jitter)
        li, _ = ref.group_loss(x_aug, targets[i], voters[i], weights[i])
        li.backward()
        ref_loss += li.item()
        ref_grad.append(xi.grad)
    ref.remove()
    assert loss.item() == pytest.approx(ref_loss, rel=1e-6)
    torch.testing.assert_close(x.grad, torch.cat(ref_grad), rtol=1e-5, atol=1e-8)
    assert parts["members"][TINY[0]]["groups"] == 2 and parts["members"][TINY[1]]["groups"] == 2


def test_engine_run_matches_straightforward_loop():
    """A few steps of recover_images against the plain per-group loop with its own Adam."""
    images, groups, kw = _setup(iterations=5)
    out = _run(images, groups, kw)
    cfg, models = kw["cfg"], kw["models"]
    seed = int(torch.randint(2**62, (1,), generator=torch.Generator().manual_seed(1)))
    ref = ReferenceCommittee(models, cfg)
    m, s = torch.tensor(MEAN).view(1, -1, 1, 1), torch.tensor(STD).view(1, -1, 1, 1)
    bounds = ((0 - m) / s, (1 - m) / s)
    expect = images.clone()
    for g in groups:
        x = ((images[g.indices].float() / 255 - m) / s).requires_grad_(True)
        opt = torch.optim.Adam([x], lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8)
        gen = group_generator(seed, g.group)
        for step in range(cfg.iterations):
            for pg in opt.param_groups:
                pg["lr"] = 0.5 * (1 + math.cos(math.pi * step / cfg.iterations)) * cfg.lr
            ref.step(
                x,
                torch.tensor(g.classes),
                kw["committee"][g.group],
                kw["weights"][g.group],
                opt=opt,
                gen=gen,
                bounds=bounds,
            )
        expect[g.indices] = ((x.detach() * s + m) * 255).round().clamp(0, 255).to(torch.uint8)
    ref.remove()
    assert (out.int() - expect.int()).abs().max() <= 1
    assert (out != expect).float().mean() < 0.01
