"""cvdd explorer: `python app` (app/__main__.py; runs go to $CVDD_RUNS_DIR, default ./runs).

The UI only reads run folders and starts/stops worker processes through cvdd.jobs; it never
imports torch. Pages live in app/views/ (not pages/, which Streamlit would auto-discover).
"""

import sys
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the pages' `from app import ...` / `import cvdd`, any cwd

st.set_page_config(
    page_title="cvdd · committee voting distillation",
    # a file the server serves itself: a :material/...: page icon is fetched from a font
    # server on every page load (a console error and no icon without internet)
    page_icon=str(ROOT / "assets" / "icon.png"),
    layout="wide",
)
if st.get_option("server.address") not in ("127.0.0.1", "localhost", "::1"):
    st.sidebar.warning(
        "This server listens on every network interface. Start it with `python app` "
        "(127.0.0.1 only, no usage statistics) unless a proxy guards it."
    )


def page(file: str, title: str, icon: str, **kw) -> st.Page:
    return st.Page(f"views/{file}.py", title=title, icon=f":material/{icon}:", **kw)


nav = st.navigation(
    {
        "Start & watch": [
            page("new_run", "New run", "add_circle", url_path="new", default=True),
            page("runs", "Runs", "list", url_path="runs"),
            page("live", "Live run", "monitoring", url_path="live"),
        ],
        "Analysis": [
            page("bn", "BN discrepancy", "bar_chart", url_path="bn"),
            page("soft_labels", "Soft labels", "label", url_path="soft_labels"),
            page("diversity", "Diversity", "scatter_plot", url_path="diversity"),
            page("compare", "Compare & export", "compare_arrows", url_path="compare"),
        ],
    }
)
st.sidebar.caption(
    "CV-DD: a committee of models votes, weighted by prior performance, on "
    "every synthetic image (Cui et al.)."
)
nav.run()
