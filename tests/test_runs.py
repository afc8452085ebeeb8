"""Run directory: events round trip, torn lines, derived status, lock, safe run ids."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from procs import HANG_S

from cvdd.eta import StageClock
from cvdd.layout import read_events
from cvdd.rundir import RunDir
from cvdd.runs import is_alive, list_runs, resolve_run, run_status
from cvdd.utils import CvddError

ROOT = Path(__file__).resolve().parent.parent


def test_events_round_trip_and_torn_line(tmp_path):
    rd = RunDir.create(tmp_path, {"ipc": 1, "data": {"dataset": "builtin"}})
    assert (rd.path / "config.json").is_file()
    rd.append_event("run_start", attempt=1)
    rd.append_event("stage_start", "squeeze")
    rd.progress("squeeze", 1, 10, {"loss": 1.0}, force=True)
    with open(rd.path / "events.jsonl", "a") as f:
        f.write('{"seq": 99, "kind": "prog')  # a writer killed mid-line
    evs = read_events(rd.path)
    assert [e["kind"] for e in evs] == ["run_start", "stage_start", "progress"]
    assert [e["seq"] for e in evs] == [0, 1, 2]
    st = run_status(rd.path)
    assert st["status"] == "crashed" and st["stage"] == "squeeze" and st["step"] == 1


def test_status_follows_lock_and_run_end(tmp_path):
    rd = RunDir.create(tmp_path, {"ipc": 1})
    assert run_status(rd.path)["status"] == "created"
    rd.acquire_lock()
    try:
        assert is_alive(rd.path) and run_status(rd.path)["status"] == "running"
        with pytest.raises(CvddError, match="already running"):
            RunDir(rd.path).acquire_lock()
        rd.append_event("run_end", status="stopped")
    finally:
        rd.release_lock()
    assert not is_alive(rd.path) and run_status(rd.path)["status"] == "stopped"


def test_a_status_probe_neither_blocks_a_starting_worker_nor_looks_like_one(tmp_path):
    """A probe holds the lock shared for an instant: a second probe during it sees no worker,
    and a worker that starts during it waits the probe out instead of failing."""
    import fcntl
    import threading

    rd = RunDir.create(tmp_path, {"ipc": 1})
    (rd.path / "worker.lock").touch()
    fd = os.open(rd.path / "worker.lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_SH)  # a probe caught mid-way
    try:
        assert not is_alive(rd.path)  # an overlapping probe does not count as a worker
        threading.Timer(0.5, fcntl.flock, (fd, fcntl.LOCK_UN)).start()
        rd.acquire_lock()  # retried until the probe let go
        assert is_alive(rd.path)
    finally:
        rd.release_lock()
        os.close(fd)


def test_runs_never_overwrite_each_other(tmp_path):
    paths = {RunDir.create(tmp_path, {"ipc": 1}).path for _ in range(5)}
    assert len(paths) == 5
    assert len(list_runs(tmp_path)) == 5


@pytest.mark.parametrize("bad", ["../x", "..", "a/b", "/etc", "", "x" * 200])
def test_run_ids_cannot_escape(tmp_path, bad):
    with pytest.raises(CvddError):
        resolve_run(tmp_path, bad)


def test_checkpoint_hash_and_corruption(tmp_path):
    rd = RunDir.create(tmp_path, {"ipc": 1})
    rd.save_checkpoint("recover", {"step": 3}, "abc")
    assert rd.load_checkpoint("recover", "abc")["step"] == 3
    with pytest.raises(CvddError, match="different config"):
        rd.load_checkpoint("recover", "zzz")
    (rd.path / "checkpoints/recover.pt").write_bytes(b"garbage")
    with pytest.raises(CvddError, match="corrupt"):
        rd.load_checkpoint("recover", "abc")


def test_artifact_before_event(tmp_path):
    rd = RunDir.create(tmp_path, {"ipc": 1})
    rel = rd.save_snapshot("recover", 5, b"\x89PNG fake", rows=[0], cols=[0], cell=4, pad=1)
    ev = read_events(rd.path)[-1]
    assert ev["kind"] == "snapshot" and ev["path"] == rel and (rd.path / rel).is_file()
    assert not list(rd.path.rglob("*.tmp"))
    json.loads((rd.path / "config.json").read_text())


# -- progress and ETA: stage-wide, never backwards -------------------------------------------


def _etas(calls, total=100):
    """StageClock over (time, step) calls; the ETA after each."""
    clock = StageClock(*calls[0])
    return [clock.update(t, s, total) for t, s in calls]


def test_eta_uses_the_rate_over_the_whole_stage():
    etas = _etas([(t, t) for t in range(0, 51)])  # one step a second
    assert etas[0] is None and etas[-1] == pytest.approx(50)
    assert all(b <= a for a, b in zip(etas[1:], etas[2:]))  # falls, never climbs


def test_eta_ignores_skipped_work_and_never_jumps_up():
    # 10 steps at 1 s, a cached member jumps 50 steps at once, then 1 s a step again
    calls = (
        [(t, t) for t in range(11)] + [(10.01, 60)] + [(10.01 + k, 60 + k) for k in range(1, 40)]
    )
    etas = _etas(calls)
    assert etas[11] == pytest.approx(40, rel=0.01)  # the rate of real work, not 60 steps in 10 s
    assert all(b <= a + 0.01 for a, b in zip(etas[11:], etas[12:]))


def test_eta_survives_a_counter_that_starts_over():
    # an older writer counted each sub-task from 1: the ETA stays at the stage's rate
    calls = [(t, t) for t in range(11)] + [(11 + k, k) for k in range(1, 11)]
    etas = _etas(calls, total=10)
    assert max(e for e in etas if e is not None) < 12  # the old formula gave 108 s here


def test_progress_of_a_real_run_never_goes_back_within_a_stage(tiny_run_dir):
    seen: dict[str, tuple[int, int]] = {}
    for e in read_events(tiny_run_dir):
        if e["kind"] == "stage_start":
            seen.pop(e["stage"], None)
        elif e["kind"] == "progress":
            step, total = seen.get(e["stage"], (0, e["total"]))
            assert e["step"] >= step and e["total"] == total, e  # validate: all students at once
            seen[e["stage"]] = (e["step"], e["total"])
    assert seen["validate"][0] == seen["validate"][1]


def test_ipc_larger_than_a_class_fails_before_any_stage_naming_the_field(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), CVDD_THREADS="1")
    cmd = [sys.executable, "-m", "cvdd", "run", "--preset", "tiny", "--set", "ipc=501"]
    out = subprocess.run(
        [*cmd, "--runs-dir", str(tmp_path)], env=env, capture_output=True, text=True, timeout=HANG_S
    )
    assert out.returncode != 0 and "only 500 training images" in out.stdout + out.stderr
    (run_dir,) = tmp_path.iterdir()
    evs = read_events(run_dir)
    assert [e["kind"] for e in evs] == ["run_start", "run_end"] and evs[-1]["field"] == "ipc"
    assert (
        json.loads((run_dir / "config.json").read_text())["meta"]["dataset"]["images_per_class"]
        == 500
    )
