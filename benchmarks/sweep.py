"""Sweep: where does the committee effect live? CV-DD vs SRe2L++ vs the initial images alone vs
random real images, over recover budgets and paired seeds, on the quick preset (the embedded
Fashion-MNIST subset, the shipped committee, all 10,000 test images).

For every seed, the arms are (each one `python -m cvdd run --preset quick`):
  cvdd@B   CV-DD, B recover steps (the random-real baseline rides on the first budget's run)
  sre2l@B  SRe2L++: a committee of one (ResNet-18), B recover steps
  init     the RDED-style initial images without recover (recover.iterations=0)
Every arm trains both students (the run's ResNet-18 and ConvNet-3) under BSSL soft labels
and under hard labels, labelled by the same ResNet-18 teacher, so arms of one seed differ in
their images only. Each run also records Fig. 4's mean intra-class cosine and the BN gap that
recover leaves on the members that voted.

    python benchmarks/sweep.py --seeds 0-7 --budgets 120,360 --jobs 2
    python benchmarks/sweep.py --collect          # re-read the finished runs, rewrite the output

Runs one thread per process, `--jobs` processes at a time; a killed sweep restarts where it
stopped (finished runs are kept, a half-done run is resumed), and rows already in the output
file are kept, each with the commit that made it, so a sweep can grow across sessions.
Output: benchmarks/out/sweep.json (settings, commit, environment, one row per run) and
benchmarks/out/sweep.md (benchmarks/sweep_table.py's summary: means with 95 % t intervals and
paired differences per budget).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.sweep_table import summary_markdown  # noqa: E402

COMMON = [
    "validate.students=resnet18,convnet3",
    "validate.hard_labels=true",
    "validate.compare_eval_labels=false",
    "relabel.teacher=resnet18",
]
SRE2L = ["squeeze.members=resnet18", "recover.num_experts=1"]


def jobs(seeds: list[int], budgets: list[int]) -> list[dict]:
    """Every run of the sweep, seed by seed, so a partial sweep covers every arm of its seeds."""
    out = []
    for s in seeds:
        for i, b in enumerate(budgets):
            real = f"validate.random_real={'true' if i == 0 else 'false'}"
            out.append(dict(seed=s, arm="cvdd", budget=b, sets=[f"recover.iterations={b}", real]))
            out.append(
                dict(
                    seed=s,
                    arm="sre2l",
                    budget=b,
                    sets=[*SRE2L, f"recover.iterations={b}", "validate.random_real=false"],
                )
            )
            if i == 0:
                sets = ["recover.iterations=0", "validate.random_real=false"]
                out.append(dict(seed=s, arm="init", budget=0, sets=sets))
    return out


def _run_dir(root: Path, job: dict) -> Path | None:
    folder = root / f"{job['arm']}-b{job['budget']}-s{job['seed']}"
    runs = sorted(p for p in folder.glob("*") if (p / "config.json").is_file())
    return runs[-1] if runs else None


def run_job(root: Path, job: dict) -> dict | None:
    """Run (or resume) one job; its record, or None when it failed (the error is printed)."""
    folder = root / f"{job['arm']}-b{job['budget']}-s{job['seed']}"
    env = dict(os.environ, PYTHONPATH=str(ROOT), CVDD_THREADS="1", OMP_NUM_THREADS="1")
    done = _run_dir(root, job)
    if done and (done / "result.json").is_file():
        return record(done, job)
    if done:  # killed half-way: continue it
        cmd = [sys.executable, "-m", "cvdd", "resume", str(done)]
    else:
        cmd = [sys.executable, "-m", "cvdd", "run", "--preset", "quick", "--runs-dir", str(folder)]
        cmd += ["--seed", str(job["seed"]), "--set", f"cache_dir={root / '_cache'}"]
        for s in COMMON + job["sets"]:
            cmd += ["--set", s]
    t0 = time.time()
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        print(f"FAILED {job['arm']}@{job['budget']} seed {job['seed']}: {out.stderr[-800:]}")
        return None
    rec = record(Path(out.stdout.strip().splitlines()[-1]), job)
    rec["seconds_this_call"] = round(time.time() - t0, 1)
    return rec


def _bn_gap_kept(run_dir: Path) -> float | None:
    """Mean over (voting member, group) of the BN loss after recover / before it (1 = the gap
    recover found is all still there, 0 = closed), from analysis/bn_groups.json."""
    doc = json.loads((run_dir / "analysis/bn_groups.json").read_text())
    ratios = []
    for m in doc["members"].values():
        for voted, a, b in zip(m["voted"], m["loss"]["init"], m["loss"]["synthetic"]):
            if voted and a:
                ratios.append(b / a)
    return sum(ratios) / len(ratios) if ratios else None


def record(run_dir: Path, job: dict) -> dict:
    res = json.loads((run_dir / "result.json").read_text())
    div = json.loads((run_dir / "analysis/diversity.json").read_text())["sources"]
    secs = res.get("stage_seconds", {})
    return {
        "seed": job["seed"],
        "arm": job["arm"],
        "budget": job["budget"],
        "run_dir": str(run_dir),
        "students": res["all_students"],  # <images>_<labels>[-<student>] -> top-1 %
        "teacher_top1": (res.get("teacher") or {}).get("top1"),
        "test_images": res.get("test_images"),
        "cosine_mean": div.get("synthetic", {}).get("mean"),  # Fig. 4, lower = more diverse
        "cosine_mean_init": div.get("init", {}).get("mean"),
        "bn_gap_kept": _bn_gap_kept(run_dir),
        "recover_s": secs.get("recover"),
        "total_s": res.get("total_seconds"),
        "environment": res.get("environment"),
        "commit": _commit(),
    }


def _commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "cvdd"], cwd=ROOT, capture_output=True)
    return out.stdout.decode().strip() + ("+dirty" if dirty.stdout.strip() else "")


def write(out: Path, rows: list[dict], args) -> None:
    doc = {
        "what": "benchmarks/sweep.py: quick preset, CV-DD vs SRe2L++ vs init vs random real",
        "commit": _commit(),
        "date": time.strftime("%Y-%m-%d"),
        "seeds": args.seeds,
        "budgets": args.budgets,
        "common_overrides": COMMON,
        "sre2l_overrides": SRE2L,
        "threads_per_process": 1,
        "processes": args.jobs,
        "rows": sorted(rows, key=lambda r: (r["seed"], r["arm"], r["budget"])),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, out)
    out.with_suffix(".md").write_text(summary_markdown(doc) + "\n")


def _span(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=_span, default=_span("0-7"), help="e.g. 0-7 or 0,2,5")
    ap.add_argument("--budgets", type=_span, default=[120, 360], help="recover steps, e.g. 120,360")
    ap.add_argument("--jobs", type=int, default=2, help="processes at a time (1 thread each)")
    ap.add_argument("--runs-dir", default=str(ROOT / "benchmarks" / "out" / "runs" / "sweep"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "sweep.json"))
    ap.add_argument("--collect", action="store_true", help="no new runs: re-read finished ones")
    args = ap.parse_args()
    root, out = Path(args.runs_dir), Path(args.out)
    todo = jobs(args.seeds, args.budgets)
    rows: list[dict] = []
    lock = threading.Lock()
    if out.is_file() and not args.collect:  # rows written before (another session): kept
        rows = json.loads(out.read_text())["rows"]
        have = {(r["seed"], r["arm"], r["budget"]) for r in rows}
        todo = [j for j in todo if (j["seed"], j["arm"], j["budget"]) not in have]
    if args.collect:
        for job in todo:
            d = _run_dir(root, job)
            if d and (d / "result.json").is_file():
                rows.append(record(d, job))
        write(out, rows, args)
        print(out.with_suffix(".md").read_text())
        return

    def worker() -> None:
        while True:
            with lock:
                if not todo:
                    return
                job = todo.pop(0)
            rec = run_job(root, job)
            with lock:
                if rec:
                    rows.append(rec)
                    write(out, rows, args)
                    top = rec["students"].get("distilled_bssl")
                    print(
                        f"{time.strftime('%H:%M:%S')} seed {job['seed']} {job['arm']}@"
                        f"{job['budget']}: ResNet-18 BSSL {top}",
                        flush=True,
                    )

    threads = [threading.Thread(target=worker) for _ in range(args.jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
