"""The Streamlit UI (app/) with AppTest, against a real run directory made by the engine.

Every page renders a finished `tiny` run; missing, invalid and damaged runs give a message,
never an exception; the job buttons start, stop and resume a real worker process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import streamlit as st
from procs import HANG_S
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from cvdd import jobs, layout, runs  # noqa: E402 -- after the sys.path line

APP = str(ROOT / "app" / "main.py")
PAGES = ["new_run", "runs", "live", "bn", "soft_labels", "diversity", "compare"]
RUN_PAGES = ["live", "bn", "soft_labels", "diversity"]
TIMINGS: dict[str, float] = {}


@pytest.fixture(autouse=True)
def _fresh_caches():
    # cache_data / cache_resource are process-global across AppTest instances
    st.cache_data.clear()
    st.cache_resource.clear()
    yield


@pytest.fixture
def root(tiny_run_dir, monkeypatch) -> Path:
    monkeypatch.setenv("CVDD_RUNS_DIR", str(tiny_run_dir.parent))
    monkeypatch.setenv("CVDD_THREADS", "1")
    return tiny_run_dir.parent


def render(page: str = "new_run", **query) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=HANG_S)
    for k, v in query.items():
        at.query_params[k] = v
    if page != "new_run":
        at.switch_page(f"views/{page}.py")
    return at.run()


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    parts = [
        e.value
        for kind in ("error", "warning", "info", "success", "markdown", "caption")
        for e in getattr(at, kind)
    ]
    return "\n".join(str(p) for p in parts)


def metrics(at: AppTest) -> dict:
    return {m.label: m.value for m in at.metric}


# -- pages on a finished run ----------------------------------------------------------------
def test_new_run_opens_ready_on_builtin_quick(root):
    at = ok(render())
    assert at.title[0].value == "New run"
    assert at.selectbox(key="nr_preset").value == "quick"
    assert at.radio(key="nr_kind").value == "builtin"
    assert not at.button(key="start").disabled
    assert not at.error
    assert "What happens in each stage" in texts(at)


def test_new_run_shows_config_errors_before_start(root):
    at = ok(render())
    at.text_input(key="nr_num_experts").input("9").run()
    ok(at)
    assert any("Experts per image N" in e.value for e in at.error)  # the field's label
    assert at.button(key="start").disabled
    at.text_input(key="nr_num_experts").input("2").run()
    at.radio(key="nr_kind").set_value("folder").run()
    at.text_input(key="nr_path").input("/no/such/folder/for/cvdd").run()
    ok(at)
    assert any("does not exist" in e.value for e in at.error)
    assert at.button(key="start").disabled
    before = sorted(root.iterdir())
    at.text_input(key="nr_path").input("/etc").run()  # exists, but is no data set
    err = next(e.value for e in ok(at).error if "no known data set layout" in e.value)
    assert "- **imagefolder**: `train/<class>/* plus val/<class>/*" in err  # code, not italics
    assert at.button(key="start").disabled and sorted(root.iterdir()) == before


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_a_finished_run(root, tiny_run_dir, page):
    t0 = time.perf_counter()
    at = ok(render(page, run=tiny_run_dir.name))
    TIMINGS[page] = time.perf_counter() - t0
    n_plotly, n_img = len(at.get("plotly_chart")), len(at.image)
    # a healthy run shows no error and no warning: components.guard turns an exception inside
    # a panel into st.warning, so a warning here is a swallowed bug
    assert not at.exception and not at.error and not at.warning, [
        e.value for kind in ("exception", "error", "warning") for e in getattr(at, kind)
    ]
    if page == "live":
        assert metrics(at)["status"] == "done" and metrics(at)["student top-1"].endswith("%")
        assert n_img >= 2 and n_plotly == 0  # snapshot grid + class row; one panel at a time
        assert [p.proto.value for p in at.get("progress")] == [100] * 6
        assert at.button(key="stop").disabled and at.button(key="resume").disabled
        assert at.select_slider(key=f"snap_{tiny_run_dir.name}").value > 0
        for panel in ("Loss curves", "Committee"):  # each draws its charts when shown
            at.session_state[f"panel_{tiny_run_dir.name}"] = panel
            assert len(ok(at.run()).get("plotly_chart")) >= 1 and not at.warning, panel
        at.session_state[f"panel_{tiny_run_dir.name}"] = "Memory"
        plan = next(d for d in ok(at.run()).dataframe if "what" in d.value.columns).value
        assert plan["value"][plan["what"] == "waves × groups per wave"].iloc[0].startswith("1 × ")
    elif page == "bn":
        assert n_plotly >= 3 and metrics(at)
    elif page == "soft_labels":
        assert n_img >= 1 and n_plotly >= 3 and "argmax agreement" in metrics(at)
        assert "student top-1, BSSL labels" in metrics(at)
    elif page == "diversity":
        assert n_plotly >= 2 and n_img >= 1 and "synthetic: mean cosine" in metrics(at)
    elif page == "compare":
        assert n_plotly == 1 and len(at.get("download_button")) == 1
    elif page == "runs":
        assert len(at.dataframe) == 1 and tiny_run_dir.name in at.dataframe[0].value["run"].values
    print(f"\n[render] {page}: {TIMINGS[page]:.2f}s")


def test_live_snapshot_slider_and_class_view(root, tiny_run_dir):
    at = ok(render("live", run=tiny_run_dir.name))
    rid = tiny_run_dir.name
    assert at.select_slider(key=f"snap_{rid}").value == 6  # follows the latest snapshot
    assert "Rows, top to bottom: T-shirt/top, Trouser" in texts(at)  # class names, not indices
    at.select_slider(key=f"snap_{rid}").set_value(0).run()
    ok(at)
    assert at.select_slider(key=f"snap_{rid}").value == 0
    assert at.toggle(key=f"follow_{rid}").value is False  # scrubbing stops following
    at.selectbox(key=f"cls_{rid}").set_value(3).run()
    assert any("at step" in (c or "") for i in ok(at).image for c in [i.proto.imgs[0].caption])


def test_runs_list_open_sets_query_param(root, tiny_run_dir):
    at = ok(render("runs"))
    at.selectbox(key="runs_pick").set_value(tiny_run_dir.name)
    at.button(key="runs_open").click().run()
    ok(at)
    assert (
        at.query_params["run"] == [tiny_run_dir.name] or at.query_params["run"] == tiny_run_dir.name
    )
    assert at.title[0].value == "Live run"


def test_clone_prefills_the_form(root, tiny_run_dir):
    at = ok(render(clone=tiny_run_dir.name))
    assert "Cloned from run" in texts(at)
    assert at.text_input(key="nr_ipc").value == "2"
    assert at.multiselect(key="nr_members").value == ["test_tiny_cnn", "test_tiny_resnet"]
    assert not at.button(key="start").disabled


def test_the_ui_process_never_imports_torch(root, tiny_run_dir):
    code = (
        "import sys\n"
        "from streamlit.testing.v1 import AppTest\n"
        f"for page in {PAGES!r}:\n"
        f"    at = AppTest.from_file({APP!r}, default_timeout={HANG_S})\n"
        f"    at.query_params['run'] = {tiny_run_dir.name!r}\n"
        "    if page != 'new_run':\n"
        "        at.switch_page(f'views/{page}.py')\n"
        "    at.run()\n"
        "    assert not at.exception, (page, [e.value for e in at.exception])\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=HANG_S * 2,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


# -- bad run ids and damaged run folders -----------------------------------------------------
@pytest.mark.parametrize("page", RUN_PAGES)
def test_missing_run_id_gives_a_message(root, page):
    at = ok(render(page, run="20990101-000000-nope-ipc1-0000"))
    assert any("not found" in e.value for e in at.error)


@pytest.mark.parametrize("rid", ["../../etc", "..", "/etc/passwd", "a/../../b"])
def test_path_traversal_is_rejected(root, rid):
    at = ok(render("live", run=rid))
    assert any("invalid run id" in e.value for e in at.error)
    assert not at.get("plotly_chart")


@pytest.fixture
def damaged_root(tmp_path, tiny_run_dir, monkeypatch) -> Path:
    """A corrupt run (garbage in every file) and a partial one (a finished run minus its
    analysis/relabel outputs), in their own runs root."""
    monkeypatch.setenv("CVDD_RUNS_DIR", str(tmp_path))
    bad = tmp_path / "20260101-000000-builtin-ipc2-dead"
    for rel in (
        "config.json",
        "recover/committee.json",
        "prior/priors.json",
        "analysis/bn_stats.json",
        "analysis/diversity.json",
        "analysis/soft_labels.json",
        "validate/students.json",
        "result.json",
        "recover/trace.jsonl",
        "recover/images.npz",
        "init/images.npz",
        "relabel/soft_labels.npz",
        "snapshots/recover/000000.png",
    ):
        (bad / rel).parent.mkdir(parents=True, exist_ok=True)
        (bad / rel).write_bytes(b"\x00garbage{[")
    (bad / "analysis/bn_stats.json").write_text(json.dumps({"layers": [{"sources": 3}]}))
    (bad / "analysis/diversity.json").write_text(json.dumps({"sources": {"x": {"matrices": 1}}}))
    (bad / "events.jsonl").write_text(
        'garbage\n{"seq": 0, "kind": "run_start"}\n'
        '{"seq": 1, "kind": "snapshot", "stage": "recover", "step": 0, '
        '"path": "snapshots/recover/000000.png", "rows": [0], "cols": [0], "cell": 28}\n'
        '{"seq": 2, "kind": "snapshot", "stage": "recover", "step": 2, "path": "nope.png"}\n'
        '{"seq": 3, "kind": "progr'
    )
    part = tmp_path / "20260101-000001-builtin-ipc2-beef"
    shutil.copytree(tiny_run_dir, part, ignore=shutil.ignore_patterns("checkpoints", "export"))
    for rel in ("analysis", "relabel", "validate", "result.json"):
        p = part / rel
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    return tmp_path


@pytest.mark.parametrize("page", RUN_PAGES + ["compare", "runs"])
def test_corrupt_and_partial_runs_give_messages(damaged_root, page):
    for rid in ("20260101-000000-builtin-ipc2-dead", "20260101-000001-builtin-ipc2-beef"):
        at = ok(render(page, run=rid))
        if page in RUN_PAGES and (rid.endswith("dead") or page != "live"):
            assert at.warning or at.info, f"{page} {rid}: no message"
        if page == "live" and rid.endswith("beef"):
            assert metrics(at)["student top-1"] == "—" and at.image  # no result.json yet


def test_failed_run_shows_error_and_offers_resume(tmp_path, tiny_run_dir, monkeypatch):
    monkeypatch.setenv("CVDD_RUNS_DIR", str(tmp_path))
    d = tmp_path / "20260101-000002-builtin-ipc2-f00d"
    shutil.copytree(tiny_run_dir, d, ignore=shutil.ignore_patterns("checkpoints", "export"))
    evs = layout.read_events(d)
    cut = next(
        i for i, e in enumerate(evs) if e["kind"] == "stage_start" and e.get("stage") == "relabel"
    )
    evs = evs[:cut] + [
        {
            "seq": cut,
            "t": evs[cut]["t"],
            "kind": "run_end",
            "status": "failed",
            "error": "teacher exploded; lower relabel.batch_size",
            "traceback": "Traceback (most recent call last): ...",
        }
    ]
    (d / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in evs))
    at = ok(render("live", run=d.name))
    assert any("teacher exploded" in e.value for e in at.error)
    assert metrics(at)["status"] == "failed" and not at.button(key="resume").disabled
    assert any("Traceback" in c.value for c in at.code)
    assert at.image  # the snapshots written before the failure still show


@pytest.mark.parametrize(
    "key, value, msg",
    [
        ("nr_ipc", "0", "IPC must be at least 1"),
        ("nr_ipc", "-3", "IPC must be at least 1"),
        ("nr_ipc", "1e3", "IPC must be a whole number"),  # a number box read it as 1
        ("nr_ipc", "10.5", "IPC must be a whole number"),  # ... and this as 10
        ("nr_ipc", "ten", "IPC must be a whole number"),
        ("nr_ipc", "", "Enter IPC as a whole number"),
        ("nr_ipc", "10000", "larger than the 500 images per class"),
        ("nr_ipc", "501", "choose IPC ≤ 500"),
        ("nr_iterations", "0", "Recover iterations must be at least 1"),
        ("nr_iterations", "2e3", "Recover iterations must be a whole number"),
        ("nr_seed", "-1", "The seed must be between 0 and"),
        ("nr_num_experts", "1.5", "Experts per image N must be a whole number"),
        ("nr_temperature", 0.0, "Temperature T must be > 0"),
    ],
)
def test_invalid_number_disables_start_and_says_why_under_it(root, key, value, msg):
    before = sorted(root.iterdir())
    at = ok(render())
    box = at.number_input(key=key) if isinstance(value, float) else at.text_input(key=key)
    box.set_value(value)
    at.button(key="start").click().run()  # typed and clicked at once, as a browser may send it
    box = ok(at).number_input(key=key) if isinstance(value, float) else at.text_input(key=key)
    assert box.value == value  # kept as typed, not clamped or cut
    col = next(c for c in at.columns if [n.key for n in [*c.number_input, *c.text_input]] == [key])
    assert any(msg in e.value for e in col.error), [e.value for e in at.error]
    assert at.button(key="start").disabled and "--set" not in texts(at)
    assert at.title[0].value == "New run" and sorted(root.iterdir()) == before  # none started


@pytest.mark.parametrize("field", ["ipc", None])
def test_run_failed_on_its_settings_offers_clone_not_resume(
    tmp_path, tiny_run_dir, monkeypatch, field
):
    monkeypatch.setenv("CVDD_RUNS_DIR", str(tmp_path))
    bad = tmp_path / "20991231-000000-builtin-ipc600-0bad"
    bad.mkdir()
    shutil.copy(tiny_run_dir / "config.json", bad)  # its meta: 500 images per class
    err = "class 'x' has only 500 training images but IPC needs 600; lower ipc (--set ipc=500)"
    end = {"kind": "run_end", "status": "failed", "error": err, "field": field}
    (bad / "events.jsonl").write_text(f'{{"kind": "run_start"}}\n{json.dumps(end)}\n')
    at = ok(render("live"))  # no ?run=: the only run is picked
    assert at.button(key="resume").disabled and metrics(at)["status"] == "failed"
    fix = "this run with IPC ≤ 500" if field else "failed before its first stage"
    assert any(fix in e.value for e in at.error) and not any("--set" in e.value for e in at.error)
    good = tmp_path / tiny_run_dir.name  # older, with an export
    shutil.copytree(tiny_run_dir, good, ignore=shutil.ignore_patterns("checkpoints"))
    assert ok(render("compare")).selectbox(key="exp_run").value == good.name
    assert "2 runs in" in texts(ok(render("runs")))
    shutil.rmtree(bad)
    assert "1 run in" in texts(ok(render("runs")))


def test_empty_runs_root(tmp_path, monkeypatch):
    monkeypatch.setenv("CVDD_RUNS_DIR", str(tmp_path / "none"))
    for page in PAGES:
        at = ok(render(page))
        if page != "new_run":
            assert "No runs yet" in texts(at)


# -- the job manager: start, refuse duplicates, stop, resume, "server restart" ---------------
def _wait(cond, timeout: float, what: str) -> None:
    t_end = time.time() + timeout
    while time.time() < t_end:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_job_start_stop_resume_restart(root, monkeypatch):
    at = ok(render())
    at.selectbox(key="nr_preset").set_value("tiny").run()
    at.text_input(key="nr_iterations").input("300").run()
    ok(at)
    assert at.text_input(key="nr_ipc").value == "2" and not at.error
    waits, real_wait = [], jobs._wait_started  # Start must not wait for the worker's lock
    monkeypatch.setattr(jobs, "_wait_started", lambda *a, **k: (waits.append(a), real_wait(*a)))
    at.button(key="start").click().run()
    ok(at)
    assert waits == [], "Start waited for the worker: the page blocks until torch imports"
    rid = at.query_params["run"]
    rid = rid[0] if isinstance(rid, list) else rid
    run_dir = root / rid
    assert at.title[0].value == "Live run"
    assert metrics(at)["status"] in ("starting", "running")  # 'starting' until the lock
    assert jobs.resume_job(run_dir, wait=False) is False  # no duplicate while it starts
    _wait(lambda: runs.is_alive(run_dir), HANG_S, "the worker to take its lock")
    assert jobs.resume_job(run_dir) is False  # ... nor while it runs
    pid = json.loads((run_dir / "job.json").read_text())["pid"]

    at.run()
    assert metrics(ok(at))["status"] == "running"
    assert not at.button(key="stop").disabled and at.button(key="resume").disabled
    at.button(key="stop").click().run()
    ok(at)
    _wait(lambda: not runs.is_alive(run_dir), HANG_S, "the worker to stop")
    assert runs.run_status(run_dir)["status"] == "stopped"
    at.run()
    assert metrics(ok(at))["status"] == "stopped" and not at.button(key="resume").disabled

    other_tab = ok(render("live", run=rid))  # a second session, rendered while stopped
    at.button(key="resume").click().run()
    ok(at)
    assert metrics(at)["status"] in ("starting", "running")
    _wait(lambda: runs.is_alive(run_dir), HANG_S, "the resumed worker to take its lock")
    at.run()
    assert metrics(ok(at))["status"] == "running"
    assert f"{rid} — running" in at.selectbox(key="pick_live").options  # the picker's label too
    new_pid = json.loads((run_dir / "job.json").read_text())["pid"]
    assert new_pid != pid
    other_tab.button(key="resume").click().run()  # stale tab: must not start a second worker
    ok(other_tab)
    assert json.loads((run_dir / "job.json").read_text())["pid"] == new_pid
    assert metrics(other_tab)["status"] == "running"

    st.cache_data.clear()  # "server restart": nothing in memory survives
    st.cache_resource.clear()
    fresh = ok(render("live", run=rid))
    assert metrics(fresh)["status"] == "running" and not fresh.button(key="stop").disabled
    _wait(lambda: not runs.is_alive(run_dir), HANG_S, "the resumed run to finish")
    assert runs.run_status(run_dir)["status"] == "done"
    fresh.run()
    assert metrics(ok(fresh))["status"] == "done"
    assert sum(e["kind"] == "run_start" for e in layout.read_events(run_dir)) == 2
