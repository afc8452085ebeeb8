"""Live run: stage progress, image grid, loss curves, committee; Stop / Resume / Clone.

Two fragments refresh themselves while the run is queued, starting or running (progress every 2 s,
images and curves every 5 s); nothing here blocks: Resume returns as soon as the worker
process is spawned, and the page says 'starting' until that process holds the run's lock.
"""

from __future__ import annotations

import streamlit as st

from app import checks, shaping, spread, state
from app import components as C
from cvdd import jobs, layout, report
from cvdd.utils import CvddError

run_dir = C.run_header("live", "Live run", show_status=False)
if run_dir is None:
    st.stop()
rid = run_dir.name
stat0 = state.status(run_dir)
running = stat0["status"] == "running"
queued = stat0["status"] == "queued"  # waits for a worker slot on its device (cvdd/queue.py)
active = running or queued or stat0["status"] == "starting"  # poll until it runs and ends


def _config_failure(evs: list[dict]) -> dict | None:
    """The run_end of a run that failed on its settings, where a resume would fail the same
    way: the worker named the config key at fault (`field`), or no stage ever started."""
    if stat0["status"] != "failed":
        return None
    end = next((e for e in reversed(evs) if e.get("kind") == "run_end"), None) or {}
    if end.get("field") or not any(e.get("kind") == "stage_start" for e in evs):
        return end
    return None


def _fix(end: dict) -> str:
    """What to change, in the page's terms (the engine's message speaks CLI)."""
    doc = state.run_config(run_dir) or {}
    field, init = end.get("field"), (doc.get("config") or {}).get("init") or {}
    if field == "ipc":
        n = ((doc.get("meta") or {}).get("dataset") or {}).get("images_per_class")
        f2 = int(init.get("factor") or 1) ** 2 if init.get("method", "rded") == "rded" else 1
        if isinstance(n, int) and n > 0:
            return (
                f"IPC is larger than the {n:,} images per class: **Clone** this run with "
                f"IPC ≤ {n // f2:,}."
            )
        return "IPC is larger than the data set's classes: **Clone** this run with a lower IPC."
    if field == "data.dataset":
        return "The data set could not be read: **Clone** this run and choose another one."
    if field:
        label = checks.LABELS.get(field, f"`{field}`")
        return f"The setting {label} cannot work: **Clone** this run and change it."
    return "The run failed before its first stage: **Clone** this run and change its settings."


bad_config = _config_failure(state.events(run_dir))
fix = _fix(bad_config) if bad_config is not None else None

# -- actions ------------------------------------------------------------------------------------
bar = st.container(horizontal=True, vertical_alignment="center")
msg = st.empty()
if bar.button(
    "Remove from queue" if queued else "Stop",
    icon=":material/stop_circle:",
    key="stop",
    disabled=not (running or queued),
    help="The run leaves the queue and ends as 'stopped'; no worker starts."
    if queued
    else "The worker finishes its step, saves a checkpoint and ends as 'stopped'.",
):
    if queued and jobs.stop_job(run_dir):
        st.toast("Removed from the queue: the run is stopped, no worker started.")
        st.rerun()  # the buttons above were drawn for a queued run
    elif jobs.stop_job(run_dir):
        st.toast("Stop requested: the worker checkpoints and ends.")
    else:
        st.toast("This run is not running.")
resumable = stat0["status"] in ("stopped", "crashed", "failed") and fix is None
if bar.button(
    "Resume",
    icon=":material/play_arrow:",
    key="resume",
    disabled=not resumable,
    help="Continue from the last checkpoint in a new worker process."
    if fix is None
    else "This run failed on its settings: resuming would fail the same way. Clone it.",
):
    try:
        if jobs.resume_job(run_dir, wait=False):
            st.toast("Resuming: the worker starts, or waits in the queue for a free slot.")
            st.rerun()
        else:
            msg.warning("Already running (started from another tab or process); not started again.")
    except CvddError as e:
        msg.error(str(e))
if bar.button(
    "Clone",
    icon=":material/content_copy:",
    key="clone",
    type="primary" if fix else "secondary",
    disabled=state.run_config(run_dir) is None,
    help="New run with this run's settings (you can edit them first).",
):
    st.switch_page(C.NEW_RUN, query_params={"clone": rid})
if stat0["status"] == "done":  # built when clicked (in a thread): the page never waits for it
    bar.download_button(
        "Download report",
        data=lambda: report.build_html(run_dir).encode("utf-8"),
        file_name=report.report_file_name(run_dir),
        mime="text/html",
        on_click="ignore",
        key="report_dl",
        icon=":material/description:",
        help="This run as one HTML page: settings, committee, images, BN figure, soft labels, "
        "diversity and the students' top-1. Opens offline and prints on A4 as a handout.",
    )
bar.page_link("views/diversity.py", label="SRe²L++ twin, Fig. 4", icon=":material/call_split:")
paused = bar.toggle(
    "Pause live updates",
    key=f"pause_{rid}",
    disabled=not active,
    help="Freeze the panels (e.g. to zoom into a chart) while the run goes on.",
)
live = active and not paused


def _check_transition() -> None:
    # run_every is fixed per full run: when the run ends, rerun the page once to stop polling
    if state.status(run_dir)["status"] != stat0["status"]:
        st.rerun(scope="app")


# -- progress (cheap, every 2 s) ------------------------------------------------------------
@st.fragment(run_every=2 if live else None)
def progress_panel() -> None:
    if live:
        _check_transition()
    evs = state.events(run_dir)
    stat = state.status(run_dir)
    C.status_line(stat, fix if stat["status"] == "failed" else None)
    if stat.get("queue"):  # where it stands; it starts by itself, no tab needs to stay open
        q = stat["queue"]
        st.caption(
            f"queued, position {q['pos']} of {q['of']} for {q['device']}: it starts by itself "
            "when a worker there ends. **Remove from queue** cancels it."
        )
    with C.guard("the stage progress"):
        left, right = st.columns([3, 2])
        with left:
            doc = state.run_config(run_dir) or {}
            C.stage_progress(evs, stat, shaping.config_summary(doc.get("config") or {})["members"])
        with right:
            res = state.read_json_file(run_dir / layout.RESULT)
            m = st.columns(2)
            m[0].metric("status", stat["status"])
            m[1].metric(
                "student top-1",
                f"{res['student_top1']:.1f} %"
                if isinstance(res, dict) and res.get("student_top1") is not None
                else "—",
            )
            spread.show(run_dir)  # the typical seed spread beside one seed's number
            if stat["status"] == "running" and stat.get("run_eta_s") is not None:
                m = st.columns(2)
                m[0].metric(
                    "whole run: time left",
                    f"≈ {shaping.fmt_duration(stat['run_eta_s'])}",
                    help="Every stage still to come, at the speed this run has had so far (the "
                    "stages' sizes come from the config; the rates from the steps timed).",
                )
                if stat.get("eta_s") is not None:
                    m[1].metric(f"{stat['stage']}: time left", shaping.fmt_duration(stat["eta_s"]))
            elif stat["status"] == "running" and stat.get("eta_s") is not None:
                st.caption(f"{stat['stage']}: ETA {shaping.fmt_duration(stat['eta_s'])}")
            if stat.get("updated_t"):
                st.caption(f"last event {shaping.fmt_age(stat['updated_t'])}")
    if stat["status"] in ("failed", "crashed"):
        end = next((e for e in reversed(evs) if e.get("kind") == "run_end"), {})
        # a settings failure is explained above; its log holds only the CLI's wording
        with st.expander("What went wrong", expanded=stat["status"] == "failed" and not fix):
            if end.get("traceback"):
                st.code(end["traceback"], language=None)
            st.caption("worker.log (last lines)")
            st.code(state.worker_log(run_dir) or "(worker.log is empty or missing)", language=None)


progress_panel()


# -- images, losses, committee (heavier, every 5 s) -------------------------------------------
def _events_panel() -> None:
    msgs = shaping.log_messages(state.events(run_dir), 40)
    st.code("\n".join(msgs) or "(no log events yet)", language=None)


# One panel at a time: st.tabs builds every tab on each poll (four charts took ~30 s to draw
# together), a segmented control builds only the one shown.
PANELS = {
    "Synthetic images": (
        "the image grid",
        lambda: C.snapshot_viewer(run_dir, state.events(run_dir), live),
    ),
    "Loss curves": ("the loss curves", lambda: C.loss_panel(run_dir)),
    "Committee": ("the committee", lambda: C.committee_panel(run_dir)),
    "Memory": ("the memory plan", lambda: C.memory_panel(run_dir)),
    "Events": ("the events", _events_panel),
}
shown = st.segmented_control(
    "Panel",
    list(PANELS),
    default="Synthetic images",
    key=f"panel_{rid}",
    label_visibility="collapsed",
)


@st.fragment(run_every=5 if live else None)
def detail_panel(name: str) -> None:
    what, draw = PANELS[name]
    with C.guard(what):
        draw()


detail_panel(shown or "Synthetic images")  # a click on the chosen one deselects it
