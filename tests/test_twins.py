"""SRe2L++ twins: the twin's config, its `twin_of` record, the one-click start, and the analysis
pages that show a CV-DD run beside its twin without any configuration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import streamlit as st
from procs import HANG_S
from streamlit.testing.v1 import AppTest

from cvdd import jobs, layout, twins
from cvdd.config import from_preset
from cvdd.rundir import RunDir
from cvdd.runs import run_status
from cvdd.utils import CvddError

# one worker runs both files, so the shared voted run (conftest) is made once
pytestmark = pytest.mark.xdist_group("voted_run")

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app" / "main.py")
ENV = dict(os.environ, PYTHONPATH=str(ROOT), CVDD_THREADS="1")


def _cli(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "cvdd", *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


# -- the twin's config ------------------------------------------------------------------------


def test_twin_config_is_the_run_with_a_committee_of_one():
    cfg = from_preset("quick", ["seed=7", "validate.students=resnet18,convnet3"])
    twin = twins.twin_config(cfg, {"resnet18": 60.0, "resnet50": 65.0})
    assert twin.method == "sre2l++" and cfg.method == "cvdd"
    assert twin.squeeze.members == ("resnet18",)  # the relabel teacher
    assert twin.recover.num_experts == 1 and twin.recover.schedule == "fixed"
    assert twin.relabel.teacher == "resnet18"
    assert twin.prior.source == "user" and twin.prior.values == {"resnet18": 60.0}
    a, b = cfg.to_dict(), twin.to_dict()
    for key in ("seed", "ipc", "data", "validate", "init", "relabel"):
        assert a[key] == b[key], key
    same = ("iterations", "lr", "bn_loss_weight", "classes_per_group", "augment", "jitter")
    assert all(a["recover"][k] == b["recover"][k] for k in same)
    assert {k: v for k, v in a["squeeze"].items() if k != "members"} == {
        k: v for k, v in b["squeeze"].items() if k != "members"
    }


def test_twin_of_a_committee_teacher_takes_the_best_prior_member():
    cfg = from_preset("tiny", ["relabel.teacher=committee"])
    priors = {"test_tiny_cnn": 1.0, "test_tiny_resnet": 3.0}
    assert twins.twin_config(cfg, priors).squeeze.members == ("test_tiny_resnet",)
    assert twins.twin_config(cfg, None).squeeze.members == ("test_tiny_cnn",)
    assert twins.twin_config(cfg, None).prior.source == "compute"  # nothing to reuse


def test_an_sre2l_run_has_no_twin():
    cfg = from_preset("tiny", ["squeeze.members=test_tiny_cnn", "recover.num_experts=1"])
    with pytest.raises(CvddError, match="committee of one"):
        twins.twin_config(cfg)


def test_find_twin_in_either_direction():
    docs = {
        "20260101-000000-a": {"meta": {}},
        "20260101-000001-b": {"meta": {"twin_of": "20260101-000000-a"}},
        "20260101-000002-c": {"meta": {"twin_of": "20260101-000000-a"}},
        "20260101-000003-d": None,
    }
    assert twins.find_twin("20260101-000000-a", docs) == "20260101-000002-c"  # the newest
    assert twins.find_twin("20260101-000001-b", docs) == "20260101-000000-a"
    assert twins.find_twin("20260101-000003-d", docs) is None
    assert twins.twin_of([1]) is None and twins.twin_of({"meta": {"twin_of": 3}}) is None


# -- a real CV-DD run and its real twin --------------------------------------------------------


@pytest.fixture(scope="module")
def pair(voted_run_dir) -> tuple[Path, Path]:
    """The shared finished tiny CV-DD run (two students), and its twin made the way the button
    makes it, except that the worker runs here instead of in the background."""
    cvdd_run = voted_run_dir
    twin = twins.create_twin(cvdd_run)  # the button then queues it (jobs.resume_job)
    assert run_status(twin)["status"] == "created"
    _cli("resume", str(twin))
    return cvdd_run, twin


def test_create_twin_records_twin_of_and_keeps_the_budgets(pair):
    cvdd_run, twin = pair
    doc = RunDir.open(twin).read_config()
    assert doc["meta"]["twin_of"] == cvdd_run.name
    src = RunDir.open(cvdd_run).read_config()["config"]
    cfg = doc["config"]
    assert cfg["squeeze"]["members"] == ["test_tiny_cnn"] and cfg["recover"]["num_experts"] == 1
    assert cfg["seed"] == src["seed"] and cfg["ipc"] == src["ipc"]
    assert cfg["recover"]["iterations"] == src["recover"]["iterations"]
    assert cfg["validate"] == src["validate"]
    res = json.loads((twin / layout.RESULT).read_text())
    assert res["method"] == "sre2l++" and set(res["students"]) == {"test_tiny_cnn", "convnet3"}
    assert twins.find_twin(cvdd_run.name, {p.name: _config(p) for p in (cvdd_run, twin)}) == (
        twin.name
    )


def _config(p: Path) -> dict:
    return json.loads((p / layout.CONFIG).read_text())


def _render(page: str, rid: str) -> AppTest:
    st.cache_data.clear()
    st.cache_resource.clear()
    at = AppTest.from_file(APP, default_timeout=HANG_S)
    at.query_params["run"] = rid
    at.switch_page(f"views/{page}.py")
    at.run()
    bad = [e.value for kind in ("exception", "error", "warning") for e in getattr(at, kind)]
    assert not bad, (page, bad)
    return at


@pytest.mark.parametrize("page", ["bn", "diversity", "soft_labels", "compare"])
def test_pages_show_a_run_beside_its_twin(pair, monkeypatch, page):
    cvdd_run, twin = pair
    monkeypatch.setenv("CVDD_RUNS_DIR", str(cvdd_run.parent))
    at = _render(page, cvdd_run.name)
    text = "\n".join(str(c.value) for c in at.caption)
    frames = [d.value for d in at.dataframe]
    if page != "compare":
        assert twin.name in text  # the header line names the twin
    if page == "bn":
        runs = [f for f in frames if "run" in f.columns]
        assert len(runs) == 1 and len(runs[0]) == 2  # the run and its twin, side by side
        assert any("BN loss" in c.value for c in at.caption)
        assert any(m.value.startswith("- Where a member voted") for m in at.markdown)
    elif page == "diversity":
        labels = {m.label for m in at.metric}
        assert {"CV-DD: mean cosine", "SRe²L++: mean cosine"} <= labels
        assert "more diverse" in text
    elif page == "soft_labels":
        assert any(len(f) == 2 and "teacher" in f.columns for f in frames)
    else:
        # the runs table (the shipped reference's table, in the benchmarks expander, comes first)
        table = next(f for f in frames if "run" in f.columns and "twin" in f.columns)
        assert set(table["run"]) == {cvdd_run.name, twin.name}  # the twin came along
        students = next(f for f in frames if "convnet3" in f.columns)
        assert set(students["run"]) == {cvdd_run.name, twin.name}


def test_the_twin_button_starts_one(pair, tmp_path, monkeypatch):
    cvdd_run, _ = pair
    root = tmp_path / "runs"
    root.mkdir()
    import shutil

    shutil.copytree(cvdd_run, root / cvdd_run.name, ignore=shutil.ignore_patterns("checkpoints"))
    monkeypatch.setenv("CVDD_RUNS_DIR", str(root))
    monkeypatch.setattr(jobs, "resume_job", lambda path, wait=True: True)  # no worker here
    at = _render("diversity", cvdd_run.name)
    at.button(key="twin_start_div").click().run()
    assert not at.exception, [e.value for e in at.exception]
    made = [p for p in root.iterdir() if p.name != cvdd_run.name]
    assert len(made) == 1 and _config(made[0])["meta"]["twin_of"] == cvdd_run.name
    assert any(made[0].name in str(c.value) for c in at.caption)  # it is shown as the twin
