"""End to end in a real browser: start a run from the page, watch the image grid advance,
stop it, resume it. Needs Debian's chromium (`apt-get install chromium`) and pip playwright.

Screenshots go to $CVDD_E2E_SHOTS (default: the test's tmp folder).
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
        "--disable-dev-shm-usage"]
pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs /usr/bin/chromium")]
sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
STEP = re.compile(r"step (\d+) · rows")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    """`streamlit run app/main.py` on a free port, runs in tmp_path/runs."""
    port, runs_dir = _free_port(), tmp_path / "runs"
    env = dict(os.environ, CVDD_RUNS_DIR=str(runs_dir), CVDD_THREADS="1",
               PYTHONPATH=str(ROOT))
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 -- closed in finally
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1",
         "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        t_end = time.time() + 30
        while time.time() < t_end:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("streamlit did not start: " + (tmp_path / "server.log").read_text())
        yield url, runs_dir
    finally:
        from cvdd import jobs  # stop any worker the test left running

        for d in runs_dir.glob("*/"):
            jobs.stop_job(d, wait_s=10)
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def _step(page) -> int:
    """Recover step of the snapshot grid on screen (-1 while there is none)."""
    caps = page.locator('[data-testid="stImageCaption"]').all_inner_texts()
    found = [int(m.group(1)) for c in caps for m in [STEP.search(c)] if m]
    return found[0] if found else -1


def _wait_step_above(page, n: int, timeout: float) -> int:
    t_end = time.time() + timeout
    while time.time() < t_end:
        s = _step(page)
        if s > n:
            return s
        page.wait_for_timeout(500)
    raise AssertionError(f"the image grid did not pass step {n} within {timeout}s")


def _status(page) -> str:
    m = page.locator('[data-testid="stMetric"]').filter(has_text="status")
    return m.locator('[data-testid="stMetricValue"]').inner_text() if m.count() else ""


def _wait_status(page, want: str, timeout: float) -> None:
    t_end = time.time() + timeout
    while time.time() < t_end:
        if _status(page) == want:
            return
        page.wait_for_timeout(300)
    raise AssertionError(f"status stayed {_status(page)!r}, wanted {want!r}")


def test_start_watch_stop_resume_in_a_browser(server, tmp_path):
    url, runs_dir = server
    shots = Path(os.environ.get("CVDD_E2E_SHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 2000})
        page.set_default_timeout(30_000)
        page.goto(url)
        page.get_by_text("What happens in each stage").wait_for()

        # the tiny preset, made long enough to watch: 3000 recover steps, a grid every 25
        page.locator('[data-testid="stSelectbox"]').filter(has_text="Preset").click()
        page.get_by_role("option", name="tiny", exact=True).click()
        page.get_by_text("seconds: two tiny test models").wait_for()
        it = page.get_by_role("spinbutton", name="Recover iterations")
        it.fill("3000")
        it.press("Enter")
        page.get_by_text("More settings").click()
        extra = page.get_by_role("textbox", name=re.compile("Extra overrides"))
        extra.fill("recover.snapshot_every=25\nrecover.checkpoint_every=50")
        extra.press("Control+Enter")
        page.wait_for_timeout(1000)
        start = page.get_by_role("button", name=re.compile(r"Start$"))
        assert start.is_enabled()
        start.click()

        page.wait_for_url(re.compile(r"/live\?run="), timeout=30_000)
        rid = re.search(r"run=([^&]+)", page.url).group(1)
        assert (runs_dir / rid / "config.json").is_file()
        _wait_status(page, "running", 20)
        first = _wait_step_above(page, 0, 60)  # recover started and a grid at step > 0 is up
        later = _wait_step_above(page, first, 30)  # ... and it advances by itself
        assert later > first

        page.get_by_role("button", name=re.compile(r"Stop$")).click()
        _wait_status(page, "stopped", 30)
        stopped_at = _step(page)
        page.wait_for_timeout(1500)  # let the full rerun after the status change settle
        page.screenshot(path=str(shots / "e2e_stopped.png"))

        page.get_by_role("button", name=re.compile(r"Resume$")).click()
        _wait_status(page, "running", 30)
        resumed = _wait_step_above(page, stopped_at, 60)
        assert resumed > stopped_at
        page.locator('[data-testid="stImage"] img').first.wait_for()
        page.wait_for_timeout(1000)
        page.screenshot(path=str(shots / "e2e_running.png"))

        page.reload()  # a reload finds the same run, still running, no duplicate
        page.get_by_text("Live run").first.wait_for()
        _wait_status(page, "running", 30)
        page.get_by_role("button", name=re.compile(r"Stop$")).click()
        _wait_status(page, "stopped", 30)
        browser.close()
    from cvdd.runs import read_events

    starts = [e for e in read_events(runs_dir / rid) if e["kind"] == "run_start"]
    assert [e["attempt"] for e in starts] == [1, 2]
