"""Per-variant Prometheus metrics of the gateway, on an explicit registry per gateway.

Created by :mod:`bertops.server.gateway.app`; read by Prometheus and by the operator's
rollout analysis (error rate, latency, label distribution, confidence and feedback
accuracy of the canary against stable, and the paired answers: a candidate's label
against stable's on the same texts). Every per-variant series carries ``variant``
(stable, canary, shadow) and ``model`` (the version behind it), so a replaced canary
starts fresh series.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from bertops.server.metrics import CONFIDENCE_BUCKETS, LATENCY_BUCKETS

VM = ["variant", "model"]  # every per-variant series' first labels


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._traffic(self.registry)
        self._feedback(self.registry)
        self._background(self.registry)
        self._routing(self.registry)

    def _traffic(self, r: CollectorRegistry) -> None:
        """What each variant answered."""
        # endpoint is "inference" (/predict, OIP infer) or "other" (metadata, health):
        # the rollout analysis judges errors and latency on inference only.
        self.requests = Counter(
            "bertops_gateway_requests",
            "Proxied requests by status code.",
            [*VM, "code", "endpoint"],
            registry=r,
        )
        self.errors = Counter(
            "bertops_gateway_errors",
            "Failed requests: backend unavailable/timeout/bad response, or a 5xx answer.",
            [*VM, "reason", "endpoint"],
            registry=r,
        )
        self.latency = Histogram(
            "bertops_gateway_request_latency_seconds",
            "Time from request to response, backend included.",
            [*VM, "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            "bertops_gateway_predictions",
            "Predicted labels returned by each variant.",
            [*VM, "label"],
            registry=r,
        )
        self.confidence = Histogram(
            "bertops_gateway_prediction_confidence",
            "Score of the predicted label.",
            VM,
            buckets=CONFIDENCE_BUCKETS,
            registry=r,
        )

    def _feedback(self, r: CollectorRegistry) -> None:
        """Ground truth scored per variant."""
        self.feedback = Counter(
            "bertops_gateway_feedback",
            "Ground-truth labels scored: correct or incorrect.",
            [*VM, "outcome"],
            registry=r,
        )
        self.feedback_rejected = Counter(
            "bertops_gateway_feedback_rejected",
            "Feedback refused: unknown_id, invalid_label, invalid, too_large, too_slow, duplicate.",
            ["reason"],
            registry=r,
        )
        self.feedback_log_dropped = Counter(
            "bertops_gateway_feedback_log_dropped",
            "Accepted feedback rows not written to the feedback log (writer behind, disk "
            "error, or the answered text unknown).",
            registry=r,
        )
        self.remembered = Gauge(
            "bertops_gateway_feedback_remembered_bytes",
            "Approximate memory held by answers awaiting feedback.",
            registry=r,
        )
        self.feedback_accuracy = Gauge(
            "bertops_gateway_feedback_accuracy",
            "Share of matched feedback labels the variant got right.",
            VM,
            registry=r,
        )

    def _background(self, r: CollectorRegistry) -> None:
        """Shadow and pair calls, and the answers paired with stable's."""
        self.shadow = Counter(
            "bertops_gateway_shadow_requests",
            "Mirrored requests: ok, error, or dropped (background calls saturated).",
            ["model", "outcome"],
            registry=r,
        )
        # A pair call asks stable what the canary answered (routes.compare); it is not
        # user traffic for stable, so it is counted here and in no per-variant series.
        self.pair_requests = Counter(
            "bertops_gateway_pair_requests",
            "Background calls asking stable for what the canary answered: ok, error, or "
            "dropped (background calls saturated). model is stable's.",
            ["model", "outcome"],
            registry=r,
        )
        # Label strings come from the models' answers only: labels² series at most.
        self.paired_answers = Counter(
            "bertops_gateway_paired_answers",
            "Per text, the label of a candidate (canary with compare, or shadow) against "
            "stable's label on the same text.",
            [*VM, "stable_model", "stable_label", "label"],
            registry=r,
        )
        self.paired_feedback = Counter(
            "bertops_gateway_paired_feedback",
            "Feedback on texts a candidate and stable both answered: both_correct, "
            "candidate_only, stable_only or both_wrong.",
            [*VM, "stable_model", "outcome"],
            registry=r,
        )

    def _routing(self, r: CollectorRegistry) -> None:
        self.weight = Gauge(
            "bertops_gateway_route_weight",
            "Percent of traffic per variant.",
            ["variant"],
            registry=r,
        )
        self.reloads = Counter(
            "bertops_gateway_route_reloads",
            "Route changes applied or rejected, by source.",
            ["source", "outcome"],
            registry=r,
        )
        self.routes = Info("bertops_gateway_routes", "The routes in force.", registry=r)
