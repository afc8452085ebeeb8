"""Diversity (paper Fig. 4): mean pairwise cosine similarity of the images of one class in a
feature space (lower = more diverse), for the synthetic set and for random real images."""

from __future__ import annotations

import numpy as np
import streamlit as st

from app import components as C
from app import figures, shaping, state, twins
from cvdd import layout
from cvdd.utils import CvddError

run_dir = C.run_header("div", "Diversity")
if run_dir is None:
    st.stop()
twin = twins.bar(run_dir, "div")

st.markdown(
    "For every class, the images are embedded with a trained model (penultimate layer) and the "
    "cosine similarity of every pair is averaged. **Lower is more diverse.** Switching the voting "
    "committee between IPC indices is meant to make the images of a class less alike than a "
    "single model would (paper Fig. 4)."
)
div = state.read_json_file(run_dir / layout.DIVERSITY)
if not isinstance(div, dict) or not div.get("sources"):
    stat = state.status(run_dir)
    st.info(
        "No diversity analysis yet: analysis/diversity.json is written after **recover** "
        f"(this run: {stat['status']}, stage {stat['stage'] or '—'})."
    )
    st.stop()
names = state.class_names(run_dir) or div.get("class_names") or []


def _twin_figure(twin) -> None:
    """Fig. 4: per class, the synthetic images of the CV-DD run vs its SRe²L++ twin."""
    other = state.read_json_file(twin / layout.DIVERSITY)
    if not isinstance(other, dict) or not other.get("sources"):
        st.info(f"{twin.name} has no analysis/diversity.json yet (written at the end of relabel).")
        return
    a, b = twins.labels(run_dir, twin)
    pair = {a: div, b: other}
    if twins.method(twin) == "cvdd":  # CV-DD first, as in the paper's figure
        pair = {b: other, a: div}
    df = shaping.diversity_pair_df(pair, names)
    title = "Fig. 4: synthetic images, CV-DD vs SRe²L++ (per class)"
    fig = figures.diversity_bars(df, title, shaping.zoom_range(df["cosine"]), color="run")
    st.plotly_chart(fig, key="div_twin")
    cols = st.columns(len(pair))
    for col, (label, d) in zip(cols, pair.items()):
        m = shaping.diversity_means(d).get("synthetic")
        col.metric(f"{label.split(' · ')[0]}: mean cosine", f"{m:.3f}" if m is not None else "—")
    per = df.pivot_table(index="class", columns="run", values="cosine")
    model, same = div.get("model"), None
    if model == other.get("model"):
        same = twins.same_weights(run_dir, twin, str(model))
    how = {
        True: f"both in the penultimate features of the same {model}",
        False: f"in {model}'s penultimate features, but the runs loaded different weights for "
        "it: compare with care",
        None: f"in the penultimate features of {model} (this run) and {other.get('model')} "
        "(the twin)",
    }[same]
    if len(per.columns) == 2:
        first, second = list(pair)
        lower = int((per[first] < per[second]).sum())
        st.caption(
            f"Cosine similarity of every pair of synthetic images of a class, mean over pairs, "
            f"{how}; the y axis is zoomed to the data. {first.split(' · ')[0]} is lower (more "
            f"diverse) than {second.split(' · ')[0]} in {lower} of {len(per)} classes."
        )


if twin is not None:
    with C.guard("the comparison with the twin"):
        _twin_figure(twin)

with C.guard("the diversity chart"):
    means = shaping.diversity_means(div)
    cols = st.columns(max(1, len(means)))
    for col, (src, m) in zip(cols, means.items()):
        col.metric(f"{src}: mean cosine", f"{m:.3f}" if isinstance(m, (int, float)) else "—")
    this = shaping.diversity_df(div, names)
    st.plotly_chart(
        figures.diversity_bars(
            this,
            f"{run_dir.name} ({div.get('model')}): synthetic, initial and random real images",
            shaping.zoom_range(this["cosine"]),
        ),
        key="div_this",
    )
    st.caption("Mean over every pair of images of the class; the y axis is zoomed to the data.")

with C.guard("the comparison run"):
    others = [
        r["run_id"] for r in state.all_runs(str(state.runs_root())) if r["run_id"] != run_dir.name
    ]
    other = st.selectbox(
        "Same figure for another run",
        others,
        index=None,
        key="div_other",
        placeholder="choose a run (e.g. an SRe²L++ run with one member)",
    )
    if other:
        try:
            d2 = state.read_json_file(state.resolve(other) / layout.DIVERSITY)
        except CvddError as e:
            d2, _ = None, st.error(str(e))
        if isinstance(d2, dict) and d2.get("sources"):
            df2 = shaping.diversity_df(d2, names)
            fig = figures.diversity_bars(
                df2, f"{other} ({d2.get('model')})", shaping.zoom_range(df2["cosine"])
            )
            st.plotly_chart(fig, key="div_other_fig")
        else:
            st.info(f"{other} has no analysis/diversity.json yet.")

with C.guard("the similarity matrices"):
    st.subheader("One class: pairwise similarity")
    srcs = {s: v for s, v in div["sources"].items() if v.get("matrices")}
    n = max((len(v["matrices"]) for v in srcs.values()), default=0)
    if not n:
        st.info("No per-class matrices in this analysis.")
    else:
        cls = st.selectbox(
            "Class", range(n), key="div_cls", format_func=lambda k: shaping.class_name(names, k)
        )
        mats = {
            s: np.asarray(v["matrices"][cls], dtype=float)
            for s, v in srcs.items()
            if cls < len(v["matrices"])
        }
        lo = min((float(np.nanmin(m)) for m in mats.values() if m.size), default=0.0)
        cols = st.columns(max(1, len(srcs)))
        files = {
            "synthetic": layout.RECOVER_IMAGES,
            "init": layout.INIT_IMAGES,
            "random_real": layout.RANDOM_REAL,
        }
        for col, src in zip(cols, srcs):
            with col:
                if src in mats and mats[src].size:
                    st.plotly_chart(
                        figures.similarity_heatmap(
                            mats[src], f"{src}: {shaping.class_name(names, cls)}", lo
                        ),
                        key=f"div_m_{src}",
                    )
                z = state.read_npz_file(run_dir / files.get(src, "-"))
                if z is not None and "images" in z and "targets" in z:
                    idx = shaping.class_indices(z["targets"], cls)[:10]
                    st.image(
                        [shaping.to_display(z["images"][i], 48) for i in idx],
                        caption=[f"#{j}" for j in range(len(idx))],
                    )
                elif src == "random_real":
                    st.caption("(random real images are not saved in this run)")
