"""Diversity (paper Fig. 4): mean pairwise cosine similarity of the images of one class in a
feature space (lower = more diverse), for the synthetic set and for random real images."""

from __future__ import annotations

import numpy as np
import streamlit as st

from app import components as C
from app import figures, shaping, state
from cvdd import layout
from cvdd.utils import CvddError

run_dir = C.run_header("div", "Diversity")
if run_dir is None:
    st.stop()

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

with C.guard("the diversity chart"):
    means = shaping.diversity_means(div)
    cols = st.columns(max(1, len(means)))
    for col, (src, m) in zip(cols, means.items()):
        col.metric(f"{src}: mean cosine", f"{m:.3f}" if isinstance(m, (int, float)) else "—")
    st.plotly_chart(
        figures.diversity_bars(
            shaping.diversity_df(div, names), f"{run_dir.name} ({div.get('model')})"
        ),
        key="div_this",
    )

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
            fig = figures.diversity_bars(
                shaping.diversity_df(d2, names), f"{other} ({d2.get('model')})"
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
