"""Validate on the tiny preset: hard-label students (one-hot, no teacher) on the distilled and
the random-real images, the second student's baselines, the teacher's own top-1, and the
evaluation batches planned from the memory budget."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from cvdd.config import ValidateConfig, from_preset
from cvdd.layout import read_events
from cvdd.rundir import RunDir
from cvdd.train import _hard_targets


def test_hard_targets_are_the_cut_mixed_area_shares():
    x = torch.zeros(4, 1, 8, 8)
    y = torch.tensor([0, 1, 2, 3])
    gen = torch.Generator().manual_seed(0)
    xm, t = _hard_targets(x, y, 5, ValidateConfig(cutmix=True), gen)
    assert xm.shape == x.shape and t.shape == (4, 5)
    assert torch.allclose(t.sum(1), torch.ones(4)) and t[:, 4].sum() == 0
    _, t1 = _hard_targets(x, y, 5, ValidateConfig(cutmix=False), gen)
    assert torch.equal(t1, F.one_hot(y, 5).float())


def test_hard_label_students_and_teacher_top1(tmp_path, monkeypatch):
    monkeypatch.setenv("CVDD_THREADS", "1")
    from cvdd import pipeline

    cfg = from_preset(
        "tiny",
        [
            "validate.compare_eval_labels=false",
            "validate.hard_labels=true",
            "validate.epochs=1",
            "validate.students=test_tiny_cnn,convnet3",
            "validate.width=0.25",  # the quick preset's; full width spent minutes evaluating
        ],
    )
    rd = RunDir.create(tmp_path, cfg.to_dict())
    res = pipeline.run_pipeline(rd.path)
    students = json.loads((rd.path / "validate/students.json").read_text())
    keys = set(students["students"])
    assert {"distilled_hard", "random_real_hard", "distilled_bssl", "random_real_bssl"} <= keys
    assert {"distilled_hard-convnet3", "random_real_hard-convnet3"} <= keys
    assert students["students"]["distilled_hard"]["labels"] == "hard"
    assert set(res["hard_labels"]) == {"distilled", "random_real"}
    assert res["all_students"]["random_real_bssl-convnet3"] is not None
    teacher = res["teacher"]
    assert teacher["teacher"] == "test_tiny_cnn" and teacher["kind"] == "member"
    assert 0 <= teacher["top1"] <= 100 and teacher["test_images"] > 0
    assert set(teacher["members_top1"]) == {"test_tiny_cnn", "test_tiny_resnet"}
    assert res["students"] == {
        "test_tiny_cnn": res["student_top1"],
        "convnet3": res["all_students"]["distilled_bssl-convnet3"],
    }
    # CPU without a set budget: the fixed batch of 500, for every model and the teacher
    planned = students["eval_batch"]
    assert set(planned) == {"test_tiny_cnn", "convnet3", "teacher"}
    assert {e["batch_size"] for e in planned.values()} == {500}
    assert all(e["budget_source"] == "available RAM" for e in planned.values())
    logs = [e["msg"] for e in read_events(rd.path) if e["kind"] == "log"]
    assert any(m.startswith("teacher: evaluation batches of 500") for m in logs)


def test_out_of_memory_in_validate_names_both_batches():
    """The evaluation batch follows the memory budget; the training batch is the method's."""
    from cvdd.stages import validate

    plan = {"batch_size": 120, "budget_bytes": 2**30, "budget_source": "recover.memory_gb=1"}
    msg = validate._out_of_memory("distilled_bssl", 100, plan)
    assert "batches of 120" in msg and "CVDD_MEMORY_GB=0.5 python -m cvdd resume" in msg
    assert "validate.batch_size=100" in msg and "changes the results" in msg


def test_curve_points_score_a_subset_and_the_last_the_whole_test_split(monkeypatch):
    """Evaluation stays cheap with a 10,000-image test split: the curve's intermediate points
    score a strided subset of at most CURVE_IMAGES images, the final top-1 every image."""
    from cvdd import train
    from cvdd.data import load_dataset
    from cvdd.models import create_model

    data = load_dataset("builtin")
    sizes = []
    real = train.evaluate_logits
    monkeypatch.setattr(
        train,
        "evaluate_logits",
        lambda fn, k, ts, *a: (sizes.append(len(ts)), real(fn, k, ts, *a))[1],
    )
    cfg = ValidateConfig(epochs=3, eval_every=1, batch_size=10)
    imgs = data.train.load(torch.arange(20))
    res = train.train_student(
        create_model("test_tiny_cnn", num_classes=10, in_channels=1),
        imgs,
        None,
        labels=data.train.targets[:20],
        testset=data.test,
        cfg=cfg,
        mean=data.mean,
        std=data.std,
        gen=torch.Generator().manual_seed(0),
        should_stop=lambda: False,
        progress=lambda *a: None,
        checkpoint=lambda s: None,
    )
    assert sizes == [train.CURVE_IMAGES, train.CURVE_IMAGES, len(data.test)] == [1000, 1000, 10000]
    assert [c[0] for c in res["curve"]] == [1, 2, 3]


def test_the_run_forecast_counts_the_curve_subset_like_train_does():
    from cvdd import eta, train

    src = Path(eta.__file__).read_text()
    assert f"min(test_size, {train.CURVE_IMAGES})" in src
