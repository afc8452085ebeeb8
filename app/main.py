"""cvdd explorer: `streamlit run app/main.py` (runs go to $CVDD_RUNS_DIR, default ./runs).

The UI only reads run folders and starts/stops worker processes through cvdd.jobs; it never
imports torch. Pages live in app/views/ (not pages/, which Streamlit would auto-discover).
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `from app import ...` and `import cvdd` from any folder

import streamlit as st

st.set_page_config(page_title="cvdd · committee voting distillation", page_icon=":material/how_to_vote:",
                   layout="wide")
nav = st.navigation({
    "Start & watch": [
        st.Page("views/new_run.py", title="New run", icon=":material/add_circle:", url_path="new", default=True),
        st.Page("views/runs.py", title="Runs", icon=":material/list:", url_path="runs"),
        st.Page("views/live.py", title="Live run", icon=":material/monitoring:", url_path="live"),
    ],
    "Analysis": [
        st.Page("views/bn.py", title="BN discrepancy", icon=":material/bar_chart:", url_path="bn"),
        st.Page("views/soft_labels.py", title="Soft labels", icon=":material/label:", url_path="soft_labels"),
        st.Page("views/diversity.py", title="Diversity", icon=":material/scatter_plot:", url_path="diversity"),
        st.Page("views/compare.py", title="Compare & export", icon=":material/compare_arrows:", url_path="compare"),
    ],
})
st.sidebar.caption("CV-DD: a committee of models votes, weighted by prior performance, on "
                   "every synthetic image (Cui et al.).")
nav.run()
