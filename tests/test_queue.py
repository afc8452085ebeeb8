"""The run queue (cvdd/queue.py, cvdd/jobs.py): Start clicks beyond a device's worker slots
wait as 'queued' in order, an ending worker starts the next run by itself, a queued run can be
removed, the queue outlives the process that wrote it, a kill -9 does not stall it, and
concurrent Start clicks from two processes lose nothing and start one worker."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from procs import HANG_S

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from cvdd import jobs, layout, queue, rundir, runs  # noqa: E402 -- after the sys.path line
from cvdd.config import from_preset  # noqa: E402
from cvdd.utils import CvddError  # noqa: E402

ENV = {"CVDD_THREADS": "1"}
# a run that goes on until stopped: the tests end it, never the clock
CFG = from_preset("tiny", ["recover.iterations=100000"]).to_dict()


@pytest.fixture(autouse=True)
def _one_worker(monkeypatch):
    monkeypatch.delenv(queue.MAX_WORKERS_ENV, raising=False)  # the default: 1 per device
    monkeypatch.setenv("CVDD_THREADS", "1")


def _wait(cond, timeout: float, what: str) -> None:
    t_end = time.time() + timeout
    while time.time() < t_end:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _status(d: Path) -> tuple[str, tuple | None]:
    st = runs.run_status(d)
    q = st["queue"]
    return st["status"], (q["pos"], q["of"]) if q else None


def _working(d: Path) -> bool:
    # holds its lock and has logged run_start: past the moment where the worker has the lock
    # but not yet its SIGTERM handler (a stop sent there would kill it without a run_end)
    return runs.is_alive(d) and any(e["kind"] == "run_start" for e in layout.read_events(d))


def _pid(d: Path) -> int:
    return json.loads((d / layout.JOB).read_text())["pid"]


def _kill_workers(dirs: list[Path]) -> None:
    for d in dirs:  # never leave a worker behind, whatever failed
        # only a live worker's pid: the lock is held, or the spawn is fresh and not a zombie
        if jobs._active(d):
            with contextlib.suppress(OSError, ValueError, KeyError):
                os.kill(_pid(d), signal.SIGKILL)


def _hold_slot(root: Path) -> rundir.RunDir:
    """A run on the CPU whose worker lock this process holds: the CPU's one slot is taken."""
    rd = rundir.RunDir.create(root, {"device": "cpu", "ipc": 1})
    rd.acquire_lock()
    return rd


def test_queue_runs_in_order_hands_on_slots_and_survives(tmp_path):
    dirs = [jobs.start_job(CFG, tmp_path, env=ENV, wait=False) for _ in range(3)]
    a, b, c = dirs
    try:
        assert _status(a)[0] in ("starting", "running")
        assert _status(b) == ("queued", (1, 2)) and _status(c) == ("queued", (2, 2))
        assert not (b / layout.JOB).exists()  # no worker was spawned for the queued ones
        # "server restart": a new process reads the same queue from the runs root
        code = (
            "import json, sys; from cvdd import runs; "
            "print(json.dumps({r['run_id']: [r['status'], r['queue']] "
            "for r in runs.list_runs(sys.argv[1])}))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True
        )
        seen = json.loads(out.stdout)
        assert seen[b.name] == ["queued", {"pos": 1, "of": 2, "device": "cpu"}]
        assert seen[c.name][1]["pos"] == 2 and seen[a.name][0] in ("starting", "running")

        _wait(lambda: _working(a), HANG_S, "the first worker to start working")
        assert jobs.stop_job(a, wait_s=30)  # it ends ...
        _wait(lambda: _working(b), HANG_S, "the second run to start by itself")  # ... b starts
        assert _status(a)[0] == "stopped" and _status(c) == ("queued", (1, 1))

        os.kill(_pid(b), signal.SIGKILL)  # a worker that cannot hand its slot on
        _wait(lambda: not runs.is_alive(b), HANG_S, "the killed worker's lock to drop")
        assert _status(c)[0] == "queued"
        assert jobs.kick_queue(tmp_path) == [c]  # what the app's renders and Start do
        _wait(lambda: _working(c), HANG_S, "the third run to start after the kick")
        assert queue.read_entries(tmp_path) == []
        assert jobs.stop_job(c, wait_s=30) and _status(c)[0] == "stopped"
    finally:
        _kill_workers(dirs)


def test_a_queued_run_can_be_removed_and_queued_again(tmp_path):
    holder = _hold_slot(tmp_path)
    try:
        a, b, c = (jobs.start_job(CFG, tmp_path, env=ENV) for _ in range(3))
        assert [_status(d) for d in (a, b, c)] == [("queued", (i, 3)) for i in (1, 2, 3)]
        assert jobs.stop_job(b)  # the Live page's "Remove from queue"
        assert _status(b) == ("stopped", None) and not (b / layout.JOB).exists()
        assert [e["kind"] for e in layout.read_events(b)] == ["log", "run_end"]
        assert _status(a) == ("queued", (1, 2)) and _status(c) == ("queued", (2, 2))
        assert jobs.stop_job(b) is False  # neither queued nor running now
        assert jobs.resume_job(b, wait=False)  # back in the queue, at its end
        assert _status(b) == ("queued", (3, 3))
        assert jobs.resume_job(b, wait=False) is False  # a second tab's click adds nothing
        assert [e["run_id"] for e in queue.read_entries(tmp_path)] == [a.name, c.name, b.name]
    finally:
        holder.release_lock()


def test_concurrent_start_clicks_from_two_processes_lose_nothing(tmp_path):
    code = (
        "import json, sys, time; from cvdd import jobs; "
        "root, t0, cfg, env = sys.argv[1], float(sys.argv[2]), *map(json.loads, sys.argv[3:]); "
        "time.sleep(max(0.0, t0 - time.time())); "
        "[jobs.start_job(cfg, root, env=env, wait=False) for _ in range(6)]"
    )
    t0 = str(time.time() + 1.5)  # both processes are imported by then: they click together
    argv = [sys.executable, "-c", code, str(tmp_path), t0, json.dumps(CFG), json.dumps(ENV)]
    procs = [subprocess.Popen(argv, cwd=ROOT) for _ in range(2)]
    assert [p.wait(timeout=HANG_S) for p in procs] == [0, 0]
    dirs = sorted(p for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith("_"))
    try:
        assert len(dirs) == 12
        states = {d.name: _status(d) for d in dirs}
        started = [n for n, (s, _) in states.items() if s != "queued"]
        assert len(started) == 1, states  # one slot: one worker, whoever clicked first
        assert states[started[0]][0] in ("starting", "running", "crashed", "stopped")
        entries = queue.read_entries(tmp_path)
        assert len({e["run_id"] for e in entries}) == len(entries) == 11  # nothing lost
        assert sorted(q for s, q in states.values() if q) == [(i, 11) for i in range(1, 12)]
        assert [e["enqueued_t"] for e in entries] == sorted(e["enqueued_t"] for e in entries)
    finally:
        _kill_workers(dirs)


def test_slots_per_device_and_a_damaged_queue(tmp_path, monkeypatch):
    spawned = []

    def fake_spawn(run_dir: Path, env_extra=None) -> int:  # 'starting', without a process
        spawned.append(run_dir.name)
        job = {"pid": os.getpid(), "spawned_t": time.time()}
        (run_dir / layout.JOB).write_text(json.dumps(job))
        return os.getpid()

    monkeypatch.setattr(jobs, "_spawn", fake_spawn)
    monkeypatch.setenv(queue.MAX_WORKERS_ENV, "1,cpu=2")
    cpu = [jobs.start_job(CFG, tmp_path, wait=False) for _ in range(3)]
    assert [_status(d)[0] for d in cpu] == ["starting", "starting", "queued"]
    gpu = [jobs.start_job(dict(CFG, device="cuda:1"), tmp_path, wait=False) for _ in range(2)]
    assert [_status(d) for d in gpu] == [("starting", None), ("queued", (1, 1))]
    assert len(spawned) == 3
    doc = json.loads((tmp_path / layout.QUEUE).read_text())
    doc["entries"] += [{"run_id": "../escape", "device": "cpu"}, "junk", {"run_id": 3}]
    (tmp_path / layout.QUEUE).write_text(json.dumps(doc))
    waiting = [cpu[2].name, gpu[1].name, "../escape"]  # foreign entries are skipped
    assert [e["run_id"] for e in queue.read_entries(tmp_path)] == waiting
    monkeypatch.setenv(queue.MAX_WORKERS_ENV, "0")  # no limit: everything starts
    assert jobs.kick_queue(tmp_path) == [cpu[2], gpu[1]]  # "../escape" leaves the queue
    assert queue.read_entries(tmp_path) == [] and len(spawned) == 5
    (tmp_path / layout.QUEUE).write_bytes(b"\xff{not json")
    assert jobs.kick_queue(tmp_path) == [] and _status(cpu[0])[0] == "starting"


def test_device_keys_and_worker_limits():
    hidden = {"CUDA_VISIBLE_DEVICES": ""}
    assert queue.device_key("auto", hidden) == queue.device_key("cpu") == "cpu"
    assert queue.device_key("cuda") == queue.device_key("CUDA:0") == "cuda:0"
    assert queue.device_key("cuda:3") == "cuda:3"
    env = {queue.MAX_WORKERS_ENV: "2, cuda=1, cpu=x"}
    assert queue.max_workers("cpu", env) == 2 and queue.max_workers("cuda:0", env) == 1
    assert queue.max_workers("cpu", {}) == 1  # unset: one per device
    assert queue.max_workers("cpu", {queue.MAX_WORKERS_ENV: "0"}) == 0  # 0: no limit


def test_worker_threads_share_the_cores_among_the_workers_allowed(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(9)), raising=False)
    cpu = {"CUDA_VISIBLE_DEVICES": ""}
    assert queue.worker_threads("cpu", 0, cpu) == 8  # one worker: every core but one
    two = {**cpu, queue.MAX_WORKERS_ENV: "2"}
    assert queue.worker_threads("auto", 0, two) == 4  # two workers: half of those each
    assert queue.worker_threads("cpu", 0, {**cpu, queue.MAX_WORKERS_ENV: "cpu=3"}) == 2
    assert queue.worker_threads("cpu", 0, {**cpu, queue.MAX_WORKERS_ENV: "0"}) == 1  # no limit
    assert queue.worker_threads("cpu", 0, {**two, "LOCAL_WORLD_SIZE": "2"}) == 2  # torchrun
    assert queue.worker_threads("cpu", 3, two) == 3  # the config's threads win
    assert queue.worker_threads("cpu", 3, {**two, queue.THREADS_ENV: "5"}) == 5  # the env most
    assert queue.worker_threads("cpu", 3, {**two, queue.THREADS_ENV: "0"}) == 3  # 0 = unset
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert queue.worker_threads("cpu", 0, cpu) == queue.MAX_THREADS
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert queue.worker_threads("cpu", 0, cpu) == 1  # 2 cores: one thread, one core left free
    assert queue.worker_threads("cpu", 0, two) == 1  # never below one
    with pytest.raises(CvddError, match="CVDD_THREADS='two' is not a whole number"):
        queue.worker_threads("cpu", 0, {queue.THREADS_ENV: "two"})


def test_runs_and_live_pages_show_the_queue_and_remove_from_it(tmp_path, monkeypatch):
    st = pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("CVDD_RUNS_DIR", str(tmp_path))
    st.cache_data.clear()
    st.cache_resource.clear()
    holder = _hold_slot(tmp_path)  # the CPU's slot is taken: every Start waits
    try:
        a, b = (jobs.start_job(CFG, tmp_path, env=ENV, wait=False) for _ in range(2))
        at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=HANG_S)
        at.switch_page("views/runs.py")
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        caps = "\n".join(c.value for c in at.caption)
        assert f"1. `{a.name}` · 2. `{b.name}`" in caps and "Queued for cpu" in caps

        at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=HANG_S)
        at.query_params["run"] = b.name
        at.switch_page("views/live.py")
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        assert "queued, position 2 of 2 for cpu" in "\n".join(c.value for c in at.caption)
        stop = at.button(key="stop")
        assert stop.label == "Remove from queue" and not stop.disabled
        assert at.button(key="resume").disabled
        stop.click().run()
        assert not at.exception, [e.value for e in at.exception]
        assert _status(b) == ("stopped", None) and _status(a) == ("queued", (1, 1))
        assert not (b / layout.JOB).exists()  # no worker ever started for it
        assert at.button(key="stop").label == "Stop" and not at.button(key="resume").disabled
    finally:
        holder.release_lock()


def test_start_outlook_says_a_new_run_queues_and_where(tmp_path, monkeypatch):
    """New run's caption: a Start behind a queued run on the same device waits at position 2;
    on another device, with nothing queued or running, it starts at once."""
    monkeypatch.setenv(queue.MAX_WORKERS_ENV, "1")
    entry = {"run_id": "r1", "device": "cpu", "enqueued_t": 1.0, "env": {}}
    (tmp_path / layout.QUEUE).write_text(json.dumps({"version": 1, "entries": [entry]}))
    assert jobs.start_outlook(tmp_path, "cpu") == {"device": "cpu", "busy": 0, "limit": 1, "pos": 2}
    assert jobs.start_outlook(tmp_path, "cuda:1")["pos"] is None
