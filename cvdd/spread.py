"""The seed spread in words, beside a single run's top-1: from its repeat group when it has two or
more finished seeds, else from the shipped reference assets/reference_spread.json (written by
benchmarks/make_reference.py). One seed is not a result (docs/method.md §11).

Pure and torch-free: the app's pages (app/shaping/spread.py) and the HTML report share it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import repeats
from .utils import read_json

__all__ = [
    "NAMES",
    "REFERENCE",
    "NO_REFERENCE",
    "read_reference",
    "experiment_values",
    "group_text",
    "reference_block",
    "reference_text",
    "pm",
    "is_number",
]

# display names of the arms (the CLI writes SRe2L++, pages and the report SRe²L++)
NAMES = {**repeats.METHOD_NAMES, "sre2l++": "SRe²L++", "sre2l": "SRe²L++"}
NAMES["init"] = "initial images (no recover)"
# the reference's arms shown beside a run, and its paired differences worth a word
REF_ARMS = ("cvdd", "sre2l", "real", "init")
REF_DIFFS = {"cvdd-sre2l": ("CV-DD", "SRe²L++"), "cvdd-real": ("CV-DD", "random real")}
REFERENCE = Path(__file__).resolve().parent.parent / "assets" / "reference_spread.json"
NO_REFERENCE = "no reference spread shipped (assets/reference_spread.json)"


def read_reference(path: str | Path = REFERENCE) -> dict | None:
    """The shipped reference spread (benchmarks/sweep.py's summary), or None."""
    doc = read_json(path)
    return doc if isinstance(doc, dict) else None


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


def group_text(values: Mapping[str, Mapping[int, float]], method: str | None) -> str | None:
    """'over 3 seeds of this setting: CV-DD 72.1 ± 1.3, ...' when the run's own method has two
    or more finished seeds; else None (the caller falls back on the reference)."""
    arms, _ = repeats.summarise(values)
    if method not in arms or arms[method].n < 2:
        return None
    parts = [f"{NAMES[a]} {pm(iv)}" for a, iv in arms.items() if iv.n >= 2]
    return (
        f"Over {arms[method].n} seeds of this setting: "
        + ", ".join(parts)
        + f" (95 % interval); seeds differ by about ± {arms[method].sd:.1f} points (sd)."
    )


def pm(iv: Any) -> str:
    """'72.1 ± 1.3' from a cvdd.stats.Interval or a reference interval dict."""
    if isinstance(iv, dict):
        mean, lo, hi = iv.get("mean"), iv.get("lo"), iv.get("hi")
    else:
        mean, lo, hi = iv.mean, iv.lo, iv.hi
    if not is_number(mean):
        return "?"
    if not (is_number(lo) and is_number(hi)):
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {(hi - lo) / 2:.1f}"


def is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def reference_block(
    ref: object,
    *,
    preset: str | None,
    budget: object,
    student: str | None,
    dataset: str | None = "builtin",
) -> tuple[dict | None, str]:
    """The reference's block for this preset, data set, recover budget and student, or None
    with the reason in words."""
    if not isinstance(ref, dict) or not isinstance(ref.get("budgets"), dict):
        return None, NO_REFERENCE
    if (dataset or "builtin") != ref.get("dataset", "builtin"):
        return None, (
            "the shipped reference spread is for the built-in Fashion-MNIST subset, not this "
            "data set; repeat this run over seeds to see its spread"
        )
    if preset not in (ref.get("presets") or [ref.get("preset")]):
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


def reference_text(
    ref: object,
    *,
    preset: str | None,
    budget: object,
    student: str | None,
    dataset: str | None = "builtin",
) -> str:
    """'At this budget (120 recover steps, resnet18 student), over 8 seeds: CV-DD 72.1 ± 1.3,
    ...; CV-DD − SRe2L++ +1.2 [−0.3, +2.7], not resolved.' or why there is none."""
    block, why = reference_block(
        ref, preset=preset, budget=budget, student=student, dataset=dataset
    )
    if block is None:
        return why[:1].upper() + why[1:] + "."
    n = ref.get("n_seeds", "?")
    arms = [f"{NAMES[k]} {pm(block[k])}" for k in REF_ARMS if isinstance(block.get(k), dict)]
    text = (
        f"At this budget ({budget} recover steps, {student} student), over {n} seeds: "
        + ", ".join(arms)
        + " (95 % interval)"
    )
    sd = (block.get("cvdd") or {}).get("sd")
    if is_number(sd):
        text += f"; one seed lands within about ± {2 * sd:.1f} points of the mean"
    diffs = []
    for key, (a, b) in REF_DIFFS.items():
        d = block.get(key)
        if isinstance(d, dict) and all(is_number(d.get(k)) for k in ("mean", "lo", "hi")):
            word = "resolved" if d["lo"] > 0 or d["hi"] < 0 else "not resolved"
            diffs.append(f"{a} − {b} {d['mean']:+.1f} [{d['lo']:+.1f}, {d['hi']:+.1f}], {word}")
    return text + (". Paired: " + "; ".join(diffs) if diffs else "") + "."
