"""The statistics of the sweep report, on plain numbers (no jobs, no files).

- `summarize`: n, mean, standard deviation, 95 % Student-t interval of the mean, min, max.
- `compare`: difference of two groups' means with its 95 % interval and p-value; a paired t
  test when both groups ran the same seeds (seed-to-seed noise cancels), Welch's t test
  otherwise. scipy.stats does the distributions and the tests.
- `holm`: Holm's step-down adjustment of p-values for the number of comparisons made.
- `tolerance_range`: the stretch of a curve (e.g. accuracy vs learning rate) whose mean stays
  within `tol` of its best mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
# The significance level the verdicts test at, written out: 1 - 0.95 is 0.050000000000000044 in
# floating point, and a Holm-adjusted p of exactly 0.05 (e.g. 0.0125 x 4) must not count as below it.
ALPHA = 0.05


@dataclass
class Summary:
    n: int
    mean: float | None = None
    sd: float | None = None  # None for n < 2
    ci_low: float | None = None  # None for n < 2: one seed gives no interval
    ci_high: float | None = None
    min: float | None = None
    max: float | None = None
    half_width: float | None = None  # t · sd / √n, the `±` of the mean (the interval may be cut)


def summarize(values: list[float], confidence: float = CONFIDENCE,
              bounds: tuple[float, float] | None = None) -> Summary:
    """Mean, sd, range and the Student-t interval of the mean. `bounds`: the values the metric
    can take (an accuracy [0, 1], seconds [0, inf)); the interval is cut to them, as the mean
    lies inside, so the cut interval covers it at least as often (no `seconds [-75, 292]`)."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if len(x) == 0:
        return Summary(n=0)
    s = Summary(n=len(x), mean=float(x.mean()), min=float(x.min()), max=float(x.max()))
    if len(x) >= 2:
        s.sd = float(x.std(ddof=1))
        sem = s.sd / math.sqrt(len(x))
        if sem == 0:  # identical values: the interval is the point itself
            s.ci_low = s.ci_high = s.mean
            s.half_width = 0.0
        else:
            s.ci_low, s.ci_high = (float(v) for v in
                                   stats.t.interval(confidence, df=len(x) - 1, loc=s.mean, scale=sem))
            s.half_width = (s.ci_high - s.ci_low) / 2
            if bounds is not None:
                s.ci_low, s.ci_high = max(s.ci_low, bounds[0]), min(s.ci_high, bounds[1])
    return s


@dataclass
class Difference:
    """b − a: difference of means, its interval, and the test that gave the p-value."""

    diff: float
    ci_low: float | None
    ci_high: float | None
    p: float | None  # None: not testable (fewer than 2 values on a side, or no spread at all)
    test: str  # "paired t" | "Welch t" | reason it was not tested
    n_a: int
    n_b: int


def compare(a: dict, b: dict, confidence: float = CONFIDENCE) -> Difference:
    """Compare b with a; `a` and `b` map seed -> value. Paired by seed when both ran exactly the
    same seeds, Welch's unequal-variance t test otherwise."""
    va, vb = np.array(list(a.values()), float), np.array(list(b.values()), float)
    diff = float(vb.mean() - va.mean()) if len(va) and len(vb) else math.nan
    result = Difference(diff, None, None, None, "", len(va), len(vb))
    if len(va) < 2 or len(vb) < 2:
        result.test = "not tested: needs 2 or more seeds on each side"
        return result
    paired = set(a) == set(b)
    if paired:
        seeds = sorted(a)
        d = np.array([b[s] - a[s] for s in seeds], float)
        result.test = "paired t"
        if np.ptp(d) == 0:  # every seed moved by the same amount: t is undefined
            result.ci_low = result.ci_high = float(d[0])
            result.test = "not tested: identical difference on every seed"
            return result
        res = stats.ttest_rel([b[s] for s in seeds], [a[s] for s in seeds])
    else:
        result.test = "Welch t"
        if np.ptp(va) == 0 and np.ptp(vb) == 0:
            result.test = "not tested: no spread within either group"
            return result
        res = stats.ttest_ind(vb, va, equal_var=False)
    ci = res.confidence_interval(confidence)
    result.ci_low, result.ci_high, result.p = float(ci.low), float(ci.high), float(res.pvalue)
    return result


def holm(pvalues: list[float]) -> list[float]:
    """Holm-adjusted p-values, in the input order: the k-th smallest p is multiplied by
    (m − k + 1), then made monotone; `adjusted < 0.05` keeps the family-wise error ≤ 5 %."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


@dataclass
class Tolerance:
    best: int  # index of the best point
    low: int  # first and last index of the tolerant stretch around it
    high: int
    width: float  # in decades on a log axis, in x units otherwise
    open_low: bool  # the stretch reaches the grid's edge: the true width may be larger
    open_high: bool


def tolerance_range(x: list[float], mean: list[float | None], clean: list[bool], tol: float,
                    log: bool) -> Tolerance | None:
    """The contiguous stretch of grid points around the best one whose mean is within `tol` of
    the best mean. `x` is sorted; a point with no mean, or with a diverged/failed job
    (`clean` False), is never tolerant and ends the stretch. None if no point is usable."""
    usable = [i for i in range(len(x)) if clean[i] and mean[i] is not None]
    if not usable:
        return None
    best = max(usable, key=lambda i: mean[i])
    ok = [i in usable and mean[i] >= mean[best] - tol for i in range(len(x))]
    low = best
    while low > 0 and ok[low - 1]:
        low -= 1
    high = best
    while high < len(x) - 1 and ok[high + 1]:
        high += 1
    width = math.log10(x[high] / x[low]) if log else x[high] - x[low]
    return Tolerance(best, low, high, width, open_low=low == 0, open_high=high == len(x) - 1)


def prediction_interval(s: Summary, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Where one more run (one new seed) falls with `confidence`: mean ± t·sd·√(1 + 1/n).
    The fair yardstick for a single published run, such as the tutorial's one seed."""
    if s.sd is None:
        return None
    half = float(stats.t.ppf((1 + confidence) / 2, df=s.n - 1)) * s.sd * math.sqrt(1 + 1 / s.n)
    return s.mean - half, s.mean + half


def mean_and_band(rows: list[list[float]], confidence: float = CONFIDENCE):
    """Per-column mean and half-width of the Student-t interval over rows (e.g. seeds x epochs);
    the half-width is 0 for a single row."""
    x = np.asarray(rows, dtype=float)
    mean = x.mean(axis=0)
    if len(x) < 2:
        return mean, np.zeros_like(mean)
    t = float(stats.t.ppf((1 + confidence) / 2, df=len(x) - 1))
    return mean, t * x.std(axis=0, ddof=1) / math.sqrt(len(x))
