"""How honest is the whole run's time left? Replays finished runs' events.jsonl through today's
forecast (cvdd/eta.py: `stage_work` + `replay`, the same code a worker runs) and prints, at
fixed fractions of each run's wall time, the forecast against the time that was really left.

    python benchmarks/eta_check.py RUN_DIR [RUN_DIR ...]
    python benchmarks/eta_check.py --json out.json RUN_DIR ...

A run that was resumed is replayed from its last start (the stages finished before it are not
forecast, as the resumed worker does). Error = (forecast - really left) / really left, at the
progress event nearest each fraction; "within" says whether |error| <= 35 %.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cvdd.config import RunConfig  # noqa: E402
from cvdd.eta import recorded_work, replay, student_units, student_weights  # noqa: E402
from cvdd.layout import read_events  # noqa: E402

FRACTIONS = (0.1, 0.3, 0.45, 0.6, 0.8)
BOUND = 0.35


def _students(run: Path) -> float:
    """The validate stage's students in ResNet-18 units, from what the run wrote."""
    doc = json.loads((run / "validate" / "students.json").read_text())
    return student_units([s["student"] for s in doc["students"].values()])


def reweight_validate(run: Path, events: list[dict]) -> list[dict]:
    """Validate's progress events of a run recorded before students were weighted by cost
    (each student then counted alike: step = j * t + s of total n * t), rewritten as today's
    count (cvdd/stages/validate.py `_Slot`), so today's clock can replay them."""
    doc = json.loads((run / "validate" / "students.json").read_text())
    w = student_weights([s["student"] for s in doc["students"].values()])
    out = []
    for e in events:
        if e["kind"] == "progress" and e["stage"] == "validate" and e["total"] % len(w) == 0:
            t = e["total"] // len(w)
            j = min((e["step"] - 1) // t, len(w) - 1) if e["step"] > 0 else 0
            s = e["step"] - j * t
            e = {**e, "step": sum(w[:j]) * t + w[j] * s, "total": sum(w) * t}
        out.append(e)
    return out


def check(run: Path, reweight: bool = False) -> dict:
    """{run, seconds, errors: {fraction: error}} for one finished run."""
    doc = json.loads((run / "config.json").read_text())
    cfg, d = RunConfig.from_dict(doc["config"]), doc["meta"]["dataset"]
    events = read_events(run)
    start = max(i for i, e in enumerate(events) if e["kind"] == "run_start")
    done = {e["stage"] for e in events[:start] if e["kind"] == "stage_end"}
    events = reweight_validate(run, events[start:]) if reweight else events[start:]
    end = next(e["t"] for e in events if e["kind"] == "run_end")
    t0 = events[0]["t"]
    work = recorded_work(cfg, d, _students(run))
    todo = {s: w for s, w in work.items() if s not in done}
    points = [(t, eta) for t, eta in replay(events, todo) if eta is not None]
    errors = {}
    for f in FRACTIONS:
        at = t0 + f * (end - t0)
        t, eta = min(points, key=lambda p: abs(p[0] - at))
        left = end - t
        errors[f] = (eta - left) / left if left > 0 else None
    return {"run": str(run), "seconds": round(end - t0, 1), "resumed": bool(done), "errors": errors}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--json", type=Path, help="also write the rows here")
    ap.add_argument(
        "--reweight",
        action="store_true",
        help="runs recorded before validate weighted its students by cost: rewrite their "
        "validate progress as today's code counts it",
    )
    args = ap.parse_args()
    done = [r for r in args.runs if (r / "result.json").is_file()]
    for r in sorted(set(args.runs) - set(done)):
        print(f"skipped (not finished): {r}")
    rows = [check(r, args.reweight) for r in done]
    head = " | ".join(f"{int(f * 100)} %" for f in FRACTIONS)
    print(f"| run | seconds | {head} |\n|---|---|" + "---|" * len(FRACTIONS))
    for r in rows:
        cells = " | ".join("?" if e is None else f"{e:+.0%}" for e in r["errors"].values())
        name = "/".join(Path(r["run"]).parts[-2:])
        print(f"| {name}{' (resumed)' if r['resumed'] else ''} | {r['seconds']} | {cells} |")
    for f in (0.3, 0.6):
        errs = [r["errors"][f] for r in rows if r["errors"][f] is not None]
        ok = sum(abs(e) <= BOUND for e in errs)
        print(f"at {int(f * 100)} %: {ok} of {len(errs)} runs within {BOUND:.0%}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
