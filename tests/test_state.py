"""What the UI polls, without a browser: the shared readers of app/state.py (tailed JSON lines,
read-only cached arrays), the 'starting' status of a spawned worker, and a runs list that
never raises on a damaged folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import streamlit as st

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from app import shaping, state  # noqa: E402 -- after the sys.path line
from cvdd import jobs, layout, rundir, runs  # noqa: E402
from cvdd.status import SPAWN_GRACE_S  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_caches():
    st.cache_data.clear()
    st.cache_resource.clear()
    yield


def _append(path: Path, recs: list[dict], torn: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in recs) + torn)


def _events(n0: int, n: int, stage: str = "recover") -> list[dict]:
    return [
        {"seq": i, "t": 1000.0 + i, "kind": "progress", "stage": stage, "step": i, "total": 99}
        for i in range(n0, n0 + n)
    ]


def test_event_tail_folds_only_appended_lines_and_restarts_on_replace(tmp_path):
    p = tmp_path / layout.EVENTS
    full = state._Tail(str(p), "kind", runs.fold_events, keep=True)
    lean = state._Tail(str(p), "kind", runs.fold_events, keep=False)
    _append(p, [{"kind": "run_start", "t": 999.0}] + _events(0, 3), torn='{"kind": "pro')
    recs, fold = full.read()
    assert len(recs) == 4 and fold["step"] == 2 and fold["n"] == 4
    assert lean.read() == ([], fold)  # the same fold, without keeping the records
    _append(p, [], torn='gress"}\n')  # the torn line completes: a record without a stage
    _append(p, _events(3, 2) + [{"kind": "stage_end", "stage": "recover", "t": 2000.0}])
    recs, fold2 = full.read()
    assert fold2 == runs.fold_events(layout.read_events(tmp_path)) == lean.read()[1]
    assert len(recs) == 8 and fold2["stages_done"] == ["recover"] and fold["step"] == 2
    assert runs.run_status(tmp_path, folded=fold2)["status"] == "crashed"
    tmp = tmp_path / "e.tmp"  # another tool replaces the file with a shorter one
    tmp.write_text(json.dumps({"kind": "run_end", "status": "stopped", "t": 5.0}) + "\n")
    os.replace(tmp, p)
    for tail in (full, lean):
        fold3 = tail.read()[1]
        assert fold3["n"] == 1 and fold3["stages_done"] == []
        assert runs.run_status(tmp_path, folded=fold3)["status"] == "stopped"


def test_trace_tail_matches_a_full_parse_after_a_resume(tmp_path):
    p = tmp_path / layout.TRACE

    def rec(step: int, v: float) -> dict:
        return {
            "step": step,
            "loss": v,
            "ce": v,
            "bn": v,
            "lr": 0.1,
            "members": {"m1": {"ce": v, "bn": v, "weight": 1.0}},
        }

    tail = state._Tail(str(p), None, state._fold_trace, keep=False)
    assert tail.read()[1].empty
    _append(p, [rec(s, 1.0) for s in range(10)])
    assert len(tail.read()[1]) == 10
    _append(p, [rec(s, 2.0) for s in range(6, 15)])  # resumed from a checkpoint at step 6
    df = tail.read()[1]
    want = shaping.trace_df(layout.read_jsonl(p))
    assert list(df["step"]) == list(range(15)) and df.shape == want.shape
    assert np.allclose(df["loss"].astype(float), want["loss"].astype(float))
    assert list(df["m1.ce"])[5:8] == [1.0, 2.0, 2.0]


def test_cached_arrays_are_shared_read_only_and_follow_the_file(tmp_path):
    p = tmp_path / "images.npz"
    np.savez(p, images=np.zeros((2, 3, 4, 4), np.uint8), targets=np.arange(2))
    z = state.read_npz_file(p)
    assert z is state.read_npz_file(p)  # one object for every caller, no copy per call
    with pytest.raises(ValueError):
        z["images"][0, 0, 0, 0] = 1
    with pytest.raises(TypeError):
        z["images"] = None
    np.savez(p, images=np.ones((1, 3, 4, 4), np.uint8), targets=np.arange(1))
    os.utime(p, ns=(time.time_ns(), time.time_ns() + 10**9))  # a new mtime, even on coarse fs
    assert state.read_npz_file(p)["images"].shape[0] == 1
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04garbage")
    assert state.read_npz_file(tmp_path / "bad.npz") is None
    assert state.read_npz_file(tmp_path / "missing.npz") is None


def _job(d: Path, pid: int, t: float) -> None:
    (d / layout.JOB).write_text(json.dumps({"pid": pid, "spawned_t": t}))


def test_a_spawned_worker_is_starting_until_it_holds_the_lock(tmp_path):
    d = rundir.RunDir.create(tmp_path, {"data": {"dataset": "builtin"}, "ipc": 1}).path
    assert runs.run_status(d)["status"] == "created"
    _job(d, os.getpid(), time.time())  # a live process that holds no lock
    assert runs.run_status(d)["status"] == "starting"
    assert jobs.resume_job(d) is False  # a second click while it starts spawns nothing
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    _job(d, dead.pid, time.time())
    _wait_zombie_or_gone(dead.pid)
    assert runs.run_status(d)["status"] == "created"  # it died before taking the lock
    dead.wait()
    _job(d, os.getpid(), time.time() - SPAWN_GRACE_S - 1)
    assert runs.run_status(d)["status"] == "created"  # too old to believe
    t = time.time()
    _job(d, os.getpid(), t - 5)
    _append(
        d / layout.EVENTS,
        [{"kind": "run_start", "t": t}, {"kind": "run_end", "t": t, "status": "stopped"}],
    )
    assert runs.run_status(d)["status"] == "stopped"  # it ran and ended since


def _wait_zombie_or_gone(pid: int) -> None:
    for _ in range(200):
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return
        except OSError:
            return
        time.sleep(0.02)


def test_list_runs_never_raises_on_damaged_folders(tmp_path):
    good = rundir.RunDir.create(tmp_path, {"name": "tiny", "ipc": 2}).path
    (tmp_path / "20260101-000000-x-ipc1-0001").mkdir()  # no config at all
    odd = tmp_path / "20260101-000000-x-ipc1-0002"
    (odd / layout.CONFIG).mkdir(parents=True)  # folders where files should be
    (odd / layout.EVENTS).mkdir()
    (odd / layout.RESULT).write_bytes(b"\xff{")
    (tmp_path / "a-file").write_text("not a run")
    rows = {r["run_id"]: r for r in runs.list_runs(tmp_path)}
    assert set(rows) == {good.name, "20260101-000000-x-ipc1-0001", odd.name}
    assert rows[good.name]["status"] == "created" and rows[good.name]["preset"] == "tiny"
    assert rows[odd.name]["status"] == rows["20260101-000000-x-ipc1-0001"]["status"] == "corrupt"

    def broken(_):
        raise RuntimeError("a reader that fails")

    assert {r["status"] for r in runs.list_runs(tmp_path, summary_of=broken)} == {"corrupt"}
    assert runs.list_runs(tmp_path / "nope") == []
    cached = state.all_runs(str(tmp_path))  # the app's readers give the same rows
    assert cached == runs.list_runs(tmp_path)


def test_the_app_readers_show_the_queue_and_kick_it(tmp_path, monkeypatch):
    spawned = []

    def fake_spawn(run_dir: Path, env_extra=None) -> int:  # 'starting', without a process
        spawned.append(run_dir)
        _job(run_dir, os.getpid(), time.time())
        return os.getpid()

    monkeypatch.setattr(jobs, "_spawn", fake_spawn)
    monkeypatch.delenv("CVDD_MAX_WORKERS", raising=False)
    holder = rundir.RunDir.create(tmp_path, {"device": "cpu", "ipc": 1})
    holder.acquire_lock()  # a worker on the CPU: its one slot is taken
    cfg = {"name": "tiny", "device": "cpu", "ipc": 2}
    a, b = (jobs.start_job(cfg, tmp_path, wait=False) for _ in range(2))
    assert state.status(b)["queue"] == {"pos": 2, "of": 2, "device": "cpu"}
    rows = {r["run_id"]: r for r in state.all_runs(str(tmp_path))}
    assert rows[a.name]["status"] == "queued" and rows[a.name]["queue"]["pos"] == 1
    assert spawned == []
    holder.release_lock()  # the worker ended without handing its slot on (kill -9)
    state._kicked.clear()  # as after KICK_EVERY_S
    assert state.all_runs(str(tmp_path)) == runs.list_runs(tmp_path)  # the page's poll kicks
    assert spawned == [a] and state.status(a)["status"] == "starting"
    assert state.status(b)["queue"] == {"pos": 1, "of": 1, "device": "cpu"}
    _job(a, os.getpid(), time.time() - SPAWN_GRACE_S - 1)  # that one died before its lock too
    state.all_runs(str(tmp_path))
    assert spawned == [a]  # one kick per KICK_EVERY_S and runs root, however many tabs poll
    state._kicked[str(tmp_path)] -= state.KICK_EVERY_S
    assert state.status(b)["status"] == "starting" and spawned == [a, b]
