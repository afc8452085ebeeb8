"""Compare runs (student top-1 vs settings) and export a run's distilled set as a zip."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import figures, shaping, state
from cvdd import layout
from cvdd.utils import CvddError

st.title("Compare & export")
root = state.runs_root()
rows = state.all_runs(str(root))
if not rows:
    st.info(f"No runs yet in `{root}`. Start one on the **New run** page.")
    st.stop()

ids = [r["run_id"] for r in rows]
done = [r["run_id"] for r in rows if r["status"] == "done"]
cur = state.current_run_id()
default = list(dict.fromkeys(([cur] if cur in ids else []) + done))[:8]
chosen = st.multiselect("Runs to compare", ids, default=default, key="cmp_runs")

table = []
for rid in chosen:
    try:
        d = state.resolve(rid)
    except CvddError:
        continue
    table.append(
        shaping.compare_row(rid, state.run_config(d), state.read_json_file(d / layout.RESULT))
    )
df = pd.DataFrame(table)
if df.empty:
    st.info("Choose runs above (finished runs have a student accuracy).")
else:
    st.dataframe(
        df,
        hide_index=True,
        column_config={
            c: st.column_config.NumberColumn(c, format="%.1f")
            for c in ("student_top1", "random_real_top1", "bssl_top1", "eval_top1")
        },
    )
    if df["student_top1"].notna().any():
        st.plotly_chart(figures.compare_bars(df), key="cmp_bars")
    else:
        st.info("None of these runs has finished validation yet (result.json).")

st.subheader("Export a distilled set")
st.caption(
    "The export/ folder of a finished run: PNG images as an ImageFolder "
    "(images/<class>/<ipc>.png), soft labels (soft_labels.npz, labels.csv) and the "
    "config. The zip is built only when you click."
)
pick = st.selectbox("Run", ids, index=ids.index(cur) if cur in ids else 0, key="exp_run")
try:
    exp = state.resolve(pick) / "export"
except CvddError as e:
    st.error(str(e))
    st.stop()
if not exp.is_dir():
    st.info(f"{pick} has no export/ folder yet: it is written at the end of **validate**.")
else:
    n_png = sum(1 for _ in exp.glob("images/*/*.png"))
    st.download_button(
        f"Download {pick}-export.zip ({n_png} images)",
        data=lambda: shaping.zip_folder(exp, f"{pick}-export"),
        file_name=f"{pick}-export.zip",
        mime="application/zip",
        on_click="ignore",
        key="exp_dl",
        icon=":material/download:",
        type="primary",
    )
