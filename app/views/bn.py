"""BN discrepancy (paper Fig. 5): how far the BatchNorm statistics of groups of images are
from the running statistics the committee stored while training on real data, on the members
that optimised each group (voted) and on the others, before and after recover."""

from __future__ import annotations

import streamlit as st

from app import components as C
from app import figures, shaping, state, twins
from app.shaping import bn_groups as G
from cvdd import layout

run_dir = C.run_header("bn", "BN discrepancy")
if run_dir is None:
    st.stop()
twin = twins.bar(run_dir, "bn")

st.markdown(
    "Every BatchNorm layer of a trained model stores a **running mean and variance** per "
    "channel, collected on real data. Recover optimises the images in **groups** (one IPC "
    "index × a chunk of classes) and adds to each group's loss the gap between its batch "
    "statistics and those running statistics, **in the members that vote for that group "
    "only**. So *did recover close the gap?* has two answers: in the members that voted, and "
    "in the ones that did not. A gap left after recover is why BSSL labels synthetic batches "
    "with their own statistics (paper Fig. 5)."
)
# the key columns first (what recover changed, then where it ended), so a narrow page shows
# them without scrolling; the member column stays pinned on the left
RENAME = {
    "voted_change_pct": "voted: change %",
    "not_voted_change_pct": "not voted: change %",
    "voted_synthetic": "voted: after",
    "not_voted_synthetic": "not voted: after",
    "voted_init": "voted: before",
    "not_voted_init": "not voted: before",
    "voted_groups": "voted: groups",
    "not_voted_groups": "not voted: groups",
}
NA = "n/a"  # a cell with no groups behind it (e.g. SRe²L++: its one member votes for all)


def _groups_section(doc: dict) -> None:
    """Per member: BN loss in the groups it voted for vs the others, then per layer."""
    st.subheader("Each member: the groups it voted for, and the others")
    m = doc.get("first_bn_multiplier")
    m = f"{m:g}" if isinstance(m, (int, float)) else "m₀"
    groups, total = doc.get("groups"), doc.get("groups_total")
    n = len(groups) if isinstance(groups, list) else "?"
    st.caption(
        "**BN loss** = recover's BN term: the sum over *all* BN layers of the member of "
        f"‖μ_B − μ‖ + ‖σ²_B − σ²‖, the first layer × {m}. Measured on each group's "
        "un-augmented images (recover saw augmented ones), then averaged over the groups of "
        "the column. **before** = the initial images, **after** = the final images. "
        f"Groups analysed: {n} of {total}."
        + (
            ""
            if doc.get("voters_exact", True)
            else " With schedule per_iteration the voters "
            "change every step: *voted* means the group's planned subset."
        )
    )
    df = G.summary(doc)
    shown = df[["member", *RENAME, "layers"]].rename(columns=RENAME)
    st.dataframe(
        C.na_table(shown, [c for c in RENAME.values() if "groups" not in c], NA),
        hide_index=True,
        column_config={"member": st.column_config.TextColumn("member", pinned=True)},
    )
    if not df["not_voted_groups"].any():
        st.caption(
            f"**not voted** is {NA}: every member voted for every group analysed (one member, "
            "as in SRe²L++, or N = the committee size), so no group shows a member that did not "
            "optimise it."
        )
    st.markdown("\n".join(f"- {s}" for s in G.findings(doc)))
    names = list(df["member"])
    ref = doc.get("reference")
    member = st.selectbox(
        "Member (per layer)", names, index=names.index(ref) if ref in names else 0, key="bn_member"
    )
    lay = G.layers_df(doc, member)
    if lay.empty:
        st.info(f"No per-layer gaps for {member}.")
        return
    st.plotly_chart(figures.bn_group_layers(lay, member), key="bn_group_layers")
    st.caption(
        f"Each bar: one BN layer of **{member}**, ‖μ_B − μ‖ + ‖σ²_B − σ²‖ of one group's "
        "images (without the first layer's multiplier), mean over the groups named above the "
        "panel; before vs after recover."
        + (
            ""
            if (lay["split"] == "not_voted").any()
            else f" {member} voted for every group, so there is no panel of groups it did not "
            "vote for."
        )
    )


def _trace_section(run_dir) -> None:
    """The BN loss of each member over the recover steps, from recover/trace.jsonl."""
    cfg = state.run_config(run_dir) or {}
    df = G.trace_bn_df(state.trace(run_dir), shaping.dig(cfg, "config", "recover", "iterations"))
    if df.empty:
        st.info("No per-member BN loss in recover/trace.jsonl yet.")
        return
    st.plotly_chart(figures.bn_trace(df), key="bn_trace")
    every, waves = G.trace_spacing(df), df["wave"].nunique()
    st.caption(
        "Per member, its BN loss (the term above, on the *augmented* batch recover optimised) "
        "averaged over the groups it votes for in that wave. "
        + (
            f"A trace row every {every} step(s); steps between rows are not recorded. "
            if every
            else ""
        )
        + (f"{waves} waves: each starts again from the initial images." if waves > 1 else "")
    )


def _twin_section(doc: dict, twin) -> None:
    """The voted BN loss of this run beside its twin's."""
    other = state.read_json_file(twin / layout.BN_GROUPS)
    a, b = twins.labels(run_dir, twin)
    rows = G.pair_rows({a: doc, b: other if isinstance(other, dict) else {}})
    if len(rows) < 2:
        st.info(f"{twin.name} has no analysis/bn_groups.json yet (written at the end of relabel).")
        return
    key = ["run", "BN loss after", "change %", "BN loss before", "member-group pairs", "members"]
    st.dataframe(
        C.na_table(rows[key], ["BN loss before", "BN loss after", "change %"], NA),
        hide_index=True,
        column_config={"run": st.column_config.TextColumn("run", pinned=True)},
    )
    st.caption(
        "BN loss (as above) over every (member, group it voted for) pair of each run: the "
        "committee spreads the groups over its members, the twin puts every group on one."
    )


doc = state.read_json_file(run_dir / layout.BN_GROUPS)
if isinstance(doc, dict) and isinstance(doc.get("members"), dict):
    with C.guard("the BN gaps per voting member"):
        _groups_section(doc)
    with C.guard("the BN loss during recover"):
        st.subheader("During recover")
        _trace_section(run_dir)
    if twin is not None:
        with C.guard("the twin's BN gaps"):
            st.subheader("Beside the twin")
            _twin_section(doc, twin)
else:
    st.info(
        "No per-group BN analysis: analysis/bn_groups.json is written at the end of "
        "**relabel** (runs made before it existed do not have it)."
    )

st.subheader("One model, all images (the paper's Fig. 5 view)")
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
    model = bn.get("model")
    st.markdown(
        f"One model, **{model}** (the relabel teacher, the model BSSL adjusts), measures random "
        f"batches of up to {bn.get('batch_size')} images drawn from *all* groups: those "
        f"{model} voted for and those it did not. This mixture is what the teacher sees at "
        "labelling time, not the effect of recover on the members that optimised the images "
        "(that is the section above). Bars: per BN layer, the L2 distance between a batch's "
        "statistics and the running ones, averaged over batches, for the **initial** images "
        "(before recover), the **synthetic** images (after) and **real** training images."
    )
    st.caption(f"model **{model}** · batch size {bn.get('batch_size')} · batches: {nb_txt}")
    gaps = shaping.bn_gap_df(bn)
    st.plotly_chart(figures.bn_gaps(gaps), key="bn_gaps")
    if {"init", "synthetic"} <= set(gaps["source"]):
        piv = gaps.pivot_table(index="label", columns="source", values="mean_gap", sort=False)
        red = 100 * (1 - piv["synthetic"].sum() / max(piv["init"].sum(), 1e-12))
        st.caption(
            f"Mean gap summed over all {len(piv)} BN layers of {model}, all images: "
            f"{piv['init'].sum():.3g} before recover, {piv['synthetic'].sum():.3g} after "
            f"({-red:+.0f} %)."
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
        where = f"layer {layers[i].get('index')} ({layers[i].get('name')})"
        st.caption(f"The numbers below are for {where} of {model} only, mean over batches.")
        cols = st.columns(max(1, len(layer_gaps)))
        for col, (s, v) in zip(cols, layer_gaps.items()):
            col.metric(
                f"{s}: mean gap",
                f"{v.get('mean_gap', float('nan')):.3g}",
                help=f"{where}: L2 distance to the running mean, averaged over batches",
            )
            col.metric(
                f"{s}: var gap",
                f"{v.get('var_gap', float('nan')):.3g}",
                help=f"{where}: L2 distance to the running variance, averaged over batches",
            )
