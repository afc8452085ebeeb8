"""Offline in a real browser: every page, loaded afresh, requests nothing but 127.0.0.1 (page
icon, fonts and Material icons included) and logs no console error. The server is started
the README's way, `python app`, from a folder outside the repository, so this also checks
that it listens on 127.0.0.1 only and announces no usage statistics wherever it starts.

Screenshots of every page go to $CVDD_E2E_SHOTS (default: the test's tmp folder).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from browser import ARGS, CHROMIUM, IDLE_JS, MARKS, SLOW_S, free_port, stop_server, wait_healthy

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from cvdd.config import from_preset  # noqa: E402 -- after the sys.path line
from cvdd.rundir import RunDir  # noqa: E402

pytestmark = MARKS
_pw = pytest.importorskip("playwright.sync_api")
sync_playwright, expect = _pw.sync_playwright, _pw.expect
FAILED_ID = "20260101-000000-builtin-ipc600-0bad"
# url path (+ query) -> screenshot name; {run} is the finished tiny run
PAGES = {
    "": "new_run",
    "runs": "runs",
    "live?run={run}": "live_done",
    f"live?run={FAILED_ID}": "live_failed_config",
    "bn?run={run}": "bn",
    "soft_labels?run={run}": "soft_labels",
    "diversity?run={run}": "diversity",
    "compare?run={run}": "compare",
}


def _failed_config_run(root: Path) -> None:
    """A run that failed on its settings the way the worker records it (IPC 600 > 500)."""
    rd = RunDir.create(root, from_preset("quick", ["ipc=600"]).to_dict())
    rd.path.rename(root / FAILED_ID)
    rd = RunDir(root / FAILED_ID)
    rd.update_meta(dataset={"name": "fashion_mnist_subset", "images_per_class": 500})
    rd.append_event("run_start", attempt=1, device="cpu", threads=1)
    msg = (
        "class 'T-shirt/top' has only 500 training images but IPC needs 600 per class; "
        "lower ipc (--set ipc=500) or use more data"
    )
    rd.append_event("run_end", status="failed", error=msg, field="ipc")


@pytest.fixture
def server(tmp_path, tiny_run_dir):
    """`python <repo>/app` started in an empty folder outside the repository."""
    port, runs_dir, cwd = free_port(), tmp_path / "runs", tmp_path / "elsewhere"
    cwd.mkdir()
    shutil.copytree(tiny_run_dir, runs_dir / tiny_run_dir.name)
    _failed_config_run(runs_dir)
    env = dict(os.environ, CVDD_RUNS_DIR=str(runs_dir), CVDD_THREADS="1")
    env.pop("PYTHONPATH", None)  # the launcher must find the app by itself
    log_path = tmp_path / "server.log"
    log = open(log_path, "wb")  # noqa: SIM115 -- closed in finally
    cmd = [sys.executable, str(ROOT / "app"), "--server.port", str(port)]
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, log_path)
        yield url, tiny_run_dir.name, port, log_path
    finally:
        stop_server(proc)
        log.close()


# Opened at /live, Streamlit's page asks /live/_stcore/health and /live/_stcore/host-config
# before /_stcore/...: it probes whether the app is served under a base path /live. Those
# two 404s (and the browser's console line for each) are Streamlit's, on any deep link.
PROBE = re.compile(r"^404 http://127\.0\.0\.1:\d+/[^/]+/_stcore/(health|host-config)$")
PROBE_LINE = "Failed to load resource: the server responded with a status of 404 (Not Found)"


def _real_errors(errors: list[str]) -> list[str]:
    """The console errors and failed responses other than the base-path probe's. A probe's
    console line may come before or after its response (and after the page's checks on a
    loaded machine), so errors are kept for the whole test and counted together, never
    cleared per page: one line more than the probes seen so far is a real error only if it
    stays unmatched at the end (see test_every_page_stays_on_localhost)."""
    probes = sum(1 for e in errors if PROBE.match(e))
    lines = sum(1 for e in errors if e == PROBE_LINE)
    other = [e for e in errors if not PROBE.match(e) and e != PROBE_LINE]
    return other + ([f"{lines - probes} more 404 console line(s)"] if lines > probes else [])


def _listening(port: int) -> list[str]:
    """Local addresses with a listening TCP socket on `port` (from /proc/net/tcp{,6})."""
    found = []
    for name in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for ln in lines:
            local, state = ln.split()[1], ln.split()[3]
            addr, p = local.rsplit(":", 1)
            if state == "0A" and int(p, 16) == port:  # 0A = LISTEN
                found.append(addr)
    return found


def _type_bad_ipc(page, shots: Path) -> None:
    """An IPC the built-in set cannot fill stays as typed, says why under it, disables Start."""
    ipc = page.locator(".st-key-nr_ipc").get_by_role("textbox")
    ipc.fill("600")
    ipc.press("Enter")
    expect(page.get_by_text("larger than the 500 images per class")).to_be_visible()
    expect(page.locator(".st-key-start").get_by_role("button")).to_be_disabled()
    assert ipc.input_value() == "600"
    page.wait_for_function(IDLE_JS, polling=100)
    page.screenshot(path=str(shots / "offline_new_run_bad_ipc.png"))


def test_every_page_stays_on_localhost(server, tmp_path):
    url, rid, port, log_path = server
    shots = Path(os.environ.get("CVDD_E2E_SHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    # 0100007F = 127.0.0.1 in /proc's byte order; nothing on 0.0.0.0 or ::
    assert _listening(port) == ["0100007F"], _listening(port)
    assert "usage statistics" not in log_path.read_text()

    outside, errors, local = [], [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        page.set_default_timeout(SLOW_S * 1000)  # every wait ends when its condition holds
        expect.set_options(timeout=SLOW_S * 1000)

        def route(r):
            host = urllib.parse.urlsplit(r.request.url).hostname
            if r.request.url.startswith(("data:", "blob:")) or host == "127.0.0.1":
                local.append(r.request.url)
                r.continue_()
            else:
                outside.append(r.request.url)
                r.abort()

        page.route("**/*", route)
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on(
            "response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else 0
        )
        for path, name in PAGES.items():
            page.goto(f"{url}/{path.format(run=rid)}")
            expect(page.locator("h1").first).to_be_visible()
            page.wait_for_function(IDLE_JS, polling=100)
            page.screenshot(path=str(shots / f"offline_{name}.png"), full_page=True)
            # a late request or error of the page before may show here: the checks hold for
            # every request of the test, whichever page is on screen when it arrives
            assert not outside, f"{name}: requests leaving 127.0.0.1: {outside}"
            real = [e for e in _real_errors(errors) if "404 console" not in e]
            assert not real, f"{name}: console errors: {errors}"
            if name == "new_run":
                _type_bad_ipc(page, shots)
            if name == "live_failed_config":
                resume = page.locator(".st-key-resume").get_by_role("button")
                expect(resume).to_be_disabled()
                expect(page.get_by_text("Clone this run with IPC ≤ 500")).to_be_visible()
                assert "--set" not in page.locator("body").inner_text()  # no CLI advice shown
        icon = page.evaluate("() => document.querySelector('link[rel~=icon]')?.href || ''")
        # every probe's console line has its response by now, or comes within the limit
        t_end = time.time() + SLOW_S
        while any("404 console" in e for e in _real_errors(errors)) and time.time() < t_end:
            page.wait_for_timeout(100)  # lets Playwright deliver the events still in flight
        assert not outside, f"requests leaving 127.0.0.1: {outside}"
        assert not _real_errors(errors), f"console errors: {errors}"
        browser.close()
    assert icon.startswith(url), icon  # the page icon is served by the app itself
    assert any("MaterialSymbols" in u for u in local), "Material icons not from the app"
