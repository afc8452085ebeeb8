"""What the real-browser tests share: Debian's Chromium, its offline flags, a free port, and the
page-idle condition. Imported by tests/test_e2e.py and tests/test_offline.py."""

from __future__ import annotations

import socket
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, log_path: Path, timeout_s: float = 30) -> None:
    """Until Streamlit's health endpoint answers; fails the test with the server log if not."""
    t_end = time.time() + timeout_s
    while time.time() < t_end:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                return
        except OSError:
            time.sleep(0.2)
    pytest.fail("streamlit did not start: " + Path(log_path).read_text())
