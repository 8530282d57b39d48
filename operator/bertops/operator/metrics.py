"""The operator's own Prometheus metrics (reconciles, errors, durations, steps, rollouts), on an
explicit registry so tests get a fresh one. Served by ``bertops operator --metrics-port``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.reconciles = Counter(
            "bertops_operator_reconciles_total",
            "Reconciles by kind and outcome.",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "bertops_operator_reconcile_duration_seconds",
            "Time per reconcile.",
            ["kind"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.steps_started = Counter(
            "bertops_operator_steps_started_total",
            "Steps started by step kind.",
            ["kind"],
            registry=self.registry,
        )
        self.steps_running = Gauge(
            "bertops_operator_steps_running",
            "Steps observed running at the last reconcile.",
            ["kind"],
            registry=self.registry,
        )

        # BertDeployment rollouts (bertops.operator.deployment.reconciler).
        self.canary_weight = Gauge(
            "bertops_operator_canary_weight_percent",
            "Percent of a deployment's traffic routed to its canary.",
            ["namespace", "deployment"],
            registry=self.registry,
        )
        self.rollout_outcomes = Counter(
            "bertops_operator_rollout_outcomes_total",
            "Ended rollouts by outcome (Promoted, RolledBack, Aborted) and reason.",
            ["outcome", "reason"],
            registry=self.registry,
        )
        self.analysis_results = Counter(
            "bertops_operator_rollout_analysis_total",
            "Canary analysis results per gate (Passed, Failed, NotYetSure, Reported).",
            ["gate", "result"],
            registry=self.registry,
        )

        # Drift monitoring and retraining (bertops.operator.deployment.monitor).
        self.drift_score = Gauge(
            "bertops_drift_score",
            "Share of drifted signals at a deployment's last drift check (0..1).",
            ["namespace", "deployment"],
            registry=self.registry,
        )
        self.drift_detected = Gauge(
            "bertops_drift_detected",
            "1 while a deployment's Drifted condition is True.",
            ["namespace", "deployment"],
            registry=self.registry,
        )
        self.retrains = Counter(
            "bertops_retrains",
            "Retrainings started by drift.",
            ["namespace", "deployment"],
            registry=self.registry,
        )

    def observe_reconcile(self, kind: str, outcome: str, seconds: float) -> None:
        self.reconciles.labels(kind=kind, outcome=outcome).inc()
        self.duration.labels(kind=kind).observe(seconds)

    def export_drift(
        self, namespace: str, name: str, score: float | None, drifted: bool | None
    ) -> None:
        """A deployment's last drift check: its score (when it has one) and verdict."""
        if score is not None:
            self.drift_score.labels(namespace, name).set(score)
        self.drift_detected.labels(namespace, name).set(1 if drifted else 0)

    def forget_drift(self, namespace: str, name: str) -> None:
        """A deleted deployment's drift gauges go too."""
        for gauge in (self.drift_score, self.drift_detected):
            with contextlib.suppress(KeyError):  # never exported for this deployment
                gauge.remove(namespace, name)

    def serve(self, port: int, addr: str = "127.0.0.1") -> Callable[[], None]:
        """Serve /metrics in a thread; returns the function that stops it.

        Loopback unless told otherwise: the in-cluster image passes 0.0.0.0 so Prometheus
        can scrape the pod, while a developer's operator is not exposed to the network.
        """
        server, thread = start_http_server(port, addr=addr, registry=self.registry)

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join(5)

        return stop
