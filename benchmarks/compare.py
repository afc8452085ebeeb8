"""Benchmark: CV-DD vs SRe2L++ vs random real, BSSL vs eval-mode labels, prior vs equal voter.

Runs the CLI for every (variant, seed), then prints mean +- std of the student top-1.

    python benchmarks/compare.py                       # quick preset, embedded data, 3 seeds
    python benchmarks/compare.py --suite cifar10       # ../shared/data/cifar10, ~30 min on 2 cores

The committee (squeeze) and the priors are cached by data + architecture + schedule, so they
are trained once and shared by all variants and seeds; the seed changes init, recover,
relabelling and the student. Results go to benchmarks/out/<suite>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CIFAR10 = ROOT.parent / "shared" / "data" / "cifar10"

# the variants of one seed: name -> --set overrides
VARIANTS = {
    "cvdd": ["validate.compare_eval_labels=true", "validate.random_real=true"],
    "cvdd_equal": [
        "recover.voter=equal",
        "validate.compare_eval_labels=false",
        "validate.random_real=false",
    ],
    "sre2l": [
        "squeeze.members=resnet18",
        "recover.num_experts=1",
        "relabel.teacher=resnet18",
        "validate.compare_eval_labels=true",
        "validate.random_real=false",
    ],
}
SUITES = {
    "quick": dict(preset="quick", data="builtin", extra=[]),
    # CIFAR-10 on CPU: the quick preset's narrow committee and short schedules on 32 px RGB
    # (a 3k-image class-balanced subset for the committee, 25 student epochs) to fit ~30 min.
    "cifar10": dict(
        preset="quick",
        data=str(CIFAR10),
        extra=[
            "squeeze.max_train_images=3000",
            "prior.validate_epochs=20",
            "validate.epochs=25",
            "recover.jitter=4",
        ],
    ),
}


def run_one(suite: dict, overrides: list[str], seed: int, runs_dir: Path) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "cvdd",
        "run",
        "--preset",
        suite["preset"],
        "--data",
        suite["data"],
        "--runs-dir",
        str(runs_dir),
        "--seed",
        str(seed),
    ]
    for o in suite["extra"] + overrides:
        cmd += ["--set", o]
    t0 = time.time()
    out = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT))
    )
    if out.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{out.stderr[-2000:]}")
    run_dir = Path(out.stdout.strip().splitlines()[-1])
    res = json.loads((run_dir / "result.json").read_text())
    students = json.loads((run_dir / "validate/students.json").read_text())["students"]
    return {
        "run_dir": str(run_dir),
        "seconds": round(time.time() - t0, 1),
        "result": res,
        "students": {k: v["top1"] for k, v in students.items()},
    }


def rows_of(records: dict) -> list[tuple[str, list[float]]]:
    def col(variant: str, key: str) -> list[float]:
        return [r["students"][key] for r in records.get(variant, []) if key in r["students"]]

    return [
        ("CV-DD (prior voter, BSSL labels)", col("cvdd", "distilled_bssl")),
        ("CV-DD, eval-mode labels (no BSSL)", col("cvdd", "distilled_eval")),
        ("CV-DD, equal voter (BSSL)", col("cvdd_equal", "distilled_bssl")),
        ("SRe2L++ (ResNet-18 alone, BSSL)", col("sre2l", "distilled_bssl")),
        ("SRe2L++, eval-mode labels", col("sre2l", "distilled_eval")),
        ("random real images (BSSL labels)", col("cvdd", "random_real_bssl")),
    ]


def fmt(vals: list[float]) -> str:
    if not vals:
        return "n/a"
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{statistics.mean(vals):6.2f} ± {sd:4.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", choices=SUITES, default="quick")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--runs-dir", default=str(ROOT / "benchmarks" / "out" / "runs"))
    ap.add_argument(
        "--set", dest="extra", action="append", default=[], help="extra overrides for every run"
    )
    args = ap.parse_args()
    suite = dict(SUITES[args.suite])
    suite["extra"] = suite["extra"] + args.extra
    if args.suite == "cifar10" and not CIFAR10.is_dir():
        raise SystemExit(f"{CIFAR10} not found: the cifar10 suite needs the shared CIFAR-10 folder")
    out_dir = ROOT / "benchmarks" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    records: dict[str, list[dict]] = {}
    t0 = time.time()
    for seed in args.seeds:
        for name, overrides in VARIANTS.items():
            r = run_one(suite, overrides, seed, Path(args.runs_dir))
            records.setdefault(name, []).append(r)
            print(f"seed {seed} {name:11s} {r['seconds']:7.1f}s  {r['students']}", flush=True)
    lines = [
        f"suite {args.suite}, seeds {args.seeds}, {time.time() - t0:.0f} s in all, "
        f"device {records['cvdd'][0]['result']['device']}",
        "",
        "| variant | student top-1 % (mean ± std) | n |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {fmt(v)} | {len(v)} |" for name, v in rows_of(records)]
    text = "\n".join(lines)
    print(text)
    (out_dir / f"{args.suite}.md").write_text(text + "\n")
    (out_dir / f"{args.suite}.json").write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
