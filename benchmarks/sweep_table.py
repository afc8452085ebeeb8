"""The sweep's summary (benchmarks/sweep.py): per budget, each arm's mean top-1 with its 95 %
interval, then the paired (same-seed) differences in plain words. Also `python
benchmarks/sweep_table.py benchmarks/out/sweep.json` to print it again."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cvdd.stats import interval, paired, verdict

STUDENTS = (("", "ResNet-18"), ("-convnet3", "ConvNet-3"))
NAMES = {"cvdd": "CV-DD", "sre2l": "SRe2L++", "init": "init alone", "real": "random real"}


def by_seed(rows: list[dict], arm: str, budget: int, key: str) -> dict[int, float]:
    """seed -> value of `key` (a student key, or a row field) for one arm at one budget. Random
    real images come from the CV-DD run of the first budget (they do not depend on recover)."""
    if arm == "real":
        first = min((r["budget"] for r in rows if r["arm"] == "cvdd"), default=None)
        arm, budget, key = "cvdd", first, key.replace("distilled_", "random_real_")
    if arm == "init":
        budget = 0
    out = {}
    for r in rows:
        if r["arm"] == arm and r["budget"] == budget:
            v = r["students"].get(key) if key.startswith(("distilled_", "random_real_")) else r[key]
            if v is not None:
                out[r["seed"]] = v
    return out


def _cell(vals: dict) -> str:
    iv = interval(list(vals.values()))
    return "n/a" if iv is None else iv.text(1)


def summary_markdown(doc: dict) -> str:
    rows, lines = doc["rows"], []
    seeds = sorted({r["seed"] for r in rows})
    commits = sorted({r.get("commit", doc.get("commit")) for r in rows} - {None})
    lines.append(
        f"Sweep at commit {', '.join(commits) or doc.get('commit')} ({doc.get('date')}): "
        f"quick preset, seeds {seeds}, "
        f"{doc.get('processes')} processes of {doc.get('threads_per_process')} thread; "
        "student top-1 % on all 10,000 test images, mean ± half-width of the 95 % t interval "
        "(n seeds). Arms of one seed share the teacher (ResNet-18) and differ in images only."
    )
    for b in doc.get("budgets", []):
        lines += ["", f"### {b} recover steps", ""]
        lines += ["| images, labels | ResNet-18 | ConvNet-3 |", "|---|---|---|"]
        for arm in ("cvdd", "sre2l", "init", "real"):
            for labels in ("bssl", "hard"):
                cells = [
                    _cell(by_seed(rows, arm, b, f"distilled_{labels}{s}")) for s, _ in STUDENTS
                ]
                lines.append(f"| {NAMES[arm]}, {labels} | {' | '.join(cells)} |")
        lines += ["", "Paired differences (same seed), points:", ""]
        for a, c, labels in (
            ("cvdd", "sre2l", "bssl"),
            ("cvdd", "init", "bssl"),
            ("cvdd", "real", "bssl"),
            ("sre2l", "init", "bssl"),
            ("init", "real", "bssl"),
            ("cvdd", "sre2l", "hard"),
            ("cvdd", "real", "hard"),
        ):
            for s, student in STUDENTS:
                key = f"distilled_{labels}{s}"
                d = paired(by_seed(rows, a, b, key), by_seed(rows, c, b, key))
                lines.append(f"- {student}, {labels}: {verdict(d, NAMES[a], NAMES[c])}")
        for field, what in (
            ("cosine_mean", "mean intra-class cosine (Fig. 4; lower = more diverse)"),
            ("bn_gap_kept", "BN gap kept on voting members (after / before recover)"),
        ):
            cv, sr = by_seed(rows, "cvdd", b, field), by_seed(rows, "sre2l", b, field)
            d = paired(cv, sr)
            lines.append(
                f"- {what}: CV-DD {_fmt3(cv)}, SRe2L++ {_fmt3(sr)}; paired CV-DD - SRe2L++ "
                + ("n/a" if d is None else _fmt3_iv(d))
            )
    return "\n".join(lines)


def _fmt3(vals: dict) -> str:
    iv = interval(list(vals.values()))
    return "n/a" if iv is None else _fmt3_iv(iv)


def _fmt3_iv(iv) -> str:
    if iv.half is None:
        return f"{iv.mean:.3f} (n = 1)"
    return f"{iv.mean:.3f} ± {iv.half:.3f} (n = {iv.n})"


if __name__ == "__main__":
    print(summary_markdown(json.loads(Path(sys.argv[1]).read_text())))
