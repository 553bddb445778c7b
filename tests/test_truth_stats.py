"""src/stats.py against the textbook formulas, written out here: mean ± t·sd/√n, the paired and
the Welch t test (statistic, Welch–Satterthwaite degrees of freedom, two-sided p, interval of
the difference), Holm's step-down adjustment, the prediction interval. Only the Student t
distribution itself (quantile, cdf) comes from scipy; src/stats.py uses scipy's tests."""

from __future__ import annotations

import math

import pytest
from scipy.stats import t as student_t

from src.stats import compare, holm, mean_and_band, prediction_interval, summarize

Q = 0.975  # two-sided 95 %


def mean(v):
    return sum(v) / len(v)


def sd(v):
    m = mean(v)
    return math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))


@pytest.mark.parametrize("values", [[0.80, 0.84], [0.80, 0.84, 0.81, None, float("nan")]])
def test_summary_is_mean_plus_minus_t_sd_over_sqrt_n(values):
    v = [x for x in values if x is not None and math.isfinite(x)]
    s = summarize(values)
    half = student_t.ppf(Q, len(v) - 1) * sd(v) / math.sqrt(len(v))
    assert (s.n, s.min, s.max) == (len(v), min(v), max(v))
    assert s.mean == pytest.approx(mean(v), abs=1e-15) and s.sd == pytest.approx(sd(v), rel=1e-12)
    assert (s.ci_low, s.ci_high) == pytest.approx((mean(v) - half, mean(v) + half), rel=1e-10)
    assert s.half_width == pytest.approx(half, rel=1e-10)


def test_summary_of_one_and_of_identical_values():
    one = summarize([0.8])
    assert (one.n, one.mean, one.sd, one.ci_low, one.half_width) == (1, 0.8, None, None, None)
    same = summarize([0.75, 0.75, 0.75])
    assert (same.sd, same.ci_low, same.ci_high, same.half_width) == (0.0, 0.75, 0.75, 0.0)  # ±0.00, not "1 seed"
    assert summarize([None, float("inf")]).n == 0


def test_the_interval_is_cut_to_the_values_the_metric_can_take():
    v = [2.0, 4.0, 300.0]  # wall seconds of three jobs, one on a busy machine
    half = student_t.ppf(Q, 2) * sd(v) / math.sqrt(3)
    assert mean(v) - half < 0  # Student t alone says the mean may be negative
    s = summarize(v, bounds=(0.0, math.inf))
    assert (s.ci_low, s.ci_high) == pytest.approx((0.0, mean(v) + half), rel=1e-12)
    assert (s.mean, s.sd) == (summarize(v).mean, summarize(v).sd)  # only the interval is cut
    s = summarize([36.0, 39.0, 30.0], bounds=(0.0, 39.0))  # best epoch of a 40-epoch run
    assert s.ci_high == 39.0 and s.ci_low == pytest.approx(summarize([36.0, 39.0, 30.0]).ci_low, rel=1e-12)
    v = [0.80, 0.84, 0.81, 0.83]
    inside = summarize(v, bounds=(0.0, 1.0))  # an interval inside the bounds is unchanged
    assert (inside.ci_low, inside.ci_high) == (summarize(v).ci_low, summarize(v).ci_high)


def test_paired_t_by_hand():
    a, b = {1: 0.80, 2: 0.82, 3: 0.81}, {1: 0.83, 2: 0.86, 3: 0.82}
    d = [b[s] - a[s] for s in (1, 2, 3)]
    se = sd(d) / math.sqrt(3)
    stat = mean(d) / se
    r = compare(a, b)
    assert r.test == "paired t" and (r.n_a, r.n_b) == (3, 3)
    assert r.diff == pytest.approx(mean(d), abs=1e-12)
    assert r.p == pytest.approx(2 * student_t.sf(abs(stat), 2), rel=1e-9)
    half = student_t.ppf(Q, 2) * se
    assert (r.ci_low, r.ci_high) == pytest.approx((mean(d) - half, mean(d) + half), rel=1e-9)


@pytest.mark.parametrize("a, b", [
    ({1: 0.80, 2: 0.82, 3: 0.81}, {4: 0.85, 5: 0.88}),
    ({1: 0.80, 2: 0.80}, {3: 0.85, 4: 0.88}),  # no spread in a only: still testable
    ({1: 0.80, 2: 0.82}, {3: 0.85, 4: 0.85}),  # no spread in b only
])
def test_welch_t_by_hand(a, b):
    va, vb = list(a.values()), list(b.values())
    qa, qb = sd(va) ** 2 / len(va), sd(vb) ** 2 / len(vb)
    se = math.sqrt(qa + qb)
    df = (qa + qb) ** 2 / (qa**2 / (len(va) - 1) + qb**2 / (len(vb) - 1))
    diff = mean(vb) - mean(va)
    r = compare(a, b)
    assert r.test == "Welch t"
    assert r.diff == pytest.approx(diff, abs=1e-12)
    assert r.p == pytest.approx(2 * student_t.sf(abs(diff / se), df), rel=1e-9)
    half = student_t.ppf(Q, df) * se
    assert (r.ci_low, r.ci_high) == pytest.approx((diff - half, diff + half), rel=1e-9)


def test_what_cannot_be_tested_says_why():
    flat = compare({1: 0.8, 2: 0.8}, {3: 0.9, 4: 0.9})
    assert (flat.test, flat.p, flat.ci_low) == ("not tested: no spread within either group", None, None)
    assert flat.diff == pytest.approx(0.1)
    # 0.125 is exact in binary: every seed moves by exactly the same amount
    same = compare({1: 0.5, 2: 0.75}, {1: 0.625, 2: 0.875})
    assert same.test == "not tested: identical difference on every seed"
    assert (same.p, same.ci_low, same.ci_high, same.diff) == (None, 0.125, 0.125, 0.125)
    one = compare({1: 0.8}, {1: 0.9, 2: 0.91})
    assert one.test == "not tested: needs 2 or more seeds on each side" and one.p is None
    assert one.diff == pytest.approx(0.105) and (one.n_a, one.n_b) == (1, 2)


@pytest.mark.parametrize("p, adjusted", [
    ([0.01, 0.04, 0.03], [0.03, 0.06, 0.06]),  # 3·0.01, max(3·0.01, 2·0.03), max(0.06, 1·0.04)
    ([0.6, 0.7], [1.0, 1.0]),  # capped at 1
    ([0.02], [0.02]),
    ([], []),
])
def test_holm_by_hand(p, adjusted):
    assert holm(p) == pytest.approx(adjusted, abs=1e-15)


def test_prediction_interval_by_hand():
    v = [0.80, 0.84, 0.82]
    half = student_t.ppf(Q, 2) * sd(v) * math.sqrt(1 + 1 / 3)
    assert prediction_interval(summarize(v)) == pytest.approx((mean(v) - half, mean(v) + half), rel=1e-10)
    assert prediction_interval(summarize([0.8])) is None


@pytest.mark.parametrize("rows", [
    [[0.80, 0.50, 0.7], [0.84, 0.50, 0.9]],
    [[0.80, 0.50, 0.7], [0.84, 0.52, 0.9], [0.82, 0.60, 0.8]],
])
def test_band_is_the_t_half_width_per_column(rows):
    means, band = mean_and_band(rows)
    n = len(rows)
    for j in range(len(rows[0])):
        col = [r[j] for r in rows]
        assert means[j] == pytest.approx(mean(col), abs=1e-15)
        assert band[j] == pytest.approx(student_t.ppf(Q, n - 1) * sd(col) / math.sqrt(n), rel=1e-10, abs=1e-15)
    single_mean, single_band = mean_and_band([[0.8, 0.5]])
    assert list(single_mean) == [0.8, 0.5] and list(single_band) == [0.0, 0.0]


def test_a_heatmap_cell_shows_the_cut_interval_not_a_half_width_past_100():
    from src.report import _plus_minus

    v = [0.99, 0.97]  # 2 seeds: mean 98 %, t half-width 12.71 pt, so ± would read 85.29-110.71 %
    assert _plus_minus(summarize(v)) == f"±{100 * summarize(v).half_width:.2f}"
    cut = summarize(v, bounds=(0.0, 1.0))
    assert _plus_minus(cut) == f"[{100 * cut.ci_low:.2f}, 100.00]"
    inside = summarize([0.80, 0.84, 0.81, 0.83], bounds=(0.0, 1.0))
    assert _plus_minus(inside) == f"±{100 * inside.half_width:.2f}"
    assert _plus_minus(summarize([0.8], bounds=(0.0, 1.0))) == "1 seed"
    assert _plus_minus(summarize([0.8, 0.8], bounds=(0.0, 1.0))) == "±0.00"
