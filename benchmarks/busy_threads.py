"""Recover-stage time of the quick preset under thread settings, idle or beside busy processes.

Paired A/B runs: the variants take turns (A B C, A B C, ...), so a change in the machine's load
touches every variant alike; the report gives each variant's median and n. Each run is
`python -m cvdd run --preset quick --set recover.iterations=N` in its own process, stopped
(SIGKILL) as soon as events.jsonl has recover's stage_end; the figure is that event's seconds.
The first run only fills the runs root's prior cache and is not counted.

    python benchmarks/busy_threads.py --iterations 20 --reps 3 --busy 1 \\
        --variant t1 CVDD_THREADS=1 --variant t2 CVDD_THREADS=2 \\
        --variant t2p CVDD_THREADS=2 OMP_WAIT_POLICY=PASSIVE --variant auto

--busy K starts K one-core busy loops (`python -c "while 1: pass"`) for the whole measurement
and ends them after. A variant with no assignments runs with the worker's own default.
--nice -19 (root) runs the measured runs and the busy loops at the highest priority, so that
other work on the machine takes little from them: "idle" on a machine one cannot empty.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from cvdd.runs import read_events  # noqa: E402 -- after the sys.path line

# the variables a variant may set; every run starts without them, then gets its own
THREAD_VARS = ("CVDD_THREADS", "OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def _niceness(nice: int):
    """preexec_fn for a child in its own session at this niceness (None for 0). Where the kernel
    groups sessions for scheduling (autogroup), a process's nice counts only inside its group,
    so the session's group gets the niceness too."""
    if not nice:
        return None

    def apply() -> None:
        with contextlib.suppress(OSError):
            Path("/proc/self/autogroup").write_text(str(nice))
        os.nice(nice)

    return apply


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _recover_seconds(run_dir: Path) -> tuple[float | None, int | None]:
    """recover's stage_end seconds (None while it has not ended) and run_start's threads."""
    secs = threads = None
    for e in read_events(run_dir):
        if e["kind"] == "run_start":
            threads = e.get("threads")
        if e["kind"] == "stage_end" and e.get("stage") == "recover":
            secs = e["seconds"]
    return secs, threads


def one_run(
    *, runs_dir: Path, env_set: dict, iterations: int, timeout_s: float, nice: int = 0
) -> dict:
    """One quick-preset run up to the end of recover; its recover seconds and threads."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    env.update(env_set, PYTHONPATH=str(ROOT))
    argv = [sys.executable, "-m", "cvdd", "run", "--preset", "quick", "--runs-dir", str(runs_dir)]
    argv += ["--set", f"recover.iterations={iterations}"]
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
        preexec_fn=_niceness(nice),
    )
    t_end = time.time() + timeout_s
    try:
        run_dir = Path(proc.stdout.readline().split("run dir:", 1)[1].strip())
        while True:
            secs, threads = _recover_seconds(run_dir)
            if secs is not None or proc.poll() is not None or time.time() > t_end:
                break
            time.sleep(0.2)
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have ended by itself
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return {"recover_s": secs, "threads": threads, "run": run_dir.name}


def _parse_variant(parts: list[str]) -> tuple[str, dict]:
    name, sets = parts[0], {}
    for p in parts[1:]:
        k, sep, v = p.partition("=")
        if not sep or k not in THREAD_VARS:
            raise SystemExit(f"variant {name}: {p!r} is not one of {', '.join(THREAD_VARS)}=VALUE")
        sets[k] = v
    return name, sets


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", nargs="+", action="append", required=True, metavar="NAME")
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--busy", type=int, default=0, help="busy-loop processes beside the runs")
    ap.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness of the measured runs; -19 (root) nearly idles a machine others load",
    )
    ap.add_argument("--timeout", type=float, default=600, help="seconds per run at most")
    ap.add_argument("--runs-dir", default="", help="default: a fresh temporary folder")
    ap.add_argument("--out", default="", help="append each run as a JSON line here")
    args = ap.parse_args()
    variants = [_parse_variant(v) for v in args.variant]
    runs_dir = Path(args.runs_dir or tempfile.mkdtemp(prefix="cvdd_busy_"))
    # the busy loops compete at the runs' own niceness, so --nice keeps the contention real
    loop, renice = [sys.executable, "-c", "while 1: pass"], _niceness(args.nice)
    busy = [
        subprocess.Popen(loop, preexec_fn=renice, start_new_session=True) for _ in range(args.busy)
    ]
    results: dict[str, list[float]] = {name: [] for name, _ in variants}
    try:
        # fills the runs root's caches (committee, priors); 1 thread, at the runs' niceness
        one_run(
            runs_dir=runs_dir,
            env_set={"CVDD_THREADS": "1"},
            iterations=1,
            timeout_s=args.timeout,
            nice=args.nice,
        )
        for rep in range(args.reps):
            for name, sets in variants:
                load = _loadavg()
                r = one_run(
                    runs_dir=runs_dir,
                    env_set=sets,
                    iterations=args.iterations,
                    timeout_s=args.timeout,
                    nice=args.nice,
                )
                r.update(variant=name, rep=rep, busy=args.busy, load_before=load, t=time.time())
                r.update(iterations=args.iterations, env=sets, nice=args.nice)
                print(json.dumps(r), flush=True)
                if args.out:
                    with open(args.out, "a") as f:
                        f.write(json.dumps(r) + "\n")
                if r["recover_s"] is not None:
                    results[name].append(r["recover_s"])
    finally:
        for p in busy:
            p.kill()
            p.wait()
    for name, xs in results.items():
        med = f"{statistics.median(xs):.1f}" if xs else "-"
        print(f"{name:8s} median {med} s  n={len(xs)}  all={xs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
