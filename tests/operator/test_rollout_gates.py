"""The rollout's analysis gates: each gate failing alone with its own reason, the
inconclusive cases (not enough data is never a failure), and the Jensen-Shannon
distance against scipy's."""

from __future__ import annotations

import random
from typing import Any

import pytest

from bertops.api import deployment as api
from bertops.operator.rollout import gates
from bertops.operator.rollout.metrics import Observation
from tests.operator.rollout_builders import analysis, obs

STRICT = {
    "minRequests": 50,
    "maxErrorRate": 0.05,
    "maxLatencyP95Ms": 100,
    "maxLatencyRatio": 1.5,
    "maxPredictionDivergence": 0.2,
    "minConfidence": 0.7,
    "minFeedbackAccuracy": 0.8,
    "minFeedback": 10,
}
GOOD: dict[str, Any] = {"feedback": (18, 20)}
# (gate that must fail, its reason, how the canary differs, how stable differs)
FAILURES: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
    (gates.ERROR_RATE, api.REASON_ERROR_RATE_GATE, {"errors": 20}, {}),
    # stable just as slow: only the absolute bound trips, not the ratio
    (gates.LATENCY_P95, api.REASON_LATENCY_GATE, {"p95_ms": 150}, {"p95_ms": 140}),
    (gates.LATENCY_RATIO, api.REASON_LATENCY_RATIO_GATE, {"p95_ms": 80}, {}),
    (gates.DIVERGENCE, api.REASON_DIVERGENCE_GATE, {"labels": {"pos": 190, "neg": 10}}, {}),
    (gates.CONFIDENCE, api.REASON_CONFIDENCE_GATE, {"confidence": 0.5}, {}),
    (gates.FEEDBACK_ACCURACY, api.REASON_FEEDBACK_GATE, {"feedback": (10, 20)}, {}),
]


def by_name(results: list[gates.GateResult]) -> dict[str, gates.GateResult]:
    return {r.name: r for r in results}


def test_a_good_canary_passes_every_gate() -> None:
    results = gates.evaluate(analysis(**STRICT), obs(**GOOD), obs(**GOOD))
    assert [r.name for r in results] == [
        gates.ERROR_RATE,
        gates.LATENCY_P95,
        gates.LATENCY_RATIO,
        gates.DIVERGENCE,
        gates.CONFIDENCE,
        gates.FEEDBACK_ACCURACY,
    ]
    assert all(r.passed for r in results), [r.message for r in results if not r.passed]


@pytest.mark.parametrize(
    ("gate", "reason", "canary", "stable"), FAILURES, ids=[f[0] for f in FAILURES]
)
def test_each_gate_fails_alone_with_its_reason(
    gate: str, reason: str, canary: dict[str, Any], stable: dict[str, Any]
) -> None:
    results = by_name(
        gates.evaluate(analysis(**STRICT), obs(**{**GOOD, **canary}), obs(**{**GOOD, **stable}))
    )
    assert {name for name, r in results.items() if r.failed} == {gate}
    assert results[gate].reason == reason
    assert results[gate].value is not None and results[gate].threshold is not None
    assert "beyond the bound" in results[gate].message


def test_values_and_thresholds_are_reported() -> None:
    results = by_name(
        gates.evaluate(
            analysis(**STRICT), obs(errors=20, p95_ms=80, **GOOD), obs(p95_ms=40, **GOOD)
        )
    )
    assert results[gates.ERROR_RATE].value == pytest.approx(0.1)
    assert results[gates.ERROR_RATE].threshold == 0.05
    assert results[gates.LATENCY_P95].value == pytest.approx(80)
    assert results[gates.LATENCY_RATIO].value == pytest.approx(2.0)
    assert results[gates.FEEDBACK_ACCURACY].value == pytest.approx(0.9)


def test_optional_gates_are_skipped_when_unset() -> None:
    names = [r.name for r in gates.evaluate(analysis(), obs(), obs())]
    assert names == [gates.ERROR_RATE, gates.LATENCY_RATIO, gates.DIVERGENCE]


INCONCLUSIVE = [
    (
        "canary under minRequests",
        obs(requests=20, errors=20, p95_ms=900, confidence=0.1),
        obs(**GOOD),
        {
            gates.ERROR_RATE,
            gates.LATENCY_P95,
            gates.LATENCY_RATIO,
            gates.DIVERGENCE,
            gates.CONFIDENCE,
            gates.FEEDBACK_ACCURACY,
        },
    ),
    (
        "no canary series yet",
        None,
        obs(**GOOD),
        {
            gates.ERROR_RATE,
            gates.LATENCY_P95,
            gates.LATENCY_RATIO,
            gates.DIVERGENCE,
            gates.CONFIDENCE,
            gates.FEEDBACK_ACCURACY,
        },
    ),
    (
        "stable without traffic",
        obs(**GOOD),
        obs(requests=3),
        {gates.LATENCY_RATIO, gates.DIVERGENCE},
    ),
    ("no stable series", obs(**GOOD), None, {gates.LATENCY_RATIO, gates.DIVERGENCE}),
    ("too little feedback", obs(feedback=(1, 9)), obs(), {gates.FEEDBACK_ACCURACY}),
]


@pytest.mark.parametrize(
    ("canary", "stable", "expected"),
    [c[1:] for c in INCONCLUSIVE],
    ids=[c[0] for c in INCONCLUSIVE],
)
def test_not_enough_data_is_inconclusive_not_failure(
    canary: Observation | None, stable: Observation | None, expected: set[str]
) -> None:
    results = gates.evaluate(analysis(**STRICT), canary, stable)
    assert {r.name for r in results if r.inconclusive} == expected
    assert not any(r.failed for r in results)
    assert all("inconclusive" in r.message for r in results if r.inconclusive)


def test_min_requests_zero_still_needs_one_request() -> None:
    result = gates.error_rate(analysis(minRequests=0), obs(requests=0, labels={}))
    assert result.inconclusive
    assert gates.enough_traffic(analysis(minRequests=0), None)
    assert not gates.enough_traffic(analysis(minRequests=5), obs(requests=4))


def test_latency_ratio_ignores_sub_floor_noise() -> None:
    # 1 ms against 3 ms is "3x" but far below the 5 ms floor: not a regression.
    result = gates.latency_ratio(analysis(), obs(p95_ms=3), obs(p95_ms=1))
    assert result.passed and result.value == pytest.approx(0.6)


def test_js_distance_matches_scipy() -> None:
    from scipy.spatial.distance import jensenshannon

    assert gates.js_distance({"a": 5, "b": 5}, {"b": 1, "a": 1}) == 0
    assert gates.js_distance({"a": 1}, {"b": 1}) == pytest.approx(1.0)
    rng = random.Random(7)
    for _ in range(50):
        labels = ["a", "b", "c", "d"][: rng.randint(1, 4)]
        p = {k: rng.choice([0, rng.random() * 100]) for k in labels}
        q = {k: rng.random() * 100 for k in labels}
        p[labels[0]] += 1  # at least one count on each side
        expected = jensenshannon([p[k] for k in labels], [q[k] for k in labels], base=2)
        assert gates.js_distance(p, q) == pytest.approx(float(expected), abs=1e-9)
    with pytest.raises(ValueError, match="at least one count"):
        gates.js_distance({}, {"a": 1})
