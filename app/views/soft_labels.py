"""Soft labels (paper §3.7): the same images labelled with BSSL (batch statistics) and with
eval mode (running statistics), and what each labelling gave the student."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from app import components as C
from app import figures, shaping, state, twins
from cvdd import layout

run_dir = C.run_header("soft", "Soft labels: BSSL vs eval mode")
if run_dir is None:
    st.stop()
twin = twins.bar(run_dir, "soft")

st.markdown(
    "A teacher turns every synthetic image into a probability vector (soft label) that the "
    "student learns from. In **eval** mode its BatchNorm layers normalise with the running "
    "statistics of the real data; with **BSSL** they use the statistics of the synthetic batch "
    "itself (teacher in train mode, weights frozen). Below: the same images, both ways."
)
z = state.read_npz_file(run_dir / layout.SOFT_LABELS)
if z is None or "probs_bssl" not in z or "probs_eval" not in z:
    stat = state.status(run_dir)
    st.info(
        "No soft labels yet: relabel/soft_labels.npz is written at the end of **relabel** "
        f"(this run: {stat['status']}, stage {stat['stage'] or '—'})."
    )
    st.stop()

an = state.read_json_file(run_dir / layout.SOFT_LABEL_STATS)
an = an if isinstance(an, dict) else {}
names = state.class_names(run_dir)
pb, pe = np.asarray(z["probs_bssl"]), np.asarray(z["probs_eval"])
targets = np.asarray(z.get("targets", np.zeros(len(pb), int)))

with C.guard("the label statistics"):
    s = shaping.soft_label_stats(pb, pe, targets)
    c = st.columns(5)
    c[0].metric(
        "argmax agreement",
        f"{100 * s['agreement']:.0f} %",
        help="Images whose most likely class is the same in both modes.",
    )
    c[1].metric(
        "mean KL(BSSL ‖ eval)",
        f"{s['kl_mean']:.3g} nats",
        help="How far each image's BSSL label is from its eval-mode label, mean over images.",
    )
    c[2].metric(
        "mean entropy BSSL",
        f"{s['entropy_bssl']:.3g}",
        help="entropy_bssl: entropy (nats) of the BSSL soft labels, mean over images; higher = "
        "softer labels that spread probability over more classes. BSSL = batch-specific soft "
        "labels: the teacher's BatchNorm uses the synthetic batch's own statistics.",
    )
    c[3].metric(
        "mean entropy eval",
        f"{s['entropy_eval']:.3g}",
        help="entropy_eval: the same for eval-mode labels (the teacher's stored running "
        "statistics).",
    )
    c[4].metric(
        "label = class (BSSL / eval)",
        f"{100 * s['acc_bssl']:.0f} / {100 * s['acc_eval']:.0f} %",
        help="acc_bssl / acc_eval: images whose soft label's most likely class is the class "
        "they were made for, with BSSL and with eval-mode labels.",
    )
    if an.get("teacher"):
        st.caption(
            f"teacher **{an['teacher']}** · batch size {an.get('batch_size')} · {len(pb)} images"
        )

with C.guard("one image's soft label"):
    st.subheader("One image")
    imgs = state.read_npz_file(run_dir / layout.RECOVER_IMAGES)
    classes = sorted({int(t) for t in targets})
    c1, c2, c3 = st.columns([2, 2, 1])
    cls = c1.selectbox(
        "Class", classes, key="sl_cls", format_func=lambda k: shaping.class_name(names, k)
    )
    idx = shaping.class_indices(targets, cls)
    k = c2.selectbox("Image (IPC index)", range(len(idx)), key="sl_k")
    topk = c3.number_input("top-k", 1, max(1, pb.shape[1]), min(5, pb.shape[1]), key="sl_topk")
    i = idx[k]
    left, right = st.columns([1, 3])
    with left:
        if imgs is not None and "images" in imgs and i < len(imgs["images"]):
            C.show_image(imgs["images"][i], f"{shaping.class_name(names, cls)} #{k}", 160)
        else:
            st.info("recover/images.npz is missing: no image to show.")
        st.caption(f"KL(BSSL ‖ eval) = {shaping.kl_div(pb[i], pe[i]):.3g} nats")
    with right:
        df = shaping.topk_df({"bssl": pb[i], "eval": pe[i]}, int(topk), names)
        st.plotly_chart(figures.topk_bars(df), key="sl_topk_chart")

with C.guard("the label distributions"):
    st.subheader("All images")
    c1, c2 = st.columns(2)
    c1.plotly_chart(
        figures.entropy_hist({"bssl": shaping.entropy(pb), "eval": shaping.entropy(pe)}),
        key="sl_ent",
    )
    c2.plotly_chart(figures.kl_hist(shaping.kl_div(pb, pe)), key="sl_kl")
    per = an.get("per_class")
    if isinstance(per, list) and per:
        st.markdown("**Per class** (from analysis/soft_labels.json)")
        st.dataframe(pd.DataFrame(per), hide_index=True)

with C.guard("the student accuracies"):
    st.subheader("What each labelling gave the student")
    stu = state.read_json_file(run_dir / layout.STUDENTS) or {}
    sd = (stu.get("students") or {}) if isinstance(stu, dict) else {}
    b, e = sd.get("distilled_bssl"), sd.get("distilled_eval")
    if isinstance(b, dict) and isinstance(e, dict):
        c = st.columns(3)
        c[0].metric("student top-1, BSSL labels", f"{b.get('top1', float('nan')):.1f} %")
        c[1].metric("student top-1, eval labels", f"{e.get('top1', float('nan')):.1f} %")
        c[2].metric("BSSL − eval", f"{b.get('top1', 0) - e.get('top1', 0):+.1f} pts")
        cur = shaping.curves_df({"students": {"distilled_bssl": b, "distilled_eval": e}})
        if len(cur):
            st.plotly_chart(figures.student_curves(cur), key="sl_curves")
    elif sd:
        st.info(
            "Only one labelling was validated. Set `validate.compare_eval_labels=true` "
            "(More settings → extra overrides) to train a student on each."
        )
        st.dataframe(shaping.students_df(stu), hide_index=True)
    else:
        st.info("No student trained yet (validate/students.json appears during **validate**).")


def _label_row(d) -> dict | None:
    """One run's label statistics and what each labelling gave its student, or None."""
    z = state.read_npz_file(d / layout.SOFT_LABELS)
    if z is None or "probs_bssl" not in z or "probs_eval" not in z:
        return None
    p_b, p_e = np.asarray(z["probs_bssl"]), np.asarray(z["probs_eval"])
    s = shaping.soft_label_stats(p_b, p_e, np.asarray(z.get("targets", np.zeros(len(p_b), int))))
    stu = state.read_json_file(d / layout.STUDENTS)
    sd = (stu.get("students") or {}) if isinstance(stu, dict) else {}
    an = state.read_json_file(d / layout.SOFT_LABEL_STATS)
    return {
        "teacher": an.get("teacher") if isinstance(an, dict) else None,
        "argmax agreement %": 100 * s["agreement"],
        "mean KL(BSSL ‖ eval)": s["kl_mean"],
        "entropy BSSL": s["entropy_bssl"],
        "entropy eval": s["entropy_eval"],
        "label = class, BSSL %": 100 * s["acc_bssl"],
        "label = class, eval %": 100 * s["acc_eval"],
        **{
            f"student top-1, {m} labels %": shaping.dig(sd, f"distilled_{m}", "top1")
            for m in ("bssl", "eval")
        },
    }


if twin is not None:
    with C.guard("the comparison with the twin"):
        st.subheader("Beside the twin")
        a, b = twins.labels(run_dir, twin)
        rows = {a: _label_row(run_dir), b: _label_row(twin)}
        if rows[b] is None:
            st.info(f"{twin.name} has no soft labels yet (written at the end of relabel).")
        else:
            st.dataframe(
                pd.DataFrame.from_dict(rows, orient="index").rename_axis("run").reset_index(),
                hide_index=True,
            )
            st.caption(
                "Every image of each run labelled by its relabel teacher, with BSSL and in eval "
                "mode (statistics over all images of the run); student top-1 on the real test "
                "split after training on that run's images and labels. **entropy**: how soft "
                "the labels are (nats, higher = probability spread over more classes); "
                "**label = class**: images whose label's most likely class is their own; "
                "**BSSL**: the teacher's BatchNorm normalises with each synthetic batch's "
                "statistics, **eval**: with its stored running statistics."
            )
