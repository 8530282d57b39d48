"""The analysis gates of a canary rollout: pure functions of (Analysis spec, canary
observation, stable observation) -> :class:`GateResult`.

Called by :func:`bertops.operator.rollout.state.decide` at every analysis interval.
Each gate passes, fails, or is inconclusive (``passed is None``) when there is not yet
enough data to judge: fewer than ``minRequests`` canary requests (or stable ones, for
the gates that compare with stable), or fewer than ``minFeedback`` ground-truth labels
for the feedback gate. Inconclusive is never a failure; what it means for advancing a
step is decided in ``state``.

Gate order is the order a person reads them in: errors, latency, then ML quality.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from bertops.api import deployment as api
from bertops.api.deployment import Analysis
from bertops.operator.rollout.metrics import Observation

ERROR_RATE = "errorRate"
LATENCY_P95 = "latencyP95"
LATENCY_RATIO = "latencyRatio"
DIVERGENCE = "predictionDivergence"
CONFIDENCE = "confidence"
FEEDBACK_ACCURACY = "feedbackAccuracy"

# Below this p95, a ratio says more about timer noise than about the model: 1 ms against
# 2 ms is "twice as slow" and no regression anyone would notice.
LATENCY_FLOOR_MS = 5.0


@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool | None  # None: inconclusive (not enough data yet)
    value: float | None
    threshold: float | None
    message: str
    reason: str  # the Degraded reason when this gate fails

    @property
    def failed(self) -> bool:
        return self.passed is False

    @property
    def inconclusive(self) -> bool:
        return self.passed is None


def _result(
    name: str,
    reason: str,
    value: float | None,
    threshold: float,
    ok: bool | None,
    what: str,
    compare: str,
) -> GateResult:
    if ok is None or value is None:
        return GateResult(name, None, value, threshold, f"{what}: inconclusive, {compare}", reason)
    verdict = "within" if ok else "beyond"
    return GateResult(
        name,
        ok,
        value,
        threshold,
        f"{what} {value:.4g} {verdict} the bound {threshold:.4g}",
        reason,
    )


def _enough(observation: Observation | None, minimum: int) -> bool:
    return observation is not None and observation.requests >= max(minimum, 1)


def error_rate(analysis: Analysis, canary: Observation | None) -> GateResult:
    value = canary.error_rate if canary is not None else None
    ok = (
        None
        if not _enough(canary, analysis.min_requests)
        else (value is not None and value <= analysis.max_error_rate)
    )
    return _result(
        ERROR_RATE,
        api.REASON_ERROR_RATE_GATE,
        value,
        analysis.max_error_rate,
        ok,
        "canary error rate",
        f"fewer than {analysis.min_requests} canary requests",
    )


def latency_p95(analysis: Analysis, canary: Observation | None) -> GateResult | None:
    bound = analysis.max_latency_p95_ms
    if bound is None:
        return None
    value = canary.latency_p95_ms if canary is not None else None
    ok = None if not _enough(canary, analysis.min_requests) or value is None else value <= bound
    return _result(
        LATENCY_P95,
        api.REASON_LATENCY_GATE,
        value,
        bound,
        ok,
        "canary p95 latency (ms)",
        f"fewer than {analysis.min_requests} canary requests with latencies",
    )


def latency_ratio(
    analysis: Analysis, canary: Observation | None, stable: Observation | None
) -> GateResult:
    bound = analysis.max_latency_ratio
    both = _enough(canary, analysis.min_requests) and _enough(stable, analysis.min_requests)
    canary_ms = canary.latency_p95_ms if canary is not None else None
    stable_ms = stable.latency_p95_ms if stable is not None else None
    if not both or canary_ms is None or stable_ms is None:
        return _result(
            LATENCY_RATIO,
            api.REASON_LATENCY_RATIO_GATE,
            None,
            bound,
            None,
            "canary/stable p95",
            f"fewer than {analysis.min_requests} requests on canary or stable",
        )
    value = canary_ms / max(stable_ms, LATENCY_FLOOR_MS)
    return _result(
        LATENCY_RATIO,
        api.REASON_LATENCY_RATIO_GATE,
        value,
        bound,
        value <= bound,
        f"canary/stable p95 ({canary_ms:.1f} ms / {stable_ms:.1f} ms)",
        "",
    )


def js_distance(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    """Jensen-Shannon distance (base 2, so in [0, 1]) between two label histograms:
    the square root of the JS divergence, as scipy's ``jensenshannon(p, q, base=2)``."""
    p_total, q_total = sum(p.values()), sum(q.values())
    if p_total <= 0 or q_total <= 0:
        raise ValueError("both histograms need at least one count")
    divergence = 0.0
    for label in set(p) | set(q):
        pi, qi = p.get(label, 0.0) / p_total, q.get(label, 0.0) / q_total
        mi = (pi + qi) / 2
        if pi > 0:
            divergence += 0.5 * pi * math.log2(pi / mi)
        if qi > 0:
            divergence += 0.5 * qi * math.log2(qi / mi)
    return math.sqrt(max(0.0, divergence))  # rounding can leave a tiny negative


def divergence(
    analysis: Analysis, canary: Observation | None, stable: Observation | None
) -> GateResult:
    bound = analysis.max_prediction_divergence
    need = max(analysis.min_requests, 1)
    if canary is None or stable is None or canary.predicted < need or stable.predicted < need:
        return _result(
            DIVERGENCE,
            api.REASON_DIVERGENCE_GATE,
            None,
            bound,
            None,
            "label distribution distance",
            f"fewer than {need} predictions on canary or stable",
        )
    value = js_distance(canary.predictions, stable.predictions)
    return _result(
        DIVERGENCE,
        api.REASON_DIVERGENCE_GATE,
        value,
        bound,
        value <= bound,
        "Jensen-Shannon distance of canary and stable labels",
        "",
    )


def confidence(analysis: Analysis, canary: Observation | None) -> GateResult | None:
    bound = analysis.min_confidence
    if bound is None:
        return None
    need = max(analysis.min_requests, 1)
    value = canary.mean_confidence if canary is not None else None
    ok = (
        None
        if canary is None or canary.confidence_count < need or value is None
        else (value >= bound)
    )
    return _result(
        CONFIDENCE,
        api.REASON_CONFIDENCE_GATE,
        value,
        bound,
        ok,
        "canary mean confidence",
        f"fewer than {need} canary predictions",
    )


def feedback_accuracy(analysis: Analysis, canary: Observation | None) -> GateResult | None:
    bound = analysis.min_feedback_accuracy
    if bound is None:
        return None
    value = canary.feedback_accuracy if canary is not None else None
    enough = canary is not None and canary.feedback_total >= analysis.min_feedback
    ok = None if not enough or value is None else value >= bound
    return _result(
        FEEDBACK_ACCURACY,
        api.REASON_FEEDBACK_GATE,
        value,
        bound,
        ok,
        "canary accuracy on feedback",
        f"fewer than {analysis.min_feedback} feedback labels for the canary",
    )


def evaluate(
    analysis: Analysis, canary: Observation | None, stable: Observation | None
) -> list[GateResult]:
    """Every configured gate, in reading order (unset optional bounds are skipped)."""
    found = [
        error_rate(analysis, canary),
        latency_p95(analysis, canary),
        latency_ratio(analysis, canary, stable),
        divergence(analysis, canary, stable),
        confidence(analysis, canary),
        feedback_accuracy(analysis, canary),
    ]
    return [gate for gate in found if gate is not None]


def enough_traffic(analysis: Analysis, canary: Observation | None) -> bool:
    """Whether the canary served minRequests requests: a step only advances then."""
    return (canary.requests if canary is not None else 0.0) >= analysis.min_requests
