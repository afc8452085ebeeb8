"""Background jobs: each run is its own OS process (`python -m cvdd resume RUN_DIR`).

Used by the UI; never imports torch or streamlit. A worker holds `worker.lock` for its whole
life, so duplicates are refused even across server restarts, and a dead worker (even after
kill -9) is detected because the kernel drops the lock.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from . import layout
from .config import RunConfig
from .runs import RunDir, is_alive, run_status
from .utils import CvddError, atomic_write_json, read_json

__all__ = ["start_job", "resume_job", "stop_job", "is_alive", "clone_config"]

_PKG_ROOT = Path(__file__).resolve().parent.parent


def _spawn(run_dir: Path, env_extra: dict | None = None) -> int:
    """Start `python -m cvdd resume RUN_DIR` detached; job.json records the spawn so that
    run_status says 'starting' until the worker holds its lock (it then rewrites job.json)."""
    env = dict(os.environ)
    # the worker must import this cvdd even when the server runs from another folder
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_PKG_ROOT), env.get("PYTHONPATH", "")]))
    env.update(env_extra or {})
    with open(run_dir / layout.WORKER_LOG, "ab") as log:  # the child keeps its own copy
        proc = subprocess.Popen(
            [sys.executable, "-m", "cvdd", "resume", str(run_dir)],
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
    """Validate the config, create a new run dir and start its worker. Returns the run dir.

    wait=True returns once the worker holds its lock (up to 10 s: python and torch import);
    wait=False returns at once, and run_status says 'starting' until the lock is taken (the UI
    uses this, so a click never blocks the page)."""
    cfg = config if isinstance(config, RunConfig) else RunConfig.from_dict(config)
    rd = RunDir.create(runs_root, cfg.to_dict(), meta={"launched_by": "jobs.start_job"})
    pid = _spawn(rd.path, env)
    if wait:
        _wait_started(rd.path, pid)
    return rd.path


def resume_job(run_dir: str | Path, env: dict | None = None, wait: bool = True) -> bool:
    """Continue a stopped/crashed/failed run from its checkpoints. False if it is running or
    a worker is starting (a second click, or another tab). `wait` as for start_job."""
    run_dir = Path(run_dir)
    RunDir.open(run_dir)
    status = run_status(run_dir)["status"]
    if status in ("running", "starting"):
        return False
    if status == "done":
        raise CvddError(f"run {run_dir.name} is already done; clone it to run again")
    pid = _spawn(run_dir, env)
    if wait:
        _wait_started(run_dir, pid)
    return True


def stop_job(run_dir: str | Path, wait_s: float = 0.0) -> bool:
    """Ask the worker to stop: SIGTERM -> it finishes the step, checkpoints, logs run_end stopped.

    Returns False when no worker is running. With wait_s > 0, waits for it to exit.
    """
    run_dir = Path(run_dir)
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
