"""Rollout observations from a Prometheus server instead of scraping the gateway: the
same per-(variant, model) numbers as :func:`bertops.operator.rollout.metrics.parse_gateway`,
asked of Prometheus' HTTP API (``/api/v1/query``) as sums over every gateway replica it
scrapes, optionally as ``increase`` over a window.

Used by the BertDeployment reconciler when the operator is configured with a Prometheus
URL (a cluster that already scrapes the gateway); :class:`PrometheusSource` satisfies
:class:`bertops.operator.rollout.metrics.MetricsSource`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from bertops.operator.rollout.metrics import (
    GATEWAY,
    INFERENCE,
    Accumulator,
    PerModel,
    add_gateway_sample,
)

_VM = ("variant", "model")
# Series name (without the prefix) -> the labels to keep, and whether it has the
# gateway's endpoint label (only inference requests count for the analysis).
SERIES: dict[str, tuple[tuple[str, ...], bool]] = {
    "requests_total": (_VM, True),
    "errors_total": (_VM, True),
    "request_latency_seconds_bucket": ((*_VM, "le"), True),
    "predictions_total": ((*_VM, "label"), False),
    "prediction_confidence_sum": (_VM, False),
    "prediction_confidence_count": (_VM, False),
    "feedback_total": ((*_VM, "outcome"), False),
    "paired_answers_total": ((*_VM, "stable_label", "label"), False),
    "paired_feedback_total": ((*_VM, "outcome"), False),
}


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def query(name: str, matchers: Mapping[str, str], window: str | None = None) -> str:
    """The PromQL for one series: summed over replicas, by the labels the analysis needs."""
    keep, has_endpoint = SERIES[name]
    selectors = dict(matchers)
    if has_endpoint:
        selectors["endpoint"] = INFERENCE
    inner = (
        GATEWAY
        + name
        + "{"
        + ",".join(f"{k}={_quote(v)}" for k, v in sorted(selectors.items()))
        + "}"
    )
    if window:
        inner = f"increase({inner}[{window}])"
    return f"sum by ({', '.join(keep)}) ({inner})"


def fold(acc: Accumulator, name: str, answer: Mapping[str, Any]) -> None:
    """Add one instant-vector answer of Prometheus' HTTP API to the accumulator."""
    if answer.get("status") != "success":
        raise ValueError(f"prometheus answered {answer.get('status')}: {answer.get('error')}")
    data = answer.get("data") or {}
    if data.get("resultType") != "vector":
        raise ValueError(f"expected a vector, got {data.get('resultType')}")
    for item in data.get("result") or []:
        labels = {str(k): str(v) for k, v in (item.get("metric") or {}).items()}
        value = float(item["value"][1])
        if not math.isnan(value):  # NaN (increase over an empty window) counts as nothing
            add_gateway_sample(acc, name, labels, value)


@dataclass
class PrometheusSource:
    """``url`` is the Prometheus base URL; ``matchers`` narrow the series to one
    deployment's gateway (e.g. ``{"namespace": "ml", "service": "sentiment-gateway"}``)."""

    url: str
    matchers: Mapping[str, str] = field(default_factory=dict)
    window: str | None = None
    timeout: float = 10.0
    client: httpx.Client | None = None

    def read(self) -> PerModel:
        client = self.client or httpx.Client(timeout=self.timeout)
        acc = Accumulator()
        try:
            for name in SERIES:
                response = client.get(
                    self.url.rstrip("/") + "/api/v1/query",
                    params={"query": query(name, self.matchers, self.window)},
                )
                response.raise_for_status()
                fold(acc, name, response.json())
        finally:
            if self.client is None:
                client.close()
        return acc.freeze()
