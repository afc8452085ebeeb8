"""BN discrepancy (paper Fig. 5): how far the BatchNorm statistics of a batch of images are
from the running statistics the teacher stored while training on real data."""

from __future__ import annotations

import streamlit as st

from app import components as C
from app import figures, shaping, state
from cvdd import layout

run_dir = C.run_header("bn", "BN discrepancy")
if run_dir is None:
    st.stop()

st.markdown(
    "Every BatchNorm layer of a trained model stores a **running mean and variance** per "
    "channel, collected on real data. Recover pulls the synthetic images towards them, yet the "
    "statistics of a *batch of synthetic images* still land somewhere else (paper Fig. 5). "
    "That gap is why BSSL labels synthetic batches with their own statistics. Bars: the L2 "
    "distance between a batch's statistics and the running ones, averaged over batches, for "
    "the **initial** images (before recover), the **synthetic** images (after) and **real** "
    "training images (reference)."
)
bn = state.read_json_file(run_dir / layout.BN_STATS)
if not isinstance(bn, dict) or not bn.get("layers"):
    stat = state.status(run_dir)
    st.info(
        "No BN statistics yet: analysis/bn_stats.json is written after **recover** "
        f"(this run: {stat['status']}, stage {stat['stage'] or '—'})."
    )
    st.stop()

with C.guard("the BN statistics"):
    nb = bn.get("num_batches")
    nb_txt = ", ".join(f"{k} {v}" for k, v in nb.items()) if isinstance(nb, dict) else nb
    st.caption(
        f"model **{bn.get('model')}** · batch size {bn.get('batch_size')} · batches: {nb_txt}"
    )
    gaps = shaping.bn_gap_df(bn)
    st.plotly_chart(figures.bn_gaps(gaps), key="bn_gaps")
    if {"init", "synthetic"} <= set(gaps["source"]):
        piv = gaps.pivot_table(index="label", columns="source", values="mean_gap", sort=False)
        red = 100 * (1 - piv["synthetic"].sum() / max(piv["init"].sum(), 1e-12))
        st.caption(
            f"Summed over layers, recover changed the mean gap by {-red:+.0f} % (init → synthetic)."
        )

    layers = bn["layers"]
    i = st.selectbox(
        "Layer",
        range(len(layers)),
        key="bn_layer",
        format_func=lambda k: (
            f"{layers[k].get('index')}: {layers[k].get('name')} "
            f"({layers[k].get('channels')} channels)"
        ),
    )
    ch = shaping.bn_channels_df(layers[i])
    srcs = list(ch["source"].unique())
    chosen = st.multiselect(
        "Sources",
        srcs,
        default=[s for s in ("init", "synthetic") if s in srcs] or srcs,
        key="bn_sources",
    )
    if ch.empty:
        st.info("This layer has no per-channel statistics.")
    else:
        c1, c2 = st.columns(2)
        c1.plotly_chart(figures.bn_scatter(ch, "mean", chosen), key="bn_mean")
        c2.plotly_chart(figures.bn_scatter(ch, "var", chosen), key="bn_var")
        st.caption(
            "Each dot is one channel: x = running statistic, y = the batch statistic. "
            "On the dotted line the batch matches the stored statistics; before (init) vs "
            "after (synthetic) shows how far recover moved them."
        )
        layer_gaps = {s: v for s, v in (layers[i].get("sources") or {}).items()}
        cols = st.columns(max(1, len(layer_gaps)))
        for col, (s, v) in zip(cols, layer_gaps.items()):
            col.metric(
                f"{s}: mean gap",
                f"{v.get('mean_gap', float('nan')):.3g}",
                help="L2 distance to the running mean, averaged over batches",
            )
            col.metric(f"{s}: var gap", f"{v.get('var_gap', float('nan')):.3g}")
