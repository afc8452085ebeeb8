"""The Compare page's run table for display: key columns first (run, method, seed, top-1,
random real, teacher, twin), method names instead of codes, numbers as text with one decimal,
'—' where a run has no value, and no column that no run fills."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from .spread import NAMES

KEY_FIRST = ["run", "method", "seed", "student_top1", "random_real_top1", "teacher_top1", "twin"]
# the top-1 columns of shaping.compare_row (shown with one decimal)
NUMBERS = (
    "student_top1",
    "random_real_top1",
    "teacher_top1",
    "bssl_top1",
    "eval_top1",
    "hard_top1",
    "random_real_hard_top1",
)


def display_table(rows: list[dict], numbers: Iterable[str] = NUMBERS) -> pd.DataFrame:
    """compare_row dicts (plus seed and twin) -> the table the page shows; `numbers` are the
    columns shown with one decimal."""
    numbers = set(numbers)
    df = pd.DataFrame(rows)
    df = df[[c for c in KEY_FIRST if c in df] + [c for c in df if c not in KEY_FIRST]]
    df = df.dropna(axis=1, how="all")
    if "method" in df:
        df["method"] = df["method"].map(lambda m: NAMES.get(m, m))
    for c in df:
        if c in numbers:
            df[c] = df[c].map(lambda v: "—" if pd.isna(v) else f"{v:.1f}")
        else:
            df[c] = df[c].map(lambda v: "—" if v is None or v != v else str(v))
    return df
