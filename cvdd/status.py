"""The parts of a run's status that can be computed once and reused: an incremental fold of
events.jsonl, the config/result summary of a runs-list row, and whether a worker that cvdd.jobs
spawned is still starting, and a run's place in the queue of its runs root (cvdd/queue.py).
cvdd.runs.run_status / list_runs join them with the lock probe.

Torch-free and tolerant: a damaged file gives a default, never an exception.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

from . import layout, queue
from .utils import read_json

__all__ = ["SPAWN_GRACE_S", "fold_events", "queue_place", "run_summary", "spawn_pending"]

SPAWN_GRACE_S = 120.0  # a spawned worker that holds no lock after this long is not 'starting'


def fold_events(evs: Iterable[dict], acc: dict | None = None) -> dict:
    """The event-derived part of run_status. Folding is incremental: pass the previous result
    as `acc` and only the events appended since, so a tailing reader never re-reads a file.
    Returns a new dict and leaves `acc` as it was (readers in other tabs may still hold it)."""
    if acc is not None:
        acc = dict(acc, stages_done=list(acc["stages_done"]))
    acc = acc or {
        "n": 0,
        "stage": None,
        "step": None,
        "total": None,
        "eta_s": None,
        "run_eta_s": None,
        "updated_t": None,
        "stages_done": [],
        "end": None,
    }
    for e in evs:
        k = e.get("kind")
        if k == "stage_start":
            acc.update(stage=e.get("stage"), step=0, total=None, eta_s=None)  # run_eta_s stays
        elif k == "progress":
            acc.update(
                stage=e.get("stage"), step=e.get("step"), total=e.get("total"), eta_s=e.get("eta_s")
            )
            acc["run_eta_s"] = e.get("run_eta_s")  # the whole run's, cvdd/eta.py
        elif k == "stage_end":
            acc["stages_done"].append(e.get("stage"))
        elif k in ("run_start", "run_end"):  # the last of these says how the attempt ended
            acc["end"] = {"kind": k, "status": e.get("status", "failed"), "error": e.get("error")}
        acc["n"] += 1
        acc["updated_t"] = e.get("t")
    return acc


def spawn_pending(run_dir: Path, last_event_t: float | None) -> bool:
    """A worker spawned by cvdd.jobs that has not taken the lock yet (python and torch still
    importing). jobs writes `spawned_t` into job.json; the worker's own job.json drops it."""
    job = read_json(run_dir / layout.JOB)
    t, pid = (job.get("spawned_t"), job.get("pid")) if isinstance(job, dict) else (None, None)
    if not isinstance(t, (int, float)) or not isinstance(pid, int) or pid <= 0:
        return False
    if time.time() - t > SPAWN_GRACE_S:
        return False  # too old to be believed (and the pid may be another process by now)
    if isinstance(last_event_t, (int, float)) and last_event_t > t:
        return False  # the worker wrote events since: it ran (and, without its lock, ended)
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except ProcessLookupError:
        return False
    except OSError:  # no /proc (or not our process): the pid exists, trust it
        return True
    return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]  # an unreaped dead child is a zombie


def queue_place(run_dir: Path, entries: list[dict] | None = None) -> dict | None:
    """{pos, of, device} while the run waits in its runs root's queue, else None. `entries`
    (queue.read_entries of the parent folder) spares a re-read when listing many runs."""
    if entries is None:
        entries = queue.read_entries(run_dir.parent)
    return queue.place(entries, run_dir.name)


def run_summary(run_dir: str | Path) -> dict:
    """The slowly changing part of a runs-list row: config.json and result.json fields."""
    doc = read_json(Path(run_dir) / layout.CONFIG)
    doc = doc if isinstance(doc, dict) else {}
    cfg = doc.get("config") if isinstance(doc.get("config"), dict) else {}
    res = read_json(Path(run_dir) / layout.RESULT)
    data, squeeze = cfg.get("data"), cfg.get("squeeze")
    return {
        "ok": bool(doc),
        "preset": cfg.get("name"),
        "dataset": data.get("dataset") if isinstance(data, dict) else None,
        "ipc": cfg.get("ipc"),
        "members": squeeze.get("members") if isinstance(squeeze, dict) else None,
        "student_top1": res.get("student_top1") if isinstance(res, dict) else None,
        "created_t": doc.get("created_t"),
    }
