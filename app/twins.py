"""The SRe2L++ twin of a run, for the analysis pages: find it (config meta `twin_of`, either
direction), say where it stands, and offer one button that starts it (cvdd.twins, cvdd.jobs)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app import shaping, state
from cvdd import jobs, layout, twins
from cvdd.utils import CvddError

LIVE = "views/live.py"


def config_docs() -> dict[str, dict | None]:
    """run id -> config.json document of every run (each read is cached by size and mtime)."""
    docs = {}
    for row in state.all_runs(str(state.runs_root())):
        try:
            docs[row["run_id"]] = state.run_config(state.resolve(row["run_id"]))
        except CvddError:
            docs[row["run_id"]] = None
    return docs


def find(run_dir: Path) -> Path | None:
    """The run's twin folder, or None."""
    rid = twins.find_twin(run_dir.name, config_docs())
    if rid is None:
        return None
    try:
        return state.resolve(rid)
    except CvddError:
        return None


def method(run_dir: Path) -> str | None:
    """'cvdd' or 'sre2l++' from the run's config (None when unreadable)."""
    members = shaping.dig(state.run_config(run_dir), "config", "squeeze", "members")
    if not isinstance(members, list) or not members:
        return None
    return "sre2l++" if len(members) == 1 else "cvdd"


def labels(run_dir: Path, twin: Path) -> tuple[str, str]:
    """Legend names for the pair: the method first, then the run id."""
    names = {"cvdd": "CV-DD", "sre2l++": "SRe²L++", None: "run"}
    return (
        f"{names[method(run_dir)]} · {run_dir.name}",
        f"{names[method(twin)]} · {twin.name}",
    )


def same_weights(run_dir: Path, twin: Path, model: str) -> bool | None:
    """Whether both runs loaded `model` from the same committee file (None: unknown), so a
    figure measured with it compares like with like."""
    files = []
    for d in (run_dir, twin):
        doc = state.read_json_file(d / layout.MEMBERS)
        rows = doc.get("members") if isinstance(doc, dict) else None
        hit = [m for m in rows or [] if isinstance(m, dict) and m.get("name") == model]
        files.append(hit[0].get("file") if hit else None)
    return None if None in files else files[0] == files[1]


def _start(run_dir: Path, key: str) -> None:
    try:
        new = twins.create_twin(run_dir, state.runs_root(), launched_by="app")
        jobs.resume_job(new, wait=False)  # a created run starts like a resumed one
    except CvddError as e:
        st.session_state[key] = ("error", str(e))
        return
    st.session_state[key] = ("ok", new.name)


def bar(run_dir: Path, page_key: str) -> Path | None:
    """One line under the run header: the twin and its status, or the button that starts it
    (finished CV-DD runs only). Returns the twin's folder when it has one."""
    key = f"twin_msg_{page_key}"
    msg = st.session_state.pop(key, None)
    if msg and msg[0] == "error":
        st.error(f"Could not start the twin: {msg[1]}")
    twin = find(run_dir)
    if twin is not None:
        stat = state.status(twin)
        kind = (
            "its SRe²L++ twin"
            if method(twin) == "sre2l++"
            else "the CV-DD run it is the SRe²L++ twin of"
        )
        c1, c2 = st.columns([4, 1])
        c1.caption(
            f"This run is shown beside {kind}: **{twin.name}** ({stat['status']}). Same seed, "
            "IPC, data and budgets; the committee is the only difference."
        )
        c2.page_link(LIVE, label="Watch it", query_params={"run": twin.name})
        return twin
    if method(run_dir) == "cvdd" and state.status(run_dir)["status"] == "done":
        c1, c2 = st.columns([4, 1])
        c1.caption(
            "No SRe²L++ twin yet: the same run with a committee of one (same seed, IPC, data "
            "and budgets) puts the paper's comparisons (Fig. 4, Table 4) on this page."
        )
        c2.button(
            "Start SRe²L++ twin",
            key=f"twin_start_{page_key}",
            on_click=_start,
            args=(run_dir, key),
            icon=":material/call_split:",
        )
    return None
