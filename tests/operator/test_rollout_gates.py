"""The rollout's analysis gates: each gate failing alone with its own reason, a good
canary passing every gate, and the three outcomes with their stated confidence: too
little data or an interval straddling the bound is "not yet sure" (with how many more
requests it needs), never a failure; the same rate fails once the interval clears the
bound; later looks demand more confidence (the sequential rule)."""

from __future__ import annotations

from dataclasses import replace
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
GOOD: dict[str, Any] = {"feedback": (190, 200)}
# (gate that must fail, its reason, how the canary differs, how stable differs)
FAILURES: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
    (gates.ERROR_RATE, api.REASON_ERROR_RATE_GATE, {"errors": 40}, {}),
    # stable just as slow: only the absolute bound trips, not the ratio
    (gates.LATENCY_P95, api.REASON_LATENCY_GATE, {"p95_ms": 150}, {"p95_ms": 140}),
    (gates.LATENCY_RATIO, api.REASON_LATENCY_RATIO_GATE, {"p95_ms": 80}, {}),
    (gates.DIVERGENCE, api.REASON_DIVERGENCE_GATE, {"labels": {"pos": 190, "neg": 10}}, {}),
    (gates.CONFIDENCE, api.REASON_CONFIDENCE_GATE, {"confidence": 0.5}, {}),
    (gates.FEEDBACK_ACCURACY, api.REASON_FEEDBACK_GATE, {"feedback": (40, 100)}, {}),
]


def by_name(results: list[gates.GateResult]) -> dict[str, gates.GateResult]:
    return {r.name: r for r in results}


def paired(observation: Observation, **counts: float) -> Observation:
    return replace(observation, paired_feedback=counts)


def test_a_good_canary_passes_every_gate() -> None:
    results = gates.evaluate(analysis(**STRICT), obs(**GOOD), obs(**GOOD))
    assert [r.name for r in results] == [
        gates.ERROR_RATE,
        gates.LATENCY_P95,
        gates.LATENCY_RATIO,
        gates.DIVERGENCE,
        gates.CONFIDENCE,
        gates.FEEDBACK_ACCURACY,
        gates.PAIRED_ACCURACY,
    ]
    gating = [r for r in results if r.name != gates.PAIRED_ACCURACY]
    assert all(r.verdict == "pass" for r in gating), [r.message for r in gating]
    for r in gating:  # every decision states its interval and level
        assert r.lower is not None and r.upper is not None and r.lower <= r.upper
        assert r.level is not None and 0.9 < r.level < 1
        assert "%" in r.message


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
    assert results[gates.FEEDBACK_ACCURACY].value == pytest.approx(0.95)


def test_divergence_is_reported_and_gates_only_when_set() -> None:
    """A retrained model is meant to answer shifted traffic differently: by default its
    label distance is shown, never a reason to roll back."""
    shifted = obs(labels={"pos": 190, "neg": 10})
    found = by_name(gates.evaluate(analysis(), shifted, obs()))
    assert [r.name for r in gates.evaluate(analysis(), obs(), obs())] == [
        gates.ERROR_RATE,
        gates.LATENCY_RATIO,
        gates.DIVERGENCE,
        gates.PAIRED_ACCURACY,
    ]
    assert found[gates.DIVERGENCE].verdict == "report"
    assert found[gates.DIVERGENCE].value == pytest.approx(0.45, abs=0.02)
    assert "chi-square p=" in found[gates.DIVERGENCE].message
    assert not any(r.failed for r in found.values())
    gated = by_name(gates.evaluate(analysis(maxPredictionDivergence=0.2), shifted, obs()))
    assert gated[gates.DIVERGENCE].failed


def test_a_high_rate_on_few_requests_is_not_yet_sure_then_fails_with_more() -> None:
    few = gates.error_rate(gates.Judge(analysis()), obs(requests=60, errors=5), None)
    assert few.verdict == "unsure"
    assert few.lower is not None and few.lower < 0.05 < (few.upper or 0)
    assert few.needed is not None and few.needed > 0
    assert f"needs about {few.needed} more" in few.message
    many = gates.error_rate(gates.Judge(analysis()), obs(requests=6000, errors=500), None)
    assert many.failed


def test_an_error_rate_above_stables_fails_even_under_the_absolute_bound() -> None:
    stable = obs(requests=20000, errors=200)  # 1%
    worse = gates.error_rate(gates.Judge(analysis()), obs(requests=20000, errors=600), stable)
    assert worse.failed and "minus stable's" in worse.message
    same = gates.error_rate(gates.Judge(analysis()), obs(requests=20000, errors=210), stable)
    assert same.verdict == "pass"


def test_later_looks_demand_more_confidence() -> None:
    """The sequential rule: look k spends falseRollbackRate / (k (k+1)), so the same
    borderline evidence that fails at the first look is not yet sure at the twentieth."""
    borderline = obs(requests=400, errors=36)  # 9% against a 5% bound
    first = gates.error_rate(gates.Judge(analysis(), look=1), borderline, None)
    late = gates.error_rate(gates.Judge(analysis(), look=20), borderline, None)
    assert first.failed
    assert late.verdict == "unsure"
    assert (late.level or 0) > (first.level or 0)


PAIRED = [
    # (case, counts, retrained, verdict)
    (
        "a better retrained model passes",
        {"candidate_only": 40, "stable_only": 10, "both_correct": 100, "both_wrong": 50},
        True,
        "pass",
    ),
    (
        "a worse retrained model fails",
        {"candidate_only": 5, "stable_only": 45, "both_correct": 100, "both_wrong": 50},
        True,
        "fail",
    ),
    (
        "too few labels: not yet sure",
        {"candidate_only": 3, "stable_only": 1, "both_correct": 5},
        True,
        "unsure",
    ),
    (
        "an equal model on few labels: not yet sure",
        {"candidate_only": 10, "stable_only": 10, "both_correct": 30},
        True,
        "unsure",
    ),
    (
        "not a retraining: reported only",
        {"candidate_only": 5, "stable_only": 45, "both_correct": 100},
        False,
        "report",
    ),
]


@pytest.mark.parametrize(
    ("counts", "retrained", "verdict"), [c[1:] for c in PAIRED], ids=[c[0] for c in PAIRED]
)
def test_paired_accuracy(counts: dict[str, float], retrained: bool, verdict: str) -> None:
    found = by_name(gates.evaluate(analysis(), paired(obs(), **counts), obs(), retrained=retrained))
    result = found[gates.PAIRED_ACCURACY]
    assert result.verdict == verdict, result.message
    assert result.threshold == pytest.approx(-0.05)


def test_paired_gate_always_and_off() -> None:
    worse = paired(obs(), candidate_only=5, stable_only=45, both_correct=100)
    always = by_name(gates.evaluate(analysis(pairedGate="always"), worse, obs()))
    off = by_name(gates.evaluate(analysis(pairedGate="off"), worse, obs(), retrained=True))
    assert always[gates.PAIRED_ACCURACY].failed
    assert off[gates.PAIRED_ACCURACY].verdict == "report"


NOT_YET = [
    (
        "canary under minRequests",
        obs(requests=20, errors=20, p95_ms=900, confidence=0.1, feedback=(0, 0)),
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
    ("canary", "stable", "expected"), [c[1:] for c in NOT_YET], ids=[c[0] for c in NOT_YET]
)
def test_not_enough_data_is_not_yet_sure_never_failure(
    canary: Observation | None, stable: Observation | None, expected: set[str]
) -> None:
    results = gates.evaluate(analysis(**STRICT), canary, stable)
    assert {r.name for r in results if r.unsure} == expected
    assert not any(r.failed for r in results)
    for r in results:
        if r.unsure:
            assert "needed before judging" in r.message and (r.needed or 0) > 0


def test_min_requests_zero_still_needs_one_request() -> None:
    result = gates.error_rate(gates.Judge(analysis(minRequests=0)), obs(requests=0), None)
    assert result.unsure and result.needed == 1


def test_latency_ratio_ignores_sub_floor_noise() -> None:
    # 1 ms against 3 ms is "3x" but far below the 5 ms floor: not a regression.
    result = gates.latency_ratio(gates.Judge(analysis()), obs(p95_ms=3), obs(p95_ms=1))
    assert result.passed and result.value == pytest.approx(0.6)
