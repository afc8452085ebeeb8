"""Render helpers shared by the pages: run picker + header, stage progress, image grids,
loss curves, committee. Data comes from app/state.py, shapes from app/shaping.py."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from app import checks, figures, shaping, state
from cvdd import layout
from cvdd.utils import CvddError

NEW_RUN, RUNS, LIVE = "views/new_run.py", "views/runs.py", "views/live.py"


@contextlib.contextmanager
def guard(what: str):
    """Show a warning instead of a traceback when a panel meets a file it cannot read."""
    try:
        yield
    except Exception as e:  # not BaseException: st.rerun / st.stop must pass through
        st.warning(
            f"Could not show {what}: {type(e).__name__}: {e}. The run directory may be "
            "partial, from another version, or damaged."
        )


def _picked(key: str) -> None:
    state.set_run(st.session_state.get(key))


def run_header(page_key: str, title: str, show_status: bool = True) -> Path | None:
    """Title, run picker and status line. Returns the run folder, or None after a message."""
    st.title(title)
    rid = state.current_run_id()
    rows = state.all_runs(str(state.runs_root()))
    ids = [r["run_id"] for r in rows]
    if not rid:  # a fresh tab: the one run there is, or the newest active one (rows: newest first)
        live = [r["run_id"] for r in rows if r["status"] in ("running", "starting")]
        rid = live[0] if live else ids[0] if len(ids) == 1 else None
        if rid:
            state.set_run(rid)
    key = f"pick_{page_key}"
    if rid in ids:
        st.session_state[key] = rid
    else:
        st.session_state.pop(key, None)
    st.selectbox(
        "Run in view",
        ids,
        index=None,
        key=key,
        on_change=_picked,
        args=(key,),
        placeholder="choose a run" if ids else "no runs yet",
        format_func=lambda i: _run_label(i, rows),
    )
    if not rid:
        if ids:
            st.info("Choose a run above, or open one from the **Runs** page.")
        else:
            st.info(f"No runs yet in `{state.runs_root()}`. Start one on the **New run** page.")
            st.page_link(NEW_RUN, label="New run", icon=":material/add_circle:")
        return None
    try:
        run_dir = state.resolve(rid)
    except CvddError as e:
        st.error(f"{e}. Pick a run above or go to the **Runs** page.")
        return None
    doc = state.run_config(run_dir)
    if show_status:
        status_line(state.status(run_dir))
    if doc is None:
        st.warning(
            f"`{rid}` has no readable config.json: it is damaged or not a cvdd run "
            "directory. Panels below show whatever files they can read."
        )
    else:
        s = shaping.config_summary(doc["config"])
        st.caption(
            f"preset **{s['preset']}** · data **{s['dataset']}** · IPC **{s['ipc']}** · "
            f"committee **{', '.join(s['members'])}** · N={s['N']} · T={s['T']} · "
            f"voter {s['voter']} · schedule {s['schedule']} · labels {s['labels']} · "
            f"seed {s['seed']}"
        )
    return run_dir


def _run_label(rid: str, rows: list[dict]) -> str:
    r = next((x for x in rows if x["run_id"] == rid), {})
    return f"{rid} — {r.get('status', '?')}"


def status_line(stat: dict, fix: str | None = None) -> None:
    """The run's status in one line; `fix`: what to change, for a run that failed on its
    settings (it replaces the engine's CLI advice)."""
    text = checks.page_terms(shaping.status_text(stat))
    s = stat.get("status")
    icon = shaping.STATUS_ICONS.get(s)
    if s == "failed":
        st.error(text + (f"\n\n{fix}" if fix else ""), icon=icon)
    elif s in ("crashed", "stopped"):
        st.warning(text + " — **Resume** continues from the last checkpoint.", icon=icon)
    elif s == "done":
        st.success(text, icon=icon)
    elif s == "starting":
        st.info(
            text + " — the worker process is loading Python and PyTorch; the page follows "
            "it once it runs.",
            icon=":material/hourglass_top:",
        )
    else:
        st.info(text, icon=icon)


def stage_progress(evs: list[dict], stat: dict, members: list[str] | None = None) -> None:
    marks = {"pending": "·", "running": "▶", "done": "✓", "interrupted": "‖"}
    for r in shaping.stage_rows(evs, stat.get("status", "running")):
        text = f"{marks[r['state']]} **{r['stage']}**"
        if r["state"] == "done":
            text += f" — {shaping.fmt_duration(r['seconds'])}"
        elif r["total"]:
            text += f" — {r['step']}/{r['total']}"
            if r["label"]:
                k = members.index(r["label"]) + 1 if members and r["label"] in members else 0
                text += f" ({r['label']}" + (f", member {k}/{len(members)})" if k else ")")
            if r["state"] == "running" and r["eta_s"] is not None:
                text += f" · ETA {shaping.fmt_duration(r['eta_s'])}"
        elif r["state"] != "pending":
            text += f" — {r['state']}"
        st.progress(float(r["frac"]), text=text)


def na_table(df: pd.DataFrame, numbers: list[str], na: str = "n/a") -> pd.DataFrame:
    """`df` for st.dataframe with `numbers` at 3 significant digits and every missing value
    shown as `na` (st.dataframe prints a raw None, and ignores a Styler's na_rep for it)."""
    out = df.astype(object).where(df.notna(), na)
    for c in numbers:
        out[c] = [f"{v:.3g}" if isinstance(v, (int, float)) else v for v in out[c]]
    return out


def show_image(img: np.ndarray, caption: str | None = None, min_side: int = 96) -> None:
    st.image(shaping.to_display(img, min_side), caption=caption)


def snapshot_viewer(run_dir: Path, evs: list[dict], live: bool) -> None:
    """Grid of synthetic images at a saved recover step, a slider to scrub, a per-class view."""
    snaps = shaping.snapshots(evs, "recover")
    if not snaps:
        st.info(
            "No image snapshot yet: the grid appears when **recover** starts "
            "(step 0 shows the initial images)."
        )
        return
    steps = [s["step"] for s in snaps]
    step = _pick_snapshot(run_dir.name, steps)
    snap = snaps[steps.index(step)]
    grid = state.read_png_file(run_dir / snap["path"])
    if grid is None:
        st.warning(f"Snapshot file {snap['path']} is missing or unreadable.")
        return
    names = state.class_names(run_dir)
    rows, cols = list(snap.get("rows") or []), list(snap.get("cols") or [])
    left, right = st.columns([3, 2], gap="large")
    with left:
        f = max(1, round(520 / max(grid.shape[:2])))  # nearest-neighbour zoom, no blur
        st.image(
            grid.repeat(f, 0).repeat(f, 1),
            width=min(520, grid.shape[1] * f),
            caption=f"step {step} · rows: classes",  # short: it is as wide as the grid
        )
        st.caption(
            f"Rows, top to bottom: {', '.join(shaping.class_name(names, r) for r in rows)} · "
            f"columns: {_index_span(cols)} · {len(steps)} snapshots saved, latest step "
            f"{steps[-1]}" + (" · live" if live else "")
        )
    cell, pad = snap.get("cell"), snap.get("pad", 0)
    if rows and cell:
        with right:
            _class_view(run_dir, grid, step, rows, names, int(cell), int(pad or 0))


def _pick_snapshot(rid: str, steps: list[int]) -> int:
    """The step to show: a slider over the saved steps that follows the newest until moved."""
    skey, fkey = f"snap_{rid}", f"follow_{rid}"
    st.session_state.setdefault(fkey, True)
    if st.session_state[fkey] or st.session_state.get(skey) not in steps:
        st.session_state[skey] = steps[-1]
    c1, c2 = st.columns([4, 1], vertical_alignment="bottom")
    with c2:
        st.toggle("Follow latest", key=fkey, help="Jump to each new snapshot as it arrives.")
    if len(steps) == 1:
        return steps[0]
    with c1:
        return st.select_slider(
            "Recover step (saved snapshots)",
            steps,
            key=skey,
            on_change=lambda: st.session_state.update({fkey: False}),
        )


def _class_view(run_dir: Path, grid, step: int, rows: list, names, cell: int, pad: int) -> None:
    """One class's row of the grid, enlarged, and that class's final images."""
    pick = st.selectbox(
        "Per-class view",
        range(len(rows)),
        key=f"cls_{run_dir.name}",
        format_func=lambda r: shaping.class_name(names, rows[r]),
    )
    try:
        strip = shaping.crop_grid_row(grid, pick, len(rows), cell, pad)
        z = max(1, min(320 // max(1, strip.shape[1]), 96 // max(1, strip.shape[0])))
        st.image(
            strip.repeat(z, 0).repeat(z, 1),
            width=strip.shape[1] * z,
            caption=f"{shaping.class_name(names, rows[pick])} at step {step}",
        )
    except (IndexError, ValueError) as e:
        st.warning(f"Could not crop the class row: {e}")
    final_images(run_dir, rows[pick], names)


def _index_span(cols: list) -> str:
    """'IPC index 0-9' for a consecutive run, else the list."""
    if not cols:
        return "IPC indices"
    if cols == list(range(cols[0], cols[0] + len(cols))):
        return f"IPC index {cols[0]}" + (f"–{cols[-1]}" if len(cols) > 1 else "")
    return "IPC indices " + ", ".join(map(str, cols))


def final_images(run_dir: Path, cls: int, names: list[str]) -> None:
    """Initial vs final images of one class (all IPC indices) from the saved npz files."""
    init = state.read_npz_file(run_dir / layout.INIT_IMAGES)
    final = state.read_npz_file(run_dir / layout.RECOVER_IMAGES)
    for label, z in (("initial (init stage, real patches)", init), ("after recover", final)):
        if z is None or "images" not in z or "targets" not in z:
            continue
        idx = shaping.class_indices(z["targets"], cls)[:20]
        if idx:
            st.caption(f"{label}: {shaping.class_name(names, cls)}, {len(idx)} image(s)")
            st.image([shaping.to_display(z["images"][i], 40) for i in idx])


def loss_panel(run_dir: Path) -> None:
    df = state.trace(run_dir)
    if df.empty:
        st.info("No loss trace yet: recover/trace.jsonl gets one line per recover step.")
        return
    log_y = st.toggle("log scale", key=f"logy_{run_dir.name}")
    span = figures.ema_span(len(df))
    d = shaping.downsample(figures.with_ema(df, ("loss", "ce", "bn"), span))
    st.plotly_chart(figures.loss_curves(d, log_y, span), key=f"loss_{run_dir.name}")
    st.caption(
        "Each step's loss is noisy (a new random crop, flip and shift every step), so a thick "
        f"line shows its exponential moving average over about {span} steps. **CE**: "
        "cross-entropy of the images' class under the committee's vote (each voting member's "
        "CE weighted by softmax(α/T)); **BN**: the gap between the batch's BatchNorm statistics "
        "and the members' stored running ones, weighted alike; total = CE + r_bn × BN "
        "(recover.bn_loss_weight)."
    )
    last = df.iloc[-1]
    st.caption(
        f"step {int(last['step'])} · loss {last['loss']:.4g} · CE {last['ce']:.4g} · "
        f"BN {last['bn']:.4g}"
        + (f" · lr {last['lr']:.3g}" if "lr" in df and last["lr"] is not None else "")
    )
    if any(c.endswith(".ce") for c in df.columns):
        with st.expander("Loss per committee member"):
            st.plotly_chart(figures.member_losses(d, "ce"), key=f"mce_{run_dir.name}")


@st.cache_resource(max_entries=64, show_spinner=False)
def _figure(builder: str, *args):
    """app.figures.<builder>(*args), built once per distinct input and shared by all tabs (the
    chart only reads it). For inputs that stay fixed while a run is live, such as the
    committee: plotly's figure building would otherwise repeat on every poll of every tab."""
    return getattr(figures, builder)(*args)


def committee_panel(run_dir: Path) -> None:
    com = state.read_json_file(run_dir / layout.COMMITTEE)
    pri = state.read_json_file(run_dir / layout.PRIORS) or {}
    if not isinstance(com, dict):
        st.info("The committee is chosen when **recover** starts (recover/committee.json).")
        if isinstance(pri.get("values"), dict):
            st.caption(
                "Priors α so far: " + ", ".join(f"{m} {v:.1f}" for m, v in pri["values"].items())
            )
        squeeze_table(run_dir)
        return
    T = float(com.get("temperature") or 1.0)
    priors = com.get("priors") or pri.get("values") or {}
    c = st.columns(4)
    c[0].metric(
        "voter",
        str(com.get("voter")),
        help="How the N voters of an IPC index are weighted: prior = softmax(α/T) (CV-DD), "
        "equal = 1/N each, random = random weights (an ablation).",
    )
    c[1].metric(
        "temperature T",
        f"{T:g}",
        help="T in softmax(α/T): small T lets the member with the best prior α dominate, "
        "large T gives the N voters nearly equal weights.",
    )
    c[2].metric(
        "experts per image N",
        str(com.get("num_experts")),
        help="N: how many committee members vote on (optimise) the images of one IPC index.",
    )
    c[3].metric(
        "schedule",
        str(com.get("schedule")),
        help="Which N members vote on which IPC index: fixed, enumerate (cycle through the "
        "subsets), random, or per_iteration (redrawn every step).",
    )
    st.caption(
        "**α** (prior) of a member = the top-1 of a student trained on images that member "
        "distilled alone (SRe²L++): how well its knowledge transfers, not its own accuracy."
    )
    mat = shaping.committee_matrix(com)
    if len(mat):
        st.plotly_chart(_figure("committee_heatmap", mat), key=f"com_{run_dir.name}")
    if com.get("schedule") == "per_iteration":
        st.caption(
            "schedule = per_iteration: members are redrawn every step; the map shows "
            "the first draw."
        )
    if priors:
        t2 = st.slider(
            "Try another temperature T",
            0.5,
            50.0,
            T,
            0.5,
            key=f"T_{run_dir.name}",
            help="Small T: the best prior dominates; large T: equal votes.",
        )
        w = shaping.softmax_weights(priors, list(priors), t2)
        st.plotly_chart(_figure("prior_bars", priors, w, t2), key=f"pri_{run_dir.name}")
        src = pri.get("source")
        if src:
            st.caption(f"priors from **{src}**" + (f" — {pri['note']}" if pri.get("note") else ""))
    st.dataframe(shaping.member_usage(com), hide_index=True)
    squeeze_table(run_dir)


def memory_panel(run_dir: Path) -> None:
    """recover's memory plan: how many image groups share a wave, and the memory behind it."""
    rows = shaping.memory_rows(state.read_json_file(run_dir / layout.MEMORY_PLAN))
    if not rows:
        st.info("The memory plan is made when **recover** starts (recover/memory_plan.json).")
        return
    st.dataframe(
        {"what": [r[0] for r in rows], "value": [r[1] for r in rows]},
        hide_index=True,
        key=f"mem_{run_dir.name}",
    )
    st.caption(
        "A wave is the image groups optimised together (one forward pass per member per step); "
        "the planner fills the budget with as many as fit. Images do not depend on it beyond "
        "float rounding, so a resume under another budget (CVDD_MEMORY_GB) continues the run."
    )


def squeeze_table(run_dir: Path) -> None:
    doc = state.read_json_file(run_dir / layout.MEMBERS)
    if isinstance(doc, dict) and isinstance(doc.get("members"), list):
        st.caption(
            "The committee after **squeeze** (accuracy of each member itself on the "
            "real test set; α above measures something else: how well it distils)"
        )
        cols = ["name", "test_top1", "train_top1", "params", "epochs", "cached", "seconds"]
        rows = [{k: m.get(k) for k in cols} for m in doc["members"] if isinstance(m, dict)]
        st.dataframe(na_table(pd.DataFrame(rows, columns=cols), []), hide_index=True)
