"""The statistics behind the rollout's gates: intervals with a stated confidence, and the
sequential rule that spends the false-rollback budget over the looks.

Pure functions of counts (numpy and scipy, no I/O), called by
:mod:`bertops.operator.rollout.gates` at every analysis and by
``benchmarks/rollout_judge.py``'s simulations.

- Rates (error rate, feedback accuracy): Wilson score intervals
  (``scipy.stats.binomtest(...).proportion_ci(method="wilson")``).
- A difference of two independent rates (canary against stable error rate): Newcombe's
  hybrid score interval, built from the two Wilson intervals (Newcombe 1998, method 10).
- A paired difference of accuracies (both models judged on the same labelled texts):
  Newcombe's interval for paired proportions, see :func:`paired_difference`.
- Label distributions: Pearson's chi-square test of the 2 x k table
  (``scipy.stats.chi2_contingency``) and a bootstrap interval of the Jensen-Shannon
  distance.
- Latency ratios and p95s: a parametric bootstrap over the latency histograms (the
  gateway exports buckets, not raw times), with Prometheus' interpolation per resample.

The sequential rule (:func:`next_look`, :func:`look_alpha`): a look happens each time the
canary's traffic has grown by half since the last one, and look ``k`` of a rollout may
spend ``alpha / (k (k + 1))``, shared equally by the gates that can fail; only a look may
fail a gate. These terms sum to
``alpha`` over any number of looks, so by the union bound the chance that any gate ever
rolls back a canary as good as stable stays at or below ``alpha``, however often the
operator looks. This is an alpha-spending sequence in the sense of Lan and DeMets
(1983, "Discrete sequential boundaries for clinical trials", Biometrika 70(3)); being a
union bound it is conservative, and it needs no assumption about how looks correlate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from scipy.stats import binomtest, chi2_contingency

from bertops.operator.rollout.metrics import histogram_quantile

RESAMPLES = 1000
SEED = 20261207  # fixed: the same counts always give the same interval


@dataclass(frozen=True)
class Interval:
    estimate: float
    lower: float
    upper: float
    level: float  # two-sided coverage, e.g. 0.99

    @property
    def half_width(self) -> float:
        return (self.upper - self.lower) / 2


LOOK_GROWTH = 1.5  # a new look once the canary served this many times the last look's


def next_look(looks: int, seen: float | None, requests: float, minimum: int) -> tuple[int, bool]:
    """(look number, whether this analysis is a look): the first look once ``minimum``
    requests (at least one) were served, then each time the count has grown by
    :data:`LOOK_GROWTH` since the last look. Analyses in between show the gates but may
    not fail one, so looking every intervalSeconds spends nothing: the number of looks
    grows with the logarithm of the traffic, not with the time."""
    if requests < max(1, minimum):
        return max(looks, 1), False
    if looks == 0 or seen is None or requests >= seen * LOOK_GROWTH:
        return looks + 1, True
    return looks, False


def look_alpha(total: float, look: int, gates: int = 1) -> float:
    """One side's error budget for one gate at look ``look`` (1-based)."""
    k = max(1, look)
    return total / (max(1, gates) * k * (k + 1))


def z_score(alpha: float) -> float:
    """The standard normal quantile that leaves ``alpha`` in one tail."""
    return NormalDist().inv_cdf(1 - alpha)


def rate(successes: float, trials: float, alpha: float) -> Interval:
    """Wilson score interval; each side holds ``alpha`` (two-sided level 1 - 2 alpha)."""
    n = round(trials)
    k = min(n, max(0, round(successes)))
    level = 1 - 2 * alpha
    if n <= 0:
        return Interval(math.nan, 0.0, 1.0, level)
    ci = binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    return Interval(k / n, float(ci.low), float(ci.high), level)


def difference(
    successes_a: float, trials_a: float, successes_b: float, trials_b: float, alpha: float
) -> Interval:
    """Newcombe's hybrid score interval for rate(a) - rate(b), independent samples."""
    a = rate(successes_a, trials_a, alpha)
    b = rate(successes_b, trials_b, alpha)
    estimate = a.estimate - b.estimate
    lower = estimate - math.hypot(a.estimate - a.lower, b.upper - b.estimate)
    upper = estimate + math.hypot(a.upper - a.estimate, b.estimate - b.lower)
    return Interval(estimate, lower, upper, a.level)


def paired_difference(
    both_correct: float, candidate_only: float, stable_only: float, both_wrong: float, alpha: float
) -> Interval:
    """Accuracy(candidate) - accuracy(stable) on the same labelled texts: Newcombe's
    hybrid score interval for paired proportions (Newcombe 1998, "Improved confidence
    intervals for the difference between binomial proportions based on paired data",
    Statistics in Medicine 17, method 10): the two accuracies' Wilson intervals, combined
    with the correlation of the two models' correctness. Models that agree on most texts
    get a narrow interval; few labels get a wide one."""
    a, b, c, d = (max(0.0, x) for x in (both_correct, candidate_only, stable_only, both_wrong))
    n = a + b + c + d
    level = 1 - 2 * alpha
    if n <= 0:
        return Interval(math.nan, -1.0, 1.0, level)
    first = rate(a + b, n, alpha)
    second = rate(a + c, n, alpha)
    spread = (a + b) * (c + d) * (a + c) * (b + d)
    phi = (a * d - b * c) / math.sqrt(spread) if spread > 0 else 0.0
    estimate = first.estimate - second.estimate
    below = (first.estimate - first.lower, second.upper - second.estimate)
    above = (first.upper - first.estimate, second.estimate - second.lower)
    lower = estimate - math.sqrt(
        max(0.0, below[0] ** 2 - 2 * phi * below[0] * below[1] + below[1] ** 2)
    )
    upper = estimate + math.sqrt(
        max(0.0, above[0] ** 2 - 2 * phi * above[0] * above[1] + above[1] ** 2)
    )
    return Interval(estimate, max(-1.0, lower), min(1.0, upper), level)


def label_shift_p_value(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """Pearson chi-square test that two label histograms come from one distribution;
    1.0 when there is nothing to compare (one label, or an empty side)."""
    labels = sorted(label for label in set(a) | set(b) if a.get(label, 0) + b.get(label, 0) > 0)
    if len(labels) < 2 or sum(a.values()) <= 0 or sum(b.values()) <= 0:
        return 1.0
    table = np.array([[a.get(x, 0.0) for x in labels], [b.get(x, 0.0) for x in labels]])
    return float(chi2_contingency(table, correction=False).pvalue)


def js_distance(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    """Jensen-Shannon distance (base 2, so in [0, 1]) between two label histograms."""
    labels = sorted(set(p) | set(q))
    return float(
        _js_rows(
            np.array([[p.get(x, 0.0) for x in labels]]), np.array([[q.get(x, 0.0) for x in labels]])
        )[0]
    )


def _js_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    p_total, q_total = p.sum(axis=1, keepdims=True), q.sum(axis=1, keepdims=True)
    if np.any(p_total <= 0) or np.any(q_total <= 0):
        raise ValueError("both histograms need at least one count")
    p, q = p / p_total, q / q_total
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log2(p / m), 0.0).sum(axis=1)
        kl_q = np.where(q > 0, q * np.log2(q / m), 0.0).sum(axis=1)
    return np.sqrt(np.maximum(0.0, (kl_p + kl_q) / 2))  # rounding can leave a tiny negative


def js_interval(a: Mapping[str, float], b: Mapping[str, float], alpha: float) -> Interval:
    """Bootstrap percentile interval of the JS distance (multinomial resamples of both)."""
    labels = sorted(set(a) | set(b))
    counts_a = np.array([a.get(x, 0.0) for x in labels])
    counts_b = np.array([b.get(x, 0.0) for x in labels])
    rng = np.random.default_rng(SEED)
    draws_a = _resample(rng, counts_a)
    draws_b = _resample(rng, counts_b)
    values = _js_rows(draws_a.astype(float) + 1e-12, draws_b.astype(float) + 1e-12)
    return _percentiles(js_distance(a, b), values, alpha)


def _resample(rng: np.random.Generator, counts: np.ndarray) -> np.ndarray:
    n = round(float(counts.sum()))
    return rng.multinomial(n, counts / counts.sum(), size=RESAMPLES)


def _percentiles(estimate: float, values: np.ndarray, alpha: float) -> Interval:
    """The percentile interval, widened to hold the estimate (a resample of a one-bucket
    histogram can differ from it in the last bit)."""
    lower, upper = np.quantile(values, [alpha, 1 - alpha])
    return Interval(
        estimate, min(float(lower), estimate), max(float(upper), estimate), 1 - 2 * alpha
    )


Buckets = Sequence[tuple[float, float]]  # (upper bound in seconds, cumulative count)


def _bucket_counts(buckets: Buckets) -> tuple[np.ndarray, np.ndarray]:
    """Bounds and per-bucket (not cumulative) counts, in order."""
    ordered = sorted(buckets)
    bounds = np.array([b for b, _ in ordered])
    cumulative = np.maximum.accumulate(np.array([c for _, c in ordered], dtype=float))
    return bounds, np.diff(cumulative, prepend=0.0)


def _quantiles(bounds: np.ndarray, draws: np.ndarray, q: float) -> np.ndarray:
    """:func:`~bertops.operator.rollout.metrics.histogram_quantile` (Prometheus' rule, the
    estimate's one home) for each row of resampled per-bucket counts at once: linear
    interpolation inside the bucket that holds the rank; the highest finite bound when
    the rank falls in +Inf."""
    cumulative = draws.cumsum(axis=1)
    rank = q * cumulative[:, -1:]
    index = (cumulative >= rank).argmax(axis=1)
    rows = np.arange(len(draws))
    finite = bounds[np.isfinite(bounds)]
    upper_bound = np.where(np.isfinite(bounds[index]), bounds[index], finite[-1])
    lower_bound = np.where(index > 0, bounds[np.maximum(index - 1, 0)], 0.0)
    lower_bound = np.where(np.isfinite(lower_bound), lower_bound, finite[-1])
    below = np.where(index > 0, cumulative[rows, np.maximum(index - 1, 0)], 0.0)
    inside = draws[rows, index]
    share = np.where(inside > 0, (rank[:, 0] - below) / np.where(inside > 0, inside, 1), 1.0)
    value = lower_bound + (upper_bound - lower_bound) * share
    return np.where(np.isfinite(bounds[index]), value, lower_bound)


def quantile_interval(buckets: Buckets, q: float, alpha: float) -> Interval | None:
    """Bootstrap interval of a histogram's q-quantile (seconds); None without counts."""
    bounds, counts = _bucket_counts(buckets)
    if counts.sum() <= 0:
        return None
    rng = np.random.default_rng(SEED)
    values = _quantiles(bounds, _resample(rng, counts), q)
    return _percentiles(histogram_quantile(q, buckets) or 0.0, values, alpha)


def quantile_ratio_interval(
    canary: Buckets, stable: Buckets, q: float, alpha: float, floor: float = 0.0
) -> Interval | None:
    """Bootstrap interval of canary q-quantile / max(stable q-quantile, floor), both
    histograms resampled independently; None when a side has no counts."""
    bounds_c, counts_c = _bucket_counts(canary)
    bounds_s, counts_s = _bucket_counts(stable)
    if counts_c.sum() <= 0 or counts_s.sum() <= 0:
        return None
    rng = np.random.default_rng(SEED)
    top = _quantiles(bounds_c, _resample(rng, counts_c), q)
    bottom = np.maximum(_quantiles(bounds_s, _resample(rng, counts_s), q), floor)
    estimate = (histogram_quantile(q, canary) or 0.0) / max(
        histogram_quantile(q, stable) or 0.0, floor, 1e-12
    )
    return _percentiles(estimate, top / np.maximum(bottom, 1e-12), alpha)


def more_needed(interval: Interval, threshold: float, samples: float) -> int | None:
    """About how many more samples until the interval clears ``threshold`` on the side of
    its estimate, if the estimate holds: the half of the interval facing the threshold
    shrinks like 1/sqrt(n) (an overestimate for a rate near 0, whose Wilson bound shrinks
    like 1/n). None when the estimate sits on the threshold (no amount decides it) or
    nothing was sampled."""
    if samples <= 0 or math.isnan(interval.estimate):
        return None
    distance = abs(interval.estimate - threshold)
    if distance <= 1e-12:
        return None
    facing = (
        interval.upper - interval.estimate
        if interval.estimate < threshold
        else interval.estimate - interval.lower
    )
    total = samples * (facing / distance) ** 2
    return max(1, math.ceil(total - samples))
