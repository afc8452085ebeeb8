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

import os
import threading
import types
from pathlib import Path

import numpy as np
import streamlit as st
from PIL import Image

from app import shaping
from cvdd import layout, runs
from cvdd.utils import CvddError, read_json

REPO = Path(__file__).resolve().parent.parent
RUN_KEY = "cvdd_run"  # session fallback for the run in view (page links may drop the URL query)


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
    except Exception:  # noqa: BLE001 -- truncated zip, bad header, pickle: absent
        return None


@st.cache_resource(max_entries=64, show_spinner=False)
def _png(path: str, size: int, mtime: int) -> np.ndarray | None:
    try:
        with Image.open(path) as im:
            return _frozen(np.asarray(im.convert("RGB")))
    except Exception:  # noqa: BLE001 -- a torn or foreign file reads as absent
        return None


class _Tail:
    """A growing JSON-lines file, read with layout.JsonlTail (only appended bytes are parsed)
    and shared by every session. With fold=True it keeps runs.fold_events of the records up to
    date; with keep=False it drops the records once folded, so that a runs list of many long
    runs holds one small dict per run instead of their whole histories."""

    def __init__(self, path: str, require: str | None, fold: bool, keep: bool):
        self._tail = layout.JsonlTail(path, require)
        self._lock = threading.Lock()  # the script threads of several tabs read at once
        self._fold_on, self._keep = fold, keep
        self._seen: list | None = None  # JsonlTail's record list; a new one = it started over
        self._n = 0
        self._fold: dict | None = None

    def read(self) -> tuple[list[dict], dict | None]:
        """(a copy of the records, [] with keep=False; a copy of the fold, None without)."""
        with self._lock:
            recs = self._tail.read()  # extended in place; replaced when the file was
            if recs is not self._seen:
                self._seen, self._n, self._fold = recs, 0, None
            if self._fold_on and (self._fold is None or len(recs) > self._n):
                self._fold = runs.fold_events(recs[self._n:], self._fold)
            if not self._keep:
                recs.clear()  # folded: JsonlTail never looks at old records again
            self._n = len(recs)
            fold = self._fold and dict(self._fold, stages_done=list(self._fold["stages_done"]))
            return (list(recs) if self._keep else []), fold


@st.cache_resource(max_entries=16, show_spinner=False)
def _tail(path: str, require: str | None = None, fold: bool = False) -> _Tail:
    return _Tail(path, require, fold, keep=True)


@st.cache_resource(max_entries=4096, show_spinner=False)
def _fold_only(path: str) -> _Tail:
    return _Tail(path, "kind", fold=True, keep=False)


@st.cache_resource(max_entries=4096, show_spinner=False)
def _summary(path: str, config_key: tuple | None, result_key: tuple | None) -> dict:
    return runs.run_summary(path)


def read_json_file(path: Path):
    k = _stat(path)
    return _json(*k) if k else None


def read_jsonl_file(path: Path, require: str | None = None) -> list[dict]:
    """Every record of a JSON-lines file; the caller must not change them (they are shared)."""
    return _tail(str(path), require).read()[0]


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
    return _tail(str(run_dir / layout.EVENTS), "kind", True).read()[0]


def status(run_dir: Path) -> dict:
    """Derived status. Only the events are cached (tailed); the lock probe runs every time:
    it is what tells 'running'."""
    fold = _tail(str(run_dir / layout.EVENTS), "kind", True).read()[1]
    return runs.run_status(run_dir, folded=fold)


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
    return _fold_only(str(run_dir / layout.EVENTS)).read()[1]


def all_runs(root: str) -> list[dict]:
    """cvdd.runs.list_runs, re-reading only what changed: events are tailed and folded, the
    config/result summary is reused while both files are unchanged. The lock probe is not
    cached (it is what tells 'running'); it costs one open + flock per run."""
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
    "read_json_file",
    "read_jsonl_file",
    "read_npz_file",
    "read_png_file",
    "resolve",
    "run_config",
    "runs_root",
    "set_run",
    "status",
    "worker_log",
]
