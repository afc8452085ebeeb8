"""cvdd.stats: the 95 % t interval and paired differences behind every error bar."""

from __future__ import annotations

import math

import pytest

from cvdd.stats import interval, paired, t975, verdict


def test_interval_is_the_t_interval_of_the_mean():
    iv = interval([1.0, 2.0, 3.0])
    assert (iv.mean, iv.n, iv.sd) == (2.0, 3, 1.0)
    assert iv.half == pytest.approx(4.303 / math.sqrt(3))
    assert interval([5.0]).lo is None and interval([]) is None
    assert "n = 1" in interval([5.0]).text()


def test_t_quantile_table_and_expansion_meet():
    assert t975(1) == 12.706 and t975(30) == 2.042
    assert t975(31) == pytest.approx(2.0395, abs=1e-3) and t975(1000) == pytest.approx(1.962, 1e-3)
    with pytest.raises(ValueError):
        t975(0)


def test_paired_uses_only_common_seeds_and_the_verdict_reads_the_interval():
    a, b = {0: 70.0, 1: 72.0, 2: 71.0, 9: 50.0}, {0: 68.0, 1: 69.5, 2: 68.5}
    d = paired(a, b)
    assert d.n == 3 and d.mean == pytest.approx(7 / 3)
    assert "CV-DD beats SRe2L++" in verdict(d, "CV-DD", "SRe2L++")
    noisy = paired({0: 70.0, 1: 60.0}, {0: 65.0, 1: 66.0})
    assert "not resolved" in verdict(noisy, "CV-DD", "SRe2L++")
    assert "one seed" in verdict(paired({0: 1.0}, {0: 0.0}), "a", "b")
