"""Compare runs (student top-1 vs settings), their repeats over seeds (means with intervals,
paired differences), and export a run's distilled set as a zip."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app import repeat_panel, shaping, state, twins
from app import spread as run_spread
from app.shaping import compare, spread
from cvdd import jobs, layout, repeats
from cvdd import twins as engine_twins
from cvdd.utils import CvddError


def _twin_button(shown: list[str], rows: list[dict], docs: dict) -> None:
    """Start the SRe²L++ twin of a finished CV-DD run in the table that has none yet."""
    done = {r["run_id"] for r in rows if r["status"] == "done"}
    cands = []
    for rid in shown:
        try:
            d = state.resolve(rid)
        except CvddError:
            continue
        if rid in done and twins.method(d) == "cvdd" and not engine_twins.find_twin(rid, docs):
            cands.append(rid)
    if not cands:
        return
    c1, c2 = st.columns([3, 1])
    pick = c1.selectbox("Finished CV-DD run without a twin", cands, key="cmp_twin_pick")
    if c2.button("Start SRe²L++ twin", key="cmp_twin_start", icon=":material/call_split:"):
        try:
            new = engine_twins.create_twin(state.resolve(pick), state.runs_root(), "app")
            jobs.resume_job(new, wait=False)
        except CvddError as e:
            st.error(f"Could not start the twin: {e}")
        else:
            st.success(f"Started {new.name}; it joins the table once it exists.")
            st.page_link(twins.LIVE, label="Watch it", query_params={"run": new.name})


def _students(results: dict, headline: dict) -> None:
    """Table 4 style: every student architecture's top-1 on each run's distilled set."""
    st.subheader("Students of several architectures (paper Table 4)")
    tab = shaping.students_table(results, headline)
    if tab.empty:
        st.info("No finished run here has a student result yet (result.json).")
        return
    archs = [c for c in tab.columns if c not in ("run", "method")]
    st.dataframe(compare.display_table(tab.to_dict("records"), numbers=archs), hide_index=True)
    st.caption(
        "Top-1 % on the real test split of each architecture trained from scratch on the run's "
        "distilled images with the run's labels (`validate.students`; `convnet3` is the field's "
        "standard 3-block ConvNet)."
        + (
            ""
            if len(archs) > 1
            else " These runs trained one architecture: set e.g. "
            "`validate.students=resnet18,convnet3` (More settings → extra overrides)."
        )
    )


ROOT = Path(__file__).resolve().parents[2]
# result columns, key ones first: (header, width in px, what it is)
TOP1_COLUMNS = {
    "student_top1": ("top-1 %", 62, "student top-1 % with the run's labels (one seed)"),
    "random_real_top1": ("random real %", 96, "the same number of random real images"),
    "teacher_top1": ("teacher %", 70, "the relabel teacher's own top-1 (result.json `teacher`)"),
    "bssl_top1": ("BSSL %", 60, "distilled set, BSSL soft labels"),
    "eval_top1": ("eval %", 56, "distilled set, eval-mode soft labels"),
    "hard_top1": ("hard %", 56, "distilled set, one-hot labels alone (no teacher)"),
    "random_real_hard_top1": ("real hard %", 86, "random real images, one-hot labels alone"),
}
NARROW = {
    "method": 68,
    "seed": 44,
    "dataset": 72,
    "ipc": 44,
    "members": 68,
    "voter": 56,
    "relabel": 60,
}


def _benchmark() -> None:
    """The benchmark's findings (benchmarks/sweep.py over seeds), not any run's."""
    md = ROOT / "benchmarks" / "out" / "sweep.md"
    with st.expander("What the benchmarks show (benchmarks/, not these runs)"):
        ref = run_spread.reference()
        ref_df = spread.reference_df(ref)
        if ref_df.empty:
            st.caption(spread.NO_REFERENCE[:1].upper() + spread.NO_REFERENCE[1:] + ".")
        else:
            st.markdown(
                f"**Seed spread** ({ref.get('what', 'benchmarks/sweep.py')}; preset "
                f"{ref.get('preset')}, {ref.get('n_seeds')} seeds, commit {ref.get('commit')}): "
                "mean ± 95 % half-width, student top-1 % with BSSL labels; differences are "
                "paired by seed, with their 95 % interval."
            )
            st.dataframe(ref_df)
        if md.is_file():
            st.caption(f"The whole sweep, as `{md.relative_to(ROOT)}` has it:")
            st.markdown(md.read_text())
        else:
            st.caption("Run `python benchmarks/sweep.py` for the whole table.")


st.title("Compare & export")
_benchmark()
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

# a chosen run brings its SRe²L++ twin (or the CV-DD run it twins) along, right after it
docs = twins.config_docs()
pairs = {rid: engine_twins.find_twin(rid, docs) for rid in chosen}
shown = list(dict.fromkeys(x for rid in chosen for x in (rid, pairs[rid]) if x))
table, results, headline = [], {}, {}
for rid in shown:
    try:
        d = state.resolve(rid)
    except CvddError:
        continue
    results[rid] = state.read_json_file(d / layout.RESULT)
    cfg_doc = state.run_config(d)
    headline[rid] = shaping.dig(cfg_doc, "config", "validate", "student")
    row = shaping.compare_row(rid, cfg_doc, results[rid])
    twin = pairs.get(rid) or engine_twins.find_twin(rid, docs)
    table.append({**row, "seed": repeats.seed_of(cfg_doc), "twin": twin})
if not table:
    st.info("Choose runs above (finished runs have a student accuracy).")
else:
    df = compare.display_table(table)
    st.dataframe(
        df,
        hide_index=True,
        # widths that fit the page together (auto widths ran past its right edge); the key
        # columns come first and the run column stays in view when the table scrolls
        column_config={
            "run": st.column_config.TextColumn("run", width=235, pinned=True),
            "twin": st.column_config.TextColumn(
                "twin", width=235, help="the SRe²L++ twin (or the CV-DD run it twins)"
            ),
            **{c: st.column_config.Column(c, width=w) for c, w in NARROW.items()},
            **{
                c: st.column_config.TextColumn(label, width=w, help=why)
                for c, (label, w, why) in TOP1_COLUMNS.items()
            },
        },
    )
    st.caption(
        "Each top-1 is one seed's; **Repeats over seeds** below gives each method's mean over "
        "seeds with its interval. A run with an SRe²L++ twin (same seed, IPC, data and budgets, "
        "a committee of one) brings it into the table; column **twin** names the pair."
    )
    _twin_button(shown, rows, docs)
    repeat_panel.section(shown, docs)
    _students(results, headline)

st.subheader("Export a distilled set")
st.caption(
    "The export/ folder of a finished run: PNG images as an ImageFolder "
    "(images/<class>/<ipc>.png), soft labels (soft_labels.npz, labels.csv) and the "
    "config. The zip is built only when you click."
)
# default: the run in view if it has an export, else the newest that has one (ids: newest first)
exported = [rid for rid in ids if (root / rid / layout.EXPORT).is_dir()]
first = next((rid for rid in ([cur] if cur in exported else []) + exported), None)
pick = st.selectbox("Run", ids, index=ids.index(first) if first else 0, key="exp_run")
try:
    exp = state.resolve(pick) / layout.EXPORT
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
