"""The analysis gates of a canary rollout: pure functions of (Analysis spec, canary
observation, stable observation, look) -> :class:`GateResult`.

Called by :func:`bertops.operator.rollout.state.decide` at every analysis interval (and
by ``benchmarks/rollout_judge.py``). Each gate states an estimate and an interval from
:mod:`~bertops.operator.rollout.stats` and decides one of:

- ``pass``: the interval lies on the good side of the bound;
- ``fail``: it lies on the bad side (the canary is rolled back);
- ``unsure`` (not yet sure): it straddles the bound, or there are fewer than
  ``minRequests`` requests (``minFeedback`` labels); the result says about how many more
  it needs. A step never ends while a gating gate is unsure;
- ``report``: shown, never gating (the label distribution's distance unless
  ``maxPredictionDivergence`` is set; paired accuracy where it does not gate).

The intervals' confidence comes from the sequential rule (``stats.look_alpha``): the
false-rollback budget ``analysis.falseRollbackRate`` is spent over the looks and shared
by the gates that can fail. Gate order is the order a person reads them in: errors,
latency, then ML quality.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from bertops.api import deployment as api
from bertops.api.deployment import Analysis
from bertops.operator.rollout import stats
from bertops.operator.rollout.metrics import Observation
from bertops.operator.rollout.verdicts import GateResult, decide_against, fmt, too_few

ERROR_RATE = "errorRate"
LATENCY_P95 = "latencyP95"
LATENCY_RATIO = "latencyRatio"
DIVERGENCE = "predictionDivergence"
CONFIDENCE = "confidence"
FEEDBACK_ACCURACY = "feedbackAccuracy"
PAIRED_ACCURACY = "pairedAccuracy"
AGREEMENT = "agreement"

# Below this p95, a ratio says more about timer noise than about the model: 1 ms against
# 2 ms is "twice as slow" and no regression anyone would notice.
LATENCY_FLOOR_MS = 5.0


@dataclass(frozen=True)
class Judge:
    """One analysis: the spec, the look's budget per gate, and whose canary it is."""

    analysis: Analysis
    look: int = 1
    retrained: bool = False

    @property
    def paired_gates(self) -> bool:
        gate = self.analysis.paired_gate
        return self.analysis.paired and (
            gate == "always" or (gate == "retrained" and self.retrained)
        )

    @property
    def gate_count(self) -> int:
        """Tests that can fail at this look (the error-rate gate holds two)."""
        a = self.analysis
        optional = (
            a.max_latency_p95_ms,
            a.max_prediction_divergence,
            a.min_confidence,
            a.min_feedback_accuracy,
        )
        return 3 + sum(x is not None for x in optional) + (1 if self.paired_gates else 0)

    @property
    def alpha(self) -> float:
        return stats.look_alpha(self.analysis.false_rollback_rate, self.look, self.gate_count)


def _requests(observation: Observation | None) -> float:
    return observation.requests if observation is not None else 0.0


def error_rate(judge: Judge, canary: Observation | None, stable: Observation | None) -> GateResult:
    """The canary's error rate against maxErrorRate, and its excess over stable's against
    maxErrorRateIncrease: it fails when either is beyond its bound with confidence, and
    passes only when the rate is surely within maxErrorRate and the excess seen so far is
    within its tolerance (a canary visibly worse than stable is not passed while the
    excess is still being proven)."""
    a, alpha = judge.analysis, judge.alpha
    n = _requests(canary)
    need = max(a.min_requests, 1)
    if canary is None or n < need:
        return too_few(
            ERROR_RATE, api.REASON_ERROR_RATE_GATE, a.max_error_rate, n, need, "canary requests"
        )
    absolute = decide_against(
        ERROR_RATE,
        api.REASON_ERROR_RATE_GATE,
        stats.rate(canary.errors, n, alpha),
        a.max_error_rate,
        n,
        "canary error rate",
        higher_is_better=False,
    )
    if absolute.failed or stable is None or stable.requests <= 0:
        return absolute
    excess = decide_against(
        ERROR_RATE,
        api.REASON_ERROR_RATE_GATE,
        stats.difference(canary.errors, n, stable.errors, stable.requests, alpha),
        a.max_error_rate_increase,
        n,
        "canary error rate minus stable's",
        higher_is_better=False,
    )
    if excess.failed:
        return excess
    if absolute.verdict == "pass" and (excess.value or 0.0) > a.max_error_rate_increase:
        return replace(excess, verdict="unsure")  # worse than stable so far: not passed
    return absolute


def latency_p95(judge: Judge, canary: Observation | None) -> GateResult | None:
    bound = judge.analysis.max_latency_p95_ms
    if bound is None:
        return None
    n, need = _requests(canary), max(judge.analysis.min_requests, 1)
    interval = (
        stats.quantile_interval(canary.latency_buckets, 0.95, judge.alpha)
        if canary is not None and n >= need
        else None
    )
    if interval is None:
        return too_few(LATENCY_P95, api.REASON_LATENCY_GATE, bound, n, need, "canary requests")
    ms = stats.Interval(
        interval.estimate * 1000, interval.lower * 1000, interval.upper * 1000, interval.level
    )
    return decide_against(
        LATENCY_P95,
        api.REASON_LATENCY_GATE,
        ms,
        bound,
        n,
        "canary p95 latency (ms)",
        higher_is_better=False,
    )


def latency_ratio(
    judge: Judge, canary: Observation | None, stable: Observation | None
) -> GateResult:
    bound, need = judge.analysis.max_latency_ratio, max(judge.analysis.min_requests, 1)
    n, m = _requests(canary), _requests(stable)
    interval = (
        stats.quantile_ratio_interval(
            canary.latency_buckets,
            stable.latency_buckets,
            0.95,
            judge.alpha,
            floor=LATENCY_FLOOR_MS / 1000,
        )
        if canary is not None and stable is not None and n >= need and m >= need
        else None
    )
    if interval is None:
        return too_few(
            LATENCY_RATIO,
            api.REASON_LATENCY_RATIO_GATE,
            bound,
            min(n, m),
            need,
            "requests on canary and on stable",
        )
    return decide_against(
        LATENCY_RATIO,
        api.REASON_LATENCY_RATIO_GATE,
        interval,
        bound,
        n,
        "canary/stable p95",
        higher_is_better=False,
    )


def divergence(judge: Judge, canary: Observation | None, stable: Observation | None) -> GateResult:
    """The label distributions' Jensen-Shannon distance; gates only when
    maxPredictionDivergence is set (a retrained model is meant to answer differently)."""
    bound, need = judge.analysis.max_prediction_divergence, max(judge.analysis.min_requests, 1)
    n = canary.predicted if canary is not None else 0.0
    m = stable.predicted if stable is not None else 0.0
    if canary is None or stable is None or n < need or m < need:
        result = too_few(
            DIVERGENCE,
            api.REASON_DIVERGENCE_GATE,
            bound,
            min(n, m),
            need,
            "predictions on canary and on stable",
        )
        return result if bound is not None else replace(result, verdict="report")
    interval = stats.js_interval(canary.predictions, stable.predictions, judge.alpha)
    p_value = stats.label_shift_p_value(canary.predictions, stable.predictions)
    what = f"Jensen-Shannon distance of the labels (chi-square p={p_value:.3g})"
    if bound is None:
        return GateResult(
            DIVERGENCE,
            "report",
            interval.estimate,
            None,
            f"{what} {fmt(interval.estimate)} [{fmt(interval.lower)}, "
            f"{fmt(interval.upper)}]: reported only (set maxPredictionDivergence to gate)",
            api.REASON_DIVERGENCE_GATE,
            lower=interval.lower,
            upper=interval.upper,
            level=interval.level,
            samples=n,
        )
    return decide_against(
        DIVERGENCE, api.REASON_DIVERGENCE_GATE, interval, bound, n, what, higher_is_better=False
    )


def confidence(judge: Judge, canary: Observation | None) -> GateResult | None:
    """Mean confidence against minConfidence. Scores lie in [0, 1], so their variance is
    at most m (1 - m) (Bhatia-Davis); the interval is normal with that variance."""
    bound = judge.analysis.min_confidence
    if bound is None:
        return None
    need = max(judge.analysis.min_requests, 1)
    n = canary.confidence_count if canary is not None else 0.0
    mean = canary.mean_confidence if canary is not None else None
    if mean is None or n < need:
        return too_few(CONFIDENCE, api.REASON_CONFIDENCE_GATE, bound, n, need, "canary predictions")
    z = stats.z_score(judge.alpha)
    half = z * math.sqrt(max(mean * (1 - mean), 0.0) / n)
    interval = stats.Interval(mean, mean - half, mean + half, 1 - 2 * judge.alpha)
    return decide_against(
        CONFIDENCE,
        api.REASON_CONFIDENCE_GATE,
        interval,
        bound,
        n,
        "canary mean confidence",
        higher_is_better=True,
    )


def feedback_accuracy(judge: Judge, canary: Observation | None) -> GateResult | None:
    bound = judge.analysis.min_feedback_accuracy
    if bound is None:
        return None
    need = judge.analysis.min_feedback
    n = canary.feedback_total if canary is not None else 0.0
    if canary is None or n < need:
        return too_few(
            FEEDBACK_ACCURACY,
            api.REASON_FEEDBACK_GATE,
            bound,
            n,
            need,
            "feedback labels for the canary",
        )
    interval = stats.rate(canary.feedback_correct, n, judge.alpha)
    return decide_against(
        FEEDBACK_ACCURACY,
        api.REASON_FEEDBACK_GATE,
        interval,
        bound,
        n,
        "canary accuracy on feedback",
        higher_is_better=True,
    )


def paired_accuracy(judge: Judge, candidate: Observation | None) -> GateResult:
    """The candidate's accuracy minus stable's on the same labelled texts (the stable
    answer comes from the gateway's pair call or the shadow), against -maxAccuracyDrop."""
    a = judge.analysis
    threshold = -a.max_accuracy_drop
    pairs = candidate.paired_feedback if candidate is not None else {}
    n = sum(pairs.values())
    if n < a.min_feedback:
        result = too_few(
            PAIRED_ACCURACY,
            api.REASON_PAIRED_FEEDBACK_GATE,
            threshold,
            n,
            a.min_feedback,
            "feedback labels scored on both models",
        )
    else:
        interval = stats.paired_difference(
            pairs.get("both_correct", 0.0),
            pairs.get("candidate_only", 0.0),
            pairs.get("stable_only", 0.0),
            pairs.get("both_wrong", 0.0),
            judge.alpha,
        )
        result = decide_against(
            PAIRED_ACCURACY,
            api.REASON_PAIRED_FEEDBACK_GATE,
            interval,
            threshold,
            n,
            "accuracy minus stable's on the same texts",
            higher_is_better=True,
        )
    return result if judge.paired_gates else replace(result, verdict="report")


def agreement(judge: Judge, candidate: Observation | None) -> GateResult | None:
    """How often the candidate's label equals stable's on the same text (the gateway's
    pair calls or the shadow), and the commonest disagreements; reported, never gating
    (a better model is meant to disagree where stable was wrong)."""
    pairs = candidate.paired_answers if candidate is not None else {}
    total = sum(pairs.values())
    if total <= 0:
        return None
    same = sum(count for (old, new), count in pairs.items() if old == new)
    interval = stats.rate(same, total, judge.alpha)
    changed = sorted(
        ((count, old, new) for (old, new), count in pairs.items() if old != new), reverse=True
    )
    confusion = ", ".join(f"{old}->{new} {count:.0f}" for count, old, new in changed[:3])
    return GateResult(
        AGREEMENT,
        "report",
        interval.estimate,
        None,
        f"agrees with stable on {same:.0f} of {total:.0f} texts "
        f"[{fmt(interval.lower)}, {fmt(interval.upper)}]"
        + (f"; stable->candidate: {confusion}" if confusion else ""),
        "",
        lower=interval.lower,
        upper=interval.upper,
        level=interval.level,
        samples=total,
    )


def evaluate(
    analysis: Analysis,
    canary: Observation | None,
    stable: Observation | None,
    *,
    look: int = 1,
    retrained: bool = False,
    decisive: bool = True,
) -> list[GateResult]:
    """Every configured gate, in reading order (unset optional bounds are skipped).
    ``decisive`` False (an analysis between looks): a gate that would fail is shown not
    yet sure, to be confirmed at the next look."""
    judge = Judge(analysis, look, retrained)
    found = [
        error_rate(judge, canary, stable),
        latency_p95(judge, canary),
        latency_ratio(judge, canary, stable),
        divergence(judge, canary, stable),
        confidence(judge, canary),
        feedback_accuracy(judge, canary),
        paired_accuracy(judge, canary),
        agreement(judge, canary),
    ]
    results = [gate for gate in found if gate is not None]
    if decisive:
        return results
    return [
        replace(g, verdict="unsure", message=f"{g.message} (to be confirmed at the next look)")
        if g.failed
        else g
        for g in results
    ]
