"""Prometheus metrics of the model server, on an explicit registry per app instance (so
two servers in one process, e.g. in tests, never share counters), plus a pure ASGI
middleware that counts every request by endpoint and status and times it.

Created by :mod:`bertops.server.app`; the batcher reports batch sizes and model time
through :meth:`ServerMetrics.observe_batch`. The gateway has its own set in
:mod:`bertops.server.gateway.metrics`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Seconds. Small models answer in milliseconds, big batches take about a second.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 128, 256, 512, 1024)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


class ServerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "bertops_server_requests",
            "HTTP requests by endpoint and status.",
            ["endpoint", "status"],
            registry=r,
        )
        self.request_latency = Histogram(
            "bertops_server_request_latency_seconds",
            "Time from request to response.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_latency = Histogram(
            "bertops_server_queue_latency_seconds",
            "Time a request waited for its batch to start.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_latency = Histogram(
            "bertops_server_inference_latency_seconds",
            "Model time of one batch.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "bertops_server_batch_size", "Texts per model call.", buckets=BATCH_BUCKETS, registry=r
        )
        self.predictions = Counter(
            "bertops_server_predictions", "Predictions by label.", ["label"], registry=r
        )
        self.confidence = Histogram(
            "bertops_server_prediction_confidence",
            "Probability of the predicted label.",
            buckets=CONFIDENCE_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "bertops_server_requests_in_flight", "Requests being handled now.", registry=r
        )
        self.model = Info("bertops_server_model", "The served model version.", registry=r)
        self.ready = Gauge("bertops_server_model_ready", "1 once loaded and warmed up.", registry=r)
        self.load_seconds = Gauge(
            "bertops_server_model_load_seconds",
            "Time to verify, load and warm up the model.",
            registry=r,
        )
        self.log_dropped = Counter(
            "bertops_server_prediction_log_dropped",
            "Prediction log records dropped (writer behind).",
            registry=r,
        )

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference_latency.observe(seconds)


_INFER = re.compile(r"^/v2/models/[^/]+(/versions/[^/]+)?/infer$")
_MODEL = re.compile(r"^/v2/models/[^/]+(/versions/[^/]+)?(/ready)?$")


def server_endpoint(path: str) -> str:
    """A bounded label for a path (model names and unknown paths must not blow up the
    number of time series)."""
    if path == "/predict":
        return "predict"
    if _INFER.match(path):
        return "infer"
    if _MODEL.match(path):
        return "model"
    if path.startswith("/v2/health/") or path == "/v2":
        return "health"
    if path == "/metrics":
        return "metrics"
    return "other"


class RequestMetricsMiddleware:
    """Pure ASGI middleware (no BaseHTTPMiddleware: it would buffer and add a task per
    request) counting requests by endpoint/status and observing their total latency."""

    def __init__(
        self, app: ASGIApp, metrics: ServerMetrics, classify: Callable[[str], str] = server_endpoint
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.classify = classify

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = self.classify(scope["path"])
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_flight.dec()
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.request_latency.labels(endpoint).observe(time.perf_counter() - started)
