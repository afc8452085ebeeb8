"""Compare page, "Repeats over seeds": per method (CV-DD, SRe2L++, random real) the mean with its
95 % interval, the paired differences per seed with theirs and a sentence each, a bar chart with
error bars, and the control that repeats a finished run over N seeds (cvdd.repeats)."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from app import shaping, state
from app import spread as run_spread
from app.shaping import spread
from cvdd import jobs, repeats
from cvdd.utils import CvddError

COLORS = {"CV-DD": "#e4572e", "SRe²L++": "#76b041", "random real": "#2e86ab"}
LIVE = "views/live.py"


def bars(values: dict) -> go.Figure:
    """One bar per method at its mean, the 95 % interval as an error bar, each seed a dot."""
    arms, _ = repeats.summarise(values)
    fig = go.Figure()
    for a, iv in arms.items():
        name = spread.NAMES[a]
        up = None if iv.hi is None else [iv.hi - iv.mean]
        down = None if iv.lo is None else [iv.mean - iv.lo]
        fig.add_bar(
            x=[name],
            y=[iv.mean],
            name=name,
            marker_color=COLORS.get(name),
            error_y=dict(type="data", array=up, arrayminus=down, visible=up is not None),
            hovertext=[iv.text(1)],
        )
        seeds = sorted(values[a])
        fig.add_scatter(
            x=[name] * len(seeds),
            y=[values[a][s] for s in seeds],
            mode="markers",
            marker=dict(color="black", size=6, opacity=0.6),
            hovertext=[f"seed {s}" for s in seeds],
            showlegend=False,
        )
    fig.update_layout(
        title="top-1 %: mean, 95 % interval, seeds as dots",
        yaxis_title="top-1 %",
        height=360,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        showlegend=False,
    )
    return fig


def _label(rid: str, docs: dict) -> str:
    cfg = (docs.get(rid) or {}).get("config") or {}
    return (
        f"{cfg.get('name')} · IPC {cfg.get('ipc')} · "
        f"{shaping.dig(cfg, 'recover', 'iterations')} recover steps · "
        f"{len(shaping.dig(cfg, 'squeeze', 'members') or [])} members (like {rid})"
    )


def _pick_experiment(chosen: list[str], docs: dict) -> str | None:
    """One run per distinct experiment among the chosen runs; the user picks one."""
    seen, firsts = set(), []
    for rid in chosen:
        exp = repeats.experiment_runs(rid, docs)
        ids = tuple(sorted(r for rs in exp.values() for r in rs))
        if ids and ids not in seen:
            seen.add(ids)
            firsts.append(next(iter(exp.get("cvdd") or exp.get("sre2l++"))))
    if not firsts:
        return None
    labels = {rid: _label(rid, docs) for rid in firsts}
    return st.selectbox("Experiment", firsts, format_func=labels.get, key="rep_exp")


def _progress(exp: dict) -> str:
    counts: dict[str, int] = {}
    for rids in exp.values():
        for rid in rids:
            try:
                s = state.status(state.resolve(rid))["status"]
            except CvddError:
                continue
            counts[s] = counts.get(s, 0) + 1
    return " · ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def _tables(values: dict) -> None:
    st.dataframe(spread.arms_df(values), hide_index=True)
    diffs = spread.diffs_df(values)
    if not diffs.empty:
        st.markdown(
            "**Paired differences** (same seed, same data; interval from the per-seed differences)"
        )
        st.dataframe(diffs, hide_index=True)
    for line in spread.verdicts(values):
        st.markdown(f"- {line}")


def section(chosen: list[str], docs: dict) -> None:
    st.subheader("Repeats over seeds")
    rid = _pick_experiment(chosen, docs)
    if rid is None:
        st.info("Choose a run above: its repeats over seeds (and its twin's) are summed up here.")
        return
    exp, values = run_spread.experiment(rid, docs)
    st.caption(
        f"Runs of this experiment: {_progress(exp)}. They differ only in seed (and method); "
        "each CV-DD run also trains its random-real baseline."
    )
    flags = repeats.env_flags({r: docs[r] for rs in exp.values() for r in rs if docs.get(r)})
    if flags:
        st.warning(
            "These runs were made under different environments, so one seed need not give "
            "one number: compare them as statistically alike, not bit-equal (docs/method.md "
            "§11). " + "; ".join(flags)
        )
    if spread.n_seeds(values) < 2:
        st.info(
            "One finished seed so far: no interval yet. "
            + run_spread.reference_for((docs.get(rid) or {}).get("config"))
        )
    if any(values.values()):
        left, right = st.columns([2, 3])
        left.plotly_chart(bars(values), key="rep_bars")
        with right:
            _tables(values)
        with st.expander("Per seed"):
            st.dataframe(spread.seeds_df(values), hide_index=True)
    _repeat_control(rid, exp)


def _repeat_control(rid: str, exp: dict) -> None:
    """'Repeat over N seeds' for a finished run: queues the missing seeds (and twins)."""
    try:
        done = state.status(state.resolve(rid))["status"] == "done"
    except CvddError:
        done = False
    if not done:
        return
    twin = " and its SRe²L++ twin" if exp.get("sre2l++") else ""
    c1, c2 = st.columns([1, 3], vertical_alignment="bottom")
    n = c1.number_input("Seeds", 2, repeats.MAX_SEEDS, 8, key="rep_n")
    if c2.button(f"Repeat over {n} seeds", key="rep_start", icon=":material/repeat:"):
        try:
            made = repeats.create_repeat(state.resolve(rid), int(n), state.runs_root())
            for p in made:  # in plan order: each seed's CV-DD run, then its twin
                jobs.resume_job(p, wait=False)
        except CvddError as e:
            st.error(f"Could not queue the repeat: {e}")
            return
        if made:
            st.success(f"Queued {len(made)} run(s); they start one after another.")
            st.page_link(LIVE, label="Watch the first", query_params={"run": made[0].name})
        else:
            st.info(f"This experiment already has {n} seeds.")
    st.caption(
        f"Queues this run's settings{twin} with the seeds it lacks, up to N; each run is its "
        "own folder, and the table above fills in as they finish. From the command line: "
        f"`python -m cvdd run --preset {_preset(rid)} --seeds 0-{int(n) - 1}"
        f"{' --twin' if twin else ''}` (with the same --set overrides)."
    )


def _preset(rid: str) -> str:
    try:
        return str((state.run_config(state.resolve(rid)) or {}).get("config", {}).get("name"))
    except CvddError:
        return "quick"
