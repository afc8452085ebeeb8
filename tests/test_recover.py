"""Committee voting: weights, schedules, and the recover loop lowers the BN loss."""

import dataclasses
import math

import pytest
import torch

from cvdd.config import RecoverConfig
from cvdd.models import create_model
from cvdd.recover import make_groups, plan_committee, recover_images, voter_weights

torch.set_num_threads(1)
MEMBERS = ["resnet18", "resnet50", "shufflenetv2", "mobilenetv2", "densenet121"]
ALPHA = dict(resnet18=63.0, resnet50=65.3, shufflenetv2=68.5, mobilenetv2=67.6, densenet121=67.4)


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


class _Hooks:
    def __init__(self):
        self.trace_rows = []

    def should_stop(self):
        return False

    def progress(self, *a):
        pass

    def trace(self, r):
        self.trace_rows.append(r)

    def snapshot(self, *a):
        pass

    def checkpoint(self, s):
        pass


@pytest.mark.parametrize("schedule", ["enumerate", "per_iteration"])
def test_recover_lowers_bn_loss_and_stays_in_pixel_range(schedule):
    torch.manual_seed(0)
    models = {}
    for name in ("test_tiny_cnn", "test_tiny_resnet"):
        m = create_model(name, 4, 1)
        m.train()
        for _ in range(3):  # give the BN layers real running statistics
            m(torch.rand(16, 1, 12, 12) * 2 - 1)
        models[name] = m.eval().requires_grad_(False)
    groups = make_groups(4, 2, 4)
    plan = [["test_tiny_cnn", "test_tiny_resnet"]] * 2
    cfg = dataclasses.replace(
        RecoverConfig(),
        iterations=60,
        lr=0.1,
        augment=False,
        schedule=schedule,
        snapshot_every=0,
        checkpoint_every=0,
    )
    x0 = torch.randn(8, 1, 12, 12) * 2
    hooks = _Hooks()
    x = recover_images(
        x0,
        groups,
        committee=plan,
        weights=[[0.5, 0.5]] * 2,
        models=models,
        cfg=cfg,
        mean=(0.5,),
        std=(0.25,),
        gen=torch.Generator().manual_seed(1),
        hooks=hooks,
        priors={"test_tiny_cnn": 1.0, "test_tiny_resnet": 2.0},
    )
    bn = [r["bn"] for r in hooks.trace_rows]
    assert sum(bn[-5:]) / 5 < 0.7 * sum(bn[:5]) / 5
    lo, hi = (0 - 0.5) / 0.25, (1 - 0.5) / 0.25
    assert x.min() >= lo - 1e-6 and x.max() <= hi + 1e-6
    assert not torch.equal(x, x0)
