"""The pre-run time estimate: stage sizes times measured per-image costs."""

from __future__ import annotations

from cvdd.config import from_preset
from cvdd.estimate import estimate_run, stage_seconds


def _cost(cfg, c=1e-3):
    return {**dict.fromkeys(cfg.squeeze.members, c), f"student:{cfg.validate.student}": c}


def test_stage_seconds_follow_the_stage_sizes():
    base = from_preset("quick", ["squeeze.source=train"])
    sizes = dict(num_classes=3, train=3000, test=600)
    s = stage_seconds(base, cost=_cost(base), **sizes)
    # squeeze trains 5 members x 3 epochs on the class-balanced cap of 2000 images
    assert abs(s["squeeze"] - 1.3 * 1e-3 * (5 * 3 * 2000 + 5 * 600 / 3)) < 0.2
    longer = from_preset("quick", ["squeeze.source=train", "recover.iterations=240"])
    assert (
        abs(stage_seconds(longer, cost=_cost(longer), **sizes)["recover"] - 2 * s["recover"])
        <= 0.15
    )
    shipped = from_preset("quick")  # loads the shipped committee: no squeeze, no prior runs
    t = stage_seconds(shipped, cost=_cost(shipped), **sizes)
    assert t["squeeze"] == t["prior"] == 0 and t["validate"] == s["validate"]
    slower = stage_seconds(base, cost=_cost(base, 2e-3), **sizes)
    assert all(abs(slower[k] - 2 * s[k]) <= 0.15 for k in s)


def test_estimate_times_the_models_here():
    cfg = from_preset("tiny")
    est = estimate_run(cfg, num_classes=10, train=300, test=100, shape=(1, 28))
    assert est["total_s"] > 0 and est["total_s"] == round(sum(est["stages"].values()), 1)
    assert "timed now on" in est["basis"] and est["device"] == "cpu"
