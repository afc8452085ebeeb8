"""Write assets/reference_spread.json from the sweep (benchmarks/out/sweep.json): what the pages
show beside a single run ("at this budget, over n seeds: ..."), so that no one reads one seed
as a result. Student top-1 % under BSSL labels, each a mean with its 95 % t interval.

    python benchmarks/make_reference.py [--sweep benchmarks/out/sweep.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.sweep_table import by_seed  # noqa: E402
from cvdd.stats import interval, paired  # noqa: E402

STUDENTS = {"resnet18": "", "convnet3": "-convnet3"}
DIFFS = (("cvdd", "sre2l"), ("cvdd", "real"), ("cvdd", "init"), ("sre2l", "init"))


def _iv(iv) -> dict | None:
    return None if iv is None else dataclasses.asdict(iv)


def reference(doc: dict) -> dict:
    rows, budgets = doc["rows"], {}
    for b in doc["budgets"]:
        per_student = {}
        for student, suf in STUDENTS.items():
            key = f"distilled_bssl{suf}"
            cell = {a: _iv(interval(list(by_seed(rows, a, b, key).values()))) for a in
                    ("cvdd", "sre2l", "init", "real")}  # fmt: skip
            for a, c in DIFFS:
                cell[f"{a}-{c}"] = _iv(paired(by_seed(rows, a, b, key), by_seed(rows, c, b, key)))
            per_student[student] = cell
        budgets[str(b)] = per_student
    return {
        "what": "student top-1 % (BSSL labels, all 10,000 test images) over paired seeds, "
        "quick preset; mean with its 95 % t interval; made by benchmarks/make_reference.py "
        "from benchmarks/out/sweep.json",
        "commit": doc["commit"],
        "preset": "quick",
        "presets": ["quick", "lecture"],  # lecture: quick's settings, 360 recover steps
        "dataset": "builtin",
        "n_seeds": len({r["seed"] for r in rows}),
        "budgets": budgets,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweep", default=str(ROOT / "benchmarks" / "out" / "sweep.json"))
    ap.add_argument("--out", default=str(ROOT / "assets" / "reference_spread.json"))
    args = ap.parse_args()
    ref = reference(json.loads(Path(args.sweep).read_text()))
    Path(args.out).write_text(json.dumps(ref, indent=1) + "\n")
    print(f"wrote {args.out} ({ref['n_seeds']} seeds, budgets {list(ref['budgets'])})")


if __name__ == "__main__":
    main()
