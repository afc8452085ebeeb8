"""Where the UI reads from: the runs root, the run in view (`?run=<id>`), cached file readers.

Every reader is keyed by (path, size, mtime) so that all tabs share one parse and a file that
changed on disk is read again. Readers return None for a missing, torn or corrupt file; pages
turn that into an st.info / st.warning, never a traceback.
"""
from __future__ import annotations

import os
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


@st.cache_data(max_entries=64, show_spinner=False)
def _jsonl(path: str, size: int, mtime: int, require: str | None = None) -> list[dict]:
    return layout.read_jsonl(path, require)


@st.cache_data(max_entries=64, show_spinner=False)
def _npz(path: str, size: int, mtime: int) -> dict | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception:  # noqa: BLE001 -- truncated zip, bad header, pickle: absent
        return None


@st.cache_data(max_entries=128, show_spinner=False)
def _png(path: str, size: int, mtime: int) -> np.ndarray | None:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except Exception:  # noqa: BLE001 -- a torn or foreign file reads as absent
        return None


def read_json_file(path: Path):
    k = _stat(path)
    return _json(*k) if k else None


def read_jsonl_file(path: Path, require: str | None = None) -> list[dict]:
    k = _stat(path)
    return _jsonl(*k, require) if k else []


def read_npz_file(path: Path) -> dict | None:
    k = _stat(path)
    return _npz(*k) if k else None


def read_png_file(path: Path) -> np.ndarray | None:
    k = _stat(path)
    return _png(*k) if k else None


def events(run_dir: Path) -> list[dict]:
    return read_jsonl_file(run_dir / layout.EVENTS, require="kind")


def status(run_dir: Path) -> dict:
    """Derived status (the lock probe is not cached: it is what tells 'running')."""
    return runs.run_status(run_dir, events(run_dir))


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


@st.cache_data(ttl=2, show_spinner=False)
def all_runs(root: str) -> list[dict]:
    """cvdd.runs.list_runs, cached for 2 s (it probes every run's lock)."""
    return runs.list_runs(root)


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
