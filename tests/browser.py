"""What the real-browser tests share: Debian's Chromium, its offline flags, a free port, and the
page-idle condition. Imported by tests/test_e2e.py and tests/test_offline.py."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
# no background traffic: the machine has no internet, and the tests assert none leaves it
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
]
MARKS = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs /usr/bin/chromium"),
]
# the script is idle and nothing is still loading: what a screenshot should show
IDLE_JS = """() => { const a = document.querySelector('[data-testid="stApp"]');
  return !!a && a.getAttribute('data-test-script-state') === 'notRunning' &&
    !document.querySelector('[data-testid="stSkeleton"]'); }"""


def stop_server(proc) -> None:
    """End the app server; kill it if it does not end in time (a loaded machine is slow)."""
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Waits are sized for a loaded 2-core machine (a full suite beside other work: load average
# 10-20 seen): each returns as soon as its condition holds, the limit only stops a hang.
SLOW_S = 300


def wait_healthy(url: str, log_path: Path, timeout_s: float = SLOW_S) -> None:
    """Until Streamlit's health endpoint answers; fails the test with the server log if not."""
    t_end = time.time() + timeout_s
    while time.time() < t_end:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                return
        except OSError:
            time.sleep(0.2)
    pytest.fail("streamlit did not start: " + Path(log_path).read_text())
