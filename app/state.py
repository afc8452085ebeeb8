"""Where the UI reads from: the runs root, the run in view (`?run=<id>`), cached file readers.

Every tab polls, so nothing here re-reads what it read before. File readers are keyed by
(path, size, mtime): all tabs share one parse, and a file that changed is read again. Arrays
come from st.cache_resource, which hands out the cached object itself rather than a pickled
copy (cache_data would copy a whole image set on every poll); they are marked read-only so no
caller can change the shared copy. Growing JSON-lines files (events, the loss trace) are
tailed: each poll parses only the lines appended since. Readers return None for a missing,
torn or corrupt file; pages turn that into an st.info / st.warning, never a traceback.
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from app import shaping
from cvdd import jobs, layout, runs
from cvdd.utils import CvddError, read_json

REPO = Path(__file__).resolve().parent.parent
RUN_KEY = "cvdd_run"  # session fallback for the run in view (page links may drop the URL query)
KICK_EVERY_S = 2.0  # how often this server looks for a queued run whose worker slot freed

# Streamlit runs a full garbage collection after every script run (runner.postScriptGC), and
# every watching tab reruns its fragments every 2-5 s. A full collection walks every object
# the process holds, nearly all of them from the modules loaded by now (streamlit, pandas,
# plotly): 42 ms per collection, 0.4 ms once they are frozen (measured). They live as long as
# the process, so take them out of the collector's walk, once; later objects are collected
# as usual.
gc.freeze()


@st.cache_data(ttl=600, show_spinner=False)
def gpu_count() -> int:
    """CUDA devices on the app's machine (nvidia-smi, read every 10 minutes at most)."""
    return jobs.gpu_count()


def runs_root() -> Path:
    return Path(os.environ.get("CVDD_RUNS_DIR") or REPO / "runs")


def _stat(path: Path) -> tuple[str, int, int] | None:
    try:
        s = path.stat()
    except OSError:
        return None
    return str(path), s.st_size, s.st_mtime_ns


# -- cached readers (the key arguments make the cache follow the file) ------------------------


@st.cache_data(max_entries=256, show_spinner=False)
def _json(path: str, size: int, mtime: int):
    return read_json(path)


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False  # shared by every session: a caller must copy before changing it
    return a


# Few entries: an npz can be a whole distilled set (gigabytes at ImageNet scale).
@st.cache_resource(max_entries=8, show_spinner=False)
def _npz(path: str, size: int, mtime: int) -> types.MappingProxyType | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return types.MappingProxyType({k: _frozen(z[k]) for k in z.files})
    except Exception:  # truncated zip, bad header, pickled object: reads as absent
        return None


@st.cache_resource(max_entries=64, show_spinner=False)
def _png(path: str, size: int, mtime: int) -> np.ndarray | None:
    try:
        with Image.open(path) as im:
            return _frozen(np.asarray(im.convert("RGB")))
    except Exception:  # a torn or foreign file reads as absent
        return None


class _Tail:
    """A growing JSON-lines file, read with layout.JsonlTail (only appended bytes are parsed)
    and shared by every session. `fold(new_records, previous)` keeps a summary of all records
    up to date from the new ones alone, and returns a new value instead of changing
    `previous`, so what read() handed out stays valid while other tabs read on. keep=False
    drops the records once folded: then a long run costs one summary, not a dict per line
    (fewer objects also keep Python's garbage collector quick)."""

    def __init__(self, path: str, require: str | None, fold: Callable, keep: bool):
        self._tail = layout.JsonlTail(path, require)
        self._lock = threading.Lock()  # the script threads of several tabs read at once
        self._fold_fn, self._keep = fold, keep
        self._seen: list | None = None  # JsonlTail's record list; a new one = it started over
        self._n = 0
        self._fold = None

    def read(self) -> tuple[list[dict], Any]:
        """(the records so far, [] with keep=False; the fold of all of them)."""
        with self._lock:
            recs = self._tail.read()  # extended in place; replaced when the file was
            if recs is not self._seen:
                self._seen, self._n, self._fold = recs, 0, self._fold_fn([], None)
            if len(recs) > self._n:
                self._fold = self._fold_fn(recs[self._n :], self._fold)
            if not self._keep:
                recs.clear()  # folded: JsonlTail never looks at old records again
            self._n = len(recs)
            return (list(recs) if self._keep else []), self._fold


def _fold_trace(new: list[dict], prev: pd.DataFrame | None) -> pd.DataFrame:
    part = shaping.trace_df(new)
    if prev is None or prev.empty:
        return part
    if part.empty:
        return prev
    out = pd.concat([prev, part], ignore_index=True)
    if part["step"].min() > prev["step"].max():
        return out  # the usual case: later steps
    # a resumed run repeats the steps after its checkpoint: the last record of a step wins
    return out.drop_duplicates("step", keep="last").sort_values("step", ignore_index=True)


@st.cache_resource(max_entries=16, show_spinner=False)
def _events(path: str) -> _Tail:
    return _Tail(path, "kind", runs.fold_events, keep=True)


@st.cache_resource(max_entries=4096, show_spinner=False)
def _events_fold(path: str) -> _Tail:
    return _Tail(path, "kind", runs.fold_events, keep=False)


@st.cache_resource(max_entries=16, show_spinner=False)
def _trace(path: str) -> _Tail:
    return _Tail(path, None, _fold_trace, keep=False)


@st.cache_resource(max_entries=4096, show_spinner=False)
def _summary(path: str, config_key: tuple | None, result_key: tuple | None) -> dict:
    return runs.run_summary(path)


def read_json_file(path: Path):
    k = _stat(path)
    return _json(*k) if k else None


def trace(run_dir: Path) -> pd.DataFrame:
    """recover/trace.jsonl as shaping.trace_df, grown by the appended lines only (read-only)."""
    return _trace(str(run_dir / layout.TRACE)).read()[1]


def read_npz_file(path: Path) -> types.MappingProxyType | None:
    """The arrays of an npz, read-only (shared by all sessions), or None."""
    k = _stat(path)
    return _npz(*k) if k else None


def read_png_file(path: Path) -> np.ndarray | None:
    """An image as a read-only (H, W, 3) uint8 array (shared by all sessions), or None."""
    k = _stat(path)
    return _png(*k) if k else None


def events(run_dir: Path) -> list[dict]:
    """Every event of a run so far; the caller must not change them (they are shared)."""
    return _events(str(run_dir / layout.EVENTS)).read()[0]


_kicked: dict[str, float] = {}  # runs root -> when this process last kicked its queue
_kick_lock = threading.Lock()


def kick_queue(root: Path) -> None:
    """Start queued runs whose worker slot has freed (cvdd.jobs.kick_queue), at most every
    KICK_EVERY_S per runs root. A worker hands its slot on as it exits, but one killed by
    kill -9 cannot, and no server thread watches for that: the pages' polls do, cheaply (one
    read of a small file while nothing waits)."""
    now = time.monotonic()
    with _kick_lock:  # several tabs' script threads poll at once: one kick per period
        if now - _kicked.get(str(root), -KICK_EVERY_S) < KICK_EVERY_S:
            return
        _kicked[str(root)] = now
    # a read-only or vanished runs folder: the pages show what is there
    with contextlib.suppress(OSError, CvddError):
        jobs.kick_queue(root)


def status(run_dir: Path) -> dict:
    """Derived status. Only the events are cached (tailed); the lock probe and the queue are
    read every time: they are what tell 'running' and 'queued'."""
    kick_queue(run_dir.parent)
    return runs.run_status(run_dir, folded=_events(str(run_dir / layout.EVENTS)).read()[1])


def run_config(run_dir: Path) -> dict | None:
    doc = read_json_file(run_dir / layout.CONFIG)
    return doc if isinstance(doc, dict) and isinstance(doc.get("config"), dict) else None


def class_names(run_dir: Path) -> list[str]:
    doc = run_config(run_dir) or {}
    names = (doc.get("meta") or {}).get("class_names")
    if not names:
        div = read_json_file(run_dir / layout.DIVERSITY) or {}
        names = div.get("class_names")
    return [str(n) for n in names] if isinstance(names, list) else []


def worker_log(run_dir: Path, n: int = 40) -> str:
    try:
        with open(run_dir / layout.WORKER_LOG, "rb") as f:
            f.seek(max(0, os.path.getsize(run_dir / layout.WORKER_LOG) - 20000))
            return shaping.tail_lines(f.read(), n)
    except OSError:
        return ""


def _summary_of(run_dir: Path) -> dict:
    return _summary(str(run_dir), _stat(run_dir / layout.CONFIG), _stat(run_dir / layout.RESULT))


def _fold_of(run_dir: Path) -> dict:
    return _events_fold(str(run_dir / layout.EVENTS)).read()[1]


def all_runs(root: str) -> list[dict]:
    """cvdd.runs.list_runs, re-reading only what changed: events are tailed and folded, the
    config/result summary is reused while both files are unchanged. The lock probe is not
    cached (it is what tells 'running'); it costs one open + flock per run. The queue is
    kicked first (see kick_queue), so a run it starts lists as 'starting'."""
    kick_queue(Path(root))
    return runs.list_runs(root, summary_of=_summary_of, fold_of=_fold_of)


# -- the run in view --------------------------------------------------------------------------


def current_run_id() -> str | None:
    """`?run=` from the URL; when a page link dropped it, restore it from this session."""
    rid = st.query_params.get("run")
    if rid:
        st.session_state[RUN_KEY] = rid
        return rid
    rid = st.session_state.get(RUN_KEY)
    if rid:
        st.query_params["run"] = rid
    return rid


def set_run(rid: str | None) -> None:
    if rid:
        st.query_params["run"] = rid
        st.session_state[RUN_KEY] = rid
    else:
        st.query_params.pop("run", None)
        st.session_state.pop(RUN_KEY, None)


def resolve(rid: str) -> Path:
    """Run id -> folder; raises CvddError for a bad id or a folder that is not a run."""
    p = runs.resolve_run(runs_root(), rid)
    if not p.is_dir():
        raise CvddError(f"run {rid!r} not found in {runs_root()}")
    return p


__all__ = [
    "CvddError",
    "all_runs",
    "class_names",
    "current_run_id",
    "events",
    "kick_queue",
    "read_json_file",
    "read_npz_file",
    "read_png_file",
    "resolve",
    "run_config",
    "runs_root",
    "set_run",
    "status",
    "trace",
    "worker_log",
]
