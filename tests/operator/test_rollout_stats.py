"""The statistics behind the rollout's gates, against published values and by
simulation: Wilson and Newcombe intervals (Newcombe 1998's worked example), the paired
accuracy interval's coverage, the bootstrap quantile agreeing with Prometheus'
interpolation, the look schedule, and the sequential rule keeping the false-rollback
rate of equal models under its budget however many looks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bertops.operator.rollout import stats
from bertops.operator.rollout.metrics import histogram_quantile


def test_wilson_interval_matches_the_textbook_value() -> None:
    # 0 of 100 at 95%: the Wilson upper bound is z^2 / (n + z^2) = 0.0370.
    interval = stats.rate(0, 100, 0.025)
    assert interval.lower == 0 and interval.upper == pytest.approx(0.0370, abs=1e-4)
    assert interval.level == pytest.approx(0.95)


def test_newcombe_difference_matches_the_published_example() -> None:
    # Newcombe (1998), Statistics in Medicine 17, table II: 56/70 - 48/80, method 10.
    interval = stats.difference(56, 70, 48, 80, 0.025)
    assert interval.estimate == pytest.approx(0.2)
    assert interval.lower == pytest.approx(0.0524, abs=5e-4)
    assert interval.upper == pytest.approx(0.3339, abs=5e-4)


def test_paired_interval_covers_the_true_difference() -> None:
    """Two models right on 80% and 75% of texts, agreeing on most: the 95% interval
    misses the true 0.05 in about 5% of samples (an approximate interval: at most 7%)."""
    rng = np.random.default_rng(1)
    truth, alpha, misses, trials = 0.05, 0.025, 0, 1000
    for _ in range(trials):
        # both right 0.70, candidate only 0.10, stable only 0.05, both wrong 0.15
        both, candidate_only, stable_only, neither = rng.multinomial(300, [0.70, 0.10, 0.05, 0.15])
        interval = stats.paired_difference(both, candidate_only, stable_only, neither, alpha)
        misses += not (interval.lower <= truth <= interval.upper)
    assert misses / trials <= 0.07


def test_paired_interval_is_narrow_for_models_that_agree() -> None:
    agreeing = stats.paired_difference(750, 50, 50, 150, 0.001)  # agree on 90%
    independent = stats.difference(800, 1000, 800, 1000, 0.001)  # as if unpaired
    assert agreeing.estimate == 0
    assert agreeing.upper - agreeing.lower < 0.6 * (independent.upper - independent.lower)


def test_identical_answers_on_few_labels_are_not_certainty() -> None:
    interval = stats.paired_difference(8, 0, 0, 2, 0.025)
    assert interval.estimate == 0 and interval.lower < -0.1 and interval.upper > 0.1


@pytest.mark.parametrize(
    "buckets",
    [
        ((0.005, 10), (0.01, 50), (0.025, 90), (0.05, 99), (0.1, 100), (math.inf, 100)),
        ((0.01, 0), (0.05, 3), (0.1, 3), (math.inf, 7)),  # the rank falls in +Inf
        ((0.042, 200), (math.inf, 200)),
    ],
)
def test_bootstrap_quantile_agrees_with_prometheus(
    buckets: tuple[tuple[float, float], ...],
) -> None:
    interval = stats.quantile_interval(buckets, 0.95, 0.01)
    assert interval is not None
    assert interval.estimate == pytest.approx(histogram_quantile(0.95, buckets))
    assert interval.lower <= interval.estimate <= interval.upper


def test_a_ratio_of_equal_histograms_is_about_one() -> None:
    same = ((0.01, 100), (0.025, 400), (0.05, 480), (0.1, 500), (math.inf, 500))
    interval = stats.quantile_ratio_interval(same, same, 0.95, 0.01)
    assert interval is not None and interval.estimate == pytest.approx(1.0)
    assert interval.lower < 1 < interval.upper < 1.5


LOOKS = [
    # (looks so far, requests at the last look, requests now, minRequests) -> (k, a look?)
    ((0, None, 10, 50), (1, False)),  # under minRequests: no look yet
    ((0, None, 60, 50), (1, True)),
    ((1, 60.0, 80, 50), (1, False)),  # grew by a third: not yet
    ((1, 60.0, 90, 50), (2, True)),  # grew by half: the second look
    ((3, 200.0, 200, 50), (3, False)),  # no new data: nothing spent
]


@pytest.mark.parametrize(("given", "expected"), LOOKS)
def test_look_schedule(
    given: tuple[int, float | None, float, int], expected: tuple[int, bool]
) -> None:
    assert stats.next_look(*given) == expected


def test_spending_sums_to_the_budget() -> None:
    spent = sum(stats.look_alpha(0.05, k, gates=1) for k in range(1, 100_000))
    assert spent == pytest.approx(0.05, rel=1e-3) and spent < 0.05


def test_equal_models_are_rarely_rolled_back_however_long_the_rollout() -> None:
    """500 A/A rollouts of 4,000 requests each, analysed every 20 requests (200
    analyses): the error-rate excess test may only fail at looks, and fails an equal
    canary in at most the budget's share of rollouts."""
    rng = np.random.default_rng(7)
    budget, rollbacks = 0.05, 0
    for _ in range(500):
        canary = rng.random(4000) < 0.02
        stable = rng.random(4000) < 0.02
        looks, seen = 0, None
        for n in range(20, 4001, 20):
            k, counted = stats.next_look(looks, seen, n, 50)
            if not counted:
                continue
            looks, seen = k, float(n)
            excess = stats.difference(
                canary[:n].sum(), n, stable[:n].sum(), n, stats.look_alpha(budget, k)
            )
            if excess.lower > 0:
                rollbacks += 1
                break
    assert rollbacks / 500 <= budget


def test_how_many_more_a_gate_needs() -> None:
    # 0 errors in 126 requests, at 99.8%: not yet sure of a rate under 5%. With as many
    # again it is (the Wilson bound of 0 in 252 is about 0.04).
    interval = stats.rate(0, 126, 0.001)
    assert interval.upper > 0.05
    needed = stats.more_needed(interval, 0.05, 126)
    assert needed is not None and 60 <= needed <= 200
    assert stats.rate(0, 126 + needed, 0.001).upper <= 0.05
    assert stats.more_needed(stats.rate(5, 100, 0.01), 0.05, 100) is None  # on the bound


def test_js_distance_matches_scipy() -> None:
    import random

    from scipy.spatial.distance import jensenshannon

    assert stats.js_distance({"a": 5, "b": 5}, {"b": 1, "a": 1}) == 0
    assert stats.js_distance({"a": 1}, {"b": 1}) == pytest.approx(1.0)
    rng = random.Random(7)
    for _ in range(50):
        labels = ["a", "b", "c", "d"][: rng.randint(1, 4)]
        p = {k: rng.choice([0, rng.random() * 100]) for k in labels}
        q = {k: rng.random() * 100 for k in labels}
        p[labels[0]] += 1  # at least one count on each side
        expected = jensenshannon([p[k] for k in labels], [q[k] for k in labels], base=2)
        assert stats.js_distance(p, q) == pytest.approx(float(expected), abs=1e-9)
    with pytest.raises(ValueError, match="at least one count"):
        stats.js_distance({}, {"a": 1})
