"""End to end in a real browser: start a run from the page, watch the image grid advance,
stop it, resume it. Needs Debian's chromium (`apt-get install chromium`) and pip playwright.

Screenshots go to $CVDD_E2E_SHOTS (default: the test's tmp folder).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from browser import ARGS, CHROMIUM, IDLE_JS, MARKS, SLOW_S, free_port, stop_server, wait_healthy

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from cvdd.layout import read_events  # noqa: E402 -- after the sys.path line
from cvdd.runs import is_alive, run_status  # noqa: E402 -- after the sys.path line

pytestmark = MARKS
_pw = pytest.importorskip("playwright.sync_api")
sync_playwright, expect = _pw.sync_playwright, _pw.expect
STEP = re.compile(r"step (\d+) · rows")


@pytest.fixture
def server(tmp_path):
    """The app (`python app`) on a free port, runs in tmp_path/runs."""
    port, runs_dir = free_port(), tmp_path / "runs"
    env = dict(os.environ, CVDD_RUNS_DIR=str(runs_dir), CVDD_THREADS="1", PYTHONPATH=str(ROOT))
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 -- closed in finally
    # the launcher users start (python app): its offline, local-only settings, plus the port
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "app"), "--server.port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, tmp_path / "server.log")
        yield url, runs_dir
    finally:
        from cvdd import jobs  # stop any worker the test left running

        for d in runs_dir.glob("*/"):
            jobs.stop_job(d, wait_s=30)
        stop_server(proc)
        log.close()


def _step(page) -> int:
    """Recover step of the snapshot grid on screen (-1 while there is none)."""
    caps = page.get_by_test_id("stImageCaption").all_inner_texts()
    found = [int(m.group(1)) for c in caps for m in [STEP.search(c)] if m]
    return found[0] if found else -1


# true once a grid caption shows a recover step above n (evaluated in the page, on each frame)
STEP_ABOVE_JS = """n => [...document.querySelectorAll('[data-testid="stImageCaption"]')].some(
  c => { const m = /step (\\d+) · rows/.exec(c.innerText); return m !== null && +m[1] > n; })"""


def _wait_step_above(page, n: int, timeout_s: float) -> int:
    page.wait_for_function(STEP_ABOVE_JS, arg=n, timeout=timeout_s * 1000, polling=250)
    return _step(page)


def _button(page, key: str):
    """The button of the widget with this key. Streamlit marks the widget's container with the
    class st-key-<key>; a name match is ambiguous, because while a script runs the page header
    shows Streamlit's own 'Stop' button."""
    return page.locator(f".st-key-{key}").get_by_role("button")


def _status(page):
    """The value of the 'status' metric (the label must be exactly that)."""
    label = page.get_by_test_id("stMetricLabel").filter(has_text=re.compile(r"^\s*status\s*$"))
    return page.get_by_test_id("stMetric").filter(has=label).get_by_test_id("stMetricValue")


def _until(cond, timeout_s: float, what: str) -> None:
    """Poll the run directory (not the page) until `cond()` holds."""
    t_end = time.time() + timeout_s
    while not cond():
        if time.time() > t_end:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.2)


def _settled_screenshot(page, path: Path) -> None:
    expect(page.locator('[data-testid="stImage"] img').first).to_be_visible()
    page.wait_for_function(IDLE_JS, timeout=SLOW_S * 1000, polling=100)
    page.screenshot(path=str(path))


def _start_a_long_tiny_run(page, url: str) -> None:
    """New-run page: the tiny preset with 20000 recover steps and a grid every 25; Start."""
    page.goto(url)
    expect(page.get_by_text("What happens in each stage")).to_be_visible()
    page.locator(".st-key-nr_preset").get_by_role("combobox").click()
    page.get_by_role("option", name="tiny", exact=True).click()
    expect(page.get_by_text("seconds: two tiny test models")).to_be_visible()
    it = page.locator(".st-key-nr_iterations").get_by_role("textbox")
    it.fill("20000")
    it.press("Enter")
    page.get_by_text("More settings").click()
    extra = page.get_by_role("textbox", name=re.compile("Extra overrides"))
    extra.fill("recover.snapshot_every=25\nrecover.checkpoint_every=50")
    extra.press("Control+Enter")
    # the app has taken both edits once the CLI command it shows carries them
    page.get_by_text("Effective config and CLI command").click()
    cli = page.get_by_test_id("stCode").filter(has_text="python -m cvdd run")
    expect(cli).to_contain_text("recover.iterations=20000")
    expect(cli).to_contain_text("recover.snapshot_every=25")
    start = _button(page, "start")
    expect(start).to_be_enabled()
    start.click()


def test_start_watch_stop_resume_in_a_browser(server, tmp_path):
    url, runs_dir = server
    shots = Path(os.environ.get("CVDD_E2E_SHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 2000})
        page.set_default_timeout(SLOW_S * 1000)  # every wait ends when its condition holds
        expect.set_options(timeout=SLOW_S * 1000)
        _start_a_long_tiny_run(page, url)
        page.wait_for_url(re.compile(r"/live\?run="))
        rid = re.search(r"run=([^&]+)", page.url).group(1)
        run_dir = runs_dir / rid
        assert (run_dir / "config.json").is_file()
        _until(lambda: is_alive(run_dir), SLOW_S, "the worker to take its lock")
        expect(_status(page)).to_have_text("running")
        first = _wait_step_above(
            page, 0, 2 * SLOW_S
        )  # recover started and a grid at step > 0 is up
        later = _wait_step_above(page, first, SLOW_S)  # ... and it advances by itself
        assert later > first

        stop = _button(page, "stop")
        expect(stop).to_be_enabled()
        stop.click()
        _until(lambda: run_status(run_dir)["status"] == "stopped", SLOW_S, "the worker to stop")
        expect(_status(page)).to_have_text("stopped")
        resume = _button(page, "resume")
        expect(resume).to_be_enabled()  # after the page's own rerun on the status change
        stopped_at = _step(page)
        _settled_screenshot(page, shots / "e2e_stopped.png")

        resume.click()
        _until(lambda: is_alive(run_dir), SLOW_S, "the resumed worker to take its lock")
        expect(_status(page)).to_have_text("running")
        resumed = _wait_step_above(page, stopped_at, 2 * SLOW_S)
        assert resumed > stopped_at
        _settled_screenshot(page, shots / "e2e_running.png")

        page.reload()  # a reload finds the same run, still running, no duplicate
        expect(page.locator("h1").filter(has_text="Live run")).to_be_visible()
        expect(_status(page)).to_have_text("running")
        stop = _button(page, "stop")
        expect(stop).to_be_enabled()
        stop.click()
        _until(lambda: not is_alive(run_dir), SLOW_S, "the worker to stop again")
        expect(_status(page)).to_have_text("stopped")
        browser.close()
    starts = [e for e in read_events(run_dir) if e["kind"] == "run_start"]
    assert [e["attempt"] for e in starts] == [1, 2]
