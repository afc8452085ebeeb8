"""Runs: every run folder with its status; choosing one opens it (`?run=<id>`)."""

from __future__ import annotations

import streamlit as st

from app import components as C
from app import shaping, spread, state

st.title("Runs")
root = state.runs_root()
rows = state.all_runs(str(root))
if not rows:
    st.info(f"No runs yet in `{root}`. Start one on the **New run** page.")
    st.page_link(C.NEW_RUN, label="New run", icon=":material/add_circle:")
    st.stop()


def _open(rid: str) -> None:
    state.set_run(rid)
    st.switch_page(C.LIVE, query_params={"run": rid})


# column widths in px, chosen so the whole table fits beside the sidebar at 1400 px
WIDTHS = dict(status=72, stage=68, preset=96, dataset=84, ipc=44, members=68, age=72, updated=72)
ACTIVE = ("running", "starting", "queued")  # the statuses that change by themselves
any_running = any(r["status"] in ACTIVE for r in rows)


@st.fragment(run_every=3 if any_running else None)
def table() -> None:
    now_rows = state.all_runs(str(root))
    if any_running and not any(r["status"] in ACTIVE for r in now_rows):
        st.rerun(scope="app")
    _queue_line(now_rows)
    df = shaping.runs_table(now_rows)
    ev = st.dataframe(
        df,
        hide_index=True,
        on_select="rerun",
        selection_mode="single-row",
        key="runs_table",
        # widths that fit the page together (auto widths ran past its right edge); the run
        # column stays in view when the table scrolls on a narrow screen
        column_config={
            "top1": st.column_config.NumberColumn(
                "top-1 %", format="%.1f", width=62, help="student top-1 % on the test split"
            ),
            "run": st.column_config.TextColumn("run", width=235, pinned=True),
            **{c: st.column_config.Column(c, width=w) for c, w in WIDTHS.items()},
        },
    )
    sel = getattr(getattr(ev, "selection", None), "rows", None) or []
    if sel:
        _open(str(df.iloc[sel[0]]["run"]))
    counts = df["status"].value_counts().to_dict()
    st.caption(
        f"{len(df)} run{'' if len(df) == 1 else 's'} in `{root}` · "
        + " · ".join(f"{k} {v}" for k, v in counts.items())
        + " · click a row to open it"
    )
    spread.runs_note(now_rows)  # each top-1 is one seed's: the typical spread


def _queue_line(rows: list[dict]) -> None:
    """The runs waiting for a worker slot, in the order they will start, per device."""
    waiting: dict[str, list[tuple[int, str]]] = {}
    for r in rows:
        if r["status"] == "queued" and isinstance(r.get("queue"), dict):
            q = r["queue"]
            waiting.setdefault(str(q["device"]), []).append((q["pos"], str(r["run_id"])))
    for dev, items in sorted(waiting.items()):
        order = " · ".join(f"{pos}. `{rid}`" for pos, rid in sorted(items))
        st.caption(
            f":material/queue: **Queued for {dev}** (they start by themselves, in this order, "
            f"as a worker on {dev} ends; **Remove from queue** on a run's Live page takes one "
            f"out): {order}"
        )


table()
c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
ids = [r["run_id"] for r in rows]
cur = state.current_run_id()
pick = c1.selectbox("Open run", ids, index=ids.index(cur) if cur in ids else 0, key="runs_pick")
if c2.button("Open", key="runs_open", type="primary"):
    _open(pick)
