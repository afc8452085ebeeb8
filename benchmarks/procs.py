"""Process helpers for the app benchmark: a Streamlit server on a free port, CPU from /proc."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ticks(pid: int) -> int:
    """utime + stime of one process, in clock ticks (0 if it is gone)."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(f[11]) + int(f[12])


def children(pid: int) -> dict[int, str]:
    out = {}
    for p in Path("/proc").glob("[0-9]*"):
        try:
            if int(p.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out[int(p.name)] = p.joinpath("cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            pass
    return out


def cpu_sample(server_pid: int, seconds: float) -> tuple[float, float]:
    """% of one core used by the server (+ non-worker children) and by the cvdd worker(s)."""

    def snap():
        kids = children(server_pid)
        work = [k for k, c in kids.items() if "cvdd" in c and "resume" in c]
        serv = [server_pid] + [k for k in kids if k not in work]
        return {k: ticks(k) for k in serv}, {k: ticks(k) for k in work}

    s0, w0 = snap()
    t0 = time.time()
    time.sleep(seconds)
    s1, w1 = snap()
    dt = time.time() - t0
    return tuple(
        100 * sum(b[k] - a.get(k, 0) for k in b) / TICK / dt for a, b in ((s0, s1), (w0, w1))
    )


@contextlib.contextmanager
def serve(env: dict, log_path: str = "/tmp/app_bench_server.log"):
    """The app (`python app`) on a free port; yields (process, url) once it is healthy."""
    url = f"http://127.0.0.1:{free_port()}"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(  # the launcher users start: `python app`, its settings
            [sys.executable, str(ROOT / "app"), "--server.port", url.rsplit(":", 1)[1]],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            for _ in range(300):
                with contextlib.suppress(OSError):
                    if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                        break
                time.sleep(0.2)
            else:
                raise RuntimeError(f"streamlit did not start; see {log_path}")
            yield server, url
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
