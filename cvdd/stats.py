"""Error bars for repeated runs: the mean of a few seeds with its 95 % interval (Student's t), and
paired (same-seed) differences. Pure Python: the app, the CLI and the benchmarks share it.

A seed changes the initial patches, recover's augmentation, the student's initialisation and its
batches; runs that differ only in seed are repeats of one experiment, and comparisons between
methods pair runs of the same seed (docs/method.md §11).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["Interval", "t975", "interval", "paired", "verdict", "softmax_weights"]

# two-sided 95 % quantiles of Student's t for 1..30 degrees of freedom (standard tables)
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t975(df: int) -> float:
    """The 97.5 % quantile of Student's t with `df` degrees of freedom (table to 30, then the
    Cornish-Fisher expansion around the normal quantile, within 1e-3 there)."""
    if df < 1:
        raise ValueError("an interval needs at least two values")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclass(frozen=True)
class Interval:
    """Mean of n values with a 95 % t interval (lo, hi); sd is the sample standard deviation.
    With one value, sd/lo/hi are None: one seed has no error bar."""

    mean: float
    n: int
    sd: float | None
    lo: float | None
    hi: float | None

    @property
    def half(self) -> float | None:
        return None if self.lo is None else (self.hi - self.lo) / 2

    def text(self, digits: int = 1, unit: str = "") -> str:
        if self.half is None:
            return f"{self.mean:.{digits}f}{unit} (n = 1, no interval)"
        return f"{self.mean:.{digits}f}{unit} ± {self.half:.{digits}f} (95 % CI, n = {self.n})"


def interval(values: list[float]) -> Interval | None:
    """The mean with its 95 % t interval; None for no values."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return None
    m = statistics.fmean(vals)
    if len(vals) == 1:
        return Interval(m, 1, None, None, None)
    sd = statistics.stdev(vals)
    h = t975(len(vals) - 1) * sd / math.sqrt(len(vals))
    return Interval(m, len(vals), sd, m - h, m + h)


def paired(a: dict, b: dict) -> Interval | None:
    """a[seed] - b[seed] over the seeds both have: the paired difference and its interval."""
    return interval([a[s] - b[s] for s in sorted(set(a) & set(b))])


def verdict(diff: Interval | None, a: str, b: str, unit: str = "points") -> str:
    """Plain words for a paired difference a - b: resolved when the interval excludes 0."""
    if diff is None:
        return f"{a} vs {b}: no seed has both"
    if diff.lo is None:
        return f"{a} - {b} = {diff.mean:+.1f} {unit} on one seed: repeat it to know"
    span = f"{diff.mean:+.1f} {unit}, 95 % CI [{diff.lo:+.1f}, {diff.hi:+.1f}], n = {diff.n}"
    if diff.lo > 0:
        return f"{a} beats {b}: {span} (resolved)"
    if diff.hi < 0:
        return f"{b} beats {a}: {span} (resolved)"
    return f"{a} vs {b}: {span}; the interval includes 0, so not resolved at this n"


def softmax_weights(priors: Mapping, members: Iterable[str], temperature: float) -> dict:
    """softmax(alpha / T) over the given members that have a prior (paper Eq. 5): the voting
    weights recover gives them when they vote together (docs/method.md §5.4)."""
    ms = [m for m in members if m in priors]
    if not ms:
        return {}
    a = [float(priors[m]) / max(float(temperature), 1e-9) for m in ms]
    top = max(a)
    e = [math.exp(x - top) for x in a]
    return {m: x / sum(e) for m, x in zip(ms, e)}
