"""Background jobs: each run is its own OS process (`python -m cvdd.jobs resume RUN_DIR`).

Used by the UI; never imports torch or streamlit. A worker holds `worker.lock` for its whole
life, so duplicates are refused even across server restarts, and a dead worker (even after
kill -9) is detected because the kernel drops the lock.

Start and Resume go through the runs root's queue (cvdd/queue.py): a run starts at once when
its device has a free worker slot and nobody waits before it, else it reads 'queued'. Slots
are handed on without a server thread: every worker, as it exits, starts the next queued runs
(`_worker_main`), and `kick_queue` (each Start / Resume, and the app's renders) does it for a
worker that died without the chance (kill -9, out of memory).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from . import layout, queue
from .config import RunConfig
from .rundir import RunDir
from .runs import is_alive, resolve_run, run_status
from .status import SPAWN_GRACE_S, spawn_pending
from .utils import CvddError, atomic_write_json, read_json

__all__ = [
    "start_job",
    "resume_job",
    "stop_job",
    "kick_queue",
    "is_alive",
    "clone_config",
    "gpu_count",
    "start_outlook",
    "NPROC_ENV",
]

_PKG_ROOT = Path(__file__).resolve().parent.parent
_ENV_BASE = "CVDD_JOB_ENV_BASE"  # in a worker: the values its job's extra variables replaced
NPROC_ENV = "CVDD_NPROC"  # in a job's env: K > 1 starts its worker as K torchrun processes


def _base_env() -> dict:
    # A worker that starts the next queued run hands on the server's environment, not the
    # extra variables its own job was given (CVDD_MEMORY_GB for one resume, say).
    env = dict(os.environ)
    try:
        base = json.loads(env.pop(_ENV_BASE, "{}"))
    except ValueError:
        base = {}
    for k, v in base.items() if isinstance(base, dict) else ():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = str(v)
    return env


def _spawn(run_dir: Path, env_extra: dict | None = None) -> int:
    """Start `python -m cvdd.jobs resume RUN_DIR` detached; job.json records the spawn so that
    run_status says 'starting' until the worker holds its lock (it then rewrites job.json)."""
    env = _base_env()
    # the worker must import this cvdd even when the server runs from another folder
    path = env.get("PYTHONPATH", "")
    if path.split(os.pathsep)[0] != str(_PKG_ROOT):
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_PKG_ROOT), path]))
    extra = {str(k): str(v) for k, v in (env_extra or {}).items()}
    env[_ENV_BASE] = json.dumps({k: env.get(k) for k in extra})
    env.update(extra)
    nproc = int(extra.get(NPROC_ENV, "1") or 1)
    launcher = [sys.executable]  # K > 1: one process per GPU, rank 0 writes (README: torchrun)
    if nproc > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    with open(run_dir / layout.WORKER_LOG, "ab") as log:  # the child keeps its own copy
        proc = subprocess.Popen(
            # absolute: the worker runs in the package folder, not in the caller's
            [*launcher, "-m", "cvdd.jobs", "resume", str(run_dir.resolve())],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # survives a Streamlit restart; own process group for stop
            cwd=str(_PKG_ROOT),
            env=env,
        )
    atomic_write_json(
        run_dir / layout.JOB,
        {
            "pid": proc.pid,
            "argv": proc.args,
            "spawned_t": time.time(),
            "host": socket.gethostname(),
        },
    )
    return proc.pid


def gpu_count() -> int:
    """CUDA devices on this machine, from `nvidia-smi -L` (no torch in the UI); CVDD_GPUS
    overrides it. 0 when there is no driver."""
    if os.environ.get("CVDD_GPUS", "").isdigit():
        return int(os.environ["CVDD_GPUS"])
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in out.stdout.splitlines())


def _wait_started(run_dir: Path, pid: int, timeout_s: float = 10.0) -> None:
    # give the worker a moment to take its lock, so an immediate second click sees it running
    t_end = time.time() + timeout_s
    while time.time() < t_end:
        if is_alive(run_dir):
            return
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return  # it already ended (bad config, or finished instantly): status will say
        time.sleep(0.05)


def start_job(
    config: RunConfig | dict, runs_root: str | Path, env: dict | None = None, wait: bool = True
) -> Path:
    """Validate the config, create a new run dir and start its worker, or queue it while its
    device's worker slots are full (status 'queued'). Returns the run dir.

    wait=True returns once the worker holds its lock (up to 10 s: python and torch import);
    wait=False returns at once, and run_status says 'starting' until the lock is taken (the UI
    uses this, so a click never blocks the page). A queued run never waits."""
    cfg = config if isinstance(config, RunConfig) else RunConfig.from_dict(config)
    rd = RunDir.create(runs_root, cfg.to_dict(), meta={"launched_by": "jobs.start_job"})
    _, pid = _enqueue(rd.path, env)
    if wait and pid is not None:
        _wait_started(rd.path, pid)
    return rd.path


def resume_job(run_dir: str | Path, env: dict | None = None, wait: bool = True) -> bool:
    """Continue a stopped/crashed/failed run from its checkpoints, at once or through the
    queue. False if it is running, starting or queued (a second click, or another tab).
    `wait` as for start_job."""
    run_dir = Path(run_dir)
    RunDir.open(run_dir)
    status = run_status(run_dir)["status"]
    if status in ("running", "starting", "queued"):
        return False
    if status == "done":
        raise CvddError(f"run {run_dir.name} is already done; clone it to run again")
    queued, pid = _enqueue(run_dir, env)
    if wait and pid is not None:
        _wait_started(run_dir, pid)
    return queued


def stop_job(run_dir: str | Path, wait_s: float = 0.0) -> bool:
    """Ask the worker to stop: SIGTERM -> it finishes the step, checkpoints, logs run_end stopped.
    A queued run leaves the queue and ends 'stopped' without a worker ever starting.

    Returns False when no worker is running. With wait_s > 0, waits for it to exit.
    """
    run_dir = Path(run_dir)
    if _dequeue(run_dir):
        return True
    if not is_alive(run_dir):
        return False
    job = read_json(run_dir / layout.JOB) or {}
    pid = job.get("pid")
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    t_end = time.time() + wait_s
    while wait_s and time.time() < t_end and is_alive(run_dir):
        time.sleep(0.1)
    return True


def clone_config(run_dir: str | Path) -> dict:
    """The config dict of an earlier run (for 'Clone' in the UI)."""
    return RunDir.open(run_dir).read_config()["config"]


# -- the queue: who starts which queued run, and when ------------------------------------------


def kick_queue(runs_root: str | Path, wait: bool = False) -> list[Path]:
    """Start the queued runs whose device has a free slot; returns their folders.

    One read of a small file when nothing waits, so the app calls it on its renders: a worker
    killed by kill -9 never started the next run itself. wait=False skips the round while
    another process holds the queue's lock (the pages kick again soon); an ending worker waits."""
    root = Path(runs_root)
    if not queue.read_entries(root):
        return []
    with queue.locked(root, blocking=wait) as entries:
        if entries is None:
            return []
        started, _ = _fill(root, entries)
    return [root / rid for rid in started]


def _enqueue(run_dir: Path, env: dict | None) -> tuple[bool, int | None]:
    """Put the run at the end of the queue, then start what has a slot. Returns (queued or
    started, the worker's pid when it started at once); (False, None) if it already was."""
    root, rid = run_dir.parent, run_dir.name
    extra = {str(k): str(v) for k, v in (env or {}).items()}
    key = _device_of(run_dir, {**os.environ, **extra})
    with queue.locked(root) as entries:
        # checked under the lock, so a second tab's click cannot slip in between
        if any(e["run_id"] == rid for e in entries) or _active(run_dir):
            return False, None
        t = round(time.time(), 3)
        entries.append({"run_id": rid, "device": key, "enqueued_t": t, "env": extra})
        started, errors = _fill(root, entries)
    if rid in errors:
        raise CvddError(f"could not start the worker of run {rid}: {errors[rid]}")
    return True, started.get(rid)


def _dequeue(run_dir: Path) -> bool:
    """Take a queued run out of the queue and end it 'stopped', no worker started. False if
    it was not queued, or a worker runs it after all (started from the command line)."""
    if queue.place(queue.read_entries(run_dir.parent), run_dir.name) is None:
        return False  # the usual Stop: no lock taken
    with queue.locked(run_dir.parent) as entries:
        n = len(entries)
        entries[:] = [e for e in entries if e["run_id"] != run_dir.name]
        if len(entries) == n or _active(run_dir):
            return False
        # the one write into a run dir without its worker: none can start while we hold the
        # queue's lock, and the run is no longer in it
        rd = RunDir(run_dir)
        rd.append_event("log", level="info", msg="removed from the queue before a worker started")
        rd.append_event("run_end", status="stopped")
    return True


def start_outlook(runs_root: str | Path, device: str) -> dict:
    """What a Start on `device` would do now: {device (its slot), busy (workers on it),
    limit (0 = none), pos (its place in the queue, None when it would start at once)}."""
    root, key = Path(runs_root), queue.device_key(device)
    busy, limit = _busy_slots(root).get(key, 0), queue.max_workers(key)
    ahead = sum(e["device"] == key for e in queue.read_entries(root))
    waits = ahead > 0 or bool(limit and busy >= limit)
    return {"device": key, "busy": busy, "limit": limit, "pos": ahead + 1 if waits else None}


def _fill(root: Path, entries: list[dict]) -> tuple[dict[str, int], dict[str, str]]:
    """Start queued runs, oldest first, while their device has a free slot (the caller holds
    the queue's lock). Entries whose run has gone, runs already or is done leave the queue.
    Returns ({run_id: pid} started, {run_id: error} that could not start)."""
    busy = _busy_slots(root) if entries else {}
    started: dict[str, int] = {}
    errors: dict[str, str] = {}
    for e in list(entries):
        dev = e["device"]
        limit = queue.max_workers(dev)
        if limit and busy.get(dev, 0) >= limit:
            continue
        entries.remove(e)
        run_dir = _startable(root, e["run_id"])
        if run_dir is None:
            continue
        try:
            started[e["run_id"]] = _spawn(run_dir, e.get("env"))
        except OSError as err:  # no fork, full disk: the run stays as it was, not queued
            errors[e["run_id"]] = str(err)
            continue
        busy[dev] = busy.get(dev, 0) + 1
    return started, errors


def _startable(root: Path, run_id: str) -> Path | None:
    """The folder of a queued run that still needs a worker, else None."""
    try:
        run_dir = resolve_run(root, run_id)  # the queue file is data: never leave the root
    except CvddError:
        return None
    if not (run_dir / layout.CONFIG).is_file() or _active(run_dir):
        return None
    return None if run_status(run_dir, queue_entries=[])["status"] == "done" else run_dir


def _active(run_dir: Path) -> bool:
    """A worker runs the run or is starting (spawned, not yet holding the lock)."""
    if is_alive(run_dir):
        return True
    try:  # a job.json older than the grace period cannot say 'starting': a stat spares a read
        if time.time() - (run_dir / layout.JOB).stat().st_mtime > SPAWN_GRACE_S:
            return False
    except OSError:
        return False
    return spawn_pending(run_dir, None)


def _busy_slots(root: Path) -> dict[str, int]:
    """device_key -> workers running or starting on it. Counted from the run folders, so a
    worker started before a server restart, or from the command line, takes its slot too."""
    busy: dict[str, int] = {}
    try:
        folders = [p for p in root.iterdir() if not p.name.startswith(("_", "."))]
    except OSError:
        return busy
    for p in folders:
        if _active(p):
            key = _device_of(p)
            busy[key] = busy.get(key, 0) + 1
    return busy


def _device_of(run_dir: Path, env: dict | None = None) -> str:
    doc = read_json(run_dir / layout.CONFIG)
    cfg = doc.get("config") if isinstance(doc, dict) else None
    return queue.device_key(cfg.get("device") if isinstance(cfg, dict) else None, env)


def _worker_main(argv: list[str]) -> int:
    """`python -m cvdd.jobs resume RUN_DIR`: the worker (`python -m cvdd resume RUN_DIR`), and
    then, however the run ended, the queue's next runs on the slot it frees."""
    from .cli import main  # the engine (torch): only in the worker process

    try:
        return main(argv)
    finally:
        if os.environ.get("RANK", "0") in ("", "0"):  # torchrun: rank 0 alone hands the slot on
            try:
                kick_queue(Path(argv[-1]).parent, wait=True)
            except Exception as e:  # the run's own exit status matters more; the app kicks too
                print(f"could not start the next queued run: {e}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
