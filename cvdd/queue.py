"""The run queue of a runs root: runs that wait for a worker slot on their device, oldest first.

cvdd.jobs puts every Start / Resume in here and starts the head of a device's queue while that
device has a free slot (`CVDD_MAX_WORKERS`, default one worker per device), so a classroom of
Start clicks waits in order instead of sharing the cores or the GPU. The queue is one JSON file
in the runs root, so it survives a server restart; it changes only under an flock on a sibling
lock file (the JSON file itself is replaced on every write, so it cannot carry the lock), so
two tabs or two servers clicking at once can neither both take the last slot nor lose an entry.

This module is the store and the device bookkeeping; the policy (who starts what) is in
cvdd.jobs. Torch-free: the app, the jobs module and the status readers import it.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from . import layout
from .utils import atomic_write_json, read_json

__all__ = [
    "MAX_WORKERS_ENV",
    "device_key",
    "max_workers",
    "read_entries",
    "locked",
    "place",
    "worker_threads",
    "THREADS_ENV",
]

MAX_WORKERS_ENV = "CVDD_MAX_WORKERS"  # "1" (default), "2", "0" = no limit, "1,cpu=2"
THREADS_ENV = "CVDD_THREADS"  # torch CPU threads of one worker; overrides the choice below
MAX_THREADS = 8  # more threads than this gain little on these models and cost memory
_CUDA = re.compile(r"^cuda(?::(\d+))?$")


def _gpu_visible(env: Mapping[str, str]) -> bool:
    # what torch.cuda.is_available() would say, without importing torch (the UI never does):
    # CUDA_VISIBLE_DEVICES="" or "-1" hides every GPU; otherwise the driver's device nodes tell
    vis = env.get("CUDA_VISIBLE_DEVICES")
    if vis is not None and vis.strip() in ("", "-1"):
        return False
    return any(Path("/dev").glob("nvidia[0-9]*"))


def device_key(device: str | None, env: Mapping[str, str] | None = None) -> str:
    """The slot a run's `device` setting occupies: 'cpu', 'cuda:0', 'cuda:1', ...

    'auto' becomes 'cuda:0' where a GPU is visible (as the worker would resolve it), and
    'cuda' means 'cuda:0'. An unknown name keeps its own slot: the worker fails on it anyway."""
    env = os.environ if env is None else env
    name = str(device or "auto").strip().lower()
    if name == "auto":
        name = "cuda" if _gpu_visible(env) else "cpu"
    m = _CUDA.match(name)
    return f"cuda:{int(m.group(1) or 0)}" if m else name


def max_workers(key: str, env: Mapping[str, str] | None = None) -> int:
    """Workers allowed at once on device `key`; 0 means no limit.

    `CVDD_MAX_WORKERS` is a number for every device ("2"), per-device counts ("cpu=2,cuda:0=1"),
    or both ("1,cpu=3": three on the CPU, one elsewhere). Unset or unreadable parts give 1:
    a typo must not lift the limit that keeps a shared machine from thrashing."""
    spec = (os.environ if env is None else env).get(MAX_WORKERS_ENV, "")
    default, per_device = 1, {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, value = part.rpartition("=")
        try:
            n = max(0, int(value))
        except ValueError:
            continue
        if name:
            per_device[device_key(name, env)] = n
        else:
            default = n
    return per_device.get(key, default)


def _valid(e: object) -> bool:
    return (
        isinstance(e, dict)
        and isinstance(e.get("run_id"), str)
        and isinstance(e.get("device"), str)
        and isinstance(e.get("env", {}), dict)
    )


def read_entries(root: str | Path) -> list[dict]:
    """The queue, oldest first, read without the lock (a reader sees the last whole write).

    Each entry: {run_id, device (a device_key), enqueued_t, env (extra environment of the
    worker)}. A missing or damaged file reads as an empty queue; foreign entries are skipped."""
    doc = read_json(Path(root) / layout.QUEUE)
    entries = doc.get("entries") if isinstance(doc, dict) else None
    return [e for e in entries if _valid(e)] if isinstance(entries, list) else []


@contextmanager
def locked(root: str | Path, blocking: bool = True) -> Iterator[list[dict] | None]:
    """Hold the queue's lock; yields its entries to change in place, written back on exit.

    With blocking=False, yields None when another process holds the lock (it is busy starting
    the queue's head, so a caller that only wanted to kick the queue has nothing to do)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / layout.QUEUE_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield None
            return
        entries = read_entries(root)
        before = [dict(e) for e in entries]
        try:
            yield entries
        finally:  # also after an error: a run already spawned must leave the queue
            if entries != before:
                atomic_write_json(root / layout.QUEUE, {"version": 1, "entries": entries})
    finally:
        os.close(fd)  # drops the flock


def place(entries: list[dict], run_id: str) -> dict | None:
    """{pos, of, device} of a queued run (pos 1 starts next on its device), or None."""
    for e in entries:
        if e["run_id"] == run_id:
            mine = [x["run_id"] for x in entries if x["device"] == e["device"]]
            return {"pos": mine.index(run_id) + 1, "of": len(mine), "device": e["device"]}
    return None


def worker_threads(
    device: str | None, config_threads: int = 0, env: Mapping[str, str] | None = None
) -> int:
    """Torch CPU threads for one worker of a run on `device`.

    `CVDD_THREADS` when set, else the config's `threads` when > 0, else the cores this process
    may use but one (the app server, a browser, the system), shared out among the workers
    allowed at once on the device (CVDD_MAX_WORKERS; no limit counts as one worker a core) and
    the torchrun processes of one run: 1..8. Never more: measured on 2 cores
    (docs/benchmarks.md, busy machine), a thread beyond the free cores made recover ~29x
    slower once one other process ran, while a second thread on an idle machine gained ~11 %,
    and neither passive waiting (OMP_WAIT_POLICY) nor a short spin (GOMP_SPINCOUNT) kept the
    gain without a loss."""
    env = os.environ if env is None else env
    raw = env.get(THREADS_ENV, "").strip()
    if raw:
        if not raw.isdigit():
            from .utils import CvddError

            raise CvddError(f"{THREADS_ENV}={raw!r} is not a whole number; unset it or set e.g. 1")
        if int(raw) > 0:
            return int(raw)
    if config_threads > 0:
        return config_threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = max_workers(device_key(device, env), env) or (cores or 1)
    ranks = int(env.get("LOCAL_WORLD_SIZE", "1") or 1)  # torchrun: processes of this run here
    return max(1, min(MAX_THREADS, ((cores or 1) - 1) // (workers * max(1, ranks))))
