"""The runs root, the reader's side: every run's derived status, the runs list, whether a worker
holds a run, and the one door from a run id to its folder. The app reads runs through here
(cvdd/rundir.py is the writer). Status is derived from events + lock + queue, never stored.
Torch-free; never raises on torn or partial files.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import layout
from .queue import read_entries
from .status import fold_events, queue_place, run_summary, spawn_pending
from .utils import CvddError

# fold_events and run_summary live in cvdd/status.py; they are named here because the app reads
# runs through this module alone (tests/test_layering.py)
__all__ = ["run_status", "list_runs", "run_summary", "fold_events", "is_alive", "resolve_run"]

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# the fields of a runs-list row
_ROW_KEYS = (
    "run_id",
    "status",
    "stage",
    "preset",
    "dataset",
    "ipc",
    "members",
    "student_top1",
    "created_t",
    "updated_t",
    "queue",
)


def is_alive(run_dir: str | Path) -> bool:
    """True while a worker holds the run's lock (works across server restarts and kill -9).
    The probe takes a shared lock: probes never see each other as a worker, and a worker that
    starts during a probe waits it out (RunDir.acquire_lock retries)."""
    p = Path(run_dir) / layout.LOCK
    if not p.exists():
        return False
    try:
        fd = os.open(p, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def run_status(
    run_dir: str | Path,
    events: list[dict] | None = None,
    folded: dict | None = None,
    queue_entries: list[dict] | None = None,
) -> dict:
    """Derived status: {status, stage, step, total, eta_s, run_eta_s, updated_t, error,
    stages_done, queue} (queue: {pos, of, device} while 'queued', cvdd/queue.py). `folded`
    (fold_events) or `events` spare a re-read of events.jsonl, `queue_entries` one of the runs
    root's queue; the lock and a pending spawn are probed afresh: they say 'running' /
    'starting'."""
    run_dir = Path(run_dir)
    if folded is None:
        folded = fold_events(layout.read_events(run_dir) if events is None else events)
    keys = ("stage", "step", "total", "eta_s", "run_eta_s", "updated_t")
    out: dict[str, Any] = {k: folded.get(k) for k in keys}
    out.update(status="created", error=None, stages_done=list(folded["stages_done"]), queue=None)
    end = folded["end"]
    if is_alive(run_dir):
        out["status"] = "running"
    elif spawn_pending(run_dir, folded["updated_t"]):
        out["status"] = "starting"
    elif place := queue_place(run_dir, queue_entries):  # waits for a worker slot
        out.update(status="queued", queue=place)
    elif end is not None and end["kind"] == "run_end":
        out.update(status=end["status"], error=end["error"])
    elif folded["n"]:
        out["status"] = "crashed"
    return out


def resolve_run(runs_root: str | Path, run_id: str) -> Path:
    """Map a run id from a URL or form to its folder; nothing outside runs_root is reachable."""
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id) or run_id in (".", ".."):
        raise CvddError(f"invalid run id {run_id!r}")
    root = Path(runs_root).resolve()
    p = (root / run_id).resolve()
    if p.parent != root:
        raise CvddError(f"invalid run id {run_id!r}")
    return p


def list_runs(
    runs_root: str | Path,
    summary_of: Callable[[Path], dict] = run_summary,
    fold_of: Callable[[Path], dict] | None = None,
) -> list[dict]:
    """Every run folder (newest first) with config summary and derived status.

    A caller that polls (the UI) passes `summary_of` / `fold_of` readers that reuse what they
    parsed before; by default every file is read afresh. Never raises for a damaged folder."""
    root = Path(runs_root)
    rows = []
    try:
        folders = sorted(
            (p for p in root.iterdir() if not p.name.startswith(("_", "."))), reverse=True
        )
    except OSError:
        return rows
    waiting = read_entries(root)  # one read of the queue for every row
    for p in folders:
        row: dict[str, Any] = dict.fromkeys(_ROW_KEYS)
        row.update(run_id=p.name, status="corrupt")
        try:
            if not p.is_dir():
                continue
            s = summary_of(p)
            st = run_status(p, folded=fold_of(p) if fold_of else None, queue_entries=waiting)
            row.update(
                {k: v for k, v in s.items() if k != "ok"},
                stage=st["stage"],
                status=st["status"] if s["ok"] else "corrupt",
                updated_t=st["updated_t"],
                queue=st["queue"],
            )
        except Exception:  # leftovers of a crash or another tool: never raise
            pass  # the row stays 'corrupt'
        rows.append(row)
    return rows
