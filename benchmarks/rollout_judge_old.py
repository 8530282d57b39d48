"""The canary judge this project had before its sequential gates, kept as the baseline
of ``rollout_judge.py`` (which imports it; scripts run from this folder): point
estimates once minRequests canary requests were served, failing on error rate, p95
ratio, the label distribution's Jensen-Shannon distance (bound 0.2) or feedback accuracy
when set, passing otherwise (a gate without enough data never held a step).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from bertops.operator.rollout import gates, stats
from bertops.operator.rollout.metrics import Observation, histogram_quantile

Verdict = Literal["fail", "unsure", "pass"]
Judge = Callable[[Observation, Observation, int], tuple[Verdict, tuple[str, ...]]]


@dataclass(frozen=True)
class OldAnalysis:
    """The Analysis defaults before the sequential gates."""

    min_requests: int = 50
    max_error_rate: float = 0.05
    max_latency_ratio: float = 1.5
    max_prediction_divergence: float = 0.2
    min_feedback_accuracy: float | None = None
    min_feedback: int = 20


def old_judge(old: OldAnalysis) -> Judge:
    """The baseline: point estimates once minRequests, inconclusive gates never hold."""

    def judge(
        canary: Observation, stable: Observation, look: int
    ) -> tuple[Verdict, tuple[str, ...]]:
        need = max(old.min_requests, 1)
        if canary.requests < need:
            return "unsure", ("minRequests",)  # the old rule: a step waits for traffic
        p95_canary = histogram_quantile(0.95, canary.latency_buckets)
        p95_stable = histogram_quantile(0.95, stable.latency_buckets)
        floor, bound = gates.LATENCY_FLOOR_MS / 1000, old.min_feedback_accuracy
        checks = {
            gates.ERROR_RATE: canary.errors / canary.requests > old.max_error_rate,
            gates.LATENCY_RATIO: stable.requests >= need
            and p95_canary is not None
            and p95_stable is not None
            and p95_canary / max(p95_stable, floor) > old.max_latency_ratio,
            gates.DIVERGENCE: canary.predicted >= need
            and stable.predicted >= need
            and stats.js_distance(canary.predictions, stable.predictions)
            > old.max_prediction_divergence,
            gates.FEEDBACK_ACCURACY: bound is not None
            and canary.feedback_total >= old.min_feedback
            and canary.feedback_correct / canary.feedback_total < bound,
        }
        failed = tuple(name for name, bad in checks.items() if bad)
        return ("fail", failed) if failed else ("pass", ())

    return judge
