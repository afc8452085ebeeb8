"""The CUDA-graph recover step (recover.cuda_graph, cvdd/recover/graph.py), as far as a CPU can
check it: the static augmentation against the eager one, the streams it draws from, the Adam
state it converts, the warm-up that must leave no trace, and the loop run with the same static
step uncaptured (what a CPU does with it), stop and resume included. tests/test_gpu.py checks
the capture itself."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from test_recover import MEAN, STD, TINY, _Hooks
from test_recover import _run as run_recover

import cvdd.recover.loop as recover_mod
from cvdd.augment import shared_crop_flip_roll
from cvdd.bn import BNStatsCollector
from cvdd.config import RecoverConfig, RunConfig, result_settings
from cvdd.models import create_model
from cvdd.recover.committee import group_generator, make_groups, wave_votes
from cvdd.recover.graph import (
    CAPTURED,
    N_PARAMS,
    GraphStep,
    _axis,
    capturable_adam,
    draw_params,
    graph_mode,
    static_augment,
)
from cvdd.recover.step import augment_wave, wave_loss
from cvdd.recover.waves import open_wave, pixel_bounds
from cvdd.utils import CvddError, StopRequested, use_cuda_device

torch.set_num_threads(1)
# static_augment against shared_crop_flip_roll on values in [-2, 2] (normalised pixels): at
# most 3.6e-7 measured (1.5 float32 steps at 2), from the order in which interpolate's compiled
# kernel rounds; exact where the crop is the whole image
CLOSE = 1e-6


def _eager_from_params(x, p):
    """The eager augmentation from drawn numbers: slice, F.interpolate, flip, roll."""
    top, left, ch, cw, flip, dy, dx = p
    out = x[:, :, top : top + ch, left : left + cw]
    if out.shape[-2:] != x.shape[-2:]:
        out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
    out = out.flip(3) if flip else out
    return torch.roll(out, shifts=(dy, dx), dims=(2, 3))


@pytest.mark.parametrize("shape,jitter", [((32, 32), 4), ((12, 12), 2), ((16, 24), 0)])
def test_drawn_numbers_are_the_eager_ones_and_use_the_stream_alike(shape, jitter):
    """Step after step, draw_params leaves each stream where shared_crop_flip_roll leaves it,
    and its numbers rebuild the eager augmentation bit for bit."""
    x = torch.rand(3, 2, *shape, generator=torch.Generator().manual_seed(0))
    for seed in range(20):
        eager, drawn = group_generator(seed, 0), group_generator(seed, 0)
        for _ in range(5):
            want = shared_crop_flip_roll(x, eager, jitter)
            p = draw_params(drawn, *shape, jitter)
            assert torch.equal(eager.get_state(), drawn.get_state())
            assert len(p) == N_PARAMS and torch.equal(_eager_from_params(x, p), want)


@pytest.mark.parametrize("shape", [(32, 32), (12, 12), (16, 24)])
def test_flip_and_roll_are_exact(shape):
    """The whole image as the crop: flip and roll alone, per group, equal the eager ops."""
    h, w = shape
    x = torch.randn(4 * 3, 3, h, w, generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(2)
    params = [[0, 0, h, w, int(torch.rand(1, generator=gen) < 0.5)] for _ in range(4)]
    params = [p + torch.randint(0, 5, (2,), generator=gen).tolist() for p in params]
    out = static_augment(x, torch.tensor(params), 4)
    want = torch.cat([_eager_from_params(xg, p) for xg, p in zip(x.view(4, 3, 3, h, w), params)])
    assert torch.equal(out, want)


@pytest.mark.parametrize("size", [12, 32, 224])
def test_resize_weights_are_interpolates_bit_for_bit(size):
    """Each crop length's source weights, read out of F.interpolate with one-hot rows, equal
    the ones the gathers use (the values then differ only in how the sums round)."""
    z = torch.zeros(1, dtype=torch.long)
    for n in range(1, size):
        eye = torch.eye(n).view(n, 1, 1, n)
        want = F.interpolate(eye, size=(1, size), mode="bilinear", align_corners=False)[:, 0, 0]
        i0, i1, w0, w1 = (t[0] for t in _axis(z, torch.tensor([n]), z, None, size))
        got = torch.zeros(n, size)
        got[i0, torch.arange(size)] += w0
        got[i1, torch.arange(size)] += w1
        assert torch.equal(got, want), n


@pytest.mark.parametrize("shape", [(32, 32), (12, 12), (16, 24)])
def test_crop_and_resize_are_close_to_interpolate(shape):
    """Random crops of random images: within CLOSE of shared_crop_flip_roll, values and the
    gradient the pixels get (the backward of the gathers against interpolate's)."""
    worst, grad_worst = 0.0, 0.0
    for seed in range(100):
        x = torch.rand(4, 3, *shape, generator=torch.Generator().manual_seed(seed)) * 4 - 2
        up = torch.randn(4, 3, *shape, generator=torch.Generator().manual_seed(seed + 1000))
        xe, xs = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        want = shared_crop_flip_roll(xe, group_generator(seed, 3), 4)
        p = draw_params(group_generator(seed, 3), *shape, 4)
        got = static_augment(xs, torch.tensor([p]), 1)
        (want * up).sum().backward()
        (got * up).sum().backward()
        worst = max(worst, (got - want).abs().max().item())
        grad_worst = max(grad_worst, (xs.grad - xe.grad).abs().max().item())
    assert worst <= CLOSE and grad_worst <= 10 * CLOSE


def test_a_wave_augments_as_its_groups_would_alone():
    """Several groups, each from its own stream: augment_wave's result, to CLOSE."""
    x = torch.rand(5 * 4, 3, 32, 32, generator=torch.Generator().manual_seed(4)) * 4 - 2
    cfg = RecoverConfig()
    want = augment_wave(x, [group_generator(9, g) for g in range(5)], cfg)
    gens = [group_generator(9, g) for g in range(5)]
    params = torch.tensor([draw_params(g, 32, 32, cfg.jitter) for g in gens])
    torch.testing.assert_close(static_augment(x, params, 5), want, rtol=0, atol=CLOSE)


# ---------------------------------------------------------------------------------------------
# Adam, warm-up, mode


def test_capturable_adam_carries_the_state_over():
    """From a used Adam: the same moments and step (float32, as a resume record needs), and
    the same next step; from an unused one: the explicit state its first step would make."""
    x = torch.randn(6, 3, 4, 4, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    ref = x.detach().clone().requires_grad_(True)
    opts = [torch.optim.Adam([t], lr=0.25, betas=(0.5, 0.9), eps=1e-8) for t in (x, ref)]
    grads = torch.randn(4, *x.shape, generator=torch.Generator().manual_seed(1))
    for g in grads[:2]:
        for t, opt in zip((x, ref), opts):
            t.grad = g.clone()
            opt.step()
    conv = capturable_adam(opts[0], x)
    st, old = conv.state[x], opts[1].state[ref]
    assert st["step"].dtype == torch.float32 and float(st["step"]) == 2
    assert torch.equal(st["exp_avg"], old["exp_avg"]) and torch.equal(
        st["exp_avg_sq"], old["exp_avg_sq"]
    )
    for g in grads[2:]:  # lr 0.25 is exact in float32: the tensor lr gives the same steps
        for t, opt in zip((x, ref), (conv, opts[1])):
            t.grad = g.clone()
            opt.step()
    assert torch.equal(x, ref)
    y = torch.zeros(3, requires_grad=True)
    fresh = capturable_adam(torch.optim.Adam([y], lr=0.1), y).state[y]
    assert (
        float(fresh["step"]) == 0 and not fresh["exp_avg"].any() and not fresh["exp_avg_sq"].any()
    )


def _committee(num_classes=4) -> dict:
    torch.manual_seed(0)
    models = {}
    for name in TINY:
        m = create_model(name, num_classes, 1)
        m.train()
        for _ in range(3):  # real running statistics
            m(torch.rand(16, 1, 12, 12) * 2 - 1)
        models[name] = m.eval().requires_grad_(False)
    return models


def test_warm_up_leaves_pixels_state_and_streams_as_they_were():
    """A resumed wave (Adam moments present): building the step runs WARM_UP steps, then the
    wave reads exactly as before and no stream moved."""
    models = _committee()
    groups = make_groups(4, 2, 2)
    images = (torch.rand(8, 1, 12, 12, generator=torch.Generator().manual_seed(3)) * 255).byte()
    cfg = dataclasses.replace(RecoverConfig(), iterations=10, jitter=2)
    w = open_wave(groups, images, None, 5, cfg=cfg, mean=MEAN, std=STD, device=torch.device("cpu"))
    w.opt.state[w.x] = dict(
        step=torch.tensor(3.0),
        exp_avg=torch.randn_like(w.x),
        exp_avg_sq=torch.rand_like(w.x),
    )
    before = w.state(3)
    bounds = pixel_bounds(MEAN, STD, torch.device("cpu"))
    cols = {m: BNStatsCollector(model) for m, model in models.items()}
    votes = wave_votes([list(TINY)] * 2, [[0.5, 0.5]] * 2, w.targets, list(models))
    kw = dict(models=models, collectors=cols, cfg=cfg)
    try:
        step = GraphStep(w, lambda xa: wave_loss(xa, votes, 2, **kw), cfg, bounds)
    finally:
        for c in cols.values():
            c.remove()
    after = w.state(3)
    assert after.keys() == before.keys()
    for k in ("x", "exp_avg", "exp_avg_sq"):
        assert torch.equal(after[k], before[k])
    assert all(torch.equal(a, b) for a, b in zip(after["gens"], before["gens"]))
    assert float(w.opt.state[w.x]["step"]) == 3 and not step.bad and w.x.grad is None


def test_mode_fails_on_cpu_and_falls_back_for_per_iteration():
    cfg = dataclasses.replace(RecoverConfig(), cuda_graph=True)
    assert graph_mode(RecoverConfig(), torch.device("cpu")) == ""
    with pytest.raises(CvddError, match="recover.cuda_graph needs a CUDA device") as e:
        graph_mode(cfg, torch.device("cpu"))
    assert e.value.field == "recover.cuda_graph"
    assert graph_mode(cfg, torch.device("cuda")) == CAPTURED
    per = dataclasses.replace(cfg, schedule="per_iteration")
    assert graph_mode(per, torch.device("cuda")).startswith("eager: schedule=per_iteration")


def test_the_flag_is_a_typed_execution_setting():
    """It changes images only to float rounding, as the wave size does: cached results (the
    priors) stay valid with or without it."""
    cfg = RunConfig().replace(["recover.cuda_graph=true"])
    assert cfg.recover.cuda_graph is True and RunConfig.from_dict(cfg.to_dict()) == cfg
    assert result_settings(cfg.recover) == result_settings(RunConfig().recover)


# ---------------------------------------------------------------------------------------------
# the loop with the static step (uncaptured, as a CPU runs it)


@pytest.fixture
def uncaptured(monkeypatch):
    """The flag honoured on a CPU (its mode as on CUDA): the loop builds GraphStep, which runs
    uncaptured there."""
    as_on_cuda = lambda cfg, device: graph_mode(cfg, torch.device("cuda"))  # noqa: E731
    monkeypatch.setattr(recover_mod, "graph_mode", as_on_cuda)


def _setup(**over):
    """3 IPC x 2 groups of 2 classes; each IPC index its own committee, so waves mix them."""
    models = _committee()
    groups = make_groups(4, 3, 2)
    plan = [list(TINY), [TINY[0]], [TINY[1]]]
    committee = [plan[g.ipc_idx] for g in groups]
    weights = [[0.3, 0.7] if len(c) == 2 else [1.0] for c in committee]
    base = dict(iterations=6, lr=0.1, jitter=2, snapshot_every=0, checkpoint_every=0)
    cfg = dataclasses.replace(RecoverConfig(), **{**base, **over})
    images = (torch.rand(12, 1, 12, 12, generator=torch.Generator().manual_seed(3)) * 255).byte()
    return images, groups, dict(committee=committee, weights=weights, models=models, cfg=cfg)


def _run(setup, hooks=None, state=None, **over):
    """recover_images on `setup` (_setup's), as tests/test_recover.py runs it."""
    return run_recover(*setup, hooks=hooks, state=state, **over)


def test_the_flag_on_a_cpu_fails_before_any_hook_goes_on():
    setup = _setup()
    with pytest.raises(CvddError) as e:
        _run(setup, cuda_graph=True)
    assert e.value.field == "recover.cuda_graph"
    models = setup[2]["models"].values()
    assert not any(m._forward_hooks for model in models for m in model.modules())


@pytest.mark.parametrize("augment", [False, True])
def test_static_step_matches_the_eager_step(uncaptured, augment):
    """Without augmentation only the learning rate differs (float32 in a tensor, a double in
    the eager step): pixels within 1e-5 mid-run; with it, the resize's rounding as well. On
    these tiny models both give the eager run's images and losses."""
    setup = _setup(augment=augment, trace_every=1)
    runs = {}
    for flag in (False, True):
        hooks, stopped = _Hooks(), _Hooks(stop_at=4)
        out = _run(setup, hooks, cuda_graph=flag)
        with pytest.raises(StopRequested):
            _run(setup, stopped, cuda_graph=flag)
        runs[flag] = out, [r for r in hooks.rows if "step" in r], stopped.states[-1]["current"]
    (out_e, rows_e, cur_e), (out_g, rows_g, cur_g) = runs[False], runs[True]
    torch.testing.assert_close(cur_g["x"], cur_e["x"], rtol=0, atol=1e-5)
    assert torch.equal(out_g, out_e)
    assert [r["step"] for r in rows_g] == [r["step"] for r in rows_e]
    for a, b in zip(rows_g, rows_e):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)


def test_trace_names_the_mode_once(uncaptured):
    hooks = _Hooks()
    _run(_setup(), hooks, cuda_graph=True)
    assert hooks.rows[0] == {"graph": CAPTURED}
    assert sum("graph" in r for r in hooks.rows) == 1
    setup, per = _setup(schedule="per_iteration", voter="random"), _Hooks()
    out = _run(setup, per, cuda_graph=True)
    assert per.rows[0]["graph"].startswith("eager: schedule=per_iteration")
    assert torch.equal(out, _run(setup))  # the eager step itself


@pytest.mark.parametrize("per_wave", [3, 1])
def test_resume_under_the_flag_equals_uninterrupted(uncaptured, per_wave):
    """Stop inside the second wave; resume (the same waves, or one group per wave) from the
    stop and from the periodic checkpoint before it: pixel for pixel."""
    setup = _setup(groups_per_wave=3, checkpoint_every=4, cuda_graph=True)
    full = _run(setup)
    hooks = _Hooks(stop_at=9)
    with pytest.raises(StopRequested):
        _run(setup, hooks)
    assert hooks.states[-1]["current"]["step"] == 3
    for state in hooks.states[-2:]:
        assert torch.equal(_run(setup, state=state, groups_per_wave=per_wave), full)


@pytest.mark.parametrize("first", [False, True])
def test_resume_in_the_other_mode(uncaptured, first):
    """A checkpoint of either mode resumes in the other (the record is the same): without
    augmentation the eager run's images."""
    setup = _setup(groups_per_wave=3, checkpoint_every=4, augment=False)
    full = _run(setup)
    hooks = _Hooks(stop_at=9)
    with pytest.raises(StopRequested):
        _run(setup, hooks, cuda_graph=first)
    cur = hooks.states[-1]["current"]
    assert cur["exp_avg"].device.type == "cpu" and cur["exp_avg"].shape == cur["x"].shape
    assert torch.equal(_run(setup, state=hooks.states[-1], cuda_graph=not first), full)


@pytest.mark.parametrize(
    "name, current, index", [("cuda", 2, 2), ("cuda:1", 0, 1), ("cuda:0", 3, 0)]
)
def test_a_cuda_worker_makes_its_device_current_by_index(monkeypatch, name, current, index):
    """torch.cuda.set_device refuses torch.device('cuda') (no index), which is what
    `--device cuda` resolves to: the worker passes an index, the current one for plain 'cuda'.
    The stand-in set_device applies torch's own index check, so a device without one fails."""
    from torch.cuda._utils import _get_device_index

    seen = []
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: seen.append(_get_device_index(d)))
    assert use_cuda_device(name) == index and seen == [index]
    with pytest.raises(ValueError, match="specified index"):
        torch.cuda.set_device(torch.device("cuda"))  # what the worker did before
