"""cvdd.analysis on a real tiny run: BN gaps per recover group on the members that voted for it
and on the one that did not, students of several architectures, and the export's metadata."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from cvdd import analysis, layout
from cvdd.bn import BNStatsCollector, bn_matching_loss
from cvdd.config import from_preset
from cvdd.models import create_model
from cvdd.utils import CvddError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from app.shaping import bn_groups  # noqa: E402 -- after the sys.path line

# one worker runs both files, so the shared voted run (conftest) is made once
pytestmark = pytest.mark.xdist_group("voted_run")

torch.set_num_threads(1)


@pytest.fixture
def voted_run(voted_run_dir) -> Path:
    return voted_run_dir


def _doc(run: Path, rel: str) -> dict:
    return json.loads((run / rel).read_text())


def test_bn_groups_split_voted_and_not_voted(voted_run):
    doc = _doc(voted_run, layout.BN_GROUPS)
    groups = doc["groups"]
    assert len(groups) == doc["groups_total"] == 2  # IPC 2 x 10 classes per group
    assert [len(g["voters"]) for g in groups] == [1, 1]
    assert {g["voters"][0] for g in groups} == {"test_tiny_cnn", "test_tiny_resnet"}
    for name, m in doc["members"].items():
        assert m["voted"] == [name in g["voters"] for g in groups]
        assert sorted(m["voted"]) == [False, True]  # one group each way
        assert len(m["loss"]["init"]) == len(m["loss"]["synthetic"]) == 2
        for split in ("voted", "not_voted"):
            part = m["layer_gaps"][split]
            assert part["groups"] == 1
            assert len(part["init"]["mean_gap"]) == len(m["layers"])


def test_loss_is_recovers_bn_term_summed_over_layers(voted_run):
    """With one group per split, the layer gaps of a group add up to its loss (first layer
    times the multiplier): the file reports one quantity, recover's, at two resolutions."""
    doc = _doc(voted_run, layout.BN_GROUPS)
    mult = doc["first_bn_multiplier"]
    for m in doc["members"].values():
        for split, want in (("voted", True), ("not_voted", False)):
            i = m["voted"].index(want)
            for src in ("init", "synthetic"):
                g = m["layer_gaps"][split][src]
                per_layer = [a + b for a, b in zip(g["mean_gap"], g["var_gap"])]
                total = mult * per_layer[0] + sum(per_layer[1:])
                assert total == pytest.approx(m["loss"][src][i], rel=1e-5)


def test_recover_lowers_the_bn_loss_of_the_members_that_voted(voted_run):
    doc = _doc(voted_run, layout.BN_GROUPS)
    for name, m in doc["members"].items():
        i = m["voted"].index(True)
        assert m["loss"]["synthetic"][i] < m["loss"]["init"][i], name
    end = next(
        e
        for e in layout.read_events(voted_run)
        if e["kind"] == "stage_end" and e["stage"] == "relabel"
    )
    metrics = end["metrics"]
    assert metrics["bn_loss_voted_synthetic"] < metrics["bn_loss_voted_init"]
    assert "bn_loss_not_voted_init" in metrics and "bn_loss_not_voted_synthetic" in metrics


def test_findings_are_computed_from_the_data(voted_run):
    doc = _doc(voted_run, layout.BN_GROUPS)
    text = bn_groups.findings(doc)
    assert text[0].startswith("Where a member voted, recover lowered its BN loss for each")
    assert text[1].startswith("Where a member did not vote")
    assert "layer" in text[2]
    # the same sentence turns when the data does: swap before and after for one member
    name = next(iter(doc["members"]))
    loss = doc["members"][name]["loss"]
    loss["init"], loss["synthetic"] = loss["synthetic"], loss["init"]
    assert "and not for " + name in bn_groups.findings(doc)[0]


def test_group_bn_gaps_matches_the_recover_loss():
    torch.manual_seed(0)
    model = create_model("test_tiny_resnet", 4, 1).eval()
    x = torch.randn(12, 1, 16, 16)
    out = analysis.group_bn_gaps(model, x, [[0, 1, 2, 3], [4, 5, 6, 7, 8, 9, 10, 11]], 10.0)
    col = BNStatsCollector(model)
    with torch.no_grad():
        model(x[4:])
    expected = float(bn_matching_loss(col, 10.0)[0])
    col.remove()
    assert out["loss"][1] == pytest.approx(expected, rel=1e-5)
    assert len(out["mean_gap"]) == 2 and len(out["mean_gap"][0]) == 3  # groups x BN layers


def test_analysed_groups_are_capped_and_spread():
    committee = {
        "groups": [
            {"group": g, "ipc_idx": g // 10, "classes": [g % 10], "members": ["a"]}
            for g in range(500)
        ]
    }
    groups = analysis._analysed_groups(committee, ipc=50)
    assert len(groups) == analysis._MAX_GROUPS
    assert groups[0]["group"] == 0 and groups[-1]["group"] == 499
    assert len({g["ipc_idx"] for g in groups}) == 50  # every IPC index keeps a group
    assert groups[1]["rows"] == [groups[1]["classes"][0] * 50 + groups[1]["ipc_idx"]]


def test_students_of_several_architectures(voted_run):
    res = _doc(voted_run, layout.RESULT)
    assert set(res["students"]) == {"test_tiny_cnn", "convnet3"}
    assert res["students"]["test_tiny_cnn"] == res["student_top1"]
    stu = _doc(voted_run, layout.STUDENTS)["students"]
    extra = stu["distilled_bssl-convnet3"]
    assert extra["student"] == "convnet3" and extra["data"] == "distilled"
    assert 0 <= extra["top1"] <= 100
    assert set(res["labels"]) == {"bssl", "eval"}  # the extra student is not a labelling


def test_convnet3_is_a_student_without_batchnorm():
    for in_channels, size in ((1, 28), (3, 32)):
        model = create_model("convnet3", 7, in_channels, width=0.25)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
        x = torch.randn(2, in_channels, size, size)
        assert model.forward_features(x).shape == (2, model.num_features)
        model(x).sum().backward()
        assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(CvddError, match="no BatchNorm") as info:
        from_preset("tiny", ["squeeze.members=test_tiny_cnn,convnet3"])
    assert info.value.field == "squeeze.members"
    cfg = from_preset("tiny", ["validate.students=convnet3"])
    assert cfg.validate.students == ("convnet3",)


def test_export_carries_the_data_sets_metadata(voted_run):
    doc = _doc(voted_run, layout.export_path("config.json"))
    meta = doc["dataset"]
    assert meta["channels"] == 1 and meta["image_size"] == 28 and meta["ipc"] == 2
    assert len(meta["mean"]) == len(meta["std"]) == 1 and meta["num_classes"] == 10
    assert meta["class_names"][0] == "T-shirt/top" and meta["num_images"] == 20
    readme = (voted_run / layout.export_path("README.txt")).read_text()
    assert "28 x 28 px" in readme and str(meta["mean"]) in readme and "T-shirt/top" in readme
