"""Repeats over seeds: the group key, seed lists, environment flags, the repeat plan, the CLI's
--seeds on the tiny preset, and the Compare page's means, intervals and paired differences on
those real runs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from app.shaping import compare, spread
from cvdd import jobs, layout, repeats, stats, twins
from cvdd.config import from_preset
from cvdd.rundir import RunDir
from cvdd.utils import CvddError

pytestmark = pytest.mark.xdist_group("repeat_runs")
ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app" / "main.py")


def _cfg(*sets: str) -> dict:
    return from_preset("tiny", list(sets)).to_dict()


# -- pure -------------------------------------------------------------------------------------


def test_group_key_ignores_only_the_seed_and_execution_settings():
    base = repeats.group_key(_cfg())
    same = [
        "seed=7",
        "device=auto",
        "threads=3",
        "cache_dir=/tmp/elsewhere",
        "recover.memory_gb=2",
        "recover.checkpoint_every=50",
        "recover.snapshot_every=1",
    ]
    for s in same:
        assert repeats.group_key(_cfg(s)) == base, s
    other = ["ipc=3", "recover.iterations=7", "recover.lr=0.1", "validate.epochs=3"]
    other += ["squeeze.members=test_tiny_cnn", "relabel.mode=eval"]
    for s in other:
        extra = ["recover.num_experts=1"] if s.startswith("squeeze") else []
        assert repeats.group_key(_cfg(s, *extra)) != base, s
    assert repeats.group_key(_cfg("seed=3", "threads=2")) == base
    # a run made before recover.groups_per_step was renamed repeats one made after
    old = _cfg("seed=1")
    old["recover"]["groups_per_step"] = old["recover"].pop("groups_per_wave")
    assert repeats.group_key(old) == base


def test_parse_seeds_reads_ranges_and_lists_and_refuses_the_rest():
    assert repeats.parse_seeds("0-7") == list(range(8))
    assert repeats.parse_seeds("1-3,8, 2") == [1, 2, 3, 8]
    assert repeats.parse_seeds("5") == [5]
    for bad in ("", "3-1", "a", "-1", "1.5", "0-999"):
        with pytest.raises(CvddError) as e:
            repeats.parse_seeds(bad)
        assert e.value.field == "seeds"


def _doc(cfg: dict, meta: dict | None = None) -> dict:
    return {"config": cfg, "meta": meta or {}}


def _env(**kw) -> dict:
    env = dict(device="cpu", threads=1, torch="2.1", torchvision="0.2", numpy="2.0")
    return {"environment": {**env, **kw}, "cvdd_version": "0.1.0"}


def test_env_flags_name_what_differs_and_stay_quiet_when_alike():
    docs = {"a": _doc(_cfg(), _env()), "b": _doc(_cfg(), _env())}
    assert repeats.env_flags(docs) == []
    docs["c"] = _doc(_cfg(), _env(device="cuda:1", threads=2))
    flags = repeats.env_flags(docs)
    assert any(f.startswith("threads: 1 (2 runs), 2 (1 run)") for f in flags), flags
    assert any(f.startswith("device:") and "cuda" in f for f in flags)
    docs["d"] = _doc(_cfg(), {})
    assert any("not recorded" in f and "d" in f for f in repeats.env_flags(docs))
    # cuda:0 and cuda:1 are one device kind
    same_kind = {"a": _doc(_cfg(), _env(device="cuda:0")), "b": _doc(_cfg(), _env(device="cuda"))}
    assert repeats.env_flags(same_kind) == []


def test_plan_brings_the_group_and_its_twins_to_n_seeds():
    cv = _cfg("seed=4")
    tw = _cfg("seed=4", "squeeze.members=test_tiny_cnn", "recover.num_experts=1")
    docs = {
        "r1": _doc(cv),
        "r2": _doc(tw, {"twin_of": "r1"}),
        "r3": _doc({**cv, "seed": 0}),  # seed 0 is there already, without a twin
        "r9": _doc(_cfg("seed=1", "ipc=3")),  # another setting: not in the group
    }
    plan = repeats.plan_repeat("r2", 3, docs)  # from the twin: the pair is repeated
    seeds = [(s, len(c["squeeze"]["members"])) for s, c, _ in plan.runs]
    assert seeds == [(0, 1), (1, 2), (1, 1)]
    assert plan.twin_for == {0: "r3", 2: 1}  # seed 0's twin names r3; seed 1's, the new run
    assert all(repeats.group_key(c) == repeats.group_key(cv) for _, c, _ in plan.runs[1:2])
    assert repeats.plan_repeat("r1", 3, {**docs, "r4": _doc(tw, {"twin_of": "r3"})}).runs == [
        (1, {**cv, "seed": 1}, {"repeat_of": "r1"}),
        (1, {**tw, "seed": 1}, {"repeat_of": "r2"}),
    ]
    with pytest.raises(CvddError):
        repeats.plan_repeat("r1", 1, docs)


def test_create_repeat_makes_linked_folders_that_group(tmp_path):
    src = RunDir.create(tmp_path, _cfg("seed=0")).path
    twin = twins.create_twin(src, tmp_path)
    made = repeats.create_repeat(src, 3, tmp_path)
    docs = repeats.config_docs(tmp_path)
    assert len(made) == 4 and all(p.parent == tmp_path for p in made)
    new = {p.name: docs[p.name] for p in made}
    assert sorted(repeats.seed_of(d) for d in new.values()) == [1, 1, 2, 2]
    for d in new.values():
        if repeats.method_of(d) == "sre2l++":
            partner = docs[d["meta"]["twin_of"]]
            assert repeats.seed_of(partner) == repeats.seed_of(d)
            assert repeats.method_of(partner) == "cvdd"
    exp = repeats.experiment_runs(twin.name, docs)
    assert len(exp["cvdd"]) == 3 and len(exp["sre2l++"]) == 3
    assert repeats.create_repeat(src, 3, tmp_path) == []  # nothing left to add


def test_seed_values_pair_by_seed_and_the_summary_says_it_in_words():
    def res(top1: float, real: float) -> dict:
        return {"student_top1": top1, "baselines": {"random_real": {"student_top1": real}}}

    entries = [("cvdd", s, res(70 + s, 60 + s)) for s in range(4)]
    entries += [("sre2l++", s, res(69 + s, 61)) for s in range(3)]
    entries += [("cvdd", 9, {"student_top1": None}), (None, 1, res(1, 1))]  # skipped
    values = repeats.seed_values(entries)
    assert values["cvdd"] == {0: 70, 1: 71, 2: 72, 3: 73}
    assert values["real"] == {0: 60, 1: 61, 2: 62, 3: 63}  # the CV-DD runs' own baselines
    arms, diffs = repeats.summarise(values)
    assert arms["cvdd"].n == 4 and arms["sre2l++"].n == 3
    assert diffs[("cvdd", "sre2l++")].n == 3 and diffs[("cvdd", "sre2l++")].mean == 1.0
    lines = repeats.summary_lines(values)
    assert lines[0].startswith("CV-DD: 71.5 ± ") and "n = 4" in lines[0]
    assert "CV-DD beats random real" in " ".join(lines) and "(resolved)" in " ".join(lines)
    df = spread.diffs_df(values)
    assert df.loc[df["difference"] == "CV-DD − random real", "resolved"].item() == "yes"


def test_reference_spread_is_read_tolerantly(tmp_path):
    ref = {"preset": "quick", "n_seeds": 8, "commit": "abc", "what": "sweep", "budgets": {}}
    iv = lambda m, h: {"mean": m, "n": 8, "sd": h, "lo": m - h, "hi": m + h}  # noqa: E731
    ref["budgets"]["120"] = {
        "resnet18": {"cvdd": iv(72.1, 1.3), "sre2l": iv(71.0, 1.2), "cvdd-sre2l": iv(1.1, 1.5)}
    }
    path = tmp_path / "reference_spread.json"
    path.write_text(json.dumps(ref))
    doc = json.loads(path.read_text())
    text = spread.reference_text(doc, preset="quick", budget=120, student="resnet18")
    assert "over 8 seeds: CV-DD 72.1 ± 1.3, SRe²L++ 71.0 ± 1.2" in text
    assert "CV-DD − SRe²L++ +1.1 [-0.4, +2.6], not resolved" in text
    assert "shipped: 120" in spread.reference_text(doc, preset="quick", budget=360, student="r")
    assert "tiny" in spread.reference_text(doc, preset="tiny", budget=120, student="resnet18")
    own = spread.reference_text(
        doc, preset="quick", budget=120, student="resnet18", dataset="/data/photos.zip"
    )
    assert "not this data set" in own and "72.1" not in own
    for broken in (None, {}, {"budgets": 3}, []):
        out = spread.reference_text(broken, preset="quick", budget=120, student="resnet18")
        assert out.startswith("No reference spread shipped")
    assert "CV-DD − SRe²L++" in spread.reference_df(doc).index


# -- real tiny runs: the CLI's --seeds, then the Compare page on them ---------------------------


@pytest.fixture(scope="module")
def repeat(tmp_path_factory):
    """`python -m cvdd run --preset tiny --seeds 0-1 --twin` (one student epoch, no eval-mode
    student: four runs in about a minute on an idle machine)."""
    root = tmp_path_factory.mktemp("repeat")
    argv = [sys.executable, "-m", "cvdd", "run", "--preset", "tiny", "--seeds", "0-1", "--twin"]
    argv += ["--runs-dir", str(root), "--set", "validate.compare_eval_labels=false"]
    argv += ["--set", "validate.epochs=1"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), CVDD_THREADS="1")
    # four runs in one process: a longer limit than conftest's one-run `cli` on a loaded machine
    out = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return root, out.stdout


def test_cli_seeds_runs_each_seed_and_its_twin_and_sums_up(repeat):
    root, stdout = repeat
    dirs = [Path(line) for line in stdout.splitlines() if line.startswith(str(root))]
    assert len(dirs) == 4 and all((d / layout.RESULT).is_file() for d in dirs)
    docs = repeats.config_docs(root)
    got = [(repeats.method_of(docs[d.name]), repeats.seed_of(docs[d.name])) for d in dirs]
    assert got == [("cvdd", 0), ("sre2l++", 0), ("cvdd", 1), ("sre2l++", 1)]
    assert docs[dirs[1].name]["meta"]["twin_of"] == dirs[0].name
    keys: dict[str, set] = {}
    for d in dirs:
        doc = docs[d.name]
        keys.setdefault(repeats.method_of(doc), set()).add(repeats.group_key(doc["config"]))
    assert all(len(k) == 1 for k in keys.values()) and keys["cvdd"] != keys["sre2l++"]
    tail = stdout.split("over 2 seeds", 1)[1]
    assert "CV-DD: " in tail and "SRe2L++: " in tail and "random real: " in tail
    assert "CV-DD vs SRe2L++" in tail or "beats" in tail


def _results(root: Path) -> dict:
    return {p.parent.name: json.loads(p.read_text()) for p in root.glob("*/result.json")}


def test_compare_shaping_on_real_runs_gives_names_intervals_and_pairs(repeat):
    root, _ = repeat
    docs, results = repeats.config_docs(root), _results(root)
    first = min(r for r in docs if repeats.method_of(docs[r]) == "cvdd")
    exp = repeats.experiment_runs(first, docs)
    assert len(exp["cvdd"]) == 2 and len(exp["sre2l++"]) == 2
    values = spread.experiment_values(exp, docs, results)
    by = {a: {repeats.seed_of(docs[r]): results[r]["student_top1"] for r in exp[a]} for a in exp}
    assert values["cvdd"] == by["cvdd"] and values["sre2l++"] == by["sre2l++"]
    arms = spread.arms_df(values)
    assert list(arms["method"]) == ["CV-DD", "SRe²L++", "random real"]
    assert math.isclose(arms["mean %"][0], round(sum(by["cvdd"].values()) / 2, 2))
    d = stats.paired(by["cvdd"], by["sre2l++"])
    row = spread.diffs_df(values).iloc[0]
    assert row["difference"] == "CV-DD − SRe²L++" and row["paired seeds"] == 2
    assert row["mean (points)"] == f"{d.mean:+.1f}" and row["95 % interval"] == (
        f"[{d.lo:+.1f}, {d.hi:+.1f}]"
    )
    assert spread.verdicts(values)[0] == stats.verdict(d, "CV-DD", "SRe²L++")
    assert spread.group_text(values, "cvdd").startswith("Over 2 seeds of this setting: CV-DD ")


def test_compare_page_shows_methods_and_queues_a_repeat(repeat, monkeypatch):
    root, _ = repeat
    monkeypatch.setenv("CVDD_RUNS_DIR", str(root))
    started = []
    monkeypatch.setattr(jobs, "resume_job", lambda p, wait=True: started.append(Path(p)) or True)
    docs = repeats.config_docs(root)
    first = min(r for r in docs if repeats.method_of(docs[r]) == "cvdd")
    st.cache_data.clear()
    st.cache_resource.clear()
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["run"] = first
    at.switch_page("views/compare.py")
    at.run()
    assert not at.exception and not at.error, [e.value for e in (*at.exception, *at.error)]
    frames = [f.value for f in at.dataframe]
    runs = next(f for f in frames if "twin" in f.columns)
    assert list(runs.columns[:4]) == ["run", "method", "seed", "student_top1"]
    assert set(runs["method"]) == {"CV-DD", "SRe²L++"} and "None" not in runs.to_string()
    assert any("difference" in f.columns for f in frames)
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    names = [t["x"][0] for t in chart["data"] if t["type"] == "bar"]
    assert names == ["CV-DD", "SRe²L++", "random real"]  # bars by method, never by run id
    bars = [t for t in chart["data"] if t["type"] == "bar"]
    assert all(t["error_y"]["visible"] for t in bars)
    assert any(str(m.value).startswith("- CV-DD") for m in at.markdown)
    at.number_input(key="rep_n").set_value(3).run()
    at.button(key="rep_start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(started) == 2  # seed 2 and its twin, queued in that order
    new = repeats.config_docs(root)
    assert [repeats.seed_of(new[p.name]) for p in started] == [2, 2]
    assert new[started[1].name]["meta"]["twin_of"] == started[0].name


def test_compare_table_puts_key_columns_first_and_shows_no_none():
    rows = [
        {"run": "a", "method": "cvdd", "dataset": "builtin", "student_top1": 70.04,
         "hard_top1": None, "eval_top1": None, "teacher_top1": 91.2, "seed": 0, "twin": "b"},
        {"run": "b", "method": "sre2l++", "dataset": "builtin", "student_top1": None,
         "hard_top1": None, "eval_top1": 66.0, "teacher_top1": 91.2, "seed": 0, "twin": None},
    ]  # fmt: skip
    df = compare.display_table(rows)
    assert list(df.columns) == ["run", "method", "seed", "student_top1", "teacher_top1", "twin"] + [
        "dataset",
        "eval_top1",
    ]  # hard_top1: no run has it
    assert list(df["method"]) == ["CV-DD", "SRe²L++"]
    assert list(df["student_top1"]) == ["70.0", "—"] and list(df["twin"]) == ["b", "—"]
    assert "None" not in df.to_string() and "nan" not in df.to_string()
