"""Benchmark of the Streamlit app in a real browser (prints figures; it is not a test).

Measures, on the quick preset with the built-in data set and a cached committee:
  1. Start latency: click Start on the New-run page -> first synthetic image grid on Live run.
  2. CPU time of the Streamlit server process (not the worker) while 4, 1 and 0 browser tabs
     watch the running run's Live page (30 s each, from /proc/<pid>/stat).
  3. Responsiveness while the run is active: sidebar click -> the other page's title.
  4. Wall time and student top-1 of that run, started from the app.
  5. Render time of every page on the finished run (title shown, script idle, no skeleton),
     plus full-page screenshots of Live run and Soft labels in /tmp/app_bench_*.png.

If --runs-dir holds no finished quick run, `python -m cvdd run --preset quick` runs there first
to fill <runs-dir>/_cache (minutes). Needs /usr/bin/chromium and pip playwright. Workers get
CVDD_THREADS=1. Run:  python benchmarks/app_bench.py [--runs-dir /work/bench_app_runs]

Server CPU only, N tabs watching a long `tiny` run started from the CLI (about 2 min):
  python benchmarks/app_bench.py --tabs 4 --seconds 60 --runs-dir /tmp/app_bench_cpu
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from playwright.sync_api import sync_playwright
from procs import TICK, cpu_sample, serve, ticks  # sibling module (run as a script)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from cvdd import jobs  # noqa: E402 -- this checkout's cvdd, from any cwd
from cvdd.layout import read_events  # noqa: E402
from cvdd.runs import list_runs, run_status  # noqa: E402
from cvdd.utils import read_json  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
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
PAGES = [
    ("new", "New run"),
    ("runs", "Runs"),
    ("live", "Live run"),
    ("bn", "BN discrepancy"),
    ("soft_labels", "Soft labels: BSSL vs eval mode"),
    ("diversity", "Diversity"),
    ("compare", "Compare & export"),
]
STEP = re.compile(r"step (\d+) · rows")
VIEW = {"width": 1400, "height": 1400}
IDLE_JS = """() => { const a = document.querySelector('[data-testid=stApp]'); return !!a &&
  a.getAttribute('data-test-script-state') === 'notRunning' &&
  !document.querySelector('[data-testid=stSkeleton]'); }"""


def wait_ready(page, title: str, t0: float, timeout: float = 120, settle: float = 0.5):
    """Seconds from t0 until the h1 `title` shows, and until it shows with the script idle and
    no skeleton for `settle` s (the time reported is the start of that quiet stretch)."""
    t_title, quiet_since = None, None
    h1 = page.locator("h1").filter(has_text=title)
    while time.time() - t0 < timeout:
        shown = h1.count() > 0 and h1.first.is_visible()
        if shown and t_title is None:
            t_title = time.time() - t0
        idle = page.evaluate(IDLE_JS)
        if shown and idle:
            quiet_since = quiet_since or time.time()
            if time.time() - quiet_since >= settle:
                return t_title, quiet_since - t0
        else:
            quiet_since = None
        page.wait_for_timeout(50)
    raise TimeoutError(f"page {title!r} not ready within {timeout}s")


def new_context(pw):
    browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
    ctx = browser.new_context(viewport=VIEW)
    ctx.set_default_timeout(60_000)
    return browser, ctx


def grid_step(page) -> int:
    caps = page.locator('[data-testid="stImageCaption"]').all_inner_texts()
    found = [int(m.group(1)) for c in caps for m in [STEP.search(c)] if m]
    return found[0] if found else -1


def ensure_warm_cache(runs_dir: Path, env: dict) -> None:
    done = [r for r in list_runs(runs_dir) if r["preset"] == "quick" and r["status"] == "done"]
    if done:
        print(
            f"cache: finished quick run {done[0]['run_id']} found in {runs_dir}, committee "
            "and priors cached"
        )
        return
    runs_dir.mkdir(parents=True, exist_ok=True)
    t0, cmd = time.time(), ["-m", "cvdd", "run", "--preset", "quick", "--runs-dir", str(runs_dir)]
    with open("/tmp/app_bench_cold_run.log", "wb") as log:
        subprocess.run(
            [sys.executable, *cmd],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=True,
        )
    print(
        f"quick run, cold cache: {time.time() - t0:.1f} s  (CLI, log /tmp/app_bench_cold_run.log)"
    )


def start_cli_run(a, env: dict, runs_dir: Path) -> tuple[subprocess.Popen, Path]:
    """A CLI worker on a long recover (not a child of the server, so not in its CPU)."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "cvdd",
        "run",
        "--preset",
        a.preset,
        "--runs-dir",
        str(runs_dir),
        "--set",
        f"recover.iterations={a.iterations}",
        "--set",
        f"recover.snapshot_every={a.snapshot_every}",
        "--set",
        f"recover.checkpoint_every={a.snapshot_every * 5}",
    ]
    log_path = runs_dir / "_bench_worker.log"
    wroot = Path(a.worker_root or ROOT)  # the engine that writes the run (the app reads it)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=wroot,
            env=dict(env, PYTHONPATH=str(wroot)),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    t_end = time.time() + 300
    while time.time() < t_end:  # the CLI prints "run dir: <path>" first
        m = re.search(r"run dir: (\S+)", log_path.read_text(errors="replace"))
        if m:
            run_dir = Path(m.group(1))
            break
        time.sleep(0.2)
    else:
        proc.kill()
        raise TimeoutError(f"no run dir from the worker; see {log_path}")
    while not any(
        e["kind"] == "snapshot" and e.get("stage") == "recover" for e in read_events(run_dir)
    ):  # watch recover, the stage with images
        if proc.poll() is not None or time.time() > t_end:
            raise RuntimeError(f"the worker did not reach recover; see {log_path}")
        time.sleep(0.5)
    return proc, run_dir


def watch_cpu(a, env: dict, runs_dir: Path) -> None:
    """CPU-seconds used by the server process per wall-second while `a.tabs` browser tabs
    watch a running run's Live page. CPU time (utime + stime from /proc/<pid>/stat) does not
    grow when other processes load the machine, so the figure holds on a shared box."""
    worker, run_dir = start_cli_run(a, env, runs_dir)
    try:
        with serve(env) as (server, url), sync_playwright() as pw:
            browser, ctx = new_context(pw)
            tabs = [ctx.new_page() for _ in range(a.tabs)]
            for p in tabs:
                p.goto(f"{url}/live?run={run_dir.name}")
                p.locator('[data-testid="stImageCaption"]').filter(has_text=STEP).first.wait_for()
            time.sleep(a.warmup)  # page loads and first fragment runs are not the steady state
            st0, c0, t0 = run_status(run_dir), ticks(server.pid), time.time()
            g0 = [grid_step(p) for p in tabs]
            time.sleep(a.seconds)
            c1, t1, st1 = ticks(server.pid), time.time(), run_status(run_dir)
            g1 = [grid_step(p) for p in tabs]  # each tab's grid moved on: its panels did rerun
            browser.close()
        cpu_s, wall = (c1 - c0) / TICK, t1 - t0
        ok = st0["status"] == st1["status"] == "running" and st1["stage"] == "recover"
        print(
            f"{ROOT}: {a.tabs} tab(s) on /live for {wall:.1f} s: server used {cpu_s:.2f} "
            f"CPU-s = {cpu_s / wall:.3f} CPU-s per wall-s  (run {st0['status']}/{st0['stage']}"
            f" step {st0['step']} -> {st1['status']}/{st1['stage']} step {st1['step']}"
            f"{'' if ok else '; NOT running the whole window: use more --iterations'})"
        )
        print(
            f"  image grid step per tab, start -> end of the window: "
            f"{', '.join(f'{x}->{y}' for x, y in zip(g0, g1))}"
        )
    finally:
        worker.terminate()  # SIGTERM: the worker checkpoints and ends as 'stopped'
        worker.wait(timeout=60)


def start_latency(ctx, url: str, runs_dir: Path):
    """1. Click Start on the New-run page -> Live page -> first synthetic image grid."""
    page = ctx.new_page()
    page.goto(url)
    wait_ready(page, "New run", time.time())
    start = page.locator(".st-key-start").get_by_role("button")
    t0 = time.time()
    start.click()
    page.wait_for_url(re.compile(r"/live\?run="), timeout=60_000)
    t_live = time.time() - t0
    rid = re.search(r"run=([^&]+)", page.url).group(1)
    run_dir = runs_dir / rid
    while grid_step(page) < 0:
        if time.time() - t0 > 600:
            raise TimeoutError("no synthetic image grid within 600 s")
        page.wait_for_timeout(100)
    t_img = time.time() - t0
    snap = next(e for e in read_events(run_dir) if e["kind"] == "snapshot")
    print(f"run {rid}\nstart -> Live page: {t_live:.1f} s")
    print(
        f"start -> first synthetic images: {t_img:.1f} s  (grid at step "
        f"{grid_step(page)}; the worker wrote its first snapshot at "
        f"{snap['t'] - t0:.1f} s, the Live page polls images every 5 s)"
    )
    return page, run_dir


def cpu_with_tabs(ctx, page, url: str, run_dir: Path, server_pid: int, seconds: float) -> None:
    """2. Server CPU with 4 and then 1 tab watching (`page` plus 3 more), or with none."""

    def sample(label: str) -> None:
        st0 = run_status(run_dir)
        srv, wrk = cpu_sample(server_pid, seconds)
        st1 = run_status(run_dir)
        print(
            f"server CPU with {label} watching: {srv:.1f} % of one core  (worker "
            f"{wrk:.0f} %; run {st0['status']}/{st0['stage']} -> "
            f"{st1['status']}/{st1['stage']})"
        )

    if page is None:
        sample("0 tabs (browser closed)")
        return
    tabs = [page] + [ctx.new_page() for _ in range(3)]
    for p in tabs[1:]:
        p.goto(f"{url}/live?run={run_dir.name}")
    for p in tabs:
        p.locator('[data-testid="stImageCaption"]').filter(has_text=STEP).first.wait_for()
    sample("4 tabs")
    for p in tabs[1:]:
        p.close()
    sample("1 tab")


def responsiveness(page, run_dir: Path) -> None:
    """3. Sidebar click -> the other page's title, while the run is active."""
    active = run_status(run_dir)
    for target in ("BN discrepancy", "Live run"):
        link = page.locator('[data-testid="stSidebarNav"] a').filter(has_text=target)
        t0 = time.time()
        link.click()
        t_h1, t_idle = wait_ready(page, target, t0)
        print(
            f"sidebar click -> '{target}' title: {t_h1:.2f} s, page idle: "
            f"{t_idle:.2f} s  (run {active['status']}/{active['stage']})"
        )


def wait_finished(run_dir: Path) -> None:
    """4. Wall time and student top-1 of the run started from the app."""
    t_end = time.time() + 600
    while run_status(run_dir)["status"] in ("running", "starting", "created"):
        if time.time() > t_end:
            raise TimeoutError("the run did not finish within 10 min")
        time.sleep(2)
    evs = read_events(run_dir)
    t_start = next(e["t"] for e in evs if e["kind"] == "run_start")
    end = next(e for e in reversed(evs) if e["kind"] == "run_end")
    res = read_json(run_dir / "result.json") or {}
    print(
        f"quick run from the app with a cached committee: {end['t'] - t_start:.1f} s  "
        f"(status {end.get('status')}); student_top1 = {res.get('student_top1')}"
    )
    stages = {e["stage"]: e.get("seconds") for e in evs if e["kind"] == "stage_end"}
    print(
        "  stage seconds: "
        + ", ".join(f"{k} {v:.1f}" for k, v in stages.items() if isinstance(v, (int, float)))
    )


def render_times(pw, url: str, rid: str) -> None:
    """5. Render time of every page on the finished run, and two full-page screenshots."""
    browser, ctx = new_context(pw)
    print(f"\n{'page':<34}{'title shown (s)':>16}{'ready (s)':>12}   (fresh tab, ?run={rid})")
    for path, title in PAGES:
        p = ctx.new_page()
        t0 = time.time()
        p.goto(f"{url}/{path}?run={rid}", wait_until="commit")
        t_title, t_ready = wait_ready(p, title, t0)
        print(f"{title:<34}{t_title:>16.2f}{t_ready:>12.2f}")
        if path in ("live", "soft_labels"):
            if path == "live":
                p.locator('[data-testid="stImage"] img').first.wait_for()
            p.wait_for_timeout(1500)  # plotly and images finish drawing
            # Streamlit scrolls inside <main data-testid=stMain>: grow the window to it
            h = p.evaluate("document.querySelector('[data-testid=stMain]').scrollHeight")
            p.set_viewport_size({"width": VIEW["width"], "height": min(int(h), 12000)})
            p.wait_for_timeout(1500)
            shot = f"/tmp/app_bench_{path}.png"
            p.screenshot(path=shot, full_page=True)
            print(f"  screenshot {shot}")
        p.close()
    browser.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs-dir", default="/work/bench_app_runs")
    ap.add_argument("--sample-s", type=float, default=30.0, help="CPU sampling window")
    ap.add_argument(
        "--tabs",
        type=int,
        help="only measure server CPU with this many tabs on "
        "the Live page of a CLI run (see watch_cpu); skips everything else",
    )
    ap.add_argument("--seconds", type=float, default=60.0, help="window for --tabs")
    ap.add_argument("--warmup", type=float, default=10.0, help="settle time before it")
    ap.add_argument("--preset", default="tiny", help="preset of the watched run (--tabs)")
    ap.add_argument(
        "--iterations",
        type=int,
        default=30000,
        help="recover.iterations of that run: enough to outlast the window",
    )
    ap.add_argument(
        "--snapshot-every", type=int, default=200, help="recover.snapshot_every of that run"
    )
    ap.add_argument(
        "--worker-root",
        help="checkout whose cvdd runs that worker (default: "
        "this one), so that two versions of the app can watch the same engine",
    )
    a = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    runs_dir = Path(a.runs_dir).resolve()
    env = dict(os.environ, CVDD_RUNS_DIR=str(runs_dir), CVDD_THREADS="1", PYTHONPATH=str(ROOT))
    if a.tabs is not None:
        watch_cpu(a, env, runs_dir)
        return
    ensure_warm_cache(runs_dir, env)
    run_dir = None
    with serve(env) as (server, url), sync_playwright() as pw:
        try:
            browser, ctx = new_context(pw)
            page, run_dir = start_latency(ctx, url, runs_dir)
            cpu_with_tabs(ctx, page, url, run_dir, server.pid, a.sample_s)
            responsiveness(page, run_dir)
            browser.close()
            cpu_with_tabs(None, None, url, run_dir, server.pid, a.sample_s)
            wait_finished(run_dir)
            render_times(pw, url, run_dir.name)
        finally:
            if run_dir is not None and run_status(run_dir)["status"] == "running":
                jobs.stop_job(run_dir, wait_s=20)  # an error left the worker running


if __name__ == "__main__":
    main()
