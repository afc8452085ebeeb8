"""The run as one HTML page (cvdd.report, `python -m cvdd report`, the Live page's button): on
a real finished tiny run, every section is there, the images are inline, nothing points outside
the file; unfinished, missing and damaged run folders; repeats give intervals; and, in a real
browser, the file opens offline without a request or a console error and prints on A4."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
import streamlit as st
from browser import CHROMIUM
from procs import HANG_S
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from cvdd import layout, report  # noqa: E402 -- after the sys.path line
from cvdd.report.svg import Series, bar_chart, nice_ticks  # noqa: E402

SECTIONS = (
    "settings",
    "stages",
    "committee",
    "images",
    "bn",
    "soft-labels",
    "diversity",
    "students",
)


def _copy(run_dir: Path, root: Path) -> Path:
    dst = root / run_dir.name
    shutil.copytree(run_dir, dst, ignore=shutil.ignore_patterns("checkpoints", "worker.lock"))
    return dst


def _assert_self_contained(html: str) -> None:
    low = html.lower()
    for bad in ("http", 'src="//', "<script", "<link", "url(//", "@import", "@font-face"):
        assert bad not in low, bad


def test_a_finished_run_has_every_section_inline(tiny_run_dir):
    html = report.build_html(tiny_run_dir)
    for sid in SECTIONS:
        assert f'<section id="{sid}"' in html, sid
    _assert_self_contained(html)
    assert "Could not draw" not in html and "Not in this run" not in html
    # both grids (initial and synthetic) are one inline PNG each, inside the images section
    images = html.split('<section id="images"', 1)[1].split("</section>", 1)[0]
    assert images.count('href="data:image/png;base64,') == 2
    res = json.loads((tiny_run_dir / layout.RESULT).read_text())
    assert f"{res['student_top1']:.1f}" in html  # the headline top-1 is drawn on its bar
    assert f"{res['test_images']:,} test images" in html  # and says what it is measured on
    doc = json.loads((tiny_run_dir / layout.CONFIG).read_text())
    for name in doc["meta"]["class_names"]:
        assert name in images
    for member in doc["config"]["squeeze"]["members"]:
        assert f"<td>{member}</td>" in html
    assert "softmax(α/" in html and "<svg" in html
    assert "One seed is not a result" in html  # a single seed: the spread is named, not shown


def test_cli_writes_into_the_run_and_prints_the_path_last(cli, tiny_run_dir, tmp_path):
    run = _copy(tiny_run_dir, tmp_path)
    out = cli("report", str(run))
    assert out.returncode == 0, out.stderr
    path = Path(out.stdout.strip().splitlines()[-1])
    assert path == (run / layout.REPORT).resolve() and path.read_text().startswith("<!DOCTYPE")
    other = tmp_path / "handout.html"
    out = cli("report", str(run), "--out", str(other))
    assert Path(out.stdout.strip().splitlines()[-1]) == other.resolve() and other.is_file()
    # a handout: readable as a plain open() would make it, not mkstemp's owner-only 0600
    mask = os.umask(0)
    os.umask(mask)
    assert other.stat().st_mode & 0o777 == 0o666 & ~mask
    assert "report" in cli("report", "-h").stdout


def test_missing_and_unfinished_runs_get_one_line_naming_the_fix(cli, tiny_run_dir, tmp_path):
    out = cli("report", str(tmp_path / "nope"))
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "no run folder" in out.stderr and "python -m cvdd run" in out.stderr
    (tmp_path / "empty").mkdir()
    out = cli("report", str(tmp_path / "empty"))
    assert out.returncode == 2 and "not a run folder" in out.stderr
    run = _copy(tiny_run_dir, tmp_path / "runs")
    # killed during validate: no run_end, no students, no result
    events = (run / layout.EVENTS).read_text().splitlines(keepends=True)
    cut = next(i for i, e in enumerate(events) if '"stage_start"' in e and '"validate"' in e)
    (run / layout.EVENTS).write_text("".join(events[: cut + 1]))
    for rel in (layout.RESULT, layout.STUDENTS):
        (run / rel).unlink()
    out = cli("report", str(run))
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "not finished" in out.stderr and "resume" in out.stderr and "--partial" in out.stderr
    assert not (run / layout.REPORT).exists()
    out = cli("report", str(run), "--partial")
    assert out.returncode == 0, out.stderr
    html = Path(out.stdout.strip().splitlines()[-1]).read_text()
    assert "crashed" in html and layout.STUDENTS in html and "Not in this run" in html
    assert html.count('href="data:image/png;base64,') >= 2  # what exists is still shown


def test_damaged_analysis_files_leave_the_other_sections(tiny_run_dir, tmp_path):
    run = _copy(tiny_run_dir, tmp_path)
    (run / layout.BN_STATS).write_text('{"layers": [{"index": 0, "sources": "foreign"}]}')
    (run / layout.DIVERSITY).write_text("[1, 2")  # torn
    (run / layout.COMMITTEE).write_text('{"groups": [{"members": ["x"], "weights": ["?"]}]}')
    html = report.build_html(run)
    for sid in ("settings", "images", "soft-labels", "students"):
        assert f'<section id="{sid}"' in html
    assert "Could not draw" in html or "Not in this run" in html
    _assert_self_contained(html)


def test_a_repeat_group_gets_95_percent_intervals(tiny_run_dir, tmp_path):
    a = _copy(tiny_run_dir, tmp_path)
    b = tmp_path / (tiny_run_dir.name[:-4] + "beef")
    shutil.copytree(a, b)
    doc = json.loads((b / layout.CONFIG).read_text())
    doc["config"]["seed"] = 1
    (b / layout.CONFIG).write_text(json.dumps(doc))
    res = json.loads((b / layout.RESULT).read_text())
    res["student_top1"] += 3.0
    (b / layout.RESULT).write_text(json.dumps(res))
    html = report.build_html(a)
    assert "Over the seeds of this setting" in html and "95 % interval" in html
    assert "One seed is not a result" not in html
    students = html.split('<section id="students"', 1)[1]
    assert re.search(r"<td>CV-DD</td><td class=\"n\">2</td>", students)
    assert '<path d="M' in students  # error bars drawn


def test_svg_bars_scale_and_show_error_bars():
    assert nice_ticks(0, 73) == [0, 20, 40, 60, 80]
    svg = bar_chart(
        "t", ["a"], [Series("s", [50.0], [40.0], [60.0], [[45.0, 55.0]])], title="t", y_label="y"
    )
    assert svg.count("<circle") == 2 and 'stroke-width="1.2"' in svg and ">50.0<" in svg
    assert "<script" not in svg and "http" not in svg


# -- the Live page's button ---------------------------------------------------------------------
def test_live_page_offers_the_report_of_a_finished_run(tiny_run_dir, monkeypatch):
    st.cache_data.clear()
    st.cache_resource.clear()
    monkeypatch.setenv("CVDD_RUNS_DIR", str(tiny_run_dir.parent))
    monkeypatch.setenv("CVDD_THREADS", "1")
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=HANG_S)
    at.query_params["run"] = tiny_run_dir.name
    at.switch_page("views/live.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    buttons = [b for b in at.get("download_button") if "Download report" in b.proto.label]
    assert len(buttons) == 1
    assert report.report_file_name(tiny_run_dir) == f"cvdd-report-{tiny_run_dir.name}.html"


# -- in a real browser --------------------------------------------------------------------------
@pytest.mark.e2e
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs /usr/bin/chromium")
def test_opens_offline_without_requests_or_errors_and_prints_on_a4(tiny_run_dir, tmp_path):
    pw = pytest.importorskip("playwright.sync_api")
    path = report.write_report(tiny_run_dir, tmp_path / "r.html")
    requests, errors = [], []
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page()
            page.route(
                "**/*",
                lambda r: (
                    requests.append(r.request.url),
                    r.abort() if r.request.url != path.as_uri() else r.continue_(),
                ),
            )
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(path.as_uri(), wait_until="load")
            assert page.locator("section").count() == len(SECTIONS)
            pdf = page.pdf(format="A4", path=str(tmp_path / "r.pdf"))
        finally:
            browser.close()
    assert requests == [path.as_uri()] and errors == []
    assert pdf.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page[^s]", pdf)) >= 1


def test_the_twin_is_drawn_beside_the_run(tiny_run_dir, tmp_path):
    a = _copy(tiny_run_dir, tmp_path)
    twin = tmp_path / (tiny_run_dir.name[:-4] + "7e11")
    shutil.copytree(a, twin)
    doc = json.loads((twin / layout.CONFIG).read_text())
    doc["config"]["squeeze"]["members"] = doc["config"]["squeeze"]["members"][:1]
    doc["meta"]["twin_of"] = a.name
    (twin / layout.CONFIG).write_text(json.dumps(doc))
    html = report.build_html(a)
    assert "SRe²L++ twin" in html and f"Twin: {twin.name}" in html
    assert "CV-DD twin" in report.build_html(twin)
