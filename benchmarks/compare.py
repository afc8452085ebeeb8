"""Benchmark: CV-DD vs SRe2L++ vs random real, BSSL vs eval-mode labels, prior vs equal voter,
soft vs hard labels, for two students (the run's ResNet-18 and the 3-block ConvNet).

Runs the CLI for every (variant, seed), then prints mean ± std (n) of the student top-1 and the
paired (same-seed) differences.

    python benchmarks/compare.py                                  # quick preset, 5 seeds
    python benchmarks/compare.py --suite cifar10 --data DIR       # a CIFAR-10 folder, ~30 min

The quick suite uses the shipped committee, so every variant and seed labels with the same
ResNet-18 teacher (relabel.teacher=resnet18): the rows differ in the images only (CV-DD's
committee vs SRe2L++'s ResNet-18 alone vs random real), or in the labelling only (BSSL vs
eval-mode BN vs hard one-hot labels, no teacher). The seed changes init, recover, relabelling
and the students. Results go to benchmarks/out/<suite>.json and .md.
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
STUDENTS = "validate.students=resnet18,convnet3"  # the headline + the field's ConvNet-3

# the variants of one seed: name -> --set overrides
VARIANTS = {
    "cvdd": [
        "validate.compare_eval_labels=true",
        "validate.random_real=true",
        "validate.hard_labels=true",
        STUDENTS,
    ],
    "cvdd_equal": [
        "recover.voter=equal",
        "validate.compare_eval_labels=false",
        "validate.random_real=false",
    ],
    # SRe2L++ = a committee of one: ResNet-18, the relabel teacher of every variant (so the
    # labels are the same teacher's) and SRe2L's own recovery model
    "sre2l": [
        "squeeze.members=resnet18",
        "recover.num_experts=1",
        "relabel.teacher=resnet18",
        "validate.compare_eval_labels=true",
        "validate.random_real=false",
        "validate.hard_labels=true",
        STUDENTS,
    ],
}
SUITES = {
    "quick": dict(preset="quick", extra=[]),
    # CIFAR-10 on CPU: the quick preset's narrow committee and short schedules on 32 px RGB,
    # trained here (the shipped committee is Fashion-MNIST's) on a 3k-image class-balanced
    # subset, 25 student epochs, to fit ~30 min
    "cifar10": dict(
        preset="quick",
        extra=[
            "squeeze.source=train",
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
    for o in suite["extra"] + overrides + suite["user"]:  # the command line's --set win
        cmd += ["--set", o]
    t0 = time.time()
    out = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT))
    )
    if out.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{out.stderr[-2000:]}")
    return record(Path(out.stdout.strip().splitlines()[-1]), seed, time.time() - t0)


def record(run_dir: Path, seed: int, seconds: float) -> dict:
    res = json.loads((run_dir / "result.json").read_text())
    students = json.loads((run_dir / "validate/students.json").read_text())["students"]
    return {
        "seed": seed,
        "teacher_top1": (res.get("teacher") or {}).get("top1"),
        "run_dir": str(run_dir),
        "seconds": round(seconds, 1),
        "result": res,
        "students": {k: v["top1"] for k, v in students.items()},
    }


def collect(runs_dir: Path) -> dict[str, list[dict]]:
    """--collect: the records of the finished runs already in `runs_dir` (after an interrupted
    benchmark), each put under its variant by its config (members, voter)."""
    records: dict[str, list[dict]] = {}
    for d in sorted(runs_dir.iterdir()):
        if not (d / "result.json").is_file():
            continue
        cfg = json.loads((d / "config.json").read_text())["config"]
        var = (
            "sre2l"
            if len(cfg["squeeze"]["members"]) == 1
            else "cvdd_equal"
            if cfg["recover"]["voter"] == "equal"
            else "cvdd"
        )
        rec = record(d, cfg["seed"], 0.0)
        records.setdefault(var, []).append(rec)
    return records


def _col(records: dict, variant: str, key: str) -> list[float]:
    return [r["students"][key] for r in records.get(variant, []) if key in r["students"]]


# (row label, variant, student key without the model suffix)
ROWS = [
    ("CV-DD (prior voter, BSSL labels)", "cvdd", "distilled_bssl"),
    ("CV-DD, eval-mode labels (no BSSL)", "cvdd", "distilled_eval"),
    ("CV-DD, equal voter (BSSL)", "cvdd_equal", "distilled_bssl"),
    ("SRe2L++ (ResNet-18 alone, BSSL)", "sre2l", "distilled_bssl"),
    ("SRe2L++, eval-mode labels", "sre2l", "distilled_eval"),
    ("random real images (BSSL labels)", "cvdd", "random_real_bssl"),
    ("CV-DD images, hard labels (no teacher)", "cvdd", "distilled_hard"),
    ("SRe2L++ images, hard labels", "sre2l", "distilled_hard"),
    ("random real images, hard labels", "cvdd", "random_real_hard"),
]
# paired (same seed) differences: (label, (variant, key), (variant, key))
DIFFS = [
    ("CV-DD − SRe2L++ (BSSL)", ("cvdd", "distilled_bssl"), ("sre2l", "distilled_bssl")),
    ("CV-DD − random real (BSSL)", ("cvdd", "distilled_bssl"), ("cvdd", "random_real_bssl")),
    ("BSSL − eval-mode labels (CV-DD)", ("cvdd", "distilled_bssl"), ("cvdd", "distilled_eval")),
    ("prior − equal voter", ("cvdd", "distilled_bssl"), ("cvdd_equal", "distilled_bssl")),
    ("CV-DD − random real (hard)", ("cvdd", "distilled_hard"), ("cvdd", "random_real_hard")),
    ("SRe2L++ − random real (hard)", ("sre2l", "distilled_hard"), ("cvdd", "random_real_hard")),
]
MODELS = (("", "ResNet-18"), ("-convnet3", "ConvNet-3"))


def fmt(vals: list[float]) -> str:
    if not vals:
        return "n/a"
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{statistics.mean(vals):6.2f} ± {sd:4.2f} ({len(vals)})"


def _paired(records: dict, a: tuple[str, str], b: tuple[str, str]) -> list[float]:
    by_seed = {r["seed"]: r["students"] for r in records.get(b[0], [])}
    return [
        r["students"][a[1]] - by_seed[r["seed"]][b[1]]
        for r in records.get(a[0], [])
        if a[1] in r["students"] and b[1] in by_seed.get(r["seed"], {})
    ]


def table(records: dict, header: str) -> str:
    """The markdown summary: mean ± std (n) per row and student, then paired differences."""
    heads = " | ".join(name for _, name in MODELS)
    lines = [header, "", f"| student top-1 % | {heads} |", "|---|" + "---|" * len(MODELS)]
    teach = [r["teacher_top1"] for r in records.get("cvdd", []) if r.get("teacher_top1")]
    lines.append(f"| teacher (ResNet-18 member, eval BN) | {fmt(teach)} | |")
    for label, var, key in ROWS:
        cells = " | ".join(fmt(_col(records, var, key + suf)) for suf, _ in MODELS)
        lines.append(f"| {label} | {cells} |")
    lines += ["", f"| paired difference (same seed), points | {heads} |"]
    lines.append("|---|" + "---|" * len(MODELS))
    for label, a, b in DIFFS:
        cells = " | ".join(
            fmt(_paired(records, (a[0], a[1] + suf), (b[0], b[1] + suf))) for suf, _ in MODELS
        )
        lines.append(f"| {label} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", choices=SUITES, default="quick")
    ap.add_argument("--data", default="builtin", help="data folder (the cifar10 suite needs one)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument("--runs-dir", default=str(ROOT / "benchmarks" / "out" / "runs"))
    ap.add_argument("--name", default="", help="output name (default: the suite's)")
    ap.add_argument(
        "--collect", action="store_true", help="no new runs: tabulate the finished ones in runs-dir"
    )
    ap.add_argument(
        "--resume", action="store_true", help="reuse the finished runs in runs-dir, run the rest"
    )
    ap.add_argument(
        "--set",
        dest="extra",
        action="append",
        default=[],
        help="extra overrides for every run, applied last (ablations)",
    )
    args = ap.parse_args()
    suite = dict(SUITES[args.suite], data=args.data, user=args.extra)
    if args.suite == "cifar10" and not Path(args.data).is_dir():
        raise SystemExit("the cifar10 suite needs --data DIR, a CIFAR-10 folder")
    out_dir = ROOT / "benchmarks" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    name = args.name or args.suite
    reuse = args.collect or args.resume
    records: dict[str, list[dict]] = collect(Path(args.runs_dir)) if reuse else {}
    t0 = time.time()
    for seed in [] if args.collect else args.seeds:
        for var in args.variants:
            if any(r["seed"] == seed for r in records.get(var, [])):
                continue  # --resume: finished before
            r = run_one(suite, VARIANTS[var], seed, Path(args.runs_dir))
            records.setdefault(var, []).append(r)
            print(f"seed {seed} {var:11s} {r['seconds']:7.1f}s  {r['students']}", flush=True)
    first = next(iter(records.values()))[0]
    header = (
        f"suite {args.suite} ({time.strftime('%Y-%m-%d')}), seeds "
        f"{sorted({r['seed'] for v in records.values() for r in v})}, "
        + ("collected from the runs folder, " if args.collect else "")
        + f"{time.time() - t0:.0f} s in all, device {first['result']['device']}, "
        f"extra overrides {suite['extra'] + args.extra or 'none'}; "
        "mean ± std (n seeds) of the top-1 % on the test split"
    )
    text = table(records, header)
    print(text)
    (out_dir / f"{name}.md").write_text(text + "\n")
    (out_dir / f"{name}.json").write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
