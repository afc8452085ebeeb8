"""End to end on the `tiny` preset: every stage writes its outputs; stop + resume, and kill -9 +
resume, equal an uninterrupted run; option combinations run through. Bad input: test_failures.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cvdd.config import from_preset
from cvdd.layout import read_events
from cvdd.rundir import RunDir
from cvdd.runs import run_status
from cvdd.utils import StopRequested

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(ROOT), CVDD_THREADS="1")


def test_every_stage_writes_its_outputs(tiny_run_dir):
    d = tiny_run_dir
    for rel in (
        "config.json",
        "events.jsonl",
        "squeeze/members.json",
        "prior/priors.json",
        "init/images.npz",
        "init/random_real.npz",
        "recover/committee.json",
        "recover/trace.jsonl",
        "recover/images.npz",
        "relabel/soft_labels.npz",
        "analysis/soft_labels.json",
        "analysis/bn_stats.json",
        "analysis/diversity.json",
        "validate/students.json",
        "export/labels.csv",
        "export/soft_labels.npz",
        "export/config.json",
        "result.json",
    ):
        assert (d / rel).is_file(), rel
    evs = read_events(d)
    ends = [e["stage"] for e in evs if e["kind"] == "stage_end"]
    assert ends == ["squeeze", "prior", "init", "recover", "relabel", "validate"]
    assert evs[-1]["kind"] == "run_end" and evs[-1]["status"] == "done"
    assert run_status(d)["status"] == "done"
    snaps = [e for e in evs if e["kind"] == "snapshot"]
    assert snaps and snaps[0]["step"] == 0 and all((d / s["path"]).is_file() for s in snaps)
    res = json.loads((d / "result.json").read_text())
    assert 0 <= res["student_top1"] <= 100
    assert 0 <= res["baselines"]["random_real"]["student_top1"] <= 100
    assert set(res["labels"]) == {"bssl", "eval"}
    pngs = sorted((d / "export/images").rglob("*.png"))
    assert len(pngs) == 10 * 2  # 10 classes x IPC 2, lossless
    with np.load(d / "recover/images.npz") as z:
        from PIL import Image

        first = np.asarray(Image.open(d / "export/images/000_T-shirt_top/000.png"))
        assert np.array_equal(first, z["images"][0, 0])
    committee = json.loads((d / "recover/committee.json").read_text())
    assert all(abs(sum(g["weights"]) - 1) < 1e-6 for g in committee["groups"])


def test_bssl_labels_differ_from_eval_labels(tiny_run_dir):
    with np.load(tiny_run_dir / "relabel/soft_labels.npz") as z:
        assert z["probs_bssl"].shape == z["probs_eval"].shape
        assert not np.allclose(z["probs_bssl"], z["probs_eval"], atol=1e-4)
        assert np.allclose(z["probs_bssl"].sum(1), 1, atol=1e-4)


def test_recover_lowers_bn_loss_in_a_real_run(tiny_run_dir):
    lines = (tiny_run_dir / "recover/trace.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert len(rows) == 6
    bn = json.loads((tiny_run_dir / "analysis/bn_stats.json").read_text())

    def gap(source: str) -> float:
        return sum(
            x["sources"][source]["mean_gap"] + x["sources"][source]["var_gap"] for x in bn["layers"]
        )

    syn, init = gap("synthetic"), gap("init")
    assert syn < init  # recover pulled the synthetic batch statistics towards the running ones


def _stop_at_recover_step(monkeypatch, stop_at: int) -> None:
    """Make the next in-process run request a stop (as SIGTERM would) at a recover step."""
    from cvdd import context, rundir

    orig = rundir.RunDir.progress

    def progress(self, stage, step, total, metrics=None, force=False, label=""):
        orig(self, stage, step, total, metrics, force, label)
        if stage == "recover" and step == stop_at:
            self._stop_now = True

    monkeypatch.setattr(rundir.RunDir, "progress", progress)
    monkeypatch.setattr(
        context.Context, "should_stop", lambda self: getattr(self.rd, "_stop_now", False)
    )


def _run_in_process(runs_root: Path, stop_at: int | None, monkeypatch) -> Path:
    """Run the tiny preset in-process; with stop_at, request a stop at that recover step."""
    from cvdd import pipeline

    cfg = from_preset(
        "tiny", ["recover.iterations=8", "recover.checkpoint_every=100", "recover.snapshot_every=4"]
    )
    rd = RunDir.create(runs_root, cfg.to_dict())
    if stop_at is not None:
        _stop_at_recover_step(monkeypatch, stop_at)
        with pytest.raises(StopRequested):
            pipeline.run_pipeline(rd.path)
        monkeypatch.undo()
        assert run_status(rd.path)["status"] == "stopped"
        assert (rd.path / "checkpoints/recover.pt").is_file()
    pipeline.run_pipeline(rd.path)
    return rd.path


def test_stop_and_resume_equals_uninterrupted(tmp_path, monkeypatch):
    monkeypatch.setenv("CVDD_THREADS", "1")
    a = _run_in_process(tmp_path, None, monkeypatch)
    b = _run_in_process(tmp_path, 3, monkeypatch)
    for rel in ("recover/images.npz", "relabel/soft_labels.npz"):
        with np.load(a / rel) as za, np.load(b / rel) as zb:
            for k in za.files:
                assert np.array_equal(za[k], zb[k]), (rel, k)
    sa = json.loads((a / "validate/students.json").read_text())["students"]
    sb = json.loads((b / "validate/students.json").read_text())["students"]
    assert {k: v["top1"] for k, v in sa.items()} == {k: v["top1"] for k, v in sb.items()}
    starts = [e for e in read_events(b) if e["kind"] == "run_start"]
    assert [e["attempt"] for e in starts] == [1, 2]


def test_corrupt_checkpoint_on_resume(tmp_path, monkeypatch, cli):
    """A stopped run whose recover checkpoint got corrupted: resume names the file and the fix."""
    monkeypatch.setenv("CVDD_THREADS", "1")
    from cvdd import pipeline

    rd = RunDir.create(tmp_path, from_preset("tiny", ["recover.iterations=8"]).to_dict())
    _stop_at_recover_step(monkeypatch, 2)
    with pytest.raises(StopRequested):
        pipeline.run_pipeline(rd.path)
    monkeypatch.undo()  # no more stop requests
    monkeypatch.setenv("CVDD_THREADS", "1")
    ck = rd.path / "checkpoints/recover.pt"
    ck.write_bytes(ck.read_bytes()[:100])  # truncated, as by a full disk or a crash
    before = (rd.path / "recover/committee.json").read_bytes()
    out = cli("resume", str(rd.path))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "recover.pt is corrupt" in out.stderr and "delete it" in out.stderr
    assert (rd.path / "recover/committee.json").read_bytes() == before
    ck.unlink()  # the named fix works: the stage restarts from its beginning
    assert pipeline.run_pipeline(rd.path)["student_top1"] is not None


def test_kill_9_then_resume_equals_uninterrupted(tmp_path, monkeypatch, cli):
    """A worker killed with SIGKILL mid-recover resumes from its last checkpoint, same result."""
    import signal
    import time

    overrides = [
        "recover.iterations=60",
        "recover.checkpoint_every=5",
        "validate.compare_eval_labels=false",
        "validate.random_real=false",
    ]
    sets = [a for o in overrides for a in ("--set", o)]
    from cvdd import pipeline

    # the uninterrupted reference runs in this process (same config and thread count)
    monkeypatch.setenv("CVDD_THREADS", "1")
    ref = from_preset("tiny", overrides)
    a = RunDir.create(tmp_path, ref.to_dict()).path
    pipeline.run_pipeline(a)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cvdd",
            "run",
            "--preset",
            "tiny",
            "--runs-dir",
            str(tmp_path),
            *sets,
        ],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    b = Path(proc.stdout.readline().split("run dir:", 1)[1].strip())
    deadline = time.time() + 600  # a loaded machine: the deadline only guards a hang
    while not any(
        e["kind"] == "checkpoint" and e.get("stage") == "recover" for e in read_events(b)
    ):
        assert proc.poll() is None and time.time() < deadline, "no recover checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGSTOP)  # frozen where it is, so the events show where it died
    events = read_events(b)
    proc.send_signal(signal.SIGKILL)  # then killed without warning
    proc.wait()
    stages = [(e["kind"], e.get("stage")) for e in events if e["kind"].startswith("stage_")]
    assert stages[-1] == ("stage_start", "recover"), stages  # the kill landed inside recover
    steps = [e["step"] for e in events if e["kind"] == "progress" and e.get("stage") == "recover"]
    assert steps and steps[-1] < 60, steps
    assert run_status(b)["status"] == "crashed"
    out = cli("resume", str(b))
    assert out.returncode == 0, out.stderr[-2000:]
    with np.load(a / "recover/images.npz") as za, np.load(b / "recover/images.npz") as zb:
        assert np.array_equal(za["images"], zb["images"])
    assert run_status(b)["status"] == "done"


@pytest.mark.parametrize(
    "overrides",
    [
        [
            "init.method=noise",
            "recover.schedule=per_iteration",
            "recover.voter=random",
            "relabel.teacher=committee",
            "relabel.mode=eval",
        ],
        [
            "init.method=real",
            "prior.source=user",
            'prior.values={"test_tiny_cnn": 60, "test_tiny_resnet": 70}',
            "recover.schedule=fixed",
            "recover.num_experts=1",
            "recover.groups_per_wave=1",
            "recover.classes_per_group=4",
        ],
    ],
)
def test_option_combinations_run_end_to_end(tmp_path, monkeypatch, overrides):
    monkeypatch.setenv("CVDD_THREADS", "1")
    from cvdd import pipeline

    cfg = from_preset("tiny", ["validate.compare_eval_labels=false", *overrides])
    rd = RunDir.create(tmp_path, cfg.to_dict())
    res = pipeline.run_pipeline(rd.path)
    assert res["student_top1"] is not None
    committee = json.loads((rd.path / "recover/committee.json").read_text())
    if "prior.source=user" in overrides:
        assert json.loads((rd.path / "prior/priors.json").read_text())["values"] == {
            "test_tiny_cnn": 60,
            "test_tiny_resnet": 70,
        }
        # fixed schedule, one expert: the member with the higher prior, weight 1
        assert all(
            g["members"] == ["test_tiny_resnet"] and g["weights"] == [1.0]
            for g in committee["groups"]
        )
        assert len(committee["groups"]) == 2 * 3  # ipc 2 x ceil(10 / 4) class chunks
