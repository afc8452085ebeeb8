"""End to end on the `tiny` preset: every stage writes its outputs; stop + resume equals an
uninterrupted run; bad input ends with one clear message and leaves earlier runs alone."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cvdd.config import from_preset
from cvdd.runs import RunDir, read_events, run_status
from cvdd.utils import CvddError, StopRequested

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(ROOT), CVDD_THREADS="1")


def cli(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "-m", "cvdd", *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )


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
    from cvdd import context, runs

    orig = runs.RunDir.progress

    def progress(self, stage, step, total, metrics=None, force=False, label=""):
        orig(self, stage, step, total, metrics, force, label)
        if stage == "recover" and step == stop_at:
            self._stop_now = True

    monkeypatch.setattr(runs.RunDir, "progress", progress)
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


def _tree_digest(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file() and p.name != "worker.lock":
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def _make_imagefolder(root: Path, per_class: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in ("cat", "dog"):
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(
                    root / split / c / f"{i}.png"
                )
    return root


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--data", "/no/such/folder"], "does not exist"),
        (["--set", "ipc=0"], "ipc must be >= 1"),
        (["--set", "recover.num_experts=5"], "num_experts"),
        (
            ["--set", "squeeze.members=resnet18,nosuchnet", "--set", "relabel.teacher=resnet18"],
            "unknown model 'nosuchnet'",
        ),
        (["--preset", "nosuchpreset"], "unknown preset"),
        (["--preset", "cifar10_ipc10"], "needs a data set"),
        (["--set", "recover.lr=nan"], "finite number"),
    ],
)
def test_bad_input_fails_cleanly(tiny_run_dir, tmp_path, args, needle):
    before = _tree_digest(tiny_run_dir)
    argv = ["run", "--preset", "tiny", "--runs-dir", str(tiny_run_dir.parent)]
    if "--preset" in args:
        argv = ["run", "--runs-dir", str(tiny_run_dir.parent)]
    out = cli(*argv, *args)
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    assert needle in out.stderr and "Traceback" not in out.stderr
    assert _tree_digest(tiny_run_dir) == before


def test_ipc_larger_than_class(tmp_path):
    data = _make_imagefolder(tmp_path / "data", per_class=3)
    out = cli(
        "run",
        "--preset",
        "tiny",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--data",
        str(data),
        "--set",
        "ipc=5",
        "--set",
        "prior.source=user",
        "--set",
        'prior.values={"test_tiny_cnn": 1, "test_tiny_resnet": 2}',
    )
    assert out.returncode == 2
    assert "has only 3 training images" in out.stderr and "ipc" in out.stderr


def test_unrecognised_data_layout(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "readme.txt").write_text("hi")
    out = cli(
        "run",
        "--preset",
        "tiny",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--data",
        str(tmp_path / "junk"),
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "ImageFolder" in out.stderr or "imagefolder" in out.stderr


def test_corrupt_checkpoint_on_resume(tmp_path, monkeypatch):
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


def test_corrupt_cached_member_is_retrained_and_bad_weights_file_is_named(
    tiny_run_dir, tmp_path, monkeypatch
):
    monkeypatch.setenv("CVDD_THREADS", "1")
    from cvdd import pipeline

    cache = tiny_run_dir.parent / "_cache"
    victim = sorted((cache / "squeeze").glob("*test_tiny_cnn*.pt"))[0]
    victim.write_bytes(b"garbage")
    cfg = from_preset("tiny", [f"cache_dir={cache}"])  # the shared cache, a run of its own
    rd = RunDir.create(tmp_path / "runs", cfg.to_dict())
    pipeline.run_pipeline(rd.path)
    logs = [e.get("msg", "") for e in read_events(rd.path) if e["kind"] == "log"]
    assert any("corrupt; retraining" in m for m in logs)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"nope")
    weights = "squeeze.weights=" + json.dumps({"test_tiny_cnn": str(bad)})
    rd = RunDir.create(tmp_path / "runs", from_preset("tiny", [weights]).to_dict())
    with pytest.raises(CvddError, match=str(bad)):  # the CLI prints this message alone
        pipeline.run_pipeline(rd.path)


def test_out_of_memory_and_full_disk_messages(tmp_path, monkeypatch):
    import errno

    import torch

    from cvdd import pipeline

    for exc, needle in (
        (torch.OutOfMemoryError("CUDA out of memory"), "CVDD_MEMORY_GB"),
        (OSError(errno.ENOSPC, "No space left on device"), "disk is full"),
    ):
        rd = RunDir.create(tmp_path, from_preset("tiny").to_dict())

        def boom(ctx, h, exc=exc):
            raise exc

        monkeypatch.setattr(pipeline, "_stage_fn", lambda stage: boom)
        with pytest.raises(CvddError, match=needle):
            pipeline.run_pipeline(rd.path)
        end = read_events(rd.path)[-1]
        assert end["kind"] == "run_end" and end["status"] == "failed" and needle in end["error"]


def test_nan_loss_stops_with_advice(tmp_path, monkeypatch):
    import torch

    from cvdd import pipeline, recover

    monkeypatch.setenv("CVDD_THREADS", "1")
    rd = RunDir.create(tmp_path, from_preset("tiny").to_dict())
    real_bn = recover.bn_matching_loss
    monkeypatch.setattr(
        recover, "bn_matching_loss", lambda *a, **k: real_bn(*a, **k) * torch.tensor(float("nan"))
    )
    with pytest.raises(CvddError, match="lower recover.lr"):
        pipeline.run_pipeline(rd.path)
    assert (rd.path / "squeeze/members.json").is_file()  # earlier stages' results are kept
    assert run_status(rd.path)["status"] == "failed"


def test_kill_9_then_resume_equals_uninterrupted(tmp_path, monkeypatch):
    """A worker killed with SIGKILL mid-recover resumes from its last checkpoint, same result."""
    import signal
    import time

    sets = [
        "--set",
        "recover.iterations=60",
        "--set",
        "recover.checkpoint_every=5",
        "--set",
        "validate.compare_eval_labels=false",
        "--set",
        "validate.random_real=false",
    ]
    from cvdd import pipeline

    # the uninterrupted reference runs in this process (same config and thread count)
    monkeypatch.setenv("CVDD_THREADS", "1")
    ref = from_preset("tiny", [v for v in sets if v != "--set"])
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
    deadline = time.time() + 120
    while time.time() < deadline:  # wait for a recover checkpoint, then kill without warning
        if any(e["kind"] == "checkpoint" and e.get("stage") == "recover" for e in read_events(b)):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
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
            "recover.groups_per_step=1",
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
