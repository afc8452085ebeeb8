"""Seed spread for the pages: a repeat group's means, intervals and paired differences as tables;
the sentence a single run's number carries (from its group, else from the shipped reference
assets/reference_spread.json) comes from cvdd.spread. Pure: no streamlit, no torch
(tests/test_repeats.py).
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

import cvdd.repeats as repeats  # torch-free (tests/test_layering.py)
import cvdd.spread as spread
import cvdd.stats as stats

# the names, the reference and the sentences live in cvdd.spread (the HTML report shares them)
NAMES = spread.NAMES
NO_REFERENCE = spread.NO_REFERENCE
experiment_values = spread.experiment_values
group_text = spread.group_text
reference_block = spread.reference_block
reference_text = spread.reference_text
_pm = spread.pm
_isnum = spread.is_number


def n_seeds(values: Mapping[str, Mapping[int, float]]) -> int:
    """Finished seeds of the experiment's best-covered method (the random-real arm not counted)."""
    return max((len(v) for a, v in values.items() if a != "real"), default=0)


def _ci(iv: stats.Interval | None) -> str:
    if iv is None or iv.lo is None:
        return "—"
    return f"[{iv.lo:.1f}, {iv.hi:.1f}]"


def arms_df(values: Mapping[str, Mapping[int, float]]) -> pd.DataFrame:
    """One row per method: name, seeds, mean, half-width and 95 % interval, sd."""
    arms, _ = repeats.summarise(values)
    rows = [
        {
            "method": NAMES[a],
            "seeds": iv.n,
            "mean %": round(iv.mean, 2),
            "95 % interval": _ci(iv),
            "± (half)": "—" if iv.half is None else f"± {iv.half:.1f}",
            "sd": "—" if iv.sd is None else f"{iv.sd:.1f}",
        }
        for a, iv in arms.items()
    ]
    return pd.DataFrame(
        rows, columns=["method", "seeds", "mean %", "± (half)", "95 % interval", "sd"]
    )


def seeds_df(values: Mapping[str, Mapping[int, float]]) -> pd.DataFrame:
    """One row per seed: each method's top-1 (text, '—' where that seed has none)."""
    seeds = sorted({s for v in values.values() for s in v})
    cols = [a for a in ("cvdd", "sre2l++", "real") if values.get(a)]
    rows = [
        {"seed": s, **{NAMES[a]: _num(values[a].get(s)) for a in cols}}
        | ({"CV-DD − SRe²L++": _diff(values, s, "cvdd", "sre2l++")} if "sre2l++" in cols else {})
        for s in seeds
    ]
    return pd.DataFrame(rows)


def _num(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f}"


def _diff(values: Mapping, s: int, a: str, b: str) -> str:
    va, vb = values.get(a, {}).get(s), values.get(b, {}).get(s)
    return "—" if va is None or vb is None else f"{va - vb:+.1f}"


def diffs_df(values: Mapping[str, Mapping[int, float]]) -> pd.DataFrame:
    """One row per paired difference: which, seeds paired, mean, 95 % interval, verdict."""
    _, diffs = repeats.summarise(values)
    rows = []
    for (a, b), iv in diffs.items():
        resolved = iv.lo is not None and (iv.lo > 0 or iv.hi < 0)
        rows.append(
            {
                "difference": f"{NAMES[a]} − {NAMES[b]}",
                "paired seeds": iv.n,
                "mean (points)": f"{iv.mean:+.1f}",
                "95 % interval": "—" if iv.lo is None else f"[{iv.lo:+.1f}, {iv.hi:+.1f}]",
                "resolved": "yes" if resolved else "no" if iv.lo is not None else "one seed",
            }
        )
    return pd.DataFrame(rows)


def verdicts(values: Mapping[str, Mapping[int, float]]) -> list[str]:
    """stats.verdict's sentence for each paired difference."""
    _, diffs = repeats.summarise(values)
    return [stats.verdict(iv, NAMES[a], NAMES[b]) for (a, b), iv in diffs.items() if iv is not None]


def reference_df(ref: object) -> pd.DataFrame:
    """The shipped reference as one table: a row per arm or paired difference, a column per
    budget and student, each cell 'mean ± half-width'."""
    budgets = ref.get("budgets") if isinstance(ref, dict) else None
    if not isinstance(budgets, dict):
        return pd.DataFrame()
    cols: dict[str, dict[str, str]] = {}
    for budget, by_student in budgets.items():
        for student, block in (by_student or {}).items() if isinstance(by_student, dict) else ():
            col = cols.setdefault(f"{budget} steps · {student}", {})
            for k, iv in (block or {}).items() if isinstance(block, dict) else ():
                a, _, b = k.partition("-")
                name = f"{NAMES.get(a, a)} − {NAMES.get(b, b)}" if b else NAMES.get(k, k)
                col[name] = _pm(iv) if not b else _signed(iv)
    return pd.DataFrame(cols).fillna("—")


def _signed(iv: object) -> str:
    if not isinstance(iv, dict) or not all(_isnum(iv.get(k)) for k in ("mean", "lo", "hi")):
        return "?"
    return f"{iv['mean']:+.1f} [{iv['lo']:+.1f}, {iv['hi']:+.1f}]"
