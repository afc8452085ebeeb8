"""One run directory, the writer's side: creation, the worker lock, events, progress rows and
artifacts. Paths come from cvdd.layout; docs/rundir.md describes every file; the readers of
status (list, status, liveness) are cvdd/runs.py.

Rules: write the file (tmp + os.replace), then append the event that names it. Loads without
torch (checkpoints import it lazily).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import socket
import sys
import time
from pathlib import Path
from typing import Any

from . import layout
from .eta import Clocks, fmt_s
from .layout import read_events
from .utils import CvddError, atomic_write_bytes, atomic_write_json, encode, read_json

__all__ = ["RunDir", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1
LOCK_WAIT_S = 5.0  # a starting worker waits out status probes that hold the lock an instant
PROGRESS_EVERY_S = 1.0  # throttle for progress events (the UI polls every 1-2 s)


class RunDir:
    """Handle on one run directory (writer side and small read helpers)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock_fd: int | None = None
        self._seq = None
        self._last_progress: dict[str, float] = {}
        self.clocks = Clocks()  # the stages' and the run's ETA in this worker (cvdd/eta.py)
        self.echo = False  # print progress rows to stdout (CLI)

    # -- creation ---------------------------------------------------------------------------
    @classmethod
    def create(cls, runs_root: str | Path, config: dict, meta: dict | None = None) -> RunDir:
        """Make a new, uniquely named run dir and write config.json into it. Never reuses one."""
        root = Path(runs_root)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CvddError(f"cannot create runs folder {root}: {e}; pass --runs-dir DIR") from e
        ds = Path(str(config.get("data", {}).get("dataset", "data"))).name or "data"
        ds = re.sub(r"[^A-Za-z0-9]+", "", ds)[:20] or "data"
        for _ in range(100):
            run_id = (
                f"{time.strftime('%Y%m%d-%H%M%S')}-{ds}-ipc{config.get('ipc', 0)}-"
                f"{secrets.token_hex(2)}"
            )
            try:
                (root / run_id).mkdir()  # atomic: fails if another process took the name
                break
            except FileExistsError:
                continue
        else:
            raise CvddError(f"could not find a free run id in {root}")
        rd = cls(root / run_id)
        atomic_write_json(
            rd.path / layout.CONFIG,
            {
                "schema_version": SCHEMA_VERSION,
                "run_id": run_id,
                "created_t": time.time(),
                "config": config,
                "meta": meta or {},
            },
        )
        return rd

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        p = Path(path)
        if not (p / layout.CONFIG).is_file():
            raise CvddError(
                f"{p} is not a run directory (no config.json); "
                "pass a folder printed by 'python -m cvdd run'"
            )
        return cls(p)

    @property
    def run_id(self) -> str:
        return self.path.name

    def read_config(self) -> dict:
        doc = read_json(self.path / layout.CONFIG)
        if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict):
            raise CvddError(
                f"{self.path / layout.CONFIG} is missing or corrupt; "
                "this run cannot be resumed, start a new one"
            )
        return doc

    def update_meta(self, **meta: Any) -> None:
        doc = self.read_config()
        doc["meta"].update(meta)
        atomic_write_json(self.path / layout.CONFIG, doc)

    # -- lock -------------------------------------------------------------------------------
    def acquire_lock(self) -> None:
        """Hold worker.lock for the life of this process; a second worker is refused. A status
        probe (runs.is_alive) holds the lock shared for an instant, so a busy lock is retried
        for LOCK_WAIT_S before the run counts as taken."""
        fd = os.open(self.path / layout.LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        give_up = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < give_up:
                    time.sleep(0.05)
                    continue
            os.close(fd)
            raise CvddError(
                f"run {self.run_id} is already running in another process; "
                "stop it first or wait for it to end"
            ) from None
        self._lock_fd = fd
        atomic_write_json(
            self.path / layout.JOB,
            {
                "pid": os.getpid(),
                "argv": sys.argv,
                "started_t": time.time(),
                "host": socket.gethostname(),
            },
        )

    def release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- events -----------------------------------------------------------------------------
    def append_event(self, kind: str, stage: str | None = None, **fields: Any) -> dict:
        if self._seq is None:  # continue the numbering after a resume (foreign lines skipped)
            seqs = [e["seq"] for e in read_events(self.path) if isinstance(e.get("seq"), int)]
            self._seq = max(seqs) + 1 if seqs else 0
        ev = {"seq": self._seq, "t": round(time.time(), 3), "kind": kind}
        if stage is not None:
            ev["stage"] = stage
        ev.update(fields)
        line = json.dumps(ev, default=_plain) + "\n"
        with open(self.path / layout.EVENTS, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
        self._seq += 1
        return ev

    def log(self, msg: str, level: str = "info", stage: str | None = None) -> None:
        self.append_event("log", stage, level=level, msg=msg)
        if self.echo:
            print(f"[{stage or 'run'}] {msg}", flush=True)

    def stage_start(self, stage: str, **fields: Any) -> None:
        self.clocks.start(stage)
        self.append_event("stage_start", stage, **fields)
        if self.echo:
            print(f"== {stage}", flush=True)

    def stage_end(self, stage: str, seconds: float, metrics: dict | None = None) -> None:
        self.clocks.end(stage, seconds)
        self.append_event("stage_end", stage, seconds=round(seconds, 3), metrics=metrics or {})
        if self.echo:
            short = {k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float))}
            print(f"== {stage} done in {seconds:.1f}s {_fmt_metrics(short)}", flush=True)

    def progress(
        self,
        stage: str,
        step: int,
        total: int,
        metrics: dict | None = None,
        force: bool = False,
        label: str = "",
    ) -> None:
        """Throttled progress event (+ a fixed-column row on stdout for the CLI)."""
        now = time.time()
        eta, run_eta = self.clocks.update(stage, now, step, total)  # every call: every step
        last = self._last_progress.get(stage, 0.0)
        if not (force or step >= total or now - last >= PROGRESS_EVERY_S):
            return
        self._last_progress[stage] = now
        ev = dict(step=step, total=total, metrics=metrics or {})
        if eta is not None:
            ev["eta_s"] = round(eta, 1)
        ev["run_eta_s"] = None if run_eta is None else round(run_eta, 1)  # the whole run's
        if label:
            ev["label"] = label
        self.append_event("progress", stage, **ev)
        if self.echo:
            eta_txt = (f"eta {fmt_s(eta)}" if eta is not None else "") + (
                f"  run {fmt_s(run_eta)} left" if run_eta is not None else ""
            )
            print(
                f"[{stage:8s}] {label + ' ' if label else ''}{step:>6d}/{total:<6d} "
                f"{100 * step / max(total, 1):5.1f}%  {_fmt_metrics(metrics or {})}  {eta_txt}",
                flush=True,
            )

    # -- artifacts --------------------------------------------------------------------------
    def write_json(self, rel: str, obj: Any) -> Path:
        p = self.path / rel
        atomic_write_json(p, obj)
        return p

    def write_bytes(self, rel: str, data: bytes) -> Path:
        p = self.path / rel
        atomic_write_bytes(p, data)
        return p

    def save(self, rel: str, obj: Any) -> Path:
        """`obj` to the file `rel`, in the format its suffix names (cvdd.utils.encode)."""
        return self.write_bytes(rel, encode(obj, rel))

    def save_snapshot(self, stage: str, step: int, png: bytes, **meta: Any) -> str:
        rel = layout.snapshot_path(stage, step)
        self.write_bytes(rel, png)
        self.append_event("snapshot", stage, step=step, path=rel, **meta)
        return rel

    def save_checkpoint(self, stage: str, state: dict, cfg_hash: str, *, event: bool = True) -> str:
        """checkpoints/<stage>.pt; `event=False` for one that marks no progress (nothing done)."""
        rel = layout.checkpoint_path(stage)
        self.save(rel, {"stage": stage, "config_hash": cfg_hash, "saved_t": time.time(), **state})
        if event:
            self.append_event("checkpoint", stage, path=rel, step=state.get("step"))
        return rel

    def load_checkpoint(self, stage: str, cfg_hash: str) -> dict | None:
        import torch

        p = self.path / layout.checkpoint_path(stage)
        if not p.exists():
            return None
        try:
            ck = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # truncated / garbage file
            raise CvddError(
                f"checkpoint {p} is corrupt ({type(e).__name__}); delete it to redo "
                f"the {stage} stage from its start, then resume"
            ) from e
        if not isinstance(ck, dict) or ck.get("config_hash") != cfg_hash:
            raise CvddError(
                f"checkpoint {p} was written by a different config; delete it to redo "
                f"the {stage} stage, or start a new run"
            )
        return ck

    def finished_stages(self) -> set[str]:
        return {e.get("stage") for e in read_events(self.path) if e["kind"] == "stage_end"}


# ---------------------------------------------------------------------------------------------


def _plain(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def _fmt_metrics(m: dict) -> str:
    parts = []
    for k, v in m.items():
        if isinstance(v, float):
            parts.append(f"{k} {v:.4g}")
        elif isinstance(v, int):
            parts.append(f"{k} {v}")
    return "  ".join(parts)
