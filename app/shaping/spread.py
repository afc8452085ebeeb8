"""Seed spread for the pages: a repeat group's means, intervals and paired differences as tables,
and the sentence a single run's number carries (from its group, else from the shipped reference
assets/reference_spread.json). Pure: no streamlit, no torch (tests/test_repeats.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

import cvdd.repeats as repeats  # torch-free (tests/test_layering.py)
import cvdd.stats as stats

# the app writes SRe²L++ as its other pages do (the CLI: SRe2L++)
NAMES = {**repeats.METHOD_NAMES, "sre2l++": "SRe²L++", "sre2l": "SRe²L++"}
NAMES["init"] = "initial images (no recover)"
# the reference's arms shown beside a run, and its paired differences worth a word
REF_ARMS = ("cvdd", "sre2l", "real", "init")
REF_DIFFS = {"cvdd-sre2l": ("CV-DD", "SRe²L++"), "cvdd-real": ("CV-DD", "random real")}
NO_REFERENCE = "no reference spread shipped (assets/reference_spread.json)"


def experiment_values(
    exp: Mapping[str, list[str]], docs: Mapping[str, Any], results: Mapping[str, Any]
) -> dict[str, dict[int, float]]:
    """{arm: {seed: top-1}} over an experiment's runs (cvdd.repeats.experiment_runs); runs
    without a result yet are skipped."""
    entries = [
        (m, repeats.seed_of(docs.get(rid)), results.get(rid))
        for m, rids in exp.items()
        for rid in rids
    ]
    return repeats.seed_values(entries)


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


def group_text(values: Mapping[str, Mapping[int, float]], method: str | None) -> str | None:
    """'over 3 seeds of this setting: CV-DD 72.1 ± 1.3, ...' when the run's own method has two
    or more finished seeds; else None (the caller falls back on the reference)."""
    arms, _ = repeats.summarise(values)
    if method not in arms or arms[method].n < 2:
        return None
    parts = [f"{NAMES[a]} {_pm(iv)}" for a, iv in arms.items() if iv.n >= 2]
    return (
        f"Over {arms[method].n} seeds of this setting: "
        + ", ".join(parts)
        + f" (95 % interval); seeds differ by about ± {arms[method].sd:.1f} points (sd)."
    )


def _pm(iv: Any) -> str:
    """'72.1 ± 1.3' from an Interval or a reference IV dict."""
    if isinstance(iv, dict):
        mean, lo, hi = iv.get("mean"), iv.get("lo"), iv.get("hi")
    else:
        mean, lo, hi = iv.mean, iv.lo, iv.hi
    if not _isnum(mean):
        return "?"
    return f"{mean:.1f}" if not (_isnum(lo) and _isnum(hi)) else f"{mean:.1f} ± {(hi - lo) / 2:.1f}"


def _isnum(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def reference_block(
    ref: object, *, preset: str | None, budget: object, student: str | None
) -> tuple[dict | None, str]:
    """The reference's block for this preset, recover budget and student, or None with the
    reason in words."""
    if not isinstance(ref, dict) or not isinstance(ref.get("budgets"), dict):
        return None, NO_REFERENCE
    if ref.get("preset") != preset:
        return None, (
            f"the shipped reference spread is for the {ref.get('preset')!s} preset, not "
            f"{preset!s}; repeat this run over seeds to see its spread"
        )
    shipped = ", ".join(str(k) for k in ref["budgets"])
    block = ref["budgets"].get(str(budget))
    block = block.get(str(student)) if isinstance(block, dict) else None
    if not isinstance(block, dict):
        return None, (
            f"no reference spread for {budget} recover steps and a {student} student "
            f"(shipped: {shipped} steps); repeat this run over seeds to see its spread"
        )
    return block, ""


def reference_text(ref: object, *, preset: str | None, budget: object, student: str | None) -> str:
    """'At this budget (120 recover steps, resnet18 student), over 8 seeds: CV-DD 72.1 ± 1.3,
    ...; CV-DD − SRe2L++ +1.2 [−0.3, +2.7], not resolved.' or why there is none."""
    block, why = reference_block(ref, preset=preset, budget=budget, student=student)
    if block is None:
        return why[:1].upper() + why[1:] + "."
    n = ref.get("n_seeds", "?")
    arms = [f"{NAMES[k]} {_pm(block[k])}" for k in REF_ARMS if isinstance(block.get(k), dict)]
    text = (
        f"At this budget ({budget} recover steps, {student} student), over {n} seeds: "
        + ", ".join(arms)
        + " (95 % interval)"
    )
    sd = (block.get("cvdd") or {}).get("sd")
    if _isnum(sd):
        text += f"; one seed lands within about ± {2 * sd:.1f} points of the mean"
    diffs = []
    for key, (a, b) in REF_DIFFS.items():
        d = block.get(key)
        if isinstance(d, dict) and all(_isnum(d.get(k)) for k in ("mean", "lo", "hi")):
            word = "resolved" if d["lo"] > 0 or d["hi"] < 0 else "not resolved"
            diffs.append(f"{a} − {b} {d['mean']:+.1f} [{d['lo']:+.1f}, {d['hi']:+.1f}], {word}")
    return text + (". Paired: " + "; ".join(diffs) if diffs else "") + "."


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
