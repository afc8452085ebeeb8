"""The New run page's drop zone for a zipped image folder (not a page of its own).

`zip_drop_zone(...)` shows a file uploader; a dropped zip is saved once into the runs folder
(`_uploads/<sha256[:16]>/<its name>.zip`), checked by the engine in a separate process
(`python -m cvdd check-data --json`: the archive is extracted into the runs folder's data area
there, so the run reuses it, and a hostile archive never touches the server process), and the
summary is shown:
classes, images per class, sizes and channels, what was skipped, the test split, the time the
run will take. It returns the saved zip's path for `data.dataset`, or None (nothing dropped, or
the archive was refused; the one-line reason is shown).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import streamlit as st

from cvdd import layout

_PKG_ROOT = Path(__file__).resolve().parents[1]
CHECK_TIMEOUT_S = 600


def save_upload(data: bytes, runs_root: Path, name: str = "upload.zip") -> Path:
    """The archive at `<runs>/_uploads/<sha256[:16]>/<name>`, written once (temp file +
    rename): the file's own name (made safe) names the runs, the hash keeps uploads apart."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name).name).removesuffix(".zip").strip("._")
    folder = Path(runs_root).resolve() / layout.UPLOADS / hashlib.sha256(data).hexdigest()[:16]
    path = folder / f"{stem[:40] or 'upload'}.zip"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{path.name}.{os.getpid()}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return path


def run_check(
    path: Path, runs_root: Path, *, preset: str, ipc: int, estimate: bool = True
) -> tuple[dict | None, str | None]:
    """(summary, None), or (None, the engine's one-line error) for the zip at `path`."""
    root = str(Path(runs_root).resolve())
    argv = [sys.executable, "-m", "cvdd", "check-data", str(path), "--json", "--preset", preset]
    argv += ["--ipc", str(int(ipc)), "--runs-dir", root] + ([] if estimate else ["--no-estimate"])
    # the engine of this app, whatever folder the server runs from
    paths = [str(_PKG_ROOT), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, paths)))
    try:
        out = subprocess.run(
            argv, cwd=_PKG_ROOT, env=env, capture_output=True, text=True, timeout=CHECK_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        return None, f"the check took over {CHECK_TIMEOUT_S} s; try a smaller archive"
    if out.returncode != 0:
        lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
        return None, (lines[-1] if lines else "the check failed").removeprefix("error: ")
    return json.loads(out.stdout.strip().splitlines()[-1]), None


def _minutes(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.1f} min"


def show_summary(s: dict) -> None:
    """The check's findings, in the order a user asks about them."""
    est = s.get("estimate") or {}
    # one line, not four metrics: the drop zone sits in a narrow column, where metric labels
    # and values were cut to "Training ..." and "3..."
    line = (
        f"**{len(s['classes'])}** classes · **{sum(s['train_per_class']):,}** training images · "
        f"**{sum(s['test_per_class']):,}** test images"
    )
    if est:
        line += f" · the run: about **{_minutes(est['total_s'])}** here"
    st.markdown(line, help=est.get("basis"))
    rows = [
        {"class": n, "train": a, "test": b}
        for n, a, b in zip(s["classes"], s["train_per_class"], s["test_per_class"])
    ]
    st.dataframe(rows, hide_index=True, height=min(36 * len(rows) + 38, 300))
    found = ", ".join(f"`{k}` ({v})" for k, v in (s.get("sizes_found") or {}).items())
    st.caption(
        f"Images: {s['image_size']} x {s['image_size']} px, {s['channels']} channel(s) "
        f"({s['size_rule']})." + (f" Sizes found: {found}." if found else "")
    )
    split = s["test_split"]
    st.caption(
        f"Test split: held out {split['fraction']:.0%} of each class (seed {split['seed']}), the "
        "same for every run on this zip."
        if s["held_out"]
        else f"Test split: {split['source']}."
    )
    if s.get("skipped"):
        st.caption("Skipped: " + "; ".join(f"{n} {why}" for why, n in s["skipped"].items()) + ".")
    if est:
        cached = est.get("cached") or []
        st.caption(
            "Time by stage: "
            + ", ".join(f"{k} {_minutes(v)}" for k, v in est["stages"].items() if v >= 0.5)
            + (
                f" ({' and '.join(cached)}: the committee trained on this zip before, from the "
                "cache)"
                if cached
                else ""
            )
        )
    if s.get("ipc_problem"):
        st.error(s["ipc_problem"])


def zip_drop_zone(runs_root: Path, *, preset: str, ipc: int, key: str = "nr_zip") -> str | None:
    """Uploader + check + summary; the saved zip's path when it can be used, else None."""
    up = st.file_uploader(
        "Zipped image folder (class folders, or train/ + test/)", type=["zip"], key=key
    )
    if up is None:
        return None
    path = save_upload(up.getvalue(), runs_root, up.name)
    memo = st.session_state.setdefault(f"{key}_checks", {})
    if (str(path), preset, ipc) not in memo:
        with st.spinner("Checking the archive and timing the models on this machine..."):
            memo[(str(path), preset, ipc)] = run_check(path, runs_root, preset=preset, ipc=ipc)
    summary, error = memo[(str(path), preset, ipc)]
    if error:
        st.error(error)
        return None
    show_summary(summary)
    return None if summary.get("ipc_problem") else str(path)
