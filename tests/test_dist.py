"""torchrun: two gloo CPU processes make the committee and the distilled images of one process,
bit for bit, in one run directory written by rank 0; a stopped two-process run resumes in one
process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from procs import HANG_S, ROOT, TORCHRUN, env, images, run

ARGS = ["run", "--preset", "tiny", "--seed", "3", "--set", "validate.compare_eval_labels=false"]


def _runs(root: Path) -> set[Path]:
    return {p for p in root.iterdir() if not p.name.startswith("_")} if root.exists() else set()


def _events(run_dir: Path) -> list[dict]:
    return [json.loads(s) for s in (run_dir / "events.jsonl").read_text().splitlines()]


def test_two_ranks_make_the_images_of_one_process(tmp_path):
    # two roots, so that neither run finds the other's cached committee or priors
    run([sys.executable, "-m", "cvdd", *ARGS, "--runs-dir", str(tmp_path / "a")])
    (one,) = _runs(tmp_path / "a")
    out = run([*TORCHRUN, "2", "-m", "cvdd", *ARGS, "--runs-dir", str(tmp_path / "b")])
    (two,) = _runs(tmp_path / "b")  # exactly one run directory
    assert len(list((tmp_path / "b/_cache/prior").iterdir())) == 2  # rank 0 cached both
    assert out.stdout.strip().splitlines()[-1] == str(two.resolve())
    assert out.stdout.count("run dir:") == 1  # rank 0 alone prints
    assert np.array_equal(images(one), images(two))
    assert not np.array_equal(images(two), np.load(two / "init/images.npz")["images"])
    evs = _events(two)
    starts = [e for e in evs if e["kind"] == "run_start"]
    assert len(starts) == 1 and starts[0]["world"] == 2  # one writer: rank 0
    assert "world" not in _events(one)[0]
    assert evs[-1]["kind"] == "run_end" and evs[-1]["status"] == "done"
    assert (two / "result.json").is_file()
    # prior's members and validate's students, split across the ranks: the same scores
    priors = [json.loads((d / "prior/priors.json").read_text())["values"] for d in (one, two)]
    assert priors[0] == priors[1] and len(priors[0]) == 2
    top1 = [
        {
            k: s["top1"]
            for k, s in json.loads((d / "validate/students.json").read_text())["students"].items()
        }
        for d in (one, two)
    ]
    assert top1[0] == top1[1] and len(top1[0]) >= 2
    # squeeze's members, one a rank: the weights and test scores of one process
    members = [json.loads((d / "squeeze/members.json").read_text())["members"] for d in (one, two)]
    assert [(m["name"], m["test_top1"]) for m in members[0]] == [
        (m["name"], m["test_top1"]) for m in members[1]
    ]
    for m in members[1]:
        a, b = (torch.load(tmp_path / r / "_cache" / m["file"]) for r in "ab")
        assert all(torch.equal(a["state_dict"][k], v) for k, v in b["state_dict"].items())
    (split,) = [e["msg"] for e in evs if "members split over" in e.get("msg", "")]
    assert "rank 0 made test_tiny_cnn " in split and "rank 1 made test_tiny_resnet " in split


@pytest.mark.slow
def test_a_stopped_two_rank_run_resumes_in_one_process(tmp_path):
    # 4 groups, one per wave: each rank finishes its first group, then the stop comes
    sets = [
        "--set",
        "ipc=4",
        "--set",
        "recover.iterations=200",
        "--set",
        "recover.groups_per_wave=1",
    ]
    root = tmp_path / "runs"
    ref = run([sys.executable, "-m", "cvdd", *ARGS, *sets, "--runs-dir", str(root)])
    ref_dir = Path(ref.stdout.strip().splitlines()[-1])
    argv = [*TORCHRUN, "2", "-m", "cvdd", *ARGS, *sets, "--runs-dir", str(root)]
    p = subprocess.Popen(argv, cwd=ROOT, env=env(), stdout=subprocess.PIPE, text=True)
    deadline = time.time() + HANG_S
    while True:  # stop once rank 0 is into its second group
        assert p.poll() is None and time.time() < deadline, "rank 0 never reached step 250"
        new = _runs(root) - {ref_dir}
        evs = (
            _events(next(iter(new))) if new and (next(iter(new)) / "events.jsonl").exists() else []
        )
        if any(
            e["kind"] == "progress" and e.get("stage") == "recover" and e["step"] > 250 for e in evs
        ):
            break
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=HANG_S)
    (run_dir,) = _runs(root) - {ref_dir}
    assert _events(run_dir)[-1].get("status") == "stopped"
    ck = torch.load(run_dir / "checkpoints/recover.pt", weights_only=True)
    assert len(ck["finished"]) >= 2 and ck["current"] is None  # a group of each rank
    run([sys.executable, "-m", "cvdd", "resume", str(run_dir)])
    assert np.array_equal(images(ref_dir), images(run_dir))


def test_a_job_with_cvdd_nproc_runs_on_torchrun(tmp_path, monkeypatch):
    from cvdd import jobs
    from cvdd.config import from_preset
    from cvdd.runs import run_status

    monkeypatch.setenv("CVDD_MAX_WORKERS", "0")
    cfg = from_preset("tiny", ["seed=3", "recover.iterations=2", "validate.epochs=1"])
    run_dir = jobs.start_job(cfg, tmp_path, {jobs.NPROC_ENV: 2, "CVDD_THREADS": 1}, wait=False)
    deadline = time.time() + HANG_S
    while run_status(run_dir)["status"] not in ("done", "failed", "crashed", "stopped"):
        assert time.time() < deadline, (run_dir / "worker.log").read_text()[-3000:]
        time.sleep(0.2)
    assert run_status(run_dir)["status"] == "done", (run_dir / "worker.log").read_text()[-3000:]
    assert [e.get("world") for e in _events(run_dir) if e["kind"] == "run_start"] == [2]


def test_gpu_count_reads_the_override(monkeypatch):
    from cvdd import jobs

    monkeypatch.setenv("CVDD_GPUS", "3")
    assert jobs.gpu_count() == 3


@pytest.mark.parametrize("gpus", ["0", "1", "4"])
def test_new_run_offers_several_gpus_only_where_there_are(tmp_path, monkeypatch, gpus):
    st = pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("CVDD_RUNS_DIR", str(tmp_path))
    monkeypatch.setenv("CVDD_GPUS", gpus)
    st.cache_data.clear()  # the app caches the GPU count
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=HANG_S).run()
    assert not at.exception, [e.value for e in at.exception]
    shown = [c for c in at.checkbox if c.key == "nr_all_gpus"]
    assert len(shown) == (gpus == "4")
    if shown:
        assert "Use all 4 GPUs" in shown[0].label
