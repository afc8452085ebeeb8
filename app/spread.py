"""The typical seed spread beside a single run's top-1, on every page that shows one (Live, Runs,
Compare): from the run's repeat group when it has finished seeds, else from the shipped reference
assets/reference_spread.json. One seed is not a result (docs/method.md §11).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app import shaping, state, twins
from app.shaping import spread
from cvdd import layout, repeats
from cvdd import spread as cvdd_spread
from cvdd.config import from_preset
from cvdd.utils import CvddError

REFERENCE = cvdd_spread.REFERENCE  # the shipped reference (cvdd/spread.py reads it too)


def reference() -> dict | None:
    """The shipped reference spread (benchmarks/sweep.py's summary), or None."""
    doc = state.read_json_file(REFERENCE)
    return doc if isinstance(doc, dict) else None


def _result(rid: str):
    try:
        return state.read_json_file(state.resolve(rid) / layout.RESULT)
    except CvddError:
        return None


def experiment(run_id: str, docs: dict | None = None) -> tuple[dict, dict]:
    """The runs repeating `run_id`'s experiment per method, and their {arm: {seed: top-1}}."""
    docs = twins.config_docs() if docs is None else docs
    exp = repeats.experiment_runs(run_id, docs)
    results = {rid: _result(rid) for rids in exp.values() for rid in rids}
    return exp, spread.experiment_values(exp, docs, results)


def reference_for(cfg: dict | None) -> str:
    """The reference sentence for a config's preset, recover budget and headline student."""
    cfg = cfg if isinstance(cfg, dict) else {}
    return spread.reference_text(
        reference(),
        preset=cfg.get("name"),
        budget=shaping.dig(cfg, "recover", "iterations"),
        student=shaping.dig(cfg, "validate", "student"),
        dataset=shaping.dig(cfg, "data", "dataset"),
    )


def note(run_id: str, docs: dict | None = None) -> str:
    """One sentence for a single run's top-1: its group's spread, else the reference's."""
    docs = twins.config_docs() if docs is None else docs
    doc = docs.get(run_id)
    exp, values = experiment(run_id, docs)
    own = spread.group_text(values, repeats.method_of(doc))
    if own:
        flags = repeats.env_flags({r: docs[r] for rs in exp.values() for r in rs if docs.get(r)})
        mixed = " Its runs differ in environment (see Compare): alike, not bit-equal."
        return own + (mixed if flags else "")
    return "One seed is not a result. " + reference_for((doc or {}).get("config"))


def show(run_dir: Path) -> None:
    """Live page: under a finished run's top-1, the typical seed spread (one caption)."""
    res = state.read_json_file(run_dir / layout.RESULT)
    if isinstance(res, dict) and res.get("student_top1") is not None:
        st.caption(note(run_dir.name), help="Repeat it over seeds on the Compare page.")


def runs_note(rows: list[dict]) -> None:
    """Runs page: each top-1 is one seed's; the groups repeated here, and the reference spread
    of the quick preset (one caption)."""
    docs = twins.config_docs()
    done = [r["run_id"] for r in rows if r.get("status") == "done" and docs.get(r["run_id"])]
    seen: set[str] = set()
    parts = []
    for rid in reversed(done):  # oldest first
        key = repeats.group_key(docs[rid]["config"])
        if key in seen:
            continue
        seen.add(key)
        _, values = experiment(rid, docs)
        method = repeats.method_of(docs[rid])
        iv = repeats.summarise(values)[0].get(method)
        if iv is not None and iv.n >= 2:
            name = f"{docs[rid]['config'].get('name')} {spread.NAMES[method]}"
            parts.append(f"{name}, {iv.n} seeds: {iv.text(1)}")
    quick = reference_for(from_preset("quick").to_dict())
    st.caption(
        "Each top-1 is one seed's: seeds of one setting differ by a few points. "
        + ("Repeated here: " + "; ".join(parts[-4:]) + ". " if parts else "")
        + "Quick preset: "
        + quick[:1].lower()
        + quick[1:]
    )
