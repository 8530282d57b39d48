"""Per-variant Prometheus metrics of the gateway, on an explicit registry per gateway.

Created by :mod:`bertops.server.gateway.app`; read by Prometheus and by the operator's
rollout analysis (error rate, latency, label distribution, confidence and feedback
accuracy of the canary against stable). Every series carries ``variant`` (stable, canary,
shadow) and ``model`` (the version behind it), so a replaced canary starts fresh series.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from bertops.server.metrics import CONFIDENCE_BUCKETS, LATENCY_BUCKETS


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        vm = ["variant", "model"]
        # endpoint is "inference" (/predict, OIP infer) or "other" (metadata, health):
        # the rollout analysis judges errors and latency on inference only.
        self.requests = Counter(
            "bertops_gateway_requests",
            "Proxied requests by status code.",
            [*vm, "code", "endpoint"],
            registry=r,
        )
        self.errors = Counter(
            "bertops_gateway_errors",
            "Failed requests: backend unavailable/timeout/bad response, or a 5xx answer.",
            [*vm, "reason", "endpoint"],
            registry=r,
        )
        self.latency = Histogram(
            "bertops_gateway_request_latency_seconds",
            "Time from request to response, backend included.",
            [*vm, "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            "bertops_gateway_predictions",
            "Predicted labels returned by each variant.",
            [*vm, "label"],
            registry=r,
        )
        self.confidence = Histogram(
            "bertops_gateway_prediction_confidence",
            "Score of the predicted label.",
            vm,
            buckets=CONFIDENCE_BUCKETS,
            registry=r,
        )
        self.feedback = Counter(
            "bertops_gateway_feedback",
            "Ground-truth labels scored: correct or incorrect.",
            [*vm, "outcome"],
            registry=r,
        )
        self.feedback_rejected = Counter(
            "bertops_gateway_feedback_rejected",
            "Feedback refused: unknown_id, invalid_label, invalid, too_large, duplicate.",
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
            vm,
            registry=r,
        )
        self.shadow = Counter(
            "bertops_gateway_shadow_requests",
            "Mirrored requests: ok, error, or dropped (shadow saturated).",
            ["model", "outcome"],
            registry=r,
        )
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
